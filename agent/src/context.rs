//! Context assembly: the bounded, redacted, content-addressed snapshot of one diagnosis.

use serde_json::json;

use arf_core::diagnosis::{Snapshot, SnapshotItem};
use arf_core::signal::{Signal, SignalStatus};
use arf_core::target::Inventory;

use crate::incident::{Incident, Incidents};
use crate::redact::Redactor;

/// Bounds on a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_items: usize,
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

/// Builds the snapshot: the incident's signals (firing and most severe first),
/// then related changes (most recent first), then inventory facts, cut to budget.
pub fn snapshot(
    incident: &Incident,
    incidents: &Incidents,
    inventory: &Inventory,
    redactor: &Redactor,
    budget: Budget,
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

    let mut candidates: Vec<SnapshotItem> = Vec::new();
    candidates.extend(signals.iter().map(|s| signal_item(s, redactor)));
    candidates.extend(changes.iter().map(|s| signal_item(s, redactor)));
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
    let dropped = candidates.iter().skip(budget.max_items).map(|i| i.id.clone()).collect();
    candidates.truncate(budget.max_items);
    Snapshot {
        incident_id: incident.id.clone(),
        service: incident.service.clone(),
        environment: incident.environment.clone(),
        items: candidates,
        dropped,
    }
}
