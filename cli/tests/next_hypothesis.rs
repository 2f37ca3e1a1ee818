//! One miss does not end the attempt: over the whole plane, an action whose
//! verification fails is rolled back, the agent proposes the diagnosis's next
//! grounded hypothesis (no new model call), policy sees it as attempt 2 and asks a
//! person, and once approved it runs and verifies. A third would exceed the bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arf_audit::RecordKind;

/// Two hypotheses: a wedged process first, a leak second; both restart the
/// worker, with different parameters (two different actions).
const SCRIPT: &str = r#"
[[response]]
name = "wedged-or-leaking"
match = { alertname = "WorkerWedged" }
completion = '''
{"hypotheses": [{
  "root_cause": "The worker process is wedged: its queue stopped draining.",
  "evidence": ["{{ signals[0].id }}"],
  "confidence": 0.9,
  "expected_impact": "The queue drains within a minute of the restart.",
  "remediations": [{"pathway": "restart_service", "target": "{{ target }}", "parameters": {"reason": "wedged worker"}}]
}, {
  "root_cause": "The worker leaks memory until it stalls; a fresh process clears it.",
  "evidence": ["{{ signals[0].id }}"],
  "confidence": 0.6,
  "expected_impact": "Memory returns to baseline and the queue drains.",
  "remediations": [{"pathway": "recycle_worker", "target": "{{ target }}", "parameters": {"reason": "memory leak"}}]
}]}
'''
"#;

/// A worker whose health fails right after its first restart only: the first
/// action fails verification, its rollback (a second restart) heals it, and so does
/// a third.
async fn fussy_worker() -> (String, Arc<AtomicU64>) {
    use axum::routing::{get, post};
    let restarts = Arc::new(AtomicU64::new(0));
    let (health, restart) = (Arc::clone(&restarts), Arc::clone(&restarts));
    let app = axum::Router::new()
        .route("/health", get(move || async move { if health.load(Ordering::SeqCst) == 1 { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "stalled") } else { (axum::http::StatusCode::OK, "ok") } }))
        .route("/-/restart", post(move || async move {
            restart.fetch_add(1, Ordering::SeqCst);
            "restarted"
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, restarts)
}

fn decisions(trail: &[arf_audit::Record]) -> Vec<&arf_audit::Record> {
    trail.iter().filter(|r| r.writer == "governor" && r.kind == RecordKind::Decision && r.payload.get("policy_input").is_some()).collect()
}

/// A plane whose agent tries up to two actions per incident, on the fussy worker,
/// with the agent's crash point `crash_at` armed if given.
/// A second way to restart the worker, so the second hypothesis is another
/// action, not the first one reworded (which is the same action, and never
/// proposed twice).
const RECYCLE: &str = r#"
name = "recycle_worker"
description = "Recycle the worker's processes: a fresh process clears leaked memory."
target_kind = "service"
base_risk = 0.3
blast_radius = 0.5
timeout_secs = 30

[parameters]
type = "object"
additionalProperties = false
[parameters.properties.reason]
type = "string"
maxLength = 200

[[action]]
kind = "http"
method = "POST"
url = "{{target.url}}/-/restart?mode=recycle"
expect_status = 200

[verify]
delay_ms = 200
window_ms = 2000
interval_ms = 250
probes = [{ kind = "http", name = "health", url = "{{target.url}}/health", expect_status = 200 }]

[[rollback]]
kind = "http"
method = "POST"
url = "{{target.url}}/-/restart"
expect_status = 200
"#;

/// A plane on the fussy worker, every role's catalog the bundled one and
/// [`RECYCLE`], the agent allowed two attempts per incident.
async fn plane(crash_at: Option<&str>) -> (support::Plane, Arc<AtomicU64>) {
    let (target, restarts) = fussy_worker().await;
    let plane = start_plane(&target, SCRIPT, crash_at, |config, dir| {
        config["agent"].as_table_mut().unwrap().insert("max_attempts_per_incident".into(), 2.into());
        let bundled = std::path::PathBuf::from(config["executor"]["catalog_dir"].as_str().unwrap());
        let bundled = if bundled.is_absolute() { bundled } else { dir.join(bundled) };
        let catalog = dir.join("next-pathways");
        std::fs::create_dir_all(&catalog).unwrap();
        for entry in std::fs::read_dir(&bundled).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), catalog.join(entry.file_name())).unwrap();
        }
        std::fs::write(catalog.join("recycle_worker.toml"), RECYCLE).unwrap();
        for role in ["agent", "governor", "executor"] {
            config[role].as_table_mut().unwrap().insert("catalog_dir".into(), catalog.display().to_string().into());
        }
    })
    .await;
    (plane, restarts)
}

/// A plane on `target` whose configuration `edit` changed (given the plane's
/// directory for files of its own), the agent answering with `script` and its
/// crash point `crash_at` armed if given.
async fn start_plane(target: &str, script: &str, crash_at: Option<&str>, edit: impl FnOnce(&mut toml::Table, &std::path::Path)) -> support::Plane {
    let mut plane = support::Plane::prepare(target).await;
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&plane.config).unwrap()).unwrap();
    edit(&mut config, plane.config.parent().unwrap());
    let scripted = std::path::PathBuf::from(config["agent"]["scripted_dir"].as_str().unwrap());
    std::fs::write(&plane.config, toml::to_string(&config).unwrap()).unwrap();
    std::fs::write(scripted.join("crash.toml"), script).unwrap();
    for role in ["audit", "governor", "executor"] {
        plane.start(role, None).await;
    }
    plane.start("agent", crash_at).await;
    plane
}

/// The agent killed after it saw the rollback and before it logged anything of the
/// next attempt: restarted, it tries the next hypothesis, without diagnosing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_before_the_next_attempt_still_tries_the_next_hypothesis() {
    let (mut plane, _restarts) = plane(Some("agent.before_next_attempt")).await;
    let incident = plane.fire().await;
    plane.wait_killed("agent").await;
    let trail = plane.auditor().read_incident(&incident).await.unwrap();
    assert!(trail.iter().any(|r| r.kind == RecordKind::Outcome && r.payload["outcome"] == "rolled_back"), "{}", support::summary(&trail));
    assert_eq!(decisions(&trail).len(), 1, "killed before the next attempt");
    plane.start("agent", None).await;
    let trail = plane.trail_until(&incident, Duration::from_secs(60), "the next attempt after the restart", |t| decisions(t).len() >= 2).await;
    assert_eq!(decisions(&trail)[1].payload["remediation"]["pathway"], "recycle_worker");
    let answers = trail.iter().filter(|r| r.kind == RecordKind::Diagnosis && r.payload.get("completion").is_some()).count();
    assert_eq!(answers, 1, "no second model call: {}", support::summary(&trail));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_action_is_followed_by_the_next_hypothesis_once_a_person_approves() {
    let (plane, restarts) = plane(None).await;

    let incident = plane.fire().await;
    // The first action runs on its own (staging), fails verification and rolls back;
    // the second waits for a person.
    let trail = plane.trail_until(&incident, Duration::from_secs(90), "a second decision", |t| decisions(t).len() >= 2).await;
    let (first, second) = (decisions(&trail)[0], decisions(&trail)[1]);
    assert_eq!(first.payload["remediation"]["parameters"]["reason"], "wedged worker");
    assert!(trail.iter().any(|r| r.kind == RecordKind::Outcome && r.payload["decision_id"] == first.payload["decision_id"] && r.payload["outcome"] == "rolled_back"), "{}", support::summary(&trail));
    assert_eq!(second.payload["remediation"]["pathway"], "recycle_worker", "the next hypothesis, not the same action again");
    assert_eq!(second.payload["policy_input"]["incident"]["attempt"], 2);
    assert_eq!(second.payload["state"], "pending");
    let rules = second.payload["policy"]["rules_fired"].as_array().unwrap();
    assert!(rules.iter().any(|r| r == "next_attempt"), "{rules:?}");
    // What the agent logged: the reattempt, then the proposal, with no new model call.
    let reattempt = trail.iter().find(|r| r.kind == RecordKind::Incident && r.payload["event"] == "reattempt").unwrap_or_else(|| panic!("{}", support::summary(&trail)));
    assert_eq!(reattempt.payload["after_decision"], first.payload["decision_id"]);
    let diagnoses: Vec<_> = trail.iter().filter(|r| r.kind == RecordKind::Diagnosis).collect();
    assert_eq!(diagnoses.len(), 2, "one model answer, one next-hypothesis record");
    assert_eq!(diagnoses[1].payload["after_decision"], first.payload["decision_id"]);
    assert!(diagnoses[1].payload.get("completion").is_none(), "no model call for the next attempt");

    // alice approves; it runs and verifies.
    let decision = second.payload["decision_id"].as_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_arf")).args(["approve", decision]).env("ARF_CONFIG", &plane.config).env("ARF_TOKEN", plane.token("alice")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    plane.trail_until(&incident, Duration::from_secs(60), "the second action verified", |t| t.iter().any(|r| r.kind == RecordKind::Outcome && r.payload["decision_id"] == decision && r.payload["outcome"] == "verified")).await;
    assert_eq!(restarts.load(Ordering::SeqCst), 3, "the first restart, its rollback, the second restart");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_arf")).args(["incident", "show", &incident, "--json"]).env("ARF_CONFIG", &plane.config).env("ARF_TOKEN", plane.token("alice")).output().unwrap();
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if shown["incident"]["state"] == "verified" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the incident never showed verified: {shown:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A worker that refuses a dry run of a restart "for a wedged worker" (it is not
/// wedged) and accepts any other; it counts real restarts.
async fn picky_worker() -> (String, Arc<AtomicU64>) {
    use axum::routing::{get, post};
    let restarts = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&restarts);
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/-/dry-run",
            post(|body: String| async move {
                if body.contains("wedged worker") {
                    (axum::http::StatusCode::CONFLICT, r#"{"message": "the worker is not wedged: its queue drains"}"#)
                } else {
                    (axum::http::StatusCode::OK, "{}")
                }
            }),
        )
        .route(
            "/-/restart",
            post(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                "restarted"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, restarts)
}

/// `restart_service` with a dry run first, for every role's catalog.
const PICKY_RESTART: &str = r#"
name = "restart_service"
description = "Restart the worker. A dry run asks the worker first."
target_kind = "service"
base_risk = 0.3
blast_radius = 0.5
timeout_secs = 30

[parameters]
type = "object"
additionalProperties = false
required = ["reason"]
[parameters.properties.reason]
type = "string"
maxLength = 200

[[precheck]]
kind = "http"
method = "POST"
url = "{{target.url}}/-/dry-run"
body = { reason = "{{params.reason}}" }
expect_status = 200

[[action]]
kind = "http"
method = "POST"
url = "{{target.url}}/-/restart"
expect_status = 200

[verify]
delay_ms = 100
window_ms = 500
interval_ms = 100
probes = [{ kind = "http", name = "health", url = "{{target.url}}/health", expect_status = 200 }]

[[rollback]]
kind = "http"
method = "POST"
url = "{{target.url}}/-/restart"
expect_status = 200
"#;

/// A plane on the picky worker, every role's catalog holding [`PICKY_RESTART`] and [`RECYCLE`], the
/// agent answering with `script` and its crash point `crash_at` armed if given.
async fn picky_plane(script: &str, crash_at: Option<&str>) -> (support::Plane, Arc<AtomicU64>) {
    let (target, restarts) = picky_worker().await;
    let plane = start_plane(&target, script, crash_at, |config, dir| {
        let catalog = dir.join("picky-pathways");
        std::fs::create_dir_all(&catalog).unwrap();
        std::fs::write(catalog.join("restart_service.toml"), PICKY_RESTART).unwrap();
        std::fs::write(catalog.join("recycle_worker.toml"), RECYCLE).unwrap();
        for role in ["agent", "governor", "executor"] {
            config[role].as_table_mut().unwrap().insert("catalog_dir".into(), catalog.display().to_string().into());
        }
    })
    .await;
    (plane, restarts)
}

/// An action that runs on its own (staging) is refused by its dry run at once,
/// and the agent is SIGKILLed after the governor answered its proposal and before
/// it logged the answer. Restarted, the agent sends the logged proposal again, the
/// governor answers with the decision already refused, and the agent follows the
/// refusal up (the next hypothesis) rather than leaving the incident `proposed`
/// with nothing to wait for; the refused action never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_the_agent_missed_while_it_logged_the_answer_is_followed_up() {
    let (mut plane, restarts) = picky_plane(SCRIPT, Some("agent.decision_received")).await;

    let incident = plane.fire().await;
    plane.wait_killed("agent").await;
    let refused = |t: &[arf_audit::Record]| t.iter().any(|r| r.kind == RecordKind::Outcome && r.payload["outcome"] == "refused");
    let trail = plane.trail_until(&incident, Duration::from_secs(30), "the refusal", refused).await;
    assert!(!trail.iter().any(|r| r.kind == RecordKind::Incident && r.payload["event"] == "proposed"), "killed before it logged the answer: {}", support::summary(&trail));

    plane.start("agent", None).await;
    let trail = plane.trail_until(&incident, Duration::from_secs(60), "the refusal followed up", |t| decisions(t).len() >= 2).await;
    let second = decisions(&trail)[1];
    assert_eq!(second.payload["remediation"]["pathway"], "recycle_worker", "the next hypothesis: {}", support::summary(&trail));
    assert_eq!(second.payload["policy_input"]["incident"]["attempt"], 2);
    assert_eq!(restarts.load(Ordering::SeqCst), 0, "the refused action never ran, and the next waits for a person");
}

/// One hypothesis only, and the model sticks to it: its action is refused by the
/// dry run, the agent diagnoses again with the refusal in view, and the answer
/// repeats the refused action. Nothing is proposed twice: the incident is
/// escalated. (The same action reworded, in a parameter no step reads, is the same
/// action: `agent/src/ground.rs`'s tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_repeats_a_refused_action_is_escalated_not_proposed_again() {
    const STUBBORN: &str = r#"
[[response]]
name = "stubborn"
match = { alertname = "WorkerWedged" }
completion = '''
{"hypotheses": [{
  "root_cause": "The worker process is wedged: its queue stopped draining.",
  "evidence": ["{{ signals[0].id }}"],
  "confidence": 0.9,
  "remediations": [{"pathway": "restart_service", "target": "{{ target }}", "parameters": {"reason": "wedged worker"}}]
}]}
'''
"#;
    let (plane, restarts) = picky_plane(STUBBORN, None).await;
    let incident = plane.fire().await;
    let escalated = |t: &[arf_audit::Record]| t.iter().any(|r| r.kind == RecordKind::Incident && r.payload["event"] == "escalated");
    let trail = plane.trail_until(&incident, Duration::from_secs(60), "the escalation", escalated).await;
    let reason = trail.iter().find(|r| r.kind == RecordKind::Incident && r.payload["event"] == "escalated").unwrap().payload["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("the model proposed again only actions this incident already tried"), "{reason}\n{}", support::summary(&trail));
    assert_eq!(decisions(&trail).len(), 1, "one decision: {}", support::summary(&trail));
    let snapshots = trail.iter().filter(|r| r.kind == RecordKind::Snapshot && r.payload["extends"].is_null()).count();
    assert_eq!(snapshots, 2, "diagnosed again once, with the refusal in view");
    assert_eq!(restarts.load(Ordering::SeqCst), 0, "nothing ran");
}
