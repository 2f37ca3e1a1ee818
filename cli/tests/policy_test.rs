//! `arf policy test DIR`: passes the default bundle's cases with exit 0, and exits 1
//! naming the case that failed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::path::PathBuf;
use std::process::Command;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

#[test]
fn the_default_bundle_passes_its_cases() {
    let output = Command::new(env!("CARGO_BIN_EXE_arf")).args(["policy", "test"]).arg(examples()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let summary = stdout.lines().last().unwrap();
    let passed: usize = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 40 && summary.contains(" 0 failed"), "{summary}");
}

#[test]
fn a_failing_case_exits_1_and_says_what_differed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(examples().join("governor.rego"), dir.path().join("governor.rego")).unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::copy(examples().join("tests/base.input.json"), dir.path().join("tests/base.input.json")).unwrap();
    std::fs::write(
        dir.path().join("tests/wrong.cases.json"),
        r#"{ "cases": [ { "name": "low confidence runs alone", "with": { "confidence": 0.1 }, "route": "autonomous", "rules_fired": [] } ] }"#,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_arf")).args(["policy", "test"]).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  wrong.cases.json / low confidence runs alone"), "{stdout}");
    assert!(stdout.contains("route: expected `autonomous`, got `deny`"), "{stdout}");
}

#[test]
fn a_broken_bundle_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.rego"), "package arf.governor\nimport rego.v1\ndecision := {\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_arf")).args(["policy", "test"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("broken.rego") && stderr.contains("does not parse"), "{stderr}");
}
