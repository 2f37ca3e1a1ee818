//! AWS Security Hub findings in the AWS Security Finding Format (ASFF):
//! `{"Findings": [...]}` as `BatchImportFindings` takes it, or one finding.

use std::collections::BTreeMap;

use serde_json::Value;

use arf_core::signal::{Signal, SignalKind, SignalStatus};

use super::util::{array, severity, text, text_or_empty, time};
use super::{Defaults, InvalidSignal, finish};

pub fn parse(body: &[u8], defaults: &Defaults) -> Result<Vec<Signal>, InvalidSignal> {
    let root: Value = serde_json::from_slice(body).map_err(|e| InvalidSignal::Json(e.to_string()))?;
    let (findings, prefix): (Vec<Value>, &str) = if root.get("Findings").is_some() {
        (array(&root, "Findings", "Findings")?.clone(), "Findings")
    } else if root.get("SchemaVersion").is_some() {
        (vec![root], "Findings")
    } else {
        return Err(InvalidSignal::field("Findings", "is required (an ASFF batch is `{\"Findings\": [...]}`)"));
    };
    let mut signals = Vec::with_capacity(findings.len());
    for (i, finding) in findings.iter().enumerate() {
        let field = format!("{prefix}[{i}]");
        let required = |key: &str| {
            text(finding, key).map(str::to_owned).ok_or_else(|| InvalidSignal::field(format!("{field}.{key}"), "is required"))
        };
        let id = required("Id")?;
        let title = required("Title")?;
        let label = finding.get("Severity").and_then(|s| text(s, "Label")).unwrap_or("MEDIUM");
        let resource = finding.get("Resources").and_then(|r| r.get(0));
        let resource_type = resource.map(|r| text_or_empty(r, "Type")).unwrap_or_default();
        let resource_id = resource.map(|r| text_or_empty(r, "Id")).unwrap_or_default();
        let workflow = finding.get("Workflow").and_then(|w| text(w, "Status")).unwrap_or("NEW");
        let record_state = text(finding, "RecordState").unwrap_or("ACTIVE");
        let resolved = workflow == "RESOLVED" || record_state == "ARCHIVED";
        let mut labels = BTreeMap::from([
            ("finding_id".to_owned(), id.clone()),
            ("generator_id".to_owned(), text_or_empty(finding, "GeneratorId")),
            ("aws_account_id".to_owned(), text_or_empty(finding, "AwsAccountId")),
            ("resource_type".to_owned(), resource_type),
            ("resource_id".to_owned(), resource_id),
        ]);
        if let Some(types) = finding.get("Types").and_then(Value::as_array) {
            let types: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            labels.insert("types".to_owned(), types.join(","));
        }
        if let Some(region) = resource.and_then(|r| text(r, "Region")) {
            labels.insert("region".to_owned(), region.to_owned());
        }
        let mut annotations = BTreeMap::new();
        if let Some(recommendation) = finding.get("Remediation").and_then(|r| r.get("Recommendation")) {
            if let Some(text) = text(recommendation, "Text") {
                annotations.insert("recommendation".to_owned(), text.to_owned());
            }
            if let Some(url) = text(recommendation, "Url") {
                annotations.insert("recommendation_url".to_owned(), url.to_owned());
            }
        }
        let signal = Signal {
            id: String::new(),
            source: "aws-securityhub".to_owned(),
            kind: SignalKind::Finding,
            status: if resolved { SignalStatus::Resolved } else { SignalStatus::Firing },
            title,
            description: text_or_empty(finding, "Description"),
            severity: severity(label),
            service: defaults.service.clone(),
            environment: defaults.environment.clone(),
            labels,
            annotations,
            observed_at_ms: time(finding.get("UpdatedAt").or_else(|| finding.get("CreatedAt")), &format!("{field}.UpdatedAt"), defaults.now_ms)?,
            fingerprint: arf_core::canonical::sha256_hex(id.as_bytes())[..16].to_owned(),
        };
        signals.push(finish(signal, &field)?);
    }
    Ok(signals)
}
