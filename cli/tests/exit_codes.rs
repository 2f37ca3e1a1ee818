//! The exit-code contract, over a real deployment: 0 ok, 1 failure, 2 refused (by
//! any service, for any command: `approve` and `reject` alike), 64 a usage error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_has_its_code_whatever_the_command() {
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    for role in ["audit", "governor"] {
        plane.start(role, None).await;
    }
    let arf = |token: &str, args: &[&str]| -> (i32, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_arf"))
            .args(args)
            .args(["--governor", &plane.addr("governor").to_string(), "--audit", &plane.addr("audit").to_string()])
            .arg("--tls-dir")
            .arg(plane.certs())
            .env("ARF_TOKEN", plane.token(token))
            .output()
            .unwrap();
        (output.status.code().unwrap(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    // Usage errors: 64, never 2.
    for args in [&["approve"][..], &["no-such-command"][..], &["reject", "dec-1"][..]] {
        assert_eq!(arf("alice", args).0, 64, "{args:?}");
    }
    assert_eq!(arf("alice", &["--help"]).0, 0);
    // Refused by the governor, for approve and reject alike: 2.
    for args in [&["approve", "dec-none"][..], &["reject", "dec-none", "--reason", "no"][..], &["autonomy", "status"][..]] {
        let (code, stderr) = arf("alertmanager", args);
        assert_eq!(code, 2, "a signal source is refused: {args:?}: {stderr}");
        assert!(stderr.contains("refused by the governor"), "{stderr}");
    }
    let (code, stderr) = arf("alice", &["autonomy", "on", "--reason", "back to normal"]);
    assert_eq!(code, 2, "only an admin switches autonomy on: {stderr}");
    // Not found is a failure, not a refusal: 1, for approve and reject alike.
    for args in [&["approve", "dec-none"][..], &["reject", "dec-none", "--reason", "no"][..]] {
        let (code, stderr) = arf("alice", args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
    }
    // The log refuses a token it does not know: 2; an unreachable service: 1.
    let output = Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["incident", "show", "inc-none", "--audit", &plane.addr("audit").to_string(), "--tls-dir"])
        .arg(plane.certs())
        .env("ARF_TOKEN", "f".repeat(64))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_arf")).args(["pending", "--governor", &closed, "--token", "t"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    // And ok is 0.
    assert_eq!(arf("alice", &["autonomy", "status"]).0, 0);
}
