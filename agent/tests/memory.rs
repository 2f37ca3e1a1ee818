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
