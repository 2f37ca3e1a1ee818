//! Data-driven policy tests, like `opa test`: a bundle directory holds its cases in
//! `tests/*.cases.json`, each an input (a shared base document with a patch) and the
//! answer policy must give. `arf policy test DIR` and the governor's own tests run them.
//!
//! A case file:
//!
//! ```json
//! {
//!   "base": { ...optional: a whole input document... },
//!   "cases": [
//!     {
//!       "name": "what the case shows",
//!       "with": { "confidence": 0.2 },
//!       "route": "deny",
//!       "rules_fired": ["confidence_floor"],
//!       "reasons": ["..."],
//!       "approvals_required": 0,
//!       "approver_roles": []
//!     }
//!   ]
//! }
//! ```
//!
//! `with` is merged into the base object by object (a value replaces, an object
//! merges). Without a `base`, the file uses `tests/base.input.json`. `route` and
//! `rules_fired` are always checked (in order); `reasons`, `approvals_required` and
//! `approver_roles` when given. A case passes only when policy answered without
//! diagnostics, unless it names the `diagnostics` it expects.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::policy::{Policies, PolicyError, PolicyInput, PolicyOutcome};

/// The shared base input, beside the case files.
pub const BASE_FILE: &str = "base.input.json";
/// How case files end.
pub const CASES_SUFFIX: &str = ".cases.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    base: Option<Value>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    with: Value,
    route: String,
    rules_fired: Vec<String>,
    #[serde(default)]
    reasons: Option<Vec<String>>,
    #[serde(default)]
    approvals_required: Option<u32>,
    #[serde(default)]
    approver_roles: Option<Vec<String>>,
    #[serde(default)]
    diagnostics: Vec<String>,
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    /// `None` when the case passed; what differed otherwise.
    pub failure: Option<String>,
}

/// Every case's result, in file and case order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub policies: Vec<String>,
    pub results: Vec<CaseResult>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.failure.is_none()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

/// Why the tests could not run at all.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TestError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is not a valid case file: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("`{0}` holds no case files (`tests/*{CASES_SUFFIX}`)")]
    NoCases(PathBuf),
}

fn read(path: &Path) -> Result<String, TestError> {
    std::fs::read_to_string(path).map_err(|source| TestError::Read { path: path.to_owned(), source })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, TestError> {
    serde_json::from_str(text).map_err(|e| TestError::Invalid { path: path.to_owned(), message: e.to_string() })
}

/// Loads the bundle in `dir` and runs every case in `dir/tests/`.
pub fn run_dir(dir: &Path) -> Result<Report, TestError> {
    let policies = Policies::load_dir(dir)?;
    run_cases(&policies, &dir.join("tests"))
}

/// Runs every case file in `tests_dir` against `policies`.
pub fn run_cases(policies: &Policies, tests_dir: &Path) -> Result<Report, TestError> {
    let entries = std::fs::read_dir(tests_dir).map_err(|source| TestError::Read { path: tests_dir.to_owned(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(CASES_SUFFIX)))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TestError::NoCases(tests_dir.to_owned()));
    }
    let base_path = tests_dir.join(BASE_FILE);
    let shared_base: Option<Value> =
        if base_path.exists() { Some(parse(&base_path, &read(&base_path)?)?) } else { None };
    let mut report =
        Report { policies: policies.files().iter().map(|f| f.display().to_string()).collect(), results: Vec::new() };
    for path in files {
        let file: CaseFile = parse(&path, &read(&path)?)?;
        let base = file.base.or_else(|| shared_base.clone()).ok_or_else(|| TestError::Invalid {
            path: path.clone(),
            message: format!("it has no `base`, and there is no `{BASE_FILE}` beside it"),
        })?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for case in &file.cases {
            report.results.push(CaseResult {
                file: file_name.clone(),
                name: case.name.clone(),
                failure: check(policies, &base, case).err(),
            });
        }
    }
    Ok(report)
}

/// Merges `patch` into `base`, object by object.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        // A case without `with` keeps the base as it is.
        (_, Value::Null) => {}
        (base, patch) => *base = patch.clone(),
    }
}

fn check(policies: &Policies, base: &Value, case: &Case) -> Result<(), String> {
    let mut document = base.clone();
    merge(&mut document, &case.with);
    let input: PolicyInput =
        serde_json::from_value(document).map_err(|e| format!("the input is not a valid policy input: {e}"))?;
    let outcome = policies.evaluate(&input);
    let mut differences = Vec::new();
    let mut differ = |what: &str, expected: String, actual: String| {
        if expected != actual {
            differences.push(format!("{what}: expected {expected}, got {actual}"));
        }
    };
    differ("route", format!("`{}`", case.route), format!("`{}`", outcome.route.as_str()));
    differ("rules_fired", list(&case.rules_fired), list(&outcome.rules_fired));
    if let Some(reasons) = &case.reasons {
        differ("reasons", list(reasons), list(&outcome.reasons));
    }
    if let Some(approvals) = case.approvals_required {
        differ("approvals_required", approvals.to_string(), outcome.approvals_required.to_string());
    }
    if let Some(roles) = &case.approver_roles {
        differ("approver_roles", list(roles), list(&outcome.approver_roles));
    }
    differ("diagnostics", list(&case.diagnostics), list(&diagnostics(&outcome)));
    if differences.is_empty() { Ok(()) } else { Err(differences.join("; ")) }
}

fn diagnostics(outcome: &PolicyOutcome) -> Vec<String> {
    outcome.diagnostics.clone()
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", "))
}
