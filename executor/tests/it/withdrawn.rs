//! A decision the governor withdrew (it logged so, because the guard rails no
//! longer let it start) never starts: not when it arrives after the withdrawal, and
//! not when it was already claimed and waiting for its target. Its claim is given
//! back, so the governor, asking after its withdrawal, hears the executor holds none.

use std::sync::atomic::Ordering;

use serde_json::json;
use tokio::sync::mpsc;
use tonic::Code;

use arf_core::decision::DecisionBody;
use arf_core::records::GovernanceEvent;

use crate::harness::{Harness, Setup, command, gated_pathway, path_str, start_gate, target};

async fn withdraw(body: &DecisionBody, writer: &arf_audit_client::AuditClient) {
    let event = GovernanceEvent::Withdrawn { decision_id: body.decision_id.clone(), reason: "the kill switch is off: ARF misbehaves".to_owned(), at_ms: arf_core::time::now_ms() };
    writer.append_one(&body.incident_id, arf_audit_client::RecordKind::Decision, arf_core::records::encode(&event)).await.unwrap();
}

/// An executor whose one target, `web`, is acted on by a POST to a gate that
/// holds each action until the test releases it.
async fn gated_web(dir: &std::path::Path) -> (Harness, std::sync::Arc<crate::harness::Gate>, mpsc::Receiver<()>) {
    let (entered_tx, entered) = mpsc::channel(4);
    let (gate, url) = start_gate(entered_tx).await;
    let targets = [("web".to_owned(), target(&[("url", url.as_str())]))].into();
    (Harness::start(dir, Setup::new(vec![gated_pathway()], targets)).await, gate, entered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_decision_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (h, gate, mut entered) = gated_web(dir.path()).await;

    // Withdrawn before it arrives: refused, nothing logged as started, no claim kept.
    let early = h.body("gated", "web", json!({}));
    let signed = h.decide(&early).await;
    withdraw(&early, &h.governor).await;
    let status = h.execute(signed).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
    assert!(status.message().contains("the governor withdrew decision") && status.message().contains("nothing ran"), "{}", status.message());
    assert_eq!(h.get_execution(&early.decision_id).await.unwrap_err().code(), Code::NotFound);

    // Claimed and waiting for its target when it is withdrawn: refused once its turn comes.
    let first = h.decide(&h.body("gated", "web", json!({}))).await;
    let executor = h.executor.clone();
    let first_call = tokio::spawn(async move { executor.clone().execute(first).await });
    entered.recv().await.unwrap();
    let queued = h.body("gated", "web", json!({}));
    let signed = h.decide(&queued).await;
    let executor = h.executor.clone();
    let queued_call = tokio::spawn(async move { executor.clone().execute(signed).await });
    while h.get_execution(&queued.decision_id).await.is_err() {
        tokio::task::yield_now().await;
    }
    assert_eq!(h.get_execution(&queued.decision_id).await.unwrap().outcome, "running", "claimed, waiting for the target");
    withdraw(&queued, &h.governor).await;
    gate.release.notify_one();
    assert_eq!(first_call.await.unwrap().unwrap().into_inner().outcome, "verified");
    let status = queued_call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
    assert!(status.message().contains("withdrew"), "{}", status.message());
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1, "only the first decision's action ran");
    assert_eq!(h.get_execution(&queued.decision_id).await.unwrap_err().code(), Code::NotFound, "the claim is given back");
    for body in [&early, &queued] {
        assert!(!h.kinds(&body.incident_id).await.contains(&"execution_started"));
    }
}

/// A decision the governor already settled as never run (it expired while a
/// sending was on its way, say) never starts: a start after it would make the
/// governor's record a lie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_the_governor_settled_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (h, gate, _entered) = gated_web(dir.path()).await;
    let body = h.body("gated", "web", json!({}));
    let signed = h.decide(&body).await;
    let settled = arf_core::records::DecisionStateRecord { decision_id: body.decision_id.clone(), state: "dispatch_failed".to_owned(), detail: "nothing ran".to_owned() };
    h.governor.append_one(&body.incident_id, arf_audit_client::RecordKind::Decision, arf_core::records::encode(&settled)).await.unwrap();
    let Ok(answer) = tokio::time::timeout(std::time::Duration::from_secs(20), h.execute(signed)).await else {
        gate.release.notify_waiters();
        panic!("the action started although the governor had settled the decision (the gate holds it)");
    };
    let status = answer.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
    assert!(status.message().contains("already settled") && status.message().contains("dispatch_failed"), "{}", status.message());
    assert_eq!(gate.calls.load(Ordering::SeqCst), 0, "the action never ran");
    assert!(!h.kinds(&body.incident_id).await.contains(&"execution_started"));
}

/// Only the governor withdraws: the same record appended by another writer (the
/// executor's own token here; the agent, fed hostile input, in life) stops nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_by_another_writer_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (h, gate, mut entered) = gated_web(dir.path()).await;
    let body = h.body("gated", "web", json!({}));
    let signed = h.decide(&body).await;
    withdraw(&body, &h.as_executor).await;
    let executor = h.executor.clone();
    let call = tokio::spawn(async move { executor.clone().execute(signed).await });
    entered.recv().await.unwrap();
    gate.release.notify_one();
    assert_eq!(call.await.unwrap().unwrap().into_inner().outcome, "verified");
}

/// A precheck takes its time (here until the test lets it end): a withdrawal
/// logged meanwhile is read again before the action starts, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_withdrawn_during_its_precheck_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, _entered) = mpsc::channel(4);
    let (gate, url) = start_gate(entered_tx).await;
    let (checking, go) = (dir.path().join("checking"), dir.path().join("go"));
    let mut slow = gated_pathway();
    slow.name = "slow_check".to_owned();
    slow.precheck = vec![command(&["sh", "-c", "touch \"$1\"; i=0; while [ ! -e \"$2\" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done", "sh", path_str(&checking), path_str(&go)])];
    let targets = [("web".to_owned(), target(&[("url", url.as_str())]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![slow], targets)).await;
    let body = h.body("slow_check", "web", json!({}));
    let signed = h.decide(&body).await;
    let executor = h.executor.clone();
    let call = tokio::spawn(async move { executor.clone().execute(signed).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !checking.exists() {
        assert!(std::time::Instant::now() < deadline, "the precheck never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    withdraw(&body, &h.governor).await;
    std::fs::write(&go, "").unwrap();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
    assert!(status.message().contains("withdrew"), "{}", status.message());
    assert_eq!(gate.calls.load(Ordering::SeqCst), 0, "the action never ran");
    assert!(!h.kinds(&body.incident_id).await.contains(&"execution_started"));
    assert_eq!(h.get_execution(&body.decision_id).await.unwrap_err().code(), Code::NotFound, "the claim is given back");
}
