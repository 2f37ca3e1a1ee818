//! Each service's own binary links only what its role needs. `cargo tree` of a
//! service crate is its binary's dependency graph: the agent's holds no executor,
//! runner or policy engine; the executor's no model client and no policy engine;
//! the governor's no model client and no runner; the writers (agent, governor,
//! executor) link the audit log's client, not its store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The crates (by name) in `package`'s normal dependency graph, itself included.
fn linked(package: &str) -> BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut child = Command::new(env!("CARGO"))
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none", "--offline", "--locked"])
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "`cargo tree -p {package}` did not finish in 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

#[test]
fn each_service_binary_links_only_what_its_role_needs() {
    let cases: [(&str, &[&str], &[&str]); 4] = [
        ("arf-agent", &["arf-audit-client", "async-openai"], &["arf-executor", "arf-governor", "arf-evals", "arf-audit", "regorus", "sled"]),
        ("arf-governor", &["arf-audit-client", "regorus"], &["arf-agent", "arf-executor", "arf-evals", "arf-audit", "async-openai", "minijinja"]),
        ("arf-executor", &["arf-audit-client", "sled"], &["arf-agent", "arf-governor", "arf-evals", "arf-audit", "async-openai", "regorus", "minijinja"]),
        ("arf-audit", &["arf-audit-client"], &["arf-agent", "arf-governor", "arf-executor", "arf-evals", "async-openai", "regorus", "minijinja", "sled"]),
    ];
    for (package, needs, never) in cases {
        let crates = linked(package);
        assert!(crates.contains(package), "cargo tree lists {package} itself: {crates:?}");
        for crate_name in needs {
            assert!(crates.contains(*crate_name), "{package} links {crate_name}");
        }
        let found: Vec<_> = never.iter().filter(|c| crates.contains(**c)).collect();
        assert!(found.is_empty(), "{package} must not link {found:?}");
    }
}
