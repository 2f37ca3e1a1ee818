//! Crash points: named steps at which a test build of ARF SIGKILLs its own
//! process, so a test can cut a service off at an exact moment, not merely
//! somewhere near it, and check what the restarted service makes of the log.
//!
//! Compiled to nothing unless the `crash-points` feature is on (the workspace's
//! tests turn it on; a release build never has it). With it, the environment
//! variable `ARF_CRASH_AT=NAME` makes the process SIGKILL itself the first time
//! it reaches the point `NAME`. A killed process runs no destructor and flushes
//! nothing, exactly as under `kill -9`.
//!
//! The points, each named `ROLE.STEP`:
//! - `governor.decision_logged`: a decision is in the log, not yet authorized.
//! - `governor.authorized_logged`: its authorization is in the log, not yet sent to the executor.
//! - `agent.decision_received`: the governor answered `Evaluate`; the agent has not logged `proposed`.
//!
//! A test that runs a service inside its own process can also hold the next task
//! that reaches a point there for a while ([`pause_next`]). The points that pause:
//! - `governor.decision_logged` (above);
//! - `governor.before_settling_unrun`: the governor read the trail and found a
//!   decision never started; it has not yet logged it settled as never run;
//! - `executor.before_write_ahead`: the executor read the trail and found nothing
//!   that refuses the decision; it has not yet logged the start.

/// The environment variable that names the crash point.
pub const ENV: &str = "ARF_CRASH_AT";

/// SIGKILLs this process when `ARF_CRASH_AT` names `point` (test builds only).
#[cfg(feature = "crash-points")]
pub fn point(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var(ENV).ok()).as_deref() == Some(point) {
        eprintln!("crash point `{point}` reached: SIGKILL");
        kill_self();
    }
}

#[cfg(feature = "crash-points")]
#[expect(unsafe_code, reason = "a process SIGKILLs itself through libc")]
fn kill_self() {
    // SAFETY: kill and getpid have no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Does nothing: this build has no crash points.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_point: &str) {}

#[cfg(feature = "crash-points")]
static PAUSES: std::sync::Mutex<Vec<(String, std::time::Duration)>> = std::sync::Mutex::new(Vec::new());

/// Test builds only: the next task to reach `point` is held there for `pause`
/// (see [`pause`]), so a test can look at a service inside a window that is
/// otherwise too short to hit. Once per call.
#[cfg(feature = "crash-points")]
pub fn pause_next(point: &str, pause: std::time::Duration) {
    PAUSES.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((point.to_owned(), pause));
}

/// Test builds only: whether a pause asked for at `point` ([`pause_next`]) still
/// waits for a task to reach it; false once one has.
#[cfg(feature = "crash-points")]
pub fn pending(point: &str) -> bool {
    PAUSES.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().any(|(name, _)| name == point)
}

/// How long the task at `point` is to wait, if a test asked for a pause there
/// ([`pause_next`]); the caller waits on its own runtime. Always `None` in a build
/// without crash points.
#[cfg(feature = "crash-points")]
pub fn pause(point: &str) -> Option<std::time::Duration> {
    let mut pauses = PAUSES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let at = pauses.iter().position(|(name, _)| name == point)?;
    Some(pauses.remove(at).1)
}

/// Never pauses: this build has no crash points.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn pause(_point: &str) -> Option<std::time::Duration> {
    None
}
