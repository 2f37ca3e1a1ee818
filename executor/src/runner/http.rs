//! Sends one HTTP request to a platform API and reads a bounded response.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::command::Captured;

/// What to send; the URL and headers are already rendered and checked.
#[derive(Debug, Clone)]
pub struct HttpSpec<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub body: Option<&'a Value>,
    pub timeout: Duration,
    pub body_limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpOutcome {
    /// The response status, or why there was none.
    pub status: Result<u16, String>,
    pub body: Captured,
    pub duration_ms: u64,
    /// False when the request certainly never reached the server (no connection,
    /// or a TLS handshake that failed): then the server changed nothing.
    pub sent: bool,
}

/// Sends the request; never fails, but reports what went wrong in `status`.
pub async fn send(client: &reqwest::Client, spec: &HttpSpec<'_>) -> HttpOutcome {
    let started = Instant::now();
    let outcome = |status, body, sent| HttpOutcome { status, body, duration_ms: elapsed_ms(started), sent };
    let method = match reqwest::Method::from_bytes(spec.method.as_bytes()) {
        Ok(method) => method,
        Err(_) => return outcome(Err(format!("`{}` is not an HTTP method", spec.method)), Captured::default(), false),
    };
    let mut request = client.request(method, spec.url).timeout(spec.timeout);
    for (name, value) in spec.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(body) = spec.body {
        request = request.json(body);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return outcome(Err(describe(&e, spec)), Captured::default(), !e.is_connect()),
    };
    let status = response.status().as_u16();
    let body = read_bounded(response, spec.body_limit).await;
    outcome(Ok(status), body, true)
}

fn describe(error: &reqwest::Error, spec: &HttpSpec<'_>) -> String {
    if error.is_timeout() {
        format!("`{} {}` timed out after {} ms", spec.method, spec.url, spec.timeout.as_millis())
    } else if error.is_connect() {
        // The cause matters here: a refused connection and a certificate the
        // executor does not trust call for different fixes.
        format!("cannot connect to `{}`: {}", spec.url, root_cause(error))
    } else {
        format!("`{} {}` failed: {}", spec.method, spec.url, root_cause(error))
    }
}

/// The innermost error, which names the cause ("invalid peer certificate:
/// UnknownIssuer", "Connection refused") where the outer ones only say "error
/// sending request".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Reads a response body, keeping the first `limit` bytes and counting the rest.
pub async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Captured {
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        total += chunk.len() as u64;
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    let truncated = total > kept.len() as u64;
    Captured { text: String::from_utf8_lossy(&kept).into_owned(), total_bytes: total, truncated }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
