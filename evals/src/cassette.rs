//! Recorded cassettes: the completions a live model really gave during
//! `arf eval run --reasoner openai --record`, saved in the `scripted` reasoner's
//! file format so a later run replays them (`--replay FILE`).
//!
//! A cassette is called recorded, never scripted: its file name and every
//! response's name say `recorded`, the model and the date. The ids of this run's
//! context items are turned back into template references (`{{ signals[0].id }}`)
//! so the answers cite the right items when replayed. Pure: no network, no clock.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use arf_audit::{Record, RecordKind};

use crate::corpus::Incident;

/// One recorded completion, ready to be written.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `recorded:<model>:<date>:<incident>#<n>`.
    pub name: String,
    pub match_labels: BTreeMap<String, String>,
    /// The completion the pipeline acted on, with this run's ids as templates.
    pub completion: String,
    /// Earlier attempts of the same diagnosis that were refused, with their reasons.
    pub refused: Vec<(String, Vec<String>)>,
    /// The incident's earlier actions the snapshot showed (`attempt` items): 0 for
    /// its first diagnosis, more for one after a refusal or a rollback.
    pub attempts: usize,
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A file name that says what the cassette is: `recorded-<model>-<date>.toml`.
pub fn file_name(model: &str, date: &str) -> String {
    let model: String = model.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    format!("recorded-{model}-{date}.toml")
}

/// Escapes template syntax the model wrote, then turns the snapshot's item ids
/// into references the `scripted` reasoner renders on replay.
pub fn templatize(completion: &str, snapshot: &Value) -> String {
    let mut out = completion.replace("{{", "{{ '{{' }}").replace("{%", "{{ '{%' }}").replace("{#", "{{ '{#' }}");
    let items = snapshot["items"].as_array().cloned().unwrap_or_default();
    let mut references: Vec<(String, String)> = Vec::new();
    let (mut signals, mut changes) = (0, 0);
    for (n, item) in items.iter().enumerate() {
        let id = text(item, "id");
        if id.is_empty() {
            continue;
        }
        let reference = match text(item, "kind") {
            "signal" => {
                signals += 1;
                format!("{{{{ signals[{}].id }}}}", signals - 1)
            }
            "change" => {
                changes += 1;
                format!("{{{{ changes[{}].id }}}}", changes - 1)
            }
            _ => format!("{{{{ snapshot.items[{n}].id }}}}"),
        };
        references.push((format!("\"{id}\""), format!("\"{reference}\"")));
    }
    // Longest first, so no id is replaced inside a longer one.
    references.sort_by_key(|(id, _)| std::cmp::Reverse(id.len()));
    for (id, reference) in references {
        out = out.replace(&id, &reference);
    }
    out
}

/// The corpus script whose labels match a signal of the snapshot.
fn matching_labels(incident: &Incident, snapshot: &Value) -> Option<BTreeMap<String, String>> {
    let signals: Vec<&Value> = snapshot["items"].as_array().into_iter().flatten().filter(|i| i["kind"] == "signal").collect();
    incident
        .scripted
        .iter()
        .find(|s| signals.iter().any(|sig| s.match_labels.iter().all(|(k, v)| sig["data"]["labels"][k].as_str() == Some(v.as_str()))))
        .map(|s| s.match_labels.clone())
}

/// The completions of `reasoner` in one incident's trail: per diagnosis, the one
/// the pipeline acted on (the last attempt), with the refused ones before it.
pub fn collect(incident: &Incident, trail: &[Record], model: &str, date: &str, reasoner: &str) -> Vec<Recorded> {
    let snapshots: BTreeMap<&str, &Value> =
        trail.iter().filter(|r| r.kind == RecordKind::Snapshot).map(|r| (text(&r.payload, "hash"), &r.payload["snapshot"])).collect();
    let mut out: Vec<Recorded> = Vec::new();
    let mut refused: Vec<(String, Vec<String>)> = Vec::new();
    for record in trail.iter().filter(|r| r.kind == RecordKind::Diagnosis && text(&r.payload, "reasoner") == reasoner) {
        let p = &record.payload;
        let Some(snapshot) = snapshots.get(text(p, "snapshot_hash")) else { continue };
        if text(p, "completion").is_empty() {
            continue;
        }
        let completion = templatize(text(p, "completion"), snapshot);
        if text(p, "status") == "refused" {
            let reasons = p["reasons"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
            refused.push((completion.clone(), reasons));
        }
        let Some(match_labels) = matching_labels(incident, snapshot) else { continue };
        let attempts = snapshot["items"].as_array().into_iter().flatten().filter(|i| i["kind"] == "attempt").count();
        // The last attempt of a diagnosis is what the pipeline acted on; an earlier
        // entry for the same snapshot is replaced by it.
        let name = format!("recorded:{model}:{date}:{}#{}", incident.id, text(p, "snapshot_hash").get(..8).unwrap_or_default());
        let entry = Recorded { name: name.clone(), match_labels, completion, refused: std::mem::take(&mut refused), attempts };
        match out.iter_mut().find(|r| r.name == name) {
            Some(previous) => {
                let mut earlier = std::mem::take(&mut previous.refused);
                earlier.extend(entry.refused.iter().cloned());
                *previous = Recorded { refused: earlier, ..entry };
            }
            None => out.push(entry),
        }
    }
    out
}

/// The cassette's text: a header saying what it is, then one `[[response]]` per recording.
pub fn render(model: &str, date: &str, base_url: &str, corpus: &str, recorded: &[Recorded]) -> Result<String, toml::ser::Error> {
    let mut out = String::new();
    let _ = writeln!(out, "# RECORDED cassette: completions the live model `{model}` gave on {date}");
    let _ = writeln!(out, "# (endpoint {base_url}), during `arf eval run {corpus} --reasoner openai --record`.");
    let _ = writeln!(out, "# These are real model answers, not scripted ones. Replay with `arf eval run {corpus} --replay THIS_FILE`,");
    let _ = writeln!(out, "# or point an agent's `scripted_dir` at a directory holding this file.");
    let _ = writeln!(out, "# Context item ids are templates (`{{{{ signals[0].id }}}}`), filled in from the replayed run.\n");
    for r in recorded {
        for (n, (completion, reasons)) in r.refused.iter().enumerate() {
            let _ = writeln!(out, "# {} refused attempt {}: {}", r.name, n + 1, reasons.join("; "));
            let _ = writeln!(out, "#   {}", completion.replace('\n', " "));
        }
        let mut table = toml::Table::new();
        table.insert("name".into(), toml::Value::String(r.name.clone()));
        let labels: toml::Table = r.match_labels.iter().map(|(k, v)| (k.clone(), toml::Value::String(v.clone()))).collect();
        table.insert("match".into(), toml::Value::Table(labels));
        table.insert("completion".into(), toml::Value::String(r.completion.clone()));
        table.insert("attempts".into(), toml::Value::Integer(i64::try_from(r.attempts).unwrap_or(i64::MAX)));
        let mut root = toml::Table::new();
        root.insert("response".into(), toml::Value::Array(vec![toml::Value::Table(table)]));
        out.push_str(&toml::to_string(&root)?);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_become_templates_and_template_syntax_is_escaped() {
        let snapshot = json!({"items": [
            {"id": "tgt-1", "kind": "target"}, {"id": "sig-aa", "kind": "signal"}, {"id": "chg-bb", "kind": "change"}, {"id": "sig-aab", "kind": "signal"}]});
        let completion = r#"{"evidence":["sig-aa","chg-bb","sig-aab","tgt-1"],"root_cause":"{{ boom }}"}"#;
        let t = templatize(completion, &snapshot);
        assert_eq!(
            t,
            r#"{"evidence":["{{ signals[0].id }}","{{ changes[0].id }}","{{ signals[1].id }}","{{ snapshot.items[0].id }}"],"root_cause":"{{ '{{' }} boom }}"}"#
        );
        assert_eq!(file_name("gpt-4o/mini:latest", "2025-01-02"), "recorded-gpt-4o-mini-latest-2025-01-02.toml");
    }

    /// A diagnosis after a refused action is recorded as its own response, bound to
    /// the number of earlier attempts its snapshot showed, so a replay answers each
    /// diagnosis with its own completion.
    #[test]
    fn a_diagnosis_after_an_attempt_is_recorded_with_its_count() {
        let incident: Incident = toml::from_str(
            r#"
class = "failed_deployment"
title = "t"
environment = "production"
detect_min = 1.0
manual_fix_min = 1.0
[[target]]
name = "web-prod"
service = "web"
[truth]
root_cause = "bad_release"
root_cause_matches = ["release"]
fixes = ["rollback_deployment"]
[[signal]]
format = "alertmanager"
payload = "{}"
[[scripted]]
match = { alertname = "A" }
completion = "{}"
"#,
        )
        .unwrap();
        let signal = json!({"id": "sig-1", "kind": "signal", "data": {"labels": {"alertname": "A"}}});
        let record = |seq: u64, kind: RecordKind, payload: Value| Record {
            seq,
            time_ms: 1,
            writer: "agent".into(),
            incident_id: "inc-1".into(),
            kind,
            payload,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let trail = [
            record(1, RecordKind::Snapshot, json!({"hash": "aaaaaaaaaa", "snapshot": {"items": [signal.clone()]}})),
            record(2, RecordKind::Diagnosis, json!({"reasoner": "openai", "snapshot_hash": "aaaaaaaaaa", "status": "grounded", "completion": "{\"first\": \"sig-1\"}"})),
            record(3, RecordKind::Snapshot, json!({"hash": "bbbbbbbbbb", "snapshot": {"items": [{"id": "attempt-1", "kind": "attempt"}, signal]}})),
            record(4, RecordKind::Diagnosis, json!({"reasoner": "openai", "snapshot_hash": "bbbbbbbbbb", "status": "grounded", "completion": "{\"after\": \"attempt-1\"}"})),
        ];
        let recorded = collect(&incident, &trail, "m", "2026-11-27", "openai");
        assert_eq!(recorded.iter().map(|r| r.attempts).collect::<Vec<_>>(), [0, 1]);
        assert!(recorded[1].completion.contains("{{ snapshot.items[0].id }}"), "{}", recorded[1].completion);
        let text = render("m", "2026-11-27", "http://127.0.0.1", "evals/incidents", &recorded).unwrap();
        assert_eq!(text.matches("attempts = 0").count() + text.matches("attempts = 1").count(), 2, "{text}");
    }
}
