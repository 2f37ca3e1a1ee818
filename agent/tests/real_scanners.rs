//! Fresh output of real scanners, run here on a small project with local rules
//! (no network): Semgrep OSS and Bandit from PyPI (`.ci/run` installs them), their
//! SARIF sent to a real agent over its webhook. Two hits of one Semgrep rule in one
//! file (Semgrep OSS gives both the same placeholder fingerprint, "requires
//! login") reach the diagnosis's snapshot as two findings, and so does each of
//! Bandit's. And Trivy (from PyPI too) on a Terraform module with a public S3
//! bucket: its `trivy config -f json` report, with its embedded checks and no
//! network, opens one incident with every misconfiguration it found.

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

const TERRAFORM: &str = r#"resource "aws_s3_bucket" "logs" {
  bucket = "arf-logs"
}

resource "aws_s3_bucket_acl" "logs" {
  bucket = aws_s3_bucket.logs.id
  acl    = "public-read"
}
"#;

/// The findings of the snapshot the diagnosis of `incident` took: (rule, line).
async fn snapshot_findings(audit: &arf_audit::AuditClient, incident: &str) -> Vec<(String, String)> {
    snapshot_labels(audit, incident, ["rule_id", "line"]).await
}

/// The two `labels` of each finding in the snapshot the diagnosis of `incident` took, sorted.
async fn snapshot_labels(audit: &arf_audit::AuditClient, incident: &str, [first, second]: [&str; 2]) -> Vec<(String, String)> {
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
                    (labels[first].as_str().unwrap_or_default().to_owned(), labels[second].as_str().unwrap_or_default().to_owned())
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
    send_as(webhook, "sarif", service, sarif).await
}

async fn send_as(webhook: &str, format: &str, service: &str, report: &Value) -> Vec<Value> {
    let url = format!("http://{webhook}/v1/webhooks/{format}?service={service}&environment=staging");
    let response = support::http().post(url).json(report).send().await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_trivy_config_report_opens_an_incident_with_every_misconfiguration() {
    let trivy = tool("trivy");
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("infra")).unwrap();
    std::fs::write(project.path().join("infra").join("main.tf"), TERRAFORM).unwrap();
    let cache = project.path().join("trivy-cache");
    let report = scan(
        project.path(),
        Command::new(&trivy).args(["config", "--skip-check-update", "--quiet", "--cache-dir"]).arg(&cache).args(["-f", "json", "-o", "trivy.json", "infra"]),
        "trivy.json",
    );
    // What Trivy found, as the issue did: a public ACL and no public access block.
    let mut failed: Vec<(String, String)> = report["Results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|result| result["Misconfigurations"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["Status"] == "FAIL")
        .map(|m| (m["AVDID"].as_str().or(m["ID"].as_str()).unwrap().to_owned(), m["CauseMetadata"]["Resource"].as_str().unwrap_or_default().to_owned()))
        .collect();
    failed.sort();
    let ids: Vec<&str> = failed.iter().map(|(id, _)| id.as_str()).collect();
    for expected in ["AVD-AWS-0086", "AVD-AWS-0087", "AVD-AWS-0091", "AVD-AWS-0092", "AVD-AWS-0093"] {
        assert!(ids.contains(&expected), "Trivy found {ids:?}");
    }

    let running = support::start(|_| {}).await;
    support::agent_client(&running.agent).await;
    let accepted = send_as(&running.webhook, "trivy", "storage", &report).await;
    assert_eq!(accepted.len(), failed.len(), "one signal per misconfiguration: {accepted:?}");
    let incident = accepted[0]["incident_id"].as_str().unwrap().to_owned();
    assert!(accepted.iter().all(|a| a["incident_id"] == incident.as_str()), "one incident: {accepted:?}");
    assert_eq!(snapshot_labels(&running.audit, &incident, ["check_id", "resource"]).await, failed, "every misconfiguration reaches the snapshot");
}
