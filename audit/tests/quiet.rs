//! An append on a condition ([`Quiet`]): taken only if another writer appended
//! nothing under the incident after a given record, judged in the log's own order,
//! on either store. Races of a conditional append against the writer it waits on
//! never let both land believing the other absent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::sync::Arc;

use serde_json::json;

use arf_audit::log::Log;
use arf_audit::pg::PgStore;
use arf_audit::store::{Quiet, Store, StoreError};
use arf_audit::{Entry, Record, RecordKind};
use arf_pg::testing::TestServer;

async fn append(log: &Log, writer: &str, incident: &str, quiet: Option<Quiet>) -> Result<Record, StoreError> {
    let entry = Entry::new(incident, RecordKind::Decision, json!({"by": writer}));
    log.append(writer, vec![entry], 1, (None, quiet)).await.map(|mut records| records.remove(0))
}

fn quiet(incident: &str, after_seq: u64) -> Quiet {
    Quiet { incident_id: incident.to_owned(), writer: "governor".to_owned(), after_seq }
}

async fn holds_in_the_logs_order(log: Arc<Log>) {
    let read = append(&log, "governor", "inc-a", None).await.unwrap();
    // Another writer in the incident, and the governor in another incident, break nothing.
    append(&log, "agent", "inc-a", None).await.unwrap();
    append(&log, "governor", "inc-b", None).await.unwrap();
    let started = append(&log, "executor", "inc-a", Some(quiet("inc-a", read.seq))).await.unwrap();
    // The governor speaks in the incident: the same condition now refuses, and nothing is logged.
    let spoke = append(&log, "governor", "inc-a", None).await.unwrap();
    let head = log.head().await.unwrap().0;
    match append(&log, "executor", "inc-a", Some(quiet("inc-a", started.seq))).await {
        Err(StoreError::Spoken(why)) => assert!(why.contains(&format!("record {}", spoke.seq)) && why.contains("`governor`"), "{why}"),
        other => panic!("taken although the governor spoke since: {other:?}"),
    }
    assert_eq!(log.head().await.unwrap().0, head, "nothing of a refused append is logged");
    // Conditioned on the record it spoke last, it is taken.
    let taken = append(&log, "executor", "inc-a", Some(quiet("inc-a", spoke.seq))).await.unwrap();
    // A condition on records the log does not hold was not read from this log.
    match append(&log, "executor", "inc-a", Some(quiet("inc-a", taken.seq + 5))).await {
        Err(StoreError::Invalid(why)) => assert!(why.contains("beyond the log's last record"), "{why}"),
        other => panic!("a condition beyond the head was taken: {other:?}"),
    }

    // Races: a conditional append and one by the writer it waits on, sent at once,
    // land in some order; whichever it is, the condition was judged in it.
    let (mut taken, mut refused) = (0, 0);
    for round in 0..60 {
        let incident = format!("race-{round}");
        let after = log.head().await.unwrap().0;
        let governor = tokio::spawn({
            let (log, incident) = (Arc::clone(&log), incident.clone());
            async move { append(&log, "governor", &incident, None).await }
        });
        let executor = tokio::spawn({
            let (log, incident) = (Arc::clone(&log), incident.clone());
            async move { append(&log, "executor", &incident, Some(quiet(&incident, after))).await }
        });
        let governor = governor.await.unwrap().unwrap();
        match executor.await.unwrap() {
            Ok(started) => {
                taken += 1;
                assert!(started.seq < governor.seq, "round {round}: taken at {} although the governor spoke at {}", started.seq, governor.seq);
            }
            Err(StoreError::Spoken(_)) => refused += 1,
            Err(other) => panic!("round {round}: {other}"),
        }
    }
    assert_eq!(taken + refused, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_append_holds_in_the_logs_order_in_files() {
    let dir = tempfile::tempdir().unwrap();
    holds_in_the_logs_order(Arc::new(Log::File(Store::open(dir.path(), None).unwrap()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_append_holds_in_the_logs_order_on_postgres() {
    let server = TestServer::start().await.unwrap();
    let settings = server.database().await.unwrap();
    arf_pg::migrate(&mut settings.connect().await.unwrap()).await.unwrap();
    holds_in_the_logs_order(Arc::new(Log::Postgres(PgStore::open(&settings, None).await.unwrap()))).await;
}
