//! The demo end to end, on real processes, and `arf audit verify` on the log it leaves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::path::Path;
use std::process::Command;

fn arf(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arf")).args(args).output().unwrap()
}

fn record_key(seq: u64) -> Vec<u8> {
    let mut key = vec![b'r'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

#[test]
fn the_demo_passes_and_its_log_verifies_until_tampered_with() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let demo = arf(&["demo", "--data-dir", data]);
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&demo.stderr));
    assert!(stdout.contains("scripted"), "the demo says its model answers are scripted");
    assert!(stdout.contains("demo passed"), "{stdout}");

    let verify = arf(&["audit", "verify", "--data-dir", data]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("intact"));

    // Change one record's payload in the sled store, as someone with disk access might.
    {
        let db = sled::open(Path::new(data).join("audit").join("audit.sled")).unwrap();
        let original = db.get(record_key(5)).unwrap().unwrap();
        let mut record: serde_json::Value = serde_json::from_slice(&original).unwrap();
        record["payload"]["tampered"] = serde_json::json!(true);
        db.insert(record_key(5), serde_json::to_vec(&record).unwrap()).unwrap();
        db.flush().unwrap();
    }
    let verify = arf(&["audit", "verify", "--data-dir", data]);
    assert_eq!(verify.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.contains("first bad record is 5"), "{stderr}");
}
