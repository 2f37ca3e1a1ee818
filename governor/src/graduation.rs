//! Earning autonomy: the mode each service runs in, and each pathway's track record
//! on each service.
//!
//! A service in an environment runs in one of three modes (`[[governor.modes]]`,
//! first match wins, `autonomous` when none does):
//! - `shadow`: the governor decides as always and logs what would have run, but
//!   nothing is sent to the executor; people judge those decisions (`arf shadow
//!   judge`), and their judgements build the pathway's record;
//! - `review`: a person approves every action, except on a pathway that has
//!   *graduated* on the service;
//! - `autonomous`: policy decides, as it says.
//!
//! Records are kept per environment, service and pathway: what a pathway earned on
//! a service in staging says nothing about the same service in production.
//!
//! A pathway graduates on a service once it has [`Graduation::runs`] successes
//! (agreeing judgements of its shadow decisions, and verified live runs) with no
//! setback after them, within [`Graduation::window_secs`]. A setback (a failed or
//! rolled-back run, a disagreeing judgement) demotes it at once, and it must earn
//! the runs again. Policy reads the record (`input.track_record`) and the mode
//! (`input.mode`); [`backstop`] holds review mode after policy, so a bundle that
//! forgets it cannot loosen it. Every promotion and demotion is logged.
//!
//! Pure, with time passed in; the records live in the guard-rail state.

use std::collections::BTreeMap;

use arf_core::decision::{Mode, Route};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::PolicyOutcome;

/// One `[[governor.modes]]` entry: the mode of `service` in `environment` (`*` for any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeRule {
    #[serde(default = "any")]
    pub environment: String,
    #[serde(default = "any")]
    pub service: String,
    pub mode: Mode,
}

fn any() -> String {
    "*".to_owned()
}

/// The mode of `service` in `environment`: the first rule that matches both.
pub fn mode_for(rules: &[ModeRule], environment: &str, service: &str) -> Mode {
    let fits = |pattern: &str, value: &str| pattern == "*" || pattern == value;
    rules.iter().find(|r| fits(&r.environment, environment) && fits(&r.service, service)).map_or(Mode::Autonomous, |r| r.mode)
}

/// When a pathway graduates (`[governor.graduation]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Graduation {
    /// Successes in a row (agreeing judgements and verified runs) that graduate a pathway on a service.
    pub runs: u32,
    /// How far back successes count.
    pub window_secs: u64,
}

impl Default for Graduation {
    fn default() -> Self {
        Self { runs: 5, window_secs: 30 * 24 * 3600 }
    }
}

impl Graduation {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.runs == 0 {
            return Err(("graduation.runs".to_owned(), "must be at least 1".to_owned()));
        }
        if self.window_secs == 0 {
            return Err(("graduation.window_secs".to_owned(), "must be at least 1".to_owned()));
        }
        Ok(())
    }

    fn window_start(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(i64::try_from(self.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX))
    }
}

/// A pathway's record on one service: when each kind of event happened (within the
/// window), and whether it has graduated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Track {
    pub agreed: Vec<i64>,
    pub disagreed: Vec<i64>,
    pub verified: Vec<i64>,
    pub failed: Vec<i64>,
    pub graduated: bool,
}

/// What happened that counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A person judged a shadow decision right.
    Agreed,
    /// A person judged a shadow decision wrong.
    Disagreed,
    /// A live run verified.
    Verified,
    /// A live run failed, rolled back, or is overdue.
    Failed,
}

impl Event {
    /// The event a live outcome is; `None` for one that is not final.
    pub fn of_outcome(outcome: &str) -> Option<Self> {
        match outcome {
            "verified" => Some(Self::Verified),
            "rolled_back" | "rollback_failed" | "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Self::Agreed => "a person agreed with its shadow decision",
            Self::Disagreed => "a person disagreed with its shadow decision",
            Self::Verified => "a run verified",
            Self::Failed => "a run failed verification",
        }
    }
}

/// A pathway's record as policy reads it (`input.track_record`): counts within the
/// window, and the successes since the last setback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackRecordInput {
    pub window_secs: u64,
    /// Successes in a row that graduate the pathway.
    pub required_runs: u32,
    pub shadow_agreed: u32,
    pub shadow_disagreed: u32,
    pub verified: u32,
    pub failed: u32,
    /// Successes since the last setback (or since the window began).
    pub earned: u32,
    pub graduated: bool,
}

impl Default for TrackRecordInput {
    fn default() -> Self {
        let graduation = Graduation::default();
        Self {
            window_secs: graduation.window_secs,
            required_runs: graduation.runs,
            shadow_agreed: 0,
            shadow_disagreed: 0,
            verified: 0,
            failed: 0,
            earned: 0,
            graduated: false,
        }
    }
}

fn count(times: &[i64], since: i64) -> u32 {
    u32::try_from(times.iter().filter(|&&at| at > since).count()).unwrap_or(u32::MAX)
}

impl Track {
    /// The record at `now_ms`.
    pub fn input(&self, graduation: &Graduation, now_ms: i64) -> TrackRecordInput {
        let start = graduation.window_start(now_ms);
        let last_setback = self.disagreed.iter().chain(&self.failed).copied().filter(|&at| at > start).max().unwrap_or(start);
        let earned = count(&self.agreed, last_setback) + count(&self.verified, last_setback);
        TrackRecordInput {
            window_secs: graduation.window_secs,
            required_runs: graduation.runs,
            shadow_agreed: count(&self.agreed, start),
            shadow_disagreed: count(&self.disagreed, start),
            verified: count(&self.verified, start),
            failed: count(&self.failed, start),
            earned,
            graduated: earned >= graduation.runs,
        }
    }
}

/// A promotion or demotion, to be logged and explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub environment: String,
    pub service: String,
    pub pathway: String,
    pub graduated: bool,
    pub reason: String,
}

/// Environment → service → pathway → track record.
pub type Tracks = BTreeMap<String, BTreeMap<String, BTreeMap<String, Track>>>;

/// The record of `pathway` on `service` in `environment`, if it has one.
pub fn track<'a>(tracks: &'a Tracks, environment: &str, service: &str, pathway: &str) -> Option<&'a Track> {
    tracks.get(environment)?.get(service)?.get(pathway)
}

/// Every record, as (environment, service, pathway, track).
pub fn all(tracks: &Tracks) -> impl Iterator<Item = (&String, &String, &String, &Track)> {
    tracks.iter().flat_map(|(environment, services)| {
        services.iter().flat_map(move |(service, pathways)| pathways.iter().map(move |(pathway, track)| (environment, service, pathway, track)))
    })
}

/// Notes `event` for `pathway` on `service` in `environment` at `now_ms`,
/// forgetting what fell out of the window; the promotion or demotion it caused, if any.
pub fn note(tracks: &mut Tracks, graduation: &Graduation, environment: &str, service: &str, pathway: &str, event: Event, now_ms: i64) -> Option<Change> {
    let track = tracks.entry(environment.to_owned()).or_default().entry(service.to_owned()).or_default().entry(pathway.to_owned()).or_default();
    let start = graduation.window_start(now_ms);
    for times in [&mut track.agreed, &mut track.disagreed, &mut track.verified, &mut track.failed] {
        times.retain(|&at| at > start);
    }
    match event {
        Event::Agreed => track.agreed.push(now_ms),
        Event::Disagreed => track.disagreed.push(now_ms),
        Event::Verified => track.verified.push(now_ms),
        Event::Failed => track.failed.push(now_ms),
    }
    let record = track.input(graduation, now_ms);
    if record.graduated == track.graduated {
        return None;
    }
    track.graduated = record.graduated;
    let reason = if record.graduated {
        format!(
            "pathway `{pathway}` graduated on service `{service}` in {environment}: {} successes in a row within {} days ({} agreeing shadow judgements and {} verified runs in the window), with no setback since",
            record.earned,
            graduation.window_secs / 86_400,
            record.shadow_agreed,
            record.verified
        )
    } else {
        format!("pathway `{pathway}` was demoted on service `{service}` in {environment}: {}; it must earn {} successes in a row again", event.words(), graduation.runs)
    };
    Some(Change { environment: environment.to_owned(), service: service.to_owned(), pathway: pathway.to_owned(), graduated: record.graduated, reason })
}

/// The rule id the governor adds when it holds review mode after policy.
pub const BACKSTOP_REVIEW: &str = "guard_review_mode";

/// Review mode after policy: an action on a pathway that has not graduated on the
/// service does not run without a person, whatever the bundle answered.
pub fn backstop(mut outcome: PolicyOutcome, mode: Mode, record: &TrackRecordInput, service: &str, pathway: &str) -> PolicyOutcome {
    if mode == Mode::Review && !record.graduated && outcome.route == Route::Autonomous {
        outcome.route = Route::Approval;
        outcome.approvals_required = outcome.approvals_required.max(1);
        if outcome.approver_roles.is_empty() {
            outcome.approver_roles = vec!["oncall".to_owned(), "admin".to_owned()];
        }
        outcome.rules_fired.push(BACKSTOP_REVIEW.to_owned());
        outcome.reasons.push(format!(
            "the governor holds review mode: service `{service}` is in review, and pathway `{pathway}` has {} of the {} successes in a row it needs to run on its own, so a person approves",
            record.earned, record.required_runs
        ));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn the_first_matching_mode_applies() {
        let rules: Vec<ModeRule> = toml::from_str::<BTreeMap<String, Vec<ModeRule>>>(
            "modes = [{ environment = \"production\", service = \"payments\", mode = \"shadow\" }, { environment = \"production\", mode = \"review\" }]",
        )
        .unwrap()
        .remove("modes")
        .unwrap();
        assert_eq!(mode_for(&rules, "production", "payments"), Mode::Shadow);
        assert_eq!(mode_for(&rules, "production", "checkout"), Mode::Review);
        assert_eq!(mode_for(&rules, "staging", "payments"), Mode::Autonomous);
    }

    /// Only a run's verdict moves a track record: a precheck's refusal ran nothing,
    /// nor did a start the executor never ran.
    #[test]
    fn only_runs_that_ran_count() {
        assert_eq!(Event::of_outcome("verified"), Some(Event::Verified));
        assert_eq!(Event::of_outcome("rolled_back"), Some(Event::Failed));
        assert_eq!(Event::of_outcome("refused"), None);
        assert_eq!(Event::of_outcome("not_run"), None);
        assert_eq!(Event::of_outcome("running"), None);
    }

    /// Graduation needs `runs` successes after the last setback; one setback demotes at once.
    #[test]
    fn successes_in_a_row_graduate_and_a_setback_demotes_at_once() {
        let graduation = Graduation { runs: 3, window_secs: 30 * 86_400 };
        let mut tracks = Tracks::new();
        let mut at = 100 * DAY;
        let mut step = |tracks: &mut Tracks, event| {
            at += DAY;
            note(tracks, &graduation, "staging", "web", "restart_service", event, at)
        };
        assert_eq!(step(&mut tracks, Event::Agreed), None);
        assert_eq!(step(&mut tracks, Event::Verified), None);
        let promoted = step(&mut tracks, Event::Agreed).unwrap();
        assert!(promoted.graduated && promoted.reason.contains("3 successes in a row"), "{promoted:?}");
        assert_eq!(step(&mut tracks, Event::Verified), None, "still graduated");
        let demoted = step(&mut tracks, Event::Failed).unwrap();
        assert!(!demoted.graduated && demoted.reason.contains("failed verification"), "{demoted:?}");
        assert_eq!(step(&mut tracks, Event::Agreed), None);
        assert_eq!(step(&mut tracks, Event::Agreed), None, "two since the setback are not three");
        assert!(step(&mut tracks, Event::Verified).unwrap().graduated);
        assert!(!step(&mut tracks, Event::Disagreed).unwrap().graduated, "a disagreeing judgement demotes too");
        // Other pathways, services and environments keep their own records.
        assert!(track(&tracks, "staging", "web", "scale_out").is_none());
        assert!(track(&tracks, "production", "web", "restart_service").is_none(), "staging's record says nothing about production");
    }

    #[test]
    fn successes_older_than_the_window_do_not_count() {
        let graduation = Graduation { runs: 2, window_secs: 10 * 86_400 };
        let mut tracks = Tracks::new();
        assert_eq!(note(&mut tracks, &graduation, "staging", "web", "p", Event::Agreed, DAY), None);
        assert_eq!(note(&mut tracks, &graduation, "staging", "web", "p", Event::Agreed, 20 * DAY), None, "the first is out of the window");
        assert!(note(&mut tracks, &graduation, "staging", "web", "p", Event::Verified, 21 * DAY).unwrap().graduated);
        let record = track(&tracks, "staging", "web", "p").unwrap().input(&graduation, 21 * DAY);
        assert_eq!((record.shadow_agreed, record.verified, record.earned), (1, 1, 2));
    }

    #[test]
    fn review_mode_holds_after_policy_until_graduation() {
        let allowed = PolicyOutcome {
            route: Route::Autonomous,
            reasons: vec![],
            rules_fired: vec!["low_risk_autonomy".into()],
            approvals_required: 0,
            approver_roles: vec![],
            diagnostics: vec![],
        };
        let record = TrackRecordInput { earned: 2, required_runs: 5, ..TrackRecordInput::default() };
        let held = backstop(allowed.clone(), Mode::Review, &record, "web", "restart_service");
        assert_eq!((held.route, held.approvals_required), (Route::Approval, 1));
        assert!(held.reasons.last().unwrap().contains("2 of the 5"), "{:?}", held.reasons);
        let graduated = TrackRecordInput { graduated: true, ..record };
        assert_eq!(backstop(allowed.clone(), Mode::Review, &graduated, "web", "restart_service").route, Route::Autonomous);
        assert_eq!(backstop(allowed, Mode::Autonomous, &TrackRecordInput::default(), "web", "restart_service").route, Route::Autonomous);
    }
}
