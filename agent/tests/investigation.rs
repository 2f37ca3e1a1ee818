//! Read-only investigation, against real things: a real git repository read by a
//! real `git`, a real HTTP endpoint on loopback, a real audit log, and the
//! OpenAI-compatible tool-calling protocol spoken by a scripted server.
//!
//! Each call is checked, bounded, redacted and logged before the model sees it;
//! refusals (an unknown tool, a target out of the incident's scope, a value that
//! looks like an option, parameters outside the schema, a spent budget) are
//! logged too; an answered call is an item the diagnosis cites, and the proposal
//! cites the snapshot extended with it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use arf_agent::config::{Config, ReasonerKind};
use arf_audit::{Record, RecordKind};
use support::{ModelServer, Reply};

/// A secret the HTTP endpoint leaks in its answer: it must never reach the log or the model.
const LEAKED: &str = "Tr0ub4dorUniq3Horse";

/// A configuration repository with two commits.
fn repository(dir: &Path) {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).current_dir(dir).env("GIT_CONFIG_GLOBAL", "/dev/null").output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["config", "user.email", "dana@example.com"]);
    git(&["config", "user.name", "Dana"]);
    std::fs::write(dir.join("pool.yaml"), "max_size: 20\n").unwrap();
    git(&["add", "pool.yaml"]);
    git(&["commit", "-q", "-m", "db pool: 20 connections"]);
    std::fs::write(dir.join("pool.yaml"), "max_size: 1\n").unwrap();
    git(&["commit", "-q", "-am", "db pool: cut to 1 connection"]);
}

/// An HTTP endpoint with a large answer that leaks a secret at its start.
async fn endpoint() -> String {
    let big = format!("password={LEAKED}\n{}", "heap 97% of limit, climbing\n".repeat(2000));
    let app = axum::Router::new().route("/state", axum::routing::get(move || async move { big }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

const TOOLS: &str = r#"
[[tool]]
name = "config_log"
kind = "command"
description = "The configuration repository's recent commits, optionally of one path."
program = "git"
dir = "{{ target.facts.repo }}"
args = ["log", "--max-count=10", "--format=%h %s", "--", "{{ parameters.path }}"]
parameters = { type = "object", properties = { path = { type = "string", pattern = "^[A-Za-z0-9_./-]{1,128}$" } }, required = ["path"] }

[[tool]]
name = "service_state"
kind = "http_get"
description = "The service's state endpoint."
url = "{{ target.facts.url }}/state"
max_output_bytes = 1024
"#;

/// The test agent's configuration: the tools, and targets whose facts point at
/// the repository and the endpoint.
fn configure(config: &mut Config, dir: &Path, repo: &Path, url: &str, max_calls: u32) {
    let tools = dir.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::write(tools.join("tools.toml"), TOOLS).unwrap();
    config.investigation.tools_dir = Some(tools);
    config.investigation.max_calls = max_calls;
    for target in config.targets.values_mut() {
        target.facts.insert("repo".into(), repo.display().to_string());
        target.facts.insert("url".into(), url.to_owned());
    }
}

/// Fires the test alert in `environment` once the agent serves; the incident's trail once it settled.
async fn fire_and_settle(running: &support::Running, environment: &str) -> Vec<Record> {
    let _ = support::agent_client(&running.agent).await;
    let incident = support::fire(&running.webhook, "CheckoutHighErrorRate", environment, "5xx at 40%").await;
    support::wait_for_state(&running.audit, &incident, &["escalated", "proposed"]).await
}

/// How each investigation call ended, in order.
fn statuses<'a>(calls: &[&'a Value]) -> Vec<&'a str> {
    calls.iter().map(|c| c["status"].as_str().unwrap()).collect()
}

fn investigations(trail: &[Record]) -> Vec<&Value> {
    trail.iter().filter(|r| r.kind == RecordKind::Investigation).map(|r| &r.payload).collect()
}

const ANSWER: &str = r#"{
 "hypotheses": [{
  "root_cause": "Commit 'db pool: cut to 1 connection' starved checkout of database connections.",
  "evidence": ["{{ signals[0].id }}", "{{ tools.config_log.id }}"],
  "confidence": 0.8, "uncertainty": "", "expected_impact": "",
  "remediations": [{"pathway": "restart_service", "target": "checkout-staging", "parameters": {"reason": "pool"}, "rationale": "recycle the pool"}]
 }]
}"#;

/// [`ANSWER`] as the OpenAI reasoner's wire format has it (parameters as a JSON string).
fn wire(evidence: &[&str], target: &str) -> String {
    json!({"hypotheses": [{
        "root_cause": "Commit 'db pool: cut to 1 connection' starved checkout of database connections.",
        "evidence": evidence, "confidence": 0.8, "uncertainty": "", "expected_impact": "",
        "remediations": [{"pathway": "restart_service", "target": target, "parameters_json": "{\"reason\": \"pool\"}", "rationale": "recycle the pool"}]
    }]})
    .to_string()
}

#[tokio::test]
async fn scripted_calls_are_checked_bounded_redacted_and_logged_and_the_proposal_cites_them() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("config-repo");
    std::fs::create_dir_all(&repo).unwrap();
    repository(&repo);
    let url = endpoint().await;
    let scripted = dir.path().join("scripted");
    std::fs::create_dir_all(&scripted).unwrap();
    let steps = [
        json!({"tool": "config_log", "arguments": {"target": "{{ target }}", "path": "pool.yaml"}}),
        json!({"tool": "service_state", "arguments": {"target": "checkout-staging"}}),
        json!({"tool": "kubectl_delete", "arguments": {"target": "checkout-staging"}}),
        json!({"tool": "config_log", "arguments": {"target": "checkout-production", "path": "pool.yaml"}}),
        json!({"tool": "config_log", "arguments": {"target": "checkout-staging", "path": "--output"}}),
        json!({"tool": "config_log", "arguments": {"target": "checkout-staging", "path": "pool:yaml"}}),
        json!({"tool": "config_log", "arguments": {"target": "checkout-staging", "path": "pool.yaml"}}),
    ];
    let mut response = toml::Table::new();
    response.insert("name".into(), "pool".into());
    response.insert("match".into(), toml::Value::Table(toml::Table::from_iter([("alertname".to_owned(), "CheckoutHighErrorRate".into())])));
    response.insert("completion".into(), ANSWER.into());
    response.insert("investigate".into(), toml::Value::try_from(steps.to_vec()).unwrap());
    let file = toml::Table::from_iter([("response".to_owned(), toml::Value::Array(vec![toml::Value::Table(response)]))]);
    std::fs::write(scripted.join("pool.toml"), toml::to_string(&file).unwrap()).unwrap();

    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Scripted;
        config.scripted_dir = Some(scripted.clone());
        configure(config, dir.path(), &repo, &url, 6);
    })
    .await;
    let trail = fire_and_settle(&running, "staging").await;

    let calls = investigations(&trail);
    let status = statuses(&calls);
    assert_eq!(status, ["answered", "answered", "refused", "refused", "refused", "refused", "refused"], "{calls:#?}");
    let numbers: Vec<u64> = calls.iter().map(|c| c["call"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7]);
    // A real git read the real repository.
    let log = calls[0]["item"]["data"]["output"].as_str().unwrap();
    assert!(log.contains("db pool: cut to 1 connection") && log.contains("db pool: 20 connections"), "{log}");
    assert_eq!(calls[0]["item"]["id"], "inv-1");
    // A large answer is cut to the tool's limit, and the cut is logged; the secret in it never is.
    assert_eq!(calls[1]["truncated"], true);
    assert!(calls[1]["output_bytes"].as_u64().unwrap() > 1024);
    assert!(calls[1]["item"]["data"]["output"].as_str().unwrap().len() <= 1024);
    let text = serde_json::to_string(&trail).unwrap();
    assert!(!text.contains(LEAKED), "the leaked secret reached the log");
    // Each refusal says why.
    let detail = |n: usize| calls[n]["detail"].as_str().unwrap();
    assert!(detail(2).contains("no investigation tool `kubectl_delete`"), "{}", detail(2));
    assert!(detail(3).contains("the target is not in this incident's scope (one of: checkout-staging)"), "{}", detail(3));
    assert!(detail(4).contains("a value is never an option"), "{}", detail(4));
    assert!(!detail(4).contains("--output"), "a refusal never echoes the value: {}", detail(4));
    assert!(detail(5).contains("do not match the tool's schema"), "{}", detail(5));
    assert!(detail(6).contains("budget is spent"), "{}", detail(6));

    // The extended snapshot is logged, and the proposal cites it and the call's item.
    let snapshots: Vec<&Value> = trail.iter().filter(|r| r.kind == RecordKind::Snapshot).map(|r| &r.payload).collect();
    assert_eq!(snapshots.len(), 2, "the snapshot, then the snapshot with the investigation's results");
    assert_eq!(snapshots[1]["extends"], snapshots[0]["hash"]);
    let items: Vec<&str> = snapshots[1]["snapshot"]["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(items.contains(&"inv-1") && items.contains(&"inv-2"), "{items:?}");
    let diagnosis = trail
        .iter()
        .filter(|r| r.kind == RecordKind::Diagnosis)
        .map(|r| &r.payload)
        .find(|d| d["status"] == "grounded")
        .unwrap_or_else(|| panic!("{:#?}", trail.iter().filter(|r| r.kind == RecordKind::Diagnosis).map(|r| &r.payload).collect::<Vec<_>>()));
    assert_eq!(diagnosis["proposal"]["snapshot_hash"], snapshots[1]["hash"]);
    assert_eq!(diagnosis["snapshot_hash"], snapshots[1]["hash"]);
    assert!(diagnosis["proposal"]["hypothesis"]["evidence"].as_array().unwrap().contains(&json!("inv-1")));
    // Logged before the diagnosis that used them.
    let last_call = trail.iter().rposition(|r| r.kind == RecordKind::Investigation).unwrap();
    let grounded = trail.iter().position(|r| r.kind == RecordKind::Diagnosis).unwrap();
    assert!(last_call < grounded);
}

/// An agent on the `openai` reasoner, talking to a scripted server that answers
/// `replies` then `otherwise`, with the tools over a real repository and endpoint,
/// `max_calls` per diagnosis; fires one alert in `environment` and returns the
/// server and the incident's trail once it settled.
async fn openai_incident(replies: Vec<Reply>, otherwise: Option<Reply>, max_calls: u32, environment: &str, adjust: impl FnOnce(&mut Config)) -> (ModelServer, Vec<Record>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("config-repo");
    std::fs::create_dir_all(&repo).unwrap();
    repository(&repo);
    let url = endpoint().await;
    let server = ModelServer::start(replies, otherwise).await;
    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Openai;
        config.openai = Some(support::openai(&server.base_url));
        configure(config, dir.path(), &repo, &url, max_calls);
        adjust(config);
    })
    .await;
    let trail = fire_and_settle(&running, environment).await;
    (server, trail)
}

#[tokio::test]
async fn a_tool_not_allowed_in_the_environment_is_neither_offered_nor_run() {
    let (server, trail) = openai_incident(
        vec![Reply::ToolCalls(vec![("service_state".into(), json!({"target": "checkout-production"}).to_string())])],
        Some(Reply::Cite(wire(&["{{signal_id}}"], "checkout-production"))),
        4,
        "production",
        |config| config.investigation.allow = [("production".to_owned(), vec!["config_log".to_owned()]), ("*".to_owned(), vec!["*".to_owned()])].into(),
    )
    .await;
    let received = server.received();
    let offered: Vec<&str> = received[0].body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(offered, ["config_log"], "only what production allows is offered");
    let calls = investigations(&trail);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["status"], "refused");
    assert!(calls[0]["detail"].as_str().unwrap().contains("not allowed in environment `production`"), "{}", calls[0]["detail"]);
}

#[tokio::test]
async fn the_openai_reasoner_calls_tools_over_the_real_protocol_and_cites_the_results() {
    let answer = wire(&["{{signal_id}}", "inv-1"], "checkout-staging");
    let call = Reply::ToolCalls(vec![("config_log".into(), json!({"target": "checkout-staging", "path": "pool.yaml"}).to_string())]);
    let (server, trail) = openai_incident(vec![call, Reply::Cite(answer)], None, 4, "staging", |_| {}).await;
    let received = server.received();
    assert_eq!(received.len(), 2, "the tool call, then the answer");
    // The first request offers the tools, with only the incident's targets.
    let tools = received[0].body["tools"].as_array().unwrap();
    let config_log = tools.iter().find(|t| t["function"]["name"] == "config_log").unwrap();
    assert_eq!(config_log["type"], "function");
    assert_eq!(config_log["function"]["parameters"]["properties"]["target"]["enum"], json!(["checkout-staging"]));
    assert_eq!(received[0].body["tool_choice"], "auto");
    assert!(received[0].body["messages"][0]["content"].as_str().unwrap().contains("investigation tools"), "the system prompt says so");
    // The second carries the assistant's tool call and the tool's result, by call id.
    let messages = received[1].body["messages"].as_array().unwrap();
    let assistant = messages.iter().find(|m| m["role"] == "assistant" && m["tool_calls"].is_array()).unwrap();
    let id = assistant["tool_calls"][0]["id"].as_str().unwrap();
    let tool = messages.iter().find(|m| m["role"] == "tool").unwrap();
    assert_eq!(tool["tool_call_id"], id);
    let result: Value = serde_json::from_str(tool["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["id"], "inv-1");
    assert!(result["output"].as_str().unwrap().contains("db pool: cut to 1 connection"), "{result}");
    // Logged, grounded on the extended snapshot, and both rounds' tokens counted.
    assert_eq!(investigations(&trail).len(), 1);
    let diagnosis = trail.iter().filter(|r| r.kind == RecordKind::Diagnosis).map(|r| &r.payload).find(|d| d["status"] == "grounded").unwrap();
    assert!(diagnosis["proposal"]["hypothesis"]["evidence"].as_array().unwrap().contains(&json!("inv-1")), "{diagnosis}");
    assert_eq!(diagnosis["prompt_tokens"], 2 * 812);
}

#[tokio::test]
async fn a_model_that_keeps_calling_tools_is_bounded() {
    let call = Reply::ToolCalls(vec![("config_log".into(), json!({"target": "checkout-staging", "path": "pool.yaml"}).to_string())]);
    let (server, trail) = openai_incident(vec![], Some(call), 2, "staging", |_| {}).await;
    // Two calls run; then no tools are offered, and the calls that still come are not run.
    assert_eq!(investigations(&trail).len(), 2);
    let received = server.received();
    assert!(received.len() <= 2 + 1 + 2, "{} model requests", received.len());
    assert!(received[2..].iter().all(|r| r.body.get("tools").is_none()), "no tools offered once the budget is spent");
    let last = trail.iter().rev().find(|r| r.kind == RecordKind::Incident).unwrap();
    assert_eq!(last.payload["state"], "escalated");
}

#[tokio::test]
async fn calls_beyond_the_budget_in_one_answer_are_not_run_and_logged_once() {
    let many: Vec<(String, String)> = (0..50).map(|_| ("config_log".to_owned(), json!({"target": "checkout-staging", "path": "pool.yaml"}).to_string())).collect();
    let answer = Reply::Cite(wire(&["{{signal_id}}", "inv-1"], "checkout-staging"));
    let (server, trail) = openai_incident(vec![Reply::ToolCalls(many), answer], None, 4, "staging", |_| {}).await;
    let calls = investigations(&trail);
    let status = statuses(&calls);
    assert_eq!(status, ["answered", "answered", "answered", "answered", "refused"], "{calls:#?}");
    assert_eq!(calls[4]["arguments"]["calls"], 46);
    // Every call of the answer is answered in the next request, as the protocol requires.
    let received = server.received();
    let tool_messages = received[1].body["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "tool").count();
    assert_eq!(tool_messages, 50);
    assert!(received[1].body.get("tools").is_none(), "the budget is spent: no tools offered");
}

/// A repository's own configuration cannot make a read run a program: a
/// filesystem monitor, a text conversion and a signature program set in
/// `.git/config` stay unrun while `git ls-files`, `git show` and `git log` answer.
#[tokio::test]
async fn a_repositorys_configuration_cannot_make_a_read_run_a_program() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("config-repo");
    std::fs::create_dir_all(&repo).unwrap();
    repository(&repo);
    let marker = dir.path().join("ran");
    let script = dir.path().join("hook.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch {}\ncat \"$@\" 2>/dev/null\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let git = |args: &[&str]| assert!(Command::new("git").args(args).current_dir(&repo).status().unwrap().success());
    let hook = script.display().to_string();
    git(&["config", "core.fsmonitor", &hook]);
    git(&["config", "diff.yaml.textconv", &hook]);
    git(&["config", "log.showSignature", "true"]);
    git(&["config", "gpg.program", &hook]);
    std::fs::write(repo.join(".git").join("info").join("attributes"), "*.yaml diff=yaml\n").unwrap();
    // The same configuration does run the program for a plain git: the test would notice.
    let plain = Command::new("git").args(["show", "--format=%s", "HEAD"]).current_dir(&repo).env("GIT_CONFIG_GLOBAL", "/dev/null").output().unwrap();
    assert!(plain.status.success() && marker.exists(), "plain git runs the configured text conversion");
    std::fs::remove_file(&marker).unwrap();

    let tools = dir.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::write(
        tools.join("git.toml"),
        r#"
[[tool]]
name = "files"
kind = "command"
description = "The repository's files."
program = "git"
dir = "{{ target.facts.repo }}"
args = ["ls-files"]

[[tool]]
name = "last_change"
kind = "command"
description = "The last commit with its diff."
program = "git"
dir = "{{ target.facts.repo }}"
args = ["show", "HEAD"]

[[tool]]
name = "history"
kind = "command"
description = "The commits."
program = "git"
dir = "{{ target.facts.repo }}"
args = ["log", "-p"]
"#,
    )
    .unwrap();
    let scripted = dir.path().join("scripted");
    std::fs::create_dir_all(&scripted).unwrap();
    let steps: Vec<Value> = ["files", "last_change", "history"].iter().map(|t| json!({"tool": t, "arguments": {"target": "checkout-staging"}})).collect();
    let file = json!({"response": [{"name": "git", "match": {"alertname": "CheckoutHighErrorRate"}, "completion": ANSWER.replace(", \"{{ tools.config_log.id }}\"", ""), "investigate": steps}]});
    std::fs::write(scripted.join("git.toml"), toml::to_string(&toml::Value::try_from(file).unwrap()).unwrap()).unwrap();
    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Scripted;
        config.scripted_dir = Some(scripted.clone());
        config.investigation.tools_dir = Some(tools.clone());
        for target in config.targets.values_mut() {
            target.facts.insert("repo".into(), repo.display().to_string());
        }
    })
    .await;
    let trail = fire_and_settle(&running, "staging").await;
    let calls = investigations(&trail);
    let status = statuses(&calls);
    assert_eq!(status, ["answered", "answered", "answered"], "{calls:#?}");
    assert!(calls[0]["item"]["data"]["output"].as_str().unwrap().contains("pool.yaml"));
    assert!(calls[1]["item"]["data"]["output"].as_str().unwrap().contains("-max_size: 20"), "the diff itself, not a conversion: {:#?}", calls[1]);
    assert!(!marker.exists(), "a program the repository configured ran");
}

/// Each round of tool calls is one more model request: it counts against the
/// incident's bound on model calls, here and after a restart (the diagnosis record
/// says how many rounds it took).
#[tokio::test]
async fn tool_rounds_count_against_the_incidents_model_calls() {
    let call = Reply::ToolCalls(vec![("config_log".into(), json!({"target": "checkout-staging", "path": "pool.yaml"}).to_string())]);
    let (server, trail) = openai_incident(vec![], Some(call), 6, "staging", |config| config.max_model_calls_per_incident = 2).await;
    assert_eq!(server.received().len(), 2, "one request and one round of tool calls: the bound of 2");
    assert!(server.received()[1].body.get("tools").is_none(), "no tools offered when no more requests may follow");
    assert_eq!(investigations(&trail).len(), 1);
    let diagnosis = trail.iter().find(|r| r.kind == RecordKind::Diagnosis).unwrap();
    assert_eq!(diagnosis.payload["tool_rounds"], 1, "{}", diagnosis.payload);
    let last = trail.iter().rev().find(|r| r.kind == RecordKind::Incident).unwrap();
    assert!(last.payload["reason"].as_str().unwrap().contains("bound of 2 model calls"), "{}", last.payload);
}
