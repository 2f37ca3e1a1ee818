//! The executor is a witness of the log: before each action it has the log sign a
//! checkpoint and keeps it, and it refuses to act on a log that cannot prove it
//! extends what it saw, such as one restored from an older copy or cut short.

use serde_json::json;

use crate::harness::{Harness, Setup, append_line_pathway, path_str, target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_refuses_a_log_rolled_back_behind_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let append_line = append_line_pathway();
    let targets = [("web".to_owned(), target(&[("file", path_str(&ran))]))].into();
    let mut h = Harness::start(dir.path(), Setup::new(vec![append_line], targets)).await;

    for _ in 0..2 {
        let signed = h.decide(&h.body("append_line", "web", json!({}))).await;
        let done = h.execute(signed).await.unwrap();
        assert_eq!(done.outcome, "verified", "{}", done.detail);
    }
    // Before the second action it witnessed a checkpoint covering the first one's records.
    let state = dir.path().join("executor").join("witness").join("checkpoint");
    let witnessed: usize = std::fs::read_to_string(&state).unwrap().lines().nth(1).unwrap().parse().unwrap();
    assert!(witnessed >= 5, "the executor's checkpoint covers the first execution ({witnessed} records)");

    // Someone restores the log from a copy taken during the first action (every frame
    // and link of what is left is sound) and removes the log's own checkpoint file.
    h.stop_audit().await;
    let log = dir.path().join("audit").join(arf_audit::store::LOG_FILE);
    let mut records = arf_audit::frame::read_records(&log).unwrap();
    records.truncate(witnessed - 3);
    arf_audit::frame::write_records(&log, &records).unwrap();
    std::fs::remove_file(dir.path().join("audit").join("checkpoint")).unwrap();
    h.start_audit().await;

    let body = h.body("append_line", "web", json!({}));
    let second = h.decide(&body).await;
    let refused = h.execute(second).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("rolled back or truncated"), "{}", refused.message());
    // Marked as a witness's refusal, on which the governor pages someone.
    assert_eq!(refused.metadata().get(arf_proto::server::REFUSAL).map(|v| v.to_str().unwrap()), Some(arf_proto::server::LOG_NOT_WITNESSED));
    let lines = std::fs::read_to_string(&ran).unwrap();
    assert!(!lines.contains(&body.decision_id), "nothing ran on the rolled-back log");
    assert!(h.kinds(&body.incident_id).await.iter().all(|k| *k != "execution_started"));
}

/// Between actions the executor keeps witnessing the log, so an action's own
/// records (its start, verification and outcome) come under a checkpoint it holds
/// without waiting for the next action: cutting them off later, and removing the
/// log's `checkpoint` file with them, is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actions_own_outcome_is_witnessed_without_waiting_for_the_next_action() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let targets = [("web".to_owned(), target(&[("file", path_str(&ran))]))].into();
    let setup = Setup { witness_every_secs: 1, ..Setup::new(vec![append_line_pathway()], targets) };
    let mut h = Harness::start(dir.path(), setup).await;

    let body = h.body("append_line", "web", json!({}));
    let done = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(done.outcome, "verified", "{}", done.detail);
    let trail = h.trail(&body.incident_id).await;
    let outcome = trail.iter().find(|r| r.kind == arf_audit::RecordKind::Outcome).unwrap().seq;

    let state = dir.path().join("executor").join("witness").join("checkpoint");
    let witnessed = || -> u64 { std::fs::read_to_string(&state).map(|s| s.lines().nth(1).unwrap_or("0").parse().unwrap_or(0)).unwrap_or(0) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while witnessed() < outcome {
        assert!(std::time::Instant::now() < deadline, "the executor's checkpoint still covers {} records, not the outcome at {outcome}", witnessed());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The action's records cut off, the log's own checkpoint file with them: the
    // next decision is refused on the executor's checkpoint.
    h.stop_audit().await;
    let log = dir.path().join("audit").join(arf_audit::store::LOG_FILE);
    let mut records = arf_audit::frame::read_records(&log).unwrap();
    records.truncate(usize::try_from(outcome).unwrap() - 1);
    arf_audit::frame::write_records(&log, &records).unwrap();
    std::fs::remove_file(dir.path().join("audit").join("checkpoint")).unwrap();
    h.start_audit().await;
    // (Deciding appends to the cut log, so it reaches the witnessed size again with
    // another history: refused as a fork, or as a rollback had it stayed shorter.)
    let next = h.body("append_line", "web", json!({}));
    let refused = h.execute(h.decide(&next).await).await.unwrap_err();
    assert_eq!(refused.metadata().get(arf_proto::server::REFUSAL).map(|v| v.to_str().unwrap()), Some(arf_proto::server::LOG_NOT_WITNESSED), "{refused:?}");
    assert!(refused.message().contains("two histories") || refused.message().contains("rolled back or truncated"), "{}", refused.message());
    assert!(!std::fs::read_to_string(&ran).unwrap().contains(&next.decision_id), "nothing ran on the cut log");
}
