//! Metrics in the Prometheus text exposition format, and the HTTP endpoint each
//! service serves them on (`metrics_listen`): `/metrics` for a scraper with a
//! token of a role that may read (Prometheus' `authorization.credentials_file`),
//! `/healthz` (the process answers) and `/readyz` (the service is ready: the agent
//! and governor have rebuilt their state from the log) open, as probes need.
//!
//! One process-wide registry; counters, gauges and histograms by name and labels.
//! Prometheus' own parser is the test of the format (`cli/tests/metrics.rs` scrapes
//! a deployment with a real Prometheus).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use arf_core::identity::Identities;

/// Histogram buckets, in seconds: 1 ms to 60 s.
const BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Series {
    value: f64,
    buckets: [u64; BUCKETS.len()],
    count: u64,
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    help: &'static str,
    series: BTreeMap<Vec<(String, String)>, Series>,
}

fn registry() -> &'static Mutex<BTreeMap<&'static str, Family>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<&'static str, Family>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn update(name: &'static str, help: &'static str, kind: Kind, labels: &[(&str, &str)], change: impl FnOnce(&mut Series)) {
    let mut families = registry().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let family = families.entry(name).or_insert_with(|| Family { kind, help, series: BTreeMap::new() });
    if family.kind != kind {
        // A name used as two kinds is a bug in ARF; the first kind stays, nothing panics.
        return;
    }
    let key = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    change(family.series.entry(key).or_default());
}

/// Adds `by` to a counter.
pub fn add(name: &'static str, help: &'static str, labels: &[(&str, &str)], by: u64) {
    update(name, help, Kind::Counter, labels, |s| s.value += by as f64);
}

/// Adds one to a counter.
pub fn inc(name: &'static str, help: &'static str, labels: &[(&str, &str)]) {
    add(name, help, labels, 1);
}

/// Sets a gauge.
pub fn set(name: &'static str, help: &'static str, labels: &[(&str, &str)], value: f64) {
    update(name, help, Kind::Gauge, labels, |s| s.value = value);
}

/// Records one observation (in seconds) in a histogram.
pub fn observe(name: &'static str, help: &'static str, labels: &[(&str, &str)], seconds: f64) {
    update(name, help, Kind::Histogram, labels, |s| {
        s.value += seconds;
        s.count += 1;
        for (bucket, le) in s.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= le {
                *bucket += 1;
            }
        }
    });
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn label_text(labels: &[(String, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn number(value: f64) -> String {
    if value.is_finite() { format!("{value}") } else if value > 0.0 { "+Inf".to_owned() } else { "NaN".to_owned() }
}

/// The value of an unlabelled counter or gauge of this process, as [`render`]
/// shows it; 0 when it has none yet (what a scrape would read as absent).
pub fn value(name: &str) -> f64 {
    render()
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Everything recorded, in the text exposition format (version 0.0.4).
pub fn render() -> String {
    let families = registry().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = String::new();
    for (name, family) in families.iter() {
        let _ = writeln!(out, "# HELP {name} {}", family.help.replace('\n', " "));
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
        for (labels, series) in &family.series {
            match family.kind {
                Kind::Counter | Kind::Gauge => {
                    let _ = writeln!(out, "{name}{} {}", label_text(labels, None), number(series.value));
                }
                Kind::Histogram => {
                    for (count, le) in series.buckets.iter().zip(BUCKETS) {
                        let _ = writeln!(out, "{name}_bucket{} {count}", label_text(labels, Some(("le", number(le)))));
                    }
                    let _ = writeln!(out, "{name}_bucket{} {}", label_text(labels, Some(("le", "+Inf".to_owned()))), series.count);
                    let _ = writeln!(out, "{name}_sum{} {}", label_text(labels, None), number(series.value));
                    let _ = writeln!(out, "{name}_count{} {}", label_text(labels, None), series.count);
                }
            }
        }
    }
    out
}

/// Readiness that also needs the server's certificate files in step ([`crate::tls::ServerTls::in_step`]).
pub fn ready_with_tls(tls: Option<Arc<crate::tls::ServerTls>>, ready: impl Fn() -> bool + Send + Sync + 'static) -> Arc<dyn Fn() -> bool + Send + Sync> {
    Arc::new(move || {
        let in_step = tls.as_ref().is_none_or(|t| t.in_step());
        set("arf_tls_files_in_step", "1 when the certificate files on disk are the ones served; 0 while a change does not load.", &[], if in_step { 1.0 } else { 0.0 });
        in_step && ready()
    })
}

/// What the endpoint needs: who may scrape, and whether the service is ready.
#[derive(Clone)]
pub struct Endpoint {
    pub service: &'static str,
    pub identities: Arc<Identities>,
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

fn respond(status: u16, content_type: &str, body: String) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(axum::body::Body::from(body))
        .unwrap_or_default()
}

/// The endpoint's routes: `/metrics` (bearer token of a role that may read),
/// `/healthz` and `/readyz` (open).
pub fn router(endpoint: Endpoint) -> axum::Router {
    use axum::extract::State;
    // What `arf status` shows of each service: its version and since when it runs.
    set("arf_build_info", "1, labelled with the service and the version it runs.", &[("service", endpoint.service), ("version", env!("CARGO_PKG_VERSION"))], 1.0);
    set("arf_started_at_seconds", "Unix time at which the service started.", &[("service", endpoint.service)], arf_core::time::now_ms() as f64 / 1000.0);
    use axum::http::HeaderMap;
    use axum::routing::get;
    async fn metrics(State(endpoint): State<Endpoint>, headers: HeaderMap) -> axum::response::Response {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        match token.and_then(|t| endpoint.identities.by_token(t)) {
            Some(caller) if caller.role.may_read() => {
                set("arf_up", "1 while the service runs.", &[("service", endpoint.service)], 1.0);
                respond(200, "text/plain; version=0.0.4; charset=utf-8", render())
            }
            Some(caller) => respond(403, "text/plain", format!("{caller} may not read metrics\n")),
            None => respond(401, "text/plain", "metrics need `Authorization: Bearer TOKEN` of an identity that may read\n".to_owned()),
        }
    }
    async fn healthz() -> axum::response::Response {
        respond(200, "text/plain", "ok\n".to_owned())
    }
    async fn readyz(State(endpoint): State<Endpoint>) -> axum::response::Response {
        if (endpoint.ready)() { respond(200, "text/plain", "ready\n".to_owned()) } else { respond(503, "text/plain", "not ready\n".to_owned()) }
    }
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(endpoint)
}

/// Serves the endpoint on `listener` until `shutdown`, over TLS with `tls` (the
/// service's certificate; scrapers need not present one).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<crate::tls::ServerTls>>,
    endpoint: Endpoint,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let incoming = match tls {
        Some(tls) => crate::http::Incoming::Tls(crate::tls::Listener::new(listener, tls)?),
        None => crate::http::Incoming::Plain(listener),
    };
    crate::http::serve(incoming, router(endpoint), crate::http::Limits::default(), shutdown).await
}

/// Binds `addr` (when configured) and serves the endpoint in the background, over
/// TLS with the service's certificate when it has one; the returned task is
/// aborted when the service stops.
pub async fn spawn(
    addr: Option<std::net::SocketAddr>,
    tls: Option<&arf_core::tls::TlsFiles>,
    endpoint: Endpoint,
) -> Result<Option<tokio::task::JoinHandle<()>>, Box<dyn std::error::Error + Send + Sync>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on `{addr}` (metrics_listen): {e}"))?;
    let tls = tls.map(crate::tls::ServerTls::webhook).transpose()?.map(Arc::new);
    let service = endpoint.service;
    tracing::info!(%addr, service, tls = tls.is_some(), "metrics and health endpoint listening");
    Ok(Some(tokio::spawn(async move {
        if let Err(error) = serve(listener, tls, endpoint, std::future::pending()).await {
            tracing::error!(%error, service, "the metrics endpoint stopped");
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_kind_with_escaped_labels() {
        inc("arf_test_events_total", "Events.", &[("kind", "a\"b\\c\nd")]);
        add("arf_test_events_total", "Events.", &[("kind", "a\"b\\c\nd")], 2);
        set("arf_test_level", "A level.", &[], 2.5);
        observe("arf_test_seconds", "Durations.", &[("op", "x")], 0.003);
        let text = render();
        assert!(text.contains("# TYPE arf_test_events_total counter\narf_test_events_total{kind=\"a\\\"b\\\\c\\nd\"} 3\n"), "{text}");
        assert!(text.contains("arf_test_level 2.5\n"), "{text}");
        assert!(text.contains("arf_test_seconds_bucket{op=\"x\",le=\"0.0025\"} 0\n"), "{text}");
        assert!(text.contains("arf_test_seconds_bucket{op=\"x\",le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("arf_test_seconds_bucket{op=\"x\",le=\"+Inf\"} 1\narf_test_seconds_sum{op=\"x\"} 0.003\narf_test_seconds_count{op=\"x\"} 1\n"), "{text}");
    }
}
