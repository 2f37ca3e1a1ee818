//! Real processes, SIGKILLed at the worst moments: the governor between logging a
//! decision and authorizing it, and between authorizing it and sending it to the
//! executor; the agent after the governor answered `Evaluate` and before it logged
//! the answer; the executor about to log the start, and just after. Each time the killed process is restarted, and one alert must end in
//! exactly one decision and exactly one execution (counted by the target itself),
//! with the decision settled within the documented bound.
//!
//! The kills come from `arf_core::crash` points (`ARF_CRASH_AT`), compiled into the
//! test build only, so each lands at its exact step rather than somewhere near it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arf_audit::{Record, RecordKind};

/// How long a decision may take to settle after the crash, with no human needed:
/// the governor's `settle_secs` (60 s by default), as docs/governance.md promises.
const SETTLE_BOUND: Duration = Duration::from_secs(60);

/// The governor's decisions in the trail: their ids, in order of first record.
fn decision_ids(trail: &[Record]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for record in trail.iter().filter(|r| r.writer == "governor" && r.kind == RecordKind::Decision) {
        if let Some(id) = record.payload["decision_id"].as_str().filter(|id| !ids.iter().any(|i| i == id)) {
            ids.push(id.to_owned());
        }
    }
    ids
}

fn has_state(trail: &[Record], state: &str) -> bool {
    trail.iter().any(|r| r.writer == "governor" && r.kind == RecordKind::Decision && r.payload["state"] == state)
}

fn agent_logged_proposed(trail: &[Record]) -> bool {
    trail.iter().any(|r| r.writer == "agent" && r.kind == RecordKind::Incident && r.payload["event"] == "proposed")
}

/// One alert, one crash at `crash_at` in `role`, one restart: one decision, one execution.
async fn one_alert_one_execution(role: &'static str, crash_at: &str, logged_before_the_crash: &str) {
    let (url, restarts) = support::counting_target("127.0.0.1").await;
    let mut plane = support::Plane::prepare(&url).await;
    plane.start_all(role, crash_at).await;
    let incident = plane.fire().await;
    plane.wait_killed(role).await;
    // What the crash cut off is in the log, and nothing after it.
    let before = plane.trail_until(&incident, Duration::from_secs(5), "the step before the crash", |t| has_state(t, logged_before_the_crash)).await;
    assert_eq!(decision_ids(&before).len(), 1, "{}", support::summary(&before));
    let restarted = Instant::now();
    plane.start(role, None).await;
    let trail = plane
        .trail_until(&incident, SETTLE_BOUND, "the decision settling", |t| has_state(t, "verified") && agent_logged_proposed(t))
        .await;
    let settled_in = restarted.elapsed();
    // The agent's retries and restart may still be under way: give them a moment to
    // do anything wrong before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let trail = plane.auditor().read_incident(&incident).await.unwrap_or(trail);
    assert_eq!(decision_ids(&trail), decision_ids(&before), "one decision for one alert, the one made before the crash:\n{}", support::summary(&trail));
    assert_eq!(restarts.load(Ordering::SeqCst), 1, "the target was restarted exactly once:\n{}", support::summary(&trail));
    let started = trail.iter().filter(|r| r.kind == RecordKind::ExecutionStarted).count();
    assert_eq!(started, 1, "one execution started:\n{}", support::summary(&trail));
    assert!(settled_in <= SETTLE_BOUND, "settled {settled_in:?} after the restart");
    eprintln!("{role} SIGKILLed at `{crash_at}`: settled {settled_in:?} after the restart, one decision, one execution");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governor_killed_between_deciding_and_authorizing() {
    one_alert_one_execution("governor", "governor.decision_logged", "approved").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governor_killed_between_authorizing_and_dispatching() {
    one_alert_one_execution("governor", "governor.authorized_logged", "authorized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_before_logging_the_governors_answer() {
    one_alert_one_execution("agent", "agent.decision_received", "authorized").await;
}

/// The executor SIGKILLed as it is about to send the start: the log never got it,
/// so the restarted executor gives the claim back once a checkpoint shows the log
/// took nothing more, and the decision, sent again, runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_killed_before_sending_the_start() {
    one_alert_one_execution("executor", "executor.starting_saved", "authorized").await;
}

/// The executor SIGKILLed just after the log took the start, before any step ran:
/// the restarted executor finds the start and settles it as never run (`not_run`:
/// nothing changed, nothing rolled back); the action never runs, and the governor
/// settles the decision `not_run`, which counts as no run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_killed_after_logging_the_start_never_runs_it() {
    let (url, restarts) = support::counting_target("127.0.0.1").await;
    let mut plane = support::Plane::prepare(&url).await;
    plane.start_all("executor", "executor.start_logged").await;
    let incident = plane.fire().await;
    plane.wait_killed("executor").await;
    plane.start("executor", None).await;
    let settled = |r: &Record| r.writer == "governor" && r.kind == RecordKind::Decision && r.payload["state"] == "not_run";
    let ended = |t: &[Record]| t.iter().any(|r| r.writer == "executor" && r.kind == RecordKind::Outcome) && t.iter().any(settled);
    let trail = plane.trail_until(&incident, SETTLE_BOUND, "the execution and its decision settling", ended).await;
    let outcome = trail.iter().find(|r| r.writer == "executor" && r.kind == RecordKind::Outcome).unwrap();
    assert_eq!(outcome.payload["outcome"], "not_run", "{}", support::summary(&trail));
    assert!(outcome.payload["detail"].as_str().unwrap_or_default().contains("never ran it"), "{}", support::summary(&trail));
    assert_eq!(trail.iter().filter(|r| r.kind == RecordKind::ExecutionStarted).count(), 1, "{}", support::summary(&trail));
    assert!(!trail.iter().any(|r| r.kind == RecordKind::Rollback), "nothing ran, so nothing is rolled back:\n{}", support::summary(&trail));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(restarts.load(Ordering::SeqCst), 0, "the action never ran:\n{}", support::summary(&trail));
}
