//! A storm, then a restart, over real processes: the four services as `arf serve`
//! processes of a deployment made by `arf init` (mutual TLS, the audit log syncing
//! every batch before the agent answers).
//!
//! 1. Start on an empty log: the anchor for the restart below, in the same run.
//! 2. The storm: 100,000 firing alerts through the Alertmanager webhook over 16
//!    concurrent HTTPS connections, 50 alerts per request as Alertmanager groups
//!    them, from 50 services, each alert from its own pod. Measured: the time until
//!    every alert is accepted (accepted means in the log), and the agent's peak RSS.
//! 3. Every process killed (SIGKILL), then all four started at once on the log the
//!    storm left. Measured: each one's time from spawn to SERVING on its health
//!    check (the agent and governor serve only once they have rebuilt their state
//!    from the log), and each one's RSS once all serve.
//!
//! `cargo bench -p arf-cli --bench restart`. `ARF_BENCH_ALERTS` changes the count.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a benchmark stops at the first surprise")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ROLES: [&str; 4] = ["audit", "governor", "executor", "agent"];
const CONNECTIONS: usize = 16;
const PER_REQUEST: usize = 50;
const SERVICES: usize = 50;

/// A process's resident set now and at its peak, in MB, from `/proc`.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Alertmanager's webhook payload (version 4) for request `i`: `PER_REQUEST` alerts
/// of one service, each from its own pod.
fn body(i: usize) -> Value {
    let service = format!("svc-{}", i % SERVICES);
    let alerts: Vec<Value> = (0..PER_REQUEST)
        .map(|j| {
            let pod = format!("{service}-pod-{}", i * PER_REQUEST + j);
            json!({"status": "firing",
                   "labels": {"alertname": "HighErrorRate", "service": service, "env": "staging", "severity": "critical", "pod": pod},
                   "annotations": {"summary": "5xx above 5%"}, "startsAt": "2026-11-26T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                   "generatorURL": "http://prometheus.example:9090/graph"})
        })
        .collect();
    json!({"version": "4", "status": "firing", "receiver": "arf", "groupKey": format!("{{}}:{{service=\"{service}\"}}"),
           "groupLabels": {"service": service}, "commonLabels": {"alertname": "HighErrorRate", "service": service, "env": "staging"},
           "commonAnnotations": {}, "externalURL": "http://alertmanager.example:9093", "truncatedAlerts": 0, "alerts": alerts})
}

/// Starts every role at once and measures each one's time to SERVING.
async fn start_all(plane: &mut support::Plane) -> Vec<(&'static str, Duration)> {
    let started = Instant::now();
    for role in ROLES {
        plane.spawn(role, None);
    }
    let mut times = Vec::new();
    for role in ROLES {
        let plane = &*plane;
        times.push(async move {
            plane.wait_serving(role, Duration::from_millis(10)).await;
            (role, started.elapsed())
        });
    }
    futures::future::join_all(times).await
}

fn report(what: &str, plane: &support::Plane, times: &[(&str, Duration)]) {
    println!("{what}:");
    for (role, time) in times {
        let (rss, peak) = memory(plane.pid(role).unwrap());
        println!("  {role:<9} SERVING after {:>7.0} ms, RSS {rss:>6.1} MB (peak {peak:>6.1} MB)", time.as_secs_f64() * 1000.0);
    }
}

#[tokio::main]
async fn main() {
    let alerts: usize = std::env::var("ARF_BENCH_ALERTS").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let requests = alerts.div_ceil(PER_REQUEST);
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    let times = start_all(&mut plane).await;
    report("start on an empty log (anchor)", &plane, &times);

    // The storm.
    let url = format!("https://{}/v1/webhooks/alertmanager", plane.webhook);
    let token = plane.token("alertmanager");
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let storm = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let client = plane.webhook_client();
            let (url, token, next, accepted) = (url.clone(), token.clone(), Arc::clone(&next), Arc::clone(&accepted));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return;
                    }
                    let response = client.post(&url).bearer_auth(&token).json(&body(i)).send().await.unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    let answer: Value = response.json().await.unwrap();
                    accepted.fetch_add(answer["accepted"].as_array().map_or(0, Vec::len), Ordering::Relaxed);
                }
            })
        })
        .collect();
    futures::future::join_all(workers).await;
    let elapsed = storm.elapsed();
    let accepted = accepted.load(Ordering::Relaxed);
    assert_eq!(accepted, requests * PER_REQUEST, "every alert accepted, so every alert is in the log");
    let (_, agent_peak) = memory(plane.pid("agent").unwrap());
    println!(
        "storm: {accepted} alerts in {requests} requests ({CONNECTIONS} connections, {PER_REQUEST} per request, {SERVICES} services): all in the log after {:.2} s ({:.0} alerts/s); agent peak RSS {agent_peak:.1} MB",
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64()
    );
    // Let the diagnoses the storm opened settle, so the restart reads a quiet log.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (records, _) = plane.auditor().head().await.unwrap();
    for role in ROLES {
        plane.stop(role).await;
    }
    let times = start_all(&mut plane).await;
    report(&format!("restart on a {records}-record log (all four spawned at once, after SIGKILL)"), &plane, &times);
    for role in ROLES {
        plane.stop(role).await;
    }
}
