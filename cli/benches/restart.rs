//! A storm, then a restart, over real processes: the four services as `arf serve`
//! processes of a deployment made by `arf init` (mutual TLS, the audit log syncing
//! every batch before the agent answers).
//!
//! 1. Start on an empty log: the anchor for the restart below, in the same run.
//! 2. The storm: 100,000 firing alerts through the Alertmanager webhook over 16
//!    concurrent HTTPS connections, 50 alerts per request as Alertmanager groups
//!    them, from 50 services, each alert from its own pod. Measured: the time until
//!    every alert is accepted (accepted means in the log), and the agent's peak RSS.
//! 3. History: 5,000 incidents, one service each, each opened by an alert,
//!    diagnosed and resolved, with done incidents leaving memory at once
//!    (`agent.retain_incidents_secs = 0`). Measured: the agent's and governor's RSS
//!    before and after, and how many incidents the agent still holds.
//! 4. Every process killed (SIGKILL), then all four started at once on the log the
//!    storm and the history left. Measured: each one's time from spawn to SERVING on
//!    its health check (the agent and governor serve only once they have rebuilt
//!    their state from the log), and each one's RSS once all serve.
//! 5. The agent and the governor save state snapshots; every process killed again
//!    and started at once, the agent and governor from their snapshots. Measured as in 4.
//!
//! `cargo bench -p arf-cli --bench restart`. `ARF_BENCH_ALERTS` and
//! `ARF_BENCH_INCIDENTS` change the counts.

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

/// An alert about a service of its own, `firing` or `resolved`: one incident of history.
fn passing(i: usize, status: &str) -> Value {
    let labels = json!({"alertname": "DiskAlmostFull", "service": format!("hist-{i}"), "env": "staging", "severity": "warning"});
    json!({"version": "4", "status": status, "receiver": "arf", "groupKey": format!("{{}}:{{service=\"hist-{i}\"}}"),
           "groupLabels": {}, "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://alertmanager.example:9093",
           "alerts": [{"status": status, "labels": labels, "annotations": {"summary": "disk 91% full"},
                       "startsAt": "2026-11-26T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus.example:9090/graph"}]})
}

/// How many incidents the agent holds in memory (`ListIncidents` lists those), by state.
async fn incidents_held(plane: &support::Plane) -> String {
    use arf_proto::v1::agent_client::AgentClient;
    let token = plane.token("alice");
    let mut agent = AgentClient::with_interceptor(plane.channel("agent"), arf_proto::server::Bearer::new(Some(token.as_str())));
    let incidents = agent.list_incidents(arf_proto::v1::ListIncidentsRequest {}).await.unwrap().into_inner().incidents;
    let mut states = std::collections::BTreeMap::<String, usize>::new();
    for incident in &incidents {
        *states.entry(incident.state.clone()).or_default() += 1;
    }
    let states: Vec<String> = states.iter().map(|(state, n)| format!("{n} {state}")).collect();
    format!("{} ({})", incidents.len(), states.join(", "))
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
    let history: usize = std::env::var("ARF_BENCH_INCIDENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(5_000);
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    // Done incidents leave the agent's memory at once (the default keeps them an hour).
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&plane.config).unwrap()).unwrap();
    config["agent"].as_table_mut().unwrap().insert("retain_incidents_secs".into(), 0.into());
    // No governor snapshot before the anchor's restart (the agent saves none without
    // `snapshot_every_records` reached either): both fold the whole log there.
    config["governor"].as_table_mut().unwrap().insert("snapshot_check_secs".into(), 3600.into());
    std::fs::write(&plane.config, toml::to_string(&config).unwrap()).unwrap();
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
    // Let the diagnoses the storm opened settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // History: incidents that come and go.
    let before: Vec<(f64, f64)> = ["agent", "governor"].iter().map(|role| memory(plane.pid(role).unwrap())).collect();
    let began = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let client = plane.webhook_client();
            let (url, token, next) = (url.clone(), token.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= history {
                        return;
                    }
                    for status in ["firing", "resolved"] {
                        let response = client.post(&url).bearer_auth(&token).json(&passing(i, status)).send().await.unwrap();
                        assert!(response.status().is_success(), "{}", response.status());
                    }
                }
            })
        })
        .collect();
    futures::future::join_all(workers).await;
    // The diagnoses finish, and done incidents leave memory (the agent looks every second).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = incidents_held(&plane).await;
    println!("history: {history} incidents opened, diagnosed and resolved in {:.1} s; the agent holds {held} incidents", began.elapsed().as_secs_f64());
    for (role, (rss, peak)) in ["agent", "governor"].iter().zip(before) {
        let (now, now_peak) = memory(plane.pid(role).unwrap());
        println!("  {role:<9} RSS {rss:>6.1} MB (peak {peak:>6.1}) before, {now:>6.1} MB (peak {now_peak:>6.1}) after");
    }
    let (records, _) = plane.auditor().head().await.unwrap();
    for role in ROLES {
        plane.stop(role).await;
    }
    let times = start_all(&mut plane).await;
    report(&format!("restart on a {records}-record log (all four spawned at once, after SIGKILL), folding the whole log (anchor)"), &plane, &times);
    let held = incidents_held(&plane).await;
    println!("  the restarted agent holds {held} incidents");

    // The agent and the governor save state snapshots (not during the storm above,
    // whose figures they would share the CPU with): then the same restart starts from them.
    plane.stop("agent").await;
    plane.stop("governor").await;
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&plane.config).unwrap()).unwrap();
    let mut files = Vec::new();
    for (role, dir) in [("agent", "state_dir"), ("governor", "data_dir")] {
        let section = config[role].as_table_mut().unwrap();
        section.insert("snapshot_every_records".into(), 1.into());
        section.insert("snapshot_check_secs".into(), 1.into());
        files.push((role, std::path::PathBuf::from(section[dir].as_str().unwrap())));
    }
    std::fs::write(&plane.config, toml::to_string(&config).unwrap()).unwrap();
    plane.start("governor", None).await;
    plane.start("agent", None).await;
    let folding = Instant::now();
    let mut through = Vec::new();
    for (role, dir) in &files {
        let (seq, file) = loop {
            let read = match *role {
                "agent" => arf_agent::snapshot::read(dir).ok().flatten().map(|s| (s.saved.through_seq, arf_agent::snapshot::path(dir))),
                _ => arf_governor::snapshot::read(dir).ok().flatten().map(|s| (s.saved.through_seq, arf_governor::snapshot::path(dir))),
            };
            if let Some(read) = read {
                break read;
            }
            assert!(folding.elapsed() < Duration::from_secs(120), "no {role} state snapshot was saved");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let bytes = std::fs::metadata(file).unwrap().len();
        println!(
            "{role} state snapshot: folded through record {seq}, saved {:.2} s after the start, {:.1} kB",
            folding.elapsed().as_secs_f64(),
            bytes as f64 / 1000.0
        );
        through.push(format!("{role} through record {seq}"));
    }
    let (records, _) = plane.auditor().head().await.unwrap();
    for role in ROLES {
        plane.stop(role).await;
    }
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&plane.config).unwrap()).unwrap();
    for role in ["agent", "governor"] {
        config[role].as_table_mut().unwrap().insert("snapshot_check_secs".into(), 3600.into());
    }
    std::fs::write(&plane.config, toml::to_string(&config).unwrap()).unwrap();
    let times = start_all(&mut plane).await;
    report(&format!("restart on a {records}-record log from the agent's and the governor's state snapshots ({})", through.join(", ")), &plane, &times);
    let held = incidents_held(&plane).await;
    println!("  the restarted agent holds {held} incidents");
    for role in ROLES {
        plane.stop(role).await;
    }
}
