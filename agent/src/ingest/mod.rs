//! Turning what tools send into [`Signal`]s: validation, normalization, fingerprints.

pub mod alertmanager;
pub mod generic;

use arf_core::signal::Signal;
use thiserror::Error;

/// Why input was refused. The field is a path into what the caller sent.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidSignal {
    #[error("`{field}`: {message}")]
    Field { field: String, message: String },
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    #[error("unknown signal format `{0}`; known formats: alertmanager, generic")]
    UnknownFormat(String),
    #[error("payload is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
}

impl InvalidSignal {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Field { field: field.into(), message: message.into() }
    }
}

/// The largest webhook body the agent reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The most signals one request may carry.
pub const MAX_SIGNALS_PER_REQUEST: usize = 5_000;

/// Parses a payload in a named wire format into signals, all or nothing.
pub fn parse(format: &str, body: &[u8], now_ms: i64) -> Result<Vec<Signal>, InvalidSignal> {
    if body.len() > MAX_BODY_BYTES {
        return Err(InvalidSignal::TooLarge { size: body.len(), limit: MAX_BODY_BYTES });
    }
    match format {
        "alertmanager" => alertmanager::parse(body, now_ms),
        "generic" => generic::parse_json(body, now_ms),
        other => Err(InvalidSignal::UnknownFormat(other.to_owned())),
    }
}

/// Guesses the format of a payload from its shape, for `arf signal send` without `--format`.
pub fn detect(body: &[u8]) -> Option<&'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    if object.contains_key("alerts") && object.contains_key("status") {
        Some("alertmanager")
    } else if object.contains_key("signals") || object.contains_key("kind") {
        Some("generic")
    } else {
        None
    }
}

/// Fills the derived fields and checks the bounds every signal must meet.
pub fn finish(mut signal: Signal, field: &str) -> Result<Signal, InvalidSignal> {
    if signal.service.is_empty() {
        signal.service = "unknown".to_owned();
    }
    if signal.environment.is_empty() {
        signal.environment = "unknown".to_owned();
    }
    if signal.labels.len() > arf_core::signal::MAX_LABELS {
        return Err(InvalidSignal::field(
            format!("{field}.labels"),
            format!("at most {} labels, got {}", arf_core::signal::MAX_LABELS, signal.labels.len()),
        ));
    }
    if signal.annotations.len() > arf_core::signal::MAX_LABELS {
        return Err(InvalidSignal::field(format!("{field}.annotations"), "too many annotations"));
    }
    for (name, text) in [
        ("title", &signal.title),
        ("service", &signal.service),
        ("environment", &signal.environment),
        ("severity", &signal.severity),
    ] {
        if text.len() > 1024 {
            return Err(InvalidSignal::field(format!("{field}.{name}"), "longer than 1024 bytes"));
        }
    }
    let size = serde_json::to_vec(&signal).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > arf_core::signal::MAX_SIGNAL_BYTES {
        return Err(InvalidSignal::field(
            field,
            format!("signal is {size} bytes, over the limit of {}", arf_core::signal::MAX_SIGNAL_BYTES),
        ));
    }
    if signal.fingerprint.is_empty() {
        signal.fingerprint = signal.compute_fingerprint();
    }
    signal.id = signal.content_id();
    Ok(signal)
}
