//! The payloads of the audit records the executor writes, built from what ran.
//!
//! Every payload names its `decision_id`. Output kept in the log is cut to
//! [`LOGGED_OUTPUT_LIMIT`] bytes per stream, since a record is bounded and a
//! pathway may have many steps; the byte counts say how much there was.
//! Header values that look like credentials are never logged.

use serde_json::{Value, json};

use arf_core::decision::DecisionBody;

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

/// `execution_started`: the intent, written before the first step runs.
pub fn execution_started(body: &DecisionBody, decision_seq: u64, plan: &Plan) -> Value {
    json!({
        "decision_id": body.decision_id,
        "decision_seq": decision_seq,
        "pathway": body.pathway,
        "pathway_digest": body.pathway_digest,
        "target": body.target,
        "parameters": body.parameters,
        "timeout_secs": plan.timeout_secs,
        "steps": plan.action.iter().map(step).collect::<Vec<_>>(),
    })
}

/// `execution_finished`: what the action's (or the rollback's) steps did.
pub fn execution_finished(body: &DecisionBody, phase: StepsPhase, report: &StepsReport) -> Value {
    json!({
        "decision_id": body.decision_id,
        "phase": phase.as_str(),
        "ok": report.ok,
        "summary": report.summary(),
        "steps": report.steps.iter().map(step_result).collect::<Vec<_>>(),
        "skipped_steps": report.skipped,
    })
}

/// `verification`: the verdict of the probes over the window.
pub fn verification(body: &DecisionBody, phase: StepsPhase, report: &VerificationReport) -> Value {
    json!({
        "decision_id": body.decision_id,
        "phase": phase.as_str(),
        "passed": report.passed,
        "detail": report.detail,
        "samples": report.samples,
        "probes": report.probes,
        "failed_samples": report.failed_samples,
        "last_sample": report.last_sample,
    })
}

/// `rollback`: the intent to roll back, written before the first rollback step runs.
pub fn rollback(body: &DecisionBody, reason: &str, plan: &Plan) -> Value {
    json!({
        "decision_id": body.decision_id,
        "reason": reason,
        "timeout_secs": plan.timeout_secs,
        "steps": plan.rollback.iter().map(step).collect::<Vec<_>>(),
    })
}

/// `outcome` after a restart: how an execution cut off by a crash was settled.
pub fn recovered_outcome(body: &DecisionBody, outcome: Outcome, detail: &str, interrupted_in: &str) -> Value {
    let mut record = self::outcome(body, outcome, detail);
    record["recovered"] = json!(true);
    record["interrupted_in"] = json!(interrupted_in);
    record
}

/// `outcome`: how the execution ended.
pub fn outcome(body: &DecisionBody, outcome: Outcome, detail: &str) -> Value {
    json!({
        "decision_id": body.decision_id,
        "pathway": body.pathway,
        "target": body.target,
        "outcome": outcome.as_str(),
        "detail": detail,
    })
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
