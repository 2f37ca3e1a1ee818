//! Runs one program: argv only (never a shell), a cleared environment, null stdin,
//! bounded captured output, and a timeout that kills the whole process group.

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::processes::{Slot, Tracker};

/// How much of each of stdout and stderr is kept; the rest is counted and discarded.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// How long to wait for a killed process group to go and its pipes to close.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Environment variables every command gets from the executor's own environment,
/// on top of those a step allows.
pub const ALWAYS_ALLOWED: &[&str] = &["PATH"];

/// What to run.
#[derive(Debug, Clone)]
pub struct CommandSpec<'a> {
    pub argv: &'a [String],
    /// Names passed through from the executor's environment; everything else is cleared.
    pub env_allow: &'a [String],
    /// Variables set for the command, after the allowed ones (secrets go here).
    pub env: &'a [(String, String)],
    pub cwd: Option<&'a str>,
    pub timeout: Duration,
    pub output_limit: usize,
    /// Records the command's process group durably while it runs, so that an
    /// executor restarted after a crash can stop it (steps, not probes).
    pub tracker: Option<&'a Tracker>,
}

/// The first bytes of a stream, and how many there were in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Captured {
    /// The kept bytes, decoded lossily as UTF-8.
    pub text: String,
    pub total_bytes: u64,
    pub truncated: bool,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Exit {
    Code {
        code: i32,
    },
    Signal {
        signal: i32,
    },
    /// The timeout passed and the process group was killed.
    TimedOut {
        after_ms: u64,
    },
    /// The program could not be started.
    NotStarted {
        error: String,
    },
    /// The program started, but how it ended is unknown (it could not be waited
    /// for), or it was stopped at once because it could not be recorded.
    Lost {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandOutcome {
    pub exit: Exit,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration_ms: u64,
}

impl CommandOutcome {
    pub fn exit_code(&self) -> Option<i32> {
        match self.exit {
            Exit::Code { code } => Some(code),
            _ => None,
        }
    }

    /// How it ended, in words.
    pub fn describe(&self) -> String {
        match &self.exit {
            Exit::Code { code } => format!("exited with status {code}"),
            Exit::Signal { signal } => format!("killed by signal {signal}"),
            Exit::TimedOut { after_ms } => format!("timed out after {after_ms} ms; its process group was killed"),
            Exit::NotStarted { error } | Exit::Lost { error } => error.clone(),
        }
    }
}

/// Runs the command to completion or to its timeout.
pub async fn run(spec: &CommandSpec<'_>) -> CommandOutcome {
    let started = Instant::now();
    let not_started = |error: String| CommandOutcome {
        exit: Exit::NotStarted { error },
        stdout: Captured::default(),
        stderr: Captured::default(),
        duration_ms: elapsed_ms(started),
    };
    let Some((program, args)) = spec.argv.split_first() else {
        return not_started("the command has an empty `argv`".to_owned());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(allowed_env(spec.env_allow))
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout can kill everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = spec.cwd {
        command.current_dir(cwd);
    }
    // Fail closed: a command whose group could not be recorded could outlive a
    // crash unseen, so it does not start, or is stopped at once.
    let mut slot = match spec.tracker {
        Some(tracker) => match tracker.ledger.starting(&tracker.owner, program).await {
            Ok(slot) => Some((tracker, slot)),
            Err(e) => return not_started(format!("cannot record `{program}` before starting it: {e}")),
        },
        None => None,
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            if let Some((tracker, slot)) = &slot {
                tracker.ledger.finished(slot);
            }
            return not_started(format!("cannot start `{program}`: {e}"));
        }
    };
    // If this future is dropped midway (the executor shutting down), the guard
    // still kills the group.
    let mut group = GroupGuard { pgid: child.id(), slot: None };
    if let Some((tracker, mut recorded)) = slot.take() {
        // No id only if the child is already reaped, which it cannot be yet.
        let written = match child.id() {
            Some(pgid) => tracker.ledger.started(&mut recorded, pgid).await,
            None => Ok(()),
        };
        group.slot = Some((tracker, recorded));
        if let Err(e) = written {
            group.kill();
            let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
            return CommandOutcome {
                exit: Exit::Lost { error: format!("cannot record the process group of `{program}`, so it was stopped: {e}") },
                stdout: Captured::default(),
                stderr: Captured::default(),
                duration_ms: elapsed_ms(started),
            };
        }
    }
    let mut stdout = tokio::spawn(read_bounded(child.stdout.take(), spec.output_limit));
    let mut stderr = tokio::spawn(read_bounded(child.stderr.take(), spec.output_limit));

    // The command is done when it has exited and its output is closed, so a
    // background process that keeps the pipes open counts against the timeout.
    let finished = tokio::time::timeout(spec.timeout, async {
        let status = child.wait().await;
        let out = (&mut stdout).await.unwrap_or_default();
        let err = (&mut stderr).await.unwrap_or_default();
        (status, out, err)
    })
    .await;

    match finished {
        Ok((status, out, err)) => {
            group.disarm();
            let exit = match status {
                Ok(status) => exit_of(status),
                Err(e) => Exit::Lost { error: format!("cannot wait for `{program}`: {e}") },
            };
            CommandOutcome { exit, stdout: out, stderr: err, duration_ms: elapsed_ms(started) }
        }
        Err(_) => {
            let after_ms = elapsed_ms(started);
            group.kill();
            let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
            let out = collect(stdout).await;
            let err = collect(stderr).await;
            CommandOutcome {
                exit: Exit::TimedOut { after_ms },
                stdout: out,
                stderr: err,
                duration_ms: elapsed_ms(started),
            }
        }
    }
}

/// Names never passed through, whatever a step allows: the executor's secrets
/// reach a step only through the pathway that names them.
pub const NEVER_PASSED_PREFIX: &str = "ARF_SECRET_";

fn passable(name: &str) -> bool {
    !name.starts_with(NEVER_PASSED_PREFIX)
}

/// The variables to pass through: the allowed names that are set.
fn allowed_env(env_allow: &[String]) -> Vec<(String, OsString)> {
    ALWAYS_ALLOWED
        .iter()
        .map(|name| (*name).to_owned())
        .chain(env_allow.iter().filter(|name| passable(name)).cloned())
        .filter_map(|name| std::env::var_os(&name).map(|value| (name, value)))
        .collect()
}

fn exit_of(status: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code { code },
        (None, Some(signal)) => Exit::Signal { signal },
        (None, None) => Exit::Code { code: -1 },
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Waits briefly for a reader of a killed group's output, then gives up on it.
async fn collect(mut reader: tokio::task::JoinHandle<Captured>) -> Captured {
    match tokio::time::timeout(KILL_GRACE, &mut reader).await {
        Ok(captured) => captured.unwrap_or_default(),
        Err(_) => {
            reader.abort();
            Captured::default()
        }
    }
}

/// Reads a stream to its end, keeping the first `limit` bytes and counting the rest.
pub async fn read_bounded<R: AsyncRead + Unpin>(reader: Option<R>, limit: usize) -> Captured {
    let Some(mut reader) = reader else { return Captured::default() };
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
    let truncated = total > kept.len() as u64;
    Captured { text: String::from_utf8_lossy(&kept).into_owned(), total_bytes: total, truncated }
}

/// Kills a process group when asked or when dropped, unless disarmed, and
/// forgets its record when dropped.
struct GroupGuard<'a> {
    pgid: Option<u32>,
    slot: Option<(&'a Tracker, Slot)>,
}

impl GroupGuard<'_> {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            arf_core::process::kill_group(pgid);
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        self.kill();
        if let Some((tracker, slot)) = self.slot.take() {
            tracker.ledger.finished(&slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    async fn run_argv(args: &[&str], timeout: Duration, limit: usize) -> CommandOutcome {
        let argv = argv(args);
        run(&CommandSpec { argv: &argv, env_allow: &[], env: &[], cwd: None, timeout, output_limit: limit, tracker: None }).await
    }

    #[tokio::test]
    async fn captures_exit_status_and_output() {
        let outcome = run_argv(&["sh", "-c", "echo out; echo err >&2; exit 3"], Duration::from_secs(10), 1024).await;
        assert_eq!(outcome.exit, Exit::Code { code: 3 });
        assert_eq!(outcome.stdout.text, "out\n");
        assert_eq!(outcome.stderr.text, "err\n");
        assert!(!outcome.stdout.truncated);
    }

    #[tokio::test]
    async fn output_is_bounded_and_counted() {
        let outcome = run_argv(
            &["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; head -c 100 /dev/zero | tr '\\0' y >&2"],
            Duration::from_secs(10),
            OUTPUT_LIMIT,
        )
        .await;
        assert_eq!(outcome.exit, Exit::Code { code: 0 });
        assert_eq!(outcome.stdout.text.len(), OUTPUT_LIMIT);
        assert_eq!(outcome.stdout.total_bytes, 200_000);
        assert!(outcome.stdout.truncated);
        assert_eq!(outcome.stderr.total_bytes, 100);
        assert!(!outcome.stderr.truncated);
    }

    #[tokio::test]
    async fn the_environment_is_cleared_but_path() {
        let outcome = run_argv(&["env"], Duration::from_secs(10), 4096).await;
        let names: Vec<&str> = outcome.stdout.text.lines().filter_map(|l| l.split_once('=')).map(|(n, _)| n).collect();
        assert!(names.iter().all(|n| *n == "PATH" || *n == "PWD"), "{names:?}");
    }

    #[tokio::test]
    async fn runs_in_its_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let argv = argv(&["pwd"]);
        let cwd = dir.path().canonicalize().unwrap();
        let spec = CommandSpec {
            argv: &argv,
            env_allow: &[],
            env: &[],
            cwd: cwd.to_str(),
            timeout: Duration::from_secs(10),
            output_limit: 4096,
            tracker: None,
        };
        let outcome = run(&spec).await;
        assert_eq!(outcome.stdout.text.trim(), cwd.to_str().unwrap());
    }

    #[test]
    fn the_executors_secrets_are_never_passed_through() {
        assert!(!passable("ARF_SECRET_DB_PASSWORD"));
        assert!(passable("KUBECONFIG"));
    }

    #[tokio::test]
    async fn a_missing_program_is_reported() {
        let outcome = run_argv(&["/nonexistent/arf-test-program"], Duration::from_secs(10), 4096).await;
        assert!(matches!(&outcome.exit, Exit::NotStarted { error } if error.contains("/nonexistent/arf-test-program")));
    }

    #[tokio::test]
    async fn stdin_is_null() {
        let outcome = run_argv(&["cat"], Duration::from_secs(10), 4096).await;
        assert_eq!(outcome.exit, Exit::Code { code: 0 });
        assert_eq!(outcome.stdout.total_bytes, 0);
    }
}
