//! The Alertmanager webhook payload (version 4, and the older layouts real receivers still see).
//!
//! Per-alert labels are merged over `commonLabels`; an alert without its own
//! `status` (older senders) takes the group's.

use std::collections::BTreeMap;

use serde_json::Value;

use arf_core::signal::{Signal, SignalKind, SignalStatus};

use super::{Defaults, InvalidSignal, finish};

/// Labels that name the service, in order of preference.
const SERVICE_LABELS: &[&str] = &["service", "app", "app_kubernetes_io_name", "job", "namespace"];
/// Labels that name the environment, in order of preference.
const ENVIRONMENT_LABELS: &[&str] = &["env", "environment", "stage", "cluster"];

fn string_map(value: Option<&Value>, field: &str) -> Result<BTreeMap<String, String>, InvalidSignal> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(InvalidSignal::field(format!("{field}.{k}"), "must be a string")),
            })
            .collect(),
        Some(_) => Err(InvalidSignal::field(field, "must be an object of strings")),
    }
}

fn status(value: Option<&Value>, field: &str) -> Result<Option<SignalStatus>, InvalidSignal> {
    match value.and_then(Value::as_str) {
        None => match value {
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(InvalidSignal::field(field, "must be a string")),
        },
        Some("firing") => Ok(Some(SignalStatus::Firing)),
        Some("resolved") => Ok(Some(SignalStatus::Resolved)),
        Some(other) => Err(InvalidSignal::field(field, format!("must be `firing` or `resolved`, got `{other}`"))),
    }
}

fn first_of(labels: &BTreeMap<String, String>, names: &[&str]) -> String {
    names.iter().find_map(|n| labels.get(*n)).cloned().unwrap_or_default()
}

pub fn parse(body: &[u8], defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    let now_ms = defaults.now_ms;
    let root: Value = serde_json::from_slice(body).map_err(|e| InvalidSignal::Json(e.to_string()))?;
    let Some(root) = root.as_object() else {
        return Err(InvalidSignal::field("$", "an Alertmanager webhook payload is a JSON object"));
    };
    let group_status = status(root.get("status"), "status")?
        .ok_or_else(|| InvalidSignal::field("status", "is required"))?;
    let common_labels = string_map(root.get("commonLabels"), "commonLabels")?;
    let common_annotations = string_map(root.get("commonAnnotations"), "commonAnnotations")?;
    let alerts = match root.get("alerts") {
        Some(Value::Array(alerts)) => alerts,
        Some(_) => return Err(InvalidSignal::field("alerts", "must be an array")),
        None => return Err(InvalidSignal::field("alerts", "is required")),
    };
    if alerts.len() > super::MAX_SIGNALS_PER_REQUEST {
        return Err(InvalidSignal::field("alerts", format!("at most {} alerts per payload", super::MAX_SIGNALS_PER_REQUEST)));
    }
    let mut signals = Vec::with_capacity(alerts.len());
    for (i, alert) in alerts.iter().enumerate() {
        let field = format!("alerts[{i}]");
        let Some(alert) = alert.as_object() else {
            return Err(InvalidSignal::field(field, "must be an object"));
        };
        let mut labels = common_labels.clone();
        labels.extend(string_map(alert.get("labels"), &format!("{field}.labels"))?);
        let mut annotations = common_annotations.clone();
        annotations.extend(string_map(alert.get("annotations"), &format!("{field}.annotations"))?);
        let alert_status = status(alert.get("status"), &format!("{field}.status"))?.unwrap_or(group_status);
        let starts_at = match alert.get("startsAt") {
            None | Some(Value::Null) => now_ms,
            Some(Value::String(text)) => arf_core::time::parse_rfc3339_ms(text)
                .ok_or_else(|| InvalidSignal::field(format!("{field}.startsAt"), format!("`{text}` is not an RFC 3339 time")))?,
            Some(_) => return Err(InvalidSignal::field(format!("{field}.startsAt"), "must be a string")),
        };
        if let Some(url) = alert.get("generatorURL").and_then(Value::as_str).filter(|u| !u.is_empty()) {
            annotations.insert("generatorURL".to_owned(), url.to_owned());
        }
        let title = labels
            .get("alertname")
            .cloned()
            .or_else(|| annotations.get("summary").cloned())
            .unwrap_or_else(|| "unnamed alert".to_owned());
        let description = ["description", "message", "summary"]
            .iter()
            .find_map(|k| annotations.get(*k))
            .cloned()
            .unwrap_or_default();
        let fingerprint = alert.get("fingerprint").and_then(Value::as_str).unwrap_or_default().to_owned();
        let signal = Signal {
            id: String::new(),
            source: "alertmanager".to_owned(),
            kind: SignalKind::Alert,
            status: alert_status,
            title,
            description,
            severity: labels.get("severity").cloned().unwrap_or_else(|| "warning".to_owned()),
            service: Some(first_of(&labels, SERVICE_LABELS)).filter(|s| !s.is_empty()).unwrap_or_else(|| defaults.service.clone()),
            environment: Some(first_of(&labels, ENVIRONMENT_LABELS)).filter(|s| !s.is_empty()).unwrap_or_else(|| defaults.environment.clone()),
            labels,
            annotations,
            observed_at_ms: starts_at,
            fingerprint,
        };
        signals.push(finish(signal, &field)?);
    }
    Ok(signals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_common_labels_and_reads_status() {
        let body = br#"{"version":"4","status":"firing","commonLabels":{"env":"prod","service":"web"},
            "alerts":[{"labels":{"alertname":"HighErrorRate","severity":"critical"},"annotations":{"description":"5xx"},"startsAt":"2026-11-22T03:00:00Z"}]}"#;
        let signals = parse(body, &Defaults::at(0)).unwrap();
        assert_eq!(signals.len(), 1);
        let s = &signals[0];
        assert_eq!((s.title.as_str(), s.service.as_str(), s.environment.as_str()), ("HighErrorRate", "web", "prod"));
        assert_eq!(s.status, SignalStatus::Firing);
        assert_eq!(s.description, "5xx");
        assert!(s.id.starts_with("sig-"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"status":"firing"}"#, "`alerts`"),
            (br#"{"status":"burning","alerts":[]}"#, "`status`"),
            (br#"{"status":"firing","alerts":[{"labels":{"a":1}}]}"#, "`alerts[0].labels.a`"),
            (br#"{"status":"firing","alerts":[{},{"startsAt":"soon"}]}"#, "`alerts[1].startsAt`"),
            (br#"[1,2]"#, "`$`"),
            (br#"{"status":"#, "not valid JSON"),
        ];
        for (body, expected) in cases {
            let error = parse(body, &Defaults::at(0)).unwrap_err().to_string();
            assert!(error.contains(expected), "{error} should mention {expected}");
        }
    }
}
