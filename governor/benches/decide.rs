//! The decision function with the default policy bundle (`examples/policies`) and
//! catalog (`examples/pathways`): check, score, assess the guard rails, evaluate
//! Rego, apply the backstop. No network and no audit log: this is the CPU cost of
//! one `Evaluate`. Run with `cargo bench -p arf-governor --bench decide`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;

use arf_core::catalog::Catalog;
use arf_core::diagnosis::{Hypothesis, Proposal, Remediation};
use arf_core::target::{Inventory, Target};
use arf_governor::decide::{self, Governance};
use arf_governor::guard::{GuardRails, GuardState};
use arf_governor::identity::{Caller, Role};
use arf_governor::policy::Policies;
use arf_governor::risk::RiskWeights;
use criterion::{Criterion, criterion_group};

fn examples(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

fn target(environment: &str, tier: &str) -> Target {
    Target {
        kind: "service".to_owned(),
        service: "checkout".to_owned(),
        environment: environment.to_owned(),
        tier: tier.to_owned(),
        security_sensitive: false,
        facts: BTreeMap::from([("url".to_owned(), "http://127.0.0.1:9".to_owned())]),
        depends_on: Vec::new(),
    }
}

fn proposal(target: &str, confidence: f64) -> Proposal {
    let remediation = Remediation {
        pathway: "restart_service".to_owned(),
        target: target.to_owned(),
        parameters: serde_json::json!({ "reason": "connection pool exhausted" }),
        rationale: "the pool is exhausted since the deploy".to_owned(),
    };
    Proposal {
        id: "prop-1".to_owned(),
        incident_id: "inc-1".to_owned(),
        snapshot_hash: "5f1c0ffee".to_owned(),
        hypothesis: Hypothesis {
            id: "h1".to_owned(),
            root_cause: "the 03:00 deploy halved the connection pool".to_owned(),
            evidence: vec!["sig-1".to_owned()],
            confidence,
            uncertainty: String::new(),
            expected_impact: "errors stop within a minute".to_owned(),
            remediations: vec![remediation.clone()],
        },
        remediation,
        service: "checkout".to_owned(),
        environment: "staging".to_owned(),
        reasoner: "scripted".to_owned(),
    }
}

/// Everything `decide` reads, built once.
struct Fixture {
    catalog: Catalog,
    policies: Policies,
    targets: Inventory,
    environments: BTreeMap<String, f64>,
    weights: RiskWeights,
    guard: GuardState,
    rails: GuardRails,
    calibration: arf_governor::calibration::Prior,
    graduation: arf_governor::graduation::Graduation,
}

const CASES: [(&str, &str, f64); 2] =
    [("staging_autonomous", "checkout-staging", 0.9), ("production_critical_approval", "checkout-prod", 0.8)];

fn fixture() -> Fixture {
    let catalog = Catalog::load_dir(&examples("pathways")).unwrap();
    let policies = Policies::load_dir(&examples("policies")).unwrap();
    let targets: Inventory = BTreeMap::from([
        ("checkout-staging".to_owned(), target("staging", "standard")),
        ("checkout-prod".to_owned(), target("production", "critical")),
    ]);
    Fixture {
        catalog,
        policies,
        targets,
        environments: arf_governor::config::default_environments(),
        weights: RiskWeights::default(),
        guard: GuardState::default(),
        rails: GuardRails::default(),
        calibration: Default::default(),
        graduation: Default::default(),
    }
}

fn governance(f: &Fixture) -> Governance<'_> {
    Governance {
        catalog: &f.catalog,
        targets: &f.targets,
        environments: &f.environments,
        weights: &f.weights,
        policies: &f.policies,
        guard: &f.guard,
        guard_rails: &f.rails,
        freezes: &[],
        decision_ttl_ms: 900_000,
        calibration: &f.calibration,
        modes: &[],
        graduation: &f.graduation,
    }
}

/// The incident of an alert from the target's own service: its usual scope.
fn scope_of(fixture: &Fixture, target: &str) -> arf_governor::backing::IncidentScope {
    let own = &fixture.targets[target];
    arf_governor::backing::IncidentScope::single("inc-1", &own.service, &own.environment)
}

fn bench(c: &mut Criterion) {
    let fixture = fixture();
    let governance = governance(&fixture);
    let agent = Caller { name: "agent".to_owned(), role: Role::Agent };
    let mut group = c.benchmark_group("decide");
    for (name, target, confidence) in CASES {
        let proposal = proposal(target, confidence);
        let scope = scope_of(&fixture, target);
        group.bench_function(name, |b| {
            b.iter(|| decide::decide(&governance, black_box(&proposal), &scope, &agent, "dec-1".to_owned(), 1_000).unwrap())
        });
    }
    group.finish();
}

/// Criterion reports means and medians; the latency target is a p99, so this times
/// each of many single calls and prints the percentiles.
fn percentiles() {
    const CALLS: usize = 20_000;
    let fixture = fixture();
    let governance = governance(&fixture);
    let agent = Caller { name: "agent".to_owned(), role: Role::Agent };
    for (name, target, confidence) in CASES {
        let proposal = proposal(target, confidence);
        let scope = scope_of(&fixture, target);
        for _ in 0..1_000 {
            black_box(decide::decide(&governance, &proposal, &scope, &agent, "dec-1".to_owned(), 1_000).unwrap());
        }
        let mut times: Vec<std::time::Duration> = (0..CALLS)
            .map(|_| {
                let start = std::time::Instant::now();
                black_box(decide::decide(&governance, black_box(&proposal), &scope, &agent, "dec-1".to_owned(), 1_000).unwrap());
                start.elapsed()
            })
            .collect();
        times.sort();
        let at = |q: f64| times[((CALLS as f64 * q) as usize).min(CALLS - 1)];
        println!(
            "decide/{name}: p50 {:?}, p90 {:?}, p99 {:?}, max {:?} over {CALLS} single calls",
            at(0.50),
            at(0.90),
            at(0.99),
            times[CALLS - 1]
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    percentiles();
    Criterion::default().configure_from_args().final_summary();
}
