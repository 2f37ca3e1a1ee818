//! The store on disk, attacked as someone with the disk would: durability and its
//! order, group commit, a byte flipped anywhere, a torn final write, and eight ways
//! of rewriting history, each caught once a checkpoint or a witness covers it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use serde_json::json;

use arf_audit::checkpoint::NoteVerifier;
use arf_audit::frame;
use arf_audit::merkle;
use arf_audit::store::{self, LOG_FILE, Signer, Store, StoreError};
use arf_audit::witness::{self, Seen, WitnessError};
use arf_audit::{Entry, Record, RecordKind};

fn signer() -> Signer {
    Signer { origin: "test-log".to_owned(), key: SigningKey::from_bytes(&[7; 32]), every_records: 1000 }
}

fn verifier() -> NoteVerifier {
    signer().verifier()
}

async fn append(store: &Store, writer: &str, i: usize) -> Record {
    let entry = Entry::new(format!("inc-{}", i % 3), RecordKind::Signal, json!({"i": i}));
    store.append(writer, vec![entry], 1_000 + i as i64).await.unwrap().remove(0)
}

/// A log of 10 records, a checkpoint, 5 more, a checkpoint: 17 records.
async fn checkpointed(dir: &Path) {
    let store = Store::open(dir, Some(signer())).unwrap();
    for i in 0..10 {
        append(&store, "agent", i).await;
    }
    assert_eq!(store.checkpoint(2_000).await.unwrap().unwrap().checkpoint.size, 10);
    for i in 10..15 {
        append(&store, if i == 12 { "governor" } else { "agent" }, i).await;
    }
    assert_eq!(store.checkpoint(3_000).await.unwrap().unwrap().checkpoint.size, 16);
    assert_eq!(store.head().await.0, 17);
}

fn read_records(dir: &Path) -> Vec<Record> {
    frame::read_records(&dir.join(LOG_FILE)).unwrap()
}

fn write_records(dir: &Path, records: &[Record]) {
    frame::write_records(&dir.join(LOG_FILE), records).unwrap();
}

/// Renumbers and re-seals every record from `from` (0-based) on, as an attacker who
/// recomputes the whole chain would.
fn reseal(records: &mut [Record], from: usize) {
    for i in from..records.len() {
        let prev = if i == 0 { arf_audit::record::GENESIS_HASH.to_owned() } else { records[i - 1].hash.clone() };
        records[i].seq = i as u64 + 1;
        records[i].prev_hash = prev;
        records[i].hash = records[i].compute_hash();
    }
}

fn open_error(dir: &Path) -> String {
    match Store::open(dir, Some(signer())) {
        Ok(store) => panic!("the log opened with {} records", store.open_report().records),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn appends_survive_a_reopen_and_continue_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), None).unwrap();
    for i in 0..3 {
        append(&store, "agent", i).await;
    }
    drop(store);
    let store = Store::open(dir.path(), None).unwrap();
    assert_eq!(append(&store, "agent", 3).await.seq, 4);
    assert_eq!(store.verify().unwrap(), 4);
    assert_eq!(store.by_incident("inc-0").unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 4]);
    assert_eq!(store.range(2, Some(4)).map(|r| r.unwrap().seq).collect::<Vec<_>>(), vec![2, 3]);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), None).unwrap();
    let error = Store::open(dir.path(), None).err().unwrap();
    assert!(error.to_string().contains("another process holds the log open"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_is_answered_only_after_its_sync_and_concurrent_appends_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), None).unwrap());
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let record = append(&store, "agent", i).await;
            // What the answer carries is already synced: the writer raises the durable
            // mark only after fdatasync returns, and answers only after that.
            assert!(store.durable_seq() >= record.seq, "record {} answered before its sync", record.seq);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.durable_seq(), 64);
    let syncs = store.syncs();
    assert!((1..64).contains(&syncs), "64 concurrent appends took {syncs} syncs; group commit shares them");
}

#[tokio::test]
async fn the_store_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    checkpointed(&log).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&log), 0o700);
    assert_eq!(mode(&log.join(LOG_FILE)), 0o600);
    assert_eq!(mode(&log.join("checkpoint")), 0o600);
}

#[tokio::test]
async fn only_the_log_writes_checkpoint_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Some(signer())).unwrap();
    let forged = Entry::new("", RecordKind::Checkpoint, json!({"note": "forged"}));
    assert!(matches!(store.append("agent", vec![forged], 1).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.append("audit", vec![Entry::new("i", RecordKind::Signal, json!({}))], 1).await, Err(StoreError::Invalid(_))));
    assert_eq!(store.head().await.0, 0);
}

#[tokio::test]
async fn a_byte_flipped_anywhere_stops_the_log_and_never_loses_records_silently() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path()).await;
    let original = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    // Every byte of the first frames and the last, and every 13th in between.
    let offsets: Vec<usize> =
        (0..original.len()).filter(|i| *i < 400 || *i + 400 > original.len() || i % 13 == 0).collect();
    for offset in offsets {
        let mut bytes = original.clone();
        bytes[offset] ^= 0x20;
        std::fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
        let error = open_error(dir.path());
        assert!(error.contains("damaged at byte"), "flip at {offset}: {error}");
        assert!(store::verify_dir(dir.path(), Some(&verifier())).is_err(), "verify passed a flip at {offset}");
    }
    std::fs::write(dir.path().join(LOG_FILE), &original).unwrap();
    assert_eq!(Store::open(dir.path(), Some(signer())).unwrap().open_report().records, 17);
}

#[tokio::test]
async fn a_torn_final_write_is_set_aside_and_the_log_continues() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), None).unwrap();
    for i in 0..5 {
        append(&store, "agent", i).await;
    }
    drop(store);
    // Half a frame at the end: what a power loss during an unacknowledged write leaves.
    let mut torn = Vec::new();
    frame::encode(br#"{"never":"acknowledged"}"#, &mut torn);
    torn.truncate(torn.len() / 2);
    let mut bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let at = bytes.len() as u64;
    bytes.extend_from_slice(&torn);
    std::fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();

    let store = Store::open(dir.path(), None).unwrap();
    let (len, aside) = store.open_report().torn.clone().unwrap();
    assert_eq!((len, aside.file_name().unwrap().to_str().unwrap()), (torn.len() as u64, format!("torn-{at}.bin").as_str()));
    assert_eq!(std::fs::read(&aside).unwrap(), torn, "the torn bytes are kept");
    assert_eq!(append(&store, "agent", 5).await.seq, 6);
    assert_eq!(store.verify().unwrap(), 6);
}

#[tokio::test]
async fn every_kind_of_tampering_is_caught_when_a_checkpoint_covers_it() {
    type Tamper = fn(&mut Vec<Record>);
    let cases: Vec<(&str, Tamper)> = vec![
        ("delete", |r| {
            r.remove(2);
        }),
        ("swap", |r| r.swap(2, 3)),
        ("rewrite and recompute", |r| {
            r[4].payload = json!({"i": 99});
            reseal(r, 4);
        }),
        ("erase and renumber", |r| {
            r.remove(5);
            reseal(r, 5);
        }),
        ("rewrite from record 1", |r| {
            r[0].time_ms += 1;
            reseal(r, 0);
        }),
        ("forged writer", |r| {
            r[13].writer = "agent".to_owned();
            reseal(r, 13);
        }),
        ("rewrite and recompute, dropping the checkpoints after it", |r| {
            r.retain(|x| x.kind != RecordKind::Checkpoint || x.seq < 11);
            r[12].payload = json!({"rewritten": true});
            reseal(r, 10);
        }),
    ];
    for (name, tamper) in cases {
        let dir = tempfile::tempdir().unwrap();
        checkpointed(dir.path()).await;
        let mut records = read_records(dir.path());
        tamper(&mut records);
        write_records(dir.path(), &records);
        let error = open_error(dir.path());
        assert!(error.contains("damaged") || error.contains("checkpoint"), "{name}: {error}");
        let verified = store::verify_dir(dir.path(), Some(&verifier()));
        assert!(verified.is_err(), "{name}: verify passed");
    }
}

/// Without the key (`arf audit verify --unsigned`) no signature can be checked, but
/// the size and root each `checkpoint` record states still are: a history rewritten
/// under one, with the `checkpoint` file removed, is caught.
#[tokio::test]
async fn without_the_key_the_checkpoint_records_roots_are_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path()).await;
    let mut records = read_records(dir.path());
    records[2].payload = json!({"i": 99});
    reseal(&mut records, 2);
    write_records(dir.path(), &records);
    std::fs::remove_file(dir.path().join(store::CHECKPOINT_FILE)).unwrap();
    let Err(error) = store::verify_dir(dir.path(), None) else { panic!("an unsigned verify passed a rewritten history") };
    assert!(error.to_string().contains("history was rewritten"), "{error}");
    assert!(Store::open(dir.path(), None).is_err(), "a store without the key opened on it");
}

#[tokio::test]
async fn a_truncated_log_is_refused_by_its_checkpoint_file_and_by_a_witness() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path()).await;
    let note = std::fs::read_to_string(dir.path().join("checkpoint")).unwrap();
    let witness_seen = Seen { checkpoint: verifier().verify(&note).unwrap(), note };

    // Cut the last five records at a frame boundary: every frame left is intact.
    let mut records = read_records(dir.path());
    records.truncate(12);
    write_records(dir.path(), &records);
    let error = open_error(dir.path());
    assert!(error.contains("covers 16 records but the log holds 12"), "{error}");

    // The intruder removes the checkpoint file too: the log opens, and signs a new
    // checkpoint of the short history, which a witness that saw size 16 refuses.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let store = Store::open(dir.path(), Some(signer())).unwrap();
    append(&store, "agent", 99).await;
    let short = store.checkpoint(9_000).await.unwrap().unwrap();
    let refused = witness::advance(&verifier(), Some(&witness_seen), &short.note, |old, new| {
        let proof = store.consistency_proof(old, new).map_err(|e| arf_audit::AuditError::Refused(e.to_string()));
        async move { proof }
    })
    .await;
    assert!(matches!(refused, Err(WitnessError::RolledBack { ours: 16, theirs: 13 })), "{refused:?}");
}

#[tokio::test]
async fn a_rewritten_history_cannot_prove_it_extends_what_a_witness_saw() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path()).await;
    let note = std::fs::read_to_string(dir.path().join("checkpoint")).unwrap();
    let seen = Seen { checkpoint: verifier().verify(&note).unwrap(), note };
    // A rewrite with recomputed hashes and no old checkpoint left anywhere in the dir.
    let mut records = read_records(dir.path());
    records.retain(|r| r.kind != RecordKind::Checkpoint);
    records[3].payload = json!({"i": "rewritten"});
    reseal(&mut records, 3);
    write_records(dir.path(), &records);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let store = Store::open(dir.path(), Some(signer())).unwrap();
    for i in 0..5 {
        append(&store, "agent", 100 + i).await;
    }
    let forked = store.checkpoint(9_000).await.unwrap().unwrap();
    let result = witness::advance(&verifier(), Some(&seen), &forked.note, |old, new| {
        let proof = store.consistency_proof(old, new).map_err(|e| arf_audit::AuditError::Refused(e.to_string()));
        async move { proof }
    })
    .await;
    assert!(matches!(result, Err(WitnessError::Inconsistent { old: 16, new: 20, .. })), "{result:?}");
}

#[tokio::test]
async fn proofs_from_the_store_verify_against_its_signed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path()).await;
    let store = Store::open(dir.path(), Some(signer())).unwrap();
    let latest = store.latest_checkpoint().unwrap().checkpoint;
    assert_eq!(latest.size, 16);
    for seq in 1..=16 {
        let record = store.get(seq).unwrap().unwrap();
        let proof = store.inclusion_proof(seq, latest.size).unwrap();
        let leaf = store::leaf_of(&record).unwrap();
        merkle::verify_inclusion(seq - 1, latest.size, &leaf, &proof, &latest.root).unwrap();
    }
    let first = verifier().verify(read_records(dir.path())[10].payload["note"].as_str().unwrap()).unwrap();
    let proof = store.consistency_proof(first.size, latest.size).unwrap();
    merkle::verify_consistency(first.size, latest.size, &first.root, &latest.root, &proof).unwrap();
}

#[tokio::test]
async fn a_payload_that_would_not_read_back_is_refused_and_the_log_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), None).unwrap();
    // Nested one level less than JSON decoding allows, so only the record around it
    // takes it over the limit.
    let deep: serde_json::Value = serde_json::from_str(&format!("{}{}", "[".repeat(127), "]".repeat(127))).unwrap();
    let refused = store.append("agent", vec![Entry::new("i", RecordKind::Signal, deep)], 1).await;
    assert!(matches!(refused, Err(StoreError::Invalid(ref m)) if m.contains("cannot be read back")), "{refused:?}");
    // Floats that did not survive a round trip before `float_roundtrip`.
    let floats: serde_json::Value = serde_json::from_str(r#"{"v": 5.308878590071231e-08, "w": 2.2790121708605243e274}"#).unwrap();
    store.append("agent", vec![Entry::new("i", RecordKind::Signal, floats)], 2).await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), None).unwrap();
    assert_eq!(store.open_report().records, 1);
    assert_eq!(store.get(1).unwrap().unwrap().seq, 1);
}

#[tokio::test]
async fn a_second_torn_write_at_the_same_place_does_not_replace_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), None).unwrap();
    append(&store, "agent", 0).await;
    drop(store);
    let clean = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let mut kept = Vec::new();
    for tail in [&b"\x05\x00\x00"[..], &b"\x07\x00"[..]] {
        let mut bytes = clean.clone();
        bytes.extend_from_slice(tail);
        std::fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
        let store = Store::open(dir.path(), None).unwrap();
        kept.push(store.open_report().torn.clone().unwrap().1);
    }
    assert_ne!(kept[0], kept[1]);
    assert_eq!(std::fs::read(&kept[0]).unwrap(), b"\x05\x00\x00");
    assert_eq!(std::fs::read(&kept[1]).unwrap(), b"\x07\x00");
}

#[tokio::test]
async fn a_record_rewritten_on_disk_after_the_open_is_refused_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), None).unwrap();
    for i in 0..3 {
        append(&store, "agent", i).await;
    }
    // Same length, sound frame, recomputed record hash: only the tree built at open can tell.
    let mut records = read_records(dir.path());
    records[1].payload = json!({"i": 7});
    records[1].hash = records[1].compute_hash();
    write_records(dir.path(), &records);
    assert!(matches!(store.get(2), Err(StoreError::Corrupt { seq: 2, .. })), "{:?}", store.get(2));
    assert_eq!(store.get(1).unwrap().unwrap().seq, 1);
    // Damage found is damage for the whole log: it takes no more appends and signs
    // no checkpoint over a file it knows is damaged (the next open refuses it).
    assert!(store.failure().is_some_and(|reason| reason.contains("record 2 no longer reads as it was verified")), "{:?}", store.failure());
    let refused = store.append("agent", vec![Entry::new("inc-1", RecordKind::Signal, json!({"i": 9}))], 9).await;
    assert!(matches!(refused, Err(StoreError::Failed(_))), "{refused:?}");
    assert_eq!(store.durable_seq(), 3);
}
