//! The log on a real PostgreSQL server (issue 16): one chain through several
//! front-ends appending at once, the same checks as the file at open, on every
//! read and in `verify`, and the database attacked as its administrator could:
//! a row's record changed, its index columns changed, a row removed from the
//! middle, the tail cut with the head moved back, a record changed under a
//! running front-end, and durability switched off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde_json::json;

use arf_audit::pg::{self, PgStore};
use arf_audit::store::{Signer, StoreError};
use arf_audit::{Entry, RecordKind};
use arf_pg::Settings;
use arf_pg::testing::TestServer;

fn signer() -> Signer {
    Signer { origin: "test-log".to_owned(), key: SigningKey::from_bytes(&[7; 32]), every_records: 1000 }
}

async fn migrated(server: &TestServer) -> Settings {
    let settings = server.database().await.unwrap();
    let mut client = settings.connect().await.unwrap();
    assert_eq!(arf_pg::migrate(&mut client).await.unwrap(), every_migration());
    settings
}

fn every_migration() -> Vec<i32> {
    arf_pg::MIGRATIONS.iter().map(|m| m.version).collect()
}

fn entry(i: usize) -> Entry {
    Entry::new(format!("inc-{}", i % 3), RecordKind::Signal, json!({"i": i}))
}

/// Runs SQL as the database's owner with the append-only triggers off, as an
/// administrator rewriting history would.
async fn tamper(settings: &Settings, sql: &str) {
    let client = settings.connect().await.unwrap();
    client
        .batch_execute(&format!("ALTER TABLE audit_records DISABLE TRIGGER USER; {sql}; ALTER TABLE audit_records ENABLE TRIGGER USER;"))
        .await
        .unwrap();
}

fn damaged_at(result: Result<impl Sized, StoreError>) -> (u64, String) {
    match result {
        Err(StoreError::DamagedDb { seq, reason, .. }) => (seq, reason),
        Err(StoreError::Checkpoint { reason, .. }) => (0, reason),
        Err(other) => panic!("expected damage, got {other}"),
        Ok(_) => panic!("expected damage, the log opened"),
    }
}

#[tokio::test]
async fn appends_survive_a_reopen_and_verify_like_the_file() {
    let server = TestServer::start().await.unwrap();
    let settings = migrated(&server).await;
    let store = PgStore::open(&settings, Some(signer())).await.unwrap();
    for i in 0..10 {
        let records = store.append("agent", vec![entry(i), entry(i + 100)], 1_000 + i as i64).await.unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2 * i as u64 + 1, 2 * i as u64 + 2]);
    }
    let signed = store.checkpoint(5_000).await.unwrap().unwrap();
    assert_eq!(signed.checkpoint.size, 20);
    let (head, hash) = store.head();
    assert_eq!(head, 21, "twenty records and the checkpoint record");
    let incident = store.incident_seqs("inc-1").await.unwrap();
    assert!(!incident.is_empty() && incident.iter().all(|s| *s <= 20));
    let read = store.records(&incident).await.unwrap();
    assert!(read.iter().all(|r| r.incident_id == "inc-1"));
    assert!(matches!(store.append("audit", vec![entry(0)], 0).await, Err(StoreError::Invalid(_))));
    drop(store);

    let again = PgStore::open(&settings, Some(signer())).await.unwrap();
    assert_eq!(again.head(), (21, hash.clone()));
    assert_eq!(again.latest_checkpoint().unwrap().checkpoint.size, 20);
    let next = again.append("governor", vec![entry(7)], 9_000).await.unwrap();
    assert_eq!(next[0].seq, 22);
    let verified = pg::verify(&settings, Some(&signer().verifier())).await.unwrap();
    assert_eq!((verified.records, verified.checkpoints), (22, 1));
    assert_eq!(verified.latest_checkpoint.unwrap().size, 20);
}

#[tokio::test]
async fn two_front_ends_appending_at_once_make_one_chain() {
    let server = TestServer::start().await.unwrap();
    let settings = migrated(&server).await;
    let a = Arc::new(PgStore::open(&settings, Some(signer())).await.unwrap());
    let b = Arc::new(PgStore::open(&settings, Some(signer())).await.unwrap());
    let mut following = a.subscribe();
    let mut tasks = Vec::new();
    for caller in 0..16 {
        let store = Arc::clone(if caller % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let records = store.append(&format!("writer-{caller}"), vec![entry(i), entry(i + 1)], i as i64).await.unwrap();
                assert_eq!(records[1].seq, records[0].seq + 1, "an append's records are consecutive");
                seqs.extend(records.iter().map(|r| r.seq));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=800).collect::<Vec<u64>>(), "every record numbered once, none skipped");
    // Each front-end takes the other's records (notified, or at the next poll).
    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    assert_eq!(a.head(), b.head());
    assert_eq!(a.root(800).unwrap(), b.root(800).unwrap());
    // A follower of one front-end sees every record, the other's included, in order.
    let mut seen = Vec::new();
    while seen.len() < 800 {
        let record = tokio::time::timeout(Duration::from_secs(10), following.recv()).await.unwrap().unwrap();
        seen.push(record.seq);
    }
    assert_eq!(seen, (1..=800).collect::<Vec<u64>>());
    // Both sign, only one checkpoint per size.
    let (ca, cb) = tokio::join!(a.checkpoint(1), b.checkpoint(2));
    let (ca, cb) = (ca.unwrap().unwrap(), cb.unwrap().unwrap());
    assert_eq!(ca, cb, "two front-ends signed different checkpoints");
    let verified = pg::verify(&settings, Some(&signer().verifier())).await.unwrap();
    assert_eq!((verified.records, verified.checkpoints), (801, 1));
}

/// A database client that is not an audit front-end (any ARF role that shares the
/// database's login, a compromised agent's, say) inserts a record that chains
/// perfectly, under the governor's name, and moves the head to it. It lacks the
/// log's key, so it cannot seal the new head: the running front-end stops rather
/// than append on it, a new one does not open, and `verify` fails, at that record.
#[tokio::test]
async fn a_record_a_database_client_inserts_is_refused_however_well_it_chains() {
    let server = TestServer::start().await.unwrap();
    let settings = migrated(&server).await;
    let store = PgStore::open(&settings, Some(signer())).await.unwrap();
    for i in 0..3 {
        store.append("agent", vec![entry(i)], i as i64).await.unwrap();
    }
    let (seq, hash) = store.head();
    let mut following = store.subscribe();
    let forged = arf_audit::Record::seal(
        seq,
        &hash,
        99,
        "governor",
        Entry::new("governance", RecordKind::Decision, json!({"event": "autonomy_switched", "enabled": true, "identity": "admin"})),
    );
    let body = serde_json::to_vec(&forged).unwrap();
    let client = settings.connect().await.unwrap();
    client
        .execute(
            "INSERT INTO audit_records (seq, incident_id, writer, kind, body) VALUES ($1, $2, $3, $4, $5)",
            &[&(forged.seq as i64), &forged.incident_id, &forged.writer, &forged.kind.as_str(), &body],
        )
        .await
        .unwrap();
    client.execute("UPDATE audit_head SET seq = $1, hash = $2", &[&(forged.seq as i64), &forged.hash]).await.unwrap();

    let refused = store.append("agent", vec![entry(9)], 9).await;
    assert!(matches!(refused, Err(StoreError::Failed(_))), "{refused:?}");
    assert!(store.failure().is_some_and(|f| f.contains("the head row's seal does not match record 4")), "{:?}", store.failure());
    // The forged record was never taken: not served, not sent to followers.
    let served = store.records(&[4]).await;
    assert!(matches!(&served, Err(StoreError::DamagedDb { seq: 4, .. })), "{served:?}");
    assert!(following.try_recv().is_err(), "a follower was sent the forged record");
    drop(store);
    let verifier = signer().verifier();
    let (at, reason) = damaged_at(PgStore::open(&settings, Some(signer())).await.map(drop));
    assert_eq!(at, 4, "{reason}");
    assert_eq!(damaged_at(pg::verify(&settings, Some(&verifier)).await.map(drop)).0, 4);
    // Nor does a head without any seal pass: only a checkpoint record may be one.
    client.execute("UPDATE audit_head SET seal = NULL", &[]).await.unwrap();
    let (at, reason) = damaged_at(PgStore::open(&settings, Some(signer())).await.map(drop));
    assert_eq!(at, 4);
    assert!(reason.contains("carries no seal of the log's key"), "{reason}");
    // Nothing the forger wrote was ever appended on: the log still ends at it.
    assert_eq!(client.query_one("SELECT max(seq) FROM audit_records", &[]).await.unwrap().get::<_, Option<i64>>(0), Some(4));
}

/// A log written before head seals (its head row's seal NULL) opens when its head
/// is a signed checkpoint record, as a clean stop leaves it.
#[tokio::test]
async fn a_log_from_before_head_seals_opens_when_a_checkpoint_is_its_head() {
    let server = TestServer::start().await.unwrap();
    let settings = migrated(&server).await;
    {
        let store = PgStore::open(&settings, Some(signer())).await.unwrap();
        for i in 0..3 {
            store.append("agent", vec![entry(i)], i as i64).await.unwrap();
        }
        assert_eq!(store.checkpoint(10).await.unwrap().unwrap().checkpoint.size, 3);
    }
    let client = settings.connect().await.unwrap();
    client.execute("UPDATE audit_head SET seal = NULL", &[]).await.unwrap();
    let store = PgStore::open(&settings, Some(signer())).await.unwrap();
    store.append("agent", vec![entry(4)], 11).await.unwrap();
    drop(store);
    let verified = pg::verify(&settings, Some(&signer().verifier())).await.unwrap();
    assert_eq!(verified.records, 5);
}

#[tokio::test]
async fn the_table_refuses_updates_deletes_and_truncation() {
    let server = TestServer::start().await.unwrap();
    let settings = migrated(&server).await;
    let store = PgStore::open(&settings, None).await.unwrap();
    store.append("agent", vec![entry(1)], 1).await.unwrap();
    let client = settings.connect().await.unwrap();
    for sql in ["UPDATE audit_records SET writer = 'governor'", "DELETE FROM audit_records", "TRUNCATE audit_records"] {
        let error = client.batch_execute(sql).await.unwrap_err();
        let message = format!("{error:?}");
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
}

#[tokio::test]
async fn a_rewritten_database_does_not_open_and_does_not_verify() {
    let server = TestServer::start().await.unwrap();
    let verifier = signer().verifier();
    let cases: [(&str, &str, u64); 6] = [
        (
            "a record's payload changed",
            "UPDATE audit_records SET body = convert_to(replace(convert_from(body, 'UTF8'), '\"i\":4', '\"i\":5'), 'UTF8') WHERE seq = 5",
            5,
        ),
        ("a record's incident column changed, hiding it from its incident", "UPDATE audit_records SET incident_id = 'inc-x' WHERE seq = 3", 3),
        ("a record removed from the middle", "DELETE FROM audit_records WHERE seq = 4", 4),
        ("the head moved without its records", "UPDATE audit_head SET seq = 12", 12),
        // The head's seal names record 11 (the checkpoint), so moving the head back
        // is caught there, before the signed checkpoint row is.
        (
            "the tail cut and the head moved back to match",
            "DELETE FROM audit_records WHERE seq > 6; UPDATE audit_head SET seq = 6, hash = (SELECT convert_from(body, 'UTF8')::json->>'hash' FROM audit_records WHERE seq = 6)",
            6,
        ),
        (
            "the tail cut and the head moved back to match, its seal removed",
            "DELETE FROM audit_records WHERE seq > 6; UPDATE audit_head SET seq = 6, seal = NULL, hash = (SELECT convert_from(body, 'UTF8')::json->>'hash' FROM audit_records WHERE seq = 6)",
            6,
        ),
    ];
    for (what, sql, seq) in cases {
        let settings = migrated(&server).await;
        {
            let store = PgStore::open(&settings, Some(signer())).await.unwrap();
            for i in 0..10 {
                store.append("agent", vec![entry(i)], i as i64).await.unwrap();
            }
            assert_eq!(store.checkpoint(100).await.unwrap().unwrap().checkpoint.size, 10);
        }
        tamper(&settings, sql).await;
        let (at, reason) = damaged_at(PgStore::open(&settings, Some(signer())).await.map(drop));
        assert_eq!(at, seq, "{what}: {reason}");
        let (at_verify, _) = damaged_at(pg::verify(&settings, Some(&verifier)).await.map(drop));
        assert_eq!(at_verify, seq, "{what}: verify");
    }
}

#[tokio::test]
async fn a_record_changed_under_a_running_front_end_is_not_served() {
    let server = TestServer::start().await.unwrap();
    let settings = migrated(&server).await;
    let store = PgStore::open(&settings, None).await.unwrap();
    for i in 0..5 {
        store.append("agent", vec![entry(i)], i as i64).await.unwrap();
    }
    tamper(&settings, "UPDATE audit_records SET body = convert_to(replace(convert_from(body, 'UTF8'), '\"agent\"', '\"exec\"'), 'UTF8') WHERE seq = 2").await;
    match store.records(&[1, 2, 3]).await {
        Err(StoreError::Corrupt { seq: 2, .. }) => {}
        other => panic!("expected record 2 refused, got {other:?}"),
    }
    // Damage found stops the log: no append is taken on top of it.
    assert!(store.failure().is_some_and(|reason| reason.contains("record 2 no longer reads as it was verified")), "{:?}", store.failure());
    let refused = store.append("agent", vec![entry(9)], 9).await;
    assert!(matches!(refused, Err(StoreError::Failed(_))), "{refused:?}");
    tamper(&settings, "DELETE FROM audit_records WHERE seq = 4").await;
    assert!(matches!(store.records(&[4]).await, Err(StoreError::Corrupt { seq: 4, .. })));
    // An index column changed to hide a record from its incident's trail: the trail
    // comes from verified records, so it still names the record.
    tamper(&settings, "UPDATE audit_records SET incident_id = 'inc-x' WHERE seq = 3").await;
    assert!(store.incident_seqs("inc-2").await.unwrap().contains(&3));
    assert!(store.incident_seqs("inc-x").await.unwrap().is_empty());
}

/// An incident id with a control character (a NUL would fail a whole group commit
/// in PostgreSQL) is refused on its own; appends beside it in the same group land.
#[tokio::test]
async fn a_hostile_incident_id_is_refused_without_failing_its_group() {
    let server = TestServer::start().await.unwrap();
    let settings = migrated(&server).await;
    let store = Arc::new(PgStore::open(&settings, None).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(&store);
        let incident = if i % 5 == 0 { format!("inc-\u{0}{i}") } else { format!("inc-{i}") };
        tasks.push(tokio::spawn(async move { store.append("agent", vec![Entry::new(incident, RecordKind::Signal, json!({"i": i}))], i).await }));
    }
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(_) => assert!(i % 5 != 0, "appended a NUL in an incident id"),
            Err(StoreError::Invalid(why)) => assert!(i % 5 == 0 && why.contains("control"), "{why}"),
            Err(other) => panic!("append {i}: {other}"),
        }
    }
    assert_eq!(store.head().0, 16);
    assert!(matches!(store.append("agent", vec![Entry::new("x".repeat(300), RecordKind::Signal, json!({}))], 0).await, Err(StoreError::Invalid(_))));
}

#[tokio::test]
async fn the_schema_and_durability_are_checked_before_anything_is_kept() {
    let server = TestServer::start().await.unwrap();
    let settings = server.database().await.unwrap();
    match PgStore::open(&settings, None).await {
        Err(StoreError::Database(e)) => assert!(e.to_string().contains("arf db migrate"), "{e}"),
        other => panic!("an unmigrated database opened: {:?}", other.map(|_| ())),
    }
    // Two operators migrating at once apply each migration once.
    let (mut one, mut two) = (settings.connect().await.unwrap(), settings.connect().await.unwrap());
    let (x, y) = tokio::join!(arf_pg::migrate(&mut one), arf_pg::migrate(&mut two));
    let mut applied = [x.unwrap(), y.unwrap()].concat();
    applied.sort_unstable();
    assert_eq!(applied, every_migration());
    assert!(arf_pg::migrate(&mut one).await.unwrap().is_empty());
    PgStore::open(&settings, None).await.unwrap();

    // A migration changed by hand, or one from a newer ARF, is refused.
    one.batch_execute("UPDATE arf_migrations SET sha256 = 'x' WHERE version = 1").await.unwrap();
    assert!(arf_pg::check(&one).await.unwrap_err().to_string().contains("differs"));
    one.batch_execute("DELETE FROM arf_migrations WHERE version = 1").await.unwrap();
    assert!(arf_pg::check(&one).await.unwrap_err().to_string().contains("lacks migration 1"));
    arf_pg::migrate(&mut one).await.unwrap_err();
    one.batch_execute("INSERT INTO arf_migrations (version, name, sha256) VALUES (99, 'future', 'y')").await.unwrap();
    assert!(arf_pg::check(&one).await.unwrap_err().to_string().contains("newer"));

    // A table made UNLOGGED by hand, which a crash would empty, is refused.
    let unlogged = migrated(&server).await;
    let client = unlogged.connect().await.unwrap();
    client.batch_execute("ALTER TABLE audit_records SET UNLOGGED").await.unwrap();
    match PgStore::open(&unlogged, None).await {
        Err(StoreError::Database(arf_pg::PgError::NotDurable(why))) => assert!(why.contains("audit_records"), "{why}"),
        other => panic!("an unlogged log was used: {:?}", other.map(|_| ())),
    }

    // A database that does not make commits durable keeps nothing of ARF's.
    let fresh = migrated(&server).await;
    let client = fresh.connect().await.unwrap();
    let name = client.query_one("SELECT current_database()", &[]).await.unwrap().get::<_, String>(0);
    client.batch_execute(&format!("ALTER DATABASE {name} SET synchronous_commit = off")).await.unwrap();
    match PgStore::open(&fresh, None).await {
        Err(StoreError::Database(arf_pg::PgError::NotDurable(why))) => assert!(why.contains("synchronous_commit"), "{why}"),
        other => panic!("a database without durable commits was used: {:?}", other.map(|_| ())),
    }
}

/// What one front-end acknowledged, another serves at once: a reader that moved
/// to another front-end (a failover) must not find the log shorter than what it
/// was told was written, nor an incident's trail missing its latest records.
#[tokio::test]
async fn a_record_appended_through_one_front_end_is_read_at_once_through_another() {
    let server = TestServer::start().await.unwrap();
    let settings = migrated(&server).await;
    let a = PgStore::open(&settings, None).await.unwrap();
    let b = PgStore::open(&settings, None).await.unwrap();
    for i in 0..50 {
        let record = a.append("governor", vec![Entry::new("inc-read", RecordKind::Decision, json!({"i": i}))], i).await.unwrap().remove(0);
        let read = b.records(&[record.seq]).await.unwrap();
        assert_eq!(read.first().map(|r| &r.hash), Some(&record.hash), "record {} not served by the other front-end", record.seq);
        let trail = b.incident_seqs("inc-read").await.unwrap();
        assert_eq!(trail.last(), Some(&record.seq), "the incident's trail misses record {}", record.seq);
    }
}

/// The log in a database reached over TLS only, the server's certificate checked
/// against the deployment's CA: appends, a reopen and verify work as over loopback.
#[tokio::test]
async fn the_log_works_the_same_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = arf_pg::testing::TestCa::new("ARF test database CA").unwrap();
    let (cert_pem, key_pem) = ca.server(&["127.0.0.1"]).unwrap();
    let server = TestServer::start_tls(arf_pg::testing::ServerTls { cert_pem, key_pem, client_ca_pem: None }).await.unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let tls = arf_pg::TlsSettings { ca_file, cert_file: None, key_file: None };
    let settings = Settings { tls: Some(tls), ..server.database().await.unwrap() };
    arf_pg::migrate(&mut settings.connect().await.unwrap()).await.unwrap();
    {
        let store = PgStore::open(&settings, Some(signer())).await.unwrap();
        for i in 0..5 {
            store.append("agent", vec![entry(i)], i as i64).await.unwrap();
        }
        store.checkpoint(10).await.unwrap();
    }
    let store = PgStore::open(&settings, Some(signer())).await.unwrap();
    assert_eq!(store.head().0, 6);
    let verified = pg::verify(&settings, Some(&signer().verifier())).await.unwrap();
    assert_eq!((verified.records, verified.checkpoints), (6, 1));
    // Plain text to the same server is refused by it.
    assert!(PgStore::open(&Settings { tls: None, ..settings }, None).await.is_err());
}

/// A front-end whose database stops answering does not serve the log as far as it
/// had taken it: a head or range read fails (and the client moves to another
/// front-end), since other front-ends may have acknowledged more.
#[tokio::test]
async fn a_front_end_cut_off_from_its_database_serves_no_shorter_log() {
    let server = TestServer::start_own().await.unwrap();
    let settings = migrated(&server).await;
    let log = arf_audit::log::Log::Postgres(PgStore::open(&settings, None).await.unwrap());
    log.append("agent", vec![entry(1)], 1, (None, None)).await.unwrap();
    assert_eq!(log.head().await.unwrap().0, 1);
    drop(server);
    match log.head().await {
        Err(StoreError::Unavailable(_) | StoreError::Database(_)) => {}
        other => panic!("a front-end cut off from its database answered {other:?}"),
    }
    assert!(log.append("agent", vec![entry(2)], 2, (None, None)).await.is_err());
}

/// A front-end on `settings` with writers `agent`, `governor` and `importer` (a
/// writer that is no service), and a client of each.
async fn front_end(settings: &Settings, dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>, [arf_audit::AuditClient; 3]) {
    let names = ["agent", "governor", "importer"];
    let writers = names.iter().map(|n| (n.to_string(), dir.join(format!("{n}.token")))).collect();
    let tokens: Vec<String> = names.iter().map(|n| arf_core::keys::load_or_generate_token(&dir.join(format!("{n}.token"))).unwrap()).collect();
    let mut config = arf_audit::Config::new("127.0.0.1:0".parse().unwrap(), dir.join("audit"), writers);
    config.postgres = Some(settings.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(arf_audit::serve(config, listener, async move {
        let _ = stopped.await;
    }));
    let [agent, governor, importer] = [0, 1, 2].map(|i| arf_audit::AuditClient::connect(&addr, Some(tokens[i].clone())).unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while agent.head().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the front-end did not serve");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (addr, stop, [agent, governor, importer])
}

/// A log with a front-end ([`front_end`]) and the lease of replica `agent-1`
/// (incarnation `agt-a`, `lease` long, never renewed) in its database.
struct Leased {
    settings: Settings,
    clients: [arf_audit::AuditClient; 3],
    lease: Arc<arf_pg::lease::Lease>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
    _server: TestServer,
}

async fn leased(lease: Duration) -> Leased {
    let server = TestServer::start().await.unwrap();
    let settings = migrated(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let (_addr, stop, clients) = front_end(&settings, dir.path()).await;
    let db = Arc::new(arf_pg::Connection::open(&settings).await.unwrap());
    let lease = Arc::new(arf_pg::lease::Lease::join(db, "agent_members", "agent-1", "agt-a", lease).await.unwrap());
    Leased { settings, clients, lease, _stop: stop, _dir: dir, _server: server }
}

/// The records `writer` has in the log.
async fn written_by(client: &arf_audit::AuditClient, writer: &str) -> usize {
    client.read_range(1, 0).await.unwrap().iter().filter(|r| r.writer == writer).count()
}

/// A replica's append is taken only while its lease holds, judged by the
/// database in the append's own transaction, when the append is written (not when
/// it arrived or its transaction began), in the table of the caller's role from
/// its credentials; nothing of a refused append is in the log, and appends of
/// others in the same moment are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_appends_only_while_its_lease_holds_by_the_databases_clock() {
    // Bound by name, so the server and the front-end live to the test's end.
    let Leased { settings, clients: [agent, governor, importer], lease, _stop, _dir, _server } = leased(Duration::from_secs(2)).await;
    let fenced = agent.clone().fenced("agent-1", "agt-a");
    let signal = || vec![Entry::new("inc-f", RecordKind::Signal, json!({"n": 1}))];

    fenced.append(signal()).await.unwrap();
    // Another process under that name, and another role naming the agent's lease.
    let later = agent.clone().fenced("agent-1", "agt-b");
    assert!(matches!(later.append(signal()).await, Err(arf_audit::AuditError::Fenced(_))));
    let borrowed = governor.clone().fenced("agent-1", "agt-a");
    let refused = borrowed.append(signal()).await.unwrap_err();
    assert!(matches!(&refused, arf_audit::AuditError::Fenced(m) if m.contains("governor_members")), "{refused}");
    let refused = importer.clone().fenced("agent-1", "agt-a").append(signal()).await.unwrap_err();
    assert!(matches!(&refused, arf_audit::AuditError::Refused(m) if m.contains("holds no lease")), "{refused}");

    // Appends wait behind another front-end's transaction holding the head while
    // the lease lapses: the lease is judged when the append is written.
    let blocker = settings.connect().await.unwrap();
    blocker.batch_execute("BEGIN; SELECT seq FROM audit_head FOR UPDATE").await.unwrap();
    let waiting = tokio::spawn({
        let fenced = fenced.clone();
        async move { fenced.append(signal()).await }
    });
    // Its transaction has begun and waits for the head.
    let check = settings.connect().await.unwrap();
    while check.query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()", &[]).await.unwrap().get::<_, i64>(0) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unfenced = tokio::spawn({
        let agent = agent.clone();
        async move { agent.append(vec![Entry::new("inc-g", RecordKind::Signal, json!({"n": 2}))]).await }
    });
    assert!(lease.is_live(), "the lease was live when the append's transaction began");
    while check.query_one("SELECT lease_until > clock_timestamp() FROM agent_members WHERE name = 'agent-1'", &[]).await.unwrap().get::<_, bool>(0) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocker.batch_execute("COMMIT").await.unwrap();
    let refused = waiting.await.unwrap().unwrap_err();
    assert!(matches!(&refused, arf_audit::AuditError::Fenced(m) if m.contains("agent_members")), "{refused}");
    unfenced.await.unwrap().unwrap();
    assert!(matches!(fenced.append(signal()).await, Err(arf_audit::AuditError::Fenced(_))));
    // In the log: the one append made under the live lease, and the unfenced one.
    assert_eq!(written_by(&agent, "agent").await, 2);
    assert_eq!(written_by(&agent, "governor").await, 0);
    let verified = pg::verify(&settings, None).await.unwrap();
    assert_eq!(verified.records as usize, agent.read_range(1, 0).await.unwrap().len());
}

/// The lease a fenced append is taken under stays locked until the append
/// commits, so a takeover, which locks the lapsed member's row for update, comes
/// after it. Here the commit is made slow (a deferred trigger that sleeps), and
/// the row cannot be locked for update until it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_append_holds_its_lease_until_it_commits() {
    let Leased { settings, clients: [agent, _, _], lease: _lease, _stop, _dir, _server } = leased(Duration::from_secs(60)).await;
    let admin = settings.connect().await.unwrap();
    let appending = committing_slowly(&admin, agent.clone().fenced("agent-1", "agt-a"), "inc-s").await;
    let takeover = "SELECT 1 FROM agent_members WHERE name = 'agent-1' FOR UPDATE NOWAIT";
    let refused = admin.query(takeover, &[]).await.unwrap_err();
    assert_eq!(refused.code(), Some(&arf_pg::tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE), "{refused}");
    appending.await.unwrap().unwrap();
    admin.query(takeover, &[]).await.unwrap();
}

/// Makes every commit of the log slow (a deferred trigger that sleeps two
/// seconds), starts an append with `client` and returns once it is committing.
async fn committing_slowly(admin: &arf_pg::Client, client: arf_audit::AuditClient, incident_id: &str) -> tokio::task::JoinHandle<Result<Vec<arf_audit::Record>, arf_audit::AuditError>> {
    admin
        .batch_execute(
            "CREATE OR REPLACE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$;
             DROP TRIGGER IF EXISTS slow_commit ON audit_records;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON audit_records DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .await
        .unwrap();
    let incident_id = incident_id.to_owned();
    let appending = tokio::spawn(async move { client.append(vec![Entry::new(incident_id, RecordKind::Signal, json!({"n": 1}))]).await });
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while admin.query_one(sleeping, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the append never reached its commit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    appending
}

/// Starts an append with `client` and returns once a session of the database
/// waits for a lock (the append, behind what the test holds).
async fn waiting_on_a_lock(admin: &arf_pg::Client, client: arf_audit::AuditClient, incident_id: &str) -> tokio::task::JoinHandle<Result<Vec<arf_audit::Record>, arf_audit::AuditError>> {
    let incident_id = incident_id.to_owned();
    let waiting = tokio::spawn(async move { client.append(vec![Entry::new(incident_id, RecordKind::Signal, json!({"n": 1}))]).await });
    while admin.query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()", &[]).await.unwrap().get::<_, i64>(0) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waiting
}

/// An agent's append made under grouping keys is taken only while every key's
/// row still holds the token the agent drew for it: a peer that drew a new token
/// (the key's lock was taken from a holder whose session dropped) fences out the
/// earlier holder, whether its draw came before the append or while the append
/// waited; and a draw waits for an append in flight under the old token, which
/// holds the key's row until it commits. Only an agent appends under keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_append_under_grouping_keys_is_taken_only_while_they_hold_its_tokens() {
    let Leased { settings, clients: [agent, governor, _], lease: _lease, _stop, _dir, _server } = leased(Duration::from_secs(60)).await;
    let admin = settings.connect().await.unwrap();
    admin.batch_execute("INSERT INTO agent_keys (key, token) VALUES ('staging/checkout/alerts', 11), ('staging/search/alerts', 12)").await.unwrap();
    let fenced = agent.clone().fenced("agent-1", "agt-a");
    let both = [("staging/checkout/alerts".to_owned(), 11), ("staging/search/alerts".to_owned(), 12)];
    let signal = |incident: &str| vec![Entry::new(incident, RecordKind::Signal, json!({"n": 1}))];

    fenced.under_keys(&both).append(signal("inc-1")).await.unwrap();
    let stale = [("staging/checkout/alerts".to_owned(), 11), ("staging/search/alerts".to_owned(), 10)];
    let refused = fenced.under_keys(&stale).append(signal("inc-2")).await.unwrap_err();
    assert!(matches!(&refused, arf_audit::AuditError::Fenced(m) if m.contains("`staging/search/alerts`") && !m.contains("checkout")), "{refused}");
    let refused = governor.clone().fenced("agent-1", "agt-a").under_keys(&both).append(signal("inc-3")).await.unwrap_err();
    assert!(matches!(&refused, arf_audit::AuditError::Refused(m) if m.contains("holds no grouping keys")), "{refused}");

    // An append in flight holds its keys' rows: a peer's draw waits for its commit.
    let appending = committing_slowly(&admin, fenced.under_keys(&both), "inc-4").await;
    let draw_now = "SELECT 1 FROM agent_keys WHERE key = 'staging/checkout/alerts' FOR UPDATE NOWAIT";
    let refused = admin.query(draw_now, &[]).await.unwrap_err();
    assert_eq!(refused.code(), Some(&arf_pg::tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE), "{refused}");
    appending.await.unwrap().unwrap();
    admin.execute("UPDATE agent_keys SET token = 13 WHERE key = 'staging/checkout/alerts'", &[]).await.unwrap();
    admin.batch_execute("DROP TRIGGER slow_commit ON audit_records").await.unwrap();
    let refused = fenced.under_keys(&both).append(signal("inc-5")).await.unwrap_err();
    assert!(matches!(&refused, arf_audit::AuditError::Fenced(m) if m.contains("`staging/checkout/alerts`")), "{refused}");

    // A draw committed while an append waited for the head: the append is judged
    // by the row as the draw left it.
    let blocker = settings.connect().await.unwrap();
    blocker.batch_execute("BEGIN; SELECT seq FROM audit_head FOR UPDATE").await.unwrap();
    let waiting = waiting_on_a_lock(&admin, fenced.under_keys(&[("staging/checkout/alerts".to_owned(), 13)]), "inc-6").await;
    admin.execute("UPDATE agent_keys SET token = 14 WHERE key = 'staging/checkout/alerts'", &[]).await.unwrap();
    blocker.batch_execute("COMMIT").await.unwrap();
    assert!(matches!(waiting.await.unwrap(), Err(arf_audit::AuditError::Fenced(_))));

    // A draw begun before the append's check and committed while the check waits
    // for its row: the row is judged again as the draw left it.
    let drawing = settings.connect().await.unwrap();
    drawing.batch_execute("BEGIN; UPDATE agent_keys SET token = 15 WHERE key = 'staging/search/alerts'").await.unwrap();
    let waiting = waiting_on_a_lock(&admin, fenced.under_keys(&[("staging/search/alerts".to_owned(), 12)]), "inc-7").await;
    drawing.batch_execute("COMMIT").await.unwrap();
    let refused = waiting.await.unwrap().unwrap_err();
    assert!(matches!(&refused, arf_audit::AuditError::Fenced(m) if m.contains("`staging/search/alerts`")), "{refused}");

    let incidents: Vec<String> = agent.read_range(1, 0).await.unwrap().into_iter().filter(|r| r.writer == "agent").map(|r| r.incident_id).collect();
    assert_eq!(incidents, ["inc-1", "inc-4"], "only the appends under tokens their keys held");
}
