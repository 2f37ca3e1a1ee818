//! The explanations of the demo's two decisions (the staging revert that runs on
//! its own, and the production revert that waits for an on-call approval), from
//! the shipped catalog and policies, against snapshot files in
//! `tests/data/explain/`. Run with `UPDATE_GOLDEN=1` to rewrite them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly on anything unexpected")]

use std::collections::BTreeMap;
use std::path::PathBuf;

use arf_core::catalog::Catalog;
use arf_core::diagnosis::{Hypothesis, Proposal, Remediation};
use arf_core::target::{Inventory, Target};
use arf_governor::decide::{self, Governance};
use arf_governor::decision::{Decision, State};
use arf_governor::identity::{Caller, Role};
use arf_governor::policy::Policies;
use arf_governor::risk::RiskWeights;

/// 2026-11-22T03:00:00Z.
const NOW_MS: i64 = 1_795_316_400_000;
const COMMIT: &str = "3f2a9c1d4e5b6a7980123456789abcdef0123456";

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The demo's two targets, as `arf demo` writes them (with fixed addresses).
fn inventory() -> Inventory {
    let target = |environment: &str, tier: &str, port: u16| Target {
        kind: "service".into(),
        service: "checkout".into(),
        environment: environment.into(),
        tier: tier.into(),
        security_sensitive: false,
        facts: BTreeMap::from([
            ("url".to_owned(), format!("http://127.0.0.1:{port}")),
            ("repo".to_owned(), format!("/var/lib/arf-demo/targets/checkout-{environment}")),
        ]),
        depends_on: Vec::new(),
    };
    BTreeMap::from([
        ("checkout-staging".to_owned(), target("staging", "standard", 41001)),
        ("checkout-production".to_owned(), target("production", "critical", 41002)),
    ])
}

/// What the demo's scripted model proposes.
fn proposal(target: &str, environment: &str) -> Proposal {
    let remediation = Remediation {
        pathway: "revert_config_commit".to_owned(),
        target: target.to_owned(),
        parameters: serde_json::json!({ "commit": COMMIT }),
        rationale: "The failure began with this commit, and reverting it is reversible.".to_owned(),
    };
    Proposal {
        id: "prop-demo".to_owned(),
        incident_id: format!("inc-demo-{environment}"),
        snapshot_hash: "131ee293cd50c3a890f731c5d98bfa9ed5d73e2f050ed01cc73406039f29b0a5".to_owned(),
        hypothesis: Hypothesis {
            id: "h1".to_owned(),
            root_cause: "Configuration commit 3f2a9c1d4e5b set `upstream_timeout_ms` to 0, so every call to the payment upstream times out at once and checkout answers 5xx.".to_owned(),
            evidence: vec!["sig-632b0aedae70df53".to_owned(), "sig-184a276fcfb8b034".to_owned()],
            confidence: 0.91,
            uncertainty: "The error rate rose right after the commit; no other change touched checkout in the window.".to_owned(),
            expected_impact: "Reverting restores the previous timeout; once checkout reloads its configuration the 5xx rate should fall to its baseline within seconds.".to_owned(),
            remediations: vec![remediation.clone()],
        },
        remediation,
        service: "checkout".to_owned(),
        environment: environment.to_owned(),
        reasoner: "scripted".to_owned(),
    }
}

fn decide(target: &str, environment: &str) -> (Decision, Catalog, Inventory) {
    let catalog = Catalog::load_dir(&examples().join("pathways")).unwrap();
    let targets = inventory();
    let environments = arf_governor::config::default_environments();
    let weights = RiskWeights::default();
    let policies = Policies::load_dir(&examples().join("policies")).unwrap();
    let governance = Governance {
        catalog: &catalog,
        targets: &targets,
        environments: &environments,
        weights: &weights,
        policies: &policies,
        guard: &Default::default(),
        guard_rails: &Default::default(),
        freezes: &[],
        decision_ttl_ms: 900_000,
        calibration: &Default::default(),
        modes: &[],
        graduation: &Default::default(),
    };
    let agent = Caller { name: "agent".to_owned(), role: Role::Agent };
    let scope = arf_governor::backing::IncidentScope::single("inc-demo", "checkout", environment);
    let (decision, _) = decide::decide(&governance, &proposal(target, environment), &scope, &agent, format!("dec-demo-{environment}"), NOW_MS).unwrap();
    (decision, catalog, targets)
}

fn check(name: &str, decision: &Decision, catalog: &Catalog, targets: &Inventory) {
    let text = arf_governor::explain::explain(decision, catalog.get(&decision.remediation.pathway), targets.get(&decision.remediation.target));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/explain").join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read `{}` ({e}); run with UPDATE_GOLDEN=1", path.display()));
    assert!(text == expected, "explanation `{name}` differs (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{text}");
}

#[test]
fn the_demo_staging_revert_runs_on_its_own() {
    let (mut decision, catalog, targets) = decide("checkout-staging", "staging");
    assert_eq!(decision.route, arf_core::decision::Route::Autonomous);
    decision.state = State::Authorized;
    check("demo_staging_revert", &decision, &catalog, &targets);
}

#[test]
fn the_demo_production_revert_waits_for_on_call() {
    let (decision, catalog, targets) = decide("checkout-production", "production");
    assert_eq!(decision.route, arf_core::decision::Route::Approval);
    check("demo_production_revert", &decision, &catalog, &targets);
}
