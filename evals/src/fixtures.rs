//! Records for the unit tests, in their writers' formats (`arf_core::records`).

use std::collections::BTreeMap;

use serde_json::Value;

use arf_core::decision::{DecisionBody, Route};
use arf_core::records::{self, ApprovalRecord, AuthorizedRecord, ExecutionStartedRecord, OutcomeRecord, SignalRecord};

/// The body of decision `dec-1` ([`arf_core::fixtures::body`]).
pub fn body() -> DecisionBody {
    arf_core::fixtures::body()
}

/// The record that made the decision of `body` ([`arf_core::fixtures::decided`]).
pub fn decided(body: &DecisionBody, route: Route, approvals_required: u32, approver_roles: &[&str]) -> Value {
    records::encode(&arf_core::fixtures::decided(body, route, approvals_required, approver_roles))
}

pub fn authorized(body: &DecisionBody) -> Value {
    let hash = arf_core::canonical::sha256_hex(&arf_core::canonical::to_vec(body).unwrap_or_default());
    records::encode(&AuthorizedRecord {
        decision_id: body.decision_id.clone(),
        state: "authorized".into(),
        envelope_sha256: hash,
        body: body.clone(),
        route: body.route.as_str().into(),
        approvals: Vec::new(),
    })
}

pub fn started(body: &DecisionBody, decision_seq: u64) -> Value {
    records::encode(&ExecutionStartedRecord {
        decision_id: body.decision_id.clone(),
        decision_seq,
        pathway: body.pathway.clone(),
        pathway_digest: body.pathway_digest.clone(),
        target: body.target.clone(),
        parameters: body.parameters.clone(),
        timeout_secs: 30,
        steps: Vec::new(),
        precheck: None,
    })
}

pub fn outcome(body: &DecisionBody, outcome: &str) -> Value {
    records::encode(&OutcomeRecord {
        decision_id: body.decision_id.clone(),
        pathway: body.pathway.clone(),
        target: body.target.clone(),
        outcome: outcome.into(),
        detail: String::new(),
        recovered: false,
        interrupted_in: None,
        leftovers: Vec::new(),
        precheck: None,
    })
}

pub fn approval(decision_id: &str, identity: &str, role: &str) -> Value {
    records::encode(&ApprovalRecord {
        decision_id: decision_id.into(),
        identity: identity.into(),
        role: role.into(),
        verdict: arf_core::decision::Verdict::Approve,
        at_ms: 0,
        comment: Some(String::new()),
        reason: None,
        approvals_given: None,
        approvals_required: None,
        state: None,
    })
}

pub fn signal(id: &str) -> Value {
    let signal = arf_core::signal::Signal {
        id: id.into(),
        source: "alertmanager".into(),
        kind: arf_core::signal::SignalKind::Alert,
        status: arf_core::signal::SignalStatus::Firing,
        title: "api down".into(),
        description: String::new(),
        severity: "critical".into(),
        service: "api".into(),
        environment: "staging".into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        observed_at_ms: 0,
        fingerprint: "fp".into(),
    };
    records::encode(&SignalRecord { signal, duplicate: false, sender: None })
}
