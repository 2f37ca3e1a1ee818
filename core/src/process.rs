//! Stopping what a child process started.

/// Sends SIGKILL to every process in the group `pgid` (a child started with
/// `process_group(0)` leads a group of its own id).
#[expect(unsafe_code, reason = "std has no killpg; the call only sends a signal and shares no memory with Rust")]
pub fn kill_group(pgid: u32) {
    // Never signal group 0 (our own) or 1 (init), whatever a bug might pass in.
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg takes two integers and touches no memory; a stale group id
    // fails with ESRCH, which is fine to ignore since the group is already gone.
    let _ = unsafe { libc::killpg(pgid, libc::SIGKILL) };
}
