//! `arf signal send` on files that cannot be sent: each is refused before anything
//! is sent or read whole, with what is wrong and what to do, and exit code 1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::process::Command;

/// Runs `arf signal send FILE` where no deployment is found and nothing listens
/// on the agent's address: any error that is not about the file would be about
/// the connection instead.
fn send(dir: &std::path::Path, file: &std::path::Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_arf"))
        .current_dir(dir)
        .env_remove("ARF_CONFIG")
        .args(["signal", "send"])
        .arg(file)
        .args(["--agent", "127.0.0.1:9"])
        .output()
        .unwrap();
    (output.status.code().unwrap(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn empty_oversized_cut_off_and_unknown_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let cases: [(&str, Vec<u8>, &[&str]); 5] = [
        ("empty.json", Vec::new(), &["is empty", "no signal to send"]),
        ("blank.json", b" \n\n".to_vec(), &["is empty"]),
        // 55 MB, as in the issue: refused from its size, naming the limit.
        ("huge.json", vec![b' '; 55 * 1024 * 1024], &["57671680 bytes", "at most 1048576 bytes", "split it"]),
        ("cut.json", br#"{"version": "4", "status": "firing", "alerts": [{"labels": {"alertname": "X""#.to_vec(), &["ends before its JSON does", "cut off"]),
        ("notes.txt", b"the disk is full on db-1\n".to_vec(), &["cannot tell the format", "--format", "alertmanager", "sarif", "trivy"]),
    ];
    for (name, content, expected) in cases {
        let (code, stderr) = send(dir.path(), &write(name, &content));
        assert_eq!(code, 1, "{name}: {stderr}");
        for text in expected {
            assert!(stderr.contains(text), "{name}: `{text}` not in: {stderr}");
        }
        assert!(!stderr.contains("127.0.0.1:9"), "{name}: refused before anything was sent: {stderr}");
    }
}
