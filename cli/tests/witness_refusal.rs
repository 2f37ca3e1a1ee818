//! End to end, with every process real: the governor and the executor are
//! witnesses of the audit log. When the log is rolled back behind the checkpoints
//! they witnessed, the next decision runs nothing, and the governor pages the
//! on-call (PagerDuty Events API v2 on a loopback receiver): for its own witness's
//! refusal, or, where the governor keeps no witness, for the executor's refusal
//! marked `log-not-witnessed`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdef012345";


type Pages = Arc<Mutex<Vec<Value>>>;

/// A deployment that ran one action, then had its log restored from an older copy
/// behind what its witnesses saw, and was sent a second alert; with
/// `governor_witness` false, the governor keeps no witness of its own. Returns the
/// plane, the pages received, and the target's count of restarts.
async fn rolled_back(governor_witness: bool) -> (support::Plane, Value, Arc<std::sync::atomic::AtomicU64>) {
    let pages: Pages = Arc::default();
    let inbox = Arc::clone(&pages);
    let app = axum::Router::new().route(
        "/v2/enqueue",
        axum::routing::post(move |body: axum::Json<Value>| {
            let inbox = Arc::clone(&inbox);
            async move {
                inbox.lock().unwrap().push(body.0);
                (axum::http::StatusCode::ACCEPTED, axum::Json(json!({"status": "success", "message": "Event processed", "dedup_key": "x"})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}/v2/enqueue", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (target, restarts) = support::counting_target("127.0.0.1").await;
    let mut plane = support::Plane::prepare(&target).await;
    let key = plane.dir.path().join("secrets").join("pagerduty.key");
    std::fs::write(&key, ROUTING_KEY).unwrap();
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&plane.config).unwrap()).unwrap();
    let notify: toml::Table = toml::from_str(&format!(
        "[[receivers]]\nname = \"pagerduty\"\nkind = \"pagerduty\"\nurl = \"{receiver}\"\nsecret_file = \"{}\"\n",
        key.display()
    ))
    .unwrap();
    config.insert("notify".into(), toml::Value::Table(notify));
    if !governor_witness {
        config["governor"].as_table_mut().unwrap().remove("audit_checkpoint_key");
    }
    std::fs::write(&plane.config, toml::to_string(&config).unwrap()).unwrap();
    // A second kind of wedged worker, so that the second alert opens an incident of its own.
    std::fs::write(plane.dir.path().join("crash-scripted").join("stuck.toml"), support::restart_script("WorkerStuck")).unwrap();
    for role in ["audit", "governor", "executor", "agent"] {
        plane.start(role, None).await;
    }

    // A first action runs; before it, the executor witnessed a checkpoint of the log.
    let first = plane.fire().await;
    plane.trail_until(&first, Duration::from_secs(60), "the first action's outcome", |t| t.iter().any(|r| r.kind == arf_audit::RecordKind::Outcome)).await;
    assert_eq!(restarts.load(Ordering::SeqCst), 1);
    let witnessed: usize = std::fs::read_to_string(plane.dir.path().join("executor").join("witness").join("checkpoint")).unwrap().lines().nth(1).unwrap().parse().unwrap();

    // The log is restored from an older copy: every frame and link of what is left
    // is sound, and the log's own checkpoint file is gone with the rest.
    plane.stop("audit").await;
    let audit = plane.dir.path().join("audit");
    let log = audit.join(arf_audit::store::LOG_FILE);
    let mut records = arf_audit::frame::read_records(&log).unwrap();
    records.truncate(witnessed - 3);
    arf_audit::frame::write_records(&log, &records).unwrap();
    std::fs::remove_file(audit.join("checkpoint")).unwrap();
    plane.start("audit", None).await;

    // The next alert: its action must not run on this log.
    plane.fire_about("WorkerStuck", "staging").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let page = loop {
        if let Some(page) = pages.lock().unwrap().iter().find(|p| p["event_action"] == "trigger").cloned() {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "no page came; governor log:\n{}\nexecutor log:\n{}", plane.log("governor"), plane.log("executor"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(page["routing_key"], ROUTING_KEY);
    assert_eq!(page["payload"]["severity"], "critical", "{page}");
    (plane, page, restarts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_governors_witness_refuses_a_rolled_back_log_and_pages_someone() {
    let (_plane, page, restarts) = rolled_back(true).await;
    assert_eq!(page["payload"]["class"], "witness_refused", "{page}");
    assert!(page["payload"]["summary"].as_str().unwrap().contains("governor's witness check"), "{page}");
    assert_eq!(restarts.load(Ordering::SeqCst), 1, "nothing ran on the rolled-back log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executors_witness_refuses_a_rolled_back_log_and_the_governor_pages_someone() {
    let (plane, page, restarts) = rolled_back(false).await;
    assert!(page.to_string().contains("executor"), "the page says whose witness refused: {page}");
    assert!(plane.log("executor").contains("AUDIT LOG REFUSED BY WITNESS"), "{}", plane.log("executor"));
    assert_eq!(restarts.load(Ordering::SeqCst), 1, "nothing ran on the rolled-back log");
}
