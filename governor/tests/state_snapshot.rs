//! A restart starts from the governor's state snapshot when the log vouches for
//! it, and reads only the log after it; a snapshot changed on disk, forged with a
//! matching hash but no record of the governor's in the log, or folded under other
//! settings, is refused, loudly, and the whole log is folded instead. The
//! decisions, and what the guard rails read from the log, are the same either way,
//! and a decision made before the snapshot can still be approved after it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod common;

use std::time::Duration;

use arf_proto::v1 as pb;
use common::{Harness, Setup, proposal, route};

/// What the governor says of each decision, and of autonomy, once it has rebuilt
/// its decisions after a restart.
async fn states(h: &Harness, ids: &[(String, String)]) -> (Vec<pb::Decision>, Vec<String>, bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut decisions = Vec::new();
    for (incident_id, decision_id) in ids {
        let decision = loop {
            match h.get("alice", decision_id).await {
                Ok(found) => break found,
                Err(status) => {
                    assert!(matches!(status.code(), tonic::Code::NotFound | tonic::Code::Unavailable), "{status:?}");
                    assert!(tokio::time::Instant::now() < deadline, "decision {decision_id} was not restored");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        assert_eq!(h.decisions("alice", incident_id).await.unwrap(), vec![decision.clone()], "{incident_id}");
        decisions.push(decision);
    }
    let mut pending: Vec<String> = h.pending("alice").await.unwrap().into_iter().map(|d| d.decision_id).collect();
    pending.sort();
    (decisions, pending, h.autonomy("alice").await.unwrap().enabled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_starts_from_a_state_snapshot_the_log_vouches_for() {
    let mut h = Harness::start(Setup::default()).await;
    let dir = h.config.data_dir.clone();
    let mut ids = Vec::new();
    // One autonomous decision (authorized; its dispatch fails, the executor is a closed port),
    // one rejected, one pending, then the kill switch off.
    let autonomous = h.evaluate(proposal("inc-s0", "restart_service", "web-staging", 0.95)).await.unwrap();
    assert_eq!(route(&autonomous), pb::Route::Autonomous);
    ids.push(("inc-s0".to_owned(), autonomous.decision_id));
    let rejected = h.evaluate(proposal("inc-s1", "restart_service", "web-prod", 0.9)).await.unwrap();
    h.reject("bob", &rejected.decision_id, "not during the sale").await.unwrap();
    ids.push(("inc-s1".to_owned(), rejected.decision_id));
    let pending = h.evaluate(proposal("inc-s2", "restart_service", "web-prod", 0.9)).await.unwrap();
    assert_eq!(route(&pending), pb::Route::Approval);
    ids.push(("inc-s2".to_owned(), pending.decision_id.clone()));
    h.set_autonomy("alice", false, "a bad night").await.unwrap();

    // Snapshots on, at a few records.
    h.config.snapshot_every_records = 3;
    h.config.snapshot_check_secs = 1;
    h.restart_governor().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while arf_governor::snapshot::read(&dir).unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no state snapshot was saved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // After a restart, no new snapshot while the test looks at this one.
    h.config.snapshot_check_secs = 3600;
    // One more decision after it, for the restart to fold from the log.
    let after = h.evaluate(proposal("inc-s3", "restart_service", "web-prod", 0.9)).await.unwrap();
    ids.push(("inc-s3".to_owned(), after.decision_id));
    let before = states(&h, &ids).await;
    assert_eq!(before.1.len(), 2, "two decisions wait for a person: {before:?}");
    assert!(!before.2, "autonomy is off");

    h.restart_governor().await;
    let restarted = states(&h, &ids).await;
    let snapshot = arf_governor::snapshot::read(&dir).unwrap().unwrap();
    assert!(snapshot.saved.state.decisions.contains_key(&pending.decision_id), "the snapshot holds the decision made before it");
    assert_eq!(arf_proto::metrics::value("arf_governor_recovery_from_seq"), (snapshot.saved.through_seq + 1) as f64, "the restart started after the snapshot");
    let (head, _) = h.audit.head().await.unwrap();
    assert!(arf_proto::metrics::value("arf_governor_recovery_folded_records") < head as f64, "it folded only the log after the snapshot");
    assert_eq!(restarted, before, "the same decisions and autonomy, from the snapshot and the log after it");

    // Someone changes the file: it no longer matches its hash, and is refused.
    let refused = arf_proto::metrics::value("arf_governor_state_snapshots_refused_total");
    let path = arf_governor::snapshot::path(&dir);
    let genuine = std::fs::read_to_string(&path).unwrap();
    assert!(genuine.contains("\"state\":\"pending\""), "{genuine}");
    std::fs::write(&path, genuine.replacen("\"state\":\"pending\"", "\"state\":\"rejected\"", 1)).unwrap();
    h.restart_governor().await;
    assert_eq!(states(&h, &ids).await, before, "rebuilt from the whole log");
    assert_eq!(arf_proto::metrics::value("arf_governor_recovery_from_seq"), 1.0);
    assert_eq!(arf_proto::metrics::value("arf_governor_state_snapshots_refused_total"), refused + 1.0);

    // Someone forges one with a matching hash: the log holds no record of it. Its
    // record number names another of the governor's records.
    let mut forged = snapshot.clone();
    forged.saved.state.decisions.get_mut(&pending.decision_id).unwrap().state = arf_governor::decision::State::Rejected;
    forged.saved.state.autonomy = None;
    arf_governor::snapshot::write(&dir, &forged).unwrap();
    let written = arf_governor::snapshot::read(&dir).unwrap().unwrap();
    assert_ne!(written.hash, snapshot.hash, "the forged state has a hash of its own, which the file matches");
    h.restart_governor().await;
    assert_eq!(states(&h, &ids).await, before, "rebuilt from the whole log");
    assert_eq!(arf_proto::metrics::value("arf_governor_recovery_from_seq"), 1.0);
    assert_eq!(arf_proto::metrics::value("arf_governor_state_snapshots_refused_total"), refused + 2.0);

    // The genuine file, under another retention than it was folded with (which
    // would have let other decisions go): not the state a whole fold gives now.
    std::fs::write(&path, &genuine).unwrap();
    let retain = h.config.retain_decisions_secs;
    h.config.retain_decisions_secs = retain / 2;
    h.restart_governor().await;
    assert_eq!(states(&h, &ids).await, before);
    assert_eq!(arf_proto::metrics::value("arf_governor_recovery_from_seq"), 1.0);
    assert_eq!(arf_proto::metrics::value("arf_governor_state_snapshots_refused_total"), refused + 3.0);

    // And under the same settings again, it is used; the decision made before it
    // is approved after it.
    h.config.retain_decisions_secs = retain;
    h.restart_governor().await;
    assert_eq!(states(&h, &ids).await, before);
    assert_eq!(arf_proto::metrics::value("arf_governor_recovery_from_seq"), (snapshot.saved.through_seq + 1) as f64, "the genuine snapshot is used again");
    let approved = h.approve("alice", &pending.decision_id).await.unwrap();
    assert_ne!(approved.state, "pending", "{approved:?}");
}
