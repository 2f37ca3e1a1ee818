//! The `prometheus` probe against a real Prometheus server (Debian's `prometheus`
//! package, installed by `.ci/run`), which the test starts and points at a metrics
//! endpoint the test controls: the probe passes, then fails once the metric moves.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use arf_core::catalog::{Comparison, Probe};

use crate::harness::{Harness, Setup, command, pathway, target};

/// Kills the Prometheus server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `errors_ratio <value>` at `/metrics`; the value is an f64's bits.
async fn metrics_target(value: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let value = f64::from_bits(value.load(Ordering::SeqCst));
            async move { format!("# TYPE errors_ratio gauge\nerrors_ratio {value}\n") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn start_prometheus(dir: &std::path::Path, scrape: &str) -> (Server, String) {
    let binary = std::env::var("ARF_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
    let port = arf_core::net::free_loopback_port().unwrap().port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: target\n    static_configs:\n      - targets: ['{scrape}']\n"
        ),
    )
    .unwrap();
    let child = Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start `{binary}` ({e}): the prometheus probe tests need a real Prometheus server; \
                 install Debian's `prometheus` package (`.ci/run` does) or set ARF_PROMETHEUS to the binary"
            )
        });
    (Server(child), format!("http://127.0.0.1:{port}"))
}

/// Asks Prometheus for `query` until `done` accepts the answer, within a bound.
async fn wait_for(base: &str, query: &str, done: impl Fn(&Value) -> bool) {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/query");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        assert!(tokio::time::Instant::now() < deadline, "Prometheus at {base} never answered `{query}` as expected");
        let Ok(response) = client.get(&url).query(&[("query", query)]).send().await else { continue };
        let Ok(answer) = response.json::<Value>().await else { continue };
        if done(&answer) {
            return;
        }
    }
}

fn first_value(answer: &Value) -> Option<f64> {
    answer["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_probe_passes_and_fails_with_the_metric() {
    let dir = tempfile::tempdir().unwrap();
    let value = Arc::new(AtomicU64::new(0.01f64.to_bits()));
    let scrape = metrics_target(Arc::clone(&value)).await;
    let (_prometheus, base) = start_prometheus(dir.path(), &scrape);
    wait_for(&base, "errors_ratio", |a| first_value(a) == Some(0.01)).await;

    let probe = Probe::Prometheus {
        name: "error_ratio".into(),
        url: "{{target.prometheus}}".into(),
        query: "max(errors_ratio{job=\"target\"})".into(),
        comparison: Comparison::Less,
        threshold: 0.05,
        pass_if_empty: false,
    };
    let empty = Probe::Prometheus {
        name: "nothing".into(),
        url: "{{target.prometheus}}".into(),
        query: "errors_ratio{job=\"elsewhere\"}".into(),
        comparison: Comparison::Less,
        threshold: 0.05,
        pass_if_empty: false,
    };
    let p = pathway("watched", vec![command(&["true"])], vec![probe], vec![command(&["true"])]);
    let q = pathway("watches_nothing", vec![command(&["true"])], vec![empty], vec![command(&["true"])]);
    let targets = [("web".to_owned(), target(&[("prometheus", base.as_str())]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![p, q], targets)).await;

    let execution = h.execute(h.decide(&h.body("watched", "web", json!({}))).await).await.unwrap();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);
    assert!(execution.verification[0].detail.contains("= 0.01 < 0.05"), "{:?}", execution.verification);

    value.store(0.5f64.to_bits(), Ordering::SeqCst);
    wait_for(&base, "errors_ratio", |a| first_value(a) == Some(0.5)).await;
    let execution = h.execute(h.decide(&h.body("watched", "web", json!({}))).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    assert!(execution.verification[0].detail.contains("is 0.5"), "{:?}", execution.verification);

    // A query that matches nothing proves nothing, so it fails.
    let execution = h.execute(h.decide(&h.body("watches_nothing", "web", json!({}))).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    assert!(execution.verification[0].detail.contains("matched nothing"), "{:?}", execution.verification);
}
