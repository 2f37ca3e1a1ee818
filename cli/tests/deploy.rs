//! The files in `deploy/` stay true: each service has a systemd unit that runs its
//! own binary as its own user, sandboxed, and that `systemd-analyze verify`
//! accepts without a warning; the Dockerfile builds the four binaries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::path::{Path, PathBuf};
use std::process::Command;

const ROLES: [&str; 4] = ["audit", "agent", "governor", "executor"];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn each_service_has_a_sandboxed_unit_of_its_own() {
    let users = std::fs::read_to_string(deploy().join("systemd/arf.sysusers.conf")).unwrap();
    for role in ROLES {
        let unit = std::fs::read_to_string(deploy().join(format!("systemd/arf-{role}.service"))).unwrap();
        let has = |line: &str| unit.lines().any(|l| l.trim() == line);
        for line in [
            format!("User=arf-{role}"),
            format!("ExecStart=/usr/local/bin/arf-{role} --config /etc/arf/arf.toml"),
            format!("StateDirectory=arf-{role}"),
            "NoNewPrivileges=yes".to_owned(),
            "ProtectSystem=strict".to_owned(),
            "CapabilityBoundingSet=".to_owned(),
        ] {
            assert!(has(&line), "arf-{role}.service lacks `{line}`");
        }
        assert!(users.lines().any(|l| l.starts_with(&format!("u arf-{role} "))), "sysusers creates arf-{role}");

        // systemd's own check, with the binary where this build put it.
        let built = Path::new(env!("CARGO_BIN_EXE_arf")).with_file_name(format!("arf-{role}"));
        assert!(built.exists(), "{} is built by `cargo test --workspace`", built.display());
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(format!("arf-{role}.service"));
        std::fs::write(&copy, unit.replace(&format!("/usr/local/bin/arf-{role}"), built.to_str().unwrap())).unwrap();
        let verified = Command::new("systemd-analyze").arg("verify").arg(&copy).output().expect("systemd-analyze (the `systemd` package)");
        let said = format!("{}{}", String::from_utf8_lossy(&verified.stdout), String::from_utf8_lossy(&verified.stderr));
        let complaints: Vec<&str> = said.lines().filter(|l| l.contains(&format!("arf-{role}.service"))).collect();
        assert!(verified.status.success() && complaints.is_empty(), "systemd-analyze verify arf-{role}.service:\n{said}");
    }
}

#[test]
fn the_dockerfile_builds_the_four_binaries() {
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    for role in ROLES {
        assert!(dockerfile.contains(&format!("-p arf-{role}")), "the Dockerfile builds arf-{role}");
        assert!(dockerfile.contains(&format!("target/release/arf-{role}")), "and installs it");
    }
    assert!(dockerfile.contains("--locked"), "from the lock file");
}

/// `1.95` or `1.85.1` as numbers, to compare.
fn version(text: &str) -> Vec<u64> {
    text.split('.').map(|part| part.parse().unwrap_or_else(|_| panic!("`{text}` is not a Rust version"))).collect()
}

/// The Dockerfile's Rust is the workspace's `rust-version`, and every locked
/// dependency builds with it (its own `rust-version` is no later): the Dockerfile
/// named Rust 1.89 once, which could not build the locked dependencies (several
/// need 1.95), and nothing noticed until the image was built with Podman
/// (`deploy/build-image-offline.sh`). Its build context leaves out what local
/// builds made.
#[test]
fn the_dockerfiles_rust_builds_the_locked_dependencies() {
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let image = dockerfile.lines().find_map(|l| l.strip_prefix("FROM rust:")).expect("a `FROM rust:X-bookworm` build stage");
    let rust = image.split('-').next().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: toml::Value = std::fs::read_to_string(root.join("Cargo.toml")).unwrap().parse().unwrap();
    let workspace = manifest["workspace"]["package"]["rust-version"].as_str().unwrap();
    assert_eq!(rust, workspace, "the Dockerfile builds with the workspace's rust-version");
    // The packages this machine's build uses (the image is built for the same kind
    // of machine), all downloaded by the build before this test runs.
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let host = String::from_utf8(rustc.stdout).unwrap().lines().find_map(|l| l.strip_prefix("host: ").map(str::to_owned)).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let metadata = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", &host])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(metadata.status.success(), "{}", String::from_utf8_lossy(&metadata.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let too_new: Vec<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((p["name"].as_str()?, p["version"].as_str()?, p["rust_version"].as_str()?)))
        .filter(|(_, _, needs)| version(needs) > version(workspace))
        .map(|(name, v, needs)| format!("{name} {v} needs Rust {needs}"))
        .collect();
    assert!(too_new.is_empty(), "locked dependencies need a later Rust than {workspace}: {too_new:?}");
    let ignored = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for left_out in ["target", ".git"] {
        assert!(ignored.lines().any(|l| l.trim() == left_out), ".dockerignore leaves out `{left_out}`");
    }
}

/// The metric names the services register, read from their sources: what the
/// alerting rules and the dashboard may refer to.
fn registered_metrics() -> std::collections::BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = std::collections::BTreeSet::from(["up".to_owned()]);
    let mut dirs: Vec<PathBuf> = ["agent/src", "audit/src", "governor/src", "executor/src", "proto/src"].iter().map(|d| root.join(d)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for call in ["inc(\"arf_", "add(\"arf_", "set(\"arf_", "observe(\"arf_"] {
                    for piece in text.split(call).skip(1) {
                        names.insert(format!("arf_{}", piece.split('"').next().unwrap()));
                    }
                }
            }
        }
    }
    names
}

/// The `arf_*` metric names an expression refers to (a histogram's `_bucket`
/// series are its own name's).
fn referred(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("arf_"))
        .map(|w| w.trim_end_matches("_bucket").to_owned())
        .collect()
}

/// The alerting rules for ARF itself pass Prometheus' own checker and their unit
/// tests, and the dashboard's queries parse; both name only metrics the services
/// export (a renamed metric fails here, not on someone's pager).
#[test]
fn the_alerting_rules_and_the_dashboard_query_what_the_services_export() {
    let rules = deploy().join("prometheus");
    for args in [&["check", "rules", "arf-alerts.yml"][..], &["test", "rules", "arf-alerts.test.yml"][..]] {
        let run = Command::new("promtool").args(args).current_dir(&rules).output().expect("promtool (Debian's `prometheus` package, which `.ci/run` installs)");
        assert!(run.status.success(), "promtool {args:?}: {}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    }
    let exported = registered_metrics();
    // Each rule's expression is on its `expr:` line (promtool has parsed the file).
    let alerts = std::fs::read_to_string(rules.join("arf-alerts.yml")).unwrap();
    let mut exprs: Vec<String> = alerts.lines().filter_map(|l| l.trim().strip_prefix("expr:")).map(|e| e.trim().to_owned()).collect();
    assert_eq!(exprs.len(), alerts.matches("- alert:").count());

    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(deploy().join("grafana/arf.json")).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "a panel each for services, signals, diagnoses, decisions, executions and the log");
    let queries: Vec<String> = panels.iter().flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_owned())).collect();
    // promtool parses each query as the expression of a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let recorded: String = queries.iter().enumerate().map(|(i, q)| format!("      - record: arf_dashboard_panel_{i}\n        expr: '{q}'\n")).collect();
    std::fs::write(dir.path().join("dashboard.yml"), format!("groups:\n  - name: dashboard\n    rules:\n{recorded}")).unwrap();
    let checked = Command::new("promtool").args(["check", "rules", "dashboard.yml"]).current_dir(dir.path()).output().unwrap();
    assert!(checked.status.success(), "the dashboard's queries: {}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));

    exprs.extend(queries);
    for expr in &exprs {
        for name in referred(expr) {
            assert!(exported.contains(&name), "`{expr}` refers to `{name}`, which no service exports (they export {exported:?})");
        }
    }
    for needed in ["arf_governor_decisions_total", "arf_executor_outcomes_total", "arf_audit_append_seconds"] {
        assert!(exprs.iter().any(|e| e.contains(needed)), "nothing shows `{needed}`");
    }
}
