//! The governor's decisions: how they are made from a checked proposal, and the
//! rules of oversight (who may approve or reject, when, and when enough have).
//!
//! Everything here is pure, with time passed in.

use arf_core::decision::{ApprovalRef, DecisionBody, ENVELOPE_VERSION, Risk, Route};
use arf_core::records::{self, ApprovalRecord, AuthorizedRecord, DecisionRecordKind, DecisionStateRecord, Malformed};
use arf_core::diagnosis::Remediation;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::identity::Caller;
use crate::policy::PolicyOutcome;

/// Where a decision stands. Not `non_exhaustive`: every state must be handled
/// wherever states are shown or acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for acknowledgment or approvals.
    Pending,
    /// Allowed (by policy alone, or with enough approvals), not yet signed.
    Approved,
    /// Signed, logged and being dispatched to the executor.
    Authorized,
    /// Policy said no; nothing runs, ever.
    Denied,
    /// A person said no; nothing runs.
    Rejected,
    /// Not enough approvals before the decision expired; nothing runs.
    Expired,
    /// Allowed, but the authorization could not be logged; nothing runs.
    AuthorizationFailed,
    /// The executor could not be reached before expiry, or refused the decision.
    DispatchFailed,
    /// The executor ran it and verification passed.
    Verified,
    /// Verification failed and the rollback worked.
    RolledBack,
    /// Verification failed and so did the rollback.
    RollbackFailed,
    /// The action itself failed.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Authorized => "authorized",
            Self::Denied => "denied",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::AuthorizationFailed => "authorization_failed",
            Self::DispatchFailed => "dispatch_failed",
            Self::Verified => "verified",
            Self::RolledBack => "rolled_back",
            Self::RollbackFailed => "rollback_failed",
            Self::Failed => "failed",
        }
    }

    /// The state a logged name stands for.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Approved,
            Self::Authorized,
            Self::Denied,
            Self::Rejected,
            Self::Expired,
            Self::AuthorizationFailed,
            Self::DispatchFailed,
            Self::Verified,
            Self::RolledBack,
            Self::RollbackFailed,
            Self::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    /// Whether a decision in this state stands in the way of a new decision for the
    /// same action: it is live (waiting, approved, authorized), it succeeded, or
    /// policy or a person said no (a repeat does not get to ask again). Only an action
    /// whose attempt failed, rolled back, expired unrun or never reached the executor
    /// may be decided again.
    pub fn holds_action(self) -> bool {
        matches!(self, Self::Pending | Self::Approved | Self::Authorized | Self::Verified | Self::Denied | Self::Rejected)
    }

    /// Whether nothing more happens to a decision in this state.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Approved | Self::Authorized)
    }

    /// The state an executor outcome puts a decision in; `None` for an outcome that is not final.
    pub fn from_outcome(outcome: &str) -> Option<Self> {
        match outcome {
            "verified" => Some(Self::Verified),
            "rolled_back" => Some(Self::RolledBack),
            "rollback_failed" => Some(Self::RollbackFailed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

pub use arf_core::decision::{Approval, Verdict};

/// A decision and everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub decision_id: String,
    pub incident_id: String,
    pub proposal_id: String,
    pub snapshot_hash: String,
    pub remediation: Remediation,
    /// The target's service and environment, from the inventory.
    pub service: String,
    pub environment: String,
    pub route: Route,
    pub risk: Risk,
    pub policy: PolicyOutcome,
    pub state: State,
    /// What happened last, in words (a dispatch error, the executor's detail).
    pub detail: String,
    pub approvals: Vec<Approval>,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub confidence: f64,
    pub root_cause: String,
    pub evidence: Vec<String>,
    pub expected_impact: String,
    pub uncertainty: String,
    pub reasoner: String,
    /// The identity that asked for the decision.
    pub requester: String,
    /// The guard rails at decision time, in words (see [`crate::guard::describe`]).
    #[serde(default)]
    pub guard_rails: Vec<String>,
    /// The services of the incident's signals, as the log holds them.
    #[serde(default)]
    pub incident_services: Vec<String>,
    /// The target's place in the incident (`incident_service`, `dependency`, `out_of_scope`).
    #[serde(default)]
    pub relation: String,
    /// The model whose proposal this is (from the agent's logged diagnosis).
    #[serde(default)]
    pub model: String,
    /// The model's confidence, calibrated by its record on the pathway (`crate::calibration`).
    #[serde(default)]
    pub calibrated_confidence: f64,
}

/// The action a decision or proposal is about: one per incident, pathway, target and
/// (canonical) parameters, whatever decision or proposal id carries it.
pub fn action_key(incident_id: &str, remediation: &Remediation) -> String {
    let parameters = arf_core::canonical::to_string(&remediation.parameters).unwrap_or_default();
    arf_core::canonical::to_string(&[incident_id, &remediation.pathway, &remediation.target, &parameters]).unwrap_or_default()
}

impl Decision {
    pub fn action_key(&self) -> String {
        action_key(&self.incident_id, &self.remediation)
    }

    /// The state a fresh decision starts in, from its route.
    pub fn initial_state(route: Route) -> State {
        match route {
            Route::Autonomous => State::Approved,
            Route::Acknowledge | Route::Approval => State::Pending,
            Route::Deny => State::Denied,
        }
    }

    /// How many distinct approvals the decision needs in all (acknowledge: one).
    pub fn approvals_required(&self) -> u32 {
        match self.route {
            Route::Autonomous | Route::Deny => 0,
            Route::Acknowledge | Route::Approval => self.policy.approvals_required.max(1),
        }
    }

    /// Distinct approvals so far.
    pub fn approvals_given(&self) -> u32 {
        let count = self.approvals.iter().filter(|a| a.verdict == Verdict::Approve).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// Marks a pending decision expired once its time has passed; true when it changed.
    pub fn expire_if_due(&mut self, now_ms: i64) -> bool {
        if self.state == State::Pending && self.is_expired(now_ms) {
            self.state = State::Expired;
            self.detail =
                format!("expired at {} without enough approvals", arf_core::time::format_ms(self.expires_at_ms));
            return true;
        }
        false
    }

    /// The envelope body the executor acts on.
    pub fn body(&self, pathway_digest: &str) -> DecisionBody {
        DecisionBody {
            version: ENVELOPE_VERSION,
            decision_id: self.decision_id.clone(),
            incident_id: self.incident_id.clone(),
            proposal_id: self.proposal_id.clone(),
            snapshot_hash: self.snapshot_hash.clone(),
            pathway: self.remediation.pathway.clone(),
            pathway_digest: pathway_digest.to_owned(),
            target: self.remediation.target.clone(),
            parameters: self.remediation.parameters.clone(),
            route: self.route,
            approvals: self
                .approvals
                .iter()
                .filter(|a| a.verdict == Verdict::Approve)
                .map(|a| ApprovalRef { identity: a.identity.clone(), role: a.role.clone(), at_ms: a.at_ms })
                .collect(),
            risk_score: self.risk.score,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// Why an approval or rejection was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OversightError {
    #[error("only people may approve or reject; `{identity}` has role `{role}`")]
    NotHuman { identity: String, role: String },
    #[error("decision `{decision_id}` is `{state}`, not pending")]
    NotPending { decision_id: String, state: String },
    #[error("decision `{decision_id}` expired at {expired_at}; ask the agent for a fresh decision")]
    Expired { decision_id: String, expired_at: String },
    #[error("`{identity}` asked for decision `{decision_id}` and cannot approve it; someone else must")]
    SelfApproval { identity: String, decision_id: String },
    #[error(
        "`{identity}` already approved decision `{decision_id}`; a second approval by the same person does not count"
    )]
    AlreadyApproved { identity: String, decision_id: String },
    #[error("role `{role}` may not approve decision `{decision_id}`; policy asks for {allowed}")]
    RoleNotAllowed { role: String, decision_id: String, allowed: String },
    #[error("a rejection needs a reason: say why the action must not run")]
    MissingReason,
}

/// What an approval leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More approvals are needed.
    Waiting { given: u32, required: u32 },
    /// Enough: the decision may be authorized.
    Approved,
}

/// Only people approve or reject: processes never may.
pub fn check_person(caller: &Caller) -> Result<(), OversightError> {
    if caller.role.is_human() {
        Ok(())
    } else {
        Err(OversightError::NotHuman { identity: caller.name.clone(), role: caller.role.as_str().to_owned() })
    }
}

fn check_open(decision: &Decision, caller: &Caller, now_ms: i64) -> Result<(), OversightError> {
    check_person(caller)?;
    if decision.state != State::Pending {
        return Err(OversightError::NotPending {
            decision_id: decision.decision_id.clone(),
            state: decision.state.as_str().to_owned(),
        });
    }
    if decision.is_expired(now_ms) {
        return Err(OversightError::Expired {
            decision_id: decision.decision_id.clone(),
            expired_at: arf_core::time::format_ms(decision.expires_at_ms),
        });
    }
    Ok(())
}

/// Whether `caller` may approve `decision` at `now_ms`. Checked before the approval
/// is logged; it counts only once logged (see [`record_approval`]).
pub fn check_approval(decision: &Decision, caller: &Caller, now_ms: i64) -> Result<(), OversightError> {
    // Self-approval first: it is the most telling answer to whoever tries it.
    if caller.name == decision.requester {
        return Err(OversightError::SelfApproval {
            identity: caller.name.clone(),
            decision_id: decision.decision_id.clone(),
        });
    }
    check_open(decision, caller, now_ms)?;
    if decision.approvals.iter().any(|a| a.identity == caller.name && a.verdict == Verdict::Approve) {
        return Err(OversightError::AlreadyApproved {
            identity: caller.name.clone(),
            decision_id: decision.decision_id.clone(),
        });
    }
    let roles = &decision.policy.approver_roles;
    if !roles.is_empty() && !roles.iter().any(|r| r == caller.role.as_str()) {
        return Err(OversightError::RoleNotAllowed {
            role: caller.role.as_str().to_owned(),
            decision_id: decision.decision_id.clone(),
            allowed: roles.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(" or "),
        });
    }
    Ok(())
}

/// Whether `caller` may reject `decision`. Any person may stop an action: saying no
/// is always the safe direction.
pub fn check_rejection(decision: &Decision, caller: &Caller, reason: &str, now_ms: i64) -> Result<(), OversightError> {
    if reason.trim().is_empty() {
        return Err(OversightError::MissingReason);
    }
    check_open(decision, caller, now_ms)
}

/// Counts a logged approval and says whether the decision now has enough.
pub fn record_approval(decision: &mut Decision, approval: Approval) -> Progress {
    decision.approvals.push(approval);
    let given = decision.approvals_given();
    let required = decision.approvals_required();
    if given >= required {
        decision.state = State::Approved;
        Progress::Approved
    } else {
        Progress::Waiting { given, required }
    }
}

/// Records a logged rejection.
pub fn record_rejection(decision: &mut Decision, rejection: Approval) {
    decision.detail = format!("rejected by `{}`: {}", rejection.identity, rejection.reason);
    decision.approvals.push(rejection);
    decision.state = State::Rejected;
}

/// Rebuilds decisions from the governor's own audit records, in log order, after
/// a restart: each decision from the record that made it, then its approvals and
/// every later change of state. Each record is read as the type the governor wrote
/// it with; one that is not is an error, since decisions rebuilt around it would
/// be a guess.
pub fn restore(records: &[arf_audit_client::Record]) -> Result<std::collections::BTreeMap<String, Decision>, Malformed> {
    let mut restored = Restored::default();
    for record in records {
        restored.add(record)?;
    }
    Ok(restored.decisions)
}

/// Decisions rebuilt from the log one record at a time ([`restore`]), so a restart
/// can stream the log rather than hold it; with what each authorization signed.
#[derive(Debug, Default)]
pub struct Restored {
    pub decisions: std::collections::BTreeMap<String, Decision>,
    /// Per decision, the body its authorization signed and that record's sequence number.
    pub authorized: std::collections::BTreeMap<String, (DecisionBody, u64)>,
}

impl Restored {
    /// Folds one record, in log order.
    pub fn add(&mut self, record: &arf_audit_client::Record) -> Result<(), Malformed> {
        use arf_audit_client::RecordKind;
        if record.writer != "governor" {
            return Ok(());
        }
        let decisions = &mut self.decisions;
        match record.kind {
            RecordKind::Decision => match DecisionRecordKind::of(&record.payload) {
                DecisionRecordKind::Decided => {
                    let mut payload = record.payload.clone();
                    if let serde_json::Value::Object(map) = &mut payload {
                        map.remove("policy_input");
                    }
                    let decision: Decision = records::parse(&payload, record.seq, record.kind.as_str(), &record.writer)?;
                    decisions.insert(decision.decision_id.clone(), decision);
                }
                DecisionRecordKind::Authorized => {
                    let logged: AuthorizedRecord = record.parse()?;
                    if let Some(decision) = decisions.get_mut(&logged.decision_id) {
                        decision.state = State::Authorized;
                    }
                    self.authorized.insert(logged.decision_id, (logged.body, record.seq));
                }
                DecisionRecordKind::State => {
                    let logged: DecisionStateRecord = record.parse()?;
                    if let Some(decision) = decisions.get_mut(&logged.decision_id) {
                        if let Some(state) = State::parse(&logged.state) {
                            decision.state = state;
                        }
                        decision.detail = logged.detail;
                    }
                }
                DecisionRecordKind::Event => {
                    // What the governor learned while a decision waited (an overdue
                    // outcome) changes what it says, not where the decision stands.
                    if record.payload.get("event").and_then(serde_json::Value::as_str) == Some("outcome_overdue") {
                        let logged: OutcomeOverdue = record.parse()?;
                        if let Some(decision) = decisions.get_mut(&logged.decision_id) {
                            decision.detail = logged.detail;
                        }
                    }
                }
            },
            RecordKind::Approval => {
                let logged: ApprovalRecord = record.parse()?;
                let Some(decision) = decisions.get_mut(&logged.decision_id) else { return Ok(()) };
                let reason = match logged.verdict {
                    Verdict::Reject => logged.reason.unwrap_or_default(),
                    Verdict::Approve => logged.comment.unwrap_or_default(),
                };
                decision.approvals.push(Approval {
                    identity: logged.identity,
                    role: logged.role,
                    at_ms: logged.at_ms,
                    verdict: logged.verdict,
                    reason,
                });
                if let Some(state) = logged.state.as_deref().and_then(State::parse) {
                    decision.state = state;
                } else if logged.verdict == Verdict::Reject && decision.state == State::Pending {
                    decision.state = State::Rejected;
                } else if decision.state == State::Pending && decision.approvals_given() >= decision.approvals_required() {
                    // The last approval it needed is logged; a crash came before the
                    // authorization. It comes back approved, and is resumed.
                    decision.state = State::Approved;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// `decision` with event `outcome_overdue`: the executor took the decision and
/// has not reported its outcome long after it expired.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeOverdue {
    pub decision_id: String,
    /// Always `outcome_overdue`.
    pub event: String,
    pub detail: String,
}
