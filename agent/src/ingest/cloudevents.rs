//! CloudEvents 1.0 in the structured JSON format (one event, or a batch array),
//! and CDEvents, either carried as a CloudEvent's data or in their own
//! `{"context": ..., "subject": ...}` JSON.
//!
//! CDEvents tell ARF what changed: `service.deployed`, `service.upgraded`,
//! `service.rolledback` and `change.merged` become change signals (context for
//! incidents); `incident.detected` and `incident.reported` become alerts, and
//! `incident.resolved` resolves them. Other CloudEvents are kept as events.

use std::collections::BTreeMap;

use serde_json::Value;

use arf_core::signal::{Signal, SignalKind, SignalStatus};

use super::util::{flatten, text, text_or_empty, time};
use super::{Defaults, InvalidSignal, finish};

pub fn parse(body: &[u8], defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    let root: Value = serde_json::from_slice(body).map_err(|e| InvalidSignal::Json(e.to_string()))?;
    match &root {
        Value::Array(events) => events
            .iter()
            .enumerate()
            .map(|(i, event)| one(event, &format!("[{i}]"), defaults))
            .collect(),
        Value::Object(_) => Ok(vec![one(&root, "$", defaults)?]),
        _ => Err(InvalidSignal::field("$", "a CloudEvent is a JSON object, and a batch is an array of them")),
    }
}

fn one(event: &Value, field: &str, defaults: &Defaults) -> Result<Signal, InvalidSignal> {
    if event.get("context").is_some() && event.get("subject").is_some() && event.get("specversion").is_none() {
        return cdevent(event, field, defaults, event.get("context"));
    }
    let required = |key: &str| text(event, key).ok_or_else(|| InvalidSignal::field(format!("{field}.{key}"), "is required"));
    match required("specversion")? {
        "1.0" => {}
        other => return Err(InvalidSignal::field(format!("{field}.specversion"), format!("only CloudEvents 1.0 is supported, got `{other}`"))),
    }
    let id = required("id")?;
    let source = required("source")?;
    let event_type = required("type")?;
    let data = event.get("data");
    if let Some(cd) = data.filter(|d| event_type.starts_with("dev.cdevents.") && d.get("subject").is_some()) {
        return cdevent(cd, &format!("{field}.data"), defaults, cd.get("context").or(Some(event)));
    }
    let mut labels = BTreeMap::from([("type".to_owned(), event_type.to_owned()), ("source".to_owned(), source.to_owned()), ("event_id".to_owned(), id.to_owned())]);
    if let Some(subject) = text(event, "subject") {
        labels.insert("subject".to_owned(), subject.to_owned());
    }
    // Extension attributes are everything that is not a core attribute.
    let core = ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "data", "data_base64"];
    let mut annotations: BTreeMap<String, String> = event
        .as_object()
        .map(|o| flatten(o).into_iter().filter(|(k, _)| !core.contains(&k.as_str())).collect())
        .unwrap_or_default();
    let description = match data {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    if event.get("data_base64").is_some() {
        annotations.insert("data_base64".to_owned(), "(binary data omitted)".to_owned());
    }
    let signal = Signal {
        id: String::new(),
        source: format!("cloudevents:{source}"),
        kind: SignalKind::Event,
        status: SignalStatus::Firing,
        title: event_type.to_owned(),
        description,
        severity: "info".to_owned(),
        service: defaults.service.clone(),
        environment: defaults.environment.clone(),
        labels,
        annotations,
        observed_at_ms: time(event.get("time"), &format!("{field}.time"), defaults.now_ms)?,
        fingerprint: format!("ce:{source}:{id}"),
    };
    finish(signal, field)
}

/// The last path segment of a CDEvents reference such as `{"id": "production", "source": "/envs"}`.
fn reference(content: &Value, key: &str) -> String {
    match content.get(key) {
        Some(Value::Object(o)) => o.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn cdevent(event: &Value, field: &str, defaults: &Defaults, context: Option<&Value>) -> Result<Signal, InvalidSignal> {
    let context = context.ok_or_else(|| InvalidSignal::field(format!("{field}.context"), "is required"))?;
    let event_type = text(context, "type").ok_or_else(|| InvalidSignal::field(format!("{field}.context.type"), "is required"))?;
    let subject = event.get("subject").ok_or_else(|| InvalidSignal::field(format!("{field}.subject"), "is required"))?;
    let content = subject.get("content").cloned().unwrap_or(Value::Null);
    // dev.cdevents.<subject>.<predicate>.<version>
    let parts: Vec<&str> = event_type.split('.').collect();
    let (noun, verb) = match parts.as_slice() {
        ["dev", "cdevents", noun, verb, ..] => (*noun, *verb),
        _ => return Err(InvalidSignal::field(format!("{field}.context.type"), format!("`{event_type}` is not a CDEvents type"))),
    };
    let (kind, status, severity) = match (noun, verb) {
        ("service", "deployed" | "upgraded" | "rolledback" | "removed") | ("change", _) | ("artifact", "published" | "signed") => {
            (SignalKind::Change, SignalStatus::Firing, "info".to_owned())
        }
        ("incident", "resolved") => (SignalKind::Alert, SignalStatus::Resolved, "warning".to_owned()),
        ("incident", _) => {
            let severity = event.get("customData").and_then(|c| text(c, "severity")).unwrap_or("warning");
            (SignalKind::Alert, SignalStatus::Firing, super::util::severity(severity))
        }
        _ => (SignalKind::Event, SignalStatus::Firing, "info".to_owned()),
    };
    let subject_id = text_or_empty(subject, "id");
    let mut labels = BTreeMap::from([("type".to_owned(), event_type.to_owned()), ("subject_id".to_owned(), subject_id.clone())]);
    for key in ["artifactId", "ticketURI"] {
        if let Some(value) = text(&content, key) {
            labels.insert(key.to_owned(), value.to_owned());
        }
    }
    if let Some(repository) = content.get("repository") {
        let _ = repository;
        labels.insert("repository".to_owned(), reference(&content, "repository"));
    }
    // An incident's identity is its subject id, so `resolved` finds what `detected` opened.
    let fingerprint = if noun == "incident" { format!("cdevents:incident:{subject_id}") } else { String::new() };
    let mut annotations = BTreeMap::new();
    if let Some(custom) = event.get("customData").and_then(Value::as_object) {
        annotations.extend(flatten(custom));
    }
    let environment = reference(&content, "environment");
    let service = reference(&content, "service");
    let description = text(&content, "description").map(str::to_owned).unwrap_or_else(|| format!("{noun} {verb}: {subject_id}"));
    let signal = Signal {
        id: String::new(),
        source: format!("cdevents:{}", text(context, "source").unwrap_or_default()),
        kind,
        status,
        title: format!("{noun} {verb}"),
        description,
        severity,
        service: if defaults.service.is_empty() { service } else { defaults.service.clone() },
        environment: if defaults.environment.is_empty() { environment } else { defaults.environment.clone() },
        labels,
        annotations,
        observed_at_ms: time(context.get("timestamp").or_else(|| context.get("time")), &format!("{field}.context.timestamp"), defaults.now_ms)?,
        fingerprint,
    };
    finish(signal, field)
}
