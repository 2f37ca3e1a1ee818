//! The policy output contract: bundles that fail to load are refused naming the
//! file, and every evaluation error or contract breach becomes `deny` with diagnostics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use arf_governor::policy::{Policies, PolicyInput};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    #[allow(dead_code, reason = "documentation for people reading the file")]
    about: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    files: BTreeMap<String, String>,
    #[serde(default)]
    load_error: Option<Vec<String>>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    approvals_required: Option<u32>,
    #[serde(default)]
    diagnostics: Vec<String>,
}

fn data(name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)).unwrap()
}

fn base_input() -> PolicyInput {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/tests/base.input.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn check(case: &Case, input: &PolicyInput) -> Result<(), String> {
    let sources = case.files.iter().map(|(name, text)| (PathBuf::from(name), text.clone())).collect();
    let loaded = Policies::from_sources(sources);
    match (&case.load_error, loaded) {
        (Some(fragments), Err(error)) => {
            let message = error.to_string();
            match fragments.iter().find(|f| !message.contains(f.as_str())) {
                Some(missing) => Err(format!("load error lacks `{missing}`: {message}")),
                None => Ok(()),
            }
        }
        (Some(_), Ok(_)) => Err("loaded, but should have been refused".to_owned()),
        (None, Err(error)) => Err(format!("refused at load: {error}")),
        (None, Ok(policies)) => {
            let outcome = policies.evaluate(input);
            let all = outcome.diagnostics.join("\n");
            if Some(outcome.route.as_str()) != case.route.as_deref() {
                return Err(format!(
                    "route `{}`, expected {:?}; diagnostics: {all}",
                    outcome.route.as_str(),
                    case.route
                ));
            }
            if let Some(expected) = case.approvals_required
                && outcome.approvals_required != expected
            {
                return Err(format!("{} approvals required, expected {expected}", outcome.approvals_required));
            }
            if case.diagnostics.is_empty() != outcome.diagnostics.is_empty() {
                return Err(format!("diagnostics: {all:?}"));
            }
            match case.diagnostics.iter().find(|f| !all.contains(f.as_str())) {
                Some(missing) => Err(format!("diagnostics lack `{missing}`: {all}")),
                None => Ok(()),
            }
        }
    }
}

#[test]
fn policy_contract_cases() {
    let cases: Cases = serde_json::from_str(&data("policy_contract.json")).unwrap();
    let input = base_input();
    let failures: Vec<String> = cases
        .cases
        .iter()
        .filter_map(|case| check(case, &input).err().map(|e| format!("case `{}`: {e}", case.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.cases.len(),
        failures.join("\n\n")
    );
}
