//! Context assembly: the bounded, redacted, content-addressed snapshot of one diagnosis.

use serde_json::json;

use arf_core::diagnosis::{Snapshot, SnapshotItem};
use arf_core::signal::{Signal, SignalStatus};
use arf_core::target::Inventory;

use crate::incident::{Incident, Incidents, Summary};
use crate::redact::Redactor;

/// Bounds on a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_items: usize,
    /// An estimate of the tokens the items may take in the prompt (four bytes of JSON a token).
    pub max_tokens: usize,
    /// How far before an incident opened a change still counts as related.
    pub change_lookback_ms: i64,
}

fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" | "page" | "emergency" => 0,
        "high" | "error" => 1,
        "warning" | "medium" => 2,
        _ => 3,
    }
}

fn signal_item(signal: &Signal, redactor: &Redactor) -> SnapshotItem {
    let status = match signal.status {
        SignalStatus::Firing => "firing",
        SignalStatus::Resolved => "resolved",
    };
    let summary = format!(
        "[{}] {} {} from {} ({}/{}): {}",
        signal.severity,
        signal.kind.as_str(),
        signal.title,
        signal.source,
        signal.service,
        signal.environment,
        signal.description
    );
    SnapshotItem {
        id: signal.id.clone(),
        kind: if signal.kind == arf_core::signal::SignalKind::Change { "change" } else { "signal" }.to_owned(),
        summary: redactor.text(&summary),
        data: redactor.value(&json!({
            "title": signal.title,
            "description": signal.description,
            "severity": signal.severity,
            "status": status,
            "source": signal.source,
            "labels": signal.labels,
            "annotations": signal.annotations,
            "observed_at": arf_core::time::format_ms(signal.observed_at_ms),
        })),
    }
}

/// Builds the snapshot: the incident's earlier attempts (`attempts`, when it is
/// diagnosed again after one), its signals (firing and most severe first), then
/// related changes (most recent first), similar past incidents (`past`), then
/// inventory facts, cut to budget.
pub fn snapshot(
    incident: &Incident,
    incidents: &Incidents,
    inventory: &Inventory,
    redactor: &Redactor,
    budget: Budget,
    (attempts, past): (&[SnapshotItem], &[SnapshotItem]),
) -> Snapshot {
    let mut signals: Vec<&Signal> = incident.signals.values().collect();
    signals.sort_by(|a, b| {
        (a.status == SignalStatus::Resolved, severity_rank(&a.severity), -a.observed_at_ms, &a.id).cmp(&(
            b.status == SignalStatus::Resolved,
            severity_rank(&b.severity),
            -b.observed_at_ms,
            &b.id,
        ))
    });
    let mut changes = incidents.changes_for(incident, budget.change_lookback_ms);
    changes.sort_by(|a, b| b.observed_at_ms.cmp(&a.observed_at_ms).then(a.id.cmp(&b.id)));

    let redacted = |item: &SnapshotItem| SnapshotItem { summary: redactor.text(&item.summary), data: redactor.value(&item.data), ..item.clone() };
    let mut candidates: Vec<SnapshotItem> = Vec::new();
    candidates.extend(attempts.iter().map(redacted));
    candidates.extend(signals.iter().map(|s| signal_item(s, redactor)));
    candidates.extend(changes.iter().map(|s| signal_item(s, redactor)));
    candidates.extend(past.iter().map(redacted));
    for (name, target) in inventory {
        if target.service == incident.service && target.environment == incident.environment {
            candidates.push(SnapshotItem {
                id: format!("fact-{name}"),
                kind: "service_fact".to_owned(),
                summary: format!(
                    "target `{name}` is the {} `{}` in {} (tier {})",
                    target.kind, target.service, target.environment, target.tier
                ),
                data: json!({"target": name, "kind": target.kind, "tier": target.tier, "security_sensitive": target.security_sensitive}),
            });
        }
    }
    // Most relevant first: keep items while they fit, record the rest as dropped.
    let mut kept = Vec::with_capacity(candidates.len().min(budget.max_items));
    let mut dropped = Vec::new();
    let mut tokens = 0usize;
    for item in candidates {
        let cost = estimate_tokens(&item);
        if kept.len() < budget.max_items && tokens + cost <= budget.max_tokens {
            tokens += cost;
            kept.push(item);
        } else {
            dropped.push(item.id);
        }
    }
    let candidates = kept;
    Snapshot {
        incident_id: incident.id.clone(),
        service: incident.service.clone(),
        environment: incident.environment.clone(),
        items: candidates,
        dropped,
    }
}

/// A rough token count: four bytes of JSON a token, as tokenizers average on English and JSON.
pub fn estimate_tokens(item: &SnapshotItem) -> usize {
    serde_json::to_string(item).map_or(0, |text| text.len().div_ceil(4))
}

/// Past incidents like this one (same service and environment, or the same
/// title), most recent first: the agent's incident memory.
pub fn similar(incident: &Incident, incidents: &Incidents, limit: usize) -> Vec<Summary> {
    let held = incidents.by_id.values().map(Summary::from);
    let mut similar: Vec<Summary> = held
        .chain(incidents.past.iter().cloned())
        .filter(|other| other.id != incident.id && other.opened_at_ms <= incident.opened_at_ms)
        .filter(|other| (other.service == incident.service && other.environment == incident.environment) || other.title == incident.title)
        .collect();
    similar.sort_by_key(|s| std::cmp::Reverse(s.opened_at_ms));
    similar.truncate(limit);
    similar
}

/// What happened in a past incident, from its audit trail: the diagnosis (the
/// agent's), the route (the governor's) and the outcome (the executor's); a record
/// of those kinds from any other writer is not believed.
pub fn past_outcome(incident: &Summary, trail: &[arf_audit_client::Record]) -> SnapshotItem {
    use arf_audit_client::RecordKind;
    use arf_core::records::{DecidedRecord, DecisionRecordKind, DiagnosisRecord, DiagnosisStatus, OutcomeRecord};
    // Read by type; a record that is not in its writer's format says nothing here.
    let diagnosis = trail
        .iter()
        .rev()
        .filter(|r| r.kind == RecordKind::Diagnosis && r.writer == "agent")
        .filter_map(|r| r.parse::<DiagnosisRecord>().ok())
        .find(|d| d.status == DiagnosisStatus::Grounded);
    let root_cause = diagnosis.as_ref().and_then(|d| d.hypotheses.first()).map_or("no grounded diagnosis", |h| h.root_cause.as_str());
    let pathway = diagnosis.as_ref().and_then(|d| d.proposal.as_ref()).map_or("none", |p| p.remediation.pathway.as_str());
    let route = trail
        .iter()
        .rev()
        .filter(|r| r.kind == RecordKind::Decision && r.writer == "governor" && DecisionRecordKind::of(&r.payload) == DecisionRecordKind::Decided)
        .find_map(|r| r.parse::<DecidedRecord>().ok())
        .map_or("none", |d| d.decision.route.as_str());
    let outcome = trail
        .iter()
        .rev()
        .filter(|r| r.kind == RecordKind::Outcome && r.writer == "executor")
        .find_map(|r| r.parse::<OutcomeRecord>().ok())
        .map_or_else(
            || {
                match incident.state {
                    crate::incident::IncidentState::Escalated => "escalated to a human",
                    _ => "no execution",
                }
                .to_owned()
            },
            |o| o.outcome,
        );
    SnapshotItem {
        id: format!("past-{}", incident.id),
        kind: "past_outcome".to_owned(),
        summary: format!(
            "past incident `{}` ({}, {}/{}, opened {}): {root_cause}; remediation `{pathway}`, route `{route}`, outcome `{outcome}`",
            incident.id,
            incident.title,
            incident.service,
            incident.environment,
            arf_core::time::format_ms(incident.opened_at_ms)
        ),
        data: serde_json::json!({"incident_id": incident.id, "title": incident.title, "root_cause": root_cause,
                                 "pathway": pathway, "route": route, "outcome": outcome}),
    }
}

/// The most bytes of an outcome's detail an attempt item carries.
const ATTEMPT_DETAIL_BYTES: usize = 600;
/// The most earlier actions a snapshot shows (the latest).
const MAX_ATTEMPT_ITEMS: usize = 5;

/// The incident's earlier actions, one item each (`attempt-N`, numbered in log
/// order, the latest first, at most [`MAX_ATTEMPT_ITEMS`]): the action as the
/// governor decided it, and what it met, in the executor's words (the precheck's
/// answer, the failed verification), redacted before it is cut to its bound. A
/// diagnosis after one sees why it did not work and may cite it.
pub fn attempts(trail: &[arf_audit_client::Record], redactor: &Redactor) -> Vec<SnapshotItem> {
    use arf_audit_client::RecordKind;
    use arf_core::records::{DecidedRecord, DecisionRecordKind, OutcomeRecord};
    let decided: Vec<DecidedRecord> = trail
        .iter()
        .filter(|r| r.kind == RecordKind::Decision && r.writer == "governor" && DecisionRecordKind::of(&r.payload) == DecisionRecordKind::Decided)
        .filter_map(|r| r.parse::<DecidedRecord>().ok())
        .collect();
    let outcomes = trail.iter().filter(|r| r.kind == RecordKind::Outcome && r.writer == "executor").filter_map(|r| r.parse::<OutcomeRecord>().ok());
    let mut items: Vec<SnapshotItem> = outcomes
        .enumerate()
        .map(|(i, outcome)| {
            let parameters = decided
                .iter()
                .find(|d| d.decision.decision_id == outcome.decision_id)
                .map_or(serde_json::Value::Null, |d| d.decision.remediation.parameters.clone());
            let met = match outcome.outcome.as_str() {
                "refused" => "was refused by its precheck, so nothing ran",
                "rolled_back" => "ran, failed its verification and was rolled back",
                "verified" => "ran and was verified",
                "rollback_failed" => "failed and its rollback failed too",
                "not_run" => "was logged as started, but the executor never ran it, so nothing changed",
                _ => "failed",
            };
            let redacted = redactor.text(&outcome.detail);
            let mut end = redacted.len().min(ATTEMPT_DETAIL_BYTES);
            while !redacted.is_char_boundary(end) {
                end -= 1;
            }
            let detail = &redacted[..end];
            SnapshotItem {
                id: format!("attempt-{}", i + 1),
                kind: "attempt".to_owned(),
                summary: format!("attempt {}: `{}` on `{}` with parameters {parameters} {met}: {detail}", i + 1, outcome.pathway, outcome.target),
                data: json!({"decision_id": outcome.decision_id, "pathway": outcome.pathway, "target": outcome.target,
                             "parameters": parameters, "outcome": outcome.outcome, "detail": detail}),
            }
        })
        .collect();
    items.reverse();
    items.truncate(MAX_ATTEMPT_ITEMS);
    items
}

/// Every action `writer` (the agent) proposed for the incident, in log order.
pub fn tried(trail: &[arf_audit_client::Record], writer: &str) -> Vec<arf_core::diagnosis::Remediation> {
    trail
        .iter()
        .filter(|r| r.writer == writer && r.kind == arf_audit_client::RecordKind::Diagnosis)
        .filter_map(|r| r.parse::<arf_core::records::DiagnosisRecord>().ok())
        .filter_map(|d| d.proposal.map(|p| p.remediation))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arf_core::signal::{SignalKind, SignalStatus};
    use std::collections::BTreeMap;

    fn record(seq: u64, writer: &str, kind: arf_audit_client::RecordKind, payload: serde_json::Value) -> arf_audit_client::Record {
        arf_audit_client::Record { seq, time_ms: 1, writer: writer.into(), incident_id: "inc-1".into(), kind, payload, prev_hash: String::new(), hash: String::new() }
    }

    /// Each earlier action is an item, in log order, with the parameters the
    /// governor decided and what the executor said (cut to its bound); only the
    /// governor's decisions and the executor's outcomes are believed.
    #[test]
    fn earlier_attempts_become_items_with_their_parameters_and_answers() {
        use arf_audit_client::RecordKind;
        use arf_core::decision::Route;
        let mut body = arf_core::fixtures::body();
        body.parameters = json!({"revision": "v5.1.0"});
        let decided = arf_core::records::encode(&arf_core::fixtures::decided(&body, Route::Approval, 1, &["oncall"]));
        let outcome = |decision: &str, outcome: &str, detail: &str| {
            arf_core::records::encode(&arf_core::records::OutcomeRecord {
                decision_id: decision.into(),
                pathway: "rollback_deployment".into(),
                target: "api".into(),
                outcome: outcome.into(),
                detail: detail.into(),
                precheck: None,
                recovered: false,
                interrupted_in: None,
                leftovers: Vec::new(),
            })
        };
        let trail = [
            record(1, "governor", RecordKind::Decision, decided),
            record(2, "executor", RecordKind::Outcome, outcome("dec-1", "refused", "answered 409, expected 200: the deployment already runs revision v5.1.0")),
            record(3, "agent", RecordKind::Outcome, outcome("dec-9", "refused", "forged")),
            record(4, "executor", RecordKind::Outcome, outcome("dec-2", "rolled_back", &"é".repeat(1000))),
        ];
        let redactor = Redactor::new(&[]).unwrap();
        let items = attempts(&trail, &redactor);
        assert_eq!(items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["attempt-2", "attempt-1"], "the latest first");
        assert_eq!(items[1].kind, "attempt");
        assert_eq!(items[1].data["parameters"], json!({"revision": "v5.1.0"}));
        assert!(items[1].summary.contains("`rollback_deployment` on `api` with parameters {\"revision\":\"v5.1.0\"} was refused by its precheck, so nothing ran: answered 409"), "{}", items[1].summary);
        assert!(items[0].summary.contains("failed its verification and was rolled back"), "{}", items[0].summary);
        assert_eq!(items[0].data["parameters"], serde_json::Value::Null, "no decision of the governor for it");
        assert!(items[0].data["detail"].as_str().unwrap().len() <= ATTEMPT_DETAIL_BYTES);

        // A secret in the target's answer is redacted whole, before the cut: no prefix of it survives.
        let secret = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
        let long = format!("{} token {secret}", "x".repeat(ATTEMPT_DETAIL_BYTES - 20));
        let trail = [record(1, "executor", RecordKind::Outcome, outcome("dec-3", "refused", &long))];
        let items = attempts(&trail, &redactor);
        assert!(!items[0].summary.contains("ghp_") && !items[0].data["detail"].as_str().unwrap().contains("ghp_"), "{}", items[0].summary);
        // The latest few only.
        let many: Vec<_> = (1..=8).map(|n| record(n, "executor", RecordKind::Outcome, outcome(&format!("dec-{n}"), "refused", "no"))).collect();
        let ids: Vec<String> = attempts(&many, &redactor).into_iter().map(|i| i.id).collect();
        assert_eq!(ids, ["attempt-8", "attempt-7", "attempt-6", "attempt-5", "attempt-4"]);
    }

    fn signal(n: usize, severity: &str, bytes: usize) -> Signal {
        let mut s = Signal {
            id: String::new(),
            source: "test".into(),
            kind: SignalKind::Alert,
            status: SignalStatus::Firing,
            title: format!("Alert{n}"),
            description: "x".repeat(bytes),
            severity: severity.into(),
            service: "web".into(),
            environment: "prod".into(),
            labels: BTreeMap::from([("n".to_owned(), n.to_string())]),
            annotations: BTreeMap::new(),
            observed_at_ms: i64::try_from(n).unwrap(),
            fingerprint: String::new(),
        };
        s.fingerprint = s.compute_fingerprint();
        s.id = s.content_id();
        s
    }

    #[test]
    fn a_past_outcome_believes_each_kind_only_from_its_writer() {
        let mut incidents = Incidents::new(i64::MAX);
        incidents.place(&signal(1, "critical", 10), 0, || "inc-1".to_owned());
        let incident = incidents.by_id["inc-1"].clone();
        let record = |writer: &str, kind: arf_audit_client::RecordKind, payload: serde_json::Value| arf_audit_client::Record {
            seq: 1,
            time_ms: 0,
            writer: writer.to_owned(),
            incident_id: "inc-1".to_owned(),
            kind,
            payload,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let forged = [
            record("agent", arf_audit_client::RecordKind::Decision, serde_json::json!({"route": "autonomous"})),
            record(
                "agent",
                arf_audit_client::RecordKind::Outcome,
                serde_json::json!({"decision_id": "dec-1", "pathway": "restart_service", "target": "web", "outcome": "verified", "detail": ""}),
            ),
        ];
        // The same decision as made, once by the agent (not believed) and once by the governor.
        let mut body = arf_core::fixtures::body();
        body.route = arf_core::decision::Route::Approval;
        let decided = arf_core::records::encode(&arf_core::fixtures::decided(&body, arf_core::decision::Route::Approval, 1, &[]));
        let forged = [record("agent", arf_audit_client::RecordKind::Decision, decided.clone()), forged[1].clone()];
        let summary = past_outcome(&Summary::from(&incident), &forged).summary;
        assert!(summary.contains("route `none`, outcome `no execution`"), "{summary}");
        let real = [
            record("governor", arf_audit_client::RecordKind::Decision, decided),
            record(
                "executor",
                arf_audit_client::RecordKind::Outcome,
                serde_json::json!({"decision_id": "dec-1", "pathway": "restart_service", "target": "web", "outcome": "rolled_back", "detail": ""}),
            ),
        ];
        let summary = past_outcome(&Summary::from(&incident), &real).summary;
        assert!(summary.contains("route `approval`, outcome `rolled_back`"), "{summary}");
    }

    #[test]
    fn the_budget_keeps_the_most_relevant_and_records_the_rest() {
        let mut incidents = Incidents::new(i64::MAX);
        let mut id = None;
        for n in 0..10 {
            let severity = if n == 7 { "critical" } else { "info" };
            let placement = incidents.place(&signal(n, severity, 400), 0, || "inc-1".to_owned());
            id.get_or_insert(placement.incident_id().to_owned());
        }
        let incident = incidents.by_id["inc-1"].clone();
        let redactor = Redactor::new(&[]).unwrap();
        let budget = Budget { max_items: 50, max_tokens: 500, change_lookback_ms: 0 };
        let snapshot = snapshot(&incident, &incidents, &BTreeMap::new(), &redactor, budget, (&[], &[]));
        let used: usize = snapshot.items.iter().map(estimate_tokens).sum();
        assert!(used <= 500, "{used} tokens");
        assert!(!snapshot.items.is_empty() && !snapshot.dropped.is_empty());
        assert_eq!(snapshot.items.len() + snapshot.dropped.len(), 10, "nothing vanishes: kept or recorded as dropped");
        assert_eq!(snapshot.items[0].data["title"], "Alert7", "the critical alert comes first");
        assert_eq!(snapshot.hash(), super::snapshot(&incident, &incidents, &BTreeMap::new(), &redactor, budget, (&[], &[])).hash(), "content-addressed and deterministic");
    }
}
