//! Scope and backing over real gRPC: the governor decides only on proposals the
//! log backs, for targets in the incident's scope, whatever the caller says.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use arf_proto::v1 as pb;
use common::{Harness, Setup, proposal, route};
use tonic::Code;

fn rules(decision: &pb::Decision) -> Vec<String> {
    decision.policy.as_ref().unwrap().rules_fired.clone()
}

#[tokio::test]
async fn an_alert_for_one_service_cannot_act_on_another_or_on_another_environment() {
    let h = Harness::start(Setup::default()).await;
    for (incident, target) in [("inc-cross", "payments-staging"), ("inc-prod", "web-prod")] {
        let p = proposal(incident, "restart_service", target, 0.95);
        // The incident is a staging alert for `web`; the model proposes elsewhere.
        h.back_for(&p, "web", "staging").await;
        let decision = h.evaluate_unbacked("agent", p).await.unwrap();
        assert_eq!(route(&decision), pb::Route::Deny, "{target}: {decision:?}");
        assert!(rules(&decision).contains(&"out_of_scope".to_owned()), "{target}: {:?}", rules(&decision));
        assert_eq!(decision.state, "denied");
        let explanation = h.explain("alice", &decision.decision_id).await.unwrap().text;
        assert!(explanation.contains("Alerting service: web; the target is OUTSIDE the incident's scope"), "{explanation}");
        let trail = h.audit.read_incident(incident).await.unwrap();
        assert!(trail.iter().all(|r| r.payload["state"] != "authorized"), "nothing was authorized");
        let logged = trail.iter().find(|r| r.payload["decision_id"] == decision.decision_id.as_str()).unwrap();
        assert_eq!(logged.payload["policy_input"]["target"]["relation"], "out_of_scope");
        assert_eq!(logged.payload["policy_input"]["incident"]["services"], serde_json::json!(["web"]));
    }
}

#[tokio::test]
async fn a_declared_dependency_of_the_alerting_service_needs_approval() {
    let h = Harness::start(Setup::default()).await;
    let p = proposal("inc-db", "restart_service", "web-db-staging", 0.95);
    h.back_for(&p, "web", "staging").await;
    let decision = h.evaluate_unbacked("agent", p).await.unwrap();
    assert_eq!(route(&decision), pb::Route::Approval, "{decision:?}");
    assert!(rules(&decision).contains(&"dependency_target".to_owned()), "{:?}", rules(&decision));
    let explanation = h.explain("alice", &decision.decision_id).await.unwrap().text;
    assert!(explanation.contains("a declared dependency of the alerting service"), "{explanation}");
    // The same target is the incident's own when the database itself alerts: policy decides as usual.
    let own = proposal("inc-db-own", "restart_service", "web-db-staging", 0.95);
    h.back_for(&own, "web-db", "staging").await;
    let decision = h.evaluate_unbacked("agent", own).await.unwrap();
    assert_eq!(route(&decision), pb::Route::Autonomous, "{:?}", rules(&decision));
}

#[tokio::test]
async fn a_proposal_the_log_does_not_back_is_refused_and_the_refusal_is_logged() {
    let h = Harness::start(Setup::default()).await;
    // A stolen agent token, a made-up incident and snapshot: nothing in the log.
    let refused = h.evaluate_unbacked("agent", proposal("inc-forged", "restart_service", "web-staging", 0.99)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("holds no signal of incident `inc-forged`"), "{}", refused.message());
    let trail = h.audit.read_incident("inc-forged").await.unwrap();
    assert_eq!(trail.len(), 1, "only the refusal: {trail:#?}");
    assert_eq!((trail[0].writer.as_str(), trail[0].payload["event"].as_str()), ("governor", Some("proposal_refused")));
    assert!(h.decisions("alice", "inc-forged").await.unwrap().is_empty(), "no decision was made");
}

#[tokio::test]
async fn a_proposal_that_differs_from_the_logged_diagnosis_is_refused() {
    let h = Harness::start(Setup::default()).await;
    // The agent logged a doubtful hypothesis; the caller claims a confident one.
    let logged = proposal("inc-edit", "restart_service", "web-staging", 0.4);
    h.back(&logged).await;
    let mut claimed = logged.clone();
    claimed.hypothesis.as_mut().unwrap().confidence = 1.0;
    let refused = h.evaluate_unbacked("agent", claimed).await.unwrap_err();
    assert!(refused.message().contains("differs from the one the agent logged") && refused.message().contains("hypothesis"), "{}", refused.message());
    // Another target than the logged one, or a snapshot the log never saw.
    let mut retargeted = logged.clone();
    retargeted.remediation.as_mut().unwrap().target = "vault-staging".to_owned();
    assert!(h.evaluate_unbacked("agent", retargeted).await.unwrap_err().message().contains("remediation"));
    let mut other_snapshot = logged.clone();
    other_snapshot.snapshot_hash = "0000".to_owned();
    assert!(h.evaluate_unbacked("agent", other_snapshot).await.unwrap_err().message().contains("no snapshot `0000`"));
    // The logged one itself is decided.
    assert!(h.evaluate_unbacked("agent", logged).await.is_ok());
}

/// A bundle that lets everything run alone.
const PERMISSIVE: &str = r#"package arf.governor

import rego.v1

decision := {
	"route": "autonomous",
	"reasons": ["anything goes"],
	"rules_fired": ["anything_goes"],
	"approvals_required": 0,
	"approver_roles": [],
}
"#;

#[tokio::test]
async fn no_policy_bundle_can_let_an_out_of_scope_action_through() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("permissive.rego"), PERMISSIVE).unwrap();
    let h = Harness::start(Setup { policies_dir: dir.path().to_owned(), ..Setup::default() }).await;
    let p = proposal("inc-loose", "restart_service", "payments-staging", 0.99);
    h.back_for(&p, "web", "staging").await;
    let decision = h.evaluate_unbacked("agent", p).await.unwrap();
    assert_eq!(route(&decision), pb::Route::Deny);
    assert_eq!(rules(&decision), vec!["anything_goes".to_owned(), "governor_out_of_scope".to_owned()]);
    // In scope, the same bundle is obeyed.
    let own = proposal("inc-own", "restart_service", "web-staging", 0.99);
    h.back(&own).await;
    assert_eq!(route(&h.evaluate_unbacked("agent", own).await.unwrap()), pb::Route::Autonomous);
}
