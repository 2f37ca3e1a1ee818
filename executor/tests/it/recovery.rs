//! Crash recovery: the executor runs as its own process, is killed with SIGKILL
//! in the middle of two actions, and is started again on the same data. The
//! restarted executor verifies each target again, rolls back the unhealthy one,
//! logs exactly one outcome per decision, and runs neither action twice.
//!
//! The child process is this test binary itself, re-run with an environment
//! variable that makes `executor_child` serve instead of returning.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use arf_audit::RecordKind;
use arf_proto::v1::executor_client::ExecutorClient;

use crate::harness::{Harness, Setup, command, command_probe, gated_pathway, path_str, start_gate, target};

const CHILD_ENV: &str = "ARF_TEST_EXECUTOR_CONFIG";
const READY: &str = "ARF_TEST_EXECUTOR_LISTENING";

/// In the child, serves the executor whose configuration (JSON) the environment names.
#[test]
fn executor_child() {
    let Ok(file) = std::env::var(CHILD_ENV) else { return };
    let config: arf_executor::Config = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{READY} {}", listener.local_addr().unwrap());
        arf_executor::serve(config, listener, std::future::pending()).await.unwrap();
    });
}

/// A child executor, killed when dropped so that a failing test leaves no process behind.
pub(crate) struct ChildExecutor(Child);

impl ChildExecutor {
    pub(crate) fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    pub(crate) fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }

    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }

    pub(crate) fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for ChildExecutor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A harness whose executor is stopped and whose configuration is written, for a
/// test that runs the executor as its own process ([`spawn_child`]).
pub(crate) async fn harness_for_child(dir: &std::path::Path, setup: Setup) -> (Harness, std::path::PathBuf) {
    let mut h = Harness::start(dir, setup).await;
    h.stop_executor().await;
    let config_file = dir.join("executor.json");
    std::fs::write(&config_file, serde_json::to_vec(h.executor_config()).unwrap()).unwrap();
    (h, config_file)
}

/// Starts the executor as a child process and connects to it once it listens.
pub(crate) async fn spawn_child(config_file: &std::path::Path) -> (ChildExecutor, ExecutorClient<arf_proto::server::Authenticated>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["recovery::executor_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, config_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            // libtest may have printed the test's name on the same line.
            .find_map(|line| line.split_once(READY).map(|(_, a)| a.trim().to_owned()))
            .expect("the child executor never said where it listens");
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        addr
    })
    .await
    .unwrap();
    let config: arf_executor::Config = serde_json::from_slice(&std::fs::read(config_file).unwrap()).unwrap();
    let client = crate::harness::executor_client(&addr, &crate::harness::config_token(&config)).await;
    (ChildExecutor(child), client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_executor_settles_what_it_was_doing_without_running_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, mut entered) = mpsc::channel(8);
    let (gate, url) = start_gate(entered_tx).await;
    let mut p = gated_pathway();
    p.verify.probes = vec![command_probe("healthy", &["test", "-e", "{{target.dir}}/healthy"])];
    p.rollback = vec![command(&["touch", "{{target.dir}}/rolled_back"])];
    let (healthy, sick) = (dir.path().join("healthy-target"), dir.path().join("sick-target"));
    std::fs::create_dir_all(&healthy).unwrap();
    std::fs::create_dir_all(&sick).unwrap();
    std::fs::write(healthy.join("healthy"), "").unwrap();
    let targets = [
        ("healthy".to_owned(), target(&[("url", url.as_str()), ("dir", path_str(&healthy))])),
        ("sick".to_owned(), target(&[("url", url.as_str()), ("dir", path_str(&sick))])),
    ]
    .into();
    let (h, config_file) = harness_for_child(dir.path(), Setup::new(vec![p], targets)).await;

    let (mut child, client) = spawn_child(&config_file).await;
    let mut decisions = Vec::new();
    for target in ["healthy", "sick"] {
        let body = h.body("gated", target, json!({}));
        let signed = h.decide(&body).await;
        let mut client = client.clone();
        // The call fails when the executor dies under it.
        tokio::spawn(async move { client.execute(signed).await });
        decisions.push((body, ()));
    }
    // Both actions are in flight: kill the executor where it stands.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(30), entered.recv()).await.unwrap().unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(gate.calls.load(Ordering::SeqCst), 2);
    for (body, ()) in &decisions {
        let kinds = h.kinds(&body.incident_id).await;
        assert_eq!(kinds, ["decision", "execution_started"], "{}", body.target);
    }

    // The restarted executor settles both; wait for their outcomes in the log.
    let (_head, _) = h.governor.head().await.unwrap();
    let mut tail = h.governor.tail(0).await.unwrap();
    let (mut child, client) = spawn_child(&config_file).await;
    let mut outcomes = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while outcomes < 2 {
            let record = tokio::time::timeout(std::time::Duration::from_secs(30), tail.next()).await.expect("timed out following the log").unwrap().unwrap();
            if record.kind == RecordKind::Outcome {
                outcomes += 1;
            }
        }
    })
    .await
    .expect("the restarted executor did not settle both executions in time");

    let expected = [
        ("healthy", "verified", vec!["decision", "execution_started", "verification", "outcome"]),
        (
            "sick",
            "rolled_back",
            vec!["decision", "execution_started", "verification", "rollback", "execution_finished", "outcome"],
        ),
    ];
    for ((body, ()), (target, outcome, kinds)) in decisions.iter().zip(expected) {
        assert_eq!(body.target, target);
        let trail = h.trail(&body.incident_id).await;
        let got: Vec<&str> = trail.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(got, kinds, "{target}");
        let outcomes: Vec<_> = trail.iter().filter(|r| r.kind == RecordKind::Outcome).collect();
        assert_eq!(outcomes.len(), 1, "{target}");
        assert_eq!(outcomes[0].payload["outcome"], json!(outcome), "{target}");
        assert_eq!(outcomes[0].payload["recovered"], json!(true), "{target}");
        assert_eq!(outcomes[0].payload["interrupted_in"], json!("acting"), "{target}");

        // Asking again answers with the settled execution, without running anything.
        let execution = client.clone().execute(h.decide(body).await).await.map(tonic::Response::into_inner);
        let execution = execution.unwrap();
        assert_eq!(execution.outcome, outcome, "{target}: {}", execution.detail);
    }
    assert!(sick.join("rolled_back").exists(), "the sick target was not rolled back");
    assert!(!healthy.join("rolled_back").exists(), "the healthy target was rolled back");
    assert_eq!(gate.calls.load(Ordering::SeqCst), 2, "an action ran again");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A SIGKILL while the precheck runs: nothing was started, so nothing is logged and
/// the restarted executor gives the claim back; asked again, it runs the precheck
/// again and then the action, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_precheck_leaves_nothing_started_and_the_action_runs_once_later() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, mut entered) = mpsc::channel(8);
    let (gate, url) = start_gate(entered_tx).await;
    let mut p = gated_pathway();
    // The gate holds the precheck; the action leaves a mark per run.
    p.precheck = std::mem::take(&mut p.action);
    p.action = vec![command(&["sh", "-c", "echo run >> \"$1\"", "sh", "{{target.dir}}/acted"])];
    p.verify.probes = vec![command_probe("acted", &["test", "-e", "{{target.dir}}/acted"])];
    let target_dir = dir.path().join("target");
    std::fs::create_dir_all(&target_dir).unwrap();
    let targets = [("web".to_owned(), target(&[("url", url.as_str()), ("dir", path_str(&target_dir))]))].into();
    let (h, config_file) = harness_for_child(dir.path(), Setup::new(vec![p], targets)).await;

    let (mut child, client) = spawn_child(&config_file).await;
    let body = h.body("gated", "web", json!({}));
    let signed = h.decide(&body).await;
    let mut first = client.clone();
    let in_flight = signed.clone();
    tokio::spawn(async move { first.execute(in_flight).await });
    tokio::time::timeout(Duration::from_secs(30), entered.recv()).await.unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(h.kinds(&body.incident_id).await, ["decision"], "nothing was started, so nothing is logged");
    assert!(!target_dir.join("acted").exists());

    let (mut child, client) = spawn_child(&config_file).await;
    let mut again = client.clone();
    let call = tokio::spawn(async move { again.execute(signed).await.map(tonic::Response::into_inner) });
    tokio::time::timeout(Duration::from_secs(30), entered.recv()).await.expect("the precheck did not run again").unwrap();
    gate.release.notify_one();
    let execution = tokio::time::timeout(Duration::from_secs(30), call).await.unwrap().unwrap().unwrap();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 2, "the precheck ran once per try");
    assert_eq!(std::fs::read_to_string(target_dir.join("acted")).unwrap(), "run\n", "the action ran once");
    let kinds = h.kinds(&body.incident_id).await;
    assert_eq!(kinds.iter().filter(|k| **k == "execution_started").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "outcome").count(), 1, "{kinds:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Whether `pid` is a live process (a zombie has finished).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned)))
        .is_some_and(|state| state != "Z" && state != "X")
}

fn read_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A SIGKILL of the executor leaves its action's processes running. Here the action
/// is a shell that waits on a child and then breaks the target; were the restarted
/// executor to verify the target while they still ran, it would find it healthy,
/// report `verified`, and the target would break behind its back. It must stop them
/// first, and say so in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_executor_stops_what_the_killed_one_left_running_before_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let svc = dir.path().join("svc");
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(svc.join("healthy"), "").unwrap();
    let script = r#"echo $$ > "$1/shell.pid"; sleep 30 & echo $! > "$1/sleep.pid"; wait; rm "$1/healthy""#;
    let p = crate::harness::pathway(
        "slow_breaker",
        vec![command(&["sh", "-c", script, "sh", "{{target.dir}}"])],
        vec![command_probe("healthy", &["test", "-e", "{{target.dir}}/healthy"])],
        vec![command(&["touch", "{{target.dir}}/rolled_back"])],
    );
    let targets = [("svc".to_owned(), target(&[("dir", path_str(&svc))]))].into();
    let (h, config_file) = harness_for_child(dir.path(), Setup::new(vec![p], targets)).await;

    let (mut child, client) = spawn_child(&config_file).await;
    let body = h.body("slow_breaker", "svc", json!({}));
    let signed = h.decide(&body).await;
    let mut running = client.clone();
    tokio::spawn(async move { running.execute(signed).await });
    let (shell, sleep) = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let (Some(shell), Some(sleep)) = (read_pid(&svc.join("shell.pid")), read_pid(&svc.join("sleep.pid"))) {
                break (shell, sleep);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the action never started");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(alive(shell) && alive(sleep), "the action must outlive the executor for this test to mean anything");

    let mut tail = h.governor.tail(0).await.unwrap();
    let (mut child, _client) = spawn_child(&config_file).await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let record = tail.next().await.unwrap().unwrap();
            if record.kind == RecordKind::Outcome {
                break record;
            }
        }
    })
    .await
    .expect("the restarted executor did not settle the execution");
    // Both were gone before the outcome was logged, so the target cannot change after it.
    assert!(!alive(shell), "the action's shell still runs");
    assert!(!alive(sleep), "the action's child still runs");
    assert!(svc.join("healthy").exists(), "the leftover action broke the target");
    assert_eq!(outcome.payload["outcome"], json!("verified"), "{}", outcome.payload);
    let leftovers = outcome.payload["leftovers"].as_array().unwrap();
    assert_eq!(leftovers.len(), 1, "{}", outcome.payload);
    assert_eq!(leftovers[0]["program"], json!("sh"));
    assert_eq!(leftovers[0]["pgid"], json!(shell), "the shell leads its own group");
    let killed: Vec<u64> = leftovers[0]["killed"].as_array().unwrap().iter().filter_map(serde_json::Value::as_u64).collect();
    assert!(killed.contains(&u64::from(shell)) && killed.contains(&u64::from(sleep)), "{killed:?}");
    assert!(outcome.payload["detail"].as_str().unwrap().contains("was still running"), "{}", outcome.payload);
    let kinds = h.kinds(&body.incident_id).await;
    assert_eq!(kinds, ["decision", "execution_started", "verification", "outcome"]);
    let verification = &h.trail(&body.incident_id).await[2];
    assert_eq!(verification.payload["leftovers"], outcome.payload["leftovers"]);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Waits for the next `outcome` record in `tail`.
async fn next_outcome(tail: &mut (impl futures::Stream<Item = Result<arf_audit::Record, arf_audit::AuditError>> + Unpin)) -> arf_audit::Record {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let record = tail.next().await.unwrap().unwrap();
            if record.kind == RecordKind::Outcome {
                break record;
            }
        }
    })
    .await
    .expect("no outcome was logged in time")
}

/// The gate target and a "sick" target directory (no `healthy` file), with the
/// gated pathway checking that file and a quick pathway on the same target.
fn sick_setup(dir: &std::path::Path, url: &str) -> (Setup, std::path::PathBuf) {
    let mut gated = gated_pathway();
    gated.verify.probes = vec![command_probe("healthy", &["test", "-e", "{{target.dir}}/healthy"])];
    gated.rollback = vec![command(&["touch", "{{target.dir}}/rolled_back"])];
    let quick = crate::harness::pathway("quick", vec![command(&["true"])], vec![command_probe("ok", &["true"])], vec![command(&["true"])]);
    let sick = dir.join("sick-target");
    std::fs::create_dir_all(&sick).unwrap();
    let targets = [("sick".to_owned(), target(&[("url", url), ("dir", path_str(&sick))]))].into();
    (Setup::new(vec![gated, quick], targets), sick)
}

/// A restart while the audit log is down cannot settle anything at first. The
/// target must stay locked, and the execution must be settled as soon as the
/// log is back, without waiting for another restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_an_audit_outage_settles_once_the_log_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, mut entered) = mpsc::channel(8);
    let (gate, url) = start_gate(entered_tx).await;
    let (setup, sick) = sick_setup(dir.path(), &url);
    let (mut h, config_file) = harness_for_child(dir.path(), setup).await;

    let (mut child, client) = spawn_child(&config_file).await;
    let first = h.body("gated", "sick", json!({}));
    let signed = h.decide(&first).await;
    let mut running = client.clone();
    tokio::spawn(async move { running.execute(signed).await });
    tokio::time::timeout(Duration::from_secs(30), entered.recv()).await.unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    h.stop_audit().await;
    let (mut child, client) = spawn_child(&config_file).await;
    // Let it fail to settle a few times while the log is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!sick.join("rolled_back").exists(), "it rolled back without being able to log it");
    h.start_audit().await;

    let mut tail = h.governor.tail(0).await.unwrap();
    let outcome = next_outcome(&mut tail).await;
    assert_eq!(outcome.payload["decision_id"], json!(first.decision_id));
    assert_eq!(outcome.payload["outcome"], json!("rolled_back"), "{}", outcome.payload);
    assert!(sick.join("rolled_back").exists());

    // The target is free again, and a new decision for it runs after the settled one.
    let second = h.body("quick", "sick", json!({}));
    let execution = client.clone().execute(h.decide(&second).await).await.unwrap().into_inner();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1, "the cut-off action ran again");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The execution store is this executor's memory, the audit log everyone's. An
/// executor that lost its store (a new disk) and is sent a decision the log shows
/// as started must not run it again: it settles it from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_that_lost_its_store_settles_from_the_log_instead_of_running_again() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, mut entered) = mpsc::channel(8);
    let (gate, url) = start_gate(entered_tx).await;
    let (setup, sick) = sick_setup(dir.path(), &url);
    let (h, config_file) = harness_for_child(dir.path(), setup).await;

    // Cut off mid-action, then the store is lost.
    let (mut child, client) = spawn_child(&config_file).await;
    let cut_off = h.body("gated", "sick", json!({}));
    let signed = h.decide(&cut_off).await;
    let mut running = client.clone();
    let again = signed.clone();
    tokio::spawn(async move { running.execute(signed).await });
    tokio::time::timeout(Duration::from_secs(30), entered.recv()).await.unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&h.executor_config().data_dir).unwrap();

    let (mut child, client) = spawn_child(&config_file).await;
    let execution = client.clone().execute(again).await.unwrap().into_inner();
    assert!(execution.replayed, "{execution:?}");
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    assert!(execution.detail.contains("instead of running it again"), "{}", execution.detail);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1, "the action ran a second time");
    assert!(sick.join("rolled_back").exists());
    let kinds = h.kinds(&cut_off.incident_id).await;
    assert_eq!(kinds, ["decision", "execution_started", "verification", "rollback", "execution_finished", "outcome"]);
    child.kill().unwrap();
    child.wait().unwrap();
}
