//! Decisions a crash cut off go on from where the log says they stopped, at once:
//! an approved decision that was never authorized is authorized when the governor
//! comes back, unless it would run alone too long after it was made.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use arf_audit::RecordKind;
use common::{Harness, Setup, proposal};
use futures::StreamExt;

/// Writes the log a governor killed between `decision` and `authorized` leaves: a
/// copy of a real autonomous decision's first record, as a new decision made `age_ms` ago.
async fn cut_off_after_deciding(h: &Harness, decision_id: &str, incident_id: &str, age_ms: i64) {
    let template = h.evaluate(proposal(&format!("{incident_id}-template"), "restart_service", "web-staging", 0.9)).await.unwrap();
    let first = h.decision_records(&format!("{incident_id}-template"), &template.decision_id, "approved").await.remove(0);
    let mut payload = first.payload.clone();
    let now = h.clock.load(std::sync::atomic::Ordering::SeqCst);
    payload["decision_id"] = decision_id.into();
    payload["incident_id"] = incident_id.into();
    payload["issued_at_ms"] = (now - age_ms).into();
    payload["expires_at_ms"] = (now - age_ms + 900_000).into();
    h.audit.append_one(incident_id, RecordKind::Decision, payload).await.unwrap();
}

async fn wait_for_state(h: &Harness, decision_id: &str, state: &str) -> serde_json::Value {
    let mut tail = h.audit.tail(1).await.unwrap();
    loop {
        let record = tokio::time::timeout(std::time::Duration::from_secs(30), tail.next()).await.expect("timed out following the log").unwrap().unwrap();
        if record.payload["decision_id"] == decision_id && record.payload["state"] == state {
            return record.payload;
        }
    }
}

#[tokio::test]
async fn an_approved_decision_left_unauthorized_is_authorized_when_the_governor_returns() {
    let mut h = Harness::start(Setup::default()).await;
    cut_off_after_deciding(&h, "dec-cut", "inc-cut", 5_000).await;
    h.restart_governor().await;
    let authorized = wait_for_state(&h, "dec-cut", "authorized").await;
    assert_eq!(authorized["body"]["decision_id"], "dec-cut");
    assert_eq!(h.get("alice", "dec-cut").await.unwrap().state, "authorized");
}

#[tokio::test]
async fn an_approved_decision_found_too_late_expires_unrun() {
    let mut h = Harness::start(Setup::default()).await;
    // Made two minutes before the governor came back: past the 60 s an action may wait to run alone.
    cut_off_after_deciding(&h, "dec-late", "inc-late", 120_000).await;
    h.restart_governor().await;
    let expired = wait_for_state(&h, "dec-late", "expired").await;
    assert!(expired["detail"].as_str().unwrap().contains("nothing ran"), "{expired}");
    let trail = h.audit.read_incident("inc-late").await.unwrap();
    assert!(trail.iter().all(|r| r.payload["state"] != "authorized"));
}

#[tokio::test]
async fn an_approved_decision_is_not_authorized_at_restart_once_the_kill_switch_is_off() {
    let mut h = Harness::start(Setup::default()).await;
    cut_off_after_deciding(&h, "dec-held", "inc-held", 5_000).await;
    // Someone on call pulled the kill switch while the governor was down (saved state).
    h.set_autonomy("alice", false, "paging storm").await.unwrap();
    h.restart_governor().await;
    let expired = wait_for_state(&h, "dec-held", "expired").await;
    assert!(expired["detail"].as_str().unwrap().contains("guard rails no longer let it run (the kill switch is off: paging storm)"), "{expired}");
}

/// One person's approval in the log twice (a retried call whose first answer was
/// lost, or approvals at two governor replicas across a failover) counts once: a
/// decision that needs two approvers is still pending after a restart.
#[tokio::test]
async fn one_approver_logged_twice_counts_once_after_a_restart() {
    let mut h = Harness::start(Setup::default()).await;
    let pending = h.evaluate(proposal("inc-twice", "purge_cache", "web-prod", 0.9)).await.unwrap();
    assert_eq!(pending.policy.as_ref().unwrap().approvals_required, 2);
    for given in [1, 2] {
        let approval = serde_json::json!({
            "decision_id": pending.decision_id, "identity": "alice", "role": "oncall", "verdict": "approve",
            "comment": "checked", "approvals_given": given, "approvals_required": 2,
            "at_ms": h.clock.load(std::sync::atomic::Ordering::SeqCst),
        });
        h.audit.append_one("inc-twice", RecordKind::Approval, approval).await.unwrap();
    }
    h.restart_governor().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let held = loop {
        match h.get("alice", &pending.decision_id).await {
            Ok(held) => break held,
            Err(status) => assert!(std::time::Instant::now() < deadline, "{status:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!((held.state.as_str(), held.approvals.len()), ("pending", 2), "alice counted once");
    let decision = h.approve("dave", &pending.decision_id).await.unwrap();
    assert_eq!(decision.state, "authorized", "the second approver counts");
}

#[tokio::test]
async fn a_decision_whose_last_approval_was_logged_before_a_crash_is_authorized_at_restart() {
    let mut h = Harness::start(Setup::default()).await;
    let pending = h.evaluate(proposal("inc-approved", "restart_service", "web-prod", 0.9)).await.unwrap();
    assert_eq!(pending.state, "pending");
    // The log a governor killed between logging alice's approval and the authorization leaves.
    let approval = serde_json::json!({
        "decision_id": pending.decision_id, "identity": "alice", "role": "oncall", "verdict": "approve",
        "comment": "checked", "approvals_given": 1, "approvals_required": 1,
        "at_ms": h.clock.load(std::sync::atomic::Ordering::SeqCst),
    });
    h.audit.append_one("inc-approved", RecordKind::Approval, approval).await.unwrap();
    h.restart_governor().await;
    let authorized = wait_for_state(&h, &pending.decision_id, "authorized").await;
    assert_eq!(authorized["approvals"][0]["identity"], "alice");
}
