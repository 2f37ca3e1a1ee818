//! A command's output is bounded: the log keeps its first bytes and counts the rest.

use serde_json::json;

use arf_executor::records::LOGGED_OUTPUT_LIMIT;

use crate::harness::{Harness, Setup, command, command_probe, pathway, target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let flood = command(&[
        "sh",
        "-c",
        "head -c 1000000 /dev/zero | tr '\\0' o; head -c 300000 /dev/zero | tr '\\0' e >&2; echo done >&2",
    ]);
    let p = pathway("flood", vec![flood], vec![command_probe("ok", &["true"])], vec![command(&["true"])]);
    let targets = [("web".to_owned(), target(&[]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![p], targets)).await;

    let body = h.body("flood", "web", json!({}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);

    let trail = h.trail(&body.incident_id).await;
    let report = &trail[2].payload["steps"][0]["report"];
    // (stream, byte it repeats, total bytes written)
    for (stream, byte, total) in [("stdout", 'o', 1_000_000), ("stderr", 'e', 300_005)] {
        let text = report[stream]["text"].as_str().unwrap();
        assert_eq!(text.len(), LOGGED_OUTPUT_LIMIT, "{stream}");
        assert!(text.chars().all(|c| c == byte), "{stream}");
        assert_eq!(report[stream]["total_bytes"], json!(total), "{stream}");
        assert_eq!(report[stream]["truncated"], json!(true), "{stream}");
    }
}
