//! The process groups that running steps have started, kept durably so that an
//! executor restarted after a crash can stop what the crashed one left running
//! before it checks the target again.
//!
//! Every command a step runs gets its own process group (see [`super::command`]).
//! A SIGKILL of the executor kills neither the group nor anything in it: the
//! action goes on, unsupervised, and could change the target after the restarted
//! executor has verified it. So each command is written down twice, flushed each
//! time: before it is spawned (what and for which decision) and right after (its
//! group id, the leader's start time and the boot it belongs to). At start,
//! [`sweep`] kills every process still in a recorded group.
//!
//! A group id is only trusted while it cannot have been reused: the leader must
//! still be the process that was recorded (same start time, same boot), or, once
//! the leader has exited, only members started after it, in the session it was
//! started in, are killed. Linux does not hand out a pid that is still some group's
//! id; and a group that reused the id after ours was gone would have been started
//! by some other process, in its own session. A process that left the group
//! (`setsid`, a daemon) is not touched: leaving the group is how a step says a
//! process should outlive it. The reading of `/proc` makes this Linux-only;
//! elsewhere nothing can be checked, so the sweep kills nothing and forgets the
//! records (a recorded start without a group is still reported).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long the sweep waits for killed processes to be gone.
const SWEEP_GRACE: Duration = Duration::from_secs(5);

/// The durable record of started process groups.
#[derive(Debug, Clone)]
pub struct Ledger {
    db: crate::durable::Durable,
    tree: sled::Tree,
}

/// One command, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The decision whose step started it.
    pub owner: String,
    pub program: String,
    /// Unset until the command has been spawned.
    #[serde(default)]
    pub pgid: Option<u32>,
    /// The group leader's start time, in clock ticks after boot.
    #[serde(default)]
    pub leader_start: Option<u64>,
    /// The session the leader was started in.
    #[serde(default)]
    pub session: Option<u32>,
    #[serde(default)]
    pub boot_id: Option<String>,
}

/// A recorded command, until it ends.
#[derive(Debug)]
pub struct Slot {
    key: [u8; 8],
    entry: Entry,
}

/// Who is running commands: the ledger and the decision they belong to.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub ledger: Ledger,
    pub owner: String,
}

/// What the sweep found of one recorded command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leftover {
    pub owner: String,
    pub program: String,
    pub pgid: Option<u32>,
    /// The pids that were still running and were killed.
    pub killed: Vec<u32>,
    pub detail: String,
}

impl Ledger {
    pub fn open(db: &crate::durable::Durable) -> Result<Self, String> {
        let tree = db.db()?.open_tree("processes").map_err(|e| e.to_string())?;
        Ok(Self { db: db.clone(), tree })
    }

    /// Records, durably, that `owner` is about to start `program`.
    pub async fn starting(&self, owner: &str, program: &str) -> Result<Slot, String> {
        let id = self.db.db()?.generate_id().map_err(|e| e.to_string())?;
        let slot = Slot {
            key: id.to_be_bytes(),
            entry: Entry {
                owner: owner.to_owned(),
                program: program.to_owned(),
                pgid: None,
                leader_start: None,
                session: None,
                boot_id: None,
            },
        };
        self.write(&slot).await?;
        Ok(slot)
    }

    /// Records, durably, the group that the slot's command now leads.
    pub async fn started(&self, slot: &mut Slot, pgid: u32) -> Result<(), String> {
        slot.entry.pgid = Some(pgid);
        let leader = proc::identity(pgid);
        slot.entry.leader_start = leader.map(|(start, _)| start);
        slot.entry.session = leader.map(|(_, session)| session);
        slot.entry.boot_id = proc::boot_id();
        self.write(slot).await
    }

    /// Forgets a command that has ended. Not flushed: an entry that outlives its
    /// command names a group that is gone (or not its own), which the sweep skips.
    pub fn finished(&self, slot: &Slot) {
        let _ = self.tree.remove(slot.key);
    }

    async fn write(&self, slot: &Slot) -> Result<(), String> {
        let bytes = serde_json::to_vec(&slot.entry).map_err(|e| e.to_string())?;
        self.tree.insert(slot.key, bytes).map_err(|e| e.to_string())?;
        self.db.flush().await?;
        Ok(())
    }

    /// Every recorded command, with its key.
    fn entries(&self) -> Vec<(sled::IVec, Result<Entry, String>)> {
        self.tree
            .iter()
            .filter_map(Result::ok)
            .map(|(key, value)| (key, serde_json::from_slice(&value).map_err(|e| e.to_string())))
            .collect()
    }
}

impl Tracker {
    pub fn new(ledger: &Ledger, owner: &str) -> Self {
        Self { ledger: ledger.clone(), owner: owner.to_owned() }
    }
}

/// Kills what is still running in every recorded group and forgets the records.
/// Only what matters is returned: groups with processes that were killed, and
/// commands whose start was recorded but whose group was not. Every group is
/// stopped before any process of any group is killed ([`stop_then_kill`]): one
/// command may wait on another's work.
pub async fn sweep(ledger: &Ledger) -> Vec<Leftover> {
    let boot = proc::boot_id();
    let mut leftovers = Vec::new();
    let mut groups: Vec<(Entry, u32, u64)> = Vec::new();
    let mut keys = Vec::new();
    for (key, entry) in ledger.entries() {
        keys.push(key);
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                tracing::error!(%error, "an unreadable process record was dropped; a leftover command may still run");
                continue;
            }
        };
        match (entry.pgid, entry.leader_start) {
            (None, _) => leftovers.push(Leftover {
                owner: entry.owner.clone(),
                program: entry.program.clone(),
                pgid: None,
                killed: Vec::new(),
                detail: format!(
                    "the executor stopped while starting `{}`; if it started, it was not recorded and was not stopped",
                    entry.program
                ),
            }),
            (Some(pgid), Some(leader_start)) if entry.boot_id == boot && boot.is_some() => groups.push((entry, pgid, leader_start)),
            // Recorded on another boot, or where `/proc` could not be read: the group is gone.
            (Some(_), _) => {}
        }
    }
    // Never this executor or what started it (a process started from a step, in
    // a recorded group, stops nothing of its own line). A pid two records both
    // match (one that outlived its command, and a later one) is the later one's.
    let lineage = proc::lineage();
    let members = || {
        let mut found: Vec<(usize, u32)> = Vec::new();
        for (group, (entry, pgid, leader_start)) in groups.iter().enumerate().rev() {
            for pid in proc::members(*pgid, *leader_start, entry.session) {
                if !lineage.contains(&pid) && !found.iter().any(|(_, p)| *p == pid) {
                    found.push((group, pid));
                }
            }
        }
        found.reverse();
        found
    };
    // Each signal goes to the very process the listing found, checked again once
    // it is pinned: never to a later process that reused its pid meanwhile.
    let signal = |group: usize, pid: u32, signal: Signal| {
        if let Some((entry, pgid, leader_start)) = groups.get(group) {
            proc::signal_member(pid, (*pgid, *leader_start, entry.session), signal);
        }
    };
    let killed = stop_then_kill(members, signal).await;
    for (group, (entry, pgid, _)) in groups.iter().enumerate() {
        let killed: Vec<u32> = killed.iter().filter(|(g, _)| *g == group).map(|(_, pid)| *pid).collect();
        if !killed.is_empty() {
            leftovers.push(Leftover {
                owner: entry.owner.clone(),
                program: entry.program.clone(),
                pgid: Some(*pgid),
                detail: format!("`{}` (process group {pgid}) was still running; killed {} process(es)", entry.program, killed.len()),
                killed,
            });
        }
    }
    for key in keys {
        let _ = ledger.tree.remove(key);
    }
    let _ = ledger.db.flush().await;
    leftovers
}

/// A signal the sweep sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Stop,
    Kill,
}

/// Stops every process `members` lists (each with the group it was found in),
/// then kills them all, until none is left or the grace period passes; what was
/// killed. None is killed while another still runs: killed one by one, a process
/// could see another die and go on with its script (a shell whose `wait` returns
/// runs its next command, which may change the target) in the moment before its
/// own turn. A stopped process forks no more, so listing again until the list
/// holds no one not yet stopped catches what a member started meanwhile; whatever
/// a listing found is stopped and killed, even at the end of the grace period.
async fn stop_then_kill<G: Copy + PartialEq>(members: impl Fn() -> Vec<(G, u32)>, signal: impl Fn(G, u32, Signal)) -> Vec<(G, u32)> {
    let mut killed: Vec<(G, u32)> = Vec::new();
    let give_up = tokio::time::Instant::now() + SWEEP_GRACE;
    loop {
        let mut stopped: Vec<(G, u32)> = Vec::new();
        loop {
            let fresh: Vec<(G, u32)> = members().into_iter().filter(|found| !stopped.contains(found)).collect();
            if fresh.is_empty() {
                break;
            }
            for &(group, pid) in &fresh {
                signal(group, pid, Signal::Stop);
            }
            stopped.extend(fresh);
            if tokio::time::Instant::now() >= give_up {
                break;
            }
            tokio::task::yield_now().await;
        }
        if stopped.is_empty() {
            break;
        }
        for found in stopped {
            signal(found.0, found.1, Signal::Kill);
            if !killed.contains(&found) {
                killed.push(found);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if tokio::time::Instant::now() >= give_up {
            // What is still there (one forked just before its parent stopped, say)
            // is stopped and killed once more, and reported.
            let left = members();
            for &(group, pid) in &left {
                signal(group, pid, Signal::Stop);
            }
            for found in &left {
                signal(found.0, found.1, Signal::Kill);
                if !killed.contains(found) {
                    killed.push(*found);
                }
            }
            if !left.is_empty() {
                let left: Vec<u32> = left.iter().map(|(_, pid)| *pid).collect();
                tracing::error!(?left, "leftover processes were still there at the end of the sweep's grace period; killed once more");
            }
            break;
        }
    }
    killed
}

#[cfg(target_os = "linux")]
mod proc {
    use std::fs;

    /// The kernel's id of this boot.
    pub fn boot_id() -> Option<String> {
        fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_owned())
    }

    /// One process's state, group, session and start time, from `/proc/PID/stat`.
    fn stat(pid: u32) -> Option<(char, u32, u32, u64)> {
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may hold spaces or parentheses;
        // the fields after the last `)` are plain.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first()?.chars().next()?;
        let pgrp = fields.get(2)?.parse().ok()?;
        let session = fields.get(3)?.parse().ok()?;
        let start = fields.get(19)?.parse().ok()?;
        Some((state, pgrp, session, start))
    }

    /// This process and its ancestors, up to the first one `/proc` cannot show.
    pub fn lineage() -> Vec<u32> {
        let mut lineage = vec![std::process::id()];
        while let Some(&pid) = lineage.last() {
            let parent = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|text| text.get(text.rfind(')')? + 1..)?.split_whitespace().nth(1)?.parse::<u32>().ok());
            match parent {
                Some(parent) if parent > 1 && !lineage.contains(&parent) && lineage.len() < 64 => lineage.push(parent),
                _ => break,
            }
        }
        lineage
    }

    /// A process's start time and session: what tells it from a later one with its pid.
    pub fn identity(pid: u32) -> Option<(u64, u32)> {
        stat(pid).map(|(_, _, session, start)| (start, session))
    }

    /// The live processes of group `pgid` that can only be the recorded group's.
    /// `leader_session` is unknown only for records an older executor wrote.
    pub fn members(pgid: u32, leader_start: u64, leader_session: Option<u32>) -> Vec<u32> {
        let same_session = |session: u32| leader_session.is_none_or(|s| s == session);
        match stat(pgid) {
            // The leader is another process now: the id was reused, the group is gone.
            Some((_, _, session, start)) if start != leader_start || !same_session(session) => return Vec::new(),
            _ => {}
        }
        let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| member(pid, (pgid, leader_start, leader_session)))
            .collect()
    }

    /// Whether `pid` is now a live process of the recorded group.
    fn member(pid: u32, (pgid, leader_start, leader_session): (u32, u64, Option<u32>)) -> bool {
        matches!(stat(pid), Some((state, group, session, start))
            if group == pgid && leader_session.is_none_or(|s| s == session) && state != 'Z' && state != 'X' && start >= leader_start)
    }

    /// Sends `signal` to `pid` if it is still a member of the recorded group
    /// (`pgid`, the leader's start, its session). The process is pinned first (a
    /// pidfd) and checked after, so the signal cannot reach a later process that
    /// took the pid in between; a kernel without pidfds (before 5.3) gets a plain
    /// `kill` after the check, which leaves that moment open.
    #[expect(unsafe_code, reason = "std can neither pin nor signal an arbitrary process; the calls only take integers")]
    pub fn signal_member(pid: u32, group: (u32, u64, Option<u32>), signal: super::Signal) {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let Ok(raw_pid) = libc::pid_t::try_from(pid) else { return };
        if raw_pid <= 1 {
            return;
        }
        let signal = match signal {
            super::Signal::Stop => libc::SIGSTOP,
            super::Signal::Kill => libc::SIGKILL,
        };
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
        if fd < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) && member(pid, group) {
                // SAFETY: kill takes two integers and touches no memory.
                let _ = unsafe { libc::kill(raw_pid, signal) };
            }
            // Otherwise the process is gone (ESRCH): nothing to signal.
            return;
        }
        let Ok(fd) = i32::try_from(fd) else { return };
        // SAFETY: `fd` was just returned by pidfd_open and is owned by no one else.
        let pinned = unsafe { OwnedFd::from_raw_fd(fd) };
        if member(pid, group) {
            // SAFETY: pidfd_send_signal takes a descriptor we own, a signal number, a
            // null siginfo (as `kill` would send) and flags; it touches no memory of ours.
            let _ = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pinned.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0) };
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod proc {
    pub fn boot_id() -> Option<String> {
        None
    }
    pub fn identity(_pid: u32) -> Option<(u64, u32)> {
        None
    }
    pub fn lineage() -> Vec<u32> {
        vec![std::process::id()]
    }
    pub fn members(_pgid: u32, _leader_start: u64, _leader_session: Option<u32>) -> Vec<u32> {
        Vec::new()
    }
    pub fn signal_member(_pid: u32, _group: (u32, u64, Option<u32>), _signal: super::Signal) {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(proc::identity(me).is_some());
        let lineage = proc::lineage();
        assert_eq!(lineage.first(), Some(&me));
        assert!(lineage.len() >= 2, "the test runner has a parent: {lineage:?}");
        assert!(proc::boot_id().is_some_and(|b| !b.is_empty()));
    }

    /// Every member of every group is stopped before any is killed, one that a
    /// member started while the others were being stopped too.
    #[tokio::test]
    async fn no_member_is_killed_while_another_still_runs() {
        use std::sync::Mutex;
        let sent: Mutex<Vec<(u32, Signal)>> = Mutex::new(Vec::new());
        // Two groups, `a` and `b`.
        let alive: Mutex<Vec<(char, u32)>> = Mutex::new(vec![('a', 30), ('a', 10), ('b', 20)]);
        let members = || {
            let sent = sent.lock().unwrap();
            let mut alive = alive.lock().unwrap();
            // Member 20 forks 40 before it is stopped; a killed member is gone.
            if sent.contains(&(10, Signal::Stop)) && !alive.contains(&('b', 40)) && !sent.iter().any(|s| s.1 == Signal::Kill) {
                alive.push(('b', 40));
            }
            alive.retain(|(_, pid)| !sent.contains(&(*pid, Signal::Kill)));
            alive.clone()
        };
        let killed = stop_then_kill(members, |_, pid, signal| sent.lock().unwrap().push((pid, signal))).await;
        let sent = sent.into_inner().unwrap();
        let first_kill = sent.iter().position(|s| s.1 == Signal::Kill).unwrap();
        let stopped: Vec<u32> = sent[..first_kill].iter().map(|s| s.0).collect();
        assert_eq!(stopped, [30, 10, 20, 40], "{sent:?}");
        assert!(sent[..first_kill].iter().all(|s| s.1 == Signal::Stop), "{sent:?}");
        assert_eq!(killed, [('a', 30), ('a', 10), ('b', 20), ('b', 40)]);
    }

    /// A signal reaches a process only if, pinned, it is still a member of the
    /// recorded group: never one of another group, nor one started after the
    /// record's leader, as a process that reused a pid would be.
    #[test]
    fn signals_only_a_member_of_the_recorded_group() {
        let mut child = std::process::Command::new("sleep").arg("60").process_group(0).spawn().unwrap();
        let pid = child.id();
        let (start, session) = proc::identity(pid).unwrap();
        proc::signal_member(pid, (pid + 1, start, Some(session)), Signal::Kill);
        proc::signal_member(pid, (pid, start + 1, Some(session)), Signal::Kill);
        proc::signal_member(pid, (pid, start, Some(session + 1)), Signal::Kill);
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "signalled though not a member of the record");
        proc::signal_member(pid, (pid, start, Some(session)), Signal::Kill);
        assert!(!child.wait().unwrap().success());
    }

    #[tokio::test]
    async fn kills_a_recorded_group_and_spares_a_reused_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::durable::Durable::new(sled::open(dir.path()).unwrap(), dir.path()).unwrap();
        let ledger = Ledger::open(&db).unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & sleep 60; wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        // Recorded first, so swept first: a record whose leader started at another
        // time names a reused id, and must kill nothing.
        let mut foreign = ledger.starting("d-0", "sh").await.unwrap();
        ledger.started(&mut foreign, pgid).await.unwrap();
        foreign.entry.leader_start = foreign.entry.leader_start.map(|s| s + 1);
        ledger.write(&foreign).await.unwrap();
        // Nor one whose leader was started in another session.
        let mut elsewhere = ledger.starting("d-0b", "sh").await.unwrap();
        ledger.started(&mut elsewhere, pgid).await.unwrap();
        elsewhere.entry.session = elsewhere.entry.session.map(|s| s + 1);
        ledger.write(&elsewhere).await.unwrap();
        let mut slot = ledger.starting("d-1", "sh").await.unwrap();
        ledger.started(&mut slot, pgid).await.unwrap();
        let _never_spawned = ledger.starting("d-3", "git").await.unwrap();

        // Wait until both sleeps are in the group.
        for _ in 0..100 {
            if proc::members(pgid, slot.entry.leader_start.unwrap(), slot.entry.session).len() >= 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut found = sweep(&ledger).await;
        found.sort_by(|a, b| a.owner.cmp(&b.owner));
        // Had `d-0` or `d-0b` killed anything, it would be listed and `d-1` would have found nothing.
        let owners: Vec<&str> = found.iter().map(|l| l.owner.as_str()).collect();
        assert_eq!(owners, ["d-1", "d-3"], "{found:?}");
        assert!(found[0].killed.len() >= 3, "{found:?}");
        assert!(found[0].killed.contains(&pgid));
        assert_eq!(found[1].pgid, None);
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(proc::members(pgid, slot.entry.leader_start.unwrap(), slot.entry.session).is_empty());
        assert!(ledger.entries().is_empty(), "the sweep forgets what it swept");
    }
}
