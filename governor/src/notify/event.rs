//! What is worth telling someone, read from the audit log: each record that needs
//! a person (or tells them they are no longer needed) becomes one [`Event`], with
//! an id derived from the record, so reading a record twice makes the same event.

use serde::{Deserialize, Serialize};

use arf_audit_client::{Record, RecordKind};
use arf_core::decision::Route;
use arf_core::records::{DecidedRecord, DecisionRecordKind, GovernanceEvent, IncidentRecord, OutcomeRecord};

/// The kinds of event a receiver may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A decision waits for a person's acknowledgment or approval.
    DecisionWaiting,
    /// The agent handed an incident to a person.
    Escalated,
    /// An action failed, or failed its verification and was rolled back.
    ActionFailed,
    /// A rollback failed: the target is in an unknown state.
    RollbackFailed,
    /// A failed rollback quarantined a service.
    Quarantined,
    /// A guard rail (rate limit, error budget) switched autonomy off.
    GuardRailTripped,
    /// Someone switched autonomy off or on.
    AutonomySwitched,
    /// The audit log cannot be read: damaged, down, or refusing.
    AuditUnavailable,
    /// A witness (the governor or the executor) refused the log: it was rolled
    /// back, truncated or rewritten since the witness last saw it.
    WitnessRefused,
    /// An incident resolved, or its action verified: whoever was paged may stand down.
    Resolved,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        Self::DecisionWaiting,
        Self::Escalated,
        Self::ActionFailed,
        Self::RollbackFailed,
        Self::Quarantined,
        Self::GuardRailTripped,
        Self::AutonomySwitched,
        Self::AuditUnavailable,
        Self::WitnessRefused,
        Self::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DecisionWaiting => "decision_waiting",
            Self::Escalated => "escalated",
            Self::ActionFailed => "action_failed",
            Self::RollbackFailed => "rollback_failed",
            Self::Quarantined => "quarantined",
            Self::GuardRailTripped => "guard_rail_tripped",
            Self::AutonomySwitched => "autonomy_switched",
            Self::AuditUnavailable => "audit_unavailable",
            Self::WitnessRefused => "witness_refused",
            Self::Resolved => "resolved",
        }
    }

    /// How urgent the event is, in PagerDuty's words.
    pub fn severity(self) -> Severity {
        match self {
            Self::RollbackFailed | Self::Quarantined | Self::AuditUnavailable | Self::WitnessRefused => Severity::Critical,
            Self::ActionFailed => Severity::Error,
            Self::DecisionWaiting | Self::Escalated | Self::GuardRailTripped => Severity::Warning,
            Self::AutonomySwitched | Self::Resolved => Severity::Info,
        }
    }
}

/// PagerDuty's severities, least urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

/// One thing to tell people. Text from outside (alert titles, the model's root
/// cause, reasons people typed) is carried as data; each receiver's renderer
/// escapes it for its format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Unique per event and stable: the log record's sequence number and the kind.
    pub id: String,
    pub kind: EventKind,
    pub severity: Severity,
    pub at_ms: i64,
    /// The log record it came from (0 for events about the log itself).
    pub seq: u64,
    pub incident_id: String,
    pub decision_id: String,
    pub service: String,
    pub environment: String,
    /// One line: what happened.
    pub summary: String,
    /// More, as name and value pairs, in order.
    pub details: Vec<(String, String)>,
}

/// The context of an incident an event needs: what its `opened` record says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentContext {
    pub title: String,
    pub service: String,
    pub environment: String,
}

impl IncidentContext {
    /// From the incident's trail: its `opened` record, by the agent.
    pub fn from_trail(trail: &[Record], agent_writer: &str) -> Option<Self> {
        trail
            .iter()
            .filter(|r| r.kind == RecordKind::Incident && r.writer == agent_writer)
            .find_map(|r| match r.parse::<IncidentRecord>() {
                Ok(IncidentRecord::Opened { title, service, environment, .. }) => Some(Self { title, service, environment }),
                _ => None,
            })
    }

    /// The context an `opened` record gives, if `record` is one.
    pub fn opened(record: &Record, agent_writer: &str) -> Option<Self> {
        Self::from_trail(std::slice::from_ref(record), agent_writer)
    }
}

/// The kinds of record that make events or give them context: the notifier asks
/// the log for these only ([`events`] makes nothing of the others).
pub const KINDS: [RecordKind; 3] = [RecordKind::Incident, RecordKind::Decision, RecordKind::Outcome];

/// Whether `record` may make an event, and whether it needs its incident's context.
pub fn needs_context(record: &Record, writers: &Writers) -> bool {
    match record.kind {
        RecordKind::Incident => record.writer == writers.agent,
        RecordKind::Outcome => record.writer == writers.executor,
        _ => false,
    }
}

/// Which writer owns each kind of record: an event is believed only from its owner.
#[derive(Debug, Clone)]
pub struct Writers {
    pub agent: String,
    pub governor: String,
    pub executor: String,
}

impl Default for Writers {
    fn default() -> Self {
        Self { agent: "agent".into(), governor: "governor".into(), executor: "executor".into() }
    }
}

/// The events one record makes (none for most). `context` is the record's
/// incident's, when [`needs_context`] says it is wanted.
pub fn events(record: &Record, writers: &Writers, context: Option<&IncidentContext>) -> Vec<Event> {
    let context = context.cloned().unwrap_or_default();
    let event = |kind: EventKind, summary: String, details: Vec<(String, String)>| Event {
        id: format!("{:012}-{}", record.seq, kind.as_str()),
        kind,
        severity: kind.severity(),
        at_ms: record.time_ms,
        seq: record.seq,
        incident_id: record.incident_id.clone(),
        decision_id: String::new(),
        service: context.service.clone(),
        environment: context.environment.clone(),
        summary,
        details,
    };
    let pair = |name: &str, value: &str| (name.to_owned(), value.to_owned());
    match record.kind {
        RecordKind::Incident if record.writer == writers.agent => match record.parse::<IncidentRecord>() {
            Ok(IncidentRecord::Escalated { reason, .. }) => {
                vec![event(EventKind::Escalated, format!("Escalated to a person: {}", context.title), vec![pair("reason", &reason)])]
            }
            Ok(IncidentRecord::Resolved { reason, .. }) => {
                vec![event(EventKind::Resolved, format!("Resolved: {}", context.title), vec![pair("reason", &reason)])]
            }
            _ => Vec::new(),
        },
        RecordKind::Decision if record.writer == writers.governor => match DecisionRecordKind::of(&record.payload) {
            DecisionRecordKind::Decided => match record.parse::<DecidedRecord>() {
                Ok(DecidedRecord { decision, .. }) if matches!(decision.route, Route::Approval | Route::Acknowledge) => {
                    let verb = if decision.route == Route::Approval { "approval" } else { "acknowledgment" };
                    let mut waiting = event(
                        EventKind::DecisionWaiting,
                        format!("Waiting for {verb}: {} on {}", decision.remediation.pathway, decision.remediation.target),
                        vec![
                            pair("route", decision.route.as_str()),
                            pair("risk", &format!("{:.2} ({})", decision.risk.score, decision.risk.band)),
                            pair("root cause (model)", &decision.root_cause),
                            pair("policy", &decision.policy.reasons.join("; ")),
                            pair("approvals needed", &decision.policy.approvals_required.max(1).to_string()),
                            pair("expires", &arf_core::time::format_ms(decision.expires_at_ms)),
                        ],
                    );
                    waiting.decision_id = decision.decision_id;
                    waiting.service = decision.service;
                    waiting.environment = decision.environment;
                    vec![waiting]
                }
                _ => Vec::new(),
            },
            // Governance events are about a service or the whole plane, not one
            // incident: each is its own page (no incident to group it under).
            DecisionRecordKind::Event => match record.parse::<GovernanceEvent>() {
                Ok(GovernanceEvent::RollbackFailedTripped { trip, decision_id, incident_id }) => {
                    let mut quarantined = event(
                        EventKind::Quarantined,
                        format!("Service {} quarantined: nothing runs on it without a person until an admin resets it", trip.service),
                        vec![pair("reason", &trip.reason), pair("incident", &incident_id)],
                    );
                    quarantined.incident_id = String::new();
                    quarantined.service = trip.service;
                    quarantined.decision_id = decision_id;
                    vec![quarantined]
                }
                Ok(
                    GovernanceEvent::RateLimitTripped { trip, decision_id, incident_id }
                    | GovernanceEvent::ErrorBudgetTripped { trip, decision_id, incident_id },
                ) => {
                    let scope = if trip.pathway.is_empty() { format!("service {}", trip.service) } else { format!("{} on service {}", trip.pathway, trip.service) };
                    let mut tripped = event(
                        EventKind::GuardRailTripped,
                        format!("Guard rail {} tripped: autonomy is off for {scope}", trip.kind.as_str()),
                        vec![pair("reason", &trip.reason), pair("incident", &incident_id)],
                    );
                    tripped.incident_id = String::new();
                    tripped.service = trip.service;
                    tripped.decision_id = decision_id;
                    vec![tripped]
                }
                Ok(GovernanceEvent::AutonomySwitched { enabled, identity, role, reason, .. }) => {
                    let mut switched = event(
                        EventKind::AutonomySwitched,
                        format!("Autonomy switched {} by {identity} ({role})", if enabled { "on" } else { "off" }),
                        vec![pair("reason", &reason)],
                    );
                    switched.incident_id = String::new();
                    vec![switched]
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
        RecordKind::Outcome if record.writer == writers.executor => match record.parse::<OutcomeRecord>() {
            Ok(outcome) => {
                let (kind, summary) = match outcome.outcome.as_str() {
                    "verified" => (EventKind::Resolved, format!("Verified: {} on {} worked", outcome.pathway, outcome.target)),
                    "rolled_back" => (EventKind::ActionFailed, format!("Rolled back: {} on {} failed its verification", outcome.pathway, outcome.target)),
                    "failed" => (EventKind::ActionFailed, format!("Failed: {} on {}", outcome.pathway, outcome.target)),
                    "refused" => (
                        EventKind::ActionFailed,
                        format!("Refused: {} on {} did not pass its precheck; nothing ran, and the agent tries again or escalates", outcome.pathway, outcome.target),
                    ),
                    "not_run" => (
                        EventKind::ActionFailed,
                        format!("Not run: {} on {} is logged as started, but the executor never ran it; nothing changed, and the incident needs a person", outcome.pathway, outcome.target),
                    ),
                    "rollback_failed" => (
                        EventKind::RollbackFailed,
                        format!("ROLLBACK FAILED: {} on {}; the target is in an unknown state", outcome.pathway, outcome.target),
                    ),
                    _ => return Vec::new(),
                };
                let mut told = event(kind, summary, vec![pair("incident", &context.title), pair("detail", &outcome.detail)]);
                // A refusal changed nothing and the agent follows it up itself: worth
                // knowing, not a page (its escalation, or the next approval, is one).
                if outcome.outcome == "refused" {
                    told.severity = Severity::Info;
                }
                told.decision_id = outcome.decision_id;
                vec![told]
            }
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The event for a log that cannot be read since `since_ms`.
pub fn audit_unavailable(since_ms: i64, error: &str) -> Event {
    Event {
        id: format!("audit-unavailable-{since_ms}"),
        kind: EventKind::AuditUnavailable,
        severity: EventKind::AuditUnavailable.severity(),
        at_ms: since_ms,
        seq: 0,
        incident_id: String::new(),
        decision_id: String::new(),
        service: String::new(),
        environment: String::new(),
        summary: "The audit log cannot be read: nothing new is decided or run until it can".to_owned(),
        details: vec![("error".to_owned(), error.to_owned())],
    }
}

/// A witness refused the log while `decision_id` was being authorized or run. Not
/// read from the log (whose records are then not to be believed) but raised by the
/// governor ([`super::Alarm`]), once per spell of refusals.
pub fn witness_refused(witness: &str, error: &str, decision_id: &str, now_ms: i64) -> Event {
    Event {
        id: format!("witness-refused-{witness}-{now_ms}"),
        kind: EventKind::WitnessRefused,
        severity: EventKind::WitnessRefused.severity(),
        at_ms: now_ms,
        seq: 0,
        incident_id: String::new(),
        decision_id: decision_id.to_owned(),
        service: String::new(),
        environment: String::new(),
        summary: format!(
            "The audit log failed the {witness}'s witness check: it was rolled back, truncated or rewritten since the {witness} last saw it. Nothing is authorized or run until an operator has checked it (`arf audit verify`)"
        ),
        // A check between decisions (`keep_up`) names none.
        details: std::iter::once(("error".to_owned(), error.to_owned()))
            .chain((!decision_id.is_empty()).then(|| ("decision".to_owned(), decision_id.to_owned())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arf_core::decision::{Trip, TripKind};
    use arf_core::records::{OutcomeRecord, encode};

    fn record(seq: u64, writer: &str, kind: RecordKind, payload: serde_json::Value) -> Record {
        Record { seq, time_ms: 1_000, writer: writer.into(), incident_id: "inc-1".into(), kind, payload, prev_hash: String::new(), hash: String::new() }
    }

    fn outcome(outcome: &str) -> serde_json::Value {
        encode(&OutcomeRecord {
            decision_id: "dec-1".into(),
            pathway: "restart_service".into(),
            target: "web-prod".into(),
            outcome: outcome.into(),
            detail: "probe failed".into(),
            recovered: false,
            interrupted_in: None,
            leftovers: Vec::new(),
            precheck: None,
        })
    }

    fn kinds(events: &[Event]) -> Vec<EventKind> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn each_record_that_needs_a_person_makes_its_event_and_only_from_its_writer() {
        let writers = Writers::default();
        let context = IncidentContext { title: "Checkout 5xx".into(), service: "web".into(), environment: "production".into() };
        let told = |r: &Record| kinds(&events(r, &writers, Some(&context)));
        assert_eq!(told(&record(1, "executor", RecordKind::Outcome, outcome("rolled_back"))), [EventKind::ActionFailed]);
        assert_eq!(told(&record(2, "executor", RecordKind::Outcome, outcome("failed"))), [EventKind::ActionFailed]);
        assert_eq!(told(&record(3, "executor", RecordKind::Outcome, outcome("rollback_failed"))), [EventKind::RollbackFailed]);
        assert_eq!(told(&record(3, "executor", RecordKind::Outcome, outcome("refused"))), [EventKind::ActionFailed]);
        // A refusal ran nothing and the agent follows it up: told, not paged; a rollback pages.
        let severity = |o: &str| events(&record(3, "executor", RecordKind::Outcome, outcome(o)), &writers, Some(&context))[0].severity;
        assert_eq!((severity("refused"), severity("rolled_back")), (Severity::Info, Severity::Error));
        // A start that never ran changed nothing either, but nobody follows the
        // incident up on their own: it pages.
        assert_eq!(told(&record(3, "executor", RecordKind::Outcome, outcome("not_run"))), [EventKind::ActionFailed]);
        assert_eq!(severity("not_run"), Severity::Error);
        assert_eq!(told(&record(4, "executor", RecordKind::Outcome, outcome("verified"))), [EventKind::Resolved]);
        // The same record from another writer is not believed.
        assert!(told(&record(5, "agent", RecordKind::Outcome, outcome("rollback_failed"))).is_empty());
        let trip = |kind| Trip { kind, service: "web".into(), pathway: String::new(), since_ms: 0, reason: "3 failures".into() };
        let tripped = |kind| encode(&GovernanceEvent::tripped(trip(kind), "inc-1", "dec-1"));
        assert_eq!(told(&record(6, "governor", RecordKind::Decision, tripped(TripKind::RollbackFailed))), [EventKind::Quarantined]);
        assert_eq!(told(&record(7, "governor", RecordKind::Decision, tripped(TripKind::RateLimit))), [EventKind::GuardRailTripped]);
        assert_eq!(told(&record(8, "governor", RecordKind::Decision, tripped(TripKind::ErrorBudget))), [EventKind::GuardRailTripped]);
        assert!(told(&record(9, "agent", RecordKind::Decision, tripped(TripKind::RateLimit))).is_empty());
        // A decision made autonomously needs no one; one that waits does.
        let body = arf_core::fixtures::body();
        let decided = |route| encode(&arf_core::fixtures::decided(&body, route, 1, &["oncall"]));
        assert!(told(&record(10, "governor", RecordKind::Decision, decided(Route::Autonomous))).is_empty());
        assert_eq!(told(&record(11, "governor", RecordKind::Decision, decided(Route::Approval))), [EventKind::DecisionWaiting]);
        assert_eq!(told(&record(12, "governor", RecordKind::Decision, decided(Route::Acknowledge))), [EventKind::DecisionWaiting]);
        assert!(told(&record(13, "governor", RecordKind::Decision, decided(Route::Deny))).is_empty());
        // The notifier reads only `KINDS` from the log: no other kind makes an event.
        for kind in RecordKind::ALL.into_iter().filter(|k| !KINDS.contains(k)) {
            for writer in ["agent", "governor", "executor"] {
                assert!(told(&record(14, writer, kind, outcome("rollback_failed"))).is_empty(), "{kind:?} by {writer}");
                assert!(told(&record(15, writer, kind, tripped(TripKind::RollbackFailed))).is_empty(), "{kind:?} by {writer}");
            }
        }
        // Ids are stable: the same record read again makes the same event.
        let again = events(&record(3, "executor", RecordKind::Outcome, outcome("rollback_failed")), &writers, Some(&context));
        assert_eq!(again[0].id, "000000000003-rollback_failed");
        assert_eq!((again[0].severity, again[0].service.as_str()), (Severity::Critical, "web"));
    }
}
