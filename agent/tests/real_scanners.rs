//! Fresh output of real scanners, run here on a small project with local rules
//! (no network): Semgrep OSS and Bandit from PyPI (`.ci/run` installs them), their
//! SARIF sent to a real agent over its webhook. Two hits of one Semgrep rule in one
//! file (Semgrep OSS gives both the same placeholder fingerprint, "requires
//! login") reach the diagnosis's snapshot as two findings, and so does each of
//! Bandit's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use arf_audit::RecordKind;
use serde_json::Value;

const HANDLERS: &str = r#"import os
import subprocess


def ping(host):
    return os.system("ping -c 1 " + host)


def archive(name):
    return subprocess.call("tar czf /tmp/out.tgz " + name, shell=True)


def lookup(host):
    return os.system("nslookup " + host)
"#;

const RULES: &str = r#"rules:
  - id: os-system-injection
    languages: [python]
    severity: ERROR
    message: A shell command is built from input and run with os.system
    pattern: os.system("..." + $X)
"#;

/// `tool` on the `PATH`; the test needs it (`.ci/run` installs it).
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("`{name}` is not on the PATH: `.ci/run` installs it (python3 -m venv ~/.cache/arf-scanners && ~/.cache/arf-scanners/bin/pip install semgrep 'bandit[sarif]', then put its bin/ on the PATH)")
    })
}

/// Runs a scanner in `dir` and returns the SARIF it wrote to `out`.
fn scan(dir: &Path, command: &mut Command, out: &str) -> Value {
    let output = command.current_dir(dir).env("SEMGREP_SEND_METRICS", "off").output().unwrap();
    let text = std::fs::read_to_string(dir.join(out)).unwrap_or_else(|_| panic!("{command:?} wrote no `{out}`: {}", String::from_utf8_lossy(&output.stderr)));
    serde_json::from_str(&text).unwrap()
}

/// The findings of the snapshot the diagnosis of `incident` took: (rule, line).
async fn snapshot_findings(audit: &arf_audit::AuditClient, incident: &str) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let trail = audit.read_incident(incident).await.unwrap();
        if let Some(snapshot) = trail.iter().find(|r| r.kind == RecordKind::Snapshot) {
            let mut found: Vec<(String, String)> = snapshot.payload["snapshot"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|item| item["kind"] == "signal")
                .map(|item| {
                    let labels = &item["data"]["labels"];
                    (labels["rule_id"].as_str().unwrap_or_default().to_owned(), labels["line"].as_str().unwrap_or_default().to_owned())
                })
                .collect();
            found.sort();
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "no snapshot for {incident}: {trail:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(webhook: &str, service: &str, sarif: &Value) -> Vec<Value> {
    let url = format!("http://{webhook}/v1/webhooks/sarif?service={service}&environment=staging");
    let response = support::http().post(url).json(sarif).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["accepted"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_semgrep_and_bandit_findings_each_reach_the_snapshot() {
    let (semgrep, bandit) = (tool("semgrep"), tool("bandit"));
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("app")).unwrap();
    std::fs::write(project.path().join("app").join("handlers.py"), HANDLERS).unwrap();
    std::fs::write(project.path().join("rules.yml"), RULES).unwrap();
    let semgrep_sarif = scan(
        project.path(),
        Command::new(&semgrep).args(["scan", "--config", "rules.yml", "--metrics=off", "--disable-version-check", "--quiet", "--sarif-output=semgrep.sarif", "app"]),
        "semgrep.sarif",
    );
    let bandit_sarif = scan(project.path(), Command::new(&bandit).args(["-q", "-r", "app", "-f", "sarif", "-o", "bandit.sarif"]), "bandit.sarif");
    // What the tools wrote, as the issue found it: one placeholder fingerprint for both hits.
    let hits = semgrep_sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(hits.len(), 2, "{semgrep_sarif}");
    assert_eq!(hits[0]["fingerprints"], hits[1]["fingerprints"], "{semgrep_sarif}");

    let running = support::start(|_| {}).await;
    support::agent_client(&running.agent).await;

    let accepted = send(&running.webhook, "payments", &semgrep_sarif).await;
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert_ne!(accepted[0]["fingerprint"], accepted[1]["fingerprint"]);
    let incident = accepted[0]["incident_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted[1]["incident_id"], incident.as_str(), "one incident: the same service, the same rule");
    let found = snapshot_findings(&running.audit, &incident).await;
    assert_eq!(found, [("os-system-injection".to_owned(), "14".to_owned()), ("os-system-injection".to_owned(), "6".to_owned())]);

    let accepted = send(&running.webhook, "billing", &bandit_sarif).await;
    let incident = accepted[0]["incident_id"].as_str().unwrap().to_owned();
    let found = snapshot_findings(&running.audit, &incident).await;
    let rules: Vec<&str> = found.iter().map(|(rule, _)| rule.as_str()).collect();
    assert_eq!(rules, ["B404", "B602", "B605", "B605"], "{found:?}");
    assert_eq!(accepted.len(), 4);
}
