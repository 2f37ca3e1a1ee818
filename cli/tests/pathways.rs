//! `arf pathways list|show|schema`, as an operator runs them against the shipped
//! catalog, and what they say about a catalog that does not load.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/pathways")
}

fn arf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arf")).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const SHIPPED: [&str; 8] = [
    "block_public_bucket",
    "isolate_workload",
    "pin_dependency",
    "restart_service",
    "revert_config_commit",
    "rollback_deployment",
    "rotate_credential",
    "scale_deployment",
];

#[test]
fn list_names_every_shipped_pathway_in_text_and_json() {
    let catalog = examples();
    let catalog = catalog.to_str().unwrap();
    let text = arf(&["pathways", "list", "--catalog", catalog]);
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let text = stdout(&text);
    assert!(text.starts_with("NAME"), "{text}");
    for name in SHIPPED {
        assert!(text.lines().any(|l| l.starts_with(name)), "`{name}` missing from:\n{text}");
    }

    let json = arf(&["pathways", "list", "--catalog", catalog, "--json"]);
    assert!(json.status.success());
    let all: Vec<Value> = serde_json::from_str(&stdout(&json)).unwrap();
    let mut names: Vec<&str> = all.iter().map(|p| p["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert!(SHIPPED.iter().all(|n| names.contains(n)), "{names:?}");
    for p in &all {
        assert_eq!(p["digest"].as_str().unwrap().len(), 64, "{p}");
        assert!(p["reversible"].is_boolean() && p["base_risk"].is_number(), "{p}");
    }
}

#[test]
fn show_prints_one_pathway_whole_in_toml_and_json() {
    let catalog = examples();
    let catalog = catalog.to_str().unwrap();
    let json = arf(&["pathways", "show", "revert_config_commit", "--catalog", catalog, "--json"]);
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let pathway: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(pathway["name"], "revert_config_commit");
    assert!(pathway["action"].as_array().is_some_and(|a| !a.is_empty()), "{pathway}");
    assert!(pathway["verify"]["probes"].as_array().is_some_and(|p| !p.is_empty()), "{pathway}");
    assert!(pathway["parameters"]["type"] == "object", "{pathway}");

    // The TOML form reads back as the same pathway, and names its digest.
    let text = arf(&["pathways", "show", "revert_config_commit", "--catalog", catalog]);
    assert!(text.status.success());
    let text = stdout(&text);
    let (header, body) = text.split_once('\n').unwrap();
    assert_eq!(header, format!("# revert_config_commit (digest {})", pathway["digest"].as_str().unwrap()));
    let reread: arf_core::catalog::Pathway = toml::from_str(body).unwrap();
    let mut shown = pathway.clone();
    shown.as_object_mut().unwrap().remove("digest");
    assert_eq!(reread, serde_json::from_value::<arf_core::catalog::Pathway>(shown).unwrap());
}

#[test]
fn an_unknown_pathway_and_a_broken_catalog_are_errors_that_say_why() {
    let catalog = examples();
    let unknown = arf(&["pathways", "show", "run_shell", "--catalog", catalog.to_str().unwrap()]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown pathway `run_shell`"));

    let dir = tempfile::tempdir().unwrap();
    let broken = std::fs::read_to_string(catalog.join("restart_service.toml")).unwrap().replace("timeout_secs", "timeout_seconds");
    assert!(broken.contains("timeout_seconds"), "the example changed; pick another field to break");
    std::fs::write(dir.path().join("restart_service.toml"), broken).unwrap();
    let output = arf(&["pathways", "list", "--catalog", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("restart_service.toml") && stderr.contains("pathway `restart_service`") && stderr.contains("timeout_seconds"),
        "{stderr}"
    );
}

#[test]
fn schema_is_the_published_json_schema() {
    let output = arf(&["pathways", "schema"]);
    assert!(output.status.success());
    let schema: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(schema, arf_core::catalog::pathway_schema());
}
