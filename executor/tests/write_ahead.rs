//! The start is logged only if the governor has appended nothing to the incident
//! since the executor last read its trail, judged in the log's own order. A
//! withdrawal that lands between that read and the start is read before the start
//! and refuses it: the log never shows a start after a withdrawal. Anything else
//! the governor logs there in between means reading again, and then starting.
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
use harness::{Harness, Setup, gated_pathway, start_gate, target};

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
    let deadline = Instant::now() + Duration::from_secs(20);
    while arf_core::crash::pending(POINT) {
        assert!(Instant::now() < deadline, "the executor never came to log the start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
