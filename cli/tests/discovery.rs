//! The CLI finds the deployment it talks to: with `ARF_CONFIG` (or `.arf/arf.toml`
//! in the working directory) it needs no addresses, no certificate directory and
//! no catalog path, from any directory; an address given explicitly still wins.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_find_the_deployment_from_its_file() {
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    for role in ["audit", "governor"] {
        plane.start(role, None).await;
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let arf = |args: &[&str], config: Option<&std::path::Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_arf"));
        command.args(args).current_dir(elsewhere.path()).env("ARF_TOKEN", plane.token("alice"));
        for var in ["ARF_CONFIG", "ARF_AGENT", "ARF_GOVERNOR", "ARF_AUDIT", "ARF_TLS_DIR"] {
            command.env_remove(var);
        }
        if let Some(config) = config {
            command.env("ARF_CONFIG", config);
        }
        command.output().unwrap()
    };
    // The governor on its own port, over mutual TLS, found from the file alone.
    let status = arf(&["autonomy", "status", "--json"], Some(&plane.config));
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"enabled\""), "{}", String::from_utf8_lossy(&status.stdout));
    // Outside the repository, the deployment's catalog.
    let pathways = arf(&["pathways", "list"], Some(&plane.config));
    assert!(pathways.status.success(), "{}", String::from_utf8_lossy(&pathways.stderr));
    assert!(String::from_utf8_lossy(&pathways.stdout).contains("restart_service"), "{}", String::from_utf8_lossy(&pathways.stdout));
    // Without the file the defaults apply: nothing listens there.
    let lost = arf(&["autonomy", "status"], None);
    assert_eq!(lost.status.code(), Some(1), "{}", String::from_utf8_lossy(&lost.stderr));
    // An explicit address wins over the file's.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let explicit = arf(&["autonomy", "status", "--governor", &closed], Some(&plane.config));
    assert_eq!(explicit.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&explicit.stderr).contains(&closed), "{}", String::from_utf8_lossy(&explicit.stderr));
    // A file that does not load is an error, not a silent fall back to defaults.
    let broken = elsewhere.path().join("broken.toml");
    std::fs::write(&broken, "[agnet]\n").unwrap();
    let refused = arf(&["autonomy", "status"], Some(&broken));
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown section `agnet`"), "{}", String::from_utf8_lossy(&refused.stderr));
}

/// `--watch` shows the queue again every few seconds until Ctrl-C, each round after
/// a line with the time when the output is not a terminal (no escape codes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_watch_shows_the_queue_again_until_interrupted() {
    use std::io::BufRead;
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    for role in ["audit", "governor"] {
        plane.start(role, None).await;
    }
    let mut watch = Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["pending", "--watch", "1"])
        .env("ARF_CONFIG", &plane.config)
        .env("ARF_TOKEN", plane.token("alice"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut rounds = 0;
    let mut seen = Vec::new();
    while rounds < 3 {
        let line = lines.recv_timeout(std::time::Duration::from_secs(10)).unwrap_or_else(|_| panic!("no third round within 10 s: {seen:?}"));
        assert!(!line.contains('\u{1b}'), "no escape codes into a pipe: {line:?}");
        rounds += usize::from(line.starts_with("--- "));
        seen.push(line);
    }
    Command::new("kill").arg("-INT").arg(watch.id().to_string()).status().unwrap();
    let status = tokio::task::spawn_blocking(move || watch.wait()).await.unwrap().unwrap();
    assert!(status.success(), "Ctrl-C ends the watch cleanly: {status:?}");
}
