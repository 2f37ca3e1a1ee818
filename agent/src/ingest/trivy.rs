//! Trivy's JSON report (`trivy image|fs|config -f json`, schema version 2): one
//! finding per vulnerability per package, per failed misconfiguration check, per
//! secret found (its matched text is never kept), and per license finding.

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
        signals.extend(others(result, r, &artifact, &target, created, defaults)?);
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

/// The findings of a result that are not vulnerabilities: failed misconfiguration
/// checks (`trivy config`), secrets and licenses.
fn others(result: &Value, r: usize, artifact: &str, target: &str, created: i64, defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    let mut signals = Vec::new();
    let base = |labels: BTreeMap<String, String>, title: String, description: String, level: &str| Signal {
        id: String::new(),
        source: "trivy".to_owned(),
        kind: SignalKind::Finding,
        status: SignalStatus::Firing,
        title,
        description,
        severity: severity(level),
        service: defaults.service.clone(),
        environment: defaults.environment.clone(),
        labels,
        annotations: BTreeMap::new(),
        observed_at_ms: created,
        fingerprint: String::new(),
    };
    let common = |kind: &str, id: &str| {
        BTreeMap::from([
            ("finding".to_owned(), kind.to_owned()),
            ("check_id".to_owned(), id.to_owned()),
            ("artifact".to_owned(), artifact.to_owned()),
            ("target".to_owned(), target.to_owned()),
        ])
    };
    if let Some(Value::Array(items)) = result.get("Misconfigurations") {
        for (m, item) in items.iter().enumerate() {
            let field = format!("Results[{r}].Misconfigurations[{m}]");
            // Passed checks are reported too (with `--include-non-failures`); only failures are findings.
            if text(item, "Status").is_some_and(|s| s != "FAIL") {
                continue;
            }
            let id = text(item, "AVDID").or_else(|| text(item, "ID")).ok_or_else(|| InvalidSignal::field(format!("{field}.ID"), "is required"))?;
            let mut labels = common("misconfiguration", id);
            if let Some(resource) = item.get("CauseMetadata").and_then(|c| text(c, "Resource")) {
                labels.insert("resource".to_owned(), resource.to_owned());
            }
            if let Some(line) = item.get("CauseMetadata").and_then(|c| c.get("StartLine")).and_then(Value::as_u64) {
                labels.insert("line".to_owned(), line.to_string());
            }
            let title = format!("{id}: {} in {target}", text(item, "Title").unwrap_or("misconfiguration"));
            let mut description = text(item, "Message").or_else(|| text(item, "Description")).unwrap_or_default().to_owned();
            if let Some(resolution) = text(item, "Resolution") {
                description.push_str(&format!(" Resolution: {resolution}"));
            }
            let mut signal = base(labels, title, description, text(item, "Severity").unwrap_or("unknown"));
            if let Some(url) = text(item, "PrimaryURL") {
                signal.annotations.insert("url".to_owned(), url.to_owned());
            }
            signals.push(finish(signal, &field)?);
        }
    }
    if let Some(Value::Array(items)) = result.get("Secrets") {
        for (s, item) in items.iter().enumerate() {
            let field = format!("Results[{r}].Secrets[{s}]");
            let id = text(item, "RuleID").ok_or_else(|| InvalidSignal::field(format!("{field}.RuleID"), "is required"))?;
            let mut labels = common("secret", id);
            if let Some(line) = item.get("StartLine").and_then(Value::as_u64) {
                labels.insert("line".to_owned(), line.to_string());
            }
            // `Match` holds the secret itself: it is never read.
            let title = format!("{} in {target}", text(item, "Title").unwrap_or("secret"));
            let description = format!("{} found in {target} ({})", text(item, "Category").unwrap_or("a secret"), id);
            signals.push(finish(base(labels, title, description, text(item, "Severity").unwrap_or("unknown")), &field)?);
        }
    }
    if let Some(Value::Array(items)) = result.get("Licenses") {
        for (l, item) in items.iter().enumerate() {
            let field = format!("Results[{r}].Licenses[{l}]");
            let name = text(item, "Name").ok_or_else(|| InvalidSignal::field(format!("{field}.Name"), "is required"))?;
            let package = text_or_empty(item, "PkgName");
            let mut labels = common("license", name);
            labels.insert("package".to_owned(), package.clone());
            let title = format!("license {name} in {}", if package.is_empty() { target } else { &package });
            let description = format!("{} license {name}", text(item, "Category").unwrap_or("restricted"));
            signals.push(finish(base(labels, title, description, text(item, "Severity").unwrap_or("unknown")), &field)?);
        }
    }
    Ok(signals)
}
