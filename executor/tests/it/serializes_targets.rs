//! Two actions never touch the same target at once, and `max_concurrent` bounds
//! actions across targets; different targets do run side by side when slots allow;
//! and a decision that expires while it waits in line does not run.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tonic::Code;

use arf_core::target::Inventory;

use crate::harness::{Harness, Setup, command, command_probe, gated_pathway, path_str, pathway, start_gate, target};

/// Each action writes `start`, waits a little, and writes `end` to a shared log.
fn start_end() -> arf_core::catalog::Pathway {
    let script = "echo \"start $2\" >> \"$1\"; sleep 0.3; echo \"end $2\" >> \"$1\"";
    pathway(
        "start_end",
        vec![command(&["sh", "-c", script, "sh", "{{target.log}}", "{{target.name}}"])],
        vec![command_probe("ok", &["true"])],
        vec![command(&["true"])],
    )
}

/// Each action announces itself and waits (up to 5 s) for its peer's action to
/// start; it succeeds only if the two ran at the same time.
fn rendezvous() -> arf_core::catalog::Pathway {
    let script = "touch \"$1/$2\"; i=0; while [ ! -e \"$1/$3\" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; test -e \"$1/$3\"";
    pathway(
        "rendezvous",
        vec![command(&["sh", "-c", script, "sh", "{{target.dir}}", "{{target.name}}", "{{target.peer}}"])],
        vec![command_probe("ok", &["true"])],
        vec![command(&["true"])],
    )
}

async fn run_pair(h: &Harness, pathway: &str, targets: [&str; 2]) -> [String; 2] {
    let bodies = targets.map(|t| h.body(pathway, t, json!({})));
    let (a, b) = tokio::join!(h.decide(&bodies[0]), h.decide(&bodies[1]));
    let (a, b) = tokio::join!(h.execute(a), h.execute(b));
    [a.unwrap().outcome, b.unwrap().outcome]
}

fn inventory(dir: &std::path::Path) -> Inventory {
    let log = dir.join("log");
    let facts = |peer: &str| target(&[("log", path_str(&log)), ("dir", path_str(dir)), ("peer", peer)]);
    [("a".to_owned(), facts("b")), ("b".to_owned(), facts("a"))].into()
}

fn log_lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_serialized_per_target_and_bounded_overall() {
    // (max_concurrent, the two targets)
    let cases = [(4, ["a", "a"]), (1, ["a", "b"])];
    for (max_concurrent, targets) in cases {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { max_concurrent, ..Setup::new(vec![start_end()], inventory(dir.path())) };
        let h = Harness::start(dir.path(), setup).await;
        assert_eq!(run_pair(&h, "start_end", targets).await, ["verified", "verified"]);
        assert_eq!(
            log_lines(dir.path()),
            ["start", "end", "start", "end"],
            "{max_concurrent} {targets:?}: the actions overlapped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_targets_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), Setup::new(vec![rendezvous()], inventory(dir.path()))).await;
    assert_eq!(run_pair(&h, "rendezvous", ["a", "b"]).await, ["verified", "verified"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_expires_while_queued_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, mut entered) = mpsc::channel(4);
    let (gate, url) = start_gate(entered_tx).await;
    let targets = [("web".to_owned(), target(&[("url", url.as_str())]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![gated_pathway()], targets)).await;

    // The first decision holds the target until the gate opens.
    let first = h.decide(&h.body("gated", "web", json!({}))).await;
    let executor = h.executor.clone();
    let first_call = tokio::spawn(async move { executor.clone().execute(first).await });
    entered.recv().await.unwrap();

    // The second is valid when it arrives, and queues behind the first.
    let mut body = h.body("gated", "web", json!({}));
    body.expires_at_ms = arf_core::time::now_ms() + 500;
    let second = h.decide(&body).await;
    let executor = h.executor.clone();
    let second_call = tokio::spawn(async move { executor.clone().execute(second).await });
    while h.get_execution(&body.decision_id).await.is_err() {
        tokio::task::yield_now().await;
    }
    let queued = h.get_execution(&body.decision_id).await.unwrap();
    assert_eq!(queued.outcome, "running");
    assert!(queued.detail.contains("waiting for the target"), "{}", queued.detail);

    // The clock passing the expiry is the behaviour under test, not a readiness wait.
    let expires_in = u64::try_from(body.expires_at_ms - arf_core::time::now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(expires_in + 1)).await;
    gate.release.notify_one();

    assert_eq!(first_call.await.unwrap().unwrap().into_inner().outcome, "verified");
    let status = second_call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
    assert!(
        status.message().contains("expired at") && status.message().contains("while it waited for its target"),
        "{}",
        status.message()
    );
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.kinds(&body.incident_id).await, vec!["decision"]);
    assert_eq!(h.get_execution(&body.decision_id).await.unwrap_err().code(), Code::NotFound);
}
