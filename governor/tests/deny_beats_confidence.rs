//! Policy supremacy: a `deny` holds against a hypothesis with confidence 0.99, and
//! nothing is ever authorized or dispatched for it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use arf_audit::RecordKind;
use arf_proto::v1 as pb;
use common::{Harness, Setup, proposal, route};

#[tokio::test]
async fn deny_beats_a_confident_hypothesis_and_nothing_is_dispatched() {
    let h = Harness::start(Setup::default()).await;
    let decision = h.evaluate(proposal("inc-deny", "drain_all", "web-staging", 0.99)).await.unwrap();

    assert_eq!(route(&decision), pb::Route::Deny);
    assert_eq!(decision.state, "denied");
    let policy = decision.policy.clone().unwrap();
    assert!(policy.rules_fired.contains(&"blast_radius_limit".to_owned()), "{policy:?}");
    assert!(policy.diagnostics.is_empty(), "{policy:?}");

    // No person can turn it around either.
    let refused = h.approve("alice", &decision.decision_id).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("`denied`"), "{}", refused.message());

    // The decision was written ahead, and nothing was ever authorized.
    let records = h.records("inc-deny", RecordKind::Decision).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].payload["route"], "deny");
    assert_eq!(records[0].payload["state"], "denied");
    assert_eq!(records[0].payload["policy_input"]["confidence"], 0.99);
    assert!(records.iter().all(|r| r.payload["state"] != "authorized" && r.payload.get("envelope_sha256").is_none()));
    assert!(h.records("inc-deny", RecordKind::Approval).await.is_empty());

    let explanation = h.explain("alice", &decision.decision_id).await.unwrap();
    assert!(explanation.text.contains("denied: nothing will run"), "{}", explanation.text);
}
