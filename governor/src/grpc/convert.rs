//! Proto ↔ domain conversions for the governor service.

use arf_core::decision::{Risk, RiskFactor, Route};
use arf_core::diagnosis::{Hypothesis, Proposal, Remediation};
use serde_json::Value;
use tonic::Status;

use arf_proto::v1 as pb;

use crate::decision::{Approval, Decision};
use crate::policy::PolicyOutcome;

/// The proposal of an `Evaluate` request; malformed input names its field.
pub fn proposal(request: pb::EvaluateRequest) -> Result<Proposal, Status> {
    let proposal = request.proposal.ok_or_else(|| Status::invalid_argument("`proposal` is required"))?;
    let hypothesis =
        proposal.hypothesis.ok_or_else(|| Status::invalid_argument("`proposal.hypothesis` is required"))?;
    let remediation =
        proposal.remediation.ok_or_else(|| Status::invalid_argument("`proposal.remediation` is required"))?;
    let remediations = hypothesis
        .remediations
        .into_iter()
        .enumerate()
        .map(|(i, r)| self::remediation(r, &format!("proposal.hypothesis.remediations[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Proposal {
        id: proposal.id,
        incident_id: proposal.incident_id,
        snapshot_hash: proposal.snapshot_hash,
        hypothesis: Hypothesis {
            id: hypothesis.id,
            root_cause: hypothesis.root_cause,
            evidence: hypothesis.evidence,
            confidence: hypothesis.confidence,
            uncertainty: hypothesis.uncertainty,
            expected_impact: hypothesis.expected_impact,
            remediations,
        },
        remediation: self::remediation(remediation, "proposal.remediation")?,
        service: proposal.service,
        environment: proposal.environment,
        reasoner: proposal.reasoner,
    })
}

fn remediation(remediation: pb::Remediation, field: &str) -> Result<Remediation, Status> {
    let parameters = if remediation.parameters_json.trim().is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str(&remediation.parameters_json)
            .map_err(|e| Status::invalid_argument(format!("`{field}.parameters_json` is not JSON: {e}")))?
    };
    Ok(Remediation {
        pathway: remediation.pathway,
        target: remediation.target,
        parameters,
        rationale: remediation.rationale,
    })
}

pub fn route(route: Route) -> pb::Route {
    match route {
        Route::Autonomous => pb::Route::Autonomous,
        Route::Acknowledge => pb::Route::Acknowledge,
        Route::Approval => pb::Route::Approval,
        Route::Deny => pb::Route::Deny,
    }
}

fn risk(risk: &Risk) -> pb::Risk {
    pb::Risk { score: risk.score, band: risk.band.clone(), factors: risk.factors.iter().map(factor).collect() }
}

fn factor(factor: &RiskFactor) -> pb::RiskFactor {
    pb::RiskFactor {
        name: factor.name.clone(),
        value: factor.value,
        weight: factor.weight,
        contribution: factor.contribution,
        detail: factor.detail.clone(),
    }
}

fn policy(outcome: &PolicyOutcome) -> pb::PolicyOutcome {
    pb::PolicyOutcome {
        rules_fired: outcome.rules_fired.clone(),
        reasons: outcome.reasons.clone(),
        approvals_required: outcome.approvals_required,
        approver_roles: outcome.approver_roles.clone(),
        diagnostics: outcome.diagnostics.clone(),
    }
}

fn approval(decision_id: &str, approval: &Approval) -> pb::Approval {
    pb::Approval {
        decision_id: decision_id.to_owned(),
        identity: approval.identity.clone(),
        role: approval.role.clone(),
        at_ms: approval.at_ms,
        verdict: approval.verdict.as_str().to_owned(),
        reason: approval.reason.clone(),
    }
}

pub fn decision(decision: &Decision) -> pb::Decision {
    pb::Decision {
        decision_id: decision.decision_id.clone(),
        incident_id: decision.incident_id.clone(),
        proposal_id: decision.proposal_id.clone(),
        snapshot_hash: decision.snapshot_hash.clone(),
        remediation: Some(pb::Remediation {
            pathway: decision.remediation.pathway.clone(),
            target: decision.remediation.target.clone(),
            parameters_json: arf_core::canonical::to_string(&decision.remediation.parameters).unwrap_or_default(),
            rationale: decision.remediation.rationale.clone(),
        }),
        service: decision.service.clone(),
        environment: decision.environment.clone(),
        route: route(decision.route).into(),
        risk: Some(risk(&decision.risk)),
        policy: Some(policy(&decision.policy)),
        state: decision.state.as_str().to_owned(),
        approvals: decision.approvals.iter().map(|a| approval(&decision.decision_id, a)).collect(),
        issued_at_ms: decision.issued_at_ms,
        expires_at_ms: decision.expires_at_ms,
        confidence: decision.confidence,
        root_cause: decision.root_cause.clone(),
        mode: decision.mode.as_str().to_owned(),
        judgement: decision.judgement.as_ref().map(|j| pb::Judgement {
            identity: j.identity.clone(),
            role: j.role.clone(),
            at_ms: j.at_ms,
            agrees: j.agrees,
            reason: j.reason.clone(),
        }),
    }
}

pub fn signed(signed: &arf_core::decision::SignedDecision) -> pb::SignedDecision {
    pb::SignedDecision {
        body: signed.body.clone(),
        signature: signed.signature.clone(),
        key_id: signed.key_id.clone(),
        audit_seq: signed.audit_seq,
    }
}
