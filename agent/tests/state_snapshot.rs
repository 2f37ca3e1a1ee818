//! A restart starts from the agent's state snapshot when the log vouches for it,
//! and reads only the log after it; a snapshot changed on disk, or forged with a
//! matching hash but no record of the agent's in the log, is refused, loudly, and
//! the whole log is folded instead. The incidents are the same either way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::time::Duration;

use arf_agent::config::Config;
use arf_proto::v1 as pb;

async fn states(agent: &str, ids: &[String]) -> Vec<(String, String, u32)> {
    let mut client = support::agent_client(agent).await;
    let mut states = Vec::new();
    for id in ids {
        let incident = client.get_incident(pb::GetIncidentRequest { incident_id: id.clone() }).await.unwrap().into_inner();
        states.push((incident.title, incident.state, incident.signal_count));
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_starts_from_a_state_snapshot_the_log_vouches_for() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_path_buf();
    let snapshotting = {
        let dir = dir.clone();
        move |config: &mut Config| {
            config.state_dir = Some(dir.clone());
            config.snapshot_every_records = 5;
            config.snapshot_check_secs = 1;
        }
    };
    // After a restart, no new snapshot while the test looks at this one.
    let quiet = {
        let dir = dir.clone();
        move |config: &mut Config| {
            config.state_dir = Some(dir.clone());
            config.snapshot_check_secs = 3600;
        }
    };
    let mut running = support::start(&snapshotting).await;
    let _ = support::agent_client(&running.agent).await;
    let mut ids = Vec::new();
    for (alert, environment) in [("CheckoutHighErrorRate", "staging"), ("CheckoutLatency", "staging"), ("CheckoutDown", "production")] {
        let id = support::fire(&running.webhook, alert, environment, "checkout is failing").await;
        support::wait_for_state(&running.audit, &id, &["escalated", "proposed"]).await;
        ids.push(id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while arf_agent::snapshot::read(&dir).unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no state snapshot was saved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One more incident after it, for the restart to fold from the log.
    let after = support::fire(&running.webhook, "CheckoutErrors", "staging", "more errors").await;
    support::wait_for_state(&running.audit, &after, &["escalated", "proposed"]).await;
    ids.push(after);
    let before = states(&running.agent, &ids).await;

    running.restart_agent(&quiet).await;
    let restarted = states(&running.agent, &ids).await;
    let snapshot = arf_agent::snapshot::read(&dir).unwrap().unwrap();
    assert_eq!(arf_proto::metrics::value("arf_agent_recovery_from_seq"), (snapshot.saved.through_seq + 1) as f64, "the restart started after the snapshot");
    let (head, _) = running.audit.head().await.unwrap();
    assert!(arf_proto::metrics::value("arf_agent_recovery_folded_records") < head as f64, "it folded only the log after the snapshot");
    assert_eq!(restarted, before, "the same incidents, from the snapshot and the log after it");

    // Someone changes the file: it no longer matches its hash, and is refused.
    let refused = arf_proto::metrics::value("arf_agent_state_snapshots_refused_total");
    let text = std::fs::read_to_string(arf_agent::snapshot::path(&dir)).unwrap();
    let genuine = text.clone();
    std::fs::write(arf_agent::snapshot::path(&dir), text.replacen("\"state\":\"escalated\"", "\"state\":\"resolved\"", 1)).unwrap();
    running.restart_agent(&quiet).await;
    assert_eq!(states(&running.agent, &ids).await, before, "rebuilt from the whole log");
    assert_eq!(arf_proto::metrics::value("arf_agent_recovery_from_seq"), 1.0);
    assert_eq!(arf_proto::metrics::value("arf_agent_state_snapshots_refused_total"), refused + 1.0);

    // Someone forges one with a matching hash: the log holds no record of it.
    let mut forged = snapshot.clone();
    forged.saved.incidents.incidents[0].state = arf_agent::incident::IncidentState::Resolved;
    forged.hash = forged.saved.hash();
    arf_agent::snapshot::write(&dir, &forged).unwrap();
    running.restart_agent(&quiet).await;
    assert_eq!(states(&running.agent, &ids).await, before, "rebuilt from the whole log");
    assert_eq!(arf_proto::metrics::value("arf_agent_recovery_from_seq"), 1.0);
    assert_eq!(arf_proto::metrics::value("arf_agent_state_snapshots_refused_total"), refused + 2.0);

    // The genuine file, under other settings than it was folded with (a shorter
    // retention would have evicted differently): not the state a whole fold gives now.
    std::fs::write(arf_agent::snapshot::path(&dir), &genuine).unwrap();
    let dir_again = dir.clone();
    running
        .restart_agent(move |config: &mut Config| {
            config.state_dir = Some(dir_again.clone());
            config.snapshot_check_secs = 3600;
            config.retain_incidents_secs = 1800;
        })
        .await;
    assert_eq!(states(&running.agent, &ids).await, before);
    assert_eq!(arf_proto::metrics::value("arf_agent_recovery_from_seq"), 1.0);
    assert_eq!(arf_proto::metrics::value("arf_agent_state_snapshots_refused_total"), refused + 3.0);
    // And under the same settings again, it is used.
    running.restart_agent(&quiet).await;
    assert_eq!(states(&running.agent, &ids).await, before);
    assert!(arf_proto::metrics::value("arf_agent_recovery_from_seq") > 1.0, "the genuine snapshot is used again");
}
