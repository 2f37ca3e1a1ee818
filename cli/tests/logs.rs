//! Logs a pipeline can read: a service's log file has no terminal escape codes,
//! and with `ARF_LOG_FORMAT=json` every line is one JSON object with its level,
//! message and fields.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_files_are_plain_text_or_json_lines() {
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    plane.start("audit", None).await;
    let text = plane.log("audit");
    assert!(text.contains("audit log listening"), "{text}");
    assert!(!text.contains('\u{1b}'), "no escape codes in a log file:\n{text:?}");

    plane.env.push(("ARF_LOG_FORMAT".into(), "json".into()));
    plane.start("governor", None).await;
    let log = plane.log("governor");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string() && l["message"].is_string()), "{log}");
    let listening = lines.iter().find(|l| l["message"] == "governor listening").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(listening["addr"], plane.addr("governor").to_string(), "fields are keys of the object: {listening}");
}

/// `--log-format json` does what `ARF_LOG_FORMAT=json` does, and wins over it:
/// `arf serve ROLE --log-format text` writes text with the variable set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_format_flag_chooses_the_lines() {
    use tokio::io::AsyncBufReadExt;
    let plane = support::Plane::prepare("http://127.0.0.1:9").await;
    for (flag, json) in [("json", true), ("text", false)] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_arf"))
            .args(["serve", "executor", "--log-format", flag, "--config"])
            .arg(&plane.config)
            .env("ARF_LOG_FORMAT", if json { "text" } else { "json" })
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
        let parsed = serde_json::from_str::<serde_json::Value>(&first);
        assert_eq!(parsed.is_ok(), json, "--log-format {flag}: {first}");
        if json {
            assert_eq!(parsed.unwrap()["message"], "starting", "{first}");
        } else {
            assert!(first.contains("starting"), "{first}");
        }
        let _ = child.kill().await;
    }
}
