//! A policy bundle that does not parse is refused before the governor serves, with
//! the file named.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use common::{Setup, default_policies, prepare};
use tokio::net::TcpListener;

#[tokio::test]
async fn a_bundle_with_a_syntax_error_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(default_policies().join("governor.rego"), policies.join("governor.rego")).unwrap();
    std::fs::write(
        policies.join("freeze.rego"),
        "package arf.governor\n\nimport rego.v1\n\nfreeze if {\n  input.x ==\n}\n",
    )
    .unwrap();
    let (config, _) = prepare(&Setup { policies_dir: policies.clone(), ..Setup::default() }, dir.path());

    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("freeze.rego") && error.contains("does not parse"), "{error}");
    assert!(error.contains("policies_dir"), "{error}");

    // `serve` checks too, and refuses before answering anything.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = arf_governor::serve(config, listener, std::future::pending()).await;
    let error = format!("{:#}", served.unwrap_err());
    assert!(error.contains("freeze.rego"), "{error}");
}

#[tokio::test]
async fn the_default_bundle_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = prepare(&Setup::default(), dir.path());
    config.validate().unwrap();
}
