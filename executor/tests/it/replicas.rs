//! Executor replicas sharing one PostgreSQL database (issue 16): a decision sent
//! to two replicas at once runs once; two decisions for one target, one at each
//! replica, never overlap; and a replica SIGKILLed in the middle of an action is
//! taken over by another once its lease lapses, which settles the action (here:
//! verification fails, the rollback runs) without running it again, and fences
//! the dead replica out of the execution; and a replica paused (SIGSTOP) in the
//! middle of an action is taken over the same way, and when it resumes it finds
//! its lease gone, logs nothing more and exits.

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

/// A deployment of two replicas on one database: the harness's executor run as a
/// process of its own (`executor-a`, to SIGKILL or SIGSTOP) and `executor-b` in
/// this process; one target, `sick`, whose verification fails, and a pathway whose
/// action waits at a gate until the test releases it.
struct Pair {
    h: Harness,
    settings: arf_pg::Settings,
    a: crate::recovery::ChildExecutor,
    a_client: arf_proto::v1::executor_client::ExecutorClient<arf_proto::server::Authenticated>,
    b: crate::harness::Replica,
    gate: std::sync::Arc<crate::harness::Gate>,
    entered: mpsc::Receiver<()>,
    sick: std::path::PathBuf,
    _server: TestServer,
    _dir: tempfile::TempDir,
}

async fn pair() -> Pair {
    let server = TestServer::start().await.unwrap();
    let settings = database(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, entered) = mpsc::channel(8);
    let (gate, url) = start_gate(entered_tx).await;
    let mut p = gated_pathway();
    p.verify.probes = vec![command_probe("healthy", &["test", "-e", "{{target.dir}}/healthy"])];
    p.rollback = vec![command(&["touch", "{{target.dir}}/rolled_back"])];
    let sick = dir.path().join("sick-target");
    std::fs::create_dir_all(&sick).unwrap();
    let targets = [("sick".to_owned(), target(&[("url", url.as_str()), ("dir", path_str(&sick))]))].into();
    let setup = Setup { postgres: Some(settings.clone()), ..Setup::new(vec![p], targets) };
    let mut h = Harness::start(dir.path(), setup).await;
    h.stop_executor().await;
    let config = arf_executor::Config { replica: Some("executor-a".to_owned()), data_dir: dir.path().join("executor-a"), ..h.executor_config().clone() };
    let config_file = dir.path().join("executor-a.json");
    std::fs::write(&config_file, serde_json::to_vec(&config).unwrap()).unwrap();
    let (a, a_client) = crate::recovery::spawn_child(&config_file).await;
    let b = h.replica("executor-b").await;
    Pair { h, settings, a, a_client, b, gate, entered, sick, _server: server, _dir: dir }
}

/// The trail of an execution cut off in its action and settled by another replica:
/// its start, then the other replica's verification, rollback (its steps' end) and outcome.
const TAKEN_OVER: [&str; 6] = ["decision", "execution_started", "verification", "rollback", "execution_finished", "outcome"];

/// Sends a decision to replica a and waits until its action is at the gate.
async fn act_at_a(p: &mut Pair) -> (arf_core::decision::DecisionBody, tokio::task::JoinHandle<Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status>>) {
    let body = p.h.body("gated", "sick", json!({}));
    let signed = p.h.decide(&body).await;
    let client = p.a_client.clone();
    let running = tokio::spawn(async move { client.clone().execute(signed).await });
    tokio::time::timeout(Duration::from_secs(20), p.entered.recv()).await.unwrap().unwrap();
    (body, running)
}

/// Waits until replica b reports an outcome for `decision_id`.
async fn settled_by_b(p: &Pair, decision_id: &str) -> arf_proto::v1::Execution {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let execution = p.b.get_execution(decision_id).await.unwrap();
        if execution.outcome != "running" {
            return execution;
        }
        assert!(Instant::now() < deadline, "replica b did not take the execution over: {execution:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_action_is_taken_over_and_settled_without_running_again() {
    let mut p = pair().await;
    let (body, running) = act_at_a(&mut p).await;
    let client = p.settings.connect().await.unwrap();
    let fence_a: i64 = client.query_one("SELECT fence FROM executor_executions WHERE decision_id = $1", &[&body.decision_id]).await.unwrap().get(0);
    p.a.kill().unwrap();
    p.a.wait().unwrap();
    assert!(running.await.unwrap().is_err(), "the killed replica answered");

    // Once its lease (4 s) and a grace of one more lease lapse, replica b settles
    // it: the target is unhealthy, so it rolls back. The action is not run again.
    // A lease that lapsed less than one more lease ago is not taken over yet:
    // the replica may still be stopping (here its lease is made to have lapsed half
    // a second ago, and b looks every 2 s).
    let owner = "SELECT owner FROM executor_executions WHERE decision_id = $1";
    client.execute("UPDATE executor_members SET lease_until = now() - interval '500 milliseconds' WHERE name = 'executor-a'", &[]).await.unwrap();
    let lapsed = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(client.query_one(owner, &[&body.decision_id]).await.unwrap().get::<_, String>(0), "executor-a", "taken over within the grace");
    let settled = settled_by_b(&p, &body.decision_id).await;
    // Not before the grace: one lease (4 s) past the lapse, which was set half a
    // second in the past (less a margin for the two clocks' readings).
    assert!(lapsed.elapsed() >= Duration::from_millis(3400), "taken over {:?} after the lease was made to lapse", lapsed.elapsed());
    assert_eq!(settled.outcome, "rolled_back", "{settled:?}");
    assert!(settled.detail.contains("another executor replica"), "{}", settled.detail);
    assert!(p.sick.join("rolled_back").exists());
    assert_eq!(p.gate.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the action ran again");
    assert_eq!(p.h.kinds(&body.incident_id).await, TAKEN_OVER, "one start, b's settling, one outcome");

    // The dead replica is fenced out: a write under its name and old token matches nothing.
    let row = client.query_one("SELECT owner, fence FROM executor_executions WHERE decision_id = $1", &[&body.decision_id]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "executor-b");
    assert!(row.get::<_, i64>(1) > fence_a, "the takeover raised the token");
    let stale = client
        .execute("UPDATE executor_executions SET phase = 'acting' WHERE decision_id = $1 AND owner = 'executor-a' AND fence = $2", &[&body.decision_id, &fence_a])
        .await
        .unwrap();
    assert_eq!(stale, 0);
    p.gate.release.notify_waiters();
}

/// A replica that is not dead but paused (a frozen VM, a SIGSTOP) past its lease
/// is taken over as if dead; when it resumes and its action returns, it finds its
/// lease gone: it logs nothing more about the execution and exits, so the log holds
/// one outcome, the one the other replica settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_mid_action_is_taken_over_and_stops_when_it_resumes() {
    let mut p = pair().await;
    let (body, running) = act_at_a(&mut p).await;
    let pid = p.a.id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let settled = settled_by_b(&p, &body.decision_id).await;
    assert_eq!(settled.outcome, "rolled_back", "{settled:?}");

    // Resumed, with its action answered: it must not verify, roll back or log.
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    p.gate.release.notify_waiters();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = p.a.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the resumed replica kept running without its lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(75), "{status:?}");
    let _ = running.await;
    // The trail is exactly what a dead replica leaves: the resumed one added nothing.
    assert_eq!(p.h.kinds(&body.incident_id).await, TAKEN_OVER);
    p.b.stop().await;
}

/// A process that joins under the name of one whose lease lapsed (a restart, a
/// reschedule) re-tokens everything the name owns: the earlier process, should it
/// still be running somewhere, matches nothing with its tokens, and is itself
/// refused for its lapsed lease before it even tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_joining_under_a_lapsed_name_fences_out_the_earlier_one() {
    use arf_executor::execution::ExecutionState;
    use arf_executor::shared::Shared;
    use arf_executor::store::{Claim, StoredDecision};
    let server = TestServer::start().await.unwrap();
    let settings = database(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup { postgres: Some(settings.clone()), ..Setup::new(vec![append_line_pathway()], [("web".to_owned(), target(&[]))].into()) };
    let h = Harness::start(dir.path(), setup).await;
    let lease = Duration::from_secs(1);
    let body = h.body("append_line", "web", json!({}));
    let first = Shared::join(&settings, "executor-x", lease).await.unwrap();
    let state = ExecutionState::claimed(&body, 1);
    let stored = StoredDecision { body: body.clone(), decision_seq: 1 };
    assert_eq!(first.claim(&state, &stored).await.unwrap(), Claim::Claimed);
    let client = settings.connect().await.unwrap();
    let select = "SELECT fence FROM executor_executions WHERE decision_id = $1";
    let before: i64 = client.query_one(select, &[&body.decision_id]).await.unwrap().get(0);
    // The first process never renews: once its lease and a grace lapse, a second joins.
    let second = Shared::join(&settings, "executor-x", lease).await.unwrap();
    let after: i64 = client.query_one(select, &[&body.decision_id]).await.unwrap().get(0);
    assert!(after > before, "joining re-tokened the name's execution ({before} → {after})");
    let stale = client.execute("UPDATE executor_executions SET phase = 'acting' WHERE decision_id = $1 AND fence = $2", &[&body.decision_id, &before]).await.unwrap();
    assert_eq!(stale, 0);
    assert!(matches!(first.save(&state).await, Err(arf_executor::store::StoreError::LeaseLost(_))), "the first process still wrote");
    second.save(&state).await.unwrap();
}

/// A replica whose lease lapsed while it believes it holds it (paused past it,
/// say) runs nothing: the database refuses the save that marks the execution
/// `starting` (or, had the lease lapsed just after it, the log refuses the start),
/// both judging the lease by the database's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_past_its_lease_by_the_databases_clock_runs_nothing() {
    let p = pair().await;
    let client = p.settings.connect().await.unwrap();
    arf_pg::testing::lapse_behind_its_back(&client, "executor_members", "executor-a").await.unwrap();
    let body = p.h.body("gated", "sick", json!({}));
    let signed = p.h.decide(&body).await;
    let refused = p.a_client.clone().execute(signed).await.unwrap_err();
    assert!(
        refused.message().contains("this replica's lease does not hold") || refused.message().contains("this executor's lease lapsed by the database's clock"),
        "{refused:?}"
    );
    assert_eq!(p.gate.calls.load(std::sync::atomic::Ordering::SeqCst), 0, "the action ran");
    assert!(!p.h.kinds(&body.incident_id).await.contains(&"execution_started"), "a start was logged");
    p.gate.release.notify_waiters();
}

/// A takeover comes after every record the lapsed owner had on its way into the
/// log, or the log refuses them: the log checks a replica's lease in the append's
/// own transaction, holding the owner's member row `FOR SHARE` until it commits
/// (`arf_audit::pg`), and taking over an execution or a target lock locks that row
/// to judge the lapse. Here a transaction holds the row as the log's does, and
/// both takeovers wait for it to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_waits_for_the_append_the_lapsed_owner_has_in_the_logs_transaction() {
    use arf_executor::execution::ExecutionState;
    use arf_executor::shared::Shared;
    use arf_executor::store::{Claim, StoredDecision};
    let server = TestServer::start().await.unwrap();
    let settings = database(&server).await;
    let dir = tempfile::tempdir().unwrap();
    // The harness's own executor keeps out of the database: only the two below are in it.
    let h = Harness::start(dir.path(), Setup::new(vec![append_line_pathway()], [("web".to_owned(), target(&[]))].into())).await;
    let lease = Duration::from_secs(1);
    let body = h.body("append_line", "web", json!({}));
    let owner = Shared::join(&settings, "executor-x", lease).await.unwrap();
    let state = ExecutionState::claimed(&body, 1);
    assert_eq!(owner.claim(&state, &StoredDecision { body: body.clone(), decision_seq: 1 }).await.unwrap(), Claim::Claimed);
    assert!(owner.try_lock_target("web").await.unwrap().is_some());
    let taker = std::sync::Arc::new(Shared::join(&settings, "executor-y", lease).await.unwrap());
    let (lost, _lapsed) = tokio::sync::oneshot::channel();
    let _renewal = taker.spawn_renewal(lost);

    let log = settings.connect().await.unwrap();
    log.batch_execute("BEGIN; SELECT 1 FROM executor_members WHERE name = 'executor-x' FOR SHARE").await.unwrap();
    // The owner never renews: once its lease and the grace lapse, its execution is an orphan.
    let deadline = Instant::now() + Duration::from_secs(20);
    let orphan = loop {
        if let Some(orphan) = taker.orphans().await.unwrap().into_iter().find(|o| o.decision_id == body.decision_id) {
            break orphan;
        }
        assert!(Instant::now() < deadline, "the execution never became an orphan");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let check = settings.connect().await.unwrap();
    let taken = waits_for_the_log(&check, &log, {
        let taker = std::sync::Arc::clone(&taker);
        async move { taker.take_over(&orphan).await }
    })
    .await;
    assert!(taken.unwrap().is_some(), "the execution was taken over once the log's transaction ended");
    log.batch_execute("BEGIN; SELECT 1 FROM executor_members WHERE name = 'executor-x' FOR SHARE").await.unwrap();
    let locked = waits_for_the_log(&check, &log, async move { taker.try_lock_target("web").await }).await;
    assert!(locked.unwrap().is_some(), "the target lock was taken over once the log's transaction ended");
}

/// Runs `takeover`, checks that it waits on a lock while `log`'s transaction is
/// open, then ends that transaction and returns what the takeover did.
async fn waits_for_the_log<T: Send + 'static>(check: &arf_pg::Client, log: &arf_pg::Client, takeover: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let takeover = tokio::spawn(takeover);
    let deadline = Instant::now() + Duration::from_secs(20);
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database() AND query LIKE '%FOR UPDATE%'";
    while check.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(!takeover.is_finished(), "the takeover did not wait for the log's transaction");
        assert!(Instant::now() < deadline, "the takeover neither waited nor finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!takeover.is_finished());
    log.batch_execute("COMMIT").await.unwrap();
    takeover.await.unwrap()
}
