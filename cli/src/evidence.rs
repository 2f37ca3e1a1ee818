//! `arf audit export` and `arf audit verify-bundle`: evidence for auditors, one
//! incident at a time, verifiable offline, and the change-control record read from it.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use arf_audit::bundle::{self, Bundle, Proven};
use arf_audit::checkpoint::NoteVerifier;
use arf_audit::{Record, RecordKind};
use arf_core::text::printable;

use crate::audit::BundleFormat;
use crate::client::Endpoints;
use crate::exit;

pub async fn export(endpoints: &Endpoints, incident: &str, out: &Path, verifier: &NoteVerifier, wait_secs: u64) -> Result<ExitCode> {
    let log = endpoints.audit()?;
    let records = log.read_incident(incident).await?;
    let last = records.last().map(|r| r.seq).with_context(|| format!("the log holds no record of incident `{incident}`"))?;
    // The log signs a checkpoint every few seconds while it grows; wait for one that covers the incident.
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    let (note, checkpoint) = loop {
        if let Some(note) = log.checkpoint().await? {
            let checkpoint = verifier.verify(&note).context("the log's checkpoint does not verify")?;
            if checkpoint.size >= last {
                break (note, checkpoint);
            }
        }
        if Instant::now() >= deadline {
            bail!("no signed checkpoint covers record {last} yet (waited {wait_secs} s); retry, or raise `--wait-secs`");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut proven = Vec::with_capacity(records.len());
    for record in records {
        let proof = log.inclusion_proof(record.seq, checkpoint.size).await?;
        proven.push(Proven { record, proof: proof.iter().map(hex::encode).collect() });
    }
    let bundle = Bundle { format: bundle::FORMAT.to_owned(), incident_id: incident.to_owned(), checkpoint: note, records: proven };
    let bytes = bundle.encode()?;
    // Nothing leaves that would not verify.
    bundle::verify(&bytes, verifier).context("the bundle the log's answers make does not verify")?;
    std::fs::write(out, &bytes).with_context(|| format!("cannot write `{}`", out.display()))?;
    say!(
        "wrote {}: {} records of incident {incident}, proven in the signed tree of {} records (root {})",
        out.display(),
        bundle.records.len(),
        checkpoint.size,
        checkpoint.root_hex()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn verify_bundle(file: &Path, verifier: &NoteVerifier, format: BundleFormat) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let verified = match bundle::verify(&bytes, verifier) {
        Ok(verified) => verified,
        Err(error) => {
            warn_user!("bundle does not verify: {error}");
            return Ok(ExitCode::from(exit::FAILURE));
        }
    };
    let (bundle, checkpoint) = (&verified.bundle, &verified.checkpoint);
    match format {
        BundleFormat::Json => say!(
            "{}",
            json!({"verified": true, "incident_id": bundle.incident_id, "records": bundle.records.len(),
                   "checkpoint": {"origin": checkpoint.origin, "size": checkpoint.size, "root_hash": checkpoint.root_hex()}})
        ),
        BundleFormat::Text => say!(
            "bundle verified: {} records of incident {}, each proven in the tree of {} records signed by `{}` (root {})",
            bundle.records.len(),
            printable(&bundle.incident_id, false),
            checkpoint.size,
            printable(&checkpoint.origin, false),
            checkpoint.root_hex()
        ),
        BundleFormat::ChangeRecord => print!("{}", printable(&change_record(bundle, &verified.checkpoint), true)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Text from the log, made safe for a terminal and for Markdown: no control or
/// bidi characters, no line breaks, and Markdown's active characters escaped.
fn md(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => "—".to_owned(),
        other => other.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    for c in printable(&text, false).chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '!') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Text from the log for inside a code span: printable, and unable to close it.
fn code(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => "—".to_owned(),
        other => other.to_string(),
    };
    printable(&text, false).replace('`', "'")
}

fn time(ms: i64) -> String {
    arf_core::time::format_ms(ms)
}

fn first<'a>(records: &'a [&'a Record], kind: RecordKind, test: impl Fn(&Value) -> bool) -> Option<&'a Record> {
    records.iter().copied().find(|r| r.kind == kind && test(&r.payload))
}

/// A change-control record (what changed, why, who proposed, who approved, what ran,
/// how it was verified, the rollback), every line backed by a record in the bundle.
pub fn change_record(bundle: &Bundle, checkpoint: &arf_audit::checkpoint::Checkpoint) -> String {
    let records: Vec<&Record> = bundle.records.iter().map(|p| &p.record).collect();
    let cite = |r: &Record| format!("(record {}, `{}`)", r.seq, &r.hash[..16]);
    let mut out = String::new();
    let _ = writeln!(out, "# Change record: incident {}\n", md(&Value::String(bundle.incident_id.clone())));
    let _ = writeln!(
        out,
        "Evidence: {} records, each with an inclusion proof in the tree of {} records signed by `{}`, root `{}`. Verified offline with `arf audit verify-bundle`.\n",
        records.len(),
        checkpoint.size,
        code(&Value::String(checkpoint.origin.clone())),
        checkpoint.root_hex()
    );

    let _ = writeln!(out, "## Trigger\n");
    if let Some(r) = first(&records, RecordKind::Incident, |p| p["event"] == "opened") {
        let p = &r.payload;
        let _ = writeln!(out, "- {}: `{}` in `{}` opened: {} {}", time(r.time_ms), code(&p["service"]), code(&p["environment"]), md(&p["title"]), cite(r));
    }
    let signals = records.iter().filter(|r| r.kind == RecordKind::Signal).count();
    let _ = writeln!(out, "- {signals} signals logged by `agent`\n");

    let decisions: Vec<&&Record> = records.iter().filter(|r| r.kind == RecordKind::Decision && r.payload.get("route").is_some() && r.payload.get("risk").is_some()).collect();
    let diagnosis = first(&records, RecordKind::Diagnosis, |_| true);
    let _ = writeln!(out, "## Proposed by\n");
    match diagnosis {
        Some(r) => {
            let p = &r.payload;
            let _ = writeln!(out, "- reasoner `{}`, model `{}`, prompt `{}` (hash `{}`): {} {}", code(&p["reasoner"]), code(&p["model"]), code(&p["prompt_id"]), code(&p["prompt_hash"]), md(&p["status"]), cite(r));
            if let Some(h) = p.pointer("/proposal/hypothesis") {
                let _ = writeln!(out, "- root cause (model text): {}", md(&h["root_cause"]));
                let _ = writeln!(out, "- confidence stated by the model: {}", md(&h["confidence"]));
            }
            if let Some(reasons) = p["reasons"].as_array() {
                for reason in reasons {
                    let _ = writeln!(out, "- refused: {}", md(reason));
                }
            }
        }
        None => {
            let _ = writeln!(out, "- no diagnosis in the bundle");
        }
    }
    let _ = writeln!(out);

    for decision in decisions {
        let p = &decision.payload;
        let id = p["decision_id"].as_str().unwrap_or_default();
        let _ = writeln!(out, "## Decision {}\n", md(&p["decision_id"]));
        let _ = writeln!(out, "- change: pathway `{}` on target `{}` with parameters `{}`", code(&p["remediation"]["pathway"]), code(&p["remediation"]["target"]), code(&p["remediation"]["parameters"]));
        let _ = writeln!(out, "- decided by `{}` at {}: route `{}`, risk {} ({}) {}", code(&Value::String(decision.writer.clone())), time(decision.time_ms), code(&p["route"]), md(&p["risk"]["score"]), md(&p["risk"]["band"]), cite(decision));
        if let Some(rules) = p.pointer("/policy/rules_fired").and_then(Value::as_array) {
            let names: Vec<String> = rules.iter().map(md).collect();
            let _ = writeln!(out, "- policy rules fired: {}", if names.is_empty() { "none".to_owned() } else { names.join(", ") });
        }
        let of_this: Vec<&Record> = records.iter().copied().filter(|r| r.payload["decision_id"] == id).collect();
        let approvals: Vec<&Record> = of_this.iter().copied().filter(|r| r.kind == RecordKind::Approval).collect();
        if approvals.is_empty() {
            let _ = writeln!(out, "- approvals: none recorded");
        }
        for a in approvals {
            let ap = &a.payload;
            let note = ap.get("comment").or_else(|| ap.get("reason")).cloned().unwrap_or(Value::Null);
            let _ = writeln!(out, "- {} by `{}` ({}) at {}: {} {}", md(&ap["verdict"]), code(&ap["identity"]), md(&ap["role"]), time(a.time_ms), md(&note), cite(a));
        }
        for r in of_this {
            let rp = &r.payload;
            match r.kind {
                RecordKind::Decision if rp["state"] == "authorized" => {
                    let _ = writeln!(out, "- authorized and signed, envelope `{}` {}", code(&rp["envelope_sha256"]), cite(r));
                }
                RecordKind::ExecutionStarted => {
                    let _ = writeln!(out, "- execution started by `{}` at {} {}", code(&Value::String(r.writer.clone())), time(r.time_ms), cite(r));
                }
                RecordKind::ExecutionFinished => {
                    let _ = writeln!(out, "- action {} ({} phase) {}", if rp["ok"] == true { "succeeded" } else { "failed" }, md(&rp["phase"]), cite(r));
                }
                RecordKind::Verification => {
                    let _ = writeln!(out, "- verification {}: {} {}", if rp["passed"] == true { "passed" } else { "failed" }, md(&rp["detail"]), cite(r));
                }
                RecordKind::Rollback => {
                    let _ = writeln!(out, "- rollback: {} {}", md(&rp["detail"]), cite(r));
                }
                RecordKind::Outcome => {
                    let _ = writeln!(out, "- outcome `{}` at {}: {} {}", code(&rp["outcome"]), time(r.time_ms), md(&rp["detail"]), cite(r));
                }
                _ => {}
            }
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## Records\n\n| seq | time | writer | kind | hash |\n| --- | --- | --- | --- | --- |");
    for r in &records {
        let _ = writeln!(out, "| {} | {} | {} | {} | `{}` |", r.seq, time(r.time_ms), md(&Value::String(r.writer.clone())), r.kind.as_str(), r.hash);
    }
    out
}
