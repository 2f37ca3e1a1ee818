//! Verification probes: one check of a target's health, answering passed or not,
//! why, and how long it took.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::execution::ProbeResult;
use crate::plan::RenderedProbe;
use crate::runner::command::{self, CommandSpec};
use crate::runner::http::{self, HttpSpec};

/// The bound on one probe; a probe that takes longer has failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a probe's output is searched.
const PROBE_OUTPUT_LIMIT: usize = 64 * 1024;

/// Runs one probe.
pub async fn run(probe: &RenderedProbe, client: &reqwest::Client) -> ProbeResult {
    match probe {
        RenderedProbe::Http { name, url, expect_status, body_contains, max_latency_ms } => {
            let headers = BTreeMap::new();
            let spec = HttpSpec {
                method: "GET",
                url,
                headers: &headers,
                body: None,
                timeout: PROBE_TIMEOUT,
                body_limit: PROBE_OUTPUT_LIMIT,
            };
            let outcome = http::send(client, &spec).await;
            let latency_ms = outcome.duration_ms;
            let verdict = match outcome.status {
                Err(error) => Err(error),
                Ok(status) => check_http(
                    status,
                    &outcome.body.text,
                    latency_ms,
                    *expect_status,
                    body_contains.as_deref(),
                    *max_latency_ms,
                ),
            };
            result(name, verdict, latency_ms)
        }
        RenderedProbe::Command { name, argv, expect_exit, output_contains } => {
            let spec = CommandSpec {
                argv,
                env_allow: &[],
                cwd: None,
                timeout: PROBE_TIMEOUT,
                output_limit: PROBE_OUTPUT_LIMIT,
            };
            let outcome = command::run(&spec).await;
            let verdict = match outcome.exit_code() {
                None => Err(outcome.describe()),
                Some(code) => check_command(
                    code,
                    &outcome.stdout.text,
                    &outcome.stderr.text,
                    *expect_exit,
                    output_contains.as_deref(),
                ),
            };
            result(name, verdict, outcome.duration_ms)
        }
    }
}

fn result(name: &str, verdict: Result<String, String>, latency_ms: u64) -> ProbeResult {
    let (passed, detail) = match verdict {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    ProbeResult { probe: name.to_owned(), passed, detail, latency_ms }
}

/// Judges an HTTP answer.
pub fn check_http(
    status: u16,
    body: &str,
    latency_ms: u64,
    expect_status: u16,
    body_contains: Option<&str>,
    max_latency_ms: Option<u64>,
) -> Result<String, String> {
    if status != expect_status {
        return Err(format!("status {status}, expected {expect_status}"));
    }
    if let Some(needle) = body_contains
        && !body.contains(needle)
    {
        return Err(format!("status {status}, but the body does not contain `{needle}`"));
    }
    if let Some(max) = max_latency_ms
        && latency_ms > max
    {
        return Err(format!("status {status}, but it took {latency_ms} ms, over the {max} ms limit"));
    }
    Ok(format!("status {status} in {latency_ms} ms"))
}

/// Judges a command's exit status and output (stdout or stderr may hold the text).
pub fn check_command(
    code: i32,
    stdout: &str,
    stderr: &str,
    expect_exit: i32,
    output_contains: Option<&str>,
) -> Result<String, String> {
    if code != expect_exit {
        return Err(format!("exit status {code}, expected {expect_exit}"));
    }
    if let Some(needle) = output_contains
        && !stdout.contains(needle)
        && !stderr.contains(needle)
    {
        return Err(format!("exit status {code}, but the output does not contain `{needle}`"));
    }
    Ok(format!("exit status {code}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_verdicts() {
        // (status, body, latency, expect, contains, max latency) -> passed, detail fragment
        let cases = [
            ((200, "ok", 5, 200, None, None), true, "status 200 in 5 ms"),
            ((503, "ok", 5, 200, None, None), false, "status 503, expected 200"),
            ((200, "degraded", 5, 200, Some("ok"), None), false, "does not contain `ok`"),
            ((200, "all ok", 5, 200, Some("ok"), Some(10)), true, "status 200"),
            ((200, "ok", 50, 200, None, Some(10)), false, "50 ms, over the 10 ms limit"),
            ((204, "", 1, 204, None, None), true, "status 204"),
        ];
        for ((status, body, latency, expect, contains, max), passed, fragment) in cases {
            let verdict = check_http(status, body, latency, expect, contains, max);
            assert_eq!(verdict.is_ok(), passed, "{verdict:?}");
            let text = verdict.unwrap_or_else(|e| e);
            assert!(text.contains(fragment), "{text}");
        }
    }

    #[test]
    fn command_verdicts() {
        let cases = [
            ((0, "", "", 0, None), true, "exit status 0"),
            ((1, "", "", 0, None), false, "exit status 1, expected 0"),
            ((1, "", "", 1, None), true, "exit status 1"),
            ((0, "state: ready", "", 0, Some("ready")), true, "exit status 0"),
            ((0, "", "ready", 0, Some("ready")), true, "exit status 0"),
            ((0, "state: starting", "", 0, Some("ready")), false, "does not contain `ready`"),
        ];
        for ((code, stdout, stderr, expect, contains), passed, fragment) in cases {
            let verdict = check_command(code, stdout, stderr, expect, contains);
            assert_eq!(verdict.is_ok(), passed, "{verdict:?}");
            let text = verdict.unwrap_or_else(|e| e);
            assert!(text.contains(fragment), "{text}");
        }
    }
}
