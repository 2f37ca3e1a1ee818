//! SARIF 2.1.0 (Semgrep, CodeQL, Trivy, and other static analysers): one finding per result.

use std::collections::BTreeMap;

use serde_json::Value;

use arf_core::signal::{Signal, SignalKind, SignalStatus};

use super::util::{array, severity, text};
use super::{Defaults, InvalidSignal, finish};

pub fn parse(body: &[u8], defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    let root: Value = serde_json::from_slice(body).map_err(|e| InvalidSignal::Json(e.to_string()))?;
    if !root.is_object() {
        return Err(InvalidSignal::field("$", "a SARIF log is a JSON object"));
    }
    match text(&root, "version") {
        Some("2.1.0") => {}
        Some(other) => return Err(InvalidSignal::field("version", format!("only SARIF 2.1.0 is supported, got `{other}`"))),
        None => return Err(InvalidSignal::field("version", "is required")),
    }
    let runs = array(&root, "runs", "runs")?;
    let mut signals = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        let driver = run.get("tool").and_then(|t| t.get("driver"));
        let tool = driver.and_then(|d| text(d, "name")).unwrap_or("sarif").to_owned();
        let rules: Vec<Value> = driver.and_then(|d| d.get("rules")).and_then(Value::as_array).cloned().unwrap_or_default();
        let results = match run.get("results") {
            None | Some(Value::Null) => continue,
            Some(_) => array(run, "results", &format!("runs[{r}].results"))?,
        };
        for (i, result) in results.iter().enumerate() {
            let field = format!("runs[{r}].results[{i}]");
            let message = result
                .get("message")
                .and_then(|m| text(m, "text"))
                .ok_or_else(|| InvalidSignal::field(format!("{field}.message.text"), "is required"))?;
            let rule_id = text(result, "ruleId").unwrap_or("unknown-rule").to_owned();
            let rule = result
                .get("ruleIndex")
                .and_then(Value::as_u64)
                .and_then(|index| rules.get(usize::try_from(index).ok()?))
                .or_else(|| rules.iter().find(|rule| text(rule, "id") == Some(rule_id.as_str())));
            let level = text(result, "level")
                .or_else(|| rule.and_then(|r| r.get("defaultConfiguration")).and_then(|c| text(c, "level")))
                .unwrap_or("warning");
            let location = result.get("locations").and_then(|l| l.get(0)).and_then(|l| l.get("physicalLocation"));
            let file = location.and_then(|l| l.get("artifactLocation")).and_then(|a| text(a, "uri")).unwrap_or_default().to_owned();
            let line = location.and_then(|l| l.get("region")).and_then(|r| r.get("startLine")).and_then(Value::as_u64);
            let mut labels = BTreeMap::from([("tool".to_owned(), tool.clone()), ("rule_id".to_owned(), rule_id.clone()), ("file".to_owned(), file.clone())]);
            if let Some(line) = line {
                labels.insert("line".to_owned(), line.to_string());
            }
            // A security-severity score, when the rule gives one, says more than the level.
            let score = rule
                .and_then(|r| r.get("properties"))
                .and_then(|p| p.get("security-severity"))
                .and_then(|s| s.as_str().and_then(|s| s.parse::<f64>().ok()).or_else(|| s.as_f64()));
            let severity = match score {
                Some(s) if s >= 9.0 => "critical".to_owned(),
                Some(s) if s >= 7.0 => "high".to_owned(),
                Some(s) if s >= 4.0 => "warning".to_owned(),
                Some(_) => "info".to_owned(),
                None => severity(level),
            };
            let mut annotations = BTreeMap::new();
            if let Some(help) = rule.and_then(|r| text(r, "helpUri")) {
                annotations.insert("help_uri".to_owned(), help.to_owned());
            }
            // The tool's own fingerprint is not trusted to tell results apart (Semgrep
            // OSS writes `"matchBasedId/v1": "requires login"` on every one): the
            // location is part of a finding's identity, so two hits of one rule in
            // one file stay two findings.
            let column = location.and_then(|l| l.get("region")).and_then(|r| r.get("startColumn")).and_then(Value::as_u64);
            let tool_fingerprint = result
                .get("partialFingerprints")
                .or_else(|| result.get("fingerprints"))
                .and_then(Value::as_object)
                .and_then(|f| f.values().next())
                .and_then(Value::as_str)
                .unwrap_or_default();
            let fingerprint = format!(
                "{tool}:{rule_id}:{file}:{}:{}:{tool_fingerprint}",
                line.map(|l| l.to_string()).unwrap_or_default(),
                column.map(|c| c.to_string()).unwrap_or_default()
            );
            let signal = Signal {
                id: String::new(),
                source: format!("sarif:{}", tool.to_ascii_lowercase()),
                kind: SignalKind::Finding,
                status: SignalStatus::Firing,
                title: format!("{rule_id} in {}", if file.is_empty() { "an unknown file" } else { &file }),
                description: message.to_owned(),
                severity,
                service: defaults.service.clone(),
                environment: defaults.environment.clone(),
                labels,
                annotations,
                observed_at_ms: defaults.now_ms,
                fingerprint,
            };
            signals.push(finish(signal, &field)?);
        }
    }
    Ok(signals)
}
