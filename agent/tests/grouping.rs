//! Grouping over a real agent and audit log: an alert that arrives while another
//! incident of its service is being diagnosed is not absorbed where no diagnosis
//! would see it. It opens its own incident and gets its own diagnosis, while
//! repeats of the first alert still join the first incident.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::time::Duration;

use arf_agent::config::ReasonerKind;
use arf_audit::RecordKind;
use support::{ModelServer, Reply};

const VALID: &str = r#"{"hypotheses":[{"root_cause":"checkout is short of memory","evidence":["{{signal_id}}"],"confidence":0.8,"uncertainty":"","expected_impact":"memory falls","remediations":[{"pathway":"restart_service","target":"checkout-staging","parameters_json":"{\"reason\":\"memory\"}","rationale":"r"}]}]}"#;

/// Waits until the log holds a record of `kind` for `incident_id`.
async fn logged(audit: &arf_audit::AuditClient, incident_id: &str, kind: RecordKind) -> Vec<arf_audit::Record> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let trail = audit.read_incident(incident_id).await.unwrap();
        if trail.iter().any(|r| r.kind == kind) {
            return trail;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {kind:?} record for {incident_id}: {trail:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_arriving_during_a_diagnosis_gets_a_diagnosis_of_its_own() {
    // The first diagnosis hangs, so its incident stays `diagnosing` while the
    // second alert arrives; every later request is answered.
    let server = ModelServer::start(vec![Reply::Hang], Some(Reply::Cite(VALID.to_owned()))).await;
    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Openai;
        config.openai = Some(support::openai(&server.base_url));
    })
    .await;
    support::agent_client(&running.agent).await;

    let first = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx on every replica").await;
    logged(&running.audit, &first, RecordKind::Snapshot).await;

    let second = support::fire(&running.webhook, "CheckoutHighMemoryLoad", "staging", "memory at 97%").await;
    assert_ne!(second, first, "the first incident's snapshot is taken: its diagnosis would never see this alert");
    let repeat = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx on every replica, still").await;
    assert_eq!(repeat, first, "a repeat of the first alert joins the incident that holds it");
    let again = support::fire(&running.webhook, "CheckoutHighMemoryLoad", "staging", "memory at 98%").await;
    assert_eq!(again, second, "and so does a repeat of the second");

    // The second incident is diagnosed on its own snapshot, which holds its alert.
    let trail = logged(&running.audit, &second, RecordKind::Diagnosis).await;
    let snapshot = trail.iter().find(|r| r.kind == RecordKind::Snapshot).unwrap();
    let alerts: Vec<&str> = snapshot.payload["snapshot"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["kind"] == "signal")
        .filter_map(|item| item["data"]["labels"]["alertname"].as_str())
        .collect();
    assert_eq!(alerts, ["CheckoutHighMemoryLoad"], "{snapshot:#?}");
    let asked = server.received();
    assert_eq!(asked.len(), 2, "one model call per incident");
    assert!(asked[1].body.to_string().contains("CheckoutHighMemoryLoad"));

    // The first incident's trail holds both of its signals, and no other alert.
    let first_trail = running.audit.read_incident(&first).await.unwrap();
    let signals: Vec<String> = first_trail
        .iter()
        .filter(|r| r.kind == RecordKind::Signal)
        .map(|r| r.payload["signal"]["labels"]["alertname"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(signals, ["CheckoutHighErrorRate", "CheckoutHighErrorRate"]);
}
