//! Verification probes: one check of a target's health, answering passed or not,
//! why, and how long it took.

use std::collections::BTreeMap;
use std::time::Duration;

use arf_core::catalog::Comparison;

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
                env: &[],
                cwd: None,
                timeout: PROBE_TIMEOUT,
                output_limit: PROBE_OUTPUT_LIMIT,
                // Probes only look; one left running by a crash changes nothing.
                tracker: None,
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
        RenderedProbe::Prometheus { name, url, query, comparison, threshold, pass_if_empty } => {
            let started = tokio::time::Instant::now();
            let verdict = prometheus_query(client, url, query).await.and_then(|answer| {
                check_prometheus(&answer, query, *comparison, *threshold, *pass_if_empty)
            });
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            result(name, verdict, latency_ms)
        }
    }
}

/// Sends a PromQL instant query and returns the JSON answer.
async fn prometheus_query(client: &reqwest::Client, base: &str, query: &str) -> Result<serde_json::Value, String> {
    let endpoint = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let response = client
        .get(&endpoint)
        .query(&[("query", query)])
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("cannot query Prometheus at `{endpoint}`: {e}"))?;
    let status = response.status().as_u16();
    let body = http::read_bounded(response, PROBE_OUTPUT_LIMIT).await;
    let answer: serde_json::Value = serde_json::from_str(&body.text)
        .map_err(|e| format!("Prometheus answered {status} with a body that is not JSON: {e}"))?;
    if answer.get("status").and_then(serde_json::Value::as_str) != Some("success") {
        let error = answer.get("error").and_then(serde_json::Value::as_str).unwrap_or("no error given");
        return Err(format!("Prometheus refused the query (status {status}): {error}"));
    }
    Ok(answer)
}

/// Judges an instant query's answer: every sample must satisfy the comparison.
pub fn check_prometheus(
    answer: &serde_json::Value,
    query: &str,
    comparison: Comparison,
    threshold: f64,
    pass_if_empty: bool,
) -> Result<String, String> {
    let data = answer.get("data").ok_or("the answer has no `data`")?;
    let value_of = |pair: &serde_json::Value| -> Option<f64> { pair.get(1)?.as_str()?.parse::<f64>().ok() };
    let samples: Vec<(String, f64)> = match data.get("resultType").and_then(serde_json::Value::as_str) {
        Some("vector") => data
            .get("result")
            .and_then(serde_json::Value::as_array)
            .ok_or("the vector answer has no `result`")?
            .iter()
            .map(|sample| {
                let labels = sample.get("metric").map(serde_json::Value::to_string).unwrap_or_default();
                value_of(sample.get("value").unwrap_or(&serde_json::Value::Null))
                    .map(|v| (labels, v))
                    .ok_or_else(|| format!("a sample of `{query}` has no numeric value"))
            })
            .collect::<Result<_, String>>()?,
        Some("scalar") => {
            vec![("scalar".to_owned(), value_of(data.get("result").unwrap_or(&serde_json::Value::Null)).ok_or("the scalar answer has no numeric value")?)]
        }
        other => return Err(format!("`{query}` answered a {}, not an instant vector or scalar", other.unwrap_or("nothing"))),
    };
    let op = comparison.as_str();
    if samples.is_empty() {
        return if pass_if_empty {
            Ok(format!("`{query}` matched nothing, which passes"))
        } else {
            Err(format!("`{query}` matched nothing, so nothing shows `{op} {threshold}`"))
        };
    }
    match samples.iter().find(|(_, value)| !comparison.holds(*value, threshold)) {
        Some((labels, value)) => Err(format!("`{query}` is {value} for {labels}, not {op} {threshold}")),
        None => {
            let values: Vec<String> = samples.iter().map(|(_, v)| v.to_string()).collect();
            Ok(format!("`{query}` = {} {op} {threshold}", values.join(", ")))
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
    fn prometheus_verdicts() {
        use serde_json::json;
        let vector = |values: &[&str]| {
            json!({"status": "success", "data": {"resultType": "vector", "result":
                values.iter().map(|v| json!({"metric": {"job": "web"}, "value": [1.0, v]})).collect::<Vec<_>>()}})
        };
        let cases = [
            (vector(&["0.01"]), Comparison::Less, 0.05, false, true, "= 0.01 < 0.05"),
            (vector(&["0.01", "0.2"]), Comparison::Less, 0.05, false, false, "is 0.2"),
            (vector(&[]), Comparison::Less, 0.05, false, false, "matched nothing"),
            (vector(&[]), Comparison::Less, 0.05, true, true, "which passes"),
            (vector(&["NaN"]), Comparison::GreaterOrEqual, 1.0, false, false, "is NaN"),
            (json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}), Comparison::Equal, 3.0, false, true, "= 3"),
            (json!({"status": "success", "data": {"resultType": "matrix", "result": []}}), Comparison::Equal, 3.0, false, false, "not an instant vector"),
        ];
        for (answer, comparison, threshold, pass_if_empty, passed, fragment) in cases {
            let verdict = check_prometheus(&answer, "q", comparison, threshold, pass_if_empty);
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
