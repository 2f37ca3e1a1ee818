//! The default policy bundle's own cases (`examples/policies/tests/*.cases.json`), run
//! as `arf policy test examples/policies` runs them: input → route, rules, reasons.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

use std::path::PathBuf;

use arf_governor::policy::Policies;
use arf_governor::policy_test;

fn default_policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

#[test]
fn the_default_bundle_passes_its_cases() {
    let report = policy_test::run_dir(&default_policies()).unwrap();
    let failures: Vec<String> = report
        .results
        .iter()
        .filter_map(|r| r.failure.as_ref().map(|f| format!("{} / {}: {f}", r.file, r.name)))
        .collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), report.results.len(), failures.join("\n"));
    assert!(report.results.len() >= 40, "the default bundle ships at least 40 cases, found {}", report.results.len());
}

#[test]
fn every_rule_of_the_default_bundle_has_a_case() {
    let report = policy_test::run_dir(&default_policies()).unwrap();
    let text: String = std::fs::read_dir(default_policies().join("tests"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let rego = std::fs::read_to_string(default_policies().join("governor.rego")).unwrap();
    // Every finding id the bundle can produce appears in some case's `rules_fired`.
    let ids: Vec<&str> = rego
        .split("finding(\n\t\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .chain(["no_rule_applies"])
        .collect();
    assert!(ids.len() >= 15, "{ids:?}");
    for id in ids {
        assert!(text.contains(&format!("\"{id}\"")), "rule `{id}` has no case");
    }
    assert!(report.failed() == 0);
}

/// A case that is wrong is reported as a failure, naming what differed.
#[test]
fn a_wrong_expectation_fails_and_says_what_differed() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("tests");
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::copy(default_policies().join("tests/base.input.json"), tests.join("base.input.json")).unwrap();
    std::fs::write(
        tests.join("wrong.cases.json"),
        r#"{ "cases": [
            { "name": "right", "route": "autonomous", "rules_fired": ["low_risk_autonomy"] },
            { "name": "wrong", "with": { "confidence": 0.1 }, "route": "autonomous", "rules_fired": [] }
        ] }"#,
    )
    .unwrap();
    let policies = Policies::load_dir(&default_policies()).unwrap();
    let report = policy_test::run_cases(&policies, &tests).unwrap();
    assert_eq!((report.passed(), report.failed()), (1, 1), "{report:#?}");
    let failure = report.results[1].failure.as_deref().unwrap();
    assert!(failure.contains("route: expected `autonomous`, got `deny`"), "{failure}");
    assert!(failure.contains("confidence_floor"), "{failure}");
}

/// A case file with a field it does not know is refused, not half-read.
#[test]
fn a_case_file_with_an_unknown_field_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("tests");
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::copy(default_policies().join("tests/base.input.json"), tests.join("base.input.json")).unwrap();
    std::fs::write(tests.join("typo.cases.json"), r#"{ "cases": [ { "name": "x", "route": "deny", "rules_fired": [], "rout": 1 } ] }"#)
        .unwrap();
    let policies = Policies::load_dir(&default_policies()).unwrap();
    let error = policy_test::run_cases(&policies, &tests).unwrap_err().to_string();
    assert!(error.contains("typo.cases.json") && error.contains("unknown field `rout`"), "{error}");
}
