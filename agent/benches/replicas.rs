//! Webhook ingest with one agent and with two agent replicas, side by side in one
//! run, each on a log in PostgreSQL behind two audit front-ends (issue 16): the
//! same load as `--bench ingest` (16 keep-alive HTTP connections, one alert per
//! request, alerts from 50 services, each from its own pod), split evenly over the
//! replicas' webhooks. Every answer means the alert is committed in PostgreSQL.
//! The two deployments take turns, 5 rounds of 4,000 requests each
//! (`ARF_BENCH_ROUNDS`, `ARF_BENCH_REQUESTS`), after 1,000 of warm-up; it prints
//! each round and the medians.
//!
//! `cargo bench -p arf-agent --bench replicas`. PostgreSQL: the server that
//! `ARF_TEST_POSTGRES` names, else one of its own (`arf_pg::testing`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a benchmark stops at the first surprise")]

#[path = "../tests/support/mod.rs"]
mod support;

#[global_allocator]
static ALLOCATOR: arf_proto::service::Allocator = arf_proto::service::ALLOCATOR;

use std::sync::Arc;

use serde_json::{Value, json};

const CONNECTIONS: usize = 16;
const WARMUP: usize = 1_000;
const REQUESTS: usize = 4_000;
const ROUNDS: usize = 5;

/// Alerts/s and p99 (ms) of `count` requests spread over `urls` ([`support::load::run`]).
async fn load(urls: &[String], first: usize, count: usize) -> (f64, f64) {
    let measured = support::load::run(urls, CONNECTIONS, first, count, Arc::new(body)).await;
    (measured.rate, measured.p99_ms)
}

/// Alertmanager's webhook payload (version 4) carrying one alert.
fn body(i: usize) -> Value {
    let labels = json!({"alertname": "HighErrorRate", "service": format!("svc-{}", i % 50), "env": "staging", "severity": "critical", "pod": format!("pod-{i}")});
    json!({
        "version": "4", "status": "firing", "receiver": "arf", "groupKey": format!("{{}}:{{pod=\"pod-{i}\"}}"),
        "groupLabels": {}, "commonLabels": labels, "commonAnnotations": {"summary": "5xx above 5%"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": "5xx above 5%"},
                    "startsAt": "2026-11-26T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus:9090/graph"}]
    })
}

use support::load::median;

fn main() {
    let rounds: usize = std::env::var("ARF_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(ROUNDS);
    let requests: usize = std::env::var("ARF_BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(REQUESTS);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        println!("replicas: {CONNECTIONS} connections, one alert per request; {rounds} rounds of {requests} requests at each deployment in turn, after {WARMUP} of warm-up\n");
        let server = arf_pg::testing::TestServer::start().await.unwrap();
        // Each deployment its own database and two front-ends; the agents' reasoner
        // is the scripted one and their governor unreachable, so each incident is
        // diagnosed once and escalated, off the ingest path.
        let one = support::pg::Log::start(&server).await;
        let (_, webhook, _stop_one) = support::pg::replica(&one, 0, "agent-1", 10, |_| {}).await;
        let one_urls = vec![format!("http://{webhook}/v1/webhooks/alertmanager")];
        let two = support::pg::Log::start(&server).await;
        let mut two_urls = Vec::new();
        let mut stops = Vec::new();
        for (front, name) in [(0, "agent-1"), (1, "agent-2")] {
            let (_, webhook, stop) = support::pg::replica(&two, front, name, 10, |_| {}).await;
            two_urls.push(format!("http://{webhook}/v1/webhooks/alertmanager"));
            stops.push(stop);
        }
        load(&one_urls, 0, WARMUP).await;
        load(&two_urls, 0, WARMUP).await;
        println!("{:<7} {:>14} {:>8} {:>14} {:>8} {:>7}", "round", "1 agent /s", "p99 ms", "2 agents /s", "p99 ms", "ratio");
        let (mut ones, mut twos, mut ratios, mut one_p99, mut two_p99) = (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let first = WARMUP + round * requests;
            let (a, a99) = load(&one_urls, first, requests).await;
            let (b, b99) = load(&two_urls, first, requests).await;
            println!("{:<7} {:>14.0} {:>8.1} {:>14.0} {:>8.1} {:>7.2}", round + 1, a, a99, b, b99, b / a);
            ones.push(a);
            twos.push(b);
            ratios.push(b / a);
            one_p99.push(a99);
            two_p99.push(b99);
        }
        println!(
            "{:<7} {:>14.0} {:>8.1} {:>14.0} {:>8.1} {:>7.2}",
            "median",
            median(&mut ones),
            median(&mut one_p99),
            median(&mut twos),
            median(&mut two_p99),
            median(&mut ratios)
        );
    });
}
