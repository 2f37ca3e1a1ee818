//! Executor replicas sharing one PostgreSQL database (issue 16): a decision sent
//! to two replicas at once runs once; two decisions for one target, one at each
//! replica, never overlap; and a replica SIGKILLed in the middle of an action is
//! taken over by another once its lease lapses, which settles the action (here:
//! verification fails, the rollback runs) without running it again, and fences
//! the dead replica out of the execution.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use arf_pg::testing::TestServer;

use crate::harness::{Harness, Setup, append_line_pathway, command, command_probe, gated_pathway, path_str, pathway, start_gate, target};

async fn database(server: &TestServer) -> arf_pg::Settings {
    let settings = server.database().await.unwrap();
    arf_pg::migrate(&mut settings.connect().await.unwrap()).await.unwrap();
    settings
}

/// Each action writes `start`, waits a little, and writes `end` to a shared file.
fn start_end() -> arf_core::catalog::Pathway {
    let script = "echo start >> \"$1\"; sleep 0.3; echo end >> \"$1\"";
    pathway(
        "start_end",
        vec![command(&["sh", "-c", script, "sh", "{{target.log}}"])],
        vec![command_probe("ok", &["true"])],
        vec![command(&["true"])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_at_two_replicas_runs_once_and_a_target_takes_turns() {
    let server = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ran, log) = (dir.path().join("ran"), dir.path().join("log"));
    let targets = [("web".to_owned(), target(&[("file", path_str(&ran)), ("log", path_str(&log))]))].into();
    let setup = Setup { postgres: Some(database(&server).await), ..Setup::new(vec![append_line_pathway(), start_end()], targets) };
    let h = Harness::start(dir.path(), setup).await;
    let b = h.replica("executor-b").await;

    // One decision, sent to both replicas at once.
    for _ in 0..5 {
        let body = h.body("append_line", "web", json!({}));
        let signed = h.decide(&body).await;
        let (x, y) = tokio::join!(h.execute(signed.clone()), b.execute(signed.clone()));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!([x.replayed, y.replayed].iter().filter(|r| !**r).count(), 1, "{x:?} {y:?}");
        let again = b.execute(signed).await.unwrap();
        assert!(again.replayed);
    }
    let lines = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(lines.lines().count(), 5, "each decision ran once:\n{lines}");

    // Two decisions for one target, one at each replica: one after the other.
    let (first, second) = (h.body("start_end", "web", json!({})), h.body("start_end", "web", json!({})));
    let (first, second) = (h.decide(&first).await, h.decide(&second).await);
    let (x, y) = tokio::join!(h.execute(first), b.execute(second));
    assert_eq!((x.unwrap().outcome.as_str(), y.unwrap().outcome.as_str()), ("verified", "verified"));
    let order: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(order, ["start", "end", "start", "end"], "the replicas acted on one target at once");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_action_is_taken_over_and_settled_without_running_again() {
    let server = TestServer::start().await.unwrap();
    let settings = database(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, mut entered) = mpsc::channel(8);
    let (gate, url) = start_gate(entered_tx).await;
    let mut p = gated_pathway();
    p.verify.probes = vec![command_probe("healthy", &["test", "-e", "{{target.dir}}/healthy"])];
    p.rollback = vec![command(&["touch", "{{target.dir}}/rolled_back"])];
    let sick = dir.path().join("sick-target");
    std::fs::create_dir_all(&sick).unwrap();
    let targets = [("sick".to_owned(), target(&[("url", url.as_str()), ("dir", path_str(&sick))]))].into();
    let setup = Setup { postgres: Some(settings.clone()), ..Setup::new(vec![p], targets) };
    let mut h = Harness::start(dir.path(), setup).await;
    // The harness's executor, as a process of its own to SIGKILL, under the name `executor-a`.
    h.stop_executor().await;
    let config = arf_executor::Config { replica: Some("executor-a".to_owned()), data_dir: dir.path().join("executor-a"), ..h.executor_config().clone() };
    let config_file = dir.path().join("executor-a.json");
    std::fs::write(&config_file, serde_json::to_vec(&config).unwrap()).unwrap();
    let (mut a, a_client) = crate::recovery::spawn_child(&config_file).await;
    let b = h.replica("executor-b").await;

    let body = h.body("gated", "sick", json!({}));
    let signed = h.decide(&body).await;
    let running = tokio::spawn(async move { a_client.clone().execute(signed).await });
    tokio::time::timeout(Duration::from_secs(20), entered.recv()).await.unwrap().unwrap();
    a.kill().unwrap();
    a.wait().unwrap();
    assert!(running.await.unwrap().is_err(), "the killed replica answered");

    // Within a lease (2 s) and a takeover period, replica b settles it: the target
    // is unhealthy, so it rolls back. The action itself is not run again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = loop {
        let execution = b.get_execution(&body.decision_id).await.unwrap();
        if execution.outcome != "running" {
            break execution;
        }
        assert!(Instant::now() < deadline, "replica b did not take the execution over: {execution:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(settled.outcome, "rolled_back", "{settled:?}");
    assert!(settled.detail.contains("another executor replica"), "{}", settled.detail);
    assert!(sick.join("rolled_back").exists());
    assert_eq!(gate.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the action ran again");
    let kinds = h.kinds(&body.incident_id).await;
    assert_eq!(kinds.iter().filter(|k| **k == "execution_started").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "outcome").count(), 1, "{kinds:?}");

    // The dead replica is fenced out: a write under its name and old token matches nothing.
    let client = settings.connect().await.unwrap();
    let row = client.query_one("SELECT owner, fence FROM executor_executions WHERE decision_id = $1", &[&body.decision_id]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1)), ("executor-b".to_owned(), 2));
    let stale = client
        .execute("UPDATE executor_executions SET phase = 'acting' WHERE decision_id = $1 AND owner = 'executor-a' AND fence = 1", &[&body.decision_id])
        .await
        .unwrap();
    assert_eq!(stale, 0);
    gate.release.notify_waiters();
    b.stop().await;
}
