//! Incident memory: a new incident's context carries what happened in similar
//! past incidents, read from the audit log; and resolved alerts close incidents.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use arf_agent::config::ReasonerKind;
use arf_audit::RecordKind;
use support::{ModelServer, Reply};

const VALID: &str = r#"{"hypotheses":[{"root_cause":"checkout's workers are wedged","evidence":["{{signal_id}}"],"confidence":0.8,"uncertainty":"","expected_impact":"errors stop","remediations":[{"pathway":"restart_service","target":"checkout-staging","parameters_json":"{\"reason\":\"wedged\"}","rationale":"r"}]}]}"#;

#[tokio::test]
async fn a_recurrence_sees_the_past_incident() {
    let server = ModelServer::start(vec![], Some(Reply::Cite(VALID.to_owned()))).await;
    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Openai;
        config.openai = Some(support::openai(&server.base_url));
    })
    .await;
    let _ = support::agent_client(&running.agent).await;
    let first = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx").await;
    support::wait_for_state(&running.audit, &first, &["escalated", "proposed"]).await;

    let resolved_in = support::resolve(&running.webhook, "CheckoutHighErrorRate", "staging").await;
    assert_eq!(resolved_in, first, "the resolution joins the incident it resolves");
    let trail = running.audit.read_incident(&first).await.unwrap();
    assert!(trail.iter().any(|r| r.kind == RecordKind::Incident && r.payload["state"] == "resolved"), "resolved alerts update the incident");

    let second = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx again").await;
    assert_ne!(second, first, "a recurrence after resolution is a new incident");
    support::wait_for_state(&running.audit, &second, &["escalated", "proposed"]).await;
    let received = server.received();
    assert_eq!(received.len(), 2);
    let prompt = received[1].body["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains(&format!("past-{first}")), "the second diagnosis sees the first incident");
    assert!(prompt.contains("workers are wedged"), "with its root cause");
    assert!(!received[0].body["messages"][1]["content"].as_str().unwrap().contains("past-"), "the first had no past");
}

/// Done incidents leave memory (`retain_incidents_secs`), and nothing is lost: the
/// incident is still read back whole from its trail in the log, a recurrence's
/// diagnosis still sees it, and a restarted agent does not hold it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_incident_leaves_memory_and_is_read_back_from_the_log() {
    use arf_proto::v1 as pb;
    let server = ModelServer::start(vec![], Some(Reply::Cite(VALID.to_owned()))).await;
    let configure = |url: String| {
        move |config: &mut arf_agent::config::Config| {
            config.reasoner = ReasonerKind::Openai;
            config.openai = Some(support::openai(&url));
            config.retain_incidents_secs = 0;
        }
    };
    let mut running = support::start(configure(server.base_url.clone())).await;
    let mut agent = support::agent_client(&running.agent).await;
    let first = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx").await;
    support::wait_for_state(&running.audit, &first, &["escalated", "proposed"]).await;
    assert_eq!(support::resolve(&running.webhook, "CheckoutHighErrorRate", "staging").await, first);

    // It leaves memory: the list no longer holds it...
    let held = |list: &pb::ListIncidentsResponse| list.incidents.iter().any(|i| i.id == first);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while held(&agent.list_incidents(pb::ListIncidentsRequest {}).await.unwrap().into_inner()) {
        assert!(tokio::time::Instant::now() < deadline, "the resolved incident never left memory");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // ...but it is read back whole from the log.
    let incident = agent.get_incident(pb::GetIncidentRequest { incident_id: first.clone() }).await.unwrap().into_inner();
    assert_eq!((incident.state.as_str(), incident.signal_count, incident.fingerprints.len()), ("resolved", 2, 1));
    let missing = agent.get_incident(pb::GetIncidentRequest { incident_id: "inc-never".into() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // A recurrence's diagnosis still sees it (incident memory keeps a summary).
    let second = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx again").await;
    assert_ne!(second, first);
    support::wait_for_state(&running.audit, &second, &["escalated", "proposed"]).await;
    let received = server.received();
    let prompt = received.last().unwrap().body["messages"][1]["content"].as_str().unwrap().to_owned();
    assert!(prompt.contains(&format!("past-{first}")) && prompt.contains("workers are wedged"), "{prompt}");

    // A restarted agent rebuilds without it, and still reads it from the log.
    running.restart_agent(configure(server.base_url.clone())).await;
    let mut agent = support::agent_client(&running.agent).await;
    assert!(!held(&agent.list_incidents(pb::ListIncidentsRequest {}).await.unwrap().into_inner()));
    let incident = agent.get_incident(pb::GetIncidentRequest { incident_id: first.clone() }).await.unwrap().into_inner();
    assert_eq!(incident.state, "resolved");
}

/// An incident whose alerts all resolve while the model is thinking stays
/// resolved: its diagnosis is logged, nothing is proposed, no one is paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_that_resolves_during_its_diagnosis_stays_resolved_and_nothing_is_proposed() {
    use arf_proto::v1 as pb;
    let server = ModelServer::start(vec![Reply::Late(std::time::Duration::from_millis(800), VALID.to_owned())], None).await;
    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Openai;
        config.openai = Some(support::openai(&server.base_url));
    })
    .await;
    let mut agent = support::agent_client(&running.agent).await;
    let id = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !running.audit.read_incident(&id).await.unwrap().iter().any(|r| r.kind == RecordKind::Snapshot) {
        assert!(tokio::time::Instant::now() < deadline, "no snapshot");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(support::resolve(&running.webhook, "CheckoutHighErrorRate", "staging").await, id);
    // The model answers with a grounded proposal after the resolution.
    while !running.audit.read_incident(&id).await.unwrap().iter().any(|r| r.kind == RecordKind::Diagnosis) {
        assert!(tokio::time::Instant::now() < deadline, "no diagnosis");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let trail = running.audit.read_incident(&id).await.unwrap();
    let events: Vec<&str> = trail.iter().filter(|r| r.kind == RecordKind::Incident).filter_map(|r| r.payload["event"].as_str()).collect();
    assert_eq!(events, ["opened", "resolved"], "neither proposed nor escalated");
    let diagnosis = trail.iter().find(|r| r.kind == RecordKind::Diagnosis).unwrap();
    assert!(diagnosis.payload.get("proposal").is_none(), "{:?}", diagnosis.payload);
    let incident = agent.get_incident(pb::GetIncidentRequest { incident_id: id }).await.unwrap().into_inner();
    assert_eq!(incident.state, "resolved");
}
