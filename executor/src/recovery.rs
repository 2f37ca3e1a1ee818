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

use crate::execution::Outcome;

/// What the log holds about one decision's execution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logged {
    pub started: bool,
    pub rollback: bool,
    pub outcome: Option<Outcome>,
}

/// Reads the records of `decision_id` out of its incident's trail.
pub fn logged(trail: &[Record], decision_id: &str) -> Logged {
    let mut logged = Logged::default();
    for record in trail {
        if record.payload.get("decision_id").and_then(Value::as_str) != Some(decision_id) {
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

pub fn settle(logged: &Logged) -> Settle {
    match logged {
        Logged { outcome: Some(outcome), .. } => Settle::Logged(*outcome),
        Logged { started: false, .. } => Settle::Release,
        Logged { rollback: true, .. } => Settle::RollBackAgain,
        Logged { .. } => Settle::Reverify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_by_what_was_logged() {
        let cases = [
            ((false, false, None), Settle::Release),
            ((true, false, None), Settle::Reverify),
            ((true, true, None), Settle::RollBackAgain),
            ((true, true, Some(Outcome::RolledBack)), Settle::Logged(Outcome::RolledBack)),
            ((true, false, Some(Outcome::Verified)), Settle::Logged(Outcome::Verified)),
        ];
        for ((started, rollback, outcome), expected) in cases {
            assert_eq!(settle(&Logged { started, rollback, outcome }), expected, "{started} {rollback} {outcome:?}");
        }
    }
}
