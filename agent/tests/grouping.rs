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

/// Requests arriving together are placed in batches that go into the log at
/// once, yet no two batches in flight hold one service: replicas of one alert
/// sent at the same moment, each in its own request, make one incident. (Were
/// batches of one key planned side by side, each would open its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_one_alert_sent_at_once_make_one_incident() {
    let running = support::start(|_| {}).await;
    support::agent_client(&running.agent).await;
    let url = format!("http://{}/v1/webhooks/alertmanager", running.webhook);
    let sends: Vec<_> = (0..48)
        .map(|pod| {
            let url = url.clone();
            tokio::spawn(async move {
                let labels = serde_json::json!({"alertname": "CheckoutHighErrorRate", "service": "checkout", "env": "staging", "severity": "critical", "pod": format!("checkout-{pod}")});
                let body = serde_json::json!({
                    "version": "4", "status": "firing", "receiver": "arf", "groupKey": "{}", "groupLabels": {},
                    "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
                    "alerts": [{"status": "firing", "labels": labels, "annotations": {"description": "5xx"}, "startsAt": "2026-11-22T03:00:00Z"}]
                });
                let response = support::http().post(url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                body["accepted"][0]["incident_id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut incidents = std::collections::BTreeSet::new();
    for send in sends {
        incidents.insert(send.await.unwrap());
    }
    assert_eq!(incidents.len(), 1, "one alert from 48 replicas opened {incidents:?}");
    let trail = running.audit.read_incident(incidents.first().unwrap()).await.unwrap();
    assert_eq!(trail.iter().filter(|r| r.kind == RecordKind::Signal).count(), 48, "every replica's signal is in the incident's trail");
}
