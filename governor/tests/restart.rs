//! Decisions survive a governor restart: they are rebuilt from the audit log, so
//! a pending decision can still be approved, and its approvals still count.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod common;

use common::{Harness, Setup, proposal, route};
use arf_proto::v1 as pb;

#[tokio::test]
async fn a_pending_decision_survives_a_restart() {
    let mut h = Harness::start(Setup::default()).await;
    let decision = h.evaluate(proposal("inc-r1", "restart_service", "web-prod", 0.9)).await.unwrap();
    assert_eq!(route(&decision), pb::Route::Approval);
    let id = decision.decision_id.clone();

    h.restart_governor().await;
    // The restarted governor rebuilds its decisions from the log in the background.
    let restored = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match h.get("alice", &id).await {
                Ok(found) => break found,
                Err(status) => assert!(matches!(status.code(), tonic::Code::NotFound | tonic::Code::Unavailable), "{status:?}"),
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the decision is restored");
    assert_eq!(restored.state, "pending");
    assert_eq!(restored.remediation.as_ref().unwrap().pathway, "restart_service");
    assert!(h.pending("alice").await.unwrap().iter().any(|d| d.decision_id == id));

    let approved = h.approve("alice", &id).await.unwrap();
    assert!(approved.approvals.iter().any(|a| a.identity == "alice"), "{approved:?}");
    assert_ne!(approved.state, "pending", "one on-call approval is enough here");
}
