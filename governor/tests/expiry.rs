//! Approvals expire: after the decision's expiry, approving is refused, the
//! decision is marked expired, and nothing runs.
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
async fn an_approval_after_expiry_is_refused() {
    let h = Harness::start(Setup { decision_ttl_secs: 60, ..Setup::default() }).await;
    let decision = h.evaluate(proposal("inc-late", "restart_service", "web-prod", 0.9)).await.unwrap();
    assert_eq!(decision.expires_at_ms - decision.issued_at_ms, 60_000);
    let id = decision.decision_id.clone();

    // One millisecond before expiry it is still pending.
    h.advance_ms(59_999);
    assert_eq!(h.pending("alice").await.unwrap().len(), 1);

    h.advance_ms(1);
    let refused = h.approve("alice", &id).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("expired at"), "{}", refused.message());

    let after = h.get("alice", &id).await.unwrap();
    assert_eq!(after.state, "expired");
    assert!(after.approvals.is_empty());
    assert!(h.pending("alice").await.unwrap().is_empty());
    assert!(h.records("inc-late", RecordKind::Approval).await.is_empty());
    assert!(h.decision_records("inc-late", &id, "authorized").await.is_empty());
    assert_eq!(h.decision_records("inc-late", &id, "expired").await.len(), 1);

    let explanation = h.explain("alice", &id).await.unwrap();
    assert!(explanation.text.contains("without enough approvals: nothing will run"), "{}", explanation.text);
}
