//! Trivy's JSON report (`trivy image -f json`, schema version 2): one finding per
//! vulnerability per package.

use std::collections::BTreeMap;

use serde_json::Value;

use arf_core::signal::{Signal, SignalKind, SignalStatus};

use super::util::{array, severity, text, text_or_empty, time};
use super::{Defaults, InvalidSignal, finish};

pub fn parse(body: &[u8], defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    let root: Value = serde_json::from_slice(body).map_err(|e| InvalidSignal::Json(e.to_string()))?;
    if !root.is_object() {
        return Err(InvalidSignal::field("$", "a Trivy report is a JSON object"));
    }
    match root.get("SchemaVersion").and_then(Value::as_u64) {
        Some(2) => {}
        Some(other) => return Err(InvalidSignal::field("SchemaVersion", format!("only version 2 is supported, got {other}"))),
        None => return Err(InvalidSignal::field("SchemaVersion", "is required")),
    }
    let artifact = text_or_empty(&root, "ArtifactName");
    let created = time(root.get("CreatedAt"), "CreatedAt", defaults.now_ms)?;
    let results = match root.get("Results") {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(_) => array(&root, "Results", "Results")?,
    };
    let mut signals = Vec::new();
    for (r, result) in results.iter().enumerate() {
        let target = text_or_empty(result, "Target");
        let vulnerabilities = match result.get("Vulnerabilities") {
            None | Some(Value::Null) => continue,
            Some(_) => array(result, "Vulnerabilities", &format!("Results[{r}].Vulnerabilities"))?,
        };
        for (v, vuln) in vulnerabilities.iter().enumerate() {
            let field = format!("Results[{r}].Vulnerabilities[{v}]");
            let id = text(vuln, "VulnerabilityID").ok_or_else(|| InvalidSignal::field(format!("{field}.VulnerabilityID"), "is required"))?;
            let package = text_or_empty(vuln, "PkgName");
            let installed = text_or_empty(vuln, "InstalledVersion");
            let fixed = text_or_empty(vuln, "FixedVersion");
            let mut labels = BTreeMap::from([
                ("vulnerability_id".to_owned(), id.to_owned()),
                ("package".to_owned(), package.clone()),
                ("installed_version".to_owned(), installed.clone()),
                ("artifact".to_owned(), artifact.clone()),
                ("target".to_owned(), target.clone()),
            ]);
            if !fixed.is_empty() {
                labels.insert("fixed_version".to_owned(), fixed.clone());
            }
            let mut annotations = BTreeMap::new();
            if let Some(url) = text(vuln, "PrimaryURL") {
                annotations.insert("url".to_owned(), url.to_owned());
            }
            let signal = Signal {
                id: String::new(),
                source: "trivy".to_owned(),
                kind: SignalKind::Finding,
                status: SignalStatus::Firing,
                title: format!("{id} in {package} {installed}"),
                description: format!(
                    "{}{}",
                    text(vuln, "Title").or_else(|| text(vuln, "Description")).unwrap_or_default(),
                    if fixed.is_empty() { String::new() } else { format!(" (fixed in {fixed})") }
                ),
                severity: severity(text(vuln, "Severity").unwrap_or("unknown")),
                service: defaults.service.clone(),
                environment: defaults.environment.clone(),
                labels,
                annotations,
                observed_at_ms: created,
                fingerprint: String::new(),
            };
            signals.push(finish(signal, &field)?);
        }
    }
    Ok(signals)
}
