//! The demo end to end, on real processes, and `arf audit verify` on the log it leaves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::path::Path;
use std::process::Command;

fn arf(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arf")).args(args).output().unwrap()
}

/// Rewrites the log file with `change` applied to its records, with sound frames,
/// as someone with disk access and the format's description would.
fn rewrite_log(data: &str, change: impl FnOnce(&mut Vec<arf_audit::Record>)) {
    let path = Path::new(data).join("audit").join(arf_audit::store::LOG_FILE);
    let mut records = arf_audit::frame::read_records(&path).unwrap();
    change(&mut records);
    arf_audit::frame::write_records(&path, &records).unwrap();
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

    assert!(stdout.contains("latest checkpoint, signed by the log"), "{stdout}");

    let verify = arf(&["audit", "verify", "--data-dir", data]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let verified = String::from_utf8_lossy(&verify.stdout);
    assert!(verified.contains("intact") && verified.contains("signed checkpoints verified"), "{verified}");
    assert!(verified.contains("2 witness checkpoints are consistent"), "{verified}");

    // Change one record's payload, as someone with disk access might.
    rewrite_log(data, |records| records[4].payload["tampered"] = serde_json::json!(true));
    let verify = arf(&["audit", "verify", "--data-dir", data]);
    assert_eq!(verify.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.contains("first bad record is 5"), "{stderr}");
}

#[test]
fn a_log_cut_short_and_resealed_is_caught_by_the_witnesses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let demo = arf(&["demo", "--data-dir", data]);
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stdout));
    // Cut the log to a little less than the executor last witnessed, and remove the
    // log's own checkpoint file: every frame and link left is intact, so only the
    // governor's and executor's checkpoints can tell.
    let witnessed = std::fs::read_to_string(Path::new(data).join("executor").join("witness").join("checkpoint")).unwrap();
    let size: usize = witnessed.lines().nth(1).unwrap().parse().unwrap();
    rewrite_log(data, |records| records.truncate(size - 3));
    std::fs::remove_file(Path::new(data).join("audit").join("checkpoint")).unwrap();
    let verify = arf(&["audit", "verify", "--data-dir", data]);
    assert_eq!(verify.status.code(), Some(1), "{}", String::from_utf8_lossy(&verify.stdout));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.contains("witness") && stderr.contains("truncated or rolled back"), "{stderr}");
}
