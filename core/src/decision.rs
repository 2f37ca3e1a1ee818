//! Routes, risk, and the signed decision envelope that the executor acts on.
//!
//! The signature covers the canonical JSON of [`DecisionBody`], byte for byte, so
//! every field that affects what runs (pathway, its digest, target, parameters,
//! route, approvals, expiry) is covered.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::canonical;
use crate::diagnosis::Remediation;

/// Where the governor routes a proposal. Not `non_exhaustive`: a new route must
/// break every `match` that decides what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Autonomous,
    Acknowledge,
    Approval,
    Deny,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Autonomous => "autonomous",
            Self::Acknowledge => "acknowledge",
            Self::Approval => "approval",
            Self::Deny => "deny",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "autonomous" => Some(Self::Autonomous),
            "acknowledge" => Some(Self::Acknowledge),
            "approval" => Some(Self::Approval),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }

    /// Stricter routes rank higher; combining two routes keeps the stricter.
    pub fn strictness(self) -> u8 {
        match self {
            Self::Autonomous => 0,
            Self::Acknowledge => 1,
            Self::Approval => 2,
            Self::Deny => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskFactor {
    pub name: String,
    pub value: f64,
    pub weight: f64,
    pub contribution: f64,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Risk {
    pub score: f64,
    pub band: String,
    pub factors: Vec<RiskFactor>,
}

/// Who approved, as the governor authenticated them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRef {
    pub identity: String,
    pub role: String,
    pub at_ms: i64,
}

/// `approve` or `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
        }
    }
}

/// One person's verdict on a decision, as the governor authenticated them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub identity: String,
    pub role: String,
    pub at_ms: i64,
    pub verdict: Verdict,
    /// The approver's comment, or the reason for a rejection.
    pub reason: String,
}

/// Everything the executor needs, and everything the signature covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// The envelope format version.
    pub version: u32,
    pub decision_id: String,
    pub incident_id: String,
    pub proposal_id: String,
    pub snapshot_hash: String,
    pub pathway: String,
    /// The content hash of the pathway definition the governor judged; the executor
    /// refuses when its own catalog's definition differs.
    pub pathway_digest: String,
    pub target: String,
    pub parameters: Value,
    pub route: Route,
    pub approvals: Vec<ApprovalRef>,
    pub risk_score: f64,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
}

pub const ENVELOPE_VERSION: u32 = 1;

/// A decision body with its signature, as it travels to the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDecision {
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
    pub key_id: String,
    pub audit_seq: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("decision is signed by unknown key `{0}`")]
    UnknownKey(String),
    #[error("decision signature does not verify")]
    BadSignature,
    #[error("decision body is malformed: {0}")]
    Malformed(String),
    #[error("decision `{decision_id}` expired at {expired_at}")]
    Expired { decision_id: String, expired_at: String },
    #[error("decision `{0}` has route `deny` and can never run")]
    Denied(String),
    #[error("decision `{0}` has an unsupported envelope version")]
    Version(String),
}

/// A key the executor trusts, with its id.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key_id: String,
    pub key: ed25519_dalek::VerifyingKey,
}

/// Names a key: hex of the first 8 bytes of the SHA-256 of the public key.
pub fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    canonical::sha256_hex(key.as_bytes()).chars().take(16).collect()
}

/// Signs a body. The body is encoded canonically so that the bytes signed are the
/// bytes that travel, and the same body always gives the same bytes.
pub fn sign(body: &DecisionBody, key: &ed25519_dalek::SigningKey, audit_seq: u64) -> Result<SignedDecision, serde_json::Error> {
    use ed25519_dalek::Signer;
    let bytes = canonical::to_vec(body)?;
    let signature = key.sign(&bytes);
    Ok(SignedDecision {
        body: bytes,
        signature: signature.to_bytes().to_vec(),
        key_id: key_id(&key.verifying_key()),
        audit_seq,
    })
}

/// Checks signature, format and expiry, and returns the body. Checking the audit
/// record is the caller's job: it needs the log.
pub fn verify(signed: &SignedDecision, trusted: &[TrustedKey], now_ms: i64) -> Result<DecisionBody, EnvelopeError> {
    let key = trusted
        .iter()
        .find(|k| k.key_id == signed.key_id)
        .ok_or_else(|| EnvelopeError::UnknownKey(signed.key_id.clone()))?;
    let signature =
        ed25519_dalek::Signature::from_slice(&signed.signature).map_err(|_| EnvelopeError::BadSignature)?;
    key.key
        .verify_strict(&signed.body, &signature)
        .map_err(|_| EnvelopeError::BadSignature)?;
    let body: DecisionBody =
        serde_json::from_slice(&signed.body).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if body.version != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version(body.decision_id));
    }
    if body.route == Route::Deny {
        return Err(EnvelopeError::Denied(body.decision_id));
    }
    if now_ms >= body.expires_at_ms {
        return Err(EnvelopeError::Expired {
            decision_id: body.decision_id,
            expired_at: crate::time::format_ms(body.expires_at_ms),
        });
    }
    Ok(body)
}

// ------------------------------------------------------------- decisions as the governor logs them

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
    /// The pathway's precheck refused the action: nothing ran, nothing changed.
    Refused,
    /// The log holds the decision's start, but the executor never ran a step of it
    /// (the answer to its start was lost, and the log took the start after all):
    /// nothing changed. Not a run: no error budget, record or calibration counts it.
    NotRun,
    /// Decided in shadow mode: what would have run is logged; nothing was sent.
    Shadow,
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
            Self::Refused => "refused",
            Self::NotRun => "not_run",
            Self::Shadow => "shadow",
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
            Self::Refused,
            Self::NotRun,
            Self::Shadow,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    /// Whether a decision in this state stands in the way of a new decision for the
    /// same action: it is live (waiting, approved, authorized), it succeeded, or
    /// policy, a person or the pathway's precheck said no (a repeat does not get to
    /// ask again). Only an action whose attempt failed, rolled back, expired unrun,
    /// never reached the executor or never ran may be decided again.
    pub fn holds_action(self) -> bool {
        matches!(self, Self::Pending | Self::Approved | Self::Authorized | Self::Verified | Self::Denied | Self::Rejected | Self::Refused | Self::Shadow)
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
            "refused" => Some(Self::Refused),
            "not_run" => Some(Self::NotRun),
            _ => None,
        }
    }
}

/// What policy decided, checked against the output contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOutcome {
    pub route: Route,
    pub reasons: Vec<String>,
    pub rules_fired: Vec<String>,
    pub approvals_required: u32,
    pub approver_roles: Vec<String>,
    /// Evaluation errors; when there are any, the route is `deny`.
    pub diagnostics: Vec<String>,
}

impl PolicyOutcome {
    /// The outcome when policy cannot be evaluated or answers nonsense.
    pub fn error(diagnostic: impl Into<String>) -> Self {
        Self {
            route: Route::Deny,
            reasons: vec!["the policy could not be evaluated, so the governor denies the action".to_owned()],
            rules_fired: Vec::new(),
            approvals_required: 0,
            approver_roles: Vec::new(),
            diagnostics: vec![diagnostic.into()],
        }
    }
}

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
    /// The mode the service was in: a `shadow` decision is never sent to the executor.
    #[serde(default)]
    pub mode: Mode,
    /// For a shadow decision, a person's judgement of it, once given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
}

/// How far ARF may go on a service in an environment (`[[governor.modes]]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Diagnose and decide, log what would have run, send nothing to the executor.
    Shadow,
    /// A person approves every action, except a pathway that has earned autonomy on
    /// the service by its track record (graduated).
    Review,
    /// Policy decides, as it says.
    #[default]
    Autonomous,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shadow => "shadow",
            Self::Review => "review",
            Self::Autonomous => "autonomous",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Shadow, Self::Review, Self::Autonomous].into_iter().find(|m| m.as_str() == text)
    }
}

/// A person's judgement of a shadow decision: would its action have been right?
/// Agreeing judgements count toward the pathway's graduation on the service,
/// disagreeing ones against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Judgement {
    pub identity: String,
    pub role: String,
    pub at_ms: i64,
    pub agrees: bool,
    pub reason: String,
}

/// The action a decision or proposal is about: one per incident, pathway, target and
/// (canonical) parameters, whatever decision or proposal id carries it.
pub fn action_key(incident_id: &str, remediation: &Remediation) -> String {
    let parameters = crate::canonical::to_string(&remediation.parameters).unwrap_or_default();
    crate::canonical::to_string(&[incident_id, &remediation.pathway, &remediation.target, &parameters]).unwrap_or_default()
}

/// What every [`action_key`] of `incident_id` starts with.
pub fn action_key_prefix(incident_id: &str) -> String {
    let full = action_key(incident_id, &Remediation { pathway: String::new(), target: String::new(), parameters: Value::Null, rationale: String::new() });
    let quoted = crate::canonical::to_string(&incident_id).unwrap_or_default();
    full.get(..1 + quoted.len() + 1).map(str::to_owned).unwrap_or(full)
}

impl Decision {
    pub fn action_key(&self) -> String {
        action_key(&self.incident_id, &self.remediation)
    }

    /// The state a fresh decision starts in, from its route and mode: in shadow
    /// mode, whatever policy allowed is only recorded (`shadow`), never run.
    pub fn initial_state(route: Route, mode: Mode) -> State {
        match (route, mode) {
            (Route::Deny, _) => State::Denied,
            (_, Mode::Shadow) => State::Shadow,
            (Route::Autonomous, Mode::Review | Mode::Autonomous) => State::Approved,
            (Route::Acknowledge | Route::Approval, Mode::Review | Mode::Autonomous) => State::Pending,
        }
    }

    /// How many distinct approvals the decision needs in all (acknowledge: one).
    pub fn approvals_required(&self) -> u32 {
        match self.route {
            Route::Autonomous | Route::Deny => 0,
            Route::Acknowledge | Route::Approval => self.policy.approvals_required.max(1),
        }
    }

    /// Distinct approvals so far: approvers, each counted once however often their
    /// approval is in the log (a retried call whose first answer was lost, or one
    /// made at another governor replica, can log it twice).
    pub fn approvals_given(&self) -> u32 {
        let approvers: std::collections::BTreeSet<&str> = self.approvals.iter().filter(|a| a.verdict == Verdict::Approve).map(|a| a.identity.as_str()).collect();
        u32::try_from(approvers.len()).unwrap_or(u32::MAX)
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// Marks a pending decision expired once its time has passed; true when it changed.
    pub fn expire_if_due(&mut self, now_ms: i64) -> bool {
        if self.state == State::Pending && self.is_expired(now_ms) {
            self.state = State::Expired;
            self.detail =
                format!("expired at {} without enough approvals", crate::time::format_ms(self.expires_at_ms));
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

/// Which guard rail latched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TripKind {
    RateLimit,
    ErrorBudget,
    /// A rollback failed: the service is quarantined (all its pathways).
    RollbackFailed,
}

impl TripKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::ErrorBudget => "error_budget",
            Self::RollbackFailed => "rollback_failed",
        }
    }
}

/// A guard rail that switched autonomy off for a service (rate limit, quarantine) or
/// for one pathway on one service (error budget).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trip {
    pub kind: TripKind,
    pub service: String,
    /// Empty for a rate limit or a quarantine, which cover every pathway of the service.
    pub pathway: String,
    pub since_ms: i64,
    pub reason: String,
}

impl Trip {
    pub fn covers(&self, service: &str, pathway: &str) -> bool {
        self.service == service && (self.pathway.is_empty() || self.pathway == pathway)
    }

    /// Whether a reset of `service` lifts this trip: a reset of the whole service
    /// (`pathway` is `None`) lifts all of its trips; a reset of one pathway lifts only
    /// that pathway's error budget. A trip that covers every pathway (the rate limit,
    /// the quarantine) is about the whole service, so only a reset of the whole
    /// service lifts it: a reset must never reach further than what it names.
    pub fn lifted_by(&self, service: &str, pathway: Option<&str>) -> bool {
        self.service == service && pathway.is_none_or(|p| !self.pathway.is_empty() && self.pathway == p)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_incidents_action_keys_share_its_prefix_and_no_other_incidents_do() {
        let remediation = Remediation { pathway: "restart_service".into(), target: "web".into(), parameters: serde_json::json!({"a": 1}), rationale: String::new() };
        let prefix = action_key_prefix("inc-1");
        assert!(action_key("inc-1", &remediation).starts_with(&prefix), "{prefix}");
        assert!(!action_key("inc-10", &remediation).starts_with(&prefix));
        assert!(!action_key("inc-", &remediation).starts_with(&prefix));
    }

    use super::*;

    fn body(expires_at_ms: i64) -> DecisionBody {
        DecisionBody {
            version: ENVELOPE_VERSION,
            decision_id: "dec-1".into(),
            incident_id: "inc-1".into(),
            proposal_id: "prop-1".into(),
            snapshot_hash: "abc".into(),
            pathway: "restart_service".into(),
            pathway_digest: "d".into(),
            target: "web".into(),
            parameters: serde_json::json!({}),
            route: Route::Autonomous,
            approvals: vec![],
            risk_score: 0.1,
            issued_at_ms: 0,
            expires_at_ms,
        }
    }

    fn keypair(seed: u8) -> (ed25519_dalek::SigningKey, Vec<TrustedKey>) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let trusted = vec![TrustedKey { key_id: key_id(&key.verifying_key()), key: key.verifying_key() }];
        (key, trusted)
    }

    #[test]
    fn a_signed_body_verifies() {
        let (key, trusted) = keypair(1);
        let signed = sign(&body(100), &key, 7).unwrap();
        assert_eq!(verify(&signed, &trusted, 50).unwrap(), body(100));
    }

    #[test]
    fn altered_forged_and_expired_are_refused() {
        let (key, trusted) = keypair(1);
        let mut altered = sign(&body(100), &key, 7).unwrap();
        let text = String::from_utf8(altered.body.clone()).unwrap().replace("restart_service", "delete_everything");
        altered.body = text.into_bytes();
        assert_eq!(verify(&altered, &trusted, 50), Err(EnvelopeError::BadSignature));

        let (forger, _) = keypair(2);
        let mut forged = sign(&body(100), &forger, 7).unwrap();
        assert!(matches!(verify(&forged, &trusted, 50), Err(EnvelopeError::UnknownKey(_))));
        forged.key_id = trusted[0].key_id.clone();
        assert_eq!(verify(&forged, &trusted, 50), Err(EnvelopeError::BadSignature));

        let signed = sign(&body(100), &key, 7).unwrap();
        assert!(matches!(verify(&signed, &trusted, 100), Err(EnvelopeError::Expired { .. })));
    }
}
