//! Write-ahead, fail closed: without the audit log, nothing is decided, no approval
//! counts and nothing runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use common::{Harness, Setup, proposal};
use tonic::Code;

#[tokio::test]
async fn evaluate_is_unavailable_when_the_log_is_unreachable() {
    let h = Harness::start(Setup { audit: false, ..Setup::default() }).await;
    // Even an action policy would let run alone.
    let refused = h.evaluate(proposal("inc-dark", "restart_service", "web-staging", 0.9)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        // Without the log the governor cannot even rebuild which actions are decided.
        refused.message().contains("rebuilding its decisions from the audit log; nothing was decided"),
        "{}",
        refused.message()
    );
    assert!(h.decisions("dash", "").await.unwrap().is_empty(), "nothing is held for a decision that was not logged");
}

#[tokio::test]
async fn an_approval_that_cannot_be_logged_does_not_count() {
    let mut h = Harness::start(Setup::default()).await;
    let decision = h.evaluate(proposal("inc-lost", "restart_service", "web-prod", 0.9)).await.unwrap();
    h.stop_audit().await;

    let refused = h.approve("alice", &decision.decision_id).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("the approval was not counted"), "{}", refused.message());
    let after = h.get("alice", &decision.decision_id).await.unwrap();
    assert_eq!(after.state, "pending");
    assert!(after.approvals.is_empty());
}
