//! Kubernetes events: the `Event` object as JSON (core/v1 and events.k8s.io/v1,
//! one or an `EventList`), and the tables `kubectl events` and `kubectl describe`
//! print, which is what many runbooks and tools capture.
//!
//! `Warning` events become signals that open incidents; `Normal` ones are
//! informational context.

use std::collections::BTreeMap;

use serde_json::Value;

use arf_core::signal::{Signal, SignalKind, SignalStatus};

use super::util::{text, text_or_empty, time};
use super::{Defaults, InvalidSignal, finish};

/// The workload a pod belongs to: `checkout-6958c5bdd8-69gtn` → `checkout`.
pub fn workload(name: &str) -> String {
    let parts: Vec<&str> = name.rsplitn(3, '-').collect();
    let looks_generated = |s: &str, lens: &[usize]| lens.contains(&s.len()) && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    match parts.as_slice() {
        [pod, hash, base] if looks_generated(pod, &[5]) && looks_generated(hash, &[8, 9, 10]) => (*base).to_owned(),
        [pod, rest @ ..] if looks_generated(pod, &[5]) && !rest.is_empty() => name[..name.len() - pod.len() - 1].to_owned(),
        _ => name.to_owned(),
    }
}

#[expect(clippy::too_many_arguments, reason = "the fields of one event, named")]
fn event_signal(
    defaults: &Defaults,
    field: &str,
    kind: &str,
    name: &str,
    namespace: &str,
    event_type: &str,
    reason: &str,
    message: &str,
    count: Option<u64>,
    observed_at_ms: i64,
) -> Result<Signal, InvalidSignal> {
    let warning = event_type.eq_ignore_ascii_case("warning");
    let mut labels = BTreeMap::from([
        ("reason".to_owned(), reason.to_owned()),
        ("object_kind".to_owned(), kind.to_owned()),
        ("object_name".to_owned(), name.to_owned()),
        ("namespace".to_owned(), namespace.to_owned()),
        ("type".to_owned(), event_type.to_owned()),
    ]);
    labels.retain(|_, v| !v.is_empty());
    let mut annotations = BTreeMap::new();
    if let Some(count) = count {
        annotations.insert("count".to_owned(), count.to_string());
    }
    let signal = Signal {
        id: String::new(),
        source: "kubernetes".to_owned(),
        kind: SignalKind::Event,
        status: SignalStatus::Firing,
        title: format!("{reason} {kind}/{name}"),
        description: message.to_owned(),
        severity: if warning { "warning" } else { "info" }.to_owned(),
        service: if defaults.service.is_empty() { workload(name) } else { defaults.service.clone() },
        environment: defaults.environment.clone(),
        labels,
        annotations,
        observed_at_ms,
        fingerprint: String::new(),
    };
    finish(signal, field)
}

/// `Event` JSON, one object or an `EventList`.
pub fn parse_json(body: &[u8], defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    let root: Value = serde_json::from_slice(body).map_err(|e| InvalidSignal::Json(e.to_string()))?;
    let (events, prefix) = match text(&root, "kind") {
        Some("EventList") => (root.get("items").and_then(Value::as_array).cloned().unwrap_or_default(), "items"),
        Some("Event") => (vec![root], ""),
        Some(other) => return Err(InvalidSignal::field("kind", format!("expected `Event` or `EventList`, got `{other}`"))),
        None => return Err(InvalidSignal::field("kind", "is required (`Event` or `EventList`)")),
    };
    let mut signals = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let field = if prefix.is_empty() { "$".to_owned() } else { format!("{prefix}[{i}]") };
        // core/v1 says involvedObject; events.k8s.io/v1 says regarding.
        let object = event
            .get("involvedObject")
            .or_else(|| event.get("regarding"))
            .ok_or_else(|| InvalidSignal::field(format!("{field}.involvedObject"), "is required"))?;
        let reason = text(event, "reason").ok_or_else(|| InvalidSignal::field(format!("{field}.reason"), "is required"))?;
        let message = text(event, "message").or_else(|| text(event, "note")).unwrap_or_default();
        let when = event
            .get("lastTimestamp")
            .filter(|v| !v.is_null())
            .or_else(|| event.get("eventTime").filter(|v| !v.is_null()))
            .or_else(|| event.get("firstTimestamp"));
        let namespace = text(object, "namespace").or_else(|| event.get("metadata").and_then(|m| text(m, "namespace"))).unwrap_or_default();
        signals.push(event_signal(
            defaults,
            &field,
            &text_or_empty(object, "kind"),
            &text_or_empty(object, "name"),
            namespace,
            text(event, "type").unwrap_or("Normal"),
            reason,
            message,
            event.get("count").and_then(Value::as_u64),
            time(when, &format!("{field}.lastTimestamp"), defaults.now_ms)?,
        )?);
    }
    Ok(signals)
}

/// Column start offsets of a table header, by column name.
fn columns(header: &str, names: &[&str]) -> Option<Vec<usize>> {
    names.iter().map(|name| header.find(name)).collect()
}

fn cell(line: &str, starts: &[usize], index: usize) -> String {
    let start = starts[index].min(line.len());
    let end = starts.get(index + 1).copied().unwrap_or(line.len()).min(line.len());
    line.get(start..end).unwrap_or_default().trim().to_owned()
}

/// `42` from `16m (x42 over 5h)`.
fn repeat_count(age: &str) -> Option<u64> {
    let start = age.find("(x")? + 2;
    let rest = &age[start..];
    rest[..rest.find(' ')?].parse().ok()
}

/// The text of `kubectl events` or `kubectl describe` (its `Events:` section).
pub fn parse_text(body: &[u8], defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    let text = std::str::from_utf8(body).map_err(|_| InvalidSignal::field("$", "kubectl output must be UTF-8 text"))?;
    let lines: Vec<&str> = text.lines().collect();
    let namespace = lines
        .iter()
        .find_map(|l| l.strip_prefix("Namespace:"))
        .map(|n| n.trim().to_owned())
        .unwrap_or_default();
    let described = lines.iter().find_map(|l| l.strip_prefix("Name:")).map(|n| n.trim().to_owned());
    let mut signals = Vec::new();
    if let Some(at) = lines.iter().position(|l| l.starts_with("LAST SEEN")) {
        let starts = columns(lines[at], &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"])
            .ok_or_else(|| InvalidSignal::field("header", "a `kubectl events` header needs LAST SEEN, TYPE, REASON, OBJECT and MESSAGE"))?;
        for (n, line) in lines[at + 1..].iter().enumerate() {
            if line.trim().is_empty() {
                break;
            }
            let object = cell(line, &starts, 3);
            let (kind, name) = object.split_once('/').unwrap_or(("", object.as_str()));
            signals.push(event_signal(
                defaults,
                &format!("line {}", at + n + 2),
                kind,
                name,
                &namespace,
                &cell(line, &starts, 1),
                &cell(line, &starts, 2),
                &cell(line, &starts, 4),
                repeat_count(&cell(line, &starts, 0)),
                defaults.now_ms,
            )?);
        }
    } else if let Some(at) = lines.iter().position(|l| l.trim_start().starts_with("Events:")) {
        let Some(header) = lines.get(at + 1) else { return Ok(signals) };
        if header.trim() == "<none>" {
            return Ok(signals);
        }
        let starts = columns(header, &["Type", "Reason", "Age", "From", "Message"])
            .ok_or_else(|| InvalidSignal::field(format!("line {}", at + 2), "the `Events:` header needs Type, Reason, Age, From and Message"))?;
        let kind = if text.contains("Containers:") { "Pod" } else { "" };
        let name = described.clone().unwrap_or_default();
        for (n, line) in lines.iter().enumerate().skip(at + 2) {
            if line.trim().is_empty() || !line.starts_with(' ') {
                break;
            }
            if line.trim_start().starts_with("----") {
                continue;
            }
            signals.push(event_signal(
                defaults,
                &format!("line {}", n + 1),
                kind,
                &name,
                &namespace,
                &cell(line, &starts, 0),
                &cell(line, &starts, 1),
                &cell(line, &starts, 4),
                repeat_count(&cell(line, &starts, 2)),
                defaults.now_ms,
            )?);
        }
    } else {
        return Err(InvalidSignal::field("$", "no `kubectl events` table or `Events:` section found"));
    }
    Ok(signals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_workload_behind_a_pod() {
        assert_eq!(workload("giant-narwhal-6958c5bdd8-69gtn"), "giant-narwhal");
        assert_eq!(workload("busybox"), "busybox");
        assert_eq!(workload("web-0"), "web-0");
    }
}
