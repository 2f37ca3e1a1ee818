//! The store itself: durability across reopen, and tamper detection on the raw sled tree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use serde_json::json;

use arf_audit::store::Store;
use arf_audit::{Entry, RecordKind};

async fn filled(dir: &std::path::Path, n: usize) -> Store {
    let store = Store::open(dir).unwrap();
    for i in 0..n {
        store.append("agent", vec![Entry::new("inc-1", RecordKind::Signal, json!({"i": i}))], 1_000 + i as i64).await.unwrap();
    }
    store
}

fn record_key(seq: u64) -> Vec<u8> {
    let mut key = vec![b'r'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

#[tokio::test]
async fn appends_survive_a_reopen_and_continue_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path(), 3).await;
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let next = store.append("agent", vec![Entry::new("inc-1", RecordKind::Outcome, json!({}))], 5).await.unwrap();
    assert_eq!(next[0].seq, 4);
    assert_eq!(store.verify().unwrap().records, 4);
}

/// Each way of tampering, and the record the verifier must name.
#[tokio::test]
async fn tampering_is_caught_at_the_first_bad_record() {
    type Tamper = fn(&sled::Db);
    let cases: Vec<(&str, Tamper, u64)> = vec![
        ("changed", |db| {
            let bytes = db.get(record_key(3)).unwrap().unwrap();
            let text = String::from_utf8(bytes.to_vec()).unwrap().replace("\"i\":2", "\"i\":99");
            db.insert(record_key(3), text.as_bytes()).unwrap();
        }, 3),
        ("removed", |db| {
            db.remove(record_key(2)).unwrap();
        }, 2),
        ("reordered", |db| {
            let two = db.get(record_key(2)).unwrap().unwrap();
            let four = db.get(record_key(4)).unwrap().unwrap();
            db.insert(record_key(2), four).unwrap();
            db.insert(record_key(4), two).unwrap();
        }, 2),
        ("inserted", |db| {
            // A record appended past the end that claims to follow record 5 but does not link to it.
            let mut forged: serde_json::Value = serde_json::from_slice(&db.get(record_key(5)).unwrap().unwrap()).unwrap();
            forged["seq"] = json!(6);
            db.insert(record_key(6), serde_json::to_vec(&forged).unwrap()).unwrap();
        }, 6),
    ];
    for (name, tamper, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path(), 5).await;
        assert!(store.verify().is_ok(), "{name}: intact before tampering");
        tamper(store.db());
        let error = store.verify().unwrap_err();
        assert_eq!(error.seq, expected, "{name}: {error}");
    }
}
