//! `arf status` against a running deployment, found from its file: every service
//! with its address, health, version and uptime (from its metrics endpoint, over
//! TLS), and its state; a service that is down makes it exit 1 and says so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_service_and_exits_1_when_one_is_down() {
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    plane.enable_metrics();
    for role in ["audit", "governor", "executor", "agent"] {
        plane.start(role, None).await;
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let (config, token) = (plane.config.clone(), plane.token("alice"));
    let status = |json: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_arf"));
        command.arg("status").current_dir(elsewhere.path()).env("ARF_CONFIG", &config).env("ARF_TOKEN", &token);
        for var in ["ARF_AGENT", "ARF_GOVERNOR", "ARF_AUDIT", "ARF_EXECUTOR", "ARF_TLS_DIR"] {
            command.env_remove(var);
        }
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        (output.status.code().unwrap(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
    };

    let (code, stdout, stderr) = status(false);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let addresses: Vec<(&str, String)> = ["audit", "governor", "executor", "agent"].iter().map(|r| (*r, plane.addr(r).to_string())).collect();
    for (role, address) in &addresses {
        let line = stdout.lines().find(|l| l.starts_with(role)).unwrap_or_else(|| panic!("no line for {role}:\n{stdout}"));
        assert!(line.contains(address.as_str()) && line.contains("serving"), "{line}");
        assert!(line.contains(env!("CARGO_PKG_VERSION")), "the version, from the metrics endpoint: {line}");
    }
    assert!(stdout.contains("log head") && stdout.contains("signed checkpoint"), "{stdout}");
    assert!(stdout.contains("0 pending; autonomy on"), "{stdout}");
    assert!(stdout.contains("incidents held"), "{stdout}");

    let (_, json, _) = status(true);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["serving"], true);
    let services = parsed["services"].as_array().unwrap();
    assert_eq!(services.len(), 4);
    assert!(services.iter().all(|s| s["uptime_secs"].as_u64().is_some_and(|u| u < 600)), "{json}");
    let audit = services.iter().find(|s| s["service"] == "audit").unwrap();
    assert!(audit["detail"]["head"].is_u64() && audit["version"] == env!("CARGO_PKG_VERSION"), "{audit}");

    plane.stop("executor").await;
    let (code, stdout, _) = status(false);
    assert_eq!(code, 1, "a service down is a failure: {stdout}");
    let executor = stdout.lines().find(|l| l.starts_with("executor")).unwrap();
    assert!(executor.contains("DOWN"), "{executor}");
}

/// `arf --version` names the commit it was built from.
#[test]
fn the_version_names_the_commit() {
    let output = Command::new(env!("CARGO_BIN_EXE_arf")).arg("--version").output().unwrap();
    assert!(output.status.success());
    let version = String::from_utf8_lossy(&output.stdout);
    let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert_eq!(version.trim(), format!("arf {} (commit {head})", env!("CARGO_PKG_VERSION")));
}
