//! Production needs approval: who may approve, how many distinct people, and each
//! approval logged (with identity and role) before it counts.
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
use tonic::Code;

#[tokio::test]
async fn production_waits_for_one_oncall_approval_then_runs() {
    let h = Harness::start(Setup::default()).await;
    let decision = h.evaluate(proposal("inc-prod", "restart_service", "web-prod", 0.9)).await.unwrap();
    assert_eq!(route(&decision), pb::Route::Approval);
    assert_eq!(decision.state, "pending");
    let policy = decision.policy.clone().unwrap();
    assert_eq!(policy.approvals_required, 1);
    assert_eq!(policy.approver_roles, vec!["admin".to_owned(), "oncall".to_owned()]);
    let id = decision.decision_id.clone();
    assert!(h.decision_records("inc-prod", &id, "authorized").await.is_empty());

    let pending = h.pending("dash").await.unwrap();
    assert_eq!(pending.iter().map(|d| d.decision_id.as_str()).collect::<Vec<_>>(), vec![id.as_str()]);
    let explanation = h.explain("alice", &id).await.unwrap();
    assert!(explanation.text.contains("waits for 1 more approval from role admin or oncall"), "{}", explanation.text);

    // The proposer cannot approve its own decision (it is not a person), nor can a dashboard.
    let own = h.approve("agent", &id).await.unwrap_err();
    assert_eq!(own.code(), Code::PermissionDenied);
    assert!(own.message().contains("only people may approve or reject; `agent` has role `agent`"), "{}", own.message());
    let tooling = h.approve("dash", &id).await.unwrap_err();
    assert_eq!(tooling.code(), Code::PermissionDenied);
    assert!(tooling.message().contains("only people may approve"), "{}", tooling.message());
    // Security is not among the roles policy named for this one.
    let wrong_role = h.approve("carol", &id).await.unwrap_err();
    assert_eq!(wrong_role.code(), Code::PermissionDenied);
    assert!(wrong_role.message().contains("role `security` may not approve"), "{}", wrong_role.message());
    assert!(h.records("inc-prod", RecordKind::Approval).await.is_empty(), "refused approvals are not logged");

    let approved = h.approve("alice", &id).await.unwrap();
    assert_eq!(approved.state, "authorized");
    assert_eq!(approved.approvals.len(), 1);
    assert_eq!(approved.approvals[0].identity, "alice");
    assert_eq!(approved.approvals[0].role, "oncall");

    let approvals = h.records("inc-prod", RecordKind::Approval).await;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].payload["identity"], "alice");
    assert_eq!(approvals[0].payload["role"], "oncall");
    assert_eq!(approvals[0].payload["verdict"], "approve");
    let authorized = h.decision_records("inc-prod", &id, "authorized").await;
    assert_eq!(authorized.len(), 1);
    assert!(approvals[0].seq < authorized[0].seq, "the approval is logged before it counts");
    assert_eq!(authorized[0].payload["body"]["approvals"][0]["identity"], "alice");
    assert_eq!(authorized[0].payload["body"]["route"], "approval");

    // Once authorized, it is no longer pending and cannot be approved again.
    assert!(h.pending("dash").await.unwrap().is_empty());
    let late = h.approve("bob", &id).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn high_risk_needs_two_distinct_approvers_and_a_second_approval_by_the_same_person_does_not_count() {
    let h = Harness::start(Setup::default()).await;
    // Irreversible: two people must agree.
    let decision = h.evaluate(proposal("inc-two", "purge_cache", "web-prod", 0.9)).await.unwrap();
    assert_eq!(route(&decision), pb::Route::Approval);
    let policy = decision.policy.clone().unwrap();
    assert_eq!(policy.approvals_required, 2);
    assert_eq!(decision.risk.as_ref().unwrap().band, "high");
    assert!(policy.rules_fired.contains(&"production_high_risk".to_owned()), "{policy:?}");
    assert!(policy.rules_fired.contains(&"irreversible".to_owned()), "{policy:?}");
    let id = decision.decision_id.clone();

    let first = h.approve("alice", &id).await.unwrap();
    assert_eq!(first.state, "pending");
    assert_eq!(first.approvals.len(), 1);

    let twice = h.approve("alice", &id).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    assert!(twice.message().contains("`alice` already approved"), "{}", twice.message());
    let still = h.get("alice", &id).await.unwrap();
    assert_eq!(still.state, "pending");
    assert_eq!(still.approvals.len(), 1);
    assert!(h.decision_records("inc-two", &id, "authorized").await.is_empty());

    let second = h.approve("dave", &id).await.unwrap();
    assert_eq!(second.state, "authorized");
    let who: Vec<_> = second.approvals.iter().map(|a| (a.identity.as_str(), a.role.as_str())).collect();
    assert_eq!(who, vec![("alice", "oncall"), ("dave", "admin")]);

    let authorized = h.decision_records("inc-two", &id, "authorized").await;
    assert_eq!(authorized.len(), 1);
    assert_eq!(authorized[0].payload["body"]["approvals"].as_array().unwrap().len(), 2);
    assert_eq!(h.records("inc-two", RecordKind::Approval).await.len(), 2);
}

#[tokio::test]
async fn security_sensitive_targets_are_approved_by_security() {
    let h = Harness::start(Setup::default()).await;
    let decision = h.evaluate(proposal("inc-sec", "restart_service", "vault-staging", 0.9)).await.unwrap();
    assert_eq!(route(&decision), pb::Route::Approval);
    assert_eq!(decision.policy.as_ref().unwrap().approver_roles, vec!["security".to_owned()]);

    let oncall = h.approve("alice", &decision.decision_id).await.unwrap_err();
    assert_eq!(oncall.code(), Code::PermissionDenied);
    let approved = h.approve("carol", &decision.decision_id).await.unwrap();
    assert_eq!(approved.state, "authorized");
}

#[tokio::test]
async fn unknown_environments_need_a_person() {
    let h = Harness::start(Setup::default()).await;
    let decision = h.evaluate(proposal("inc-qa", "restart_service", "web-qa", 0.9)).await.unwrap();
    assert_eq!(route(&decision), pb::Route::Approval);
    assert_eq!(decision.policy.as_ref().unwrap().rules_fired, vec!["unknown_environment".to_owned()]);
}

#[tokio::test]
async fn approving_an_unknown_decision_is_not_found() {
    let h = Harness::start(Setup::default()).await;
    let missing = h.approve("alice", "dec-nope").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let empty = h.approve("alice", "").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("`decision_id`"), "{}", empty.message());
}
