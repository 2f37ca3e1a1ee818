//! Shadow mode over the whole plane: an alert about a service in shadow mode is
//! diagnosed and decided, the decision is logged with what would have run, the
//! target is never touched, `arf shadow report` sets it against the incident, and
//! `arf shadow judge` and the console's shadow page record people's judgements
//! toward graduation.

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
    let modes: toml::Value = toml::from_str::<toml::Table>("modes = [{ service = \"worker\", mode = \"shadow\" }]").unwrap()["modes"].clone();
    config["governor"].as_table_mut().unwrap().insert("modes".into(), modes);
    std::fs::write(&plane.config, toml::to_string(&config).unwrap()).unwrap();
    plane.add_worker("worker-production", "production", &target);
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
    let record = report["records"].as_array().unwrap().iter().find(|r| r["environment"] == "staging" && r["service"] == "worker" && r["pathway"] == "restart_service").unwrap();
    assert_eq!((record["shadow_agreed"].as_u64(), record["earned"].as_u64(), record["graduated"].as_bool()), (Some(1), Some(1), Some(false)), "{record:#}");

    // The console's shadow page: the same worker in production (policy would want
    // an approval; in shadow nobody is asked), judged from the browser.
    plane.fire_about("WorkerWedged", "production").await;
    let (_console, base) = plane.console();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/login")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the console never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login = http.post(format!("{base}/login")).form(&[("token", plane.token("bob").as_str())]).send().await.unwrap();
    let session = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = loop {
        let page = http.get(format!("{base}/shadow")).header("cookie", &session).send().await.unwrap().text().await.unwrap();
        if page.contains("worker-production") {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "the production shadow decision never showed:\n{page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(page.contains("right by alice: I restarted it by hand"), "the CLI's judgement is on the page:\n{page}");
    let start = page.find("/shadow/").unwrap() + "/shadow/".len();
    let production: String = page[start..].chars().take_while(|c| *c != '/').collect();
    assert_ne!(production, decision);
    let csrf: String = page[page.find("name=csrf value=\"").unwrap() + 17..].chars().take_while(|c| *c != '"').collect();
    let judge = |form: Vec<(&'static str, String)>, origin: &str| {
        http.post(format!("{base}/shadow/{production}/judge")).header("cookie", &session).header("origin", origin.to_owned()).form(&form).send()
    };
    let forged = judge(vec![("csrf", csrf.clone()), ("agrees", "yes".into())], "http://evil.example").await.unwrap();
    assert_eq!(forged.status(), 403, "another origin changes nothing");
    let unexplained = judge(vec![("csrf", csrf.clone()), ("agrees", "no".into())], &base).await.unwrap().text().await.unwrap();
    assert!(unexplained.contains("did not count") && unexplained.contains("needs a reason"), "{unexplained}");
    let judged = judge(vec![("csrf", csrf.clone()), ("agrees", "no".into()), ("reason", "it was the queue's broker".into())], &base).await.unwrap().text().await.unwrap();
    assert!(judged.contains("is logged") && judged.contains("wrong by bob: it was the queue&#39;s broker"), "{judged}");

    // Nothing was ever authorized or run, in either environment.
    let trail = plane.auditor().read_incident(&incident).await.unwrap();
    assert!(!trail.iter().any(|r| r.payload["state"] == "authorized" || r.kind == arf_audit::RecordKind::ExecutionStarted), "{}", support::summary(&trail));
    let (_, report) = arf(&plane, "alice", &["shadow", "report", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!((report["judged"].as_u64(), report["agreed"].as_u64()), (Some(2), Some(1)), "{report:#}");
    assert_eq!(restarts.load(Ordering::SeqCst), 0, "the target was never touched");
}
