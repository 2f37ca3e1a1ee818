//! The payloads of the audit records the executor writes, built from what ran.
//!
//! Every payload names its `decision_id`. Output kept in the log is cut to
//! [`LOGGED_OUTPUT_LIMIT`] bytes per stream, since a record is bounded and a
//! pathway may have many steps; the byte counts say how much there was.
//! Header values that look like credentials are never logged.

use serde_json::{Value, json};

use arf_core::decision::DecisionBody;
use arf_core::records::{ExecutionFinishedRecord, ExecutionStartedRecord, OutcomeRecord, PrecheckRecord, RollbackRecord, VerificationRecord};

use crate::execution::Outcome;
use crate::plan::{Plan, RenderedStep};
use crate::runner::command::Captured;
use crate::runner::{StepReport, StepResult, StepsReport};
use crate::verify::VerificationReport;

/// How much of each output stream goes into the log.
pub const LOGGED_OUTPUT_LIMIT: usize = 8 * 1024;

/// Which steps a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepsPhase {
    Action,
    Rollback,
}

impl StepsPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Rollback => "rollback",
        }
    }
}

/// `execution_started`: the intent, written before the first step runs, with what
/// the pathway's precheck answered, when it has one.
pub fn execution_started(body: &DecisionBody, decision_seq: u64, plan: &Plan, precheck: Option<&StepsReport>) -> Value {
    arf_core::records::encode(&ExecutionStartedRecord {
        decision_id: body.decision_id.clone(),
        decision_seq,
        pathway: body.pathway.clone(),
        pathway_digest: body.pathway_digest.clone(),
        target: body.target.clone(),
        parameters: body.parameters.clone(),
        timeout_secs: plan.timeout_secs,
        steps: plan.action.iter().map(step).collect(),
        precheck: precheck.map(|report| precheck_record(plan, report)),
    })
}

/// `outcome` `refused`: the precheck failed, so the action never started.
pub fn refused(body: &DecisionBody, detail: &str, plan: &Plan, precheck: &StepsReport) -> Value {
    let mut record = outcome_record(body, Outcome::Refused, detail);
    record.precheck = Some(precheck_record(plan, precheck));
    arf_core::records::encode(&record)
}

fn precheck_record(plan: &Plan, report: &StepsReport) -> PrecheckRecord {
    PrecheckRecord {
        planned: plan.precheck.iter().map(step).collect(),
        ok: report.ok,
        summary: report.summary(),
        steps: report.steps.iter().map(step_result).collect(),
        skipped_steps: u64::try_from(report.skipped).unwrap_or(u64::MAX),
    }
}

/// `execution_finished`: what the action's (or the rollback's) steps did.
pub fn execution_finished(body: &DecisionBody, phase: StepsPhase, report: &StepsReport) -> Value {
    arf_core::records::encode(&ExecutionFinishedRecord {
        decision_id: body.decision_id.clone(),
        phase: phase.as_str().to_owned(),
        ok: report.ok,
        summary: report.summary(),
        steps: report.steps.iter().map(step_result).collect(),
        skipped_steps: u64::try_from(report.skipped).unwrap_or(u64::MAX),
    })
}

/// `verification`: the verdict of the probes over the window.
pub fn verification(body: &DecisionBody, phase: StepsPhase, report: &VerificationReport) -> Value {
    arf_core::records::encode(&verification_record(body, phase, report))
}

/// `verification` by a restarted executor, with what the crashed one left running.
pub fn recovered_verification(body: &DecisionBody, report: &VerificationReport, leftovers: Vec<Value>) -> Value {
    let mut record = verification_record(body, StepsPhase::Action, report);
    record.recovered = true;
    record.leftovers = leftovers;
    arf_core::records::encode(&record)
}

fn verification_record(body: &DecisionBody, phase: StepsPhase, report: &VerificationReport) -> VerificationRecord {
    VerificationRecord {
        decision_id: body.decision_id.clone(),
        phase: phase.as_str().to_owned(),
        passed: report.passed,
        detail: report.detail.clone(),
        samples: u64::from(report.samples),
        probes: arf_core::records::encode(&report.probes),
        failed_samples: report.failed_samples.iter().map(arf_core::records::encode).collect(),
        last_sample: report.last_sample.as_ref().map(arf_core::records::encode),
        recovered: false,
        leftovers: Vec::new(),
    }
}

/// `rollback`: the intent to roll back, written before the first rollback step runs.
pub fn rollback(body: &DecisionBody, reason: &str, plan: &Plan) -> Value {
    arf_core::records::encode(&RollbackRecord {
        decision_id: body.decision_id.clone(),
        reason: reason.to_owned(),
        timeout_secs: plan.timeout_secs,
        steps: plan.rollback.iter().map(step).collect(),
    })
}

/// `outcome` after a restart: how an execution cut off by a crash was settled.
pub fn recovered_outcome(body: &DecisionBody, outcome: Outcome, detail: &str, interrupted_in: &str, leftovers: Vec<Value>) -> Value {
    let mut record = outcome_record(body, outcome, detail);
    record.recovered = true;
    record.interrupted_in = Some(interrupted_in.to_owned());
    record.leftovers = leftovers;
    arf_core::records::encode(&record)
}

/// `outcome`: how the execution ended.
pub fn outcome(body: &DecisionBody, outcome: Outcome, detail: &str) -> Value {
    arf_core::records::encode(&outcome_record(body, outcome, detail))
}

fn outcome_record(body: &DecisionBody, outcome: Outcome, detail: &str) -> OutcomeRecord {
    OutcomeRecord {
        decision_id: body.decision_id.clone(),
        pathway: body.pathway.clone(),
        target: body.target.clone(),
        outcome: outcome.as_str().to_owned(),
        detail: detail.to_owned(),
        recovered: false,
        interrupted_in: None,
        leftovers: Vec::new(),
        precheck: None,
    }
}

/// A rendered step as logged: everything, but credential-like header values.
pub fn step(step: &RenderedStep) -> Value {
    match step {
        RenderedStep::Command { .. } | RenderedStep::Git { .. } => serde_json::to_value(step).unwrap_or(Value::Null),
        RenderedStep::Http { method, url, headers, body, expect_status, timeout_secs } => {
            let headers: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(name, value)| {
                    let shown = if is_secret_header(name) { "[redacted]" } else { value.as_str() };
                    (name.clone(), Value::from(shown))
                })
                .collect();
            json!({
                "kind": "http",
                "method": method,
                "url": url,
                "headers": headers,
                "body": body,
                "expect_status": expect_status,
                "timeout_secs": timeout_secs,
            })
        }
    }
}

/// Whether a header's value is likely a credential.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "authorization" | "proxy-authorization" | "cookie")
        || ["token", "secret", "key", "password", "auth"].iter().any(|word| name.contains(word))
}

fn step_result(result: &StepResult) -> Value {
    let report = match &result.report {
        StepReport::Command(outcome) => json!({
            "kind": "command",
            "exit": outcome.exit,
            "duration_ms": outcome.duration_ms,
            "stdout": captured(&outcome.stdout),
            "stderr": captured(&outcome.stderr),
        }),
        StepReport::Http(outcome) => json!({
            "kind": "http",
            "status": outcome.status.as_ref().ok(),
            "error": outcome.status.as_ref().err(),
            "duration_ms": outcome.duration_ms,
            "body": captured(&outcome.body),
        }),
        StepReport::Git(outcome) => json!({
            "kind": "git",
            "commit": outcome.commit,
            "detail": outcome.detail,
            "commands": outcome.log,
        }),
        StepReport::NotStarted => json!({ "kind": "not_started" }),
    };
    json!({ "index": result.index, "ok": result.ok, "detail": result.detail, "report": report })
}

/// Output as logged: the first [`LOGGED_OUTPUT_LIMIT`] bytes, and the counts.
fn captured(captured: &Captured) -> Value {
    let text = cut(&captured.text, LOGGED_OUTPUT_LIMIT);
    let truncated = captured.truncated || text.len() < captured.text.len();
    json!({ "text": text, "total_bytes": captured.total_bytes, "truncated": truncated })
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a character boundary.
fn cut(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_headers() {
        let cases = [
            ("Authorization", true),
            ("x-api-key", true),
            ("X-Auth-Token", true),
            ("cookie", true),
            ("content-type", false),
            ("x-decision", false),
        ];
        for (name, secret) in cases {
            assert_eq!(is_secret_header(name), secret, "{name}");
        }
    }

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }
}
