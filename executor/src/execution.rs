//! The state of one execution, how it ends, and the pure rules that decide its course.

use serde::{Deserialize, Serialize};

use arf_core::decision::DecisionBody;

/// How an execution ended, or that it has not yet. Not `non_exhaustive`: a new
/// outcome must break every `match` that reports or counts outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    /// The action ran and its verification passed.
    Verified,
    /// The action or its verification failed, and the rollback worked.
    RolledBack,
    /// The action or its verification failed, and so did the rollback: a human must look.
    RollbackFailed,
    /// The action or its verification failed on an irreversible pathway.
    Failed,
    /// The pathway's precheck failed, so the action never started: nothing changed.
    Refused,
    /// The log holds the start, but no step of the action ran (the start's answer
    /// was lost, and the log turned out to hold it once it could take it no more):
    /// nothing changed, so nothing is verified or rolled back.
    NotRun,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Verified => "verified",
            Self::RolledBack => "rolled_back",
            Self::RollbackFailed => "rollback_failed",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::NotRun => "not_run",
        }
    }
}

/// Where an execution is; kept durable so that a restarted executor knows what it
/// was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The decision id is taken; nothing has run.
    Claimed,
    /// `execution_started` is being sent to the log, or was and its answer was
    /// lost (a timeout, a connection cut): the log may hold the start or not. No
    /// step of the action ran. The log settles it
    /// ([`crate::recovery::Settle::Unconfirmed`]).
    Starting,
    /// `execution_started` is logged and the action steps are running.
    Acting,
    Verifying,
    /// `rollback` is logged and the rollback steps are running.
    RollingBack,
    VerifyingRollback,
    /// The `outcome` record is logged.
    Finished,
    /// The audit log failed after something ran; the execution stopped where it was.
    Interrupted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Starting => "starting",
            Self::Acting => "acting",
            Self::Verifying => "verifying",
            Self::RollingBack => "rolling_back",
            Self::VerifyingRollback => "verifying_rollback",
            Self::Finished => "finished",
            Self::Interrupted => "interrupted",
        }
    }
}

/// One probe's answer in one sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeResult {
    pub probe: String,
    pub passed: bool,
    pub detail: String,
    pub latency_ms: u64,
}

/// What the executor keeps per decision id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionState {
    pub decision_id: String,
    pub incident_id: String,
    pub pathway: String,
    pub target: String,
    pub outcome: Outcome,
    pub phase: Phase,
    pub detail: String,
    /// The probe results of the last verification sample of the action.
    pub verification: Vec<ProbeResult>,
    pub claimed_at_ms: i64,
    pub updated_at_ms: i64,
}

impl ExecutionState {
    /// The state written when a decision id is claimed.
    pub fn claimed(body: &DecisionBody, now_ms: i64) -> Self {
        Self {
            decision_id: body.decision_id.clone(),
            incident_id: body.incident_id.clone(),
            pathway: body.pathway.clone(),
            target: body.target.clone(),
            outcome: Outcome::Running,
            phase: Phase::Claimed,
            detail: "waiting for the target and a free slot".to_owned(),
            verification: Vec::new(),
            claimed_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }
}

/// What to do once the action has run (and, if it succeeded, been verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Course {
    Verified,
    /// Something failed and there is no rollback to run.
    Failed,
    RollBack,
}

/// Decides the course after the action. `verification_passed` is `None` when the
/// action failed and verification was not attempted; `changed_nothing` when it
/// failed before it changed anything, so there is nothing to roll back.
pub fn after_action(action_ok: bool, verification_passed: Option<bool>, irreversible: bool, changed_nothing: bool) -> Course {
    match (action_ok, verification_passed) {
        (true, Some(true)) => Course::Verified,
        (false, _) if changed_nothing => Course::Failed,
        _ if irreversible => Course::Failed,
        _ => Course::RollBack,
    }
}

/// Decides the outcome after a rollback. `verification_passed` is `None` when the
/// pathway declares no rollback verification (or the steps failed, so it was not
/// attempted); then the steps succeeding is the check.
pub fn after_rollback(steps_ok: bool, verification_passed: Option<bool>) -> Outcome {
    match (steps_ok, verification_passed) {
        (true, None | Some(true)) => Outcome::RolledBack,
        (true, Some(false)) | (false, _) => Outcome::RollbackFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn course_after_action() {
        use Course::*;
        // (action ok, verification passed, irreversible, changed nothing) -> course
        let cases = [
            ((true, Some(true), false, false), Verified),
            ((true, Some(true), true, false), Verified),
            ((true, Some(false), false, false), RollBack),
            ((true, Some(false), true, false), Failed),
            ((false, None, false, false), RollBack),
            ((false, None, true, false), Failed),
            // A verification result after a failed action changes nothing.
            ((false, Some(true), false, false), RollBack),
            // An action refused before it changed anything has nothing to undo.
            ((false, None, false, true), Failed),
            // "Changed nothing" says nothing about an action that succeeded.
            ((true, Some(false), false, true), RollBack),
        ];
        for ((action_ok, passed, irreversible, changed_nothing), expected) in cases {
            assert_eq!(
                after_action(action_ok, passed, irreversible, changed_nothing),
                expected,
                "{action_ok} {passed:?} {irreversible} {changed_nothing}"
            );
        }
    }

    #[test]
    fn outcome_after_rollback() {
        use Outcome::*;
        let cases = [
            ((true, None), RolledBack),
            ((true, Some(true)), RolledBack),
            ((true, Some(false)), RollbackFailed),
            ((false, None), RollbackFailed),
            ((false, Some(true)), RollbackFailed),
        ];
        for ((steps_ok, passed), expected) in cases {
            assert_eq!(after_rollback(steps_ok, passed), expected, "{steps_ok} {passed:?}");
        }
    }
}
