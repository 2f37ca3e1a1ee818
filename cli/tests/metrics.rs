//! A real Prometheus (Debian's `prometheus`) scrapes every service of a deployment
//! made by `arf init`: over HTTPS with the deployment's CA, with the token of an
//! identity made by `arf token create`. Its parser accepts what ARF exposes, every
//! target is up, and the counters move with one alert. Without a token, `/metrics`
//! answers 401; `/healthz` and `/readyz` answer probes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `metrics_listen` address `arf init` (and the plane) gave `role`.
fn metrics_addr(plane: &support::Plane, role: &str) -> String {
    let config: toml::Table = toml::from_str(&std::fs::read_to_string(&plane.config).unwrap()).unwrap();
    config[role]["metrics_listen"].as_str().unwrap().to_owned()
}

/// The result of an instant query; empty while Prometheus is still starting.
async fn query(base: &str, expr: &str) -> Vec<Value> {
    let Ok(response) = reqwest::Client::new().get(format!("{base}/api/v1/query")).query(&[("query", expr)]).send().await else { return Vec::new() };
    let answer: Value = response.json().await.unwrap_or_default();
    answer["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Polls `expr` until `done` holds for its result, within 60 s.
async fn wait_for(base: &str, expr: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let result = query(base, expr).await;
        if done(&result) {
            return result;
        }
        assert!(tokio::time::Instant::now() < deadline, "Prometheus never answered `{expr}` as expected; last: {result:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_service_over_tls_with_a_token() {
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    plane.enable_metrics();
    let created = Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["token", "create", "prometheus", "--role", "tooling", "--config"])
        .arg(&plane.config)
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let token_file = plane.dir.path().join("prometheus.token");
    std::fs::write(&token_file, String::from_utf8(created.stdout).unwrap().trim()).unwrap();
    for role in ["audit", "governor", "executor", "agent"] {
        plane.start(role, None).await;
    }

    // The endpoint itself: a token is needed for metrics, not for probes.
    let https = plane.webhook_client();
    let agent_metrics = metrics_addr(&plane, "agent");
    assert_eq!(https.get(format!("https://{agent_metrics}/metrics")).send().await.unwrap().status(), 401);
    assert_eq!(https.get(format!("https://{agent_metrics}/metrics")).bearer_auth(plane.token("alertmanager")).send().await.unwrap().status(), 403, "a signal source reads no metrics");
    assert_eq!(https.get(format!("https://{agent_metrics}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(https.get(format!("https://{agent_metrics}/readyz")).send().await.unwrap().status(), 200);
    // A rotated key that does not load: the last good one still serves, and the
    // agent reports itself not ready until the files load again.
    let key = plane.certs().join("agent.key");
    let good = std::fs::read(&key).unwrap();
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\ncut off").unwrap();
    assert_eq!(https.get(format!("https://{agent_metrics}/readyz")).send().await.unwrap().status(), 503);
    std::fs::write(&key, &good).unwrap();
    assert_eq!(https.get(format!("https://{agent_metrics}/readyz")).send().await.unwrap().status(), 200);

    let targets: Vec<String> = ["audit", "agent", "governor", "executor"].iter().map(|r| format!("'{}'", metrics_addr(&plane, r))).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: arf\n    scheme: https\n    tls_config:\n      ca_file: {}\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: [{}]\n",
            plane.certs().join("ca.pem").display(),
            token_file.display(),
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = arf_core::net::free_loopback_port().unwrap().port();
    let binary = std::env::var("ARF_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
    let _prometheus = Prometheus(
        Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{binary}` ({e}): install Debian's `prometheus` (`.ci/run` does) or set ARF_PROMETHEUS")),
    );
    let base = format!("http://127.0.0.1:{port}");

    // Every service is up to Prometheus: reached over TLS, authorized, and parsed.
    wait_for(&base, "up{job=\"arf\"} == 1", |r| r.len() == 4).await;
    let up = query(&base, "arf_up").await;
    assert_eq!(up.len(), 4, "{up:?}");

    plane.fire().await;
    let signals = wait_for(&base, "sum(arf_agent_signals_total)", |r| r.first().is_some_and(|v| v["value"][1] != "0")).await;
    assert_eq!(signals[0]["value"][1], "1", "one signal accepted");
    wait_for(&base, "sum(arf_governor_decisions_total)", |r| r.first().is_some_and(|v| v["value"][1] == "1")).await;
    wait_for(&base, "sum(arf_audit_records_appended_total{writer=\"agent\"})", |r| r.first().is_some_and(|v| v["value"][1] != "0")).await;
    wait_for(&base, "histogram_quantile(0.99, sum by (le) (arf_audit_append_seconds_bucket))", |r| r.first().is_some_and(|v| v["value"][1] != "NaN")).await;
    wait_for(&base, "sum(arf_agent_diagnoses_total{status=\"grounded\"})", |r| r.first().is_some_and(|v| v["value"][1] == "1")).await;
    // The dashboard's questions (deploy/grafana/arf.json): decisions by route, and
    // executions by outcome (the target here is a closed port: the action fails).
    let routes = wait_for(&base, "sum by (route) (arf_governor_decisions_total)", |r| !r.is_empty()).await;
    assert_eq!(routes[0]["metric"]["route"], "autonomous", "{routes:?}");
    let outcomes = wait_for(&base, "sum by (outcome) (arf_executor_outcomes_total)", |r| !r.is_empty()).await;
    assert!(outcomes[0]["metric"]["outcome"].as_str().is_some_and(|o| !o.is_empty()), "{outcomes:?}");
}
