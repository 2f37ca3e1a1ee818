//! The configuration: defaults, unknown fields, and what `validate` refuses before
//! any port is bound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use arf_governor::{Config, Identity};
use common::{Setup, prepare};

#[test]
fn a_minimal_toml_config_gets_the_documented_defaults() {
    let config: Config = toml::from_str(
        r#"
data_dir = "/var/lib/arf/governor"
audit_token_file = "/etc/arf/governor-audit.token"
policies_dir = "/etc/arf/policies"
catalog_dir = "/etc/arf/pathways"
signing_key_file = "/var/lib/arf/governor/governor.key"
identities = [{ name = "agent", role = "agent", token_file = "/etc/arf/agent.token" }]

[targets.web-prod]
service = "web"
environment = "production"
security_sensitive = true

[risk]
confidence = 0.2
"#,
    )
    .unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:7402");
    assert_eq!(config.audit_addr, "127.0.0.1:7400");
    assert_eq!(config.executor_addr, "127.0.0.1:7403");
    assert_eq!(config.decision_ttl_secs, 900);
    assert_eq!(config.environments.get("production"), Some(&1.0));
    assert_eq!(config.environments.get("staging"), Some(&0.3));
    assert_eq!(config.environments.get("development"), Some(&0.1));
    assert_eq!(config.targets["web-prod"].tier, "standard");
    assert_eq!(config.risk.confidence, 0.2);
    assert_eq!(config.risk.environment, 0.2, "unset weights keep their defaults");

    let unknown = toml::from_str::<Config>("data_dir = \"x\"\nlisten_addr = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(unknown.to_string().contains("listen_addr"), "{unknown}");
}

/// Applies `change` to a valid config and expects `validate` to refuse it with every fragment.
fn check(name: &str, change: impl FnOnce(&mut Config, &std::path::Path), fragments: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = prepare(&Setup::default(), dir.path());
    change(&mut config, dir.path());
    let error = match config.validate() {
        Ok(()) => panic!("case `{name}`: accepted"),
        Err(error) => error.to_string(),
    };
    for fragment in fragments {
        assert!(error.contains(fragment), "case `{name}`: `{error}` lacks `{fragment}`");
    }
}

#[test]
fn validate_refuses_bad_configs_naming_the_field() {
    check("ttl zero", |c, _| c.decision_ttl_secs = 0, &["`governor.decision_ttl_secs`", "got `0`"]);
    check("ttl of a year", |c, _| c.decision_ttl_secs = 365 * 24 * 3600, &["`governor.decision_ttl_secs`"]);
    check(
        "unknown role",
        |c, _| c.identities[1].role = "sre".into(),
        &["`governor.identities[1].role`", "unknown role `sre`"],
    );
    check(
        "duplicate name",
        |c, _| c.identities[2].name = "alice".into(),
        &["`governor.identities[2].name`", "`alice` is listed twice"],
    );
    check(
        "shared token",
        |c, _| c.identities[2].token_file = c.identities[1].token_file.clone(),
        &["`governor.identities[2].token_file`", "share a token"],
    );
    check(
        "missing token file",
        |c, dir| {
            c.identities.push(Identity { name: "zed".into(), role: "oncall".into(), token_file: Some(dir.join("nope")), token_sha256: None, services: Vec::new(), environments: Vec::new() })
        },
        &["`governor.identities[6].token_file`", "nope"],
    );
    check(
        "short token",
        |c, dir| {
            std::fs::write(dir.join("short.token"), "abc").unwrap();
            c.identities[0].token_file = Some(dir.join("short.token"));
        },
        &["`governor.identities[0].token_file`"],
    );
    check("no identities", |c, _| c.identities.clear(), &["`governor.identities`"]);
    check("no audit token", |c, dir| c.audit_token_file = dir.join("nope"), &["`governor.audit_token_file`"]);
    check("negative weight", |c, _| c.risk.base_risk = -1.0, &["`governor.risk`", "`base_risk`"]);
    check(
        "sensitivity out of range",
        |c, _| {
            c.environments.insert("staging".into(), 1.5);
        },
        &["`governor.environments.staging`"],
    );
    check("no catalog", |c, dir| c.catalog_dir = dir.join("nope"), &["`governor.catalog_dir`"]);
    check("no policies", |c, dir| c.policies_dir = dir.join("nope"), &["`governor.policies_dir`"]);
    check(
        "empty policy directory",
        |c, dir| {
            std::fs::create_dir_all(dir.join("empty")).unwrap();
            c.policies_dir = dir.join("empty");
        },
        &["holds no `.rego` files"],
    );
    check(
        "signing key readable by others",
        |c, dir| {
            std::fs::write(dir.join("open.key"), "00".repeat(32)).unwrap();
            c.signing_key_file = dir.join("open.key");
        },
        &["`governor.signing_key_file`", "0600"],
    );
}
