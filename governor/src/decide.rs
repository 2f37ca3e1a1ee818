//! From a proposal to a decision: check it against the governor's own catalog and
//! inventory, score its risk, build the policy input and let policy route it.
//!
//! Pure, with time and the new decision's id passed in. Only a malformed proposal
//! fails; once a proposal is well-formed, a decision always comes out (policy
//! errors become `deny`).

use std::collections::BTreeMap;

use arf_core::catalog::{Catalog, ParameterError};
use arf_core::diagnosis::Proposal;
use arf_core::target::Inventory;
use thiserror::Error;

use crate::backing::IncidentScope;
use crate::decision::Decision;
use crate::guard::{self, GuardRails, GuardState};
use crate::identity::Caller;
use crate::policy::{self, Policies, PolicyInput};
use crate::risk::{self, RiskInputs, RiskWeights};

/// What the governor judges with: its reviewed files and its configuration.
#[derive(Debug, Clone)]
pub struct Governance<'a> {
    pub catalog: &'a Catalog,
    pub targets: &'a Inventory,
    pub environments: &'a BTreeMap<String, f64>,
    pub weights: &'a RiskWeights,
    pub policies: &'a Policies,
    /// What the guard rails remember: the kill switch, rates, error budgets, outcomes.
    pub guard: &'a GuardState,
    pub guard_rails: &'a GuardRails,
    /// The configured freeze windows, parsed.
    pub freezes: &'a [policy::FreezeWindow],
    pub decision_ttl_ms: i64,
    /// The prior that calibrates a model's stated confidence.
    pub calibration: &'a crate::calibration::Prior,
    /// Each service's mode per environment.
    pub modes: &'a [crate::graduation::ModeRule],
    /// When a pathway graduates on a service.
    pub graduation: &'a crate::graduation::Graduation,
}

/// Why a proposal was refused before it was judged. Each names the proposal field.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum InvalidProposal {
    #[error("`{0}` must not be empty")]
    Missing(&'static str),
    #[error("`proposal.hypothesis.confidence` must be a number in [0, 1], got `{0}`")]
    Confidence(f64),
    #[error("`proposal.remediation.pathway`: unknown pathway `{0}` in the governor's catalog")]
    UnknownPathway(String),
    #[error("`proposal.remediation.parameters_json`: {0}")]
    Parameters(String),
    #[error("`proposal.remediation.target`: unknown target `{0}` in the governor's inventory")]
    UnknownTarget(String),
    #[error(
        "`proposal.remediation.target`: target `{target}` is of kind `{kind}`, but pathway `{pathway}` acts on `{expected}`"
    )]
    TargetKind { target: String, kind: String, pathway: String, expected: String },
}

/// Checks a proposal against the governor's own catalog and inventory.
pub fn check(proposal: &Proposal, governance: &Governance<'_>) -> Result<(), InvalidProposal> {
    let required = [
        ("proposal.id", &proposal.id),
        ("proposal.incident_id", &proposal.incident_id),
        ("proposal.snapshot_hash", &proposal.snapshot_hash),
        ("proposal.remediation.pathway", &proposal.remediation.pathway),
        ("proposal.remediation.target", &proposal.remediation.target),
    ];
    for (field, value) in required {
        if value.trim().is_empty() {
            return Err(InvalidProposal::Missing(field));
        }
    }
    let confidence = proposal.hypothesis.confidence;
    if !(0.0..=1.0).contains(&confidence) {
        return Err(InvalidProposal::Confidence(confidence));
    }
    let pathway_name = &proposal.remediation.pathway;
    let pathway =
        governance.catalog.get(pathway_name).ok_or_else(|| InvalidProposal::UnknownPathway(pathway_name.clone()))?;
    governance.catalog.validate_parameters(pathway_name, &proposal.remediation.parameters).map_err(
        |error| match error {
            ParameterError::UnknownPathway(name) => InvalidProposal::UnknownPathway(name),
            other => InvalidProposal::Parameters(other.to_string()),
        },
    )?;
    let target_name = &proposal.remediation.target;
    let target =
        governance.targets.get(target_name).ok_or_else(|| InvalidProposal::UnknownTarget(target_name.clone()))?;
    if target.kind != pathway.target_kind {
        return Err(InvalidProposal::TargetKind {
            target: target_name.clone(),
            kind: target.kind.clone(),
            pathway: pathway_name.clone(),
            expected: pathway.target_kind.clone(),
        });
    }
    Ok(())
}

/// Checks, scores and routes a proposal. Returns the decision and the exact
/// document policy saw.
pub fn decide(
    governance: &Governance<'_>,
    proposal: &Proposal,
    scope: &IncidentScope,
    requester: &Caller,
    decision_id: String,
    now_ms: i64,
) -> Result<(Decision, PolicyInput), InvalidProposal> {
    check(proposal, governance)?;
    let (input, assessment) = policy_input(governance, proposal, scope, requester, now_ms)?;
    decide_with(governance, proposal, input, assessment, requester, decision_id, now_ms)
}

/// [`decide`], knowing the earlier attempts at the same action.
pub fn decide_again(
    governance: &Governance<'_>,
    proposal: &Proposal,
    scope: &IncidentScope,
    earlier_attempts: Vec<policy::EarlierAttempt>,
    requester: &Caller,
    decision_id: String,
    now_ms: i64,
) -> Result<(Decision, PolicyInput), InvalidProposal> {
    check(proposal, governance)?;
    let (mut input, assessment) = policy_input(governance, proposal, scope, requester, now_ms)?;
    input.action.earlier_attempts = earlier_attempts;
    decide_with(governance, proposal, input, assessment, requester, decision_id, now_ms)
}

fn decide_with(
    governance: &Governance<'_>,
    proposal: &Proposal,
    input: PolicyInput,
    assessment: guard::Assessment,
    requester: &Caller,
    decision_id: String,
    now_ms: i64,
) -> Result<(Decision, PolicyInput), InvalidProposal> {
    // Policy decides; the guard rails can only make its answer stricter, and so can
    // scope: whatever a bundle says, an incident gives no authority outside itself.
    let outcome = scope_backstop(guard::backstop(governance.policies.evaluate(&input), &assessment), &input);
    let outcome = crate::graduation::backstop(outcome, input.mode, &input.track_record, &input.target.service, &input.action.pathway);
    let route = outcome.route;
    let decision = Decision {
        decision_id,
        incident_id: proposal.incident_id.clone(),
        proposal_id: proposal.id.clone(),
        snapshot_hash: proposal.snapshot_hash.clone(),
        remediation: proposal.remediation.clone(),
        service: input.target.service.clone(),
        environment: input.target.environment.clone(),
        route,
        risk: input.risk.clone(),
        policy: outcome,
        state: Decision::initial_state(route, input.mode),
        detail: String::new(),
        approvals: Vec::new(),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(governance.decision_ttl_ms),
        confidence: proposal.hypothesis.confidence,
        root_cause: proposal.hypothesis.root_cause.clone(),
        evidence: proposal.hypothesis.evidence.clone(),
        expected_impact: proposal.hypothesis.expected_impact.clone(),
        uncertainty: proposal.hypothesis.uncertainty.clone(),
        reasoner: proposal.reasoner.clone(),
        requester: requester.name.clone(),
        guard_rails: guard::describe(&assessment, &input.target.service, &input.action.pathway),
        incident_services: input.incident.services.clone(),
        relation: input.target.relation.clone(),
        model: input.calibration.model.clone(),
        calibrated_confidence: input.calibration.confidence,
        mode: input.mode,
        judgement: None,
    };
    Ok((decision, input))
}

/// The rule the governor adds when it denies an out-of-scope target that policy let through.
pub const BACKSTOP_SCOPE: &str = "governor_out_of_scope";

/// Denies an action on a target outside the incident's scope, whatever the policy
/// bundle answered (the default bundle denies it itself; a bundle cannot loosen it).
pub fn scope_backstop(mut outcome: crate::policy::PolicyOutcome, input: &PolicyInput) -> crate::policy::PolicyOutcome {
    if input.target.relation == arf_core::target::Relation::OutOfScope.as_str() && outcome.route != arf_core::decision::Route::Deny {
        outcome.route = arf_core::decision::Route::Deny;
        outcome.approvals_required = 0;
        outcome.approver_roles.clear();
        outcome.rules_fired.push(BACKSTOP_SCOPE.to_owned());
        outcome.reasons.push(format!(
            "the governor enforces scope: target `{}` is neither one of incident {}'s services ({}) in its environments ({}) nor a declared dependency of one, so nothing runs",
            input.target.name,
            input.incident.id,
            input.incident.services.join(", "),
            input.incident.environments.join(", ")
        ));
    }
    outcome
}

/// Builds the versioned document policy reads, with the risk already scored and
/// the guard rails assessed at `now_ms`.
pub fn policy_input(
    governance: &Governance<'_>,
    proposal: &Proposal,
    scope: &IncidentScope,
    requester: &Caller,
    now_ms: i64,
) -> Result<(PolicyInput, guard::Assessment), InvalidProposal> {
    let pathway_name = &proposal.remediation.pathway;
    let pathway =
        governance.catalog.get(pathway_name).ok_or_else(|| InvalidProposal::UnknownPathway(pathway_name.clone()))?;
    let target_name = &proposal.remediation.target;
    let target =
        governance.targets.get(target_name).ok_or_else(|| InvalidProposal::UnknownTarget(target_name.clone()))?;
    let sensitivity = governance.environments.get(&target.environment).copied();
    let assessment = guard::assess(
        governance.guard,
        governance.guard_rails,
        governance.freezes,
        &target.service,
        pathway_name,
        now_ms,
    );
    let risk = risk::score(
        &RiskInputs {
            environment: target.environment.clone(),
            environment_sensitivity: sensitivity,
            blast_radius: pathway.blast_radius,
            irreversible: pathway.irreversible,
            base_risk: pathway.base_risk,
            success_rate: assessment.success_rate,
            confidence: proposal.hypothesis.confidence,
            minutes_since_last_change: None,
            pathway_security_sensitive: pathway.security_sensitive,
            target_security_sensitive: target.security_sensitive,
        },
        governance.weights,
    );
    let relation = arf_core::target::relation(governance.targets, &scope.services, &scope.environments, target_name);
    let input = PolicyInput {
        version: policy::INPUT_VERSION,
        action: policy::ActionInput {
            pathway: pathway_name.clone(),
            target: target_name.clone(),
            parameters: proposal.remediation.parameters.clone(),
            earlier_attempts: Vec::new(),
        },
        incident: policy::IncidentInput {
            id: scope.incident_id.clone(),
            services: scope.services.iter().cloned().collect(),
            environments: scope.environments.iter().cloned().collect(),
            signal_kinds: scope.signal_kinds.iter().cloned().collect(),
            signals: scope.signals,
            attempt: scope.attempt,
        },
        pathway: policy::PathwayInput {
            name: pathway.name.clone(),
            target_kind: pathway.target_kind.clone(),
            base_risk: pathway.base_risk,
            blast_radius: pathway.blast_radius,
            irreversible: pathway.irreversible,
            security_sensitive: pathway.security_sensitive,
            rollback: assessment.is_rollback,
        },
        target: policy::TargetInput {
            name: target_name.clone(),
            kind: target.kind.clone(),
            service: target.service.clone(),
            environment: target.environment.clone(),
            tier: target.tier.clone(),
            security_sensitive: target.security_sensitive,
            relation: relation.as_str().to_owned(),
            dependency_of: match &relation {
                arf_core::target::Relation::Dependency { of } => of.clone(),
                _ => Vec::new(),
            },
        },
        environment: policy::EnvironmentInput {
            name: target.environment.clone(),
            known: sensitivity.is_some(),
            sensitivity: sensitivity.unwrap_or(1.0),
        },
        risk,
        confidence: proposal.hypothesis.confidence,
        calibration: {
            let record = governance.guard.models.get(&scope.model).and_then(|m| m.get(pathway_name)).cloned().unwrap_or_default();
            policy::CalibrationInput {
                model: scope.model.clone(),
                confidence: crate::calibration::calibrate(proposal.hypothesis.confidence, &record, governance.calibration),
                runs: record.runs,
                verified: record.verified,
                prior_cap: governance.calibration.prior_cap,
                prior_weight: governance.calibration.prior_weight,
            }
        },
        requester: policy::RequesterInput {
            identity: requester.name.clone(),
            role: requester.role.as_str().to_owned(),
        },
        proposal: policy::ProposalInput {
            id: proposal.id.clone(),
            incident_id: proposal.incident_id.clone(),
            snapshot_hash: proposal.snapshot_hash.clone(),
            reasoner: proposal.reasoner.clone(),
        },
        autonomy: assessment.autonomy.clone(),
        freeze_windows: assessment.freeze_windows.clone(),
        outcome_stats: assessment.outcome_stats.clone(),
        mode: crate::graduation::mode_for(governance.modes, &target.environment, &target.service),
        track_record: crate::graduation::track(&governance.guard.tracks, &target.environment, &target.service, pathway_name)
            .cloned()
            .unwrap_or_default()
            .input(governance.graduation, now_ms),
    };
    Ok((input, assessment))
}
