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

use arf_audit::{Record, RecordKind};

use crate::execution::{Outcome, Phase};

/// What the log holds about one decision's execution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logged {
    pub started: bool,
    pub rollback: bool,
    pub outcome: Option<Outcome>,
}

/// The audit writer identity whose records are the executor's own.
pub const EXECUTOR_WRITER: &str = "executor";

/// Reads the executor's records of `decision_id` out of its incident's trail. A
/// record another writer appended (the agent, say, fed hostile input) never counts:
/// it could otherwise stop a decision from running by claiming it had started.
pub fn logged(trail: &[Record], decision_id: &str) -> Logged {
    let mut logged = Logged::default();
    for record in trail {
        if record.writer != EXECUTOR_WRITER || record.payload.get("decision_id").and_then(Value::as_str) != Some(decision_id) {
            continue;
        }
        match record.kind {
            RecordKind::ExecutionStarted => logged.started = true,
            RecordKind::Rollback => logged.rollback = true,
            RecordKind::Outcome => {
                logged.outcome = record.payload.get("outcome").and_then(Value::as_str).and_then(parse_outcome);
            }
            _ => {}
        }
    }
    logged
}

/// Another decision of the same incident for the same action (pathway, target and
/// parameters) that the log shows started and that did not end in a failure: it
/// is running, its outcome is unknown, or it verified. Running the action again
/// under a new decision id would be running it twice.
pub fn same_action_started(trail: &[Record], decision_id: &str, pathway: &str, target: &str, parameters: &Value) -> Option<String> {
    trail
        .iter()
        .filter(|r| r.writer == EXECUTOR_WRITER && r.kind == RecordKind::ExecutionStarted)
        .filter(|r| r.payload.get("decision_id").and_then(Value::as_str).is_some_and(|id| id != decision_id))
        .filter(|r| {
            r.payload.get("pathway").and_then(Value::as_str) == Some(pathway)
                && r.payload.get("target").and_then(Value::as_str) == Some(target)
                && r.payload.get("parameters") == Some(parameters)
        })
        .filter_map(|r| r.payload.get("decision_id").and_then(Value::as_str))
        .find(|earlier| {
            !matches!(logged(trail, earlier).outcome, Some(Outcome::RolledBack | Outcome::RollbackFailed | Outcome::Failed))
        })
        .map(str::to_owned)
}

fn parse_outcome(text: &str) -> Option<Outcome> {
    [Outcome::Verified, Outcome::RolledBack, Outcome::RollbackFailed, Outcome::Failed]
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
}

/// `phase` is where the store says the execution stood. Only a mere claim is
/// released: a store that says the action was under way while the log shows no
/// start means the two disagree (a misnamed writer, a damaged log), and then the
/// target is verified, never acted on again.
pub fn settle(logged: &Logged, phase: Phase) -> Settle {
    match logged {
        Logged { outcome: Some(outcome), .. } => Settle::Logged(*outcome),
        Logged { started: false, .. } if phase == Phase::Claimed => Settle::Release,
        Logged { rollback: true, .. } => Settle::RollBackAgain,
        Logged { .. } => Settle::Reverify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(writer: &str, kind: RecordKind, decision_id: &str) -> Record {
        Record {
            seq: 1,
            time_ms: 0,
            writer: writer.to_owned(),
            incident_id: "inc".to_owned(),
            kind,
            payload: serde_json::json!({ "decision_id": decision_id, "outcome": "verified" }),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn only_the_executors_own_records_count() {
        let forged = [record("agent", RecordKind::ExecutionStarted, "d-1"), record("governor", RecordKind::Outcome, "d-1")];
        assert_eq!(logged(&forged, "d-1"), Logged::default());
        let own = [record("executor", RecordKind::ExecutionStarted, "d-1"), record("executor", RecordKind::Outcome, "d-2")];
        assert_eq!(logged(&own, "d-1"), Logged { started: true, rollback: false, outcome: None });
    }

    #[test]
    fn the_same_action_blocks_a_new_decision_until_it_failed() {
        let started = |writer: &str, id: &str, target: &str| Record {
            kind: RecordKind::ExecutionStarted,
            payload: serde_json::json!({"decision_id": id, "pathway": "restart", "target": target, "parameters": {"a": 1}}),
            ..record(writer, RecordKind::ExecutionStarted, id)
        };
        let outcome = |id: &str, outcome: &str| Record {
            payload: serde_json::json!({"decision_id": id, "outcome": outcome}),
            ..record("executor", RecordKind::Outcome, id)
        };
        let params = serde_json::json!({"a": 1});
        let check = |trail: &[Record]| same_action_started(trail, "d-new", "restart", "web", &params);
        assert_eq!(check(&[started("executor", "d-1", "web")]), Some("d-1".to_owned()), "running or unknown");
        assert_eq!(check(&[started("executor", "d-1", "web"), outcome("d-1", "verified")]), Some("d-1".to_owned()));
        for failed in ["rolled_back", "rollback_failed", "failed"] {
            assert_eq!(check(&[started("executor", "d-1", "web"), outcome("d-1", failed)]), None, "{failed}");
        }
        assert_eq!(check(&[started("executor", "d-1", "db")]), None, "another target");
        assert_eq!(check(&[started("agent", "d-1", "web")]), None, "another writer's record");
        assert_eq!(check(&[started("executor", "d-new", "web")]), None, "its own start");
    }

    #[test]
    fn settles_by_what_was_logged() {
        let cases = [
            ((false, false, None), Phase::Claimed, Settle::Release),
            ((false, false, None), Phase::Acting, Settle::Reverify),
            ((false, false, None), Phase::Interrupted, Settle::Reverify),
            ((true, false, None), Phase::Acting, Settle::Reverify),
            ((true, true, None), Phase::RollingBack, Settle::RollBackAgain),
            ((true, true, Some(Outcome::RolledBack)), Phase::VerifyingRollback, Settle::Logged(Outcome::RolledBack)),
            ((true, false, Some(Outcome::Verified)), Phase::Verifying, Settle::Logged(Outcome::Verified)),
        ];
        for ((started, rollback, outcome), phase, expected) in cases {
            assert_eq!(settle(&Logged { started, rollback, outcome }, phase), expected, "{started} {rollback} {outcome:?} {phase:?}");
        }
    }
}
