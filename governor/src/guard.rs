//! Guard rails beyond single decisions: the global autonomy switch, a rate limit on
//! autonomous actions per service, an error budget per pathway and service, change
//! freezes, and the outcome statistics that feed the risk history factor.
//!
//! Pure, with time passed in. The state is a plain value that the service keeps in
//! memory and saves to `data_dir` after every change, so a restart keeps it.
//!
//! Guard rails only ever make a route stricter. They reach policy as input
//! (`input.autonomy`, `input.freeze_windows`, `input.outcome_stats`), so the Rego
//! bundle explains them; and [`backstop`] applies them again after policy, so that a
//! bundle which forgets one cannot loosen anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arf_core::decision::Route;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::policy::{AutonomyInput, ErrorBudgetInput, FreezeWindow, OutcomeStats, PolicyOutcome, QuarantineInput, RateLimitInput};

/// How the guard rails are configured (`[governor.guard_rails]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardRails {
    /// Autonomous actions allowed per service in any rolling hour. When a service
    /// reaches it, autonomy stays off for that service until an admin resets it.
    pub autonomous_per_service_per_hour: u32,
    /// Failed verifications (outcomes `rolled_back`, `rollback_failed`, `failed`) of
    /// one pathway on one service, within `error_budget_window_secs`, that switch
    /// autonomy off for that pathway on that service until an admin resets it.
    pub error_budget_failures: u32,
    pub error_budget_window_secs: u64,
    /// Change freezes: while one is active, everything is denied except rollbacks.
    pub freeze_windows: Vec<FreezeWindowConfig>,
    /// Pathways that undo a change (exempt from change freezes).
    pub rollback_pathways: Vec<String>,
}

impl Default for GuardRails {
    fn default() -> Self {
        Self {
            autonomous_per_service_per_hour: 10,
            error_budget_failures: 3,
            error_budget_window_secs: 24 * 3600,
            freeze_windows: Vec::new(),
            rollback_pathways: vec!["rollback_deployment".to_owned(), "revert_config_commit".to_owned()],
        }
    }
}

/// One configured change freeze, with RFC 3339 times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindowConfig {
    pub name: String,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(default)]
    pub reason: String,
}

impl GuardRails {
    /// Checks the limits and parses the freeze windows.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.autonomous_per_service_per_hour == 0 {
            return Err((
                "guard_rails.autonomous_per_service_per_hour".to_owned(),
                "must be at least 1 (switch autonomy off with `arf autonomy off` instead)".to_owned(),
            ));
        }
        if self.error_budget_failures == 0 {
            return Err(("guard_rails.error_budget_failures".to_owned(), "must be at least 1".to_owned()));
        }
        if self.error_budget_window_secs == 0 {
            return Err(("guard_rails.error_budget_window_secs".to_owned(), "must be at least 1".to_owned()));
        }
        self.freezes().map(|_| ())
    }

    /// The freeze windows with their times parsed.
    pub fn freezes(&self) -> Result<Vec<FreezeWindow>, (String, String)> {
        let mut windows = Vec::with_capacity(self.freeze_windows.len());
        for (i, window) in self.freeze_windows.iter().enumerate() {
            let field = |name: &str| format!("guard_rails.freeze_windows[{i}].{name}");
            if window.name.trim().is_empty() {
                return Err((field("name"), "must not be empty".to_owned()));
            }
            let parse = |name: &str, text: &str| {
                arf_core::time::parse_rfc3339_ms(text)
                    .ok_or_else(|| (field(name), format!("`{text}` is not an RFC 3339 time")))
            };
            let starts_at_ms = parse("starts_at", &window.starts_at)?;
            let ends_at_ms = parse("ends_at", &window.ends_at)?;
            if ends_at_ms <= starts_at_ms {
                return Err((field("ends_at"), format!("`{}` is not after `starts_at`", window.ends_at)));
            }
            windows.push(FreezeWindow {
                name: window.name.clone(),
                starts_at_ms,
                ends_at_ms,
                reason: window.reason.clone(),
                active: false,
            });
        }
        Ok(windows)
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.error_budget_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

const HOUR_MS: i64 = 3600 * 1000;

/// The version of the saved state file.
pub const STATE_VERSION: u32 = 1;

/// Everything the guard rails remember. Saved as JSON in `data_dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardState {
    pub version: u32,
    pub autonomy: AutonomySwitch,
    /// Service → times (ms) of its autonomous authorizations in the last hour.
    pub autonomous_runs: BTreeMap<String, Vec<i64>>,
    /// Service → pathway → outcome statistics and recent failures.
    pub pathways: BTreeMap<String, BTreeMap<String, PathwayRecord>>,
    /// Latched guard rails: autonomy stays off for these until an admin resets them.
    pub trips: Vec<Trip>,
}

impl Default for GuardState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            autonomy: AutonomySwitch {
                enabled: true,
                changed_by: String::new(),
                changed_at_ms: 0,
                reason: String::new(),
            },
            autonomous_runs: BTreeMap::new(),
            pathways: BTreeMap::new(),
            trips: Vec::new(),
        }
    }
}

/// The global kill switch, and who last moved it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AutonomySwitch {
    pub enabled: bool,
    pub changed_by: String,
    pub changed_at_ms: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathwayRecord {
    pub stats: OutcomeStats,
    /// Times (ms) of failed verifications within the error-budget window.
    pub recent_failures: Vec<i64>,
}

/// Which guard rail latched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TripKind {
    RateLimit,
    ErrorBudget,
    /// A rollback failed: the service is quarantined (all its pathways).
    RollbackFailed,
}

impl TripKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::ErrorBudget => "error_budget",
            Self::RollbackFailed => "rollback_failed",
        }
    }
}

/// A guard rail that switched autonomy off for a service (rate limit) or for one
/// pathway on one service (error budget).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trip {
    pub kind: TripKind,
    pub service: String,
    /// Empty for a rate limit, which covers every pathway of the service.
    pub pathway: String,
    pub since_ms: i64,
    pub reason: String,
}

impl Trip {
    fn covers(&self, service: &str, pathway: &str) -> bool {
        self.service == service && (self.pathway.is_empty() || self.pathway == pathway)
    }
}

/// What the guard rails say about one proposed action, before policy runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub autonomy: AutonomyInput,
    pub freeze_windows: Vec<FreezeWindow>,
    /// This pathway's statistics on this service, keyed by pathway name.
    pub outcome_stats: BTreeMap<String, OutcomeStats>,
    /// The verified-success rate, for the risk history factor; `None` without runs.
    pub success_rate: Option<f64>,
    pub is_rollback: bool,
}

/// Looks at the guard rails for `pathway` on `service` at `now_ms`.
pub fn assess(
    state: &GuardState,
    rails: &GuardRails,
    freezes: &[FreezeWindow],
    service: &str,
    pathway: &str,
    now_ms: i64,
) -> Assessment {
    let runs = state
        .autonomous_runs
        .get(service)
        .map_or(0, |runs| runs.iter().filter(|&&at| at > now_ms.saturating_sub(HOUR_MS)).count());
    let rate_trip = state.trips.iter().find(|t| t.kind == TripKind::RateLimit && t.covers(service, pathway));
    let budget_trip = state.trips.iter().find(|t| t.kind == TripKind::ErrorBudget && t.covers(service, pathway));
    let quarantine_trip = state.trips.iter().find(|t| t.kind == TripKind::RollbackFailed && t.covers(service, pathway));
    let record = state.pathways.get(service).and_then(|p| p.get(pathway)).cloned().unwrap_or_default();
    let window_start = now_ms.saturating_sub(rails.window_ms());
    let failures = record.recent_failures.iter().filter(|&&at| at > window_start).count();
    let rate_limit = RateLimitInput {
        limit: rails.autonomous_per_service_per_hour,
        used: u32::try_from(runs).unwrap_or(u32::MAX),
        exceeded: rate_trip.is_some() || runs >= rails.autonomous_per_service_per_hour as usize,
    };
    let error_budget = ErrorBudgetInput {
        limit: rails.error_budget_failures,
        window_secs: rails.error_budget_window_secs,
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        exhausted: budget_trip.is_some(),
    };
    let quarantine =
        QuarantineInput { active: quarantine_trip.is_some(), reason: quarantine_trip.map(|t| t.reason.clone()).unwrap_or_default() };
    let global = state.autonomy.enabled;
    let autonomy = AutonomyInput {
        enabled: global && !rate_limit.exceeded && !error_budget.exhausted && !quarantine.active,
        global,
        global_reason: state.autonomy.reason.clone(),
        rate_limit,
        error_budget,
        quarantine,
    };
    let freeze_windows = freezes
        .iter()
        .map(|w| FreezeWindow { active: w.starts_at_ms <= now_ms && now_ms < w.ends_at_ms, ..w.clone() })
        .collect();
    let success_rate = (record.stats.runs > 0).then(|| record.stats.verified as f64 / record.stats.runs as f64);
    Assessment {
        autonomy,
        freeze_windows,
        outcome_stats: BTreeMap::from([(pathway.to_owned(), record.stats)]),
        success_rate,
        is_rollback: rails.rollback_pathways.iter().any(|p| p == pathway),
    }
}

/// The rule ids the backstop adds when policy was looser than the guard rails.
pub const BACKSTOP_FREEZE: &str = "guard_freeze";
pub const BACKSTOP_AUTONOMY: &str = "guard_autonomy_off";

/// Applies the guard rails after policy: a freeze denies everything but a rollback,
/// and autonomy that is off turns `autonomous` into `approval`. Only ever stricter.
pub fn backstop(mut outcome: PolicyOutcome, assessment: &Assessment) -> PolicyOutcome {
    let frozen: Vec<&FreezeWindow> = assessment.freeze_windows.iter().filter(|w| w.active).collect();
    if !frozen.is_empty() && !assessment.is_rollback && outcome.route != Route::Deny {
        let names = frozen.iter().map(|w| format!("`{}`", w.name)).collect::<Vec<_>>().join(", ");
        outcome.route = Route::Deny;
        outcome.approvals_required = 0;
        outcome.approver_roles.clear();
        outcome.rules_fired.push(BACKSTOP_FREEZE.to_owned());
        outcome.reasons.push(format!(
            "the governor enforces the change freeze {names}: only rollbacks run during a freeze, so nothing runs"
        ));
    }
    if !assessment.autonomy.enabled && outcome.route == Route::Autonomous {
        outcome.route = Route::Approval;
        outcome.approvals_required = 1;
        outcome.approver_roles = vec!["admin".to_owned(), "oncall".to_owned()];
        outcome.rules_fired.push(BACKSTOP_AUTONOMY.to_owned());
        outcome.reasons.push(format!(
            "the governor enforces that autonomy is off ({}), so an on-call engineer must approve",
            autonomy_off_because(&assessment.autonomy)
        ));
    }
    outcome
}

/// Why autonomy is off, in words.
pub fn autonomy_off_because(autonomy: &AutonomyInput) -> String {
    let mut why = Vec::new();
    if !autonomy.global {
        why.push("the global kill switch is off".to_owned());
    }
    if autonomy.rate_limit.exceeded {
        why.push(format!(
            "the service reached its limit of {} autonomous actions per hour",
            autonomy.rate_limit.limit
        ));
    }
    if autonomy.error_budget.exhausted {
        why.push("the pathway used up its error budget on this service".to_owned());
    }
    if autonomy.quarantine.active {
        why.push(format!("the service is quarantined: {}", autonomy.quarantine.reason));
    }
    if why.is_empty() { "no guard rail is tripped".to_owned() } else { why.join("; ") }
}

/// Records an autonomous authorization for `service`; returns the trip when this one
/// reached the hourly limit.
pub fn note_autonomous(state: &mut GuardState, rails: &GuardRails, service: &str, now_ms: i64) -> Option<Trip> {
    let runs = state.autonomous_runs.entry(service.to_owned()).or_default();
    runs.retain(|&at| at > now_ms.saturating_sub(HOUR_MS));
    runs.push(now_ms);
    let used = runs.len();
    let limit = rails.autonomous_per_service_per_hour as usize;
    let tripped = state.trips.iter().any(|t| t.kind == TripKind::RateLimit && t.service == service);
    if used >= limit && !tripped {
        let trip = Trip {
            kind: TripKind::RateLimit,
            service: service.to_owned(),
            pathway: String::new(),
            since_ms: now_ms,
            reason: format!(
                "service `{service}` reached {used} autonomous actions within an hour (the limit is {limit})"
            ),
        };
        state.trips.push(trip.clone());
        return Some(trip);
    }
    None
}

/// An executor outcome that counts against the error budget.
pub fn is_failure(outcome: &str) -> bool {
    matches!(outcome, "rolled_back" | "rollback_failed" | "failed")
}

/// Folds an executor outcome into the statistics; returns the trips it caused: a
/// used-up error budget, and, for `rollback_failed`, the quarantine of the whole
/// service (its state is one nobody verified, so no pathway runs on it without a
/// person until an admin resets it). Outcomes that are not final are ignored.
pub fn record_outcome(
    state: &mut GuardState,
    rails: &GuardRails,
    service: &str,
    pathway: &str,
    outcome: &str,
    now_ms: i64,
) -> Vec<Trip> {
    let mut trips = Vec::new();
    let quarantined = state.trips.iter().any(|t| t.kind == TripKind::RollbackFailed && t.service == service);
    if outcome == "rollback_failed" && !quarantined {
        let trip = Trip {
            kind: TripKind::RollbackFailed,
            service: service.to_owned(),
            pathway: String::new(),
            since_ms: now_ms,
            reason: format!(
                "the rollback of pathway `{pathway}` on service `{service}` failed at {}, so nobody knows the service's state; a person must look, then an admin resets the quarantine",
                arf_core::time::format_ms(now_ms)
            ),
        };
        state.trips.push(trip.clone());
        trips.push(trip);
    }
    if let Some(trip) = count_outcome(state, rails, service, pathway, outcome, now_ms) {
        trips.push(trip);
    }
    trips
}

/// Counts an outcome in the pathway's statistics; the trip when it used up the error budget.
fn count_outcome(
    state: &mut GuardState,
    rails: &GuardRails,
    service: &str,
    pathway: &str,
    outcome: &str,
    now_ms: i64,
) -> Option<Trip> {
    let record = state.pathways.entry(service.to_owned()).or_default().entry(pathway.to_owned()).or_default();
    match outcome {
        "verified" => record.stats.verified += 1,
        "rolled_back" | "rollback_failed" => record.stats.rolled_back += 1,
        "failed" => record.stats.failed += 1,
        _ => return None,
    }
    record.stats.runs += 1;
    if !is_failure(outcome) {
        return None;
    }
    let window_start = now_ms.saturating_sub(rails.window_ms());
    record.recent_failures.retain(|&at| at > window_start);
    record.recent_failures.push(now_ms);
    let failures = record.recent_failures.len();
    let limit = rails.error_budget_failures as usize;
    let tripped = state.trips.iter().any(|t| t.kind == TripKind::ErrorBudget && t.covers(service, pathway));
    if failures >= limit && !tripped {
        let trip = Trip {
            kind: TripKind::ErrorBudget,
            service: service.to_owned(),
            pathway: pathway.to_owned(),
            since_ms: now_ms,
            reason: format!(
                "pathway `{pathway}` failed verification {failures} times on service `{service}` within {} hours (the budget is {limit})",
                rails.error_budget_window_secs / 3600
            ),
        };
        state.trips.push(trip.clone());
        return Some(trip);
    }
    None
}

/// Clears the trips for `service` (all of them, or one pathway's), with the counts
/// that caused them, so autonomy starts afresh. Returns what was cleared.
pub fn reset(state: &mut GuardState, service: &str, pathway: Option<&str>) -> Vec<Trip> {
    let (cleared, kept): (Vec<Trip>, Vec<Trip>) = std::mem::take(&mut state.trips)
        .into_iter()
        .partition(|t| t.service == service && pathway.is_none_or(|p| t.pathway.is_empty() || t.pathway == p));
    state.trips = kept;
    for trip in &cleared {
        match trip.kind {
            TripKind::RateLimit => {
                state.autonomous_runs.remove(service);
            }
            TripKind::ErrorBudget => {
                if let Some(record) = state.pathways.get_mut(service).and_then(|p| p.get_mut(&trip.pathway)) {
                    record.recent_failures.clear();
                }
            }
            TripKind::RollbackFailed => {}
        }
    }
    cleared
}

/// Moves the global kill switch.
pub fn set_autonomy(state: &mut GuardState, enabled: bool, by: &str, reason: &str, now_ms: i64) {
    state.autonomy = AutonomySwitch { enabled, changed_by: by.to_owned(), changed_at_ms: now_ms, reason: reason.to_owned() };
}

/// Why the saved state could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("cannot read guard-rail state `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("guard-rail state `{path}` is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write guard-rail state `{path}`: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The state file inside `data_dir`.
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("guard_state.json")
}

/// Loads the saved state; a missing file is a fresh start.
pub fn load(path: &Path) -> Result<GuardState, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(GuardState::default()),
        Err(source) => return Err(StateError::Read { path: path.to_owned(), source }),
    };
    let state: GuardState = serde_json::from_str(&text)
        .map_err(|e| StateError::Invalid { path: path.to_owned(), message: e.to_string() })?;
    if state.version != STATE_VERSION {
        return Err(StateError::Invalid {
            path: path.to_owned(),
            message: format!("version `{}` is not the supported `{STATE_VERSION}`", state.version),
        });
    }
    Ok(state)
}

/// Saves the state durably: a temporary file, synced, then renamed over the old one.
pub fn save(path: &Path, state: &GuardState) -> Result<(), StateError> {
    use std::io::Write as _;
    let write = |source| StateError::Write { path: path.to_owned(), source };
    let text = serde_json::to_vec_pretty(state).map_err(|e| write(std::io::Error::other(e)))?;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(write)?;
    file.write_all(&text).and_then(|()| file.sync_all()).map_err(write)?;
    std::fs::rename(&temporary, path).map_err(write)
}

/// The guard rails as an on-call engineer reads them in an explanation.
pub fn describe(assessment: &Assessment, service: &str, pathway: &str) -> Vec<String> {
    let autonomy = &assessment.autonomy;
    let mut lines = Vec::new();
    if autonomy.global {
        lines.push("global autonomy switch: on".to_owned());
    } else if autonomy.global_reason.trim().is_empty() {
        lines.push("global autonomy switch: OFF".to_owned());
    } else {
        lines.push(format!("global autonomy switch: OFF ({})", autonomy.global_reason.trim()));
    }
    let rate = &autonomy.rate_limit;
    lines.push(format!(
        "rate limit: {} of {} autonomous actions on service `{service}` in the last hour{}",
        rate.used,
        rate.limit,
        if rate.exceeded { "; limit reached, autonomy is off for the service until an admin resets it" } else { "" }
    ));
    let budget = &autonomy.error_budget;
    lines.push(format!(
        "error budget: {} of {} failed verifications of `{pathway}` on `{service}` within {} hours{}",
        budget.failures,
        budget.limit,
        budget.window_secs / 3600,
        if budget.exhausted { "; used up, autonomy is off for this pathway here until an admin resets it" } else { "" }
    ));
    let active: Vec<&FreezeWindow> = assessment.freeze_windows.iter().filter(|w| w.active).collect();
    if active.is_empty() {
        lines.push("change freeze: none active".to_owned());
    } else {
        for window in active {
            let exempt = if assessment.is_rollback { "; this pathway is a rollback, so it is exempt" } else { "" };
            lines.push(format!(
                "change freeze: `{}` until {} ({}){exempt}",
                window.name,
                arf_core::time::format_ms(window.ends_at_ms),
                if window.reason.trim().is_empty() { "no reason given" } else { window.reason.trim() }
            ));
        }
    }
    if let Some(stats) = assessment.outcome_stats.get(pathway).filter(|s| s.runs > 0) {
        lines.push(format!(
            "history of `{pathway}` on `{service}`: {} runs, {} verified, {} rolled back, {} failed",
            stats.runs, stats.verified, stats.rolled_back, stats.failed
        ));
    }
    lines
}
