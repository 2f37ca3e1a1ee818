//! Four services on four network stacks: each runs as its own binary
//! (`arf-audit`, `arf-agent`, …) in its own Linux network namespace with its own address, joined by a bridge (no loopback shortcut), and
//! they talk over mutual TLS. One alert goes in over HTTPS; the incident ends in
//! exactly one verified restart of the target, which lives on the host side.
//!
//! Needs root (or CAP_NET_ADMIN) to make namespaces, as CI has. The namespaces,
//! the bridge and their links are removed when the test ends, pass or fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

const ROLES: [&str; 4] = ["audit", "governor", "executor", "agent"];

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("the `ip` command (iproute2)");
    assert!(output.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
}

/// A bridge on the host and one namespace per role, each with a veth into the bridge.
struct Network {
    bridge: String,
    namespaces: Vec<(&'static str, String)>,
    /// The host's address on the bridge, and each role's.
    host: String,
    addresses: Vec<(&'static str, String)>,
}

impl Network {
    fn create() -> Self {
        let id = std::process::id() % 10_000;
        let subnet = format!("10.231.{}", std::process::id() % 250);
        let bridge = format!("arfbr{id}");
        let mut network = Self { bridge: bridge.clone(), namespaces: Vec::new(), host: format!("{subnet}.254"), addresses: Vec::new() };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}/24", network.host), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for (i, role) in ROLES.iter().enumerate() {
            let namespace = format!("arf{id}-{role}");
            ip(&["netns", "add", &namespace]);
            network.namespaces.push((role, namespace.clone()));
            let outside = format!("arf{id}v{i}");
            ip(&["link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &namespace]);
            ip(&["link", "set", &outside, "master", &bridge, "up"]);
            let address = format!("{subnet}.{}", i + 1);
            ip(&["-n", &namespace, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
            ip(&["-n", &namespace, "link", "set", "eth0", "up"]);
            ip(&["-n", &namespace, "link", "set", "lo", "up"]);
            network.addresses.push((role, address));
        }
        network
    }

    fn address(&self, role: &str) -> &str {
        &self.addresses.iter().find(|(r, _)| *r == role).unwrap().1
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for (_, namespace) in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", namespace]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_flows_between_four_network_namespaces_over_mutual_tls() {
    let network = Network::create();
    let (target_url, restarts) = support::counting_target(&network.host).await;
    let at = |role: &str, port: u16| -> SocketAddr { format!("{}:{port}", network.address(role)).parse().unwrap() };
    let placement = support::Placement {
        ports: [("audit", at("audit", 7400)), ("governor", at("governor", 7402)), ("executor", at("executor", 7403)), ("agent", at("agent", 7401))],
        webhook: at("agent", 7480),
        hosts: ROLES.iter().map(|r| network.address(r).to_owned()).collect(),
        namespaces: network.namespaces.clone(),
        // Each service as it would be deployed: its own binary, on its own network stack.
        own_binaries: true,
    };
    let mut plane = support::Plane::prepare_at(&target_url, placement).await;
    let config = std::fs::read_to_string(&plane.config).unwrap();
    assert!(!config.contains("insecure_loopback_only") && !config.contains("127.0.0.1:74"), "no plain text, no loopback:\n{config}");
    for role in ROLES {
        plane.start(role, None).await;
    }
    // Each service sees only its own address and loopback.
    for (role, namespace) in &network.namespaces {
        let output = Command::new("ip").args(["-n", namespace, "-brief", "addr"]).output().unwrap();
        let addresses = String::from_utf8_lossy(&output.stdout);
        for (other, address) in &network.addresses {
            assert_eq!(addresses.contains(&format!("{address}/")), other == role, "{role}'s namespace: {addresses}");
        }
    }

    let incident = plane.fire().await;
    let trail = plane
        .trail_until(&incident, Duration::from_secs(60), "the restart verifying", |t| {
            t.iter().any(|r| r.writer == "governor" && r.payload["state"] == "verified")
        })
        .await;
    assert_eq!(restarts.load(Ordering::SeqCst), 1, "the target was restarted once:\n{}", support::summary(&trail));
    let writers: std::collections::BTreeSet<&str> = trail.iter().map(|r| r.writer.as_str()).collect();
    assert_eq!(writers, ["agent", "executor", "governor"].into_iter().collect(), "each service wrote its part, named by its certificate");
}
