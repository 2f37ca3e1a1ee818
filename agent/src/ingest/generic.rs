//! ARF's own generic signal, for tools without a dedicated adapter.
//!
//! As JSON it is one object, or `{"signals": [...]}`; over gRPC it is the
//! `arf.v1.Signal` message. Both go through [`build`].

use std::collections::BTreeMap;

use serde::Deserialize;

use arf_core::signal::{Signal, SignalKind, SignalStatus};

use super::{Defaults, InvalidSignal, finish};

/// The fields a caller may set; the agent derives the rest.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericSignal {
    #[serde(default)]
    pub source: String,
    pub kind: String,
    #[serde(default)]
    pub status: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Unix milliseconds; 0 or absent means "now".
    #[serde(default)]
    pub observed_at_ms: i64,
    #[serde(default)]
    pub fingerprint: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    signals: Vec<GenericSignal>,
}

pub fn parse_json(body: &[u8], defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| InvalidSignal::Json(e.to_string()))?;
    let (signals, prefix) = if value.get("signals").is_some() {
        let batch: Batch = serde_json::from_value(value).map_err(|e| InvalidSignal::field("signals", e.to_string()))?;
        (batch.signals, "signals")
    } else {
        let one: GenericSignal = serde_json::from_value(value).map_err(|e| InvalidSignal::field("$", e.to_string()))?;
        (vec![one], "signals")
    };
    signals
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            if s.service.is_empty() {
                s.service.clone_from(&defaults.service);
            }
            if s.environment.is_empty() {
                s.environment.clone_from(&defaults.environment);
            }
            build(s, &format!("{prefix}[{i}]"), defaults.now_ms)
        })
        .collect()
}

/// Validates a generic signal and turns it into a [`Signal`].
pub fn build(input: GenericSignal, field: &str, now_ms: i64) -> Result<Signal, InvalidSignal> {
    let kind = SignalKind::parse(&input.kind).ok_or_else(|| {
        InvalidSignal::field(
            format!("{field}.kind"),
            format!("unknown kind `{}`; expected alert, finding, detection, change or event", input.kind),
        )
    })?;
    let status = match input.status.as_str() {
        "" | "firing" => SignalStatus::Firing,
        "resolved" => SignalStatus::Resolved,
        other => {
            return Err(InvalidSignal::field(
                format!("{field}.status"),
                format!("must be `firing` or `resolved`, got `{other}`"),
            ));
        }
    };
    if input.title.trim().is_empty() {
        return Err(InvalidSignal::field(format!("{field}.title"), "must not be empty"));
    }
    if input.observed_at_ms < 0 {
        return Err(InvalidSignal::field(format!("{field}.observed_at_ms"), "must not be negative"));
    }
    let signal = Signal {
        id: String::new(),
        source: if input.source.is_empty() { "generic".to_owned() } else { input.source },
        kind,
        status,
        title: input.title,
        description: input.description,
        severity: if input.severity.is_empty() { "warning".to_owned() } else { input.severity },
        service: input.service,
        environment: input.environment,
        labels: input.labels,
        annotations: input.annotations,
        observed_at_ms: if input.observed_at_ms == 0 { now_ms } else { input.observed_at_ms },
        fingerprint: input.fingerprint,
    };
    finish(signal, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_or_a_batch() {
        let one = br#"{"kind":"change","title":"deploy","service":"web","environment":"staging","labels":{"commit":"abc1234"}}"#;
        assert_eq!(parse_json(one, &Defaults::at(5)).unwrap()[0].observed_at_ms, 5);
        let batch = br#"{"signals":[{"kind":"alert","title":"a"},{"kind":"alert","title":"b"}]}"#;
        assert_eq!(parse_json(batch, &Defaults::at(5)).unwrap().len(), 2);
    }

    #[test]
    fn refuses_with_the_field_named() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"kind":"weather","title":"x"}"#, "`signals[0].kind`"),
            (br#"{"kind":"alert","title":" "}"#, "`signals[0].title`"),
            (br#"{"signals":[{"kind":"alert","title":"ok"},{"kind":"alert","title":"x","status":"maybe"}]}"#, "`signals[1].status`"),
            (br#"{"kind":"alert","title":"x","colour":"red"}"#, "colour"),
        ];
        for (body, expected) in cases {
            let error = parse_json(body, &Defaults::at(0)).unwrap_err().to_string();
            assert!(error.contains(expected), "{error} should mention {expected}");
        }
    }
}
