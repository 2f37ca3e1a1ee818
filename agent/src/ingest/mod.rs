//! Turning what tools send into [`Signal`]s: validation, normalization, fingerprints.

pub mod alertmanager;
pub mod asff;
pub mod cloudevents;
pub mod falco;
pub mod generic;
pub mod kubernetes;
pub mod sarif;
pub mod trivy;
mod util;

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
    #[error("unknown signal format `{0}`; known formats: alertmanager, sarif, trivy, asff, falco, kubernetes, kubectl, cloudevents, cdevents, generic")]
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

/// The formats the agent reads, each with its own webhook path `/v1/webhooks/{format}`.
pub const FORMATS: &[&str] =
    &["alertmanager", "sarif", "trivy", "asff", "falco", "kubernetes", "kubectl", "cloudevents", "cdevents", "generic"];

/// What a payload does not say itself: when it arrived, and which service and
/// environment its signals belong to (a scanner's report names an image or a
/// repository, not the service that runs it).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub now_ms: i64,
    pub service: String,
    pub environment: String,
}

impl Defaults {
    pub fn at(now_ms: i64) -> Self {
        Self { now_ms, ..Self::default() }
    }
}

/// Parses a payload in a named wire format into signals, all or nothing.
pub fn parse(format: &str, body: &[u8], defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    if body.len() > MAX_BODY_BYTES {
        return Err(InvalidSignal::TooLarge { size: body.len(), limit: MAX_BODY_BYTES });
    }
    let signals = match format {
        "alertmanager" => alertmanager::parse(body, defaults)?,
        "sarif" => sarif::parse(body, defaults)?,
        "trivy" => trivy::parse(body, defaults)?,
        "asff" => asff::parse(body, defaults)?,
        "falco" => falco::parse(body, defaults)?,
        "kubernetes" => kubernetes::parse_json(body, defaults)?,
        "kubectl" => kubernetes::parse_text(body, defaults)?,
        "cloudevents" | "cdevents" => cloudevents::parse(body, defaults)?,
        "generic" => generic::parse_json(body, defaults)?,
        other => return Err(InvalidSignal::UnknownFormat(other.to_owned())),
    };
    if signals.len() > MAX_SIGNALS_PER_REQUEST {
        return Err(InvalidSignal::field("$", format!("at most {MAX_SIGNALS_PER_REQUEST} signals per payload, got {}", signals.len())));
    }
    Ok(signals)
}

/// Guesses the format of a payload from its shape, for `arf signal send` without `--format`.
pub fn detect(body: &[u8]) -> Option<&'static str> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        let text = std::str::from_utf8(body).ok()?;
        return (text.contains("LAST SEEN") || text.contains("Events:")).then_some("kubectl");
    };
    let first = match &value {
        serde_json::Value::Array(items) => items.first()?,
        other => other,
    };
    let object = first.as_object()?;
    let has = |key: &str| object.contains_key(key);
    if has("alerts") && has("status") {
        Some("alertmanager")
    } else if has("runs") && object.get("version").and_then(|v| v.as_str()) == Some("2.1.0") {
        Some("sarif")
    } else if has("SchemaVersion") && has("Results") {
        Some("trivy")
    } else if has("Findings") || (has("SchemaVersion") && has("ProductArn")) {
        Some("asff")
    } else if has("rule") && has("output") && has("priority") {
        Some("falco")
    } else if object.get("kind").and_then(|k| k.as_str()).is_some_and(|k| k == "Event" || k == "EventList") {
        Some("kubernetes")
    } else if has("specversion") || (has("context") && has("subject")) {
        Some("cloudevents")
    } else if has("signals") || (has("kind") && has("title")) {
        Some("generic")
    } else {
        None
    }
}

/// How many bytes `signal` takes as JSON, counted without building the text.
fn encoded_len(signal: &Signal) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, signal) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
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
    let size = encoded_len(&signal);
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
