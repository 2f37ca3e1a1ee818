//! `arf config check`: a deployment file checked as each service would at start,
//! every problem named, nothing started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::process::Command;

fn check(file: &std::path::Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_arf")).args(["config", "check", "--config"]).arg(file).output().unwrap();
    (output.status.code().unwrap(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// A new deployment, as `arf init` writes it, and its file.
fn init() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_arf")).arg("init").arg("--data-dir").arg(dir.path()).output().unwrap();
    assert!(init.status.success());
    let file = dir.path().join("arf.toml");
    (dir, file)
}

#[test]
fn a_deployment_is_checked_section_by_section() {
    let (dir, file) = init();
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

/// A new deployment's file documents the target inventory by example, under its
/// empty `[targets]`; the example, uncommented, is a deployment that loads.
#[test]
fn the_inventory_example_in_a_new_file_is_valid() {
    let (_dir, file) = init();
    let text = std::fs::read_to_string(&file).unwrap();
    let (_, example) = text.split_once("\n[targets]\n").expect("`[targets]` is in the file");
    assert!(example.contains("# [targets.checkout-production]"), "{example}");
    // Uncomment the TOML lines: tables and `key = value` lines.
    let uncommented: String = example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.starts_with("[targets.") || rest.split_once(" = ").is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_')) => rest.to_owned(),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, text.replace(example, &uncommented)).unwrap();
    let (code, said) = check(&file);
    assert_eq!(code, 0, "{said}\n{uncommented}");
    let loaded: toml::Table = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    let targets = loaded["targets"].as_table().unwrap();
    assert_eq!(targets.keys().collect::<Vec<_>>(), ["checkout-db-production", "checkout-production"]);
    assert_eq!(targets["checkout-production"]["facts"]["kube_context"].as_str(), Some("prod"));
}

/// A new deployment configures the bundled investigation tools, and lets the agent
/// log their calls; a file from before the `investigation` record kind, or one
/// with a tool that writes, is named as a problem.
#[test]
fn investigation_tools_are_checked_and_their_calls_must_be_loggable() {
    let (dir, file) = init();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("[agent.investigation]"), "{text}");
    std::fs::write(&file, text.replace("\"snapshot\",\n    \"investigation\",", "\"snapshot\",")).unwrap();
    let (code, said) = check(&file);
    assert_eq!(code, 64, "{said}");
    assert!(said.contains("error  [agent]") && said.contains("lacks `investigation`"), "{said}");
    std::fs::write(&file, &text).unwrap();

    let tools = dir.path().join("config").join("tools").join("kubernetes.toml");
    let kubernetes = std::fs::read_to_string(&tools).unwrap();
    std::fs::write(&tools, kubernetes.replacen("args = [\"get\"", "args = [\"delete\"", 1)).unwrap();
    let (code, said) = check(&file);
    assert_eq!(code, 64, "{said}");
    assert!(said.contains("error  [agent]") && said.contains("`delete` is not a read-only verb of `kubectl`"), "{said}");
}

fn migrate(file: &std::path::Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_arf")).args(["config", "migrate", "--config"]).arg(file).output().unwrap();
    (output.status.code().unwrap(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// A file as an older `arf` wrote it (no mutual TLS, no revocation list, no
/// `investigation` record kind or tools) is brought up to date by `arf config
/// migrate`, keeping its own settings; a second run changes nothing.
#[test]
fn an_older_file_is_migrated_keeping_its_settings() {
    let (dir, file) = init();
    let mut old: toml::Table = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for role in ["audit", "governor", "executor"] {
        old[role].as_table_mut().unwrap().remove("mtls");
    }
    old["agent"]["mtls"].as_table_mut().unwrap().remove("crl_file");
    let agent_kinds = old["audit"]["writer_kinds"]["agent"].as_array_mut().unwrap();
    agent_kinds.retain(|k| k.as_str() != Some("investigation"));
    let agent = old["agent"].as_table_mut().unwrap();
    agent.remove("investigation");
    agent.remove("state_dir");
    agent.insert("group_window_secs".into(), toml::Value::Integer(600));
    std::fs::write(&file, toml::to_string(&old).unwrap()).unwrap();
    let (code, said) = check(&file);
    assert_eq!(code, 64, "an older file does not start as it is: {said}");

    let (code, said) = migrate(&file);
    assert_eq!(code, 0, "{said}");
    for change in ["[audit.mtls]", "[governor.mtls]", "[executor.mtls]", "[agent.mtls] crl_file", "audit.writer_kinds.agent: + \"investigation\"", "[agent.investigation]", "agent.state_dir"] {
        assert!(said.contains(change), "`{change}` in:\n{said}");
    }
    assert!(said.contains("is a deployment every service can start from"), "{said}");
    let new: toml::Table = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(new["agent"]["group_window_secs"].as_integer(), Some(600), "its own settings are kept");
    assert!(new["executor"]["mtls"]["crl_file"].is_str());
    assert!(dir.path().join("arf.toml.before-migrate").exists(), "the old file is kept");

    let (code, said) = migrate(&file);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("is up to date: nothing changed"), "{said}");
}

/// `arf config check` names a database setting a service would refuse: a password
/// in the URL, a server elsewhere without TLS, a CA file that does not load, a
/// replica whose log is not in its database.
#[test]
fn a_database_setting_a_service_would_refuse_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_arf")).arg("init").arg("--data-dir").arg(dir.path()).output().unwrap();
    assert!(init.status.success());
    let config = dir.path().join("arf.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    let cases = [
        ("[audit.postgres]\nurl = \"postgres://arf:hunter2@127.0.0.1/arf\"\n", "audit.postgres", "password_file"),
        ("[executor.postgres]\nurl = \"postgres://arf@db.example.com/arf\"\n", "executor.postgres", "not on this host"),
        ("[audit.postgres]\nurl = \"postgres://arf@db.example.com/arf\"\ntls = { ca_file = \"/nonexistent/ca.pem\" }\n", "audit.postgres", "ca_file"),
        // A replica's appends are fenced by its lease, which a log in files cannot check.
        ("[executor.postgres]\nurl = \"postgres://arf@127.0.0.1/arf\"\n", "error  [executor]: `executor.postgres` is set", "`audit.postgres` is not set"),
        (
            "[audit.postgres]\nurl = \"postgres://arf@127.0.0.1/arf\"\n[agent.postgres]\nurl = \"postgres://arf@127.0.0.1/agents\"\n",
            "error  [agent]: `agent.postgres` and `audit.postgres`",
            "different databases",
        ),
    ];
    for (section, names, why) in cases {
        std::fs::write(&config, format!("{original}\n{section}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_arf")).args(["config", "check", "--config"]).arg(&config).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(64), "{section}: {text}");
        assert!(text.contains(names) && text.contains(why) && !text.contains("hunter2"), "{section}: {text}");
    }
}
