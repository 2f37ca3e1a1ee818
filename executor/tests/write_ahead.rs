//! The start is logged only if the governor has appended nothing to the incident
//! since the executor last read its trail, judged in the log's own order. A
//! withdrawal that lands between that read and the start is read before the start
//! and refuses it: the log never shows a start after a withdrawal. Anything else
//! the governor logs there in between means reading again, and then starting.
//!
//! An answer lost on the way (a timeout, a connection cut after the log took the
//! start, or before it got it) does not give the claim back: the action runs if
//! the log holds the start, and otherwise the execution is kept until the log
//! shows whether it took it.
//!
//! In a file of its own: the pause it sets is taken by the next start in this
//! process, whichever test makes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

#[path = "it/harness.rs"]
#[allow(dead_code, reason = "the harness serves the `it` tests too")]
mod harness;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tonic::Code;

use arf_audit_client::RecordKind;
use arf_core::decision::DecisionBody;
use arf_core::records::GovernanceEvent;
use harness::{Gate, Harness, Lossy, Setup, gated_pathway, start_gate, target};

const POINT: &str = "executor.before_write_ahead";

/// The pause is the process's: one test holds it at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts executing `body` with a pause just before its start is logged, and
/// returns once the executor is held there, with the call under way.
async fn held_before_the_start(h: &Harness, body: &DecisionBody) -> tokio::task::JoinHandle<Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status>> {
    let signed = h.decide(body).await;
    arf_core::crash::pause_next(POINT, Duration::from_secs(3));
    let executor = h.executor.clone();
    let call = tokio::spawn(async move { executor.clone().execute(signed).await });
    until("the executor comes to log the start", || !arf_core::crash::pending(POINT)).await;
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_between_the_last_read_and_the_start_refuses_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, _entered) = mpsc::channel(4);
    let (gate, url) = start_gate(entered_tx).await;
    let h = Harness::start(dir.path(), Setup::new(vec![gated_pathway()], [("web".to_owned(), target(&[("url", url.as_str())]))].into())).await;
    let body = h.body("gated", "web", json!({}));
    let call = held_before_the_start(&h, &body).await;
    let event = GovernanceEvent::Withdrawn { decision_id: body.decision_id.clone(), reason: "the kill switch is off".to_owned(), at_ms: arf_core::time::now_ms() };
    h.governor.append_one(&body.incident_id, RecordKind::Decision, arf_core::records::encode(&event)).await.unwrap();
    let Ok(answer) = tokio::time::timeout(Duration::from_secs(20), call).await else {
        gate.release.notify_waiters();
        panic!("the action started after the withdrawal (the gate holds it)");
    };
    let status = answer.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
    assert!(status.message().contains("withdrew"), "{}", status.message());
    assert_eq!(gate.calls.load(Ordering::SeqCst), 0, "the action never ran");
    assert!(!h.kinds(&body.incident_id).await.contains(&"execution_started"));
    assert_eq!(h.get_execution(&body.decision_id).await.unwrap_err().code(), Code::NotFound, "the claim is given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_governor_record_in_between_means_reading_again_then_starting() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, mut entered) = mpsc::channel(4);
    let (gate, url) = start_gate(entered_tx).await;
    let h = Harness::start(dir.path(), Setup::new(vec![gated_pathway()], [("web".to_owned(), target(&[("url", url.as_str())]))].into())).await;
    let body = h.body("gated", "web", json!({}));
    let call = held_before_the_start(&h, &body).await;
    let other = h.governor.append_one(&body.incident_id, RecordKind::Decision, json!({"decision_id": "dec-another", "state": "rejected", "detail": "a person said no"})).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), entered.recv()).await.expect("the action never started").unwrap();
    gate.release.notify_one();
    assert_eq!(call.await.unwrap().unwrap().into_inner().outcome, "verified");
    let started = h.wait_for_kind(&body.incident_id, "execution_started").await;
    assert!(started.seq > other.seq, "the start was logged after the governor's record it read");
}

/// A harness whose executor reaches the audit log through a [`Lossy`] proxy.
async fn behind_a_proxy(dir: &std::path::Path) -> (Harness, Lossy, std::sync::Arc<Gate>, mpsc::Receiver<()>) {
    let (entered_tx, entered) = mpsc::channel(4);
    let (gate, url) = start_gate(entered_tx).await;
    let mut h = Harness::start(dir, Setup::new(vec![gated_pathway()], [("web".to_owned(), target(&[("url", url.as_str())]))].into())).await;
    let proxy = Lossy::start(h.audit_addr).await;
    h.reach_audit_via(proxy.addr).await;
    (h, proxy, gate, entered)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asks for the execution until it has an outcome; it is never given back meanwhile.
async fn settled(h: &Harness, decision_id: &str) -> arf_proto::v1::Execution {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let execution = h.get_execution(decision_id).await.expect("the execution is kept until it is settled");
        if execution.outcome != "running" {
            return execution;
        }
        assert!(Instant::now() < deadline, "never settled: {}", execution.detail);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(kinds: &[&str], kind: &str) -> usize {
    kinds.iter().filter(|k| **k == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_answer_is_lost_runs_once_when_the_log_holds_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (h, proxy, gate, mut entered) = behind_a_proxy(dir.path()).await;
    let body = h.body("gated", "web", json!({}));
    let call = held_before_the_start(&h, &body).await;
    proxy.lose_replies();
    // The log takes the start; its answer never reaches the executor, whose
    // connection is then cut.
    h.wait_for_kind(&body.incident_id, "execution_started").await;
    proxy.cut();
    tokio::time::timeout(Duration::from_secs(20), entered.recv()).await.expect("the log holds the start, but the action never ran").unwrap();
    gate.release.notify_one();
    let execution = call.await.unwrap().unwrap().into_inner();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1, "the action ran once");
    let kinds = h.kinds(&body.incident_id).await;
    assert_eq!((count(&kinds, "execution_started"), count(&kinds, "outcome")), (1, 1), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_the_log_publishes_after_its_answer_is_lost_is_settled_as_never_run() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (h, proxy, gate, _entered) = behind_a_proxy(dir.path()).await;
    let body = h.body("gated", "web", json!({}));
    let call = held_before_the_start(&h, &body).await;
    proxy.lose_replies();
    // The log writes the start and holds it unsynced, so unread, for a while;
    // meanwhile the executor's connection is cut.
    arf_core::crash::pause_next("audit.before_sync", Duration::from_secs(6));
    until("the log holds the start unsynced", || !arf_core::crash::pending("audit.before_sync")).await;
    proxy.cut();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(status.message().contains("answer was lost"), "{}", status.message());
    let kept = h.get_execution(&body.decision_id).await.expect("the claim is kept, not given back");
    assert_eq!(kept.outcome, "running", "{}", kept.detail);
    // Once the log publishes the start, the execution is settled by it: the
    // action never ran, so nothing changed and nothing is rolled back.
    let execution = settled(&h, &body.decision_id).await;
    assert_eq!(execution.outcome, "not_run", "{}", execution.detail);
    assert!(execution.detail.contains("never ran it"), "{}", execution.detail);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 0, "the action never ran");
    let kinds = h.kinds(&body.incident_id).await;
    assert_eq!((count(&kinds, "execution_started"), count(&kinds, "outcome"), count(&kinds, "rollback")), (1, 1, 0), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_the_log_never_got_is_given_back_once_a_checkpoint_shows_it_took_nothing_more() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (h, proxy, gate, _entered) = behind_a_proxy(dir.path()).await;
    let body = h.body("gated", "web", json!({}));
    let call = held_before_the_start(&h, &body).await;
    // The start never reaches the log, and the connection is cut.
    proxy.lose_requests();
    // Cut as soon as any of it is lost: the log gets none of the request either way.
    until("the start is lost on its way", || proxy.lost() > 0).await;
    proxy.cut();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(status.message().contains("answer was lost"), "{}", status.message());
    // The executor cannot tell this from a start the log took late, until the log
    // signs a checkpoint, which comes after anything it took: then it gives the
    // claim back, well before the 30 s a log without checkpoints would take.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match h.get_execution(&body.decision_id).await {
            Err(status) if status.code() == Code::NotFound => break,
            Ok(execution) => assert_eq!(execution.outcome, "running", "{}", execution.detail),
            Err(status) => panic!("{status}"),
        }
        assert!(Instant::now() < deadline, "the claim was never given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gate.calls.load(Ordering::SeqCst), 0, "the action never ran");
    let kinds = h.kinds(&body.incident_id).await;
    assert_eq!(count(&kinds, "execution_started"), 0, "{kinds:?}");
}

/// The status the executor's health service gives for the `Executor` service,
/// and for the server as a whole.
async fn executor_health(h: &Harness) -> (i32, i32) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.executor_addr)).unwrap().connect().await.unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = |service: &str| {
        let (mut health, request) = (health.clone(), tonic_health::pb::HealthCheckRequest { service: service.to_owned() });
        async move { health.check(request).await.unwrap().into_inner().status }
    };
    (status("arf.v1.Executor").await, status("").await)
}

/// The execution store's writes are what a restart knows an execution by, and
/// sled's own flush does not make them durable, so each is synced; a sync that
/// fails leaves memory maybe ahead of the disk. The store then stops: the decision
/// is refused and nothing runs, health says `NOT_SERVING`, and every later
/// decision is refused too, until a restart reads what the disk holds. (Here, as
/// the pause points above, the fault is the process's: one test at a time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_of_the_execution_store_stops_it_until_a_restart() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let targets = [("web".to_owned(), target(&[("file", ran.to_str().unwrap())]))].into();
    let mut h = Harness::start(dir.path(), Setup::new(vec![harness::append_line_pathway()], targets)).await;
    let serving = (ServingStatus::Serving as i32, ServingStatus::Serving as i32);
    assert_eq!(executor_health(&h).await, serving);
    let stopped = || arf_proto::metrics::value(arf_executor::STORE_STOPPED);
    // Shown from the start, not only once it stops (`value` reads an absent series as 0).
    assert!(arf_proto::metrics::render().contains(&format!("\n{} 0\n", arf_executor::STORE_STOPPED)), "{}", arf_proto::metrics::render());

    let body = h.body("append_line", "web", json!({}));
    let signed = h.decide(&body).await;
    arf_core::crash::pause_next("executor.store_sync_fails", Duration::from_millis(1));
    let status = h.execute(signed.clone()).await.unwrap_err();
    assert!(status.message().contains("restart the executor"), "{}", status.message());
    let deadline = Instant::now() + Duration::from_secs(10);
    while executor_health(&h).await != (ServingStatus::NotServing as i32, ServingStatus::NotServing as i32) {
        assert!(Instant::now() < deadline, "health never said NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stopped(), 1.0, "the gauge says the store stopped");
    let other = h.body("append_line", "web", json!({}));
    let refused = h.execute(h.decide(&other).await).await.unwrap_err();
    assert!(refused.message().contains("restart the executor"), "{}", refused.message());
    assert!(!ran.exists(), "nothing ran");
    assert!(!h.kinds(&body.incident_id).await.contains(&"execution_started"));

    // A restart reads what the disk holds: the claim is given back (nothing was
    // logged as started), and the decision runs once.
    h.restart_executor().await;
    assert_eq!(executor_health(&h).await, serving);
    assert_eq!(stopped(), 0.0, "a restarted executor's store works");
    let execution = h.execute(signed).await.unwrap();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);
    assert_eq!(std::fs::read_to_string(&ran).unwrap().lines().collect::<Vec<_>>(), [body.decision_id.as_str()]);
}
