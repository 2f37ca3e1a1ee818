//! A service the CLI cannot reach is named with its address and the option that
//! points the CLI elsewhere, not a bare "tcp connect error".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::process::Command;

#[test]
fn an_unreachable_service_is_named_with_its_address() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let cases = [
        (vec!["--agent", closed.as_str(), "--token", "t", "incident", "list"], "cannot reach the agent at", "--agent"),
        (vec!["--governor", closed.as_str(), "--token", "t", "pending"], "cannot reach the governor at", "--governor"),
    ];
    for (args, what, option) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_arf")).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains(&format!("{what} {closed}")) && stderr.contains(option), "{args:?}: {stderr}");
    }
}
