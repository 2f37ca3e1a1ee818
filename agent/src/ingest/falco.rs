//! Falco's JSON alert (`json_output: true`, as falcosidekick and webhooks receive it).

use std::collections::BTreeMap;

use serde_json::Value;

use arf_core::signal::{Signal, SignalKind, SignalStatus};

use super::util::{flatten, object, severity, text, time};
use super::{Defaults, InvalidSignal, finish};

pub fn parse(body: &[u8], defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    let root: Value = serde_json::from_slice(body).map_err(|e| InvalidSignal::Json(e.to_string()))?;
    let alerts = match &root {
        Value::Array(items) => items.clone(),
        Value::Object(_) => vec![root],
        _ => return Err(InvalidSignal::field("$", "a Falco alert is a JSON object")),
    };
    let mut signals = Vec::with_capacity(alerts.len());
    for (i, alert) in alerts.iter().enumerate() {
        let field = if alerts.len() == 1 { "$".to_owned() } else { format!("[{i}]") };
        object(alert, &field)?;
        let rule = text(alert, "rule").ok_or_else(|| InvalidSignal::field(format!("{field}.rule"), "is required"))?;
        let output = text(alert, "output").ok_or_else(|| InvalidSignal::field(format!("{field}.output"), "is required"))?;
        let priority = text(alert, "priority").unwrap_or("Warning");
        let fields = match alert.get("output_fields") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(value) => flatten(object(value, &format!("{field}.output_fields"))?),
        };
        let workload = ["k8s.deployment.name", "k8s.pod.name", "container.name", "proc.name"]
            .iter()
            .find_map(|k| fields.get(*k).filter(|v| !v.is_empty() && v.as_str() != "host"))
            .cloned();
        let mut labels: BTreeMap<String, String> = fields
            .iter()
            .filter(|(k, _)| !k.starts_with("evt.time"))
            .map(|(k, v)| (k.replace('.', "_").replace(['[', ']'], ""), v.clone()))
            .collect();
        labels.insert("rule".to_owned(), rule.to_owned());
        if let Some(hostname) = text(alert, "hostname") {
            labels.insert("hostname".to_owned(), hostname.to_owned());
        }
        if let Some(tags) = alert.get("tags").and_then(Value::as_array) {
            let tags: Vec<&str> = tags.iter().filter_map(Value::as_str).collect();
            labels.insert("tags".to_owned(), tags.join(","));
        }
        let signal = Signal {
            id: String::new(),
            source: "falco".to_owned(),
            kind: SignalKind::Detection,
            status: SignalStatus::Firing,
            title: rule.to_owned(),
            description: output.to_owned(),
            severity: severity(priority),
            service: if defaults.service.is_empty() { workload.unwrap_or_default() } else { defaults.service.clone() },
            environment: defaults.environment.clone(),
            labels,
            annotations: BTreeMap::new(),
            observed_at_ms: time(alert.get("time"), &format!("{field}.time"), defaults.now_ms)?,
            fingerprint: String::new(),
        };
        signals.push(finish(signal, &field)?);
    }
    Ok(signals)
}
