//! The invariants of DESIGN.md that can be checked from outside the processes:
//! over the whole audit log, the world's own record of what actually ran, and
//! what the agent told the harness it had accepted.
//!
//! `--chaos` runs this after every fault it injects. Pure: no network, no clock.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use arf_audit::{Record, RecordKind};

use crate::score::governance_violations;
use crate::world::Applied;

/// A signal the agent answered as accepted: it promised it was in the log at `audit_seq`.
#[derive(Debug, Clone, Serialize)]
pub struct AcceptedSignal {
    pub signal_id: String,
    pub audit_seq: u64,
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// A short name: `chain`, `format`, `authorized`, `write_ahead`, `once`, `once_per_action`, `unrun`, `outcome`, `signal_logged`.
    pub invariant: &'static str,
    pub detail: String,
}

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Checks every invariant that holds at any instant. With `settled`, the
/// control plane is quiet (no execution in flight), so every started execution
/// must also have its outcome.
///
/// Read the world before the log: an action the world saw must then already be
/// in the log (write-ahead), never the other way round.
pub fn check(
    records: &[Record],
    applied: &[Applied],
    accepted: &[AcceptedSignal],
    digests: &BTreeMap<String, String>,
    settled: bool,
) -> Vec<Violation> {
    let mut violations = Vec::new();

    // The log is hash-chained and nothing was changed, removed, reordered or inserted.
    let chain = arf_audit::record::verify_chain(records.iter().cloned().enumerate().map(|(i, r)| Ok((i as u64 + 1, r))));
    if let Err(error) = chain {
        violations.push(violation("chain", error.to_string()));
    }

    // Every record is in its writer's format: what acts on the log reads it by type.
    for record in records {
        if let Err(error) = record.check_format() {
            violations.push(violation("format", error.to_string()));
        }
    }

    // Nothing executed without an authorized, logged decision and the approvals its policy required.
    let started: Vec<&Record> = records.iter().filter(|r| r.kind == RecordKind::ExecutionStarted).collect();
    for record in &started {
        for problem in governance_violations(record, records, digests) {
            violations.push(violation("authorized", format!("decision `{}` (#{}): {problem}", text(&record.payload, "decision_id"), record.seq)));
        }
    }

    // No execution ran twice for one decision id: neither in the log nor in the world.
    let mut starts: BTreeMap<&str, usize> = BTreeMap::new();
    for record in &started {
        *starts.entry(text(&record.payload, "decision_id")).or_default() += 1;
    }
    for (decision_id, n) in starts.iter().filter(|(_, n)| **n > 1) {
        violations.push(violation("once", format!("decision `{decision_id}` has {n} `execution_started` records")));
    }
    let mut acts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for action in applied {
        *acts.entry((action.decision.as_str(), action.target.as_str())).or_default() += 1;
    }
    for ((decision_id, target), n) in acts.iter().filter(|(_, n)| **n > 1) {
        violations.push(violation("once", format!("the world saw decision `{decision_id}` act on `{target}` {n} times")));
    }

    // One action of one incident (pathway, target, parameters) runs at most once,
    // whatever decisions ask for it, unless an earlier run failed, rolled back or
    // never ran.
    let outcome_of = |decision_id: &str| {
        records
            .iter()
            .find(|r| r.writer == "executor" && r.kind == RecordKind::Outcome && text(&r.payload, "decision_id") == decision_id)
            .map(|r| text(&r.payload, "outcome").to_owned())
    };
    let mut by_action: BTreeMap<(String, String, String, String), Vec<&str>> = BTreeMap::new();
    for record in &started {
        let parameters = record.payload.get("parameters").map(Value::to_string).unwrap_or_default();
        let key = (record.incident_id.clone(), text(&record.payload, "pathway").to_owned(), text(&record.payload, "target").to_owned(), parameters);
        by_action.entry(key).or_default().push(text(&record.payload, "decision_id"));
    }
    for ((incident, pathway, target, _), decisions) in &by_action {
        let mut distinct: Vec<&str> = decisions.clone();
        distinct.dedup();
        // Every run but the last must have failed for a later one to be allowed.
        let held = distinct[..distinct.len().saturating_sub(1)]
            .iter()
            .filter(|d| !matches!(outcome_of(d).as_deref(), Some("rolled_back" | "failed" | "rollback_failed" | "not_run")))
            .count();
        if held > 0 {
            violations.push(violation(
                "once_per_action",
                format!("incident `{incident}` ran `{pathway}` on `{target}` under {} decisions ({}) while an earlier run had not failed", distinct.len(), distinct.join(", ")),
            ));
        }
    }

    // What the governor settled as never run (expired, or failed to dispatch), or
    // withdrew, never started, before or after it said so: each side writes only if
    // the other said nothing since its read, so the log's order decides.
    for record in records.iter().filter(|r| r.kind == RecordKind::Decision && r.writer == "governor") {
        let decision_id = text(&record.payload, "decision_id");
        if !starts.contains_key(decision_id) {
            continue;
        }
        if matches!(text(&record.payload, "state"), "expired" | "dispatch_failed") {
            violations.push(violation(
                "unrun",
                format!("the governor settled decision `{decision_id}` as `{}` (#{}), yet it has an `execution_started` record", text(&record.payload, "state"), record.seq),
            ));
        }
        if text(&record.payload, "event") == "withdrawn" {
            violations.push(violation("unrun", format!("the governor withdrew decision `{decision_id}` (#{}), yet it has an `execution_started` record", record.seq)));
        }
    }

    // An execution settled `not_run` (its start logged, its answer lost) ran no step:
    // the world saw nothing of it, and the log holds no end, verification or
    // rollback of it.
    for record in records.iter().filter(|r| r.writer == "executor" && r.kind == RecordKind::Outcome && text(&r.payload, "outcome") == "not_run") {
        let decision_id = text(&record.payload, "decision_id");
        if let Some(action) = applied.iter().find(|a| a.decision == decision_id) {
            violations.push(violation(
                "unrun",
                format!("decision `{decision_id}` was settled `not_run` (#{}), yet the world saw `{}` on `{}`", record.seq, action.action, action.target),
            ));
        }
        let ran = records.iter().find(|r| {
            r.writer == "executor"
                && matches!(r.kind, RecordKind::ExecutionFinished | RecordKind::Verification | RecordKind::Rollback)
                && text(&r.payload, "decision_id") == decision_id
        });
        if let Some(ran) = ran {
            violations.push(violation("unrun", format!("decision `{decision_id}` was settled `not_run` (#{}), yet the log holds its `{}` (#{})", record.seq, ran.kind.as_str(), ran.seq)));
        }
    }

    // Write-ahead: every action the world saw had its intent logged first.
    for action in applied {
        if !starts.contains_key(action.decision.as_str()) {
            violations.push(violation(
                "write_ahead",
                format!("the world saw `{}` on `{}` for decision `{}`, which has no `execution_started` record", action.action, action.target, action.decision),
            ));
        }
    }

    // Every started execution ends in exactly one outcome (once the plane is quiet).
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for record in records.iter().filter(|r| r.kind == RecordKind::Outcome) {
        *outcomes.entry(text(&record.payload, "decision_id")).or_default() += 1;
    }
    for decision_id in starts.keys() {
        match outcomes.get(decision_id).copied().unwrap_or(0) {
            0 if settled => violations.push(violation("outcome", format!("decision `{decision_id}` started and has no `outcome` record"))),
            0 | 1 => {}
            n => violations.push(violation("outcome", format!("decision `{decision_id}` has {n} `outcome` records"))),
        }
    }

    // No signal the agent accepted is missing from the log.
    let by_seq: BTreeMap<u64, &Record> = records.iter().map(|r| (r.seq, r)).collect();
    let logged: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Signal)
        .filter_map(|r| r.payload.get("signal").map(|s| text(s, "id")))
        .collect();
    for signal in accepted {
        let at_seq = by_seq
            .get(&signal.audit_seq)
            .is_some_and(|r| r.kind == RecordKind::Signal && r.payload.get("signal").is_some_and(|s| text(s, "id") == signal.signal_id));
        if !at_seq {
            let elsewhere = if logged.contains(signal.signal_id.as_str()) { " (it is logged elsewhere)" } else { "" };
            violations.push(violation(
                "signal_logged",
                format!("signal `{}` was accepted as #{} but that record is not it{elsewhere}", signal.signal_id, signal.audit_seq),
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use arf_audit::record::Entry;
    use serde_json::json;

    /// A real, sealed chain: one accepted signal, an autonomous decision, its execution and outcome.
    fn trail() -> (Vec<Record>, Vec<Applied>, Vec<AcceptedSignal>, BTreeMap<String, String>) {
        use crate::fixtures;
        let body = fixtures::body();
        let entries = [
            ("agent", RecordKind::Signal, fixtures::signal("sig-1")),
            ("governor", RecordKind::Decision, fixtures::decided(&body, arf_core::decision::Route::Autonomous, 0, &[])),
            ("governor", RecordKind::Decision, fixtures::authorized(&body)),
            ("executor", RecordKind::ExecutionStarted, fixtures::started(&body, 3)),
            ("executor", RecordKind::Outcome, fixtures::outcome(&body, "verified")),
        ];
        let records = seal(entries.into_iter().map(|(w, k, p)| (w.to_owned(), k, p)).collect());
        let applied = vec![act("dec-1")];
        let accepted = vec![AcceptedSignal { signal_id: "sig-1".into(), audit_seq: 1 }];
        (records, applied, accepted, BTreeMap::from([("restart_service".to_owned(), "d1".to_owned())]))
    }

    fn seal(entries: Vec<(String, RecordKind, Value)>) -> Vec<Record> {
        let mut records: Vec<Record> = Vec::new();
        for (writer, kind, payload) in entries {
            let (seq, prev) = records.last().map_or((0, arf_audit::record::GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
            records.push(Record::seal(seq, &prev, 0, &writer, Entry::new("inc-1", kind, payload)));
        }
        records
    }

    fn act(decision: &str) -> Applied {
        Applied {
            target: "api".into(),
            action: "restart_service".into(),
            decision: decision.into(),
            parameters: json!({}),
            fixed: vec![],
            harmful: false,
            undone: false,
            minutes: 3.0,
        }
    }

    fn check_names(records: &[Record], applied: &[Applied], accepted: &[AcceptedSignal], digests: &BTreeMap<String, String>, expected: &[&str]) {
        let found = check(records, applied, accepted, digests, true);
        let names: Vec<&str> = found.iter().map(|v| v.invariant).collect();
        assert_eq!(names, expected, "{found:#?}");
    }

    #[test]
    fn an_honest_trail_has_no_violations() {
        let (records, applied, accepted, digests) = trail();
        check_names(&records, &applied, &accepted, &digests, &[]);
    }

    #[test]
    fn planted_violations_are_reported() {
        // A record edited after the fact breaks the chain.
        let (mut records, applied, accepted, digests) = trail();
        records[3].payload["parameters"] = json!({"reason": "rm -rf /"});
        let found = check(&records, &applied, &accepted, &digests, true);
        assert!(found.iter().any(|v| v.invariant == "chain"), "{found:#?}");
        assert!(found.iter().any(|v| v.invariant == "authorized" && v.detail.contains("parameters differ")), "{found:#?}");

        // The same decision executed twice: two starts in the log, two acts in the world.
        let (records, mut applied, accepted, digests) = trail();
        let mut entries: Vec<(String, RecordKind, Value)> = records.iter().map(|r| (r.writer.clone(), r.kind, r.payload.clone())).collect();
        entries.push(entries[3].clone());
        entries.push(entries[4].clone());
        applied.push(act("dec-1"));
        check_names(&seal(entries), &applied, &accepted, &digests, &["once", "once", "outcome"]);

        // The same action under a second decision while the first verified; allowed after a rollback.
        let (records, applied, accepted, digests) = trail();
        let mut entries: Vec<(String, RecordKind, Value)> = records.iter().map(|r| (r.writer.clone(), r.kind, r.payload.clone())).collect();
        let mut again = entries[3].clone();
        again.2["decision_id"] = json!("dec-2");
        entries.push(again.clone());
        let found = check(&seal(entries.clone()), &applied, &accepted, &digests, false);
        assert!(found.iter().any(|v| v.invariant == "once_per_action"), "{found:#?}");
        entries[4].2["outcome"] = json!("rolled_back");
        let found = check(&seal(entries), &applied, &accepted, &digests, false);
        assert!(!found.iter().any(|v| v.invariant == "once_per_action"), "{found:#?}");

        // An execution with no outcome once the plane is quiet (but fine while in flight).
        let (records, applied, accepted, digests) = trail();
        let unfinished = &records[..4];
        check_names(unfinished, &applied, &accepted, &digests, &["outcome"]);
        assert!(check(unfinished, &applied, &accepted, &digests, false).is_empty());

        // An action in the world that the log never heard of.
        let (records, mut applied, accepted, digests) = trail();
        applied.push(act("dec-ghost"));
        check_names(&records, &applied, &accepted, &digests, &["write_ahead"]);

        // A signal the agent said it accepted, missing from the log.
        let (records, applied, mut accepted, digests) = trail();
        accepted.push(AcceptedSignal { signal_id: "sig-lost".into(), audit_seq: 2 });
        check_names(&records, &applied, &accepted, &digests, &["signal_logged"]);

        // A record out of its writer's format: a field nobody writes.
        let (records, applied, accepted, digests) = trail();
        let mut entries: Vec<(String, RecordKind, Value)> = records.iter().map(|r| (r.writer.clone(), r.kind, r.payload.clone())).collect();
        entries[4].2["also_verified"] = json!(["db"]);
        check_names(&seal(entries), &applied, &accepted, &digests, &["format"]);

        // The governor's records are typed too: a field smuggled into the decision
        // as made, and a guard-rail event that is not in the governor's format.
        let (records, applied, accepted, digests) = trail();
        let mut entries: Vec<(String, RecordKind, Value)> = records.iter().map(|r| (r.writer.clone(), r.kind, r.payload.clone())).collect();
        entries[1].2["scope"] = json!("payments");
        // Nothing that ran on it counts as authorized either.
        check_names(&seal(entries), &applied, &accepted, &digests, &["format", "authorized"]);
        let (records, applied, accepted, digests) = trail();
        let mut entries: Vec<(String, RecordKind, Value)> = records.iter().map(|r| (r.writer.clone(), r.kind, r.payload.clone())).collect();
        entries.push(("governor".into(), RecordKind::Decision, json!({"event": "autonomy_switched", "enabled": true, "identity": "mallory"})));
        check_names(&seal(entries), &applied, &accepted, &digests, &["format"]);

        // An execution whose authorization was never logged.
        let (records, applied, accepted, digests) = trail();
        let entries: Vec<(String, RecordKind, Value)> = records
            .iter()
            .filter(|r| text(&r.payload, "state") != "authorized")
            .map(|r| (r.writer.clone(), r.kind, r.payload.clone()))
            .collect();
        check_names(&seal(entries), &applied, &accepted, &digests, &["authorized"]);

        // A withdrawal means nothing ran, and so does settling a decision as never
        // run: either, for a decision that started, is a lie.
        let (records, applied, accepted, digests) = trail();
        let mut entries: Vec<(String, RecordKind, Value)> = records.iter().map(|r| (r.writer.clone(), r.kind, r.payload.clone())).collect();
        let withdrawal = arf_core::records::encode(&arf_core::records::GovernanceEvent::Withdrawn { decision_id: "dec-1".into(), reason: "the kill switch is off: a bad night".into(), at_ms: 0 });
        entries.insert(3, ("governor".into(), RecordKind::Decision, withdrawal));
        check_names(&seal(entries.clone()), &applied, &accepted, &digests, &["unrun"]);
        entries.remove(3);
        check_names(&seal(entries.clone()), &applied, &accepted, &digests, &[]);
        let unrun = arf_core::records::encode(&arf_core::records::DecisionStateRecord { decision_id: "dec-1".into(), state: "expired".into(), detail: "withdrawn before it started; nothing ran".into() });
        entries.insert(4, ("governor".into(), RecordKind::Decision, unrun));
        check_names(&seal(entries.clone()), &applied, &accepted, &digests, &["unrun"]);
        entries[4].2["state"] = json!("dispatch_failed");
        check_names(&seal(entries), &applied, &accepted, &digests, &["unrun"]);

        // A start settled `not_run` is a lie if the world saw it act; honest when it
        // saw nothing, and then the same action may be decided again.
        let (records, applied, accepted, digests) = trail();
        let mut entries: Vec<(String, RecordKind, Value)> = records.iter().map(|r| (r.writer.clone(), r.kind, r.payload.clone())).collect();
        entries[4].2["outcome"] = json!("not_run");
        check_names(&seal(entries.clone()), &applied, &accepted, &digests, &["unrun"]);
        let mut again = entries[3].clone();
        again.2["decision_id"] = json!("dec-2");
        entries.push(again);
        let found = check(&seal(entries.clone()), &[], &accepted, &digests, false);
        assert!(!found.iter().any(|v| matches!(v.invariant, "unrun" | "once_per_action")), "{found:#?}");
        // Nor may the log hold the end of its action.
        let mut ended = entries.clone();
        let finished = json!({"decision_id": "dec-1", "phase": "action", "ok": true, "summary": "", "steps": [], "skipped_steps": 0});
        ended.insert(4, ("executor".into(), RecordKind::ExecutionFinished, finished));
        let found = check(&seal(ended), &[], &accepted, &digests, false);
        assert!(found.iter().any(|v| v.invariant == "unrun" && v.detail.contains("execution_finished")), "{found:#?}");
        // A `not_run` another writer logged excuses nothing.
        entries[4].0 = "agent".into();
        let found = check(&seal(entries), &[], &accepted, &digests, false);
        assert!(found.iter().any(|v| v.invariant == "once_per_action"), "{found:#?}");
    }
}
