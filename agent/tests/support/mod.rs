//! What the agent's integration tests share: a real audit log, an agent, and a
//! scripted OpenAI-compatible server on loopback that speaks the real protocol.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test support fails loudly")]

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use arf_agent::config::{Config, OpenAiConfig, ReasonerKind};
use arf_core::target::{Inventory, Target};

pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// How the scripted server answers one request.
#[derive(Clone)]
pub enum Reply {
    /// A chat completion whose message content is this text.
    Content(String),
    /// A completion whose message is a refusal.
    Refusal(String),
    /// An HTTP error with an OpenAI error body and optional `Retry-After` seconds.
    Error { status: u16, message: String, retry_after: Option<u64> },
    /// Never answers (until the client gives up).
    Hang,
    /// Content with `{{signal_id}}` replaced by the first signal id in the prompt,
    /// as a model that read the context would cite it.
    Cite(String),
    /// [`Reply::Cite`], after thinking this long.
    Late(Duration, String),
    /// Tool calls, `(function name, arguments JSON)`, as the API returns them
    /// (`finish_reason: tool_calls`, no content).
    ToolCalls(Vec<(String, String)>),
}

/// The first `sig-...` id in the request's messages.
fn first_signal_id(body: &Value) -> String {
    let text = body["messages"].to_string();
    text.find("sig-")
        .map(|at| text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect())
        .unwrap_or_default()
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub body: Value,
    pub authorization: Option<String>,
    pub at: Instant,
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    /// Answer with this once the queue is empty.
    otherwise: Option<Reply>,
    received: Vec<Received>,
}

/// A scripted OpenAI-compatible server on loopback.
#[derive(Clone)]
pub struct ModelServer {
    pub base_url: String,
    script: Arc<Mutex<Script>>,
}

impl ModelServer {
    pub async fn start(replies: Vec<Reply>, otherwise: Option<Reply>) -> Self {
        let script = Arc::new(Mutex::new(Script { replies: replies.into(), otherwise, received: Vec::new() }));
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(completions))
            .with_state(Arc::clone(&script));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, script }
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }
}

pub fn completion(content: &str, refusal: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": "scripted-model-1",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": if refusal.is_some() { Value::Null } else { Value::String(content.to_owned()) }, "refusal": refusal},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 812, "completion_tokens": 143, "total_tokens": 955}
    })
}

async fn completions(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let cited = first_signal_id(&body);
    let reply = {
        let mut script = script.lock().unwrap();
        script.received.push(Received {
            body,
            authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
            at: Instant::now(),
        });
        script.replies.pop_front().or_else(|| script.otherwise.clone())
    };
    match reply {
        Some(Reply::Content(text)) => (StatusCode::OK, axum::Json(completion(&text, None))).into_response(),
        Some(Reply::Cite(text)) => (StatusCode::OK, axum::Json(completion(&text.replace("{{signal_id}}", &cited), None))).into_response(),
        Some(Reply::Late(delay, text)) => {
            tokio::time::sleep(delay).await;
            (StatusCode::OK, axum::Json(completion(&text.replace("{{signal_id}}", &cited), None))).into_response()
        }
        Some(Reply::ToolCalls(calls)) => {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(n, (name, arguments))| json!({"id": format!("call_{n}_{name}"), "type": "function", "function": {"name": name, "arguments": arguments}}))
                .collect();
            let mut body = completion("", None);
            body["choices"][0]["message"] = json!({"role": "assistant", "content": null, "tool_calls": calls});
            body["choices"][0]["finish_reason"] = json!("tool_calls");
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Some(Reply::Refusal(text)) => (StatusCode::OK, axum::Json(completion("", Some(&text)))).into_response(),
        Some(Reply::Error { status, message, retry_after }) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({"error": {"message": message, "type": if status == 429 { "rate_limit_error" } else { "server_error" }, "param": null, "code": null}})),
            )
                .into_response();
            if let Some(seconds) = retry_after {
                response.headers_mut().insert("retry-after", seconds.to_string().parse().unwrap());
            }
            response
        }
        Some(Reply::Hang) | None => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

/// A running audit log and agent.
pub struct Running {
    pub agent: String,
    pub webhook: String,
    pub audit: arf_audit::AuditClient,
    pub audit_addr: String,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    dir: tempfile::TempDir,
}

impl Running {
    /// Stops this agent and starts another on the same audit log, as a restart would.
    pub async fn restart_agent(&mut self, adjust: impl FnOnce(&mut Config)) {
        if let Some(stop) = self.stops.pop() {
            let _ = stop.send(());
        }
        let token_file = self.dir.path().join("agent.token");
        let (agent, webhook, stop) = start_agent(&self.audit_addr, &token_file, adjust).await;
        self.agent = agent;
        self.webhook = webhook;
        self.stops.push(stop);
    }
}

pub async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The demo's targets, for incidents about `checkout`.
pub fn inventory() -> Inventory {
    let target = |environment: &str| Target {
        kind: "service".into(),
        service: "checkout".into(),
        environment: environment.into(),
        tier: "standard".into(),
        security_sensitive: false,
        facts: BTreeMap::from([("url".to_owned(), "http://127.0.0.1:9".to_owned()), ("repo".to_owned(), "/nonexistent".to_owned())]),
        depends_on: Vec::new(),
    };
    BTreeMap::from([("checkout-staging".to_owned(), target("staging")), ("checkout-production".to_owned(), target("production"))])
}

pub fn openai(base_url: &str) -> OpenAiConfig {
    OpenAiConfig {
        base_url: base_url.to_owned(),
        model: "scripted-model-1".to_owned(),
        api_key_env: None,
        provider: Default::default(),
        api_version: None,
        timeout_secs: 5,
        max_retries: 2,
        temperature: 0.0,
        max_tokens: 1024,
        max_repairs: 2,
        structured_output: Default::default(),
        on_unavailable: Default::default(),
    }
}

/// Starts a real audit log and an agent configured by `adjust`.
pub async fn start(adjust: impl FnOnce(&mut Config)) -> Running {
    start_in(tempfile::tempdir().unwrap(), adjust).await
}

async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> Running {
    let token_file = dir.path().join("agent.token");
    let token = arf_core::keys::load_or_generate_token(&token_file).unwrap();
    let mut stops = Vec::new();
    let audit_config = arf_audit::Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("audit"), BTreeMap::from([("agent".to_owned(), token_file.clone())]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let audit_addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    tokio::spawn(arf_audit::serve(audit_config, listener, async move {
        let _ = stopped.await;
    }));
    let (agent, webhook, stop) = start_agent(&audit_addr, &token_file, adjust).await;
    stops.push(stop);
    let audit = arf_audit::AuditClient::connect(&audit_addr, Some(token)).unwrap();
    Running { agent, webhook, audit, audit_addr, stops, dir }
}

/// Starts an agent against the audit log at `audit_addr`; returns its gRPC and webhook addresses.
pub async fn start_agent(
    audit_addr: &str,
    token_file: &std::path::Path,
    adjust: impl FnOnce(&mut Config),
) -> (String, String, tokio::sync::oneshot::Sender<()>) {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        webhook_listen: "127.0.0.1:0".parse().unwrap(),
        audit_addr: audit_addr.to_owned(),
        audit_token_file: token_file.to_owned(),
        governor_addr: closed_port().await,
        governor_token_file: token_file.to_owned(),
        // The test's governor is unreachable: escalate at once rather than offer again.
        governor_retry_secs: 0,
        catalog_dir: examples().join("pathways"),
        reasoner: ReasonerKind::Scripted,
        scripted_dir: Some(examples().join("scripted")),
        runbooks_dir: Some(examples().join("runbooks")),
        openai: None,
        noisy: None,
        group_window_secs: 1800,
        group_wait_secs: 0,
        retain_incidents_secs: 3600,
        resume_within_secs: 3600,
        change_lookback_secs: 7200,
        max_snapshot_items: 50,
        max_snapshot_tokens: 6000,
        max_diagnoses_per_incident: 3,
        max_model_calls_per_incident: 6,
        max_attempts_per_incident: 1,
        investigation: Default::default(),
        state_dir: None,
        postgres: None,
        replica: None,
        lease_secs: 10,
        snapshot_every_records: 50_000,
        snapshot_check_secs: 60,
        redact_patterns: vec![],
        redact_rules_file: None,
        targets: inventory(),
        identities: identities(),
        webhook_hmac: vec![],
        mtls: None,
        insecure_loopback_only: true,
        metrics_listen: None,
    };
    adjust(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = listener.local_addr().unwrap().to_string();
    let webhook = webhook_listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(arf_agent::serve(config, listener, webhook_listener, async move {
        let _ = stopped.await;
    }));
    (agent, webhook, stop)
}

/// The token the tests call the agent with (identity `tests`, role `tooling`). A
/// test value, configured only by its hash.
pub const TOKEN: &str = "arf-test-tooling-token-not-a-secret-0123456789";

/// The identities the test agent knows: `tests`, who may send signals and read incidents.
pub fn identities() -> Vec<arf_core::identity::Identity> {
    vec![arf_core::identity::Identity {
        name: "tests".into(),
        role: "tooling".into(),
        token_file: None,
        token_sha256: Some(arf_core::keys::token_hash(TOKEN)),
        services: Vec::new(),
        environments: Vec::new(),
    }]
}

/// An HTTP client that sends `TOKEN` with every request, as a configured sender does.
pub fn http() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// A gRPC client of the agent on `channel`, calling with `TOKEN`.
pub fn authed(channel: tonic::transport::Channel) -> AgentClient {
    arf_proto::v1::agent_client::AgentClient::with_interceptor(channel, arf_proto::server::Bearer::new(Some(TOKEN)))
}

pub type AgentClient = arf_proto::v1::agent_client::AgentClient<arf_proto::server::Authenticated>;

/// Waits until the agent reports SERVING on the standard health check (it has
/// rebuilt its state from the log), then returns a client.
pub async fn agent_client(addr: &str) -> AgentClient {
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let mut health = HealthClient::new(channel.clone());
    let request = || tonic_health::pb::HealthCheckRequest { service: String::new() };
    let mut watch = loop {
        if let Ok(stream) = health.watch(request()).await {
            break stream.into_inner();
        }
        tokio::task::yield_now().await;
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = tokio::time::timeout_at(deadline, watch.message()).await.expect("agent never became ready").unwrap().unwrap();
        if status.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            return authed(channel);
        }
    }
}

/// Follows the audit log until an incident record reaches `state`, and returns the incident's trail.
pub async fn wait_for_state(audit: &arf_audit::AuditClient, incident_id: &str, states: &[&str]) -> Vec<arf_audit::Record> {
    use futures::StreamExt;
    let mut tail = audit.tail(1).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout_at(deadline, tail.next()).await.expect("timed out following the log").unwrap().unwrap();
        if next.incident_id == incident_id
            && next.kind == arf_audit::RecordKind::Incident
            && next.payload["state"].as_str().is_some_and(|s| states.contains(&s))
        {
            return audit.read_incident(incident_id).await.unwrap();
        }
    }
}

/// Posts an Alertmanager alert about checkout, and returns the incident it opened.
pub async fn fire(webhook: &str, alertname: &str, environment: &str, description: &str) -> String {
    post_alert(webhook, "firing", alertname, environment, description).await
}

/// Posts the resolution of an alert, and returns the incident it belongs to.
pub async fn resolve(webhook: &str, alertname: &str, environment: &str) -> String {
    post_alert(webhook, "resolved", alertname, environment, "recovered").await
}

async fn post_alert(webhook: &str, status: &str, alertname: &str, environment: &str, description: &str) -> String {
    let body = json!({
        "version": "4", "status": status, "receiver": "arf", "groupKey": "{}", "groupLabels": {},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": status,
            "labels": {"alertname": alertname, "service": "checkout", "env": environment, "severity": "critical"},
            "annotations": {"description": description}, "startsAt": "2026-11-22T03:00:00Z"}]
    });
    let response = http().post(format!("http://{webhook}/v1/webhooks/alertmanager")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["accepted"][0]["incident_id"].as_str().unwrap().to_owned()
}

/// The redaction corpus (`agent/tests/corpus/redaction.toml`).
pub mod corpus {
    #[derive(Debug, serde::Deserialize)]
    pub struct Secret {
        pub name: String,
        pub text: String,
        pub core: String,
    }

    #[derive(Debug, serde::Deserialize)]
    pub struct Lookalike {
        pub text: String,
    }

    #[derive(Debug, serde::Deserialize)]
    pub struct Corpus {
        #[serde(rename = "secret")]
        pub secrets: Vec<Secret>,
        #[serde(rename = "lookalike")]
        pub lookalikes: Vec<Lookalike>,
    }

    pub fn load() -> Corpus {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/redaction.toml");
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }
}

/// A log in PostgreSQL behind two audit front-ends, and agent replicas on it.
pub mod pg {
    use super::*;

    pub struct Log {
        pub settings: arf_pg::Settings,
        pub fronts: Vec<String>,
        pub token_file: PathBuf,
        pub audit: arf_audit::AuditClient,
        _stops: Vec<tokio::sync::oneshot::Sender<()>>,
        _dir: tempfile::TempDir,
    }

    impl Log {
        /// A fresh database on `server`, migrated, and two front-ends serving one log in it.
        pub async fn start(server: &arf_pg::testing::TestServer) -> Self {
            let settings = server.database().await.unwrap();
            arf_pg::migrate(&mut settings.connect().await.unwrap()).await.unwrap();
            let dir = tempfile::tempdir().unwrap();
            let token_file = dir.path().join("agent.token");
            let token = arf_core::keys::load_or_generate_token(&token_file).unwrap();
            let mut fronts = Vec::new();
            let mut stops = Vec::new();
            for _ in 0..2 {
                let mut config = arf_audit::Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("audit"), BTreeMap::from([("agent".to_owned(), token_file.clone())]));
                config.postgres = Some(settings.clone());
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                tokio::spawn(arf_audit::serve(config, listener, async move {
                    let _ = stopped.await;
                }));
                // The first front-end makes the signing key; the second reads it.
                let client = arf_audit::AuditClient::connect(&addr, Some(token.clone())).unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                while client.head().await.is_err() {
                    assert!(Instant::now() < deadline, "the audit front-end did not serve");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                fronts.push(addr);
                stops.push(stop);
            }
            let audit = arf_audit::AuditClient::connect(&fronts[0], Some(token)).unwrap();
            Self { settings, fronts, token_file, audit, _stops: stops, _dir: dir }
        }
    }

    /// Starts agent replica `name` on `log` through its front-end `front`, as
    /// `adjust` configures it; returns its gRPC and webhook addresses once it serves.
    pub async fn replica(log: &Log, front: usize, name: &str, lease_secs: u64, adjust: impl FnOnce(&mut Config)) -> (String, String, tokio::sync::oneshot::Sender<()>) {
        let (settings, name) = (log.settings.clone(), name.to_owned());
        let (agent, webhook, stop) = start_agent(&log.fronts[front], &log.token_file, move |config| {
            config.postgres = Some(settings);
            config.replica = Some(name);
            config.lease_secs = lease_secs;
            adjust(config);
        })
        .await;
        let _ = agent_client(&agent).await;
        (agent, webhook, stop)
    }
}

/// The benchmarks' load generator.
pub mod load {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Measured {
        pub rate: f64,
        pub p50_ms: f64,
        pub p99_ms: f64,
    }

    /// Sends `count` requests over `connections` concurrent keep-alive connections,
    /// connection `c` to `urls[c % len]`, the body of request `i` made by `body(i)`;
    /// every answer must be a 2xx.
    pub async fn run(urls: &[String], connections: usize, first: usize, count: usize, body: Arc<dyn Fn(usize) -> Value + Send + Sync>) -> Measured {
        let next = Arc::new(AtomicUsize::new(first));
        let end = first + count;
        let started = Instant::now();
        let workers: Vec<_> = (0..connections)
            .map(|c| {
                // Every end gets the same header; the agent authenticates it, Alertmanager ignores it.
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
                let client = reqwest::Client::builder().pool_max_idle_per_host(1).default_headers(headers).build().unwrap();
                let (url, next, body) = (urls[c % urls.len()].clone(), Arc::clone(&next), Arc::clone(&body));
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= end {
                            return latencies;
                        }
                        let sent = Instant::now();
                        let response = client.post(&url).json(&body(i)).send().await.unwrap();
                        assert!(response.status().is_success(), "{url}: {}", response.status());
                        let _ = response.bytes().await.unwrap();
                        latencies.push(sent.elapsed());
                    }
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(count);
        for worker in workers {
            latencies.extend(worker.await.unwrap());
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
        Measured { rate: count as f64 / elapsed.as_secs_f64(), p50_ms: at(0.50), p99_ms: at(0.99) }
    }

    pub fn median(values: &mut [f64]) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }
}
