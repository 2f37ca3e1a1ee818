//! What a restarted executor does with an execution it was running when it
//! stopped (a crash, a SIGKILL, an audit failure): pure rules over what the
//! execution store and the audit log say.
//!
//! The action never runs again. If the log already holds the outcome, the store
//! catches up. If nothing was logged as started, nothing ran, and the claim is
//! given back. Otherwise the target is verified again, and rolled back when it is
//! not healthy; a rollback that was under way runs again, since rollbacks are
//! written to be idempotent (the git runner finds its commit by trailer).

use serde_json::Value;

use arf_audit_client::{Record, RecordKind};
use arf_core::records::{
    DecisionStateRecord, ExecutionFinishedRecord, ExecutionStartedRecord, GovernanceEvent, Malformed, OutcomeRecord, RollbackRecord, VerificationRecord,
};

use crate::execution::{Outcome, Phase};

/// What the log holds about one decision's execution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logged {
    pub started: bool,
    /// The action's end (`execution_finished`) or a verification is logged: the
    /// action ran, whatever the store says.
    pub progressed: bool,
    pub rollback: bool,
    pub outcome: Option<Outcome>,
}

/// The audit writer identity whose records are the executor's own.
pub const EXECUTOR_WRITER: &str = "executor";

/// Reads the executor's records of `decision_id` out of its incident's trail. A
/// record another writer appended (the agent, say, fed hostile input) never counts:
/// it could otherwise stop a decision from running by claiming it had started. An
/// executor record not in the executor's format is an error: what ran is then
/// unknown, and nothing may run on a guess.
pub fn logged(trail: &[Record], decision_id: &str) -> Result<Logged, Malformed> {
    let mut logged = Logged::default();
    for record in trail.iter().filter(|r| r.writer == EXECUTOR_WRITER) {
        match record.kind {
            RecordKind::ExecutionStarted => {
                let started: ExecutionStartedRecord = record.parse()?;
                logged.started |= started.decision_id == decision_id;
            }
            RecordKind::ExecutionFinished => {
                let finished: ExecutionFinishedRecord = record.parse()?;
                logged.progressed |= finished.decision_id == decision_id;
            }
            RecordKind::Verification => {
                let verification: VerificationRecord = record.parse()?;
                logged.progressed |= verification.decision_id == decision_id;
            }
            RecordKind::Rollback => {
                let rollback: RollbackRecord = record.parse()?;
                logged.rollback |= rollback.decision_id == decision_id;
            }
            RecordKind::Outcome => {
                let outcome: OutcomeRecord = record.parse()?;
                if outcome.decision_id == decision_id {
                    logged.outcome = parse_outcome(&outcome.outcome);
                }
            }
            _ => {}
        }
    }
    Ok(logged)
}

/// The governor's withdrawal of `decision_id` in its incident's trail, if any: the
/// reason it gave. Only the governor's own records count (another writer could
/// otherwise stop a decision by claiming it was withdrawn); a withdrawal not in the
/// governor's format is an error, and nothing runs on a guess.
pub fn withdrawn(trail: &[Record], decision_id: &str) -> Result<Option<String>, Malformed> {
    for record in trail.iter().filter(|r| r.writer == crate::admission::GOVERNOR_WRITER && r.kind == RecordKind::Decision) {
        let names_it = record.payload.get("event").and_then(Value::as_str) == Some("withdrawn")
            && record.payload.get("decision_id").and_then(Value::as_str) == Some(decision_id);
        if names_it && let GovernanceEvent::Withdrawn { reason, .. } = record.parse()? {
            return Ok(Some(reason));
        }
    }
    Ok(None)
}

/// The state the governor settled `decision_id` in, if its own records say it did
/// (`expired`, `dispatch_failed`, or an outcome it took): such a decision never
/// starts. Only the governor's records count; one of its later-state records
/// that names the decision and is not in that record's format is an error, and
/// nothing runs on a guess.
pub fn settled(trail: &[Record], decision_id: &str) -> Result<Option<String>, Malformed> {
    for record in trail.iter().filter(|r| r.writer == crate::admission::GOVERNOR_WRITER && r.kind == RecordKind::Decision) {
        let names_it = record.payload.get("decision_id").and_then(Value::as_str) == Some(decision_id)
            && arf_core::records::DecisionRecordKind::of(&record.payload) == arf_core::records::DecisionRecordKind::State;
        if !names_it {
            continue;
        }
        let settled: DecisionStateRecord = record.parse()?;
        if arf_core::decision::State::parse(&settled.state).is_none_or(arf_core::decision::State::is_final) {
            return Ok(Some(settled.state));
        }
    }
    Ok(None)
}

/// Another decision of the same incident for the same action (pathway, target and
/// the parameters the pathway acts with, `acting`: as the governor's action key
/// has it) that the log shows started and that did not end in a failure or
/// unrun: it is running, its outcome is unknown, or it verified. Running the action again
/// under a new decision id would be running it twice.
pub fn same_action_started(trail: &[Record], decision_id: &str, pathway: &str, target: &str, parameters: &Value, acting: impl Fn(&Value) -> Value) -> Result<Option<String>, Malformed> {
    let parameters = acting(parameters);
    for record in trail.iter().filter(|r| r.writer == EXECUTOR_WRITER && r.kind == RecordKind::ExecutionStarted) {
        let started: ExecutionStartedRecord = record.parse()?;
        let same = started.decision_id != decision_id && started.pathway == pathway && started.target == target && acting(&started.parameters) == parameters;
        if same && !matches!(logged(trail, &started.decision_id)?.outcome, Some(Outcome::RolledBack | Outcome::RollbackFailed | Outcome::Failed | Outcome::NotRun)) {
            return Ok(Some(started.decision_id));
        }
    }
    Ok(None)
}

fn parse_outcome(text: &str) -> Option<Outcome> {
    [Outcome::Verified, Outcome::RolledBack, Outcome::RollbackFailed, Outcome::Failed, Outcome::Refused, Outcome::NotRun]
        .into_iter()
        .find(|o| o.as_str() == text)
}

/// How to settle an unfinished execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The outcome is logged; only the store is behind.
    Logged(Outcome),
    /// Nothing was logged as started, so nothing ran: give the claim back.
    Release,
    /// The action may have run: verify the target, roll back if it is not healthy.
    Reverify,
    /// The rollback was logged: run it again and verify it.
    RollBackAgain,
    /// A start whose answer was lost, and the log holds it: no step ran, so
    /// nothing changed, and there is nothing to verify or roll back.
    StartedUnrun,
    /// A start whose answer was lost, and the log does not hold it (yet): given
    /// back only once the log can no longer take it ([`Phase::Starting`]; the
    /// executor asks the log for a checkpoint, which comes after all it took).
    Unconfirmed,
}

/// `phase` is where the store says the execution stood. Only a mere claim is
/// released: a store that says the action was under way while the log shows no
/// start means the two disagree (a misnamed writer, a damaged log), and then the
/// target is verified, never acted on again. The log outranks the store when it
/// shows more: a store that says `starting` while the log holds the action's end,
/// a verification or a rollback is behind (restored from a backup, say), and the
/// action ran.
pub fn settle(logged: &Logged, phase: Phase) -> Settle {
    match logged {
        Logged { outcome: Some(outcome), .. } => Settle::Logged(*outcome),
        Logged { rollback: true, .. } => Settle::RollBackAgain,
        Logged { progressed: true, .. } => Settle::Reverify,
        Logged { started: true, .. } if phase == Phase::Starting => Settle::StartedUnrun,
        Logged { started: false, .. } if phase == Phase::Starting => Settle::Unconfirmed,
        Logged { started: false, .. } if phase == Phase::Claimed => Settle::Release,
        Logged { .. } => Settle::Reverify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(writer: &str, kind: RecordKind, payload: serde_json::Value) -> Record {
        Record {
            seq: 1,
            time_ms: 0,
            writer: writer.to_owned(),
            incident_id: "inc".to_owned(),
            kind,
            payload,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn started(writer: &str, id: &str, target: &str) -> Record {
        let payload = arf_core::records::encode(&ExecutionStartedRecord {
            decision_id: id.to_owned(),
            decision_seq: 1,
            pathway: "restart".to_owned(),
            pathway_digest: "sha256:x".to_owned(),
            target: target.to_owned(),
            parameters: serde_json::json!({"a": 1}),
            timeout_secs: 30,
            steps: Vec::new(),
            precheck: None,
        });
        record(writer, RecordKind::ExecutionStarted, payload)
    }

    fn outcome(writer: &str, id: &str, outcome: &str) -> Record {
        let payload = arf_core::records::encode(&OutcomeRecord {
            decision_id: id.to_owned(),
            pathway: "restart".to_owned(),
            target: "web".to_owned(),
            outcome: outcome.to_owned(),
            detail: String::new(),
            recovered: false,
            interrupted_in: None,
            leftovers: Vec::new(),
            precheck: None,
        });
        record(writer, RecordKind::Outcome, payload)
    }

    #[test]
    fn only_the_executors_own_records_count() {
        let forged = [started("agent", "d-1", "web"), outcome("governor", "d-1", "verified")];
        assert_eq!(logged(&forged, "d-1").unwrap(), Logged::default());
        let own = [started("executor", "d-1", "web"), outcome("executor", "d-2", "verified")];
        assert_eq!(logged(&own, "d-1").unwrap(), Logged { started: true, progressed: false, rollback: false, outcome: None });
        // The action's end shows it ran; only from the executor, and only for this decision.
        let finished = |writer: &str, id: &str| {
            let payload = arf_core::records::encode(&ExecutionFinishedRecord {
                decision_id: id.to_owned(),
                phase: "action".to_owned(),
                ok: true,
                summary: String::new(),
                steps: Vec::new(),
                skipped_steps: 0,
            });
            record(writer, RecordKind::ExecutionFinished, payload)
        };
        let ran = [started("executor", "d-1", "web"), finished("agent", "d-1"), finished("executor", "d-2")];
        assert!(!logged(&ran, "d-1").unwrap().progressed);
        let ran = [started("executor", "d-1", "web"), finished("executor", "d-1")];
        assert!(logged(&ran, "d-1").unwrap().progressed);
    }

    #[test]
    fn an_executor_record_not_in_the_executors_format_is_an_error_not_a_guess() {
        let mut odd = outcome("executor", "d-1", "verified");
        odd.payload["smuggled"] = serde_json::json!(true);
        let error = logged(&[started("executor", "d-1", "web"), odd], "d-1").unwrap_err().to_string();
        assert!(error.contains("`outcome` by `executor`") && error.contains("smuggled"), "{error}");
        let missing = record("executor", RecordKind::ExecutionStarted, serde_json::json!({"decision_id": "d-1"}));
        assert!(same_action_started(&[missing], "d-new", "restart", "web", &serde_json::json!({"a": 1}), Value::clone).is_err());
    }

    #[test]
    fn only_the_governors_own_settling_of_the_decision_counts() {
        let state = |writer: &str, id: &str, state: &str| {
            let payload = arf_core::records::encode(&DecisionStateRecord { decision_id: id.to_owned(), state: state.to_owned(), detail: "x".to_owned() });
            record(writer, RecordKind::Decision, payload)
        };
        assert_eq!(settled(&[state("governor", "d-1", "dispatch_failed")], "d-1").unwrap().as_deref(), Some("dispatch_failed"));
        assert_eq!(settled(&[state("governor", "d-1", "expired")], "d-1").unwrap().as_deref(), Some("expired"));
        assert_eq!(settled(&[state("governor", "d-2", "expired")], "d-1").unwrap(), None, "another decision");
        assert_eq!(settled(&[state("agent", "d-1", "expired")], "d-1").unwrap(), None, "another writer's record");
        let mut odd = state("governor", "d-1", "expired");
        odd.payload["smuggled"] = serde_json::json!(true);
        assert!(settled(&[odd], "d-1").is_err(), "not in the record's format: an error, not a guess");
    }

    #[test]
    fn the_same_action_blocks_a_new_decision_until_it_failed() {
        let params = serde_json::json!({"a": 1});
        let check = |trail: &[Record]| same_action_started(trail, "d-new", "restart", "web", &params, Value::clone).unwrap();
        assert_eq!(check(&[started("executor", "d-1", "web")]), Some("d-1".to_owned()), "running or unknown");
        assert_eq!(check(&[started("executor", "d-1", "web"), outcome("executor", "d-1", "verified")]), Some("d-1".to_owned()));
        for failed in ["rolled_back", "rollback_failed", "failed"] {
            assert_eq!(check(&[started("executor", "d-1", "web"), outcome("executor", "d-1", failed)]), None, "{failed}");
        }
        assert_eq!(check(&[started("executor", "d-1", "db")]), None, "another target");
        assert_eq!(check(&[started("agent", "d-1", "web")]), None, "another writer's record");
        assert_eq!(check(&[started("executor", "d-new", "web")]), None, "its own start");
        // Reworded in a parameter the pathway does not act with, it is the same action.
        let reworded = serde_json::json!({"a": 1, "reason": "second try"});
        let acting = |v: &Value| serde_json::json!({"a": v["a"]});
        assert_eq!(same_action_started(&[started("executor", "d-1", "web")], "d-new", "restart", "web", &reworded, acting).unwrap(), Some("d-1".to_owned()));
        assert_eq!(same_action_started(&[started("executor", "d-1", "web")], "d-new", "restart", "web", &reworded, Value::clone).unwrap(), None);
    }

    #[test]
    fn settles_by_what_was_logged() {
        // (started, progressed: the action's end or a verification logged, rollback, outcome)
        let cases = [
            ((false, false, false, None), Phase::Claimed, Settle::Release),
            ((false, false, false, None), Phase::Acting, Settle::Reverify),
            ((false, false, false, None), Phase::Interrupted, Settle::Reverify),
            ((false, false, false, None), Phase::Starting, Settle::Unconfirmed),
            ((true, false, false, None), Phase::Starting, Settle::StartedUnrun),
            ((true, false, false, None), Phase::Claimed, Settle::Reverify),
            ((true, false, false, Some(Outcome::Failed)), Phase::Starting, Settle::Logged(Outcome::Failed)),
            ((true, false, false, None), Phase::Acting, Settle::Reverify),
            ((true, true, false, None), Phase::Acting, Settle::Reverify),
            ((true, true, true, None), Phase::RollingBack, Settle::RollBackAgain),
            ((true, true, true, Some(Outcome::RolledBack)), Phase::VerifyingRollback, Settle::Logged(Outcome::RolledBack)),
            ((true, true, false, Some(Outcome::Verified)), Phase::Verifying, Settle::Logged(Outcome::Verified)),
            // A store behind the log (a backup, a lost save) says `starting`, but the
            // log shows the action ran: it is verified again or rolled back, never
            // taken for an action that never ran.
            ((true, true, false, None), Phase::Starting, Settle::Reverify),
            ((true, false, true, None), Phase::Starting, Settle::RollBackAgain),
            ((false, true, false, None), Phase::Starting, Settle::Reverify),
            ((false, false, true, None), Phase::Claimed, Settle::RollBackAgain),
        ];
        for ((started, progressed, rollback, outcome), phase, expected) in cases {
            assert_eq!(settle(&Logged { started, progressed, rollback, outcome }, phase), expected, "{started} {progressed} {rollback} {outcome:?} {phase:?}");
        }
    }
}
