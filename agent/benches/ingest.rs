//! Alert ingest side by side with its anchor, Prometheus Alertmanager, in one run:
//! the same load (16 keep-alive HTTP connections, one alert per request) against
//! ARF's Alertmanager webhook (the agent, with a real audit log that syncs every
//! batch before answering) and against Alertmanager's own `POST /api/v2/alerts`,
//! in 5 rounds of 10,000 requests at each end in turn (`ARF_BENCH_ROUNDS`), after
//! 1,000 of warm-up; it prints each round and the medians. Alerts come from 50 services, each
//! from its own pod, so most are new fingerprints in 50 incidents.
//!
//! `cargo bench -p arf-agent --bench ingest`. Alertmanager is looked up on `PATH`
//! as `prometheus-alertmanager` (Debian: `apt-get install prometheus-alertmanager`)
//! or `alertmanager`; without it only ARF is measured, and the run says so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a benchmark stops at the first surprise")]

// The tests' helpers (the module allows what the benchmark leaves unused).
#[path = "../tests/support/mod.rs"]
mod support;

// The allocator the services run on.
#[global_allocator]
static ALLOCATOR: arf_proto::service::Allocator = arf_proto::service::ALLOCATOR;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CONNECTIONS: usize = 16;
const WARMUP: usize = 1_000;
const REQUESTS: usize = 10_000;
const ROUNDS: usize = 5;

/// The same load at either end ([`support::load::run`]), one URL.
async fn load(url: &str, first: usize, count: usize, body: Arc<dyn Fn(usize) -> Value + Send + Sync>) -> support::load::Measured {
    support::load::run(&[url.to_owned()], CONNECTIONS, first, count, body).await
}

fn labels(i: usize) -> Value {
    json!({"alertname": "HighErrorRate", "service": format!("svc-{}", i % 50), "env": "staging", "severity": "critical", "pod": format!("pod-{i}")})
}

/// Alertmanager's webhook payload (version 4) carrying one alert, as ARF receives it.
fn webhook_body(i: usize) -> Value {
    json!({
        "version": "4", "status": "firing", "receiver": "arf", "groupKey": format!("{{}}:{{pod=\"pod-{i}\"}}"),
        "groupLabels": {}, "commonLabels": labels(i), "commonAnnotations": {"summary": "5xx above 5%"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": "firing", "labels": labels(i), "annotations": {"summary": "5xx above 5%"},
                    "startsAt": "2026-11-26T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus:9090/graph"}]
    })
}

/// The same alert as Prometheus posts it to Alertmanager's API.
fn api_body(i: usize) -> Value {
    json!([{"labels": labels(i), "annotations": {"summary": "5xx above 5%"}, "startsAt": "2026-11-26T03:00:00Z",
            "generatorURL": "http://prometheus:9090/graph"}])
}

fn find_alertmanager() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["prometheus-alertmanager", "alertmanager"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Alertmanager on a free loopback port with a receiver that sends nothing; killed on drop.
async fn start_alertmanager(binary: &std::path::Path, dir: &std::path::Path) -> (tokio::process::Child, String) {
    std::fs::write(dir.join("alertmanager.yml"), "route:\n  receiver: none\nreceivers:\n  - name: none\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = tokio::process::Command::new(binary)
        .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if reqwest::get(format!("{base}/-/ready")).await.is_ok_and(|r| r.status().is_success()) {
            return (child, base);
        }
        assert!(Instant::now() < deadline, "Alertmanager did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

use support::load::median;

fn main() {
    let rounds: usize = std::env::var("ARF_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(ROUNDS);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        println!("ingest: {CONNECTIONS} connections, one alert per request; {rounds} rounds of {REQUESTS} requests at each end in turn, after {WARMUP} of warm-up\n");
        let dir = tempfile::tempdir().unwrap();
        let alertmanager = match find_alertmanager() {
            Some(binary) => Some(start_alertmanager(&binary, dir.path()).await),
            None => {
                println!("(Alertmanager not found on PATH: `apt-get install prometheus-alertmanager` to measure it side by side)");
                None
            }
        };
        let api_url = alertmanager.as_ref().map(|(_, base)| format!("{base}/api/v2/alerts"));
        let api: Arc<dyn Fn(usize) -> Value + Send + Sync> = Arc::new(api_body);

        // The agent's reasoner is the scripted one and its governor is unreachable, so
        // each of the 50 incidents is diagnosed once and escalated, off the ingest path.
        let running = support::start(|_| {}).await;
        let _ = support::agent_client(&running.agent).await;
        let webhook_url = format!("http://{}/v1/webhooks/alertmanager", running.webhook);
        let webhook: Arc<dyn Fn(usize) -> Value + Send + Sync> = Arc::new(webhook_body);

        if let Some(url) = &api_url {
            load(url, 0, WARMUP, Arc::clone(&api)).await;
        }
        load(&webhook_url, 0, WARMUP, Arc::clone(&webhook)).await;
        println!("{:<7} {:>16} {:>8} {:>8} {:>16} {:>8} {:>8} {:>7}", "round", "Alertmanager/s", "p50 ms", "p99 ms", "ARF alerts/s", "p50 ms", "p99 ms", "ratio");
        let (mut am_rates, mut am_p99s, mut arf_rates, mut arf_p99s, mut ratios) = (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let first = WARMUP + round * REQUESTS;
            // The two ends take turns, so a slow spell of the machine falls on both.
            let am = match &api_url {
                Some(url) => Some(load(url, first, REQUESTS, Arc::clone(&api)).await),
                None => None,
            };
            let arf = load(&webhook_url, first, REQUESTS, Arc::clone(&webhook)).await;
            let (am_rate, am_p50, am_p99) = am.as_ref().map_or((f64::NAN, f64::NAN, f64::NAN), |m| (m.rate, m.p50_ms, m.p99_ms));
            println!(
                "{:<7} {:>16.0} {:>8.1} {:>8.1} {:>16.0} {:>8.1} {:>8.1} {:>7.2}",
                round + 1,
                am_rate,
                am_p50,
                am_p99,
                arf.rate,
                arf.p50_ms,
                arf.p99_ms,
                arf.rate / am_rate
            );
            am_rates.push(am_rate);
            am_p99s.push(am_p99);
            arf_rates.push(arf.rate);
            arf_p99s.push(arf.p99_ms);
            ratios.push(arf.rate / am_rate);
        }
        println!(
            "{:<7} {:>16.0} {:>8} {:>8.1} {:>16.0} {:>8} {:>8.1} {:>7.2}",
            "median",
            median(&mut am_rates),
            "",
            median(&mut am_p99s),
            median(&mut arf_rates),
            "",
            median(&mut arf_p99s),
            median(&mut ratios)
        );
        drop(alertmanager);
    });
}
