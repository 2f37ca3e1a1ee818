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
    let cases = [(Audit::Unreachable, "cannot check decision")];
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

/// A decision for a target whose earlier execution an outage cut off settles that
/// execution first, under the target's lock: it never acts on a target in an
/// unknown state, and the earlier execution's rollback can never undo its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_decision_settles_the_cut_off_execution_on_its_target_before_acting() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, mut entered) = mpsc::channel(4);
    let (gate, url) = start_gate(entered_tx).await;
    let marker = dir.path().join("marker");
    let targets = [("web".to_owned(), target(&[("url", url.as_str()), ("marker", path_str(&marker))]))].into();
    let mut h = Harness::start(dir.path(), Setup::new(vec![gated_pathway(), touch_marker()], targets)).await;

    let first = h.body("gated", "web", json!({}));
    let signed = h.decide(&first).await;
    let executor = h.executor.clone();
    let call = tokio::spawn(async move { executor.clone().execute(signed).await });
    entered.recv().await.unwrap();
    h.stop_audit().await;
    gate.release.notify_one();
    assert_eq!(call.await.unwrap().unwrap_err().code(), Code::Unavailable);

    // The log is back; the next decision on the target arrives before the settler's round.
    h.start_audit().await;
    let second = h.body("touch_marker", "web", json!({}));
    let execution = h.execute(h.decide(&second).await).await.unwrap();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);

    let first_outcome = h.wait_for_kind(&first.incident_id, "outcome").await;
    assert_eq!(first_outcome.payload["recovered"], true);
    let second_started = h.trail(&second.incident_id).await.into_iter().find(|r| r.kind.as_str() == "execution_started").unwrap();
    assert!(
        first_outcome.seq < second_started.seq,
        "the second decision acted (seq {}) before the first was settled (seq {})",
        second_started.seq,
        first_outcome.seq
    );
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
}

/// The executor reads its own records back after a crash, by writer name; a token
/// the log does not know, or knows by another name, would make that silently find
/// nothing. So the executor refuses to start, saying what to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_the_log_does_not_know_as_executor_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let targets = [("web".to_owned(), target(&[("marker", "unused")]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![touch_marker()], targets)).await;
    // The governor's token is a writer's, under the name `governor`; a fresh one is nobody's.
    let stranger = dir.path().join("stranger.token");
    arf_core::keys::load_or_generate_token(&stranger).unwrap();
    for (token, expected) in [
        (dir.path().join("governor.token"), "the audit log knows this executor as `governor`"),
        (stranger, "belongs to no identity the audit log knows"),
    ] {
        let mut config = h.executor_config().clone();
        config.audit_token_file = token;
        let data = tempfile::tempdir().unwrap();
        config.data_dir = data.path().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let served = tokio::time::timeout(std::time::Duration::from_secs(30), arf_executor::serve(config, listener, std::future::pending()))
            .await
            .expect("the executor started serving");
        let error = format!("{:#}", served.unwrap_err());
        assert!(error.contains(expected), "{error}");
    }
}
