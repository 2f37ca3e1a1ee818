//! `arf up`: four separate OS processes on the default ports, each answering the
//! gRPC health check, stopped cleanly by a signal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

#[test]
fn up_runs_four_healthy_processes_on_the_default_ports() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // `arf up` prints one line per service once every one answers its health check.
    let mut services = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [role, addr, "pid", pid] = words.as_slice() {
            services.push((role.to_string(), addr.to_string(), pid.parse::<u32>().unwrap()));
        }
    }
    let expected = [("audit", "127.0.0.1:7400"), ("governor", "127.0.0.1:7402"), ("executor", "127.0.0.1:7403"), ("agent", "127.0.0.1:7401")];
    let found: Vec<(&str, &str)> = services.iter().map(|(r, a, _)| (r.as_str(), a.as_str())).collect();
    assert_eq!(found, expected);
    let mut pids: Vec<u32> = services.iter().map(|s| s.2).collect();
    pids.push(up.id());
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 5, "four service processes besides `arf up` itself");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (role, addr, pid) in &services {
        // Over mutual TLS, with the certificate `arf up` made for the CLI.
        let dial = support::client_dial(&dir.path().join("certs"), role);
        assert!(runtime.block_on(support::serving_tls(addr.parse().unwrap(), &dial)), "{role} on {addr} answers the health check");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(cmdline.contains(&format!("serve {role}")), "{cmdline}");
    }

    let up_pid = up.id();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(up.wait());
    });
    Command::new("kill").arg("-INT").arg(up_pid.to_string()).status().unwrap();
    let status = exit.recv_timeout(Duration::from_secs(20)).expect("`arf up` stops within 20 s").unwrap();
    assert!(status.success(), "`arf up` stops cleanly: {status:?}");
    for (role, _, pid) in &services {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(*pid), "{role} stopped");
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
}

/// A second `arf up` whose ports are taken says so and starts nothing, rather
/// than reporting "ARF is up" from health checks the first instance answered.
#[test]
fn up_on_a_taken_port_names_it_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_arf")).arg("init").arg("--data-dir").arg(dir.path()).output().unwrap();
    assert!(init.status.success());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let config = dir.path().join("arf.toml");
    // Every other address is free and its own, so the test that uses the default
    // ports can run beside this one.
    let mut text = std::fs::read_to_string(&config).unwrap().replace("\"127.0.0.1:7402\"", &format!("\"{addr}\""));
    for port in [7400, 7401, 7403, 7480, 7410, 7411, 7412, 7413] {
        let free = arf_core::net::free_loopback_port().unwrap().to_string();
        text = text.replace(&format!("\"127.0.0.1:{port}\""), &format!("\"{free}\""));
    }
    std::fs::write(&config, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_arf")).arg("up").arg("--config").arg(&config).arg("--data-dir").arg(dir.path()).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "{stdout}");
    assert!(!stdout.contains("ARF is up"), "{stdout}");
    assert!(stderr.contains(&format!("the governor address {addr} is not free")) && stderr.contains("Nothing was started"), "{stderr}");
}

/// `arf up --port-base` moves a deployment to other ports: it writes them into the
/// deployment's file, serves there, and the CLI, reading the file, finds them.
#[test]
fn up_moves_to_a_port_base_and_the_cli_follows() {
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_arf")).arg("init").arg("--data-dir").arg(dir.path()).output().unwrap();
    assert!(init.status.success());
    let base = support::free_port_base();
    let mut up = Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["up", "--port-base", &base.to_string(), "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up_pid = up.id();
    let stdout = up.stdout.take().unwrap();
    let mut services = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        if let [role, addr, "pid", _] = line.split_whitespace().collect::<Vec<_>>().as_slice() {
            services.push(format!("{role} {addr}"));
        }
    }
    let at = |offset: u16| format!("127.0.0.1:{}", base + offset);
    assert_eq!(services, [format!("audit {}", at(0)), format!("governor {}", at(2)), format!("executor {}", at(3)), format!("agent {}", at(1))]);
    let config = std::fs::read_to_string(dir.path().join("arf.toml")).unwrap();
    assert!(config.contains(&format!("webhook_listen = \"{}\"", at(80))) && config.contains(&format!("executor_addr = \"{}\"", at(3))), "{config}");

    let token = std::fs::read_to_string(dir.path().join("secrets").join("alice.token")).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_arf"))
        .arg("status")
        .env("ARF_CONFIG", dir.path().join("arf.toml"))
        .env("ARF_TOKEN", token.trim())
        .env_remove("ARF_AGENT")
        .env_remove("ARF_GOVERNOR")
        .env_remove("ARF_AUDIT")
        .env_remove("ARF_EXECUTOR")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{shown}{}", String::from_utf8_lossy(&status.stderr));
    assert!(shown.contains(&at(0)) && shown.contains(&at(3)) && shown.contains(env!("CARGO_PKG_VERSION")), "{shown}");

    // Its output's reader has gone (as with `arf up | head`): it still stops cleanly.
    Command::new("kill").arg("-INT").arg(up_pid.to_string()).status().unwrap();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(up.wait());
    });
    assert!(exit.recv_timeout(Duration::from_secs(20)).expect("`arf up` stops within 20 s").unwrap().success());
}
