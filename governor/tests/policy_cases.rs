//! The default policy bundle in `examples/policies/`, case by case: input → route, rules and reasons.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

use std::path::PathBuf;

use arf_governor::policy::{Policies, PolicyInput};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    base: Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// Merged into `base`, object by object.
    with: Value,
    route: String,
    rules_fired: Vec<String>,
    reasons: Vec<String>,
    approvals_required: u32,
    approver_roles: Vec<String>,
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

fn default_bundle() -> Policies {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    Policies::load_dir(&dir).unwrap_or_else(|e| panic!("the default bundle must load: {e}"))
}

fn check(policies: &Policies, base: &Value, case: &Case) -> Result<(), String> {
    let mut document = base.clone();
    merge(&mut document, &case.with);
    let input: PolicyInput = serde_json::from_value(document).map_err(|e| format!("bad input: {e}"))?;
    let outcome = policies.evaluate(&input);
    let actual = (
        outcome.route.as_str().to_owned(),
        outcome.rules_fired.clone(),
        outcome.reasons.clone(),
        outcome.approvals_required,
        outcome.approver_roles.clone(),
        outcome.diagnostics.clone(),
    );
    let expected = (
        case.route.clone(),
        case.rules_fired.clone(),
        case.reasons.clone(),
        case.approvals_required,
        case.approver_roles.clone(),
        Vec::<String>::new(),
    );
    if actual == expected { Ok(()) } else { Err(format!("expected {expected:#?}\n   got {actual:#?}")) }
}

#[test]
fn default_policy_cases() {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/policy_cases.json"))
        .unwrap();
    let cases: Cases = serde_json::from_str(&text).unwrap();
    let policies = default_bundle();
    let failures: Vec<String> = cases
        .cases
        .iter()
        .filter_map(|case| check(&policies, &cases.base, case).err().map(|e| format!("case `{}`: {e}", case.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.cases.len(),
        failures.join("\n\n")
    );
}
