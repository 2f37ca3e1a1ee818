//! Signal ingest over real gRPC and HTTP: validation names the field, nothing
//! accepted is lost, and nothing is accepted that could not be logged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::net::TcpListener;

use arf_agent::config::{Config, ReasonerKind};
use arf_proto::v1 as pb;

struct Running {
    audit_up: bool,
    agent: String,
    webhook: String,
    audit: Option<arf_audit::AuditClient>,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

/// An agent with a real audit log (or, with `audit_up = false`, an address where none listens).
async fn start(audit_up: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("agent.token");
    let token = arf_core::keys::load_or_generate_token(&token_file).unwrap();
    let mut stops = Vec::new();
    let (audit_addr, audit) = if audit_up {
        let config = arf_audit::Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("audit"), BTreeMap::from([("agent".to_owned(), token_file.clone())]));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        tokio::spawn(arf_audit::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        (addr.clone(), Some(arf_audit::AuditClient::connect(&addr, Some(token)).unwrap()))
    } else {
        (closed_port().await, None)
    };
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        webhook_listen: "127.0.0.1:0".parse().unwrap(),
        audit_addr,
        audit_token_file: token_file.clone(),
        governor_addr: closed_port().await,
        governor_token_file: token_file,
        governor_retry_secs: 0,
        catalog_dir: examples().join("pathways"),
        reasoner: ReasonerKind::Scripted,
        scripted_dir: Some(examples().join("scripted")),
        runbooks_dir: None,
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
        openai: None,
        noisy: None,
        redact_patterns: vec![],
        redact_rules_file: None,
        targets: BTreeMap::new(),
        identities: support::identities(),
        webhook_hmac: vec![],
        mtls: None,
        insecure_loopback_only: true,
        metrics_listen: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = listener.local_addr().unwrap().to_string();
    let webhook = webhook_listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    tokio::spawn(arf_agent::serve(config, listener, webhook_listener, async move {
        let _ = stopped.await;
    }));
    Running { audit_up, agent, webhook, audit, _stops: stops, _dir: dir }
}

fn signal(kind: &str, title: &str) -> pb::Signal {
    pb::Signal { kind: kind.into(), title: title.into(), service: "web".into(), environment: "staging".into(), ..Default::default() }
}

/// A client, once the agent answers its health check (SERVING, or, with the log
/// down, NOT_SERVING: it is up but cannot rebuild its state).
async fn client(running: &Running) -> support::AgentClient {
    let addr = &running.agent;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let mut health = HealthClient::new(channel.clone());
    let mut watch = loop {
        if let Ok(stream) = health.watch(tonic_health::pb::HealthCheckRequest { service: String::new() }).await {
            break stream.into_inner();
        }
        tokio::task::yield_now().await;
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = tokio::time::timeout_at(deadline, watch.message()).await.expect("agent never answered").unwrap().unwrap();
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        // Without an audit log the agent is up but never SERVING: any answer will do.
        if status.status == serving || !running.audit_up {
            return support::authed(channel);
        }
    }
}

#[tokio::test]
async fn malformed_signals_name_the_field_and_lose_nothing_accepted() {
    let running = start(true).await;
    let mut agent = client(&running).await;
    let first = agent
        .submit_signals(pb::SubmitSignalsRequest { signals: vec![signal("alert", "HighErrorRate")] })
        .await
        .unwrap()
        .into_inner();
    let incident_id = first.accepted[0].incident_id.clone();
    assert!(!incident_id.is_empty());

    let cases = [
        (vec![signal("alert", "ok"), signal("weather", "x")], "`signals[1].kind`"),
        (vec![signal("alert", "")], "`signals[0].title`"),
        (vec![pb::Signal { status: "maybe".into(), ..signal("alert", "x") }], "`signals[0].status`"),
        (vec![], "`signals`"),
    ];
    for (signals, field) in cases {
        let error = agent.submit_signals(pb::SubmitSignalsRequest { signals }).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(error.message().contains(field), "{} should name {field}", error.message());
    }
    let error = agent
        .submit_webhook(pb::SubmitWebhookRequest { format: "alertmanager".into(), body: br#"{"status":"firing","alerts":[{"labels":{"a":1}}]}"#.to_vec(), ..Default::default() })
        .await
        .unwrap_err();
    assert!(error.message().contains("`alerts[0].labels.a`"), "{}", error.message());
    let error = agent
        .submit_webhook(pb::SubmitWebhookRequest { format: "carrier-pigeon".into(), body: b"{}".to_vec(), ..Default::default() })
        .await
        .unwrap_err();
    assert!(error.message().contains("unknown signal format `carrier-pigeon`"), "{}", error.message());

    // What was accepted before the bad requests is still there, in the agent and in the log.
    let incidents = agent.list_incidents(pb::ListIncidentsRequest {}).await.unwrap().into_inner().incidents;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].signal_count, 1);
    let trail = running.audit.as_ref().unwrap().read_incident(&incident_id).await.unwrap();
    let signals: Vec<_> = trail.iter().filter(|r| r.kind == arf_audit::RecordKind::Signal).collect();
    assert_eq!(signals.len(), 1, "exactly the one accepted signal is logged");
    assert_eq!(signals[0].seq, first.accepted[0].audit_seq);
}

#[tokio::test]
async fn webhook_answers_with_http_statuses_that_mean_something() {
    let running = start(true).await;
    let _ = client(&running).await;
    let http = support::http();
    let url = |format: &str| format!("http://{}/v1/webhooks/{format}", running.webhook);
    let sample = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/samples/alertmanager/alertmanager-bot-firing.json"))
        .unwrap_or_else(|_| br#"{"status":"firing","alerts":[{"labels":{"alertname":"Fire"}}]}"#.to_vec());
    let ok = http.post(url("alertmanager")).body(sample).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert!(body["accepted"][0]["audit_seq"].as_u64().unwrap() > 0);

    let bad = http.post(url("alertmanager")).body(r#"{"status":"firing"}"#).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("`alerts`"));
    assert_eq!(http.post(url("nope")).body("{}").send().await.unwrap().status(), 404);
    let huge = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(http.post(url("alertmanager")).body(huge).send().await.unwrap().status(), 413);
}

#[tokio::test]
async fn with_the_log_down_nothing_is_accepted() {
    let running = start(false).await;
    let mut agent = client(&running).await;
    let error = agent
        .submit_signals(pb::SubmitSignalsRequest { signals: vec![signal("alert", "HighErrorRate")] })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable);
    assert!(error.message().contains("rebuilding its state from the audit log"), "{}", error.message());
    // Without its memory the agent will not claim to know what incidents exist.
    let error = agent.list_incidents(pb::ListIncidentsRequest {}).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable);
}
