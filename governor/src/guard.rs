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

pub(crate) const HOUR_MS: i64 = 3600 * 1000;

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
    /// Decision id → the outcome counted for it, for each decision whose outcome is
    /// counted in `pathways` but not yet known to be in the log. The governor learns
    /// such an outcome again after a restart; this keeps it from counting twice.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unlogged_outcomes: BTreeMap<String, String>,
    /// Model → pathway → outcome statistics of the decisions its proposals led to,
    /// for calibrating its confidence (`crate::calibration`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, BTreeMap<String, OutcomeStats>>,
    /// Service → pathway → track record toward graduation (`crate::graduation`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tracks: crate::graduation::Tracks,
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
            unlogged_outcomes: BTreeMap::new(),
            models: BTreeMap::new(),
            tracks: BTreeMap::new(),
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

pub use arf_core::decision::{Trip, TripKind};

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

/// A final executor outcome, which the statistics count.
pub fn is_outcome(outcome: &str) -> bool {
    matches!(outcome, "verified" | "rolled_back" | "rollback_failed" | "failed")
}

/// Folds the outcome of decision `decision_id` into the statistics, once per
/// decision; returns the trips it caused: a used-up error budget, and, for
/// `rollback_failed`, the quarantine of the whole service (its state is one nobody
/// verified, so no pathway runs on it without a person until an admin resets it).
///
/// Outcomes that are not final are ignored. The decision is remembered in
/// `unlogged_outcomes` until [`outcome_logged`]: the same outcome again counts and
/// trips nothing, and a different one (the real outcome of an execution first
/// counted as a failure because it was overdue) is not counted again, but a
/// `rollback_failed` still quarantines the service.
#[expect(clippy::too_many_arguments, reason = "one outcome, and everything it is counted under")]
pub fn record_outcome(
    state: &mut GuardState,
    rails: &GuardRails,
    decision_id: &str,
    service: &str,
    pathway: &str,
    model: &str,
    outcome: &str,
    now_ms: i64,
) -> Vec<Trip> {
    // A precheck's refusal ran nothing, so the pathway's record and error budget
    // are untouched; but the model proposed an action its target refused, which
    // its calibration counts as a miss. A start the executor never ran (`not_run`)
    // says nothing of the pathway or of the model, so nothing counts it.
    let refused = outcome == "refused";
    if !is_outcome(outcome) && !refused {
        return Vec::new();
    }
    let counted = state.unlogged_outcomes.insert(decision_id.to_owned(), outcome.to_owned());
    if counted.as_deref() == Some(outcome) {
        return Vec::new();
    }
    let mut trips = Vec::new();
    if outcome == "rollback_failed" {
        trips.extend(quarantine(state, service, pathway, now_ms));
    }
    if counted.is_none() {
        if !refused {
            trips.extend(count_outcome(state, rails, service, pathway, outcome, now_ms));
        }
        if !model.is_empty() {
            let stats = state.models.entry(model.to_owned()).or_default().entry(pathway.to_owned()).or_default();
            stats.runs += 1;
            match outcome {
                "verified" => stats.verified += 1,
                "rolled_back" | "rollback_failed" => stats.rolled_back += 1,
                _ => stats.failed += 1,
            }
        }
    }
    trips
}

/// Forgets that `decision_id`'s outcome was counted, once its record is in the log:
/// from then on a restart rebuilds the decision as settled and never asks for its
/// outcome again. True when there was something to forget.
pub fn outcome_logged(state: &mut GuardState, decision_id: &str) -> bool {
    state.unlogged_outcomes.remove(decision_id).is_some()
}

/// Forgets the counted outcomes that the log turns out to hold (`is_logged`), as
/// when the governor stopped between logging an outcome and [`outcome_logged`].
/// True when there was something to forget.
pub fn forget_logged_outcomes(state: &mut GuardState, is_logged: impl Fn(&str) -> bool) -> bool {
    let before = state.unlogged_outcomes.len();
    state.unlogged_outcomes.retain(|decision_id, _| !is_logged(decision_id));
    state.unlogged_outcomes.len() != before
}

/// Quarantines `service` after a failed rollback of `pathway`, unless it already is.
fn quarantine(state: &mut GuardState, service: &str, pathway: &str, now_ms: i64) -> Option<Trip> {
    let quarantined = state.trips.iter().any(|t| t.kind == TripKind::RollbackFailed && t.service == service);
    if quarantined {
        return None;
    }
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
    Some(trip)
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

/// Clears the trips for `service` (all of them, or only one pathway's error budget;
/// see [`Trip::lifted_by`]), with the counts that caused them, so autonomy starts
/// afresh. Returns what was cleared.
pub fn reset(state: &mut GuardState, service: &str, pathway: Option<&str>) -> Vec<Trip> {
    let (cleared, kept): (Vec<Trip>, Vec<Trip>) =
        std::mem::take(&mut state.trips).into_iter().partition(|t| t.lifted_by(service, pathway));
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

#[cfg(test)]
mod tests {
    use super::*;
    use TripKind::{ErrorBudget, RateLimit, RollbackFailed};

    fn trip(kind: TripKind, service: &str, pathway: &str) -> Trip {
        Trip { kind, service: service.to_owned(), pathway: pathway.to_owned(), since_ms: 1, reason: String::new() }
    }

    /// `web` has its rate limit, its quarantine and two error budgets tripped; `api` one error budget.
    fn tripped() -> GuardState {
        GuardState {
            trips: vec![
                trip(RateLimit, "web", ""),
                trip(RollbackFailed, "web", ""),
                trip(ErrorBudget, "web", "restart_service"),
                trip(ErrorBudget, "web", "purge_cache"),
                trip(ErrorBudget, "api", "restart_service"),
            ],
            ..GuardState::default()
        }
    }

    fn check_reset(service: &str, pathway: Option<&str>, expected: &[(TripKind, &str)]) {
        let mut state = tripped();
        let cleared: Vec<(TripKind, String)> =
            reset(&mut state, service, pathway).into_iter().map(|t| (t.kind, t.pathway)).collect();
        let expected: Vec<(TripKind, String)> = expected.iter().map(|(k, p)| (*k, (*p).to_owned())).collect();
        assert_eq!(cleared, expected, "reset of `{service}` {pathway:?}");
        assert_eq!(state.trips.len(), tripped().trips.len() - cleared.len(), "reset of `{service}` {pathway:?}");
    }

    #[test]
    fn a_reset_clears_no_more_than_it_names() {
        check_reset("web", Some("restart_service"), &[(ErrorBudget, "restart_service")]);
        check_reset("web", Some("rollback_deployment"), &[]);
        check_reset("web", Some(""), &[]);
        check_reset(
            "web",
            None,
            &[(RateLimit, ""), (RollbackFailed, ""), (ErrorBudget, "restart_service"), (ErrorBudget, "purge_cache")],
        );
        check_reset("api", Some("restart_service"), &[(ErrorBudget, "restart_service")]);
        check_reset("db", None, &[]);
    }

    #[test]
    fn a_pathway_reset_leaves_the_service_wide_guard_rails_in_force() {
        let rails = GuardRails::default();
        let mut state = tripped();
        reset(&mut state, "web", Some("restart_service"));
        let autonomy = assess(&state, &rails, &[], "web", "restart_service", 10).autonomy;
        assert!(!autonomy.enabled);
        assert!(!autonomy.error_budget.exhausted);
        assert!(autonomy.quarantine.active, "{autonomy:?}");
        assert!(autonomy.rate_limit.exceeded, "{autonomy:?}");
        reset(&mut state, "web", None);
        assert!(assess(&state, &rails, &[], "web", "restart_service", 10).autonomy.enabled);
    }

    enum Step {
        /// Decision, outcome: what a follower of the decision reports.
        Report(&'static str, &'static str),
        /// The decision's outcome is in the log.
        Logged(&'static str),
        /// An admin resets the service.
        Reset,
    }
    use Step::{Logged, Report, Reset};

    /// Feeds `steps` for `restart_service` on `web`, then checks the statistics
    /// (runs, verified, rolled back, failed), the trips in force and the decisions
    /// still remembered as counted.
    fn check_outcomes(steps: &[Step], stats: (u64, u64, u64, u64), trips: &[TripKind], unlogged: &[&str]) {
        let rails = GuardRails::default();
        let mut state = GuardState::default();
        for (now, step) in (1..).zip(steps) {
            match step {
                Report(decision_id, outcome) => {
                    record_outcome(&mut state, &rails, decision_id, "web", "restart_service", "model-a", outcome, now);
                }
                Logged(decision_id) => {
                    outcome_logged(&mut state, decision_id);
                }
                Reset => {
                    reset(&mut state, "web", None);
                }
            }
        }
        let record = state.pathways.get("web").and_then(|p| p.get("restart_service")).cloned().unwrap_or_default();
        let got = (record.stats.runs, record.stats.verified, record.stats.rolled_back, record.stats.failed);
        assert_eq!(got, stats, "statistics");
        assert_eq!(state.trips.iter().map(|t| t.kind).collect::<Vec<_>>(), trips, "trips");
        assert_eq!(state.unlogged_outcomes.keys().map(String::as_str).collect::<Vec<_>>(), unlogged, "unlogged");
    }

    #[test]
    fn an_outcome_counts_once_per_decision() {
        check_outcomes(&[Report("d1", "verified"), Logged("d1"), Report("d2", "verified")], (2, 2, 0, 0), &[], &["d2"]);
        // Learned twice (two followers, or again after a restart): counted once.
        check_outcomes(&[Report("d1", "rolled_back"), Report("d1", "rolled_back")], (1, 0, 1, 0), &[], &["d1"]);
        check_outcomes(&[Report("d1", "failed"), Report("d1", "failed"), Report("d1", "failed")], (1, 0, 0, 1), &[], &["d1"]);
        check_outcomes(
            &[Report("d1", "failed"), Report("d2", "failed"), Report("d3", "failed")],
            (3, 0, 0, 3),
            &[ErrorBudget],
            &["d1", "d2", "d3"],
        );
        // Not final: nothing to count, nothing to remember.
        check_outcomes(&[Report("d1", "running"), Report("d1", "dispatch_failed")], (0, 0, 0, 0), &[], &[]);
        // Refused by its precheck: nothing ran, so the pathway's record and error
        // budget are untouched, but the model's calibration counts three misses.
        check_outcomes(&[Report("d1", "refused"), Report("d2", "refused"), Report("d3", "refused")], (0, 0, 0, 0), &[], &["d1", "d2", "d3"]);
        let (rails, mut state) = (GuardRails::default(), GuardState::default());
        for (now, id) in (1..).zip(["d1", "d2", "d3"]) {
            record_outcome(&mut state, &rails, id, "web", "restart_service", "model-a", "refused", now);
        }
        let model = &state.models["model-a"]["restart_service"];
        assert_eq!((model.runs, model.verified), (3, 0), "{model:?}");
        // Logged as started but never run (its start's answer was lost): not a run
        // of the pathway, nor a miss of the model; three of them trip nothing.
        check_outcomes(&[Report("d1", "not_run"), Report("d2", "not_run"), Report("d3", "not_run")], (0, 0, 0, 0), &[], &[]);
        let (rails, mut state) = (GuardRails::default(), GuardState::default());
        record_outcome(&mut state, &rails, "d1", "web", "restart_service", "model-a", "not_run", 1);
        assert!(state.models.is_empty(), "{:?}", state.models);
    }

    #[test]
    fn a_failed_rollback_quarantines_once_even_when_learned_late() {
        check_outcomes(&[Report("d1", "rollback_failed")], (1, 0, 1, 0), &[RollbackFailed], &["d1"]);
        check_outcomes(&[Report("d1", "rollback_failed"), Report("d1", "rollback_failed")], (1, 0, 1, 0), &[RollbackFailed], &["d1"]);
        // An overdue execution counted as a failure, whose rollback then failed: not
        // counted again, but the service is quarantined.
        check_outcomes(&[Report("d1", "failed"), Report("d1", "rollback_failed")], (1, 0, 0, 1), &[RollbackFailed], &["d1"]);
        // The same report again after an admin lifted the quarantine does not bring it back.
        check_outcomes(&[Report("d1", "rollback_failed"), Reset, Report("d1", "rollback_failed")], (1, 0, 1, 0), &[], &["d1"]);
    }

    #[test]
    fn counted_outcomes_the_log_holds_are_forgotten() {
        let rails = GuardRails::default();
        let mut state = GuardState::default();
        for decision_id in ["d1", "d2"] {
            record_outcome(&mut state, &rails, decision_id, "web", "restart_service", "model-a", "verified", 1);
        }
        assert!(forget_logged_outcomes(&mut state, |id| id == "d1"));
        assert!(!forget_logged_outcomes(&mut state, |id| id == "d1"));
        assert_eq!(state.unlogged_outcomes.keys().collect::<Vec<_>>(), ["d2"]);
        assert!(outcome_logged(&mut state, "d2"));
        assert!(!outcome_logged(&mut state, "d2"));
    }

    #[test]
    fn a_state_file_without_unlogged_outcomes_still_loads_and_none_are_written() {
        let text = serde_json::to_string(&GuardState::default()).unwrap_or_default();
        assert!(!text.contains("unlogged_outcomes"), "{text}");
        let state: Result<GuardState, _> = serde_json::from_str(&text);
        assert_eq!(state.ok(), Some(GuardState::default()));
    }
}
