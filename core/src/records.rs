//! The payloads of audit records, written and read by the same types.
//!
//! Every process that writes a record builds it as one of these structs, and every
//! process that acts on a record parses it back into the same struct, with unknown
//! fields refused: a record that has drifted from its writer's format, or was
//! forged with extra or missing fields, is an error that names the record, never
//! a quietly defaulted field. The JSON shapes are the log's format; a change here
//! is a change of the log format.
//!
//! Who writes what: the agent `signal`, `incident`, `snapshot`, `investigation`
//! and `diagnosis` records; the governor `decision` and `approval` records; the executor
//! `execution_started`, `execution_finished`, `verification`, `rollback` and
//! `outcome` records. The audit log enforces each writer's kinds.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::decision::{Approval, DecisionBody};
use crate::diagnosis::{Hypothesis, Proposal, Snapshot};
use crate::signal::Signal;

/// A record payload that is not what its kind says it is.
#[derive(Debug, Error)]
#[error("record {seq} (`{kind}` by `{writer}`) is not a well-formed `{kind}` record: {source}")]
pub struct Malformed {
    pub seq: u64,
    pub kind: String,
    pub writer: String,
    #[source]
    pub source: serde_json::Error,
}

/// Parses `payload` as `T`, naming the record on failure.
pub fn parse<T: DeserializeOwned>(payload: &Value, seq: u64, kind: &str, writer: &str) -> Result<T, Malformed> {
    T::deserialize(payload).map_err(|source| Malformed { seq, kind: kind.to_owned(), writer: writer.to_owned(), source })
}

/// Encodes a payload. The types here hold only strings, numbers, maps and
/// sequences, so encoding cannot fail; `Null` would be refused by the log.
pub fn encode<T: Serialize>(payload: &T) -> Value {
    serde_json::to_value(payload).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------- the agent

/// `signal`: one accepted signal, in ARF's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRecord {
    pub signal: Signal,
    /// The same condition was already in the incident (a repeat notification).
    pub duplicate: bool,
    /// The identity that sent it (absent in records written before senders were logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

/// `incident`: a change in an incident's life, by event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum IncidentRecord {
    /// A signal opened the incident.
    Opened {
        title: String,
        service: String,
        /// The kind of signal that groups into it (`alert`, `finding`, …).
        family: String,
        environment: String,
        /// `open`, or `resolved` when it opened with an already resolved alert.
        state: String,
        first_signal: String,
    },
    /// Every alert in it resolved.
    Resolved { state: String, reason: String },
    /// A person must look: nothing more will be done on its own.
    Escalated { state: String, reason: String },
    /// The governor answered the proposal `proposal_id` with `decision_id`.
    Proposed { state: String, proposal_id: String, decision_id: String, route: String },
    /// The action of `after_decision` failed verification and was rolled back: the
    /// agent tries the next grounded hypothesis of the incident's diagnosis, as
    /// attempt `attempt` (the diagnosis record that follows carries its proposal).
    Reattempt { state: String, after_decision: String, attempt: u32, reason: String },
    /// Not an incident's: the agent's state, folded from the log up to `through_seq`,
    /// was saved with this SHA-256 (`agent/src/snapshot.rs`). Logged under the
    /// incident id [`STATE_SNAPSHOT`], so a restart may start from the saved state
    /// only when the log vouches for it.
    StateSnapshot { hash: String, through_seq: u64 },
}

/// The incident id of [`IncidentRecord::StateSnapshot`] records.
pub const STATE_SNAPSHOT: &str = "agent-state";

impl IncidentRecord {
    pub fn resolved(reason: &str) -> Self {
        Self::Resolved { state: "resolved".to_owned(), reason: reason.to_owned() }
    }

    pub fn escalated(reason: &str) -> Self {
        Self::Escalated { state: "escalated".to_owned(), reason: reason.to_owned() }
    }

    pub fn proposed(proposal_id: &str, decision_id: &str, route: &str) -> Self {
        Self::Proposed {
            state: "proposed".to_owned(),
            proposal_id: proposal_id.to_owned(),
            decision_id: decision_id.to_owned(),
            route: route.to_owned(),
        }
    }
}

/// `snapshot`: what the model was shown, and its hash (what proposals cite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRecord {
    pub hash: String,
    pub snapshot: Snapshot,
    /// Set when this snapshot is an earlier one (this hash) with the results of
    /// the diagnosis's investigation added: the same diagnosis, not a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
}

/// How one investigation call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvestigationStatus {
    /// It ran; its (redacted, bounded) result is `item`.
    Answered,
    /// Refused before anything ran: no such tool, not allowed here, a target out of
    /// scope, parameters outside the tool's schema, the budget spent.
    Refused,
    /// It ran and failed: a timeout, an error status, an unreachable endpoint.
    Failed,
}

/// `investigation`: one read-only tool call the agent made while diagnosing, and
/// what came of it, logged before the model sees the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvestigationRecord {
    /// The snapshot the diagnosis started from.
    pub snapshot_hash: String,
    /// 1 for the first call of the diagnosis.
    pub call: u32,
    pub tool: String,
    /// The arguments as the reasoner gave them (redacted).
    pub arguments: Value,
    pub status: InvestigationStatus,
    /// Why it was refused or failed; empty when answered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The result as a context item the diagnosis may cite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<crate::diagnosis::SnapshotItem>,
    /// Bytes of output the tool produced (read up to its limit plus one).
    #[serde(default)]
    pub output_bytes: u64,
    /// The output was cut at the tool's limit.
    #[serde(default)]
    pub truncated: bool,
    pub duration_ms: u64,
}

/// How one diagnosis attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosisStatus {
    /// The reasoner gave no answer (`error`, and `fallback` if another takes over).
    Failed,
    /// The answer was refused (`reasons`); it may be repaired.
    Refused,
    /// The answer was grounded; `proposal` is what goes to the governor, if any.
    Grounded,
}

/// `diagnosis`: one attempt of one reasoner at one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosisRecord {
    pub prompt_id: String,
    pub prompt_hash: String,
    pub snapshot_hash: String,
    pub reasoner: String,
    /// 1 for the first answer, then one more per repair.
    pub attempt: u32,
    pub status: DiagnosisStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// What the reasoner answered, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model name the endpoint answered with, when it was not `model` (the
    /// configured one, which calibration goes by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<String>,
    /// The `noisy` reasoner's deliberate mistake, for the evaluation harness only:
    /// nothing in the control plane reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_mistake: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hypotheses: Vec<Hypothesis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<Proposal>,
    /// Set when this record asks for no model call: its proposal is the next
    /// grounded hypothesis of an earlier diagnosis, after this decision's action
    /// rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_decision: Option<String>,
    /// Model requests beyond the first that this answer took to call investigation
    /// tools: each counts against the incident's bound on model calls.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_rounds: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DiagnosisRecord {
    /// A first attempt of `reasoner` at the snapshot `snapshot_hash`, with nothing
    /// answered yet (status `failed` until an answer says otherwise).
    pub fn attempt(prompt_id: &str, prompt_hash: &str, snapshot_hash: &str, reasoner: &str) -> Self {
        Self {
            prompt_id: prompt_id.to_owned(),
            prompt_hash: prompt_hash.to_owned(),
            snapshot_hash: snapshot_hash.to_owned(),
            reasoner: reasoner.to_owned(),
            attempt: 1,
            status: DiagnosisStatus::Failed,
            error: None,
            fallback: None,
            model: None,
            served_by: None,
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: None,
            json_mode: None,
            completion: None,
            injected_mistake: None,
            reasons: Vec::new(),
            hypotheses: Vec::new(),
            proposal: None,
            after_decision: None,
            tool_rounds: 0,
        }
    }
}

// ------------------------------------------------------------- the governor

/// `decision` with state `authorized`: the envelope the executor may run, logged
/// before it is signed; the executor checks the envelope's hash against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizedRecord {
    pub decision_id: String,
    /// Always `authorized`.
    pub state: String,
    pub envelope_sha256: String,
    pub body: DecisionBody,
    pub route: String,
    pub approvals: Vec<Approval>,
}

/// Which of its `decision` records the governor wrote, told apart by their fields:
/// the record that made a decision carries the document policy saw
/// (`policy_input`); events (guard rails, refusals, overdue outcomes, the kill
/// switch) an `event`; an authorization its `state`; the rest are later states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionRecordKind {
    /// The decision as made, with `policy_input` (the governor's own type).
    Decided,
    /// An [`AuthorizedRecord`].
    Authorized,
    /// Something the governor did or learned, named by `event`.
    Event,
    /// A [`DecisionStateRecord`].
    State,
}

impl DecisionRecordKind {
    pub fn of(payload: &Value) -> Self {
        if payload.get("policy_input").is_some() {
            Self::Decided
        } else if payload.get("event").is_some() {
            Self::Event
        } else if payload.get("state").and_then(Value::as_str) == Some("authorized") {
            Self::Authorized
        } else {
            Self::State
        }
    }
}

/// `decision` as made: the decision and the exact document policy saw. The
/// governor alone reads `policy_input` as its policy contract (`PolicyInput`);
/// here it is kept as written. The decision's own fields are checked strictly.
#[derive(Debug, Clone, PartialEq)]
pub struct DecidedRecord {
    pub decision: crate::decision::Decision,
    pub policy_input: Value,
}

impl Serialize for DecidedRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = match serde_json::to_value(&self.decision).map_err(serde::ser::Error::custom)? {
            Value::Object(map) => map,
            _ => return Err(serde::ser::Error::custom("a decision serializes to an object")),
        };
        map.insert("policy_input".to_owned(), self.policy_input.clone());
        map.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DecidedRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut map = serde_json::Map::deserialize(deserializer)?;
        let policy_input = map.remove("policy_input").ok_or_else(|| D::Error::missing_field("policy_input"))?;
        if !policy_input.is_object() {
            return Err(D::Error::custom("`policy_input` is not an object"));
        }
        let decision = crate::decision::Decision::deserialize(Value::Object(map)).map_err(D::Error::custom)?;
        Ok(Self { decision, policy_input })
    }
}

/// `decision` with an `event`: something the governor did or learned that is not
/// a decision's state: a refused proposal, a guard rail tripping, the kill switch,
/// a reset, a policy reload, an overdue outcome, a withdrawn decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum GovernanceEvent {
    /// A proposal the log does not back; nothing was decided.
    ProposalRefused { proposal_id: String, target: String, pathway: String, reason: String },
    /// A rate limit switched autonomy off for a service.
    RateLimitTripped { trip: crate::decision::Trip, incident_id: String, decision_id: String },
    /// An error budget switched autonomy off for a pathway on a service.
    ErrorBudgetTripped { trip: crate::decision::Trip, incident_id: String, decision_id: String },
    /// A failed rollback quarantined a service.
    RollbackFailedTripped { trip: crate::decision::Trip, incident_id: String, decision_id: String },
    /// The kill switch, by whom and why.
    AutonomySwitched { enabled: bool, identity: String, role: String, reason: String, at_ms: i64 },
    /// An admin cleared tripped guard rails.
    AutonomyReset { service: String, pathway: String, identity: String, role: String, reason: String, at_ms: i64, clearing: Vec<crate::decision::Trip> },
    /// A policy bundle that did not load; the running one kept serving.
    PoliciesReloadRefused { identity: String, error: String },
    /// A policy bundle loaded; decisions after this record use it.
    PoliciesReloaded { identity: String, files: Vec<String> },
    /// The executor took the decision and has not reported its outcome long after
    /// it expired: counted as a failure until it does.
    OutcomeOverdue { decision_id: String, detail: String },
    /// A person judged a shadow decision: would its action have been right?
    ShadowJudged { decision_id: String, service: String, pathway: String, judgement: crate::decision::Judgement },
    /// The governor withdrew its authorization of a decision, since the guard rails
    /// no longer let it start (the kill switch, a quarantine, an exhausted error
    /// budget, a freeze), or the executor refused it after an earlier attempt that
    /// may have reached it. Logged under the decision's incident before the governor
    /// asks the executor about it; an executor that reads it in the trail before the
    /// decision started does not start it. One already started runs to its outcome.
    Withdrawn { decision_id: String, reason: String, at_ms: i64 },
    /// A pathway graduated on a service (may run there on its own in review mode), or was demoted.
    Graduation { environment: String, service: String, pathway: String, graduated: bool, reason: String, at_ms: i64 },
    /// Not an incident's: the governor's state, folded from the log up to
    /// `through_seq`, was saved with this SHA-256 (`governor/src/snapshot.rs`).
    /// Logged under the incident id [`GOVERNOR_STATE_SNAPSHOT`], so a restart may
    /// start from the saved state only when the log vouches for it.
    StateSnapshot { hash: String, through_seq: u64 },
}

/// The incident id of [`GovernanceEvent::StateSnapshot`] records.
pub const GOVERNOR_STATE_SNAPSHOT: &str = "governor-state";

impl GovernanceEvent {
    /// The event a guard rail's trip is logged as.
    pub fn tripped(trip: crate::decision::Trip, incident_id: &str, decision_id: &str) -> Self {
        let (incident_id, decision_id) = (incident_id.to_owned(), decision_id.to_owned());
        match trip.kind {
            crate::decision::TripKind::RateLimit => Self::RateLimitTripped { trip, incident_id, decision_id },
            crate::decision::TripKind::ErrorBudget => Self::ErrorBudgetTripped { trip, incident_id, decision_id },
            crate::decision::TripKind::RollbackFailed => Self::RollbackFailedTripped { trip, incident_id, decision_id },
        }
    }
}

/// `decision`: a later state of a decision (expired, settled by its outcome,
/// failed to dispatch, …) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionStateRecord {
    pub decision_id: String,
    pub state: String,
    pub detail: String,
}

/// `approval`: one person's verdict, as the governor authenticated them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRecord {
    pub decision_id: String,
    pub identity: String,
    pub role: String,
    /// `approve` or `reject`.
    pub verdict: crate::decision::Verdict,
    pub at_ms: i64,
    /// An approval's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// A rejection's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals_given: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals_required: Option<u32>,
    /// The state the verdict put the decision in (`rejected`), when it changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

// ------------------------------------------------------------- the executor

/// `execution_started`: the intent, written before the first step runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionStartedRecord {
    pub decision_id: String,
    /// The sequence number of the `authorized` record the envelope pointed at.
    pub decision_seq: u64,
    pub pathway: String,
    pub pathway_digest: String,
    pub target: String,
    pub parameters: Value,
    pub timeout_secs: u64,
    /// The rendered steps, as logged (credential-like header values hidden).
    pub steps: Vec<Value>,
    /// What the pathway's precheck answered before the action was allowed to
    /// start; absent for a pathway without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precheck: Option<PrecheckRecord>,
}

/// What a pathway's precheck steps answered: each step's result, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecheckRecord {
    /// The rendered steps, as logged (credential-like header values hidden).
    pub planned: Vec<Value>,
    pub ok: bool,
    pub summary: String,
    pub steps: Vec<Value>,
    pub skipped_steps: u64,
}

/// `execution_finished`: what the action's (or the rollback's) steps did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionFinishedRecord {
    pub decision_id: String,
    /// `action` or `rollback`.
    pub phase: String,
    pub ok: bool,
    pub summary: String,
    /// Each step's result, as logged (output cut to a bound).
    pub steps: Vec<Value>,
    pub skipped_steps: u64,
}

/// `verification`: the verdict of the probes over the verification window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationRecord {
    pub decision_id: String,
    /// `action` or `rollback`.
    pub phase: String,
    pub passed: bool,
    pub detail: String,
    pub samples: u64,
    /// Per probe, how its samples went.
    pub probes: Value,
    pub failed_samples: Vec<Value>,
    pub last_sample: Option<Value>,
    /// A verification by a restarted executor, of an execution a crash cut off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// What the crashed executor's steps left running, stopped before verifying.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<Value>,
}

/// `rollback`: the intent to roll back, written before the first rollback step runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRecord {
    pub decision_id: String,
    pub reason: String,
    pub timeout_secs: u64,
    pub steps: Vec<Value>,
}

/// `outcome`: how an execution ended, written last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRecord {
    pub decision_id: String,
    pub pathway: String,
    pub target: String,
    /// `verified`, `rolled_back`, `rollback_failed`, `failed`, `refused` (the
    /// precheck failed, so the action never started), or `not_run` (logged as
    /// started, but no step ran: the start's answer was lost).
    pub outcome: String,
    pub detail: String,
    /// For `refused`: what the precheck answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precheck: Option<PrecheckRecord>,
    /// Settled by a restarted executor, after a crash cut the execution off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// What the crash cut off, when `recovered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted_in: Option<String>,
    /// What the crashed executor's steps left running, stopped before settling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unknown_field_is_refused_and_the_record_named() {
        let payload = json!({"signal": {}, "duplicate": false, "smuggled": true});
        let error = parse::<SignalRecord>(&payload, 17, "signal", "agent").unwrap_err().to_string();
        assert!(error.starts_with("record 17 (`signal` by `agent`) is not a well-formed `signal` record"), "{error}");
    }

    #[test]
    fn incident_events_round_trip_and_refuse_strangers() {
        for record in [IncidentRecord::resolved("done"), IncidentRecord::escalated("look"), IncidentRecord::proposed("p", "d", "autonomous")] {
            let value = encode(&record);
            assert_eq!(parse::<IncidentRecord>(&value, 1, "incident", "agent").unwrap(), record);
        }
        let extra = json!({"event": "resolved", "state": "resolved", "reason": "x", "decision_id": "dec-forged"});
        assert!(parse::<IncidentRecord>(&extra, 1, "incident", "agent").is_err());
        let unknown = json!({"event": "reopened", "state": "open", "reason": "x"});
        assert!(parse::<IncidentRecord>(&unknown, 1, "incident", "agent").is_err());
    }

    #[test]
    fn governance_events_round_trip_and_refuse_strangers() {
        let trip = crate::decision::Trip {
            kind: crate::decision::TripKind::RollbackFailed,
            service: "web".into(),
            pathway: String::new(),
            since_ms: 5,
            reason: "rollback failed".into(),
        };
        let event = GovernanceEvent::tripped(trip.clone(), "inc-1", "dec-1");
        let value = encode(&event);
        assert_eq!(value["event"], "rollback_failed_tripped", "the name operators grep for");
        assert_eq!(parse::<GovernanceEvent>(&value, 1, "decision", "governor").unwrap(), event);
        let switched = GovernanceEvent::AutonomySwitched { enabled: false, identity: "alice".into(), role: "oncall".into(), reason: "3 a.m.".into(), at_ms: 1 };
        assert_eq!(parse::<GovernanceEvent>(&encode(&switched), 1, "decision", "governor").unwrap(), switched);
        let mut extra = encode(&switched);
        extra["enabled_for"] = json!("everyone");
        assert!(parse::<GovernanceEvent>(&extra, 1, "decision", "governor").is_err());
        let unknown = json!({"event": "autonomy_granted", "identity": "mallory"});
        assert!(parse::<GovernanceEvent>(&unknown, 1, "decision", "governor").is_err());
        let mut bad_trip = encode(&GovernanceEvent::tripped(trip, "inc-1", "dec-1"));
        bad_trip["trip"]["scope"] = json!("all");
        assert!(parse::<GovernanceEvent>(&bad_trip, 1, "decision", "governor").is_err());
    }

    #[test]
    fn an_outcome_missing_a_field_is_refused() {
        let payload = json!({"decision_id": "d", "pathway": "p", "target": "t", "outcome": "verified"});
        assert!(parse::<OutcomeRecord>(&payload, 3, "outcome", "executor").is_err());
    }
}
