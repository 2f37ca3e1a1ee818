//! The rules of oversight as pure functions, with time passed in: who may approve or
//! reject a decision, when, and when enough people have.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

use arf_core::decision::{Risk, Route};
use arf_core::diagnosis::Remediation;
use arf_governor::decision::{self, Approval, Decision, Progress, State, Verdict};
use arf_governor::identity::{Caller, Role};
use arf_governor::policy::PolicyOutcome;

const ISSUED: i64 = 1_000_000;
const EXPIRES: i64 = 1_900_000;

fn pending(approvals_required: u32, approver_roles: &[&str]) -> Decision {
    Decision {
        decision_id: "dec-1".into(),
        incident_id: "inc-1".into(),
        proposal_id: "prop-1".into(),
        snapshot_hash: "abc".into(),
        remediation: Remediation {
            pathway: "restart_service".into(),
            target: "web-prod".into(),
            parameters: serde_json::json!({}),
            rationale: String::new(),
        },
        service: "web".into(),
        environment: "production".into(),
        route: Route::Approval,
        risk: Risk { score: 0.4, band: "medium".into(), factors: vec![] },
        policy: PolicyOutcome {
            route: Route::Approval,
            reasons: vec![],
            rules_fired: vec![],
            approvals_required,
            approver_roles: approver_roles.iter().map(|r| (*r).to_owned()).collect(),
            diagnostics: vec![],
        },
        state: State::Pending,
        detail: String::new(),
        approvals: vec![],
        issued_at_ms: ISSUED,
        expires_at_ms: EXPIRES,
        confidence: 0.9,
        root_cause: "x".into(),
        evidence: vec![],
        expected_impact: String::new(),
        uncertainty: String::new(),
        reasoner: "scripted".into(),
        // A person as requester, so that self-approval can be tried at all.
        requester: "erin".into(),
        guard_rails: vec![],
        incident_services: vec!["web".into()],
        relation: "incident_service".into(),
        model: "scripted:test".into(),
        calibrated_confidence: 0.7,
        mode: arf_core::decision::Mode::Autonomous,
        judgement: None,
    }
}

fn caller(name: &str, role: Role) -> Caller {
    Caller { name: name.into(), role }
}

fn approval(name: &str, role: &str) -> Approval {
    Approval {
        identity: name.into(),
        role: role.into(),
        at_ms: ISSUED,
        verdict: Verdict::Approve,
        reason: String::new(),
    }
}

/// `Ok` or the start of the error message.
fn check(decision: &Decision, who: &Caller, now_ms: i64, expected: Result<(), &str>) {
    let actual = decision::check_approval(decision, who, now_ms).map_err(|e| e.to_string());
    match (&actual, expected) {
        (Ok(()), Ok(())) => {}
        (Err(message), Err(start)) if message.starts_with(start) => {}
        _ => panic!("{} at {now_ms}: expected {expected:?}, got {actual:?}", who.name),
    }
}

#[test]
fn who_may_approve_and_when() {
    let open = pending(1, &["oncall", "admin"]);
    check(&open, &caller("alice", Role::Oncall), ISSUED, Ok(()));
    check(&open, &caller("dave", Role::Admin), EXPIRES - 1, Ok(()));
    check(&open, &caller("alice", Role::Oncall), EXPIRES, Err("decision `dec-1` expired at"));
    check(&open, &caller("erin", Role::Oncall), ISSUED, Err("`erin` asked for decision `dec-1`"));
    check(&open, &caller("carol", Role::Security), ISSUED, Err("role `security` may not approve"));
    check(&open, &caller("agent", Role::Agent), ISSUED, Err("only people may approve"));
    check(&open, &caller("dash", Role::Tooling), ISSUED, Err("only people may approve"));

    let anyone = pending(1, &[]);
    check(&anyone, &caller("carol", Role::Security), ISSUED, Ok(()));

    let mut once = pending(2, &[]);
    once.approvals.push(approval("alice", "oncall"));
    check(&once, &caller("alice", Role::Oncall), ISSUED, Err("`alice` already approved"));
    check(&once, &caller("bob", Role::Oncall), ISSUED, Ok(()));

    for state in [State::Denied, State::Rejected, State::Authorized, State::Expired, State::Verified] {
        let mut closed = pending(1, &[]);
        closed.state = state;
        check(&closed, &caller("alice", Role::Oncall), ISSUED, Err("decision `dec-1` is `"));
    }
}

#[test]
fn enough_distinct_approvals_approve() {
    let mut decision = pending(2, &[]);
    assert_eq!(
        decision::record_approval(&mut decision, approval("alice", "oncall")),
        Progress::Waiting { given: 1, required: 2 }
    );
    assert_eq!(decision.state, State::Pending);
    assert_eq!(decision::record_approval(&mut decision, approval("bob", "oncall")), Progress::Approved);
    assert_eq!(decision.state, State::Approved);
    assert_eq!(decision.body("digest").approvals.len(), 2);

    // An acknowledgment needs one person even if policy said zero.
    let mut ack = pending(0, &[]);
    ack.route = Route::Acknowledge;
    assert_eq!(ack.approvals_required(), 1);
    assert_eq!(decision::record_approval(&mut ack, approval("alice", "oncall")), Progress::Approved);
}

#[test]
fn rejection_needs_a_reason_and_a_person() {
    let decision = pending(1, &["oncall"]);
    let alice = caller("alice", Role::Oncall);
    assert_eq!(
        decision::check_rejection(&decision, &alice, "  ", ISSUED).unwrap_err().to_string(),
        "a rejection needs a reason: say why the action must not run"
    );
    // Any person may say no, whatever the approver roles.
    decision::check_rejection(&decision, &caller("carol", Role::Security), "unsafe now", ISSUED).unwrap();
    assert!(decision::check_rejection(&decision, &caller("dash", Role::Tooling), "no", ISSUED).is_err());
    assert!(decision::check_rejection(&decision, &alice, "too late", EXPIRES).is_err());

    let mut rejected = decision.clone();
    decision::record_rejection(
        &mut rejected,
        Approval { verdict: Verdict::Reject, reason: "unsafe now".into(), ..approval("carol", "security") },
    );
    assert_eq!(rejected.state, State::Rejected);
    assert_eq!(rejected.approvals_given(), 0);
}

#[test]
fn expiry_is_decided_by_the_time_passed_in() {
    let mut decision = pending(1, &[]);
    assert!(!decision.expire_if_due(EXPIRES - 1));
    assert_eq!(decision.state, State::Pending);
    assert!(decision.expire_if_due(EXPIRES));
    assert_eq!(decision.state, State::Expired);
    assert!(!decision.expire_if_due(EXPIRES + 1), "expires once");
}
