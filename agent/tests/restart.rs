//! The log is the agent's memory: a restarted agent rebuilds its incidents from
//! the audit log, keeps grouping into them, and resumes a diagnosis that a crash
//! interrupted, so no accepted signal is forgotten.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use serde_json::json;

use arf_agent::config::ReasonerKind;
use arf_audit::{Entry, RecordKind};
use arf_proto::v1 as pb;
use support::{ModelServer, Reply};

const VALID: &str = r#"{"hypotheses":[{"root_cause":"wedged workers","evidence":["{{signal_id}}"],"confidence":0.8,"uncertainty":"","expected_impact":"errors stop","remediations":[{"pathway":"restart_service","target":"checkout-staging","parameters_json":"{}","rationale":"r"}]}]}"#;

/// The agent's configuration: the `openai` reasoner, pointed at the scripted model on loopback.
fn use_model(base_url: &str) -> impl Fn(&mut arf_agent::config::Config) + '_ {
    move |config| {
        config.reasoner = ReasonerKind::Openai;
        config.openai = Some(support::openai(base_url));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_remembers_and_resumes() {
    let server = ModelServer::start(vec![], Some(Reply::Cite(VALID.to_owned()))).await;
    let configure = use_model(&server.base_url);
    let mut running = support::start(&configure).await;
    let _ = support::agent_client(&running.agent).await;
    let first = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx").await;
    support::wait_for_state(&running.audit, &first, &["escalated", "proposed"]).await;

    plant_orphan(&running.audit).await;

    running.restart_agent(&configure).await;
    let mut agent = support::agent_client(&running.agent).await;
    let remembered = agent.get_incident(pb::GetIncidentRequest { incident_id: first.clone() }).await.unwrap().into_inner();
    assert_eq!(remembered.state, "escalated");
    assert_eq!(remembered.signal_count, 1);
    assert_eq!(remembered.model_calls, 1);

    // The same alert again joins the remembered incident as a duplicate.
    let again = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx").await;
    assert_eq!(again, first);

    // The interrupted diagnosis resumes.
    let trail = support::wait_for_state(&running.audit, "inc-orphan", &["escalated", "proposed"]).await;
    assert!(trail.iter().any(|r| r.kind == RecordKind::Diagnosis), "the orphaned incident was diagnosed after the restart");
    let subjects: Vec<String> = server
        .received()
        .iter()
        .map(|r| r.body["messages"][1]["content"].as_str().unwrap().lines().find(|l| l.starts_with("Incident")).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(subjects.iter().filter(|s| s.contains(&first)).count(), 1, "the finished diagnosis did not run again: {subjects:?}");
    assert!(subjects.iter().any(|s| s.contains("inc-orphan")), "the interrupted one resumed: {subjects:?}");
}

/// As if an agent accepted an alert about another service and died before diagnosing it.
async fn plant_orphan(audit: &arf_audit::AuditClient) {
    let orphan_signal = json!({
        "id": "sig-00000000000000aa", "source": "alertmanager", "kind": "alert", "status": "firing",
        "title": "PaymentsDown", "description": "payments is down", "severity": "critical",
        "service": "checkout", "environment": "production", "labels": {"alertname": "PaymentsDown"},
        "annotations": {}, "observed_at_ms": 1, "fingerprint": "fp-orphan"
    });
    audit
        .append(vec![
            Entry::new("inc-orphan", RecordKind::Incident, json!({"event": "opened", "title": "PaymentsDown", "service": "checkout", "environment": "production", "state": "open", "family": "alert", "first_signal": "sig-00000000000000aa"})),
            Entry::new("inc-orphan", RecordKind::Signal, json!({"signal": orphan_signal, "duplicate": false})),
        ])
        .await
        .unwrap();
}

/// Work a restart finds unfinished is resumed only while its incident is recent
/// (`agent.resume_within_secs`): an older one goes to a person, and the model is
/// not asked about signals that may no longer hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_hands_work_past_resume_within_to_a_person() {
    let server = ModelServer::start(vec![], Some(Reply::Cite(VALID.to_owned()))).await;
    let configure = use_model(&server.base_url);
    let mut running = support::start(&configure).await;
    let _ = support::agent_client(&running.agent).await;
    plant_orphan(&running.audit).await;
    // Every change is older than this bound by the time the agent is back.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    running
        .restart_agent(|config: &mut arf_agent::config::Config| {
            configure(config);
            config.resume_within_secs = 1;
        })
        .await;
    let trail = support::wait_for_state(&running.audit, "inc-orphan", &["escalated", "proposed"]).await;
    let escalated = trail.iter().rev().find(|r| r.kind == RecordKind::Incident).unwrap();
    let reason = escalated.payload["reason"].as_str().unwrap();
    assert!(reason.contains("past `agent.resume_within_secs` (1 s)") && reason.contains("handed to a person"), "{reason}");
    assert!(!trail.iter().any(|r| r.kind == RecordKind::Diagnosis), "not diagnosed");
    assert!(server.received().is_empty(), "the model was not asked");
}

/// A crash between logging a proposal and logging the governor's answer: the
/// restarted agent sends the logged proposal again (the governor answers a proposal
/// it holds with its decision) instead of diagnosing anew, which could propose
/// something else for the same incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resends_a_logged_proposal_instead_of_diagnosing_again() {
    let server = ModelServer::start(vec![], Some(Reply::Cite(VALID.to_owned()))).await;
    let configure = use_model(&server.base_url);
    let mut running = support::start(&configure).await;
    let _ = support::agent_client(&running.agent).await;
    let signal = json!({
        "id": "sig-00000000000000bb", "source": "alertmanager", "kind": "alert", "status": "firing",
        "title": "CheckoutDown", "description": "down", "severity": "critical",
        "service": "checkout", "environment": "staging", "labels": {"alertname": "CheckoutDown"},
        "annotations": {}, "observed_at_ms": 1, "fingerprint": "fp-cut"
    });
    let proposal = json!({
        "id": "prop-cut", "incident_id": "inc-cut", "snapshot_hash": "snap-cut",
        "hypothesis": {"id": "h1", "root_cause": "wedged", "evidence": ["sig-00000000000000bb"], "confidence": 0.8,
                       "uncertainty": "", "expected_impact": "", "remediations": []},
        "remediation": {"pathway": "restart_service", "target": "checkout-staging", "parameters": {}, "rationale": "r"},
        "service": "checkout", "environment": "staging", "reasoner": "openai"
    });
    running
        .audit
        .append(vec![
            Entry::new("inc-cut", RecordKind::Incident, json!({"event": "opened", "title": "CheckoutDown", "service": "checkout", "environment": "staging", "state": "open", "family": "alert", "first_signal": "sig-00000000000000bb"})),
            Entry::new("inc-cut", RecordKind::Signal, json!({"signal": signal, "duplicate": false})),
            Entry::new(
                "inc-cut",
                RecordKind::Snapshot,
                json!({"hash": "snap-cut", "snapshot": {"incident_id": "inc-cut", "service": "checkout", "environment": "staging", "items": [], "dropped": []}}),
            ),
            Entry::new(
                "inc-cut",
                RecordKind::Diagnosis,
                json!({"prompt_id": "diagnosis@v2", "prompt_hash": "ph", "snapshot_hash": "snap-cut", "reasoner": "openai", "attempt": 1,
                       "status": "grounded", "proposal": proposal}),
            ),
        ])
        .await
        .unwrap();
    let calls_before = server.received().len();
    running.restart_agent(&configure).await;
    // The test's governor is unreachable, so the resent proposal ends escalated.
    let trail = support::wait_for_state(&running.audit, "inc-cut", &["escalated", "proposed"]).await;
    let escalated = trail.iter().rev().find(|r| r.kind == RecordKind::Incident).unwrap();
    assert!(escalated.payload["reason"].as_str().unwrap().contains("the governor did not take the proposal"), "{escalated:?}");
    assert_eq!(trail.iter().filter(|r| r.kind == RecordKind::Diagnosis).count(), 1, "no new diagnosis");
    assert_eq!(server.received().len(), calls_before, "the model was not asked again");
}

/// A record of the agent's own that is not in the agent's format (a forged field,
/// a format that drifted) leaves the restarted agent not serving, saying why: state
/// rebuilt around it would be a guess, and signals accepted on a guess could be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_record_of_its_own_keeps_a_restarted_agent_from_serving() {
    let server = ModelServer::start(vec![], Some(Reply::Cite(VALID.to_owned()))).await;
    let configure = use_model(&server.base_url);
    let mut running = support::start(&configure).await;
    let _ = support::agent_client(&running.agent).await;
    let forged = json!({"event": "opened", "title": "T", "service": "checkout", "environment": "staging", "state": "open",
                        "family": "alert", "first_signal": "sig-1", "scope": "payments"});
    running.audit.append(vec![Entry::new("inc-forged", RecordKind::Incident, forged)]).await.unwrap();
    running.restart_agent(&configure).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.agent)).unwrap().connect().await.unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32);
    let alert = json!({"version": "4", "status": "firing", "receiver": "arf", "groupKey": "{}", "alerts": [{"status": "firing",
                       "labels": {"alertname": "A", "service": "checkout", "env": "staging"}, "annotations": {},
                       "startsAt": "2026-11-26T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}]});
    let answer = support::http().post(format!("http://{}/v1/webhooks/alertmanager", running.webhook)).json(&alert).send().await.unwrap();
    assert_eq!(answer.status(), 503, "nothing is accepted on a guessed state");
}
