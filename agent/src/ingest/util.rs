//! Small helpers the adapters share for reading untyped JSON.

use std::collections::BTreeMap;

use serde_json::Value;

use super::InvalidSignal;

/// The string at a `/`-separated path, if there is one.
pub fn text<'a>(value: &'a Value, path: &str) -> Option<&'a str> {
    let mut current = value;
    for part in path.split('/') {
        current = current.get(part)?;
    }
    current.as_str()
}

/// Like [`text`], owned, empty when absent.
pub fn text_or_empty(value: &Value, path: &str) -> String {
    text(value, path).unwrap_or_default().to_owned()
}

/// A required object, or an error naming `field`.
pub fn object<'a>(value: &'a Value, field: &str) -> Result<&'a serde_json::Map<String, Value>, InvalidSignal> {
    value.as_object().ok_or_else(|| InvalidSignal::field(field, "must be an object"))
}

/// A required array member, or an error naming it.
pub fn array<'a>(value: &'a Value, key: &str, field: &str) -> Result<&'a Vec<Value>, InvalidSignal> {
    match value.get(key) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(InvalidSignal::field(field, "must be an array")),
        None => Err(InvalidSignal::field(field, "is required")),
    }
}

/// Scalars flattened to strings (objects and arrays as compact JSON), for labels.
pub fn flatten(map: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    map.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// An RFC 3339 time at `field`, or `default` when absent; an error when present and unreadable.
pub fn time(value: Option<&Value>, field: &str, default: i64) -> Result<i64, InvalidSignal> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) if s.is_empty() => Ok(default),
        Some(Value::String(s)) => arf_core::time::parse_rfc3339_ms(s)
            .ok_or_else(|| InvalidSignal::field(field, format!("`{s}` is not an RFC 3339 time"))),
        Some(_) => Err(InvalidSignal::field(field, "must be an RFC 3339 time string")),
    }
}

/// Severity words normalized to ARF's: critical, high, warning, info.
pub fn severity(word: &str) -> String {
    match word.to_ascii_lowercase().as_str() {
        "critical" | "emergency" | "alert" | "fatal" => "critical",
        "high" | "error" | "err" => "high",
        "medium" | "moderate" | "warning" | "warn" => "warning",
        "low" | "note" | "notice" | "informational" | "info" | "debug" | "none" | "unknown" | "negligible" => "info",
        _ => "warning",
    }
    .to_owned()
}
