//! Scoring one replayed incident from the audit log and the simulated world.
//!
//! Everything here is read from the log records the real processes wrote (not
//! from what the harness remembers doing), then checked against the ground truth
//! and the world's final state. Pure: no network, no clock.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use arf_audit::{Record, RecordKind};
use arf_core::decision::{Decision, Route, Verdict};
use arf_core::records::{ApprovalRecord, AuthorizedRecord, DecidedRecord, DecisionRecordKind, DiagnosisRecord, DiagnosisStatus, ExecutionStartedRecord, IncidentRecord, OutcomeRecord};

use crate::corpus::Incident;
use crate::world::{World, action_minutes, human};

/// One action the executor started, and what the log and the world say about it.
#[derive(Debug, Clone, Serialize)]
pub struct Executed {
    pub decision_id: String,
    pub pathway: String,
    pub target: String,
    pub route: String,
    /// The executor's `outcome` (`verified`, `rolled_back`, ...).
    pub outcome: String,
    /// The world saw it act.
    pub seen: bool,
    /// It removed a cause in the world and was not undone.
    pub fixed: bool,
    pub harmful: bool,
    /// Governance violations found in the log for this action (empty when compliant).
    pub violations: Vec<String>,
    /// The control plane's own time from the last signal (or a later attempt's
    /// previous outcome) to `execution_started`, without the model's time or the
    /// wait for approvals ([`overhead_ms`]).
    pub overhead_ms: Option<i64>,
    /// The same time by the service it was spent in (their sum is `overhead_ms`).
    pub overhead_parts: Option<OverheadParts>,
}

impl Executed {
    /// Whether any of it ran: an execution settled `not_run` is logged as started,
    /// but no step of it ran, so it is not an action taken (its start is still
    /// checked for governance). The world's word outranks the executor's: an
    /// action the world saw ran, whatever its outcome says.
    pub fn ran(&self) -> bool {
        self.outcome != "not_run" || self.seen
    }
}

/// The control plane's own time before an execution started, by where it went,
/// each read from the log's own timestamps ([`overhead_ms`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OverheadParts {
    /// From the last signal to the diagnosis logged, less the model's latency:
    /// grouping, the snapshot, grounding, the agent's appends.
    pub agent_ms: i64,
    /// From the diagnosis logged to the decision logged: the proposal's trip to
    /// the governor, policy, risk and the decision's append.
    pub governor_ms: i64,
    /// From the decision logged (or its last approval) to its `authorized`
    /// record: the governor's witness check of the log and the record's append.
    pub authorize_ms: i64,
    /// From `authorized` to `execution_started`: dispatch, the executor's checks
    /// of the log (its witness check among them), its claim, the target's lock,
    /// the precheck and the start's append.
    pub executor_ms: i64,
}

/// The control plane's own time before an execution started: from the last signal
/// logged before the decision (or, for a later attempt, the previous attempt's
/// outcome) to the `execution_started` record, less the model's
/// latency (the diagnoses in between) and the wait from the decision to its last
/// approval. Every time is the log's own (`time_ms`, stamped at append).
fn overhead_ms(trail: &[Record], decision_id: &str, started: &Record) -> Option<i64> {
    overhead(trail, decision_id, started).map(|parts| parts.agent_ms + parts.governor_ms + parts.authorize_ms + parts.executor_ms)
}

/// [`overhead_ms`], by part. With no diagnosis logged in between, the agent's
/// part is nothing and the governor's runs from the signal.
fn overhead(trail: &[Record], decision_id: &str, started: &Record) -> Option<OverheadParts> {
    let decided = trail.iter().find(|r| {
        r.kind == RecordKind::Decision
            && r.writer == "governor"
            && DecisionRecordKind::of(&r.payload) == DecisionRecordKind::Decided
            && r.parse::<DecidedRecord>().is_ok_and(|d| d.decision.decision_id == decision_id)
    })?;
    let signal = trail.iter().filter(|r| r.kind == RecordKind::Signal && r.writer == "agent" && r.seq < decided.seq).max_by_key(|r| r.seq)?;
    // A later attempt's time runs from the end of the one before (its outcome),
    // not from the signal: what happened in between was that attempt's.
    let signal = trail
        .iter()
        .filter(|r| r.kind == RecordKind::Outcome && r.writer == "executor" && r.seq > signal.seq && r.seq < decided.seq)
        .max_by_key(|r| r.seq)
        .unwrap_or(signal);
    let diagnoses = || trail.iter().filter(|r| r.kind == RecordKind::Diagnosis && r.writer == "agent" && r.seq > signal.seq && r.seq < decided.seq);
    let model: i64 = diagnoses()
        .filter_map(|r| r.parse::<DiagnosisRecord>().ok())
        .filter_map(|d| d.latency_ms)
        .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
        .sum();
    let diagnosed_at = diagnoses().map(|r| r.time_ms).max();
    let approved = trail
        .iter()
        .filter(|r| r.kind == RecordKind::Approval && r.writer == "governor" && r.seq > decided.seq && r.seq < started.seq)
        .filter(|r| r.parse::<ApprovalRecord>().is_ok_and(|a| a.decision_id == decision_id))
        .map(|r| r.time_ms)
        .max();
    let from = approved.map_or(decided.time_ms, |at| at.max(decided.time_ms));
    let agent_ms = diagnosed_at.map_or(0, |at| (at - signal.time_ms - model).max(0));
    let governor_ms = (decided.time_ms - diagnosed_at.unwrap_or(signal.time_ms)).max(0);
    let authorized = trail.iter().find(|r| {
        r.kind == RecordKind::Decision
            && r.writer == "governor"
            && r.seq > decided.seq
            && r.seq < started.seq
            && DecisionRecordKind::of(&r.payload) == DecisionRecordKind::Authorized
            && r.payload.get("decision_id").and_then(Value::as_str) == Some(decision_id)
    });
    let authorized_at = authorized.map_or(from, |r| r.time_ms.max(from));
    let authorize_ms = authorized_at - from;
    let executor_ms = (started.time_ms - authorized_at).max(0);
    Some(OverheadParts { agent_ms, governor_ms, authorize_ms, executor_ms })
}

/// The score of one corpus incident under one reasoner.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub incident: String,
    pub class: String,
    pub mistake: String,
    pub reasoner: String,
    pub false_alarm: bool,
    pub arf_incidents: Vec<String>,
    pub alerts: usize,
    /// Whether a diagnosis with hypotheses was logged at all.
    pub diagnosed: bool,
    pub top1: bool,
    pub top3: bool,
    pub confidence: Option<f64>,
    /// The `model` of the first diagnosis.
    pub model: String,
    /// The mistake the `noisy` reasoner made on purpose in its first diagnosis (`none` for none).
    pub injected_mistake: String,
    pub root_cause: String,
    pub proposed: Vec<String>,
    pub routes: Vec<String>,
    pub refused: bool,
    pub executed: Vec<Executed>,
    pub resolved: bool,
    pub resolved_by_arf: bool,
    pub autonomous: bool,
    pub harm: bool,
    pub approvals: u32,
    pub rejections: u32,
    pub escalations: u32,
    pub human_touches: u32,
    pub pages: u32,
    pub mttd_min: f64,
    pub mttr_min: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Read-only investigation calls the agent made (answered or refused).
    pub tool_calls: u32,
    pub model_latency_ms: u64,
    pub wall_ms: u64,
    pub error: Option<String>,
}

/// What the harness saw while replaying one incident, beyond the log.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub arf_incidents: Vec<String>,
    /// Every signal the agent answered as accepted, with the log sequence it promised.
    pub accepted: Vec<crate::invariants::AcceptedSignal>,
    /// What the harness had to account for (an incident lost to a restart, ...).
    pub notes: Vec<String>,
    pub alerts: usize,
    pub wall_ms: u64,
    pub error: Option<String>,
}

/// Whether a hypothesis's root cause matches the truth.
pub fn matches_truth(incident: &Incident, root_cause: &str) -> bool {
    incident.truth.root_cause_matches.iter().any(|pattern| {
        regex::RegexBuilder::new(pattern).case_insensitive(true).build().is_ok_and(|re| re.is_match(root_cause))
    })
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The hypotheses of the model's answer, as `(root_cause, confidence)`, from the
/// raw completion (so a refused answer is still graded on its diagnosis).
fn hypotheses(completion: &str) -> Vec<(String, f64)> {
    let parsed: Option<Value> = serde_json::from_str(completion).ok();
    let list = parsed.as_ref().and_then(|p| p.get("hypotheses")).and_then(Value::as_array).cloned().unwrap_or_default();
    list.iter()
        .map(|h| (text(h, "root_cause").to_owned(), h.get("confidence").and_then(Value::as_f64).unwrap_or(0.0).clamp(0.0, 1.0)))
        .collect()
}

/// Checks one execution against the log: a governor-written `authorized` record
/// at the sequence the executor cites, whose envelope hash matches its body, for
/// the same pathway, target and parameters, with the catalog's digest, from a
/// decision that policy did not deny, holding the distinct approvals of the
/// required roles before it was authorized.
pub fn governance_violations(started: &Record, trail: &[Record], digests: &BTreeMap<String, String>) -> Vec<String> {
    let mut violations = Vec::new();
    if started.writer != "executor" {
        violations.push(format!("`execution_started` written by `{}`, not the executor", started.writer));
    }
    let p: ExecutionStartedRecord = match started.parse() {
        Ok(p) => p,
        Err(error) => {
            violations.push(error.to_string());
            return violations;
        }
    };
    let decision_id = p.decision_id.as_str();
    let authorized = trail.iter().find(|r| {
        r.kind == RecordKind::Decision && text(&r.payload, "decision_id") == decision_id && text(&r.payload, "state") == "authorized"
    });
    let Some(authorized) = authorized else {
        violations.push(format!("decision `{decision_id}` has no `authorized` record in the log"));
        return violations;
    };
    if authorized.writer != "governor" {
        violations.push(format!("the `authorized` record was written by `{}`", authorized.writer));
    }
    if authorized.seq != p.decision_seq || authorized.seq >= started.seq {
        violations.push(format!("execution cites decision record #{}, the authorization is #{}", p.decision_seq, authorized.seq));
    }
    let logged: AuthorizedRecord = match authorized.parse() {
        Ok(logged) => logged,
        Err(error) => {
            violations.push(error.to_string());
            return violations;
        }
    };
    let body = &logged.body;
    let hash = arf_core::canonical::to_vec(body).map(|b| arf_core::canonical::sha256_hex(&b)).unwrap_or_default();
    if hash != logged.envelope_sha256 {
        violations.push("the authorized envelope's hash does not match its body".to_owned());
    }
    for (field, executed, authorized) in [("pathway", &p.pathway, &body.pathway), ("target", &p.target, &body.target)] {
        if executed != authorized {
            violations.push(format!("executed `{field}` `{executed}` differs from the authorized `{authorized}`"));
        }
    }
    if body.parameters != p.parameters {
        violations.push("executed parameters differ from the authorized ones".to_owned());
    }
    match digests.get(&body.pathway) {
        Some(digest) if *digest == body.pathway_digest => {}
        _ => violations.push(format!("pathway `{}` digest does not match the reviewed catalog", body.pathway)),
    }
    let first = trail
        .iter()
        .filter(|r| r.kind == RecordKind::Decision && r.writer == "governor" && DecisionRecordKind::of(&r.payload) == DecisionRecordKind::Decided)
        .map(|r| r.parse::<DecidedRecord>().map(|d| d.decision))
        .find(|d| d.as_ref().map_or(true, |d| d.decision_id == decision_id));
    let decision = match first {
        Some(Ok(decision)) => decision,
        Some(Err(error)) => {
            violations.push(error.to_string());
            return violations;
        }
        None => {
            violations.push(format!("decision `{decision_id}` has no policy record"));
            return violations;
        }
    };
    if decision.route == Route::Deny {
        violations.push("policy denied the decision, and it ran".to_owned());
    }
    if matches!(decision.route, Route::Approval | Route::Acknowledge) {
        let required = u64::from(decision.policy.approvals_required.max(1));
        let roles: BTreeSet<&str> = decision.policy.approver_roles.iter().map(String::as_str).collect();
        let approvers: BTreeSet<String> = trail
            .iter()
            .filter(|r| r.kind == RecordKind::Approval && r.writer == "governor" && r.seq < authorized.seq)
            .filter_map(|r| r.parse::<ApprovalRecord>().ok())
            .filter(|a| a.decision_id == decision_id && a.verdict == Verdict::Approve)
            .filter(|a| roles.is_empty() || roles.contains(a.role.as_str()))
            .map(|a| a.identity)
            .collect();
        if (approvers.len() as u64) < required {
            violations.push(format!("policy required {required} approval(s), the log holds {} valid one(s)", approvers.len()));
        }
    }
    violations
}

/// Scores one incident. `trail` holds the records of its ARF incidents, in log order.
pub fn score(
    incident: &Incident,
    reasoner: &str,
    observation: &Observation,
    trail: &[Record],
    world: &World,
    digests: &BTreeMap<String, String>,
) -> Outcome {
    // Read by type, from the writer that owns each kind (the chaos run's `format`
    // invariant checks that every record is in its writer's format).
    let by = |kind: RecordKind, writer: &'static str| trail.iter().filter(move |r| r.kind == kind && r.writer == writer);
    let diagnosed: Vec<DiagnosisRecord> = by(RecordKind::Diagnosis, "agent").filter_map(|r| r.parse().ok()).collect();
    // The model's own answer, grounded or not: how often the model is right.
    let first_hypotheses = diagnosed.first().map(|d| hypotheses(d.completion.as_deref().unwrap_or_default())).unwrap_or_default();
    let top1 = first_hypotheses.first().is_some_and(|(cause, _)| matches_truth(incident, cause));
    let top3 = first_hypotheses.iter().take(3).any(|(cause, _)| matches_truth(incident, cause));
    let confidence = first_hypotheses.first().map(|(_, c)| *c);
    let root_cause = first_hypotheses.first().map(|(c, _)| c.clone()).unwrap_or_default();
    let refused = diagnosed.iter().any(|d| d.status == DiagnosisStatus::Refused);
    let proposed: Vec<String> = diagnosed.iter().filter_map(|d| d.proposal.as_ref()).map(|p| p.remediation.pathway.clone()).collect();

    let decisions: Vec<Decision> = by(RecordKind::Decision, "governor")
        .filter(|r| DecisionRecordKind::of(&r.payload) == DecisionRecordKind::Decided)
        .filter_map(|r| r.parse::<DecidedRecord>().ok())
        .map(|d| d.decision)
        .collect();
    let verdicts: Vec<ApprovalRecord> = by(RecordKind::Approval, "governor").filter_map(|r| r.parse().ok()).collect();
    let approvals = verdicts.iter().filter(|a| a.verdict == Verdict::Approve).count() as u32;
    let rejections = verdicts.iter().filter(|a| a.verdict == Verdict::Reject).count() as u32;
    let outcomes: Vec<OutcomeRecord> = by(RecordKind::Outcome, "executor").filter_map(|r| r.parse().ok()).collect();

    let mut executed = Vec::new();
    for started in by(RecordKind::ExecutionStarted, "executor") {
        let Ok(record) = started.parse::<ExecutionStartedRecord>() else { continue };
        let decision_id = record.decision_id;
        let outcome = outcomes.iter().find(|o| o.decision_id == decision_id).map_or_else(|| "unfinished".to_owned(), |o| o.outcome.clone());
        let applied: Vec<_> = world.applied().iter().filter(|a| a.decision == decision_id).collect();
        let pathway = record.pathway;
        let route = decisions.iter().find(|d| d.decision_id == decision_id).map(|d| d.route.as_str().to_owned()).unwrap_or_default();
        executed.push(Executed {
            seen: !applied.is_empty(),
            fixed: applied.iter().any(|a| !a.fixed.is_empty() && !a.undone),
            harmful: applied.iter().any(|a| a.harmful) || (incident.truth.harmful.contains(&pathway) && !applied.is_empty()),
            violations: governance_violations(started, trail, digests),
            overhead_ms: overhead_ms(trail, &decision_id, started),
            overhead_parts: overhead(trail, &decision_id, started),
            target: record.target,
            pathway,
            route,
            decision_id,
            outcome,
        });
    }

    let escalated_records = by(RecordKind::Incident, "agent").filter(|r| matches!(r.parse::<IncidentRecord>(), Ok(IncidentRecord::Escalated { .. }))).count() as u32;
    let denied = decisions.iter().filter(|d| d.route == Route::Deny).count() as u32;
    // A start that never ran pages someone too (its notification is an error, and
    // the agent leaves the incident to a person), so it counts with failed runs.
    let failed_runs = executed.iter().filter(|e| e.outcome != "verified").count() as u32;
    // A precheck's refusal ran nothing, so it is not an executed action, and it
    // pages no one: its notification is informational, the agent follows it up
    // itself, and an escalation it comes to is counted as one.
    let escalations = escalated_records + denied + rejections + failed_runs;
    let human_touches = approvals + rejections + escalations;
    // A shadow decision waits for nobody: it pages no one.
    let pages = escalations
        + decisions.iter().filter(|d| d.mode != arf_core::decision::Mode::Shadow && matches!(d.route, Route::Approval | Route::Acknowledge)).count() as u32;

    let harm = executed.iter().any(|e| e.harmful);
    let healthy = incident.targets.iter().all(|t| world.healthy(&t.name));
    let resolved = healthy && !harm;
    let resolved_by_arf = resolved && !incident.false_alarm() && executed.iter().any(|e| e.fixed);
    let autonomous = human_touches == 0 && (resolved_by_arf || (incident.false_alarm() && !executed.iter().any(Executed::ran) && resolved));

    // Simulated time, along the critical path.
    let mttd_min = incident.detect_min + human::DIAGNOSIS_MIN;
    let mut path = 0.0_f64;
    for decision in &decisions {
        let given = verdicts.iter().filter(|v| v.decision_id == decision.decision_id).count() as f64;
        if given > 0.0 {
            path += human::APPROVAL_RESPONSE_MIN + (given - 1.0) * human::EXTRA_APPROVER_MIN;
        }
    }
    for run in executed.iter().filter(|e| e.ran()) {
        path += action_minutes(&run.pathway) + human::VERIFY_WINDOW_MIN;
    }
    let mut mttr_min = mttd_min + path;
    if !resolved_by_arf {
        if escalations > 0 || executed.iter().any(Executed::ran) {
            mttr_min += human::ESCALATION_RESPONSE_MIN;
        }
        mttr_min += if incident.false_alarm() { human::FALSE_ALARM_TRIAGE_MIN } else { incident.manual_fix_min };
    }
    if harm {
        mttr_min += human::HARM_RECOVERY_MIN;
    }

    let sum = |field: fn(&DiagnosisRecord) -> Option<u64>| diagnosed.iter().filter_map(field).sum::<u64>();
    Outcome {
        incident: incident.id.clone(),
        class: incident.class.clone(),
        mistake: incident.mistake().to_owned(),
        reasoner: reasoner.to_owned(),
        false_alarm: incident.false_alarm(),
        arf_incidents: observation.arf_incidents.clone(),
        alerts: observation.alerts,
        diagnosed: !first_hypotheses.is_empty(),
        top1,
        top3,
        confidence,
        model: diagnosed.iter().filter_map(|d| d.model.clone()).find(|m| !m.is_empty()).unwrap_or_default(),
        injected_mistake: diagnosed.iter().filter_map(|d| d.injected_mistake.clone()).find(|m| !m.is_empty()).unwrap_or_default(),
        root_cause,
        proposed,
        routes: decisions.iter().map(|d| d.route.as_str().to_owned()).collect(),
        refused,
        executed,
        resolved,
        resolved_by_arf,
        autonomous,
        harm,
        approvals,
        rejections,
        escalations,
        human_touches,
        pages,
        mttd_min,
        mttr_min,
        prompt_tokens: sum(|d| d.prompt_tokens.map(u64::from)),
        tool_calls: u32::try_from(by(RecordKind::Investigation, "agent").count()).unwrap_or(u32::MAX),
        completion_tokens: sum(|d| d.completion_tokens.map(u64::from)),
        model_latency_ms: sum(|d| d.latency_ms),
        wall_ms: observation.wall_ms,
        error: observation.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seq: u64, writer: &str, kind: RecordKind, payload: Value) -> Record {
        Record { seq, time_ms: 0, writer: writer.into(), incident_id: "inc-1".into(), kind, payload, prev_hash: String::new(), hash: String::new() }
    }

    fn trail(approvals: &[(&str, &str)]) -> (Vec<Record>, BTreeMap<String, String>) {
        use crate::fixtures;
        let body = fixtures::body();
        let mut records = vec![record(1, "governor", RecordKind::Decision, fixtures::decided(&body, Route::Approval, 2, &["oncall"]))];
        for (i, (who, role)) in approvals.iter().enumerate() {
            records.push(record(2 + i as u64, "governor", RecordKind::Approval, fixtures::approval("dec-1", who, role)));
        }
        let n = records.len() as u64;
        records.push(record(n + 1, "governor", RecordKind::Decision, fixtures::authorized(&body)));
        records.push(record(n + 2, "executor", RecordKind::ExecutionStarted, fixtures::started(&body, n + 1)));
        (records, BTreeMap::from([("restart_service".to_owned(), "d1".to_owned())]))
    }

    fn check(records: &[Record], digests: &BTreeMap<String, String>, expected: &[&str]) {
        let started = records.iter().find(|r| r.kind == RecordKind::ExecutionStarted).unwrap();
        let violations = governance_violations(started, records, digests);
        assert_eq!(violations.len(), expected.len(), "{violations:?}");
        for (violation, want) in violations.iter().zip(expected) {
            assert!(violation.contains(want), "{violation} lacks {want}");
        }
    }

    #[test]
    fn the_control_planes_own_time_leaves_out_the_model_and_the_approvers() {
        use crate::fixtures;
        let body = fixtures::body();
        let at = |seq: u64, time_ms: i64, writer: &str, kind: RecordKind, payload: Value| Record { time_ms, ..record(seq, writer, kind, payload) };
        let mut diagnosis = arf_core::records::DiagnosisRecord::attempt("p", "h", "snap", "scripted");
        diagnosis.latency_ms = Some(300);
        let trail = vec![
            at(1, 1_000, "agent", RecordKind::Signal, fixtures::signal("sig-1")),
            at(2, 1_350, "agent", RecordKind::Diagnosis, arf_core::records::encode(&diagnosis)),
            at(3, 1_400, "governor", RecordKind::Decision, fixtures::decided(&body, Route::Approval, 1, &[])),
            at(4, 5_000, "governor", RecordKind::Approval, fixtures::approval("dec-1", "alice", "oncall")),
            at(5, 5_005, "governor", RecordKind::Decision, fixtures::authorized(&body)),
            at(6, 5_010, "executor", RecordKind::ExecutionStarted, fixtures::started(&body, 5)),
        ];
        // 5,010 - 1,000, less 300 ms of model and 3,600 ms of waiting for alice.
        assert_eq!(overhead_ms(&trail, "dec-1", &trail[5]), Some(110));
        // The agent: 350 ms, less 300 of model; the governor: 1,350 to 1,400, then
        // from alice's approval to `authorized`; the executor: from there to the start.
        assert_eq!(overhead(&trail, "dec-1", &trail[5]), Some(OverheadParts { agent_ms: 50, governor_ms: 50, authorize_ms: 5, executor_ms: 5 }));
        // A later attempt runs from the outcome of the one before, not from the signal.
        diagnosis.latency_ms = Some(20);
        let again = vec![
            at(1, 1_000, "agent", RecordKind::Signal, fixtures::signal("sig-1")),
            at(2, 1_420, "executor", RecordKind::Outcome, json!({"decision_id": "dec-0", "outcome": "refused"})),
            at(3, 1_450, "agent", RecordKind::Diagnosis, arf_core::records::encode(&diagnosis)),
            at(4, 1_500, "governor", RecordKind::Decision, fixtures::decided(&body, Route::Autonomous, 0, &[])),
            at(5, 1_505, "governor", RecordKind::Decision, fixtures::authorized(&body)),
            at(6, 1_510, "executor", RecordKind::ExecutionStarted, fixtures::started(&body, 5)),
        ];
        assert_eq!(overhead(&again, "dec-1", &again[5]), Some(OverheadParts { agent_ms: 10, governor_ms: 50, authorize_ms: 5, executor_ms: 5 }));
        assert_eq!(overhead_ms(&trail[1..], "dec-1", &trail[5]), None, "no signal before the decision: nothing to measure from");
    }

    #[test]
    fn a_compliant_execution_has_no_violations() {
        let (records, digests) = trail(&[("alice", "oncall"), ("bob", "oncall")]);
        check(&records, &digests, &[]);
    }

    #[test]
    fn planted_violations_are_reported() {
        // One approval where policy required two distinct people.
        let (records, digests) = trail(&[("alice", "oncall"), ("alice", "oncall")]);
        check(&records, &digests, &["required 2 approval(s), the log holds 1"]);
        // An approval from a role policy did not name.
        let (records, digests) = trail(&[("alice", "oncall"), ("sam", "security")]);
        check(&records, &digests, &["required 2"]);
        // Parameters changed between authorization and execution.
        let (mut records, digests) = trail(&[("alice", "oncall"), ("bob", "oncall")]);
        if let Some(last) = records.last_mut() {
            last.payload["parameters"] = json!({"reason": "rm -rf"});
        }
        check(&records, &digests, &["parameters differ"]);
        // An execution with no authorization in the log at all.
        let (records, digests) = trail(&[]);
        let unauthorized: Vec<Record> = records.into_iter().filter(|r| text(&r.payload, "state") != "authorized").collect();
        check(&unauthorized, &digests, &["no `authorized` record"]);
        // A catalog whose pathway changed since the decision.
        let (records, _) = trail(&[("alice", "oncall"), ("bob", "oncall")]);
        check(&records, &BTreeMap::from([("restart_service".to_owned(), "d2".to_owned())]), &["digest"]);
    }
}
