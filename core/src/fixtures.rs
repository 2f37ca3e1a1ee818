//! Well-formed records for tests in other crates (feature `fixtures`): built from
//! the same types the writers use, so a test's log is in the writers' format.

use crate::decision::{Decision, DecisionBody, PolicyOutcome, Risk, Route};
use crate::diagnosis::Remediation;
use crate::records::DecidedRecord;

/// The body of decision `dec-1`: `restart_service` on `api`, digest `d1`.
pub fn body() -> DecisionBody {
    DecisionBody {
        version: 1,
        decision_id: "dec-1".into(),
        incident_id: "inc-1".into(),
        proposal_id: "prop-1".into(),
        snapshot_hash: "snap".into(),
        pathway: "restart_service".into(),
        pathway_digest: "d1".into(),
        target: "api".into(),
        parameters: serde_json::json!({"reason": "x"}),
        route: Route::Autonomous,
        approvals: Vec::new(),
        risk_score: 0.1,
        issued_at_ms: 0,
        expires_at_ms: 1,
    }
}

/// The record that made the decision of `body`, routed `route`, with policy asking
/// for `approvals_required` approvals from `approver_roles`.
pub fn decided(body: &DecisionBody, route: Route, approvals_required: u32, approver_roles: &[&str]) -> DecidedRecord {
    let decision = Decision {
        decision_id: body.decision_id.clone(),
        incident_id: body.incident_id.clone(),
        proposal_id: body.proposal_id.clone(),
        snapshot_hash: body.snapshot_hash.clone(),
        remediation: Remediation { pathway: body.pathway.clone(), target: body.target.clone(), parameters: body.parameters.clone(), rationale: String::new() },
        service: "api".into(),
        environment: "staging".into(),
        route,
        risk: Risk { score: body.risk_score, band: "low".into(), factors: Vec::new() },
        policy: PolicyOutcome {
            route,
            reasons: Vec::new(),
            rules_fired: Vec::new(),
            approvals_required,
            approver_roles: approver_roles.iter().map(|r| (*r).to_owned()).collect(),
            diagnostics: Vec::new(),
        },
        state: Decision::initial_state(route, crate::decision::Mode::Autonomous),
        detail: String::new(),
        approvals: Vec::new(),
        issued_at_ms: body.issued_at_ms,
        expires_at_ms: body.expires_at_ms,
        confidence: 0.9,
        root_cause: "x".into(),
        evidence: Vec::new(),
        expected_impact: String::new(),
        uncertainty: String::new(),
        reasoner: "scripted".into(),
        requester: "agent".into(),
        guard_rails: Vec::new(),
        incident_services: vec!["api".into()],
        relation: "incident_service".into(),
        model: "scripted".into(),
        calibrated_confidence: 0.7,
        mode: crate::decision::Mode::Autonomous,
        judgement: None,
    };
    DecidedRecord { decision, policy_input: serde_json::json!({"version": 3}) }
}

