//! Governor replicas on PostgreSQL: a standby keeps a state snapshot of its own
//! as the leader saves one (it folds the log through the leader's snapshot and
//! keeps the file only if it hashes to what the leader logged), so that taking the
//! lead folds only the log after it, not the whole log.
//!
//! In a file of its own: it reads the process's recovery metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod common;

use std::time::Duration;

use arf_audit_client::RecordKind;
use arf_core::records::GovernanceEvent;
use common::{Harness, Setup, proposal};

#[tokio::test]
async fn a_standby_keeps_the_leaders_snapshot_and_takes_the_lead_from_it() {
    let server = arf_pg::testing::TestServer::start().await.unwrap();
    let postgres = server.database().await.unwrap();
    arf_pg::migrate(&mut postgres.connect().await.unwrap()).await.unwrap();
    let mut h = Harness::start(Setup { postgres: Some(postgres), ..Setup::default() }).await;
    h.config.snapshot_every_records = 3;
    h.config.snapshot_check_secs = 1;
    h.fail_over_to("governor-a").await;
    let standby = h.start_standby("governor-b").await;
    let mut pending = Vec::new();
    for i in 0..3 {
        let decided = h.evaluate(proposal(&format!("inc-sb{i}"), "restart_service", "web-prod", 0.9)).await.unwrap();
        assert_eq!(decided.state, "pending");
        pending.push(decided.decision_id);
    }

    // The leader logs its snapshot; the standby keeps one of the same hash, vouched for by that record.
    let standby_dir = h.dir.path().join("governor-b");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (recorded_seq, hash, through_seq) = loop {
        let logged = h.records(arf_core::records::GOVERNOR_STATE_SNAPSHOT, RecordKind::Decision).await;
        let latest = logged.iter().rev().find_map(|r| match r.parse::<GovernanceEvent>() {
            Ok(GovernanceEvent::StateSnapshot { hash, through_seq }) => Some((r.seq, hash, through_seq)),
            _ => None,
        });
        let kept = arf_governor::snapshot::read(&standby_dir).unwrap();
        if let (Some(latest), Some(kept)) = (latest.clone(), kept)
            && kept.recorded_seq == latest.0
        {
            assert_eq!(kept.hash, latest.1, "the standby's file is the state the leader logged");
            assert_eq!(kept.saved.through_seq, latest.2, "folded through the same record");
            break latest;
        }
        assert!(tokio::time::Instant::now() < deadline, "the standby kept no snapshot of the leader's: latest logged {latest:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(through_seq < recorded_seq, "{through_seq} {recorded_seq} {hash}");

    // One more decision after it; then the leader stops and the standby leads.
    let after = h.evaluate(proposal("inc-sb-after", "restart_service", "web-prod", 0.9)).await.unwrap();
    pending.push(after.decision_id);
    h.hand_over_to(standby).await;
    let (head, _) = h.audit.head().await.unwrap();
    assert!(arf_proto::metrics::value("arf_governor_recovery_from_seq") > 1.0, "the new leader started from its snapshot, not from record 1");
    assert!(arf_proto::metrics::value("arf_governor_recovery_folded_records") < head as f64, "and folded only the log after it");
    let mut waiting: Vec<String> = h.pending("alice").await.unwrap().into_iter().map(|d| d.decision_id).collect();
    waiting.sort();
    pending.sort();
    assert_eq!(waiting, pending, "every pending decision, before the snapshot and after it, is the new leader's");
    h.approve("alice", &pending[0]).await.unwrap();
}
