//! Shadow mode over the whole plane: an alert about a service in shadow mode is
//! diagnosed and decided, the decision is logged with what would have run, the
//! target is never touched, `arf shadow report` sets it against the incident, and
//! `arf shadow judge` records a person's judgement toward graduation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn arf(plane: &support::Plane, who: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_arf")).args(args).env("ARF_CONFIG", &plane.config).env("ARF_TOKEN", plane.token(who)).output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_in_shadow_mode_is_decided_never_touched_reported_and_judged() {
    let (target, restarts) = support::counting_target("127.0.0.1").await;
    let mut plane = support::Plane::prepare(&target).await;
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&plane.config).unwrap()).unwrap();
    let modes: toml::Value = toml::from_str::<toml::Table>("modes = [{ environment = \"staging\", service = \"worker\", mode = \"shadow\" }]").unwrap()["modes"].clone();
    config["governor"].as_table_mut().unwrap().insert("modes".into(), modes);
    std::fs::write(&plane.config, toml::to_string(&config).unwrap()).unwrap();
    for role in ["audit", "governor", "executor", "agent"] {
        plane.start(role, None).await;
    }

    let incident = plane.fire().await;
    let trail = plane.trail_until(&incident, Duration::from_secs(60), "a shadow decision", |trail| trail.iter().any(|r| r.payload["state"] == "shadow")).await;
    let decided = trail.iter().find(|r| r.payload["state"] == "shadow").unwrap();
    assert_eq!((decided.payload["mode"].as_str(), decided.payload["route"].as_str()), (Some("shadow"), Some("autonomous")), "{decided:?}");
    let decision = decided.payload["decision_id"].as_str().unwrap().to_owned();

    let (code, report) = arf(&plane, "alice", &["shadow", "report"]);
    assert_eq!(code, 0, "{report}");
    let line = report.lines().find(|l| l.contains(&decision)).unwrap_or_else(|| panic!("{report}"));
    assert!(line.contains("restart_service on worker-staging") && line.contains("autonomous") && line.contains("not judged"), "{line}");
    assert!(!line.contains("unknown"), "the agent says what became of the incident: {line}");

    // Judging: both verdicts at once, or neither, is a usage error; then alice agrees.
    let (code, out) = arf(&plane, "alice", &["shadow", "judge", &decision, "--agree", "--disagree"]);
    assert_eq!(code, 64, "{out}");
    let (code, out) = arf(&plane, "alice", &["shadow", "judge", &decision]);
    assert_eq!(code, 64, "{out}");
    let (code, out) = arf(&plane, "alice", &["shadow", "judge", &decision, "--agree", "--reason", "I restarted it by hand"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("would have been right"), "{out}");
    let (code, out) = arf(&plane, "bob", &["shadow", "judge", &decision, "--disagree", "--reason", "late"]);
    assert_ne!(code, 0, "a decision is judged once: {out}");
    assert!(out.contains("already judged by `alice`"), "{out}");

    let (code, report) = arf(&plane, "alice", &["shadow", "report", "--json"]);
    assert_eq!(code, 0, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!((report["judged"].as_u64(), report["agreed"].as_u64()), (Some(1), Some(1)), "{report:#}");
    let record = report["records"].as_array().unwrap().iter().find(|r| r["service"] == "worker" && r["pathway"] == "restart_service").unwrap();
    assert_eq!((record["shadow_agreed"].as_u64(), record["earned"].as_u64(), record["graduated"].as_bool()), (Some(1), Some(1), Some(false)), "{record:#}");

    // Nothing was ever authorized or run.
    let trail = plane.auditor().read_incident(&incident).await.unwrap();
    assert!(!trail.iter().any(|r| r.payload["state"] == "authorized" || r.kind == arf_audit::RecordKind::ExecutionStarted), "{}", support::summary(&trail));
    assert_eq!(restarts.load(Ordering::SeqCst), 0, "the target was never touched");
}
