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
