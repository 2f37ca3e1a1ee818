//! Runs a pathway's rendered steps in order, stopping at the first failure, all
//! within one deadline.

pub mod command;
pub mod edit;
pub mod git;
pub mod http;
pub mod processes;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::plan::RenderedStep;
use command::{CommandOutcome, CommandSpec};
use http::{HttpOutcome, HttpSpec};
use processes::Tracker;

/// How much of an HTTP response body is kept.
pub const RESPONSE_LIMIT: usize = 64 * 1024;

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepResult {
    pub index: usize,
    pub ok: bool,
    pub detail: String,
    pub report: StepReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepReport {
    Command(CommandOutcome),
    Http(HttpOutcome),
    Git(git::GitOutcome),
    /// The deadline passed before the step could start.
    NotStarted,
}

/// What a list of steps did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepsReport {
    /// Every step ran and succeeded.
    pub ok: bool,
    pub steps: Vec<StepResult>,
    /// Steps left out after a failure.
    pub skipped: usize,
}

impl StepsReport {
    /// Scrubs every secret value out of what the steps said (details, output,
    /// response bodies, git logs), so that nothing downstream (tracing, the audit
    /// log, the caller) can repeat a secret a failing step printed.
    pub fn redact(&mut self, secrets: &[String]) {
        if secrets.is_empty() {
            return;
        }
        let scrub = |text: &mut String| *text = crate::secrets::redact_text(text, secrets);
        for step in &mut self.steps {
            scrub(&mut step.detail);
            match &mut step.report {
                StepReport::Command(outcome) => {
                    scrub(&mut outcome.stdout.text);
                    scrub(&mut outcome.stderr.text);
                    if let command::Exit::NotStarted { error } | command::Exit::Lost { error } = &mut outcome.exit {
                        scrub(error);
                    }
                }
                StepReport::Http(outcome) => {
                    scrub(&mut outcome.body.text);
                    if let Err(error) = &mut outcome.status {
                        scrub(error);
                    }
                }
                StepReport::Git(outcome) => {
                    scrub(&mut outcome.detail);
                    outcome.log.iter_mut().for_each(scrub);
                }
                StepReport::NotStarted => {}
            }
        }
    }

    /// Whether the steps failed without changing anything: the first step failed,
    /// and certainly before it acted (a program that could not start, a request
    /// that never reached its server, a git step that refused or failed its
    /// checks, a step the deadline stopped from starting).
    pub fn changed_nothing(&self) -> bool {
        match self.steps.first() {
            Some(first) if !first.ok && self.steps.len() == 1 => match &first.report {
                StepReport::Command(outcome) => matches!(outcome.exit, command::Exit::NotStarted { .. }),
                StepReport::Http(outcome) => !outcome.sent,
                StepReport::Git(outcome) => !outcome.changed,
                StepReport::NotStarted => true,
            },
            _ => false,
        }
    }

    /// Whether the steps were refused by an answer: the failing step reached what
    /// it asked and was told no (an HTTP status other than the expected one and not
    /// a server error, a command that exited with a non-zero status). A step that
    /// was never sent or started, timed out, or met a server error got no answer.
    pub fn answered_no(&self) -> bool {
        match self.steps.iter().find(|s| !s.ok).map(|s| &s.report) {
            Some(StepReport::Http(outcome)) => matches!(outcome.status, Ok(status) if status < 500),
            Some(StepReport::Command(outcome)) => matches!(outcome.exit, command::Exit::Code { code } if code != 0),
            Some(StepReport::Git(_) | StepReport::NotStarted) | None => false,
        }
    }

    /// One line on how it went: the failing step's detail, or a count.
    pub fn summary(&self) -> String {
        match self.steps.iter().find(|s| !s.ok) {
            Some(failed) => format!("step {} failed: {}", failed.index, failed.detail),
            None => format!("{} step(s) succeeded", self.steps.len()),
        }
    }
}

/// Runs `steps` in order until one fails or `deadline` passes.
/// Commands are recorded with `tracker` while they run (see [`processes`]).
pub async fn run_steps(
    steps: &[RenderedStep],
    deadline: Instant,
    client: &reqwest::Client,
    tracker: Option<&Tracker>,
) -> StepsReport {
    let go_on = || std::future::ready(Ok::<(), std::convert::Infallible>(()));
    match run_steps_confirmed(steps, deadline, client, tracker, go_on).await {
        Ok(report) => report,
        Err(never) => match never {},
    }
}

/// [`run_steps`], asking `go_on` before each step after the first: an error stops
/// the steps there and is returned.
pub async fn run_steps_confirmed<E, F, Fut>(
    steps: &[RenderedStep],
    deadline: Instant,
    client: &reqwest::Client,
    tracker: Option<&Tracker>,
    mut go_on: F,
) -> Result<StepsReport, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let mut results = Vec::with_capacity(steps.len());
    for (index, step) in steps.iter().enumerate() {
        if index > 0 {
            go_on().await?;
        }
        let result = run_step(index, step, deadline, client, tracker).await;
        let ok = result.ok;
        results.push(result);
        if !ok {
            break;
        }
    }
    let ok = results.len() == steps.len() && results.iter().all(|r| r.ok);
    let skipped = steps.len() - results.len();
    Ok(StepsReport { ok, steps: results, skipped })
}

/// Runs one step, bounded by its own timeout and by what is left until `deadline`.
pub async fn run_step(
    index: usize,
    step: &RenderedStep,
    deadline: Instant,
    client: &reqwest::Client,
    tracker: Option<&Tracker>,
) -> StepResult {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return StepResult {
            index,
            ok: false,
            detail: "the pathway's timeout passed before this step started".to_owned(),
            report: StepReport::NotStarted,
        };
    }
    match step {
        RenderedStep::Command { argv, env_allow, env, cwd, timeout_secs } => {
            let spec = CommandSpec {
                argv,
                env_allow,
                env,
                cwd: cwd.as_deref(),
                timeout: Duration::from_secs(*timeout_secs).min(remaining),
                output_limit: command::OUTPUT_LIMIT,
                tracker,
            };
            let outcome = command::run(&spec).await;
            let ok = outcome.exit_code() == Some(0);
            let program = argv.first().map_or("", String::as_str);
            let mut detail = format!("`{program}` {}", outcome.describe());
            // The last line of stderr usually says why a command failed.
            if !ok && let Some(line) = outcome.stderr.text.lines().rev().find(|l| !l.trim().is_empty()) {
                detail.push_str(": ");
                detail.push_str(line.trim());
            }
            StepResult { index, ok, detail, report: StepReport::Command(outcome) }
        }
        RenderedStep::Http { method, url, headers, body, expect_status, timeout_secs } => {
            let spec = HttpSpec {
                method,
                url,
                headers,
                body: body.as_ref(),
                timeout: Duration::from_secs(*timeout_secs).min(remaining),
                body_limit: RESPONSE_LIMIT,
            };
            let outcome = http::send(client, &spec).await;
            let (ok, detail) = match &outcome.status {
                Ok(status) if status == expect_status => (true, format!("`{method} {url}` answered {status}")),
                Ok(status) => {
                    let mut detail = format!("`{method} {url}` answered {status}, expected {expect_status}");
                    // The answer's first line usually says why (a dry run's refusal, an
                    // API's error). The request's own header values (a token the server
                    // echoes) are hidden before it is cut to a bound that keeps a page
                    // of HTML out of the detail.
                    if let Some(line) = answer_line(&outcome.body.text) {
                        let mut line: String = line.trim().chars().filter(|c| !c.is_control()).collect();
                        for value in headers.values().filter(|v| v.len() >= 8) {
                            line = line.replace(value.as_str(), "[redacted]");
                        }
                        detail.push_str(": ");
                        detail.extend(line.chars().take(300));
                    }
                    (false, detail)
                }
                Err(error) => (false, error.clone()),
            };
            StepResult { index, ok, detail, report: StepReport::Http(outcome) }
        }
        RenderedStep::Git { git: spec, timeout_secs } => {
            let deadline = deadline.min(Instant::now() + Duration::from_secs(*timeout_secs));
            let outcome = git::run(spec, deadline, tracker).await;
            StepResult { index, ok: outcome.ok, detail: format!("git: {}", outcome.detail), report: StepReport::Git(outcome) }
        }
    }
}

/// What an HTTP answer says about why: the message of a JSON error body (the
/// `message` of a Kubernetes `Status`, of most cloud and Git hosting APIs, or
/// `error`, `detail`, `error.message`), else the body's first non-empty line.
fn answer_line(body: &str) -> Option<String> {
    if let Ok(Value::Object(answer)) = serde_json::from_str::<Value>(body) {
        let nested = answer.get("error").and_then(|e| e.get("message")).and_then(Value::as_str);
        let message = ["message", "Message", "error", "detail"].iter().find_map(|key| answer.get(*key).and_then(Value::as_str)).or(nested);
        if let Some(message) = message.filter(|m| !m.trim().is_empty()) {
            return Some(message.to_owned());
        }
    }
    body.lines().find(|l| !l.trim().is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_says_why_in_its_error_message_or_first_line() {
        let kubernetes = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"deployments.apps \"web\" not found","reason":"NotFound","code":404}"#;
        assert_eq!(answer_line(kubernetes).as_deref(), Some("deployments.apps \"web\" not found"));
        assert_eq!(answer_line(r#"{"error":{"code":"NoSuchEntity","message":"policy not attached"}}"#).as_deref(), Some("policy not attached"));
        assert_eq!(answer_line(r#"{"error":"already at 3 replicas"}"#).as_deref(), Some("already at 3 replicas"));
        assert_eq!(answer_line("\n  plain words\nmore").as_deref(), Some("  plain words"));
        assert_eq!(answer_line(r#"{"ok":false}"#).as_deref(), Some(r#"{"ok":false}"#), "no message: the line as it is");
        assert_eq!(answer_line(""), None);
    }

    #[tokio::test]
    async fn a_report_is_scrubbed_of_secrets_a_failing_step_printed() {
        let step = RenderedStep::Command {
            argv: vec!["sh".into(), "-c".into(), "echo token=$T; echo \"denied for $T\" >&2; exit 1".into()],
            env_allow: vec![],
            env: vec![("T".into(), "s3cr3t-value".into())],
            cwd: None,
            timeout_secs: 10,
        };
        let client = reqwest::Client::new();
        let mut report = run_steps(&[step], Instant::now() + Duration::from_secs(10), &client, None).await;
        assert!(report.summary().contains("s3cr3t-value"), "the step must print the secret for this test to mean anything");
        report.redact(&["s3cr3t-value".to_owned()]);
        let everything = serde_json::to_string(&report).unwrap() + &report.summary();
        assert!(!everything.contains("s3cr3t-value"), "{everything}");
        assert!(report.summary().contains("denied for [redacted]"), "{}", report.summary());
    }
}
