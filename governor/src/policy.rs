//! The Rego policy bundle, the versioned input document it reads, and the output
//! contract it must answer with, evaluated in-process with regorus.
//!
//! Policy is supreme and evaluation is total: [`Policies::evaluate`] cannot fail.
//! Any error (a rule that errors, an output that is missing or ill-typed, an unknown
//! route or role, a contradiction, an engine that runs out of time) becomes `deny`
//! with the error in `diagnostics`.
//!
//! The output contract: the rule `data.arf.governor.decision` must be an object with
//! exactly these fields:
//!
//! ```json
//! {
//!   "route": "autonomous" | "acknowledge" | "approval" | "deny",
//!   "reasons": ["plain-language sentence", ...],
//!   "rules_fired": ["short_rule_id", ...],
//!   "approvals_required": 0,
//!   "approver_roles": ["oncall", "admin", ...]
//! }
//! ```
//!
//! `approvals_required` is a non-negative integer: it must be 0 for `autonomous`
//! (anything else is a contradiction, hence `deny`), is raised to at least 1 for
//! `acknowledge` and `approval`, and is ignored for `deny`. `approver_roles` names the
//! roles that may approve (any of them; empty means any person); each must be a known
//! role. Arrays may also be sets.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arf_core::decision::{Risk, Route};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::identity::Role;

/// The version of the input document; policies can check `input.version`.
///
/// Version 2 added `pathway.rollback`, the guard rails in `autonomy`
/// (`global`, `global_reason`, `rate_limit`, `error_budget`; `enabled` became the
/// effective switch), `freeze_windows[].active`, and filled `outcome_stats`.
/// Version 3 added `incident` (what the log's signals say the incident is about),
/// `target.relation` / `target.dependency_of` (the target's place in it),
/// `action.earlier_attempts` and `calibration`.
pub const INPUT_VERSION: u32 = 3;

/// The rule every bundle must define.
pub const DECISION_RULE: &str = "data.arf.governor.decision";

const DECISION_PACKAGE: &str = "data.arf.governor";

/// A policy that runs longer than this is stopped, and the action denied.
const EVALUATION_LIMIT: Duration = Duration::from_secs(2);

/// The document policy reads as `input`. Its shape is part of the contract with
/// policy authors: add fields, bump [`INPUT_VERSION`] when changing one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// Always [`INPUT_VERSION`].
    pub version: u32,
    /// What the model proposes to do.
    pub action: ActionInput,
    /// The incident the proposal answers, as the agent's logged signals describe it
    /// (read from the audit log, never from the caller).
    #[serde(default)]
    pub incident: IncidentInput,
    /// The pathway's reviewed metadata, from the governor's catalog.
    pub pathway: PathwayInput,
    /// The target's reviewed facts, from the governor's inventory.
    pub target: TargetInput,
    /// The target's environment, as the governor's configuration knows it.
    pub environment: EnvironmentInput,
    #[schemars(with = "RiskSchema")]
    pub risk: Risk,
    /// The hypothesis confidence, in [0, 1], as the model stated it.
    pub confidence: f64,
    /// The stated confidence calibrated by the model's record on this pathway
    /// (`governor/src/calibration.rs`); the default autonomy floor reads this.
    #[serde(default)]
    pub calibration: CalibrationInput,
    /// Who asked.
    pub requester: RequesterInput,
    pub proposal: ProposalInput,
    /// The global autonomy switch: when off, nothing runs without a person.
    pub autonomy: AutonomyInput,
    /// Every configured change-freeze window, each saying whether it is active now.
    pub freeze_windows: Vec<FreezeWindow>,
    /// Outcome statistics of the proposed pathway on the target's service, keyed by
    /// pathway name (one entry).
    pub outcome_stats: BTreeMap<String, OutcomeStats>,
    /// The mode of the target's service in its environment (`[[governor.modes]]`):
    /// `shadow` (nothing is sent to the executor, whatever the route), `review` (a
    /// person approves unless the pathway graduated) or `autonomous`.
    #[serde(default)]
    pub mode: arf_core::decision::Mode,
    /// The proposed pathway's track record on the target's service, and whether it
    /// has graduated (`governor/src/graduation.rs`).
    #[serde(default)]
    pub track_record: crate::graduation::TrackRecordInput,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionInput {
    pub pathway: String,
    pub target: String,
    pub parameters: Value,
    /// Earlier decisions of this incident for the same action (pathway, target and
    /// the parameters the pathway acts with), oldest first. Only attempts that expired, never reached the
    /// executor, never ran (`not_run`), failed or rolled back appear: a live,
    /// verified, denied, rejected or precheck-refused one is answered instead of
    /// deciding again.
    #[serde(default)]
    pub earlier_attempts: Vec<EarlierAttempt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EarlierAttempt {
    pub decision_id: String,
    /// Its final state: `rolled_back`, `failed`, `rollback_failed`, `denied`, `rejected`, `expired`, ...
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathwayInput {
    pub name: String,
    pub target_kind: String,
    pub base_risk: f64,
    pub blast_radius: f64,
    pub irreversible: bool,
    pub security_sensitive: bool,
    /// The pathway undoes a change (configured in `guard_rails.rollback_pathways`);
    /// rollbacks are exempt from change freezes.
    #[serde(default)]
    pub rollback: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalibrationInput {
    /// `reasoner:model` of the proposal, from the agent's logged diagnosis.
    pub model: String,
    /// The calibrated confidence, in [0, 1].
    pub confidence: f64,
    /// The model's decided outcomes on this pathway that the calibration counted.
    pub runs: u64,
    pub verified: u64,
    /// The prior: the most a model without history is trusted, and its weight in runs.
    pub prior_cap: f64,
    pub prior_weight: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentInput {
    pub id: String,
    /// The services of the incident's signals.
    pub services: Vec<String>,
    /// The environments of the incident's signals.
    pub environments: Vec<String>,
    /// The kinds of the incident's signals (`alert`, `finding`, `change`, ...).
    pub signal_kinds: Vec<String>,
    /// How many signals the incident has.
    pub signals: u64,
    /// Which attempt at the incident this is: 1, or more once earlier actions of
    /// the incident were authorized (and failed verification, were refused by their
    /// precheck or never ran, or the agent would not try again).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetInput {
    pub name: String,
    pub kind: String,
    pub service: String,
    pub environment: String,
    pub tier: String,
    pub security_sensitive: bool,
    /// The target's place in the incident: `incident_service` (one of its services,
    /// in one of its environments), `dependency` (a declared `depends_on` of such a
    /// target), or `out_of_scope`.
    #[serde(default = "out_of_scope")]
    pub relation: String,
    /// For a `dependency`: the incident's targets that depend on it.
    #[serde(default)]
    pub dependency_of: Vec<String>,
}

fn out_of_scope() -> String {
    "out_of_scope".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentInput {
    pub name: String,
    /// False when the governor's configuration does not list the environment.
    pub known: bool,
    /// The configured sensitivity; 1.0 for an unknown environment.
    pub sensitivity: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequesterInput {
    pub identity: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposalInput {
    pub id: String,
    pub incident_id: String,
    pub snapshot_hash: String,
    pub reasoner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AutonomyInput {
    /// The effective switch: true only when the global switch is on, the service is
    /// under its rate limit and not quarantined, and the pathway has error budget
    /// left on the service.
    pub enabled: bool,
    /// The global kill switch (`arf autonomy on|off`).
    #[serde(default = "yes")]
    pub global: bool,
    /// Why the global switch was last moved, as the admin said.
    #[serde(default)]
    pub global_reason: String,
    #[serde(default)]
    pub rate_limit: RateLimitInput,
    #[serde(default)]
    pub error_budget: ErrorBudgetInput,
    #[serde(default)]
    pub quarantine: QuarantineInput,
}

fn yes() -> bool {
    true
}

/// Autonomous actions on the target's service in the last hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitInput {
    /// Autonomous actions allowed per service per hour.
    pub limit: u32,
    /// Autonomous actions on this service in the last hour.
    pub used: u32,
    /// The limit was reached; autonomy stays off for the service until an admin resets it.
    pub exceeded: bool,
}

/// A rollback failed on the target's service: its state is one nobody verified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineInput {
    /// Nothing runs on the service without a person until an admin resets it.
    pub active: bool,
    /// Which rollback failed, and when.
    #[serde(default)]
    pub reason: String,
}

/// Failed verifications of the proposed pathway on the target's service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBudgetInput {
    /// Failures allowed within the window.
    pub limit: u32,
    pub window_secs: u64,
    /// Failures within the window.
    pub failures: u32,
    /// The budget is used up; autonomy stays off for the pathway on the service until an admin resets it.
    pub exhausted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    pub name: String,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub reason: String,
    /// The decision's time lies inside the window.
    #[serde(default)]
    pub active: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeStats {
    pub runs: u64,
    pub verified: u64,
    pub rolled_back: u64,
    pub failed: u64,
}

/// The shape of [`Risk`] (an `arf-core` type), for the schema.
#[derive(JsonSchema)]
#[schemars(rename = "Risk")]
#[expect(dead_code, reason = "only its schema is used")]
struct RiskSchema {
    /// The weighted score in [0, 1].
    score: f64,
    /// `low` below 0.25, `medium` below 0.5, `high` below 0.75, `critical` from 0.75.
    band: String,
    /// Each factor's value, weight (its share) and contribution.
    factors: Vec<RiskFactorSchema>,
}

#[derive(JsonSchema)]
#[schemars(rename = "RiskFactor")]
#[expect(dead_code, reason = "only its schema is used")]
struct RiskFactorSchema {
    name: String,
    value: f64,
    weight: f64,
    contribution: f64,
    detail: String,
}

/// The JSON Schema of the input document, generated from [`PolicyInput`].
pub fn input_schema() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(PolicyInput)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut schema {
        map.insert("$id".to_owned(), Value::String(format!("https://arf.dev/schemas/policy-input/v{INPUT_VERSION}.json")));
        map.insert("title".to_owned(), Value::String(format!("ARF governor policy input, version {INPUT_VERSION}")));
    }
    schema
}

pub use arf_core::decision::PolicyOutcome;

/// Why a policy bundle was refused at load.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("cannot read policy directory `{path}`: {source}")]
    ReadDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read policy file `{path}`: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("policy directory `{0}` holds no `.rego` files")]
    Empty(PathBuf),
    #[error("policy file `{file}` does not parse: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("policy file `{file}` does not compile: {message}")]
    Compile { file: PathBuf, message: String },
    #[error("policy bundle does not compile: {0}")]
    CompileBundle(String),
    #[error("policy bundle ({files}) defines no rule `{rule}`", rule = DECISION_RULE)]
    NoDecisionRule { files: String },
}

/// A loaded, compiled policy bundle.
#[derive(Clone)]
pub struct Policies {
    engine: regorus::Engine,
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies").field("files", &self.files).finish()
    }
}

impl Policies {
    /// Loads every `*.rego` in `dir` (tests named `*_test.rego` are left out) and
    /// refuses a bundle that does not parse or compile, naming the file.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let read = std::fs::read_dir(dir).map_err(|source| PolicyError::ReadDir { path: dir.to_owned(), source })?;
        let mut files: Vec<PathBuf> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "rego"))
            .filter(|p| !p.file_stem().and_then(|s| s.to_str()).is_some_and(|s| s.ends_with("_test")))
            .collect();
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|source| PolicyError::ReadFile { path: file.clone(), source })?;
            sources.push((file, text));
        }
        if sources.is_empty() {
            return Err(PolicyError::Empty(dir.to_owned()));
        }
        Self::from_sources(sources)
    }

    /// Builds a bundle from `(file name, Rego text)` pairs.
    pub fn from_sources(sources: Vec<(PathBuf, String)>) -> Result<Self, PolicyError> {
        let mut engine = regorus::Engine::new();
        // A builtin that errors must not silently make a deny rule undefined.
        engine.set_strict_builtin_errors(true);
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: EVALUATION_LIMIT,
            check_interval: NonZeroU32::new(256).unwrap_or(NonZeroU32::MIN),
        });
        let mut files = Vec::with_capacity(sources.len());
        let mut decision_files = Vec::new();
        for (file, text) in sources {
            let name = file.display().to_string();
            let package = engine
                .add_policy(name.clone(), text)
                .map_err(|e| PolicyError::Parse { file: file.clone(), message: e.to_string().trim().to_owned() })?;
            if package == DECISION_PACKAGE {
                decision_files.push(name);
            }
            files.push(file);
        }
        // Evaluating a trivial query makes the engine analyze and link every module,
        // which is where unsafe variables, bad imports and the like are found.
        if let Err(error) = engine.eval_query("true".to_owned(), false) {
            let message = error.to_string().trim().to_owned();
            return Err(match files.iter().find(|f| message.contains(&f.display().to_string())) {
                Some(file) => PolicyError::Compile { file: file.clone(), message },
                None => PolicyError::CompileBundle(message),
            });
        }
        let mut defines_decision = false;
        for name in &decision_files {
            defines_decision |= engine.has_declared_rule_rooted_at(name, "decision").unwrap_or(false);
        }
        if !defines_decision {
            let files = files.iter().map(|f| format!("`{}`", f.display())).collect::<Vec<_>>().join(", ");
            return Err(PolicyError::NoDecisionRule { files });
        }
        Ok(Self { engine, files })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Evaluates `data.arf.governor.decision` for `input`. Total: errors become `deny`.
    pub fn evaluate(&self, input: &PolicyInput) -> PolicyOutcome {
        let document = match serde_json::to_value(input) {
            Ok(document) => document,
            Err(error) => return PolicyOutcome::error(format!("cannot encode the policy input: {error}")),
        };
        let mut engine = self.engine.clone();
        let evaluated = std::panic::catch_unwind(AssertUnwindSafe(move || {
            engine.set_input(regorus::Value::from(document));
            engine.eval_rule(DECISION_RULE.to_owned())
        }));
        match evaluated {
            Ok(Ok(value)) => parse_output(&value).unwrap_or_else(PolicyOutcome::error),
            Ok(Err(error)) => PolicyOutcome::error(format!("evaluating `{DECISION_RULE}` failed: {error}")),
            Err(_) => PolicyOutcome::error(format!("the policy engine crashed while evaluating `{DECISION_RULE}`")),
        }
    }
}

/// The output as policy wrote it, before it is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    route: String,
    reasons: Vec<String>,
    rules_fired: Vec<String>,
    approvals_required: Value,
    approver_roles: Vec<String>,
}

/// Checks the rule's value against the output contract.
fn parse_output(value: &regorus::Value) -> Result<PolicyOutcome, String> {
    if *value == regorus::Value::Undefined {
        return Err(format!("`{DECISION_RULE}` is undefined for this input; the policy must always answer"));
    }
    let json = serde_json::to_value(value).map_err(|e| format!("`{DECISION_RULE}` cannot be read: {e}"))?;
    let raw: RawOutput = serde_json::from_value(json)
        .map_err(|e| format!("`{DECISION_RULE}` does not match the output contract: {e}"))?;
    let route = Route::parse(&raw.route)
        .ok_or_else(|| format!("`{DECISION_RULE}.route` is `{}`, which is not a route", raw.route))?;
    let approvals = approvals_count(&raw.approvals_required)?;
    for role in &raw.approver_roles {
        if Role::parse(role).is_none_or(|r| !r.is_human()) {
            return Err(format!(
                "`{DECISION_RULE}.approver_roles` names `{role}`, which is not a role that may approve"
            ));
        }
    }
    let approvals_required = match route {
        Route::Autonomous if approvals > 0 => {
            return Err(format!(
                "`{DECISION_RULE}` is contradictory: route `autonomous` with {approvals} approvals required"
            ));
        }
        Route::Autonomous | Route::Deny => 0,
        Route::Acknowledge | Route::Approval => approvals.max(1),
    };
    Ok(PolicyOutcome {
        route,
        reasons: raw.reasons,
        rules_fired: raw.rules_fired,
        approvals_required,
        approver_roles: raw.approver_roles,
        diagnostics: Vec::new(),
    })
}

fn approvals_count(value: &Value) -> Result<u32, String> {
    let field = format!("`{DECISION_RULE}.approvals_required`");
    let number = match value {
        Value::Number(n) => n,
        other => return Err(format!("{field} must be a number, got `{other}`")),
    };
    let count = match (number.as_u64(), number.as_f64()) {
        (Some(n), _) => Some(n),
        (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX) => Some(f as u64),
        _ => None,
    };
    count
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{field} must be a non-negative integer, got `{number}`"))
}
