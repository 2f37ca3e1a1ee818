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
