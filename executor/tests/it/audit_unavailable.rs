//! Fail closed: without the audit log nothing runs, and a log lost midway stops the
//! execution where it is, without running it again on retry.

use std::sync::atomic::Ordering;

use serde_json::json;
use tokio::sync::mpsc;
use tonic::Code;

use crate::harness::{
    Audit, Harness, Setup, command, command_probe, gated_pathway, path_str, pathway, start_gate, target,
};

fn touch_marker() -> arf_core::catalog::Pathway {
    pathway(
        "touch_marker",
        vec![command(&["touch", "{{target.marker}}"])],
        vec![command_probe("marker", &["test", "-e", "{{target.marker}}"])],
        vec![command(&["true"])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runs_without_the_log() {
    // (how the log is reached, the expected message fragment)
    let cases = [(Audit::Unreachable, "cannot check decision"), (Audit::ReadOnly, "cannot log the start of decision")];
    for (audit, fragment) in cases {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let targets = [("web".to_owned(), target(&[("marker", path_str(&marker))]))].into();
        let h = Harness::start(dir.path(), Setup { audit, ..Setup::new(vec![touch_marker()], targets) }).await;

        let body = h.body("touch_marker", "web", json!({}));
        let signed = match audit {
            // With no log, the governor could not have logged it either; the
            // executor must still refuse rather than trust the sequence number.
            Audit::Unreachable => crate::harness::to_pb(arf_core::decision::sign(&body, &h.key, 1).unwrap()),
            _ => h.decide(&body).await,
        };
        let status = h.execute(signed).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{audit:?}: {}", status.message());
        assert!(
            status.message().contains(fragment) && status.message().contains("nothing ran"),
            "{audit:?}: {}",
            status.message()
        );
        assert!(!marker.exists(), "{audit:?}: the action ran");
        // Nothing ran, so nothing is claimed: a retry once the log is back may run it.
        assert_eq!(h.get_execution(&body.decision_id).await.unwrap_err().code(), Code::NotFound, "{audit:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_lost_midway_stops_the_execution_until_the_log_returns_and_it_is_settled_once() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, mut entered) = mpsc::channel(4);
    let (gate, url) = start_gate(entered_tx).await;
    let p = gated_pathway();
    let targets = [("web".to_owned(), target(&[("url", url.as_str())]))].into();
    let mut h = Harness::start(dir.path(), Setup::new(vec![p], targets)).await;

    let body = h.body("gated", "web", json!({}));
    let signed = h.decide(&body).await;
    let executor = h.executor.clone();
    let call = tokio::spawn({
        let signed = signed.clone();
        async move { executor.clone().execute(signed).await }
    });

    // The action is running: take the log away, then let the action finish.
    entered.recv().await.unwrap();
    h.stop_audit().await;
    gate.release.notify_one();

    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(status.message().contains("stopped after the action ran"), "{}", status.message());
    assert!(status.message().contains("cannot log `execution_finished`"), "{}", status.message());
    let stored = h.get_execution(&body.decision_id).await.unwrap();
    assert_eq!(stored.outcome, "running");
    assert!(stored.detail.starts_with("interrupted after the action ran"), "{}", stored.detail);

    // The log comes back: the executor settles the execution by itself (it verifies
    // again, and would roll back an unhealthy target), logging its one outcome,
    // without running the action again.
    h.start_audit().await;
    let outcome = h.wait_for_kind(&body.incident_id, "outcome").await;
    assert_eq!(outcome.payload["outcome"], "verified");
    assert_eq!(outcome.payload["recovered"], true);
    let retry = h.execute(signed).await.unwrap();
    assert!(retry.replayed, "a retry answers with the execution, not a second run");
    assert_eq!(retry.outcome, "verified");
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    let kinds = h.kinds(&body.incident_id).await;
    assert_eq!(kinds.iter().filter(|k| **k == "outcome").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "execution_started").count(), 1, "{kinds:?}");
}
