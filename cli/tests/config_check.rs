//! `arf config check`: a deployment file checked as each service would at start,
//! every problem named, nothing started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::process::Command;

fn check(file: &std::path::Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_arf")).args(["config", "check", "--config"]).arg(file).output().unwrap();
    (output.status.code().unwrap(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

#[test]
fn a_deployment_is_checked_section_by_section() {
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_arf")).arg("init").arg("--data-dir").arg(dir.path()).output().unwrap();
    assert!(init.status.success());
    let file = dir.path().join("arf.toml");
    let (code, said) = check(&file);
    assert_eq!(code, 0, "{said}");
    for role in ["audit", "governor", "executor", "agent"] {
        assert!(said.contains(&format!("ok     [{role}]")), "{said}");
    }

    // The agent's key is gone: the agent could not start, and only the agent is named.
    let key = dir.path().join("certs").join("agent.key");
    std::fs::rename(&key, dir.path().join("agent.key.moved")).unwrap();
    let (code, said) = check(&file);
    assert_eq!(code, 64, "{said}");
    assert!(said.contains("error  [agent]") && said.contains("agent.key"), "{said}");
    assert!(said.contains("ok     [governor]") && said.contains("1 of 4 sections"), "{said}");
    std::fs::rename(dir.path().join("agent.key.moved"), &key).unwrap();

    // A section's setting that no service would accept.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("[executor]\n", "[executor]\nmax_concurrent = 0\n")).unwrap();
    let (code, said) = check(&file);
    assert_eq!(code, 64, "{said}");
    assert!(said.contains("error  [executor]") && said.contains("max_concurrent"), "{said}");

    // A file that does not load at all.
    std::fs::write(&file, "[agnet]\n").unwrap();
    let (code, said) = check(&file);
    assert_eq!(code, 64, "{said}");
    assert!(said.contains("unknown section `agnet`"), "{said}");
}
