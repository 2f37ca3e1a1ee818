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
