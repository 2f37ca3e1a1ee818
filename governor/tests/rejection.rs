//! Rejection: it needs a reason, is logged with the person who gave it, and stops
//! the decision for good.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use arf_audit::RecordKind;
use common::{Harness, Setup, proposal};
use tonic::Code;

#[tokio::test]
async fn rejection_needs_a_reason_and_nothing_runs() {
    let h = Harness::start(Setup::default()).await;
    let decision = h.evaluate(proposal("inc-no", "restart_service", "web-prod", 0.9)).await.unwrap();
    let id = decision.decision_id.clone();

    for reason in ["", "   "] {
        let refused = h.reject("alice", &id, reason).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("needs a reason"), "{}", refused.message());
    }
    let by_agent = h.reject("agent", &id, "I changed my mind").await.unwrap_err();
    assert_eq!(by_agent.code(), Code::PermissionDenied);
    assert_eq!(h.get("alice", &id).await.unwrap().state, "pending");

    let rejected = h.reject("carol", &id, "a restart during the migration loses writes").await.unwrap();
    assert_eq!(rejected.state, "rejected");
    assert_eq!(rejected.approvals[0].verdict, "reject");
    assert_eq!(rejected.approvals[0].identity, "carol");

    let records = h.records("inc-no", RecordKind::Approval).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload["verdict"], "reject");
    assert_eq!(records[0].payload["identity"], "carol");
    assert_eq!(records[0].payload["role"], "security");
    assert_eq!(records[0].payload["reason"], "a restart during the migration loses writes");

    let late = h.approve("alice", &id).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(late.message().contains("`rejected`"), "{}", late.message());
    assert!(h.decision_records("inc-no", &id, "authorized").await.is_empty());
    assert!(h.pending("alice").await.unwrap().is_empty());
    let listed = h.decisions("dash", "inc-no").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, "rejected");
}
