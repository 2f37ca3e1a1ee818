//! A command that outlives its timeout is killed with everything it started.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Harness, Setup, command_probe, path_str, pathway, target};
use arf_core::catalog::Step;

/// Whether a process is gone (or a zombie waiting to be reaped, which is as dead).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    // The shell starts a grandchild in the background, records its pid, and waits.
    let hang = Step::Command {
        argv: ["sh", "-c", "sleep 30 & echo $! > \"$1\"; sleep 30", "sh", "{{target.pid_file}}"]
            .map(str::to_owned)
            .to_vec(),
        env_allow: vec![],
        env: Default::default(),
        cwd: None,
        timeout_secs: Some(1),
    };
    let p = pathway("hang", vec![hang], vec![command_probe("ok", &["true"])], vec![crate::harness::command(&["true"])]);
    let targets = [("web".to_owned(), target(&[("pid_file", path_str(&pid_file))]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![p], targets)).await;

    let started = Instant::now();
    let body = h.body("hang", "web", json!({}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    assert!(execution.detail.contains("timed out after"), "{}", execution.detail);

    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    assert!(!pid.is_empty());
    // SIGKILL is delivered at once, but the kernel finishes the process's exit
    // asynchronously; allow it a moment, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(&pid) && Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    assert!(gone(&pid), "grandchild {pid} survived the timeout");

    let trail = h.trail(&body.incident_id).await;
    let finished = &trail[2];
    assert_eq!(finished.payload["steps"][0]["report"]["exit"]["how"], json!("timed_out"), "{}", finished.payload);
}
