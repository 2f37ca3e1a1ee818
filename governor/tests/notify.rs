//! Notifications over real HTTP: a governor following a real audit log tells
//! loopback receivers shaped after Slack's incoming webhooks, PagerDuty's Events
//! API v2 and a signed generic webhook, through an outage of every receiver and a
//! restart of the governor, each event exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly on anything unexpected")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use arf_audit::RecordKind;
use arf_governor::notify::{NotifyConfig, ReceiverConfig, ReceiverKind};
use common::{Harness, Setup, proposal};

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdef012345";
const HMAC_SECRET: &str = "webhook-secret-for-the-test-only";

/// What the receivers answered 2xx to, and how many refusals are left to give.
#[derive(Default)]
struct Inbox {
    accepted: Mutex<Vec<(String, HeaderMap, Value)>>,
    outage: AtomicUsize,
}

async fn receive(State(inbox): State<Arc<Inbox>>, Path(kind): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, String) {
    // The outage: every receiver answers 503 until it is over.
    if inbox.outage.load(Ordering::SeqCst) > 0 {
        inbox.outage.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "down".into());
    }
    let value: Value = serde_json::from_slice(&body).unwrap();
    match kind.as_str() {
        "slack" => check_slack(&value),
        "pagerduty" => check_pagerduty(&value),
        "hook" => check_signed(&headers, &body, &value),
        other => panic!("no receiver `{other}`"),
    }
    inbox.accepted.lock().unwrap().push((kind.clone(), headers, value));
    if kind == "pagerduty" {
        (StatusCode::ACCEPTED, r#"{"status":"success","message":"Event processed"}"#.into())
    } else {
        (StatusCode::OK, "ok".into())
    }
}

/// Slack's incoming webhooks: `text` (the notification's fallback) and Block Kit
/// `blocks` of known types, text objects `plain_text` or `mrkdwn`, within Slack's
/// limits (header 150 characters, section text 3,000, at most 10 fields).
fn check_slack(message: &Value) {
    assert!(message["text"].as_str().is_some_and(|t| !t.is_empty()), "{message}");
    for block in message["blocks"].as_array().unwrap() {
        let kind = block["type"].as_str().unwrap();
        assert!(["header", "section", "context", "actions"].contains(&kind), "{block}");
        let texts: Vec<&Value> = match kind {
            "header" => vec![&block["text"]],
            "section" if block.get("fields").is_some() => block["fields"].as_array().unwrap().iter().collect(),
            "section" => vec![&block["text"]],
            "context" => block["elements"].as_array().unwrap().iter().collect(),
            _ => vec![],
        };
        assert!(texts.len() <= 10, "{block}");
        for text in texts {
            assert!(["plain_text", "mrkdwn"].contains(&text["type"].as_str().unwrap()), "{text}");
            let limit = if kind == "header" { 150 } else { 3_000 };
            assert!(text["text"].as_str().unwrap().chars().count() <= limit, "{text}");
        }
        if kind == "header" {
            assert_eq!(block["text"]["type"], "plain_text", "Slack headers are plain text");
        }
    }
}

/// PagerDuty Events API v2: a routing key, `trigger` with a summary (≤ 1,024),
/// a source and a known severity, or `resolve`; both with a dedup key (≤ 255).
fn check_pagerduty(event: &Value) {
    assert_eq!(event["routing_key"], ROUTING_KEY);
    let dedup_key = event["dedup_key"].as_str().unwrap();
    assert!(!dedup_key.is_empty() && dedup_key.len() <= 255);
    match event["event_action"].as_str().unwrap() {
        "trigger" => {
            let payload = &event["payload"];
            let summary = payload["summary"].as_str().unwrap();
            assert!(!summary.is_empty() && summary.chars().count() <= 1_024);
            assert!(!payload["source"].as_str().unwrap().is_empty());
            assert!(["critical", "error", "warning", "info"].contains(&payload["severity"].as_str().unwrap()));
        }
        "resolve" => assert_eq!(event.as_object().unwrap().len(), 3, "{event}"),
        other => panic!("event_action `{other}`"),
    }
}

/// The generic webhook: signed over `TIMESTAMP.BODY` with the shared secret.
fn check_signed(headers: &HeaderMap, body: &[u8], value: &Value) {
    let timestamp = headers["x-arf-timestamp"].to_str().unwrap();
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    let expected = format!("sha256={}", hex::encode(arf_core::keys::hmac_sha256(HMAC_SECRET.as_bytes(), &message)));
    assert_eq!(headers["x-arf-signature-256"].to_str().unwrap(), expected);
    assert_eq!(headers["x-arf-event-id"].to_str().unwrap(), value["id"].as_str().unwrap());
}

async fn receivers(inbox: Arc<Inbox>) -> String {
    let app = axum::Router::new().route("/{kind}", axum::routing::post(receive)).with_state(inbox);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The event ids each receiver took, and the kinds among them.
fn taken(inbox: &Inbox, receiver: &str) -> Vec<(String, String)> {
    inbox
        .accepted
        .lock()
        .unwrap()
        .iter()
        .filter(|(kind, _, _)| kind == receiver)
        .map(|(_, headers, value)| match receiver {
            "slack" => (value["text"].as_str().unwrap().to_owned(), String::new()),
            "pagerduty" => (format!("{} {}", value["event_action"].as_str().unwrap(), value["dedup_key"].as_str().unwrap()), value["payload"]["class"].as_str().unwrap_or("resolve").to_owned()),
            _ => (headers["x-arf-event-id"].to_str().unwrap().to_owned(), value["kind"].as_str().unwrap().to_owned()),
        })
        .collect()
}

async fn wait_for(inbox: &Inbox, what: &str, done: impl Fn(&Inbox) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !done(inbox) {
        assert!(Instant::now() < deadline, "{what} never arrived; took: {:#?}", inbox.accepted.lock().unwrap().iter().map(|(k, _, v)| format!("{k}: {v}")).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_reaches_each_receiver_once_through_an_outage_and_a_restart() {
    let inbox = Arc::new(Inbox { outage: AtomicUsize::new(6), ..Default::default() });
    let base = receivers(Arc::clone(&inbox)).await;
    let secrets = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = secrets.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let receiver = ReceiverConfig::new;
    let notify = NotifyConfig {
        console_url: Some("https://arf.example/console".into()),
        receivers: vec![
            ReceiverConfig { url_file: Some(write("slack.url", &format!("{base}/slack"))), ..receiver("oncall-slack", ReceiverKind::Slack) },
            ReceiverConfig { url: Some(format!("{base}/pagerduty")), secret_file: Some(write("pd.key", ROUTING_KEY)), ..receiver("pagerduty", ReceiverKind::Pagerduty) },
            ReceiverConfig { url: Some(format!("{base}/hook")), secret_file: Some(write("hook.secret", HMAC_SECRET)), ..receiver("hook", ReceiverKind::Webhook) },
        ],
    };
    let mut h = Harness::start(Setup { notify: Some(notify), ..Setup::default() }).await;
    // The notifier starts from the log's head at its first start: wait until it has
    // saved that place (its cursor), so what happens next is after it.
    let cursor = h.config.data_dir.join("notify").join("cursor");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cursor.exists() {
        assert!(Instant::now() < deadline, "the notifier never took its place in the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A production decision waits for approval; autonomy is switched off; an
    // incident is escalated by the agent, and then resolves.
    let waiting = h.evaluate(proposal("inc-notify", "restart_service", "web-prod", 0.9)).await.unwrap();
    assert_eq!(waiting.state, "pending");
    h.set_autonomy("alice", false, "paging test: hands off").await.unwrap();
    let agent = arf_audit::AuditClient::connect(&h.config.audit_addr, Some(arf_core::keys::load_token(&h.dir.path().join("agent-audit.token")).unwrap())).unwrap();
    let opened = arf_core::records::IncidentRecord::Opened {
        title: "Checkout <b>5xx</b> \u{1b}[2K".into(),
        service: "web".into(),
        family: "alert".into(),
        environment: "production".into(),
        state: "open".into(),
        first_signal: "sig-1".into(),
    };
    for record in [opened, arf_core::records::IncidentRecord::escalated("no grounded diagnosis"), arf_core::records::IncidentRecord::resolved("every alert in the incident resolved")] {
        agent.append_one("inc-escalated", RecordKind::Incident, arf_core::records::encode(&record)).await.unwrap();
    }
    // PagerDuty pages: the kill switch moving is informational, so it is not paged.
    let expected = |receiver: &str, others: usize| if receiver == "pagerduty" { others - 1 } else { others };
    for receiver in ["slack", "pagerduty", "hook"] {
        wait_for(&inbox, receiver, |inbox| taken(inbox, receiver).len() >= expected(receiver, 4)).await;
    }
    // The generic webhook names each kind, in log order.
    let kinds: Vec<String> = taken(&inbox, "hook").into_iter().map(|(_, kind)| kind).collect();
    assert_eq!(kinds, ["decision_waiting", "autonomy_switched", "escalated", "resolved"]);
    // PagerDuty: one dedup key per incident, triggered, then resolved.
    let paged: Vec<String> = taken(&inbox, "pagerduty").into_iter().map(|(sent, _)| sent).collect();
    assert_eq!(paged, ["trigger arf-inc-notify", "trigger arf-inc-escalated", "resolve arf-inc-escalated"]);
    // Slack: the alert's markup and escape bytes arrive as text.
    let slack: Vec<String> = taken(&inbox, "slack").into_iter().map(|(text, _)| text).collect();
    assert_eq!(slack[2], "[warning] Escalated to a person: Checkout &lt;b&gt;5xx&lt;/b&gt; \u{FFFD}[2K");
    assert!(slack[0].starts_with("[warning] Waiting for approval: restart_service on web-prod"), "{slack:?}");

    // The governor restarts: nothing is sent again, and what follows is sent once.
    h.restart_governor().await;
    h.set_autonomy("dave", true, "paging test: done").await.unwrap();
    for receiver in ["slack", "hook"] {
        wait_for(&inbox, receiver, |inbox| taken(inbox, receiver).len() >= 5).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for receiver in ["slack", "pagerduty", "hook"] {
        // PagerDuty: switching autonomy back on is not paged either.
        assert_eq!(taken(&inbox, receiver).len(), expected(receiver, 5) - usize::from(receiver == "pagerduty"), "{receiver}: each event exactly once");
    }
    let ids: std::collections::BTreeSet<String> = taken(&inbox, "hook").into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(inbox.outage.load(Ordering::SeqCst), 0, "the outage happened");
}

/// A witness refusing the log is what matters most and what the log cannot tell:
/// the governor pages someone itself, once per spell of refusals, however many
/// decisions it refuses meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_refusing_the_log_pages_someone_once() {
    let inbox = Arc::new(Inbox::default());
    let base = receivers(Arc::clone(&inbox)).await;
    let secrets = tempfile::tempdir().unwrap();
    let (hook_secret, routing_key) = (secrets.path().join("hook.secret"), secrets.path().join("pd.key"));
    std::fs::write(&hook_secret, HMAC_SECRET).unwrap();
    std::fs::write(&routing_key, ROUTING_KEY).unwrap();
    let notify = NotifyConfig {
        console_url: None,
        receivers: vec![
            ReceiverConfig { url: Some(format!("{base}/hook")), secret_file: Some(hook_secret), ..ReceiverConfig::new("hook", ReceiverKind::Webhook) },
            ReceiverConfig { url: Some(format!("{base}/pagerduty")), secret_file: Some(routing_key), ..ReceiverConfig::new("pagerduty", ReceiverKind::Pagerduty) },
        ],
    };
    let mut h = Harness::start(Setup { notify: Some(notify), ..Setup::default() }).await;
    let first = h.evaluate(proposal("inc-before", "restart_service", "web-staging", 0.9)).await.unwrap();
    assert_eq!(first.state, "authorized");

    // The governor once saw a longer log, signed by the log's own key: the log it
    // now talks to was rolled back.
    let key = arf_core::keys::load_signing(&h.dir.path().join("audit-checkpoint.key")).unwrap();
    let longer = arf_audit::checkpoint::Checkpoint { origin: "arf-audit-log".into(), size: 1000, root: [9; 32] };
    std::fs::write(h.config.data_dir.join("witness").join("checkpoint"), longer.sign(&key)).unwrap();
    h.restart_governor().await;
    for incident in ["inc-refused-1", "inc-refused-2"] {
        let refused = h.evaluate(proposal(incident, "restart_service", "web-staging", 0.9)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    }
    for receiver in ["hook", "pagerduty"] {
        wait_for(&inbox, receiver, |inbox| !taken(inbox, receiver).is_empty()).await;
    }
    let (_, _, page) = inbox.accepted.lock().unwrap().iter().find(|(kind, _, _)| kind == "pagerduty").cloned().unwrap();
    assert_eq!((page["event_action"].as_str(), page["payload"]["severity"].as_str()), (Some("trigger"), Some("critical")), "{page}");
    assert!(page["payload"]["summary"].as_str().unwrap().contains("failed the governor's witness check"), "{page}");
    let (_, _, hook) = inbox.accepted.lock().unwrap().iter().find(|(kind, _, _)| kind == "hook").cloned().unwrap();
    assert_eq!(hook["kind"], "witness_refused", "{hook}");
    assert!(hook.to_string().contains("rolled back or truncated"), "the witness's reason is in the message: {hook}");
    // The second refusal of the same spell pages no one again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for receiver in ["hook", "pagerduty"] {
        assert_eq!(taken(&inbox, receiver).len(), 1, "{receiver}: one page per spell of refusals");
    }
}

/// An executor whose own witness refuses the log, as `arf-executor` says it: the
/// refusal is marked `arf-refusal: log-not-witnessed` (checked on the executor's side
/// in `executor/tests/it/witnesses_the_log.rs`).
struct RefusingExecutor;

#[tonic::async_trait]
impl arf_proto::v1::executor_server::Executor for RefusingExecutor {
    async fn execute(&self, _: tonic::Request<arf_proto::v1::SignedDecision>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        let mut refused = tonic::Status::failed_precondition("the audit log failed the executor's witness check: rolled back or truncated");
        refused.metadata_mut().insert(arf_proto::server::REFUSAL, arf_proto::server::LOG_NOT_WITNESSED.parse().unwrap());
        Err(refused)
    }

    async fn get_execution(&self, _: tonic::Request<arf_proto::v1::GetExecutionRequest>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        Err(tonic::Status::not_found("never ran"))
    }
}

/// The governor's half of a witness refusal at the executor: the refusal's mark
/// pages someone, once, as the governor's own witness check does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_refusing_the_log_pages_someone_once() {
    let inbox = Arc::new(Inbox::default());
    let base = receivers(Arc::clone(&inbox)).await;
    let secrets = tempfile::tempdir().unwrap();
    let routing_key = secrets.path().join("pd.key");
    std::fs::write(&routing_key, ROUTING_KEY).unwrap();
    let notify = NotifyConfig {
        console_url: None,
        receivers: vec![ReceiverConfig { url: Some(format!("{base}/pagerduty")), secret_file: Some(routing_key), ..ReceiverConfig::new("pagerduty", ReceiverKind::Pagerduty) }],
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let executor_addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(arf_proto::v1::executor_server::ExecutorServer::new(RefusingExecutor))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let h = Harness::start(Setup { notify: Some(notify), executor_addr: Some(executor_addr), ..Setup::default() }).await;
    for incident in ["inc-exec-refused-1", "inc-exec-refused-2"] {
        let decision = h.evaluate(proposal(incident, "restart_service", "web-staging", 0.9)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while h.get("alice", &decision.decision_id).await.unwrap().state != "dispatch_failed" {
            assert!(Instant::now() < deadline, "the refused decision was never settled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    wait_for(&inbox, "pagerduty", |inbox| !taken(inbox, "pagerduty").is_empty()).await;
    let (_, _, page) = inbox.accepted.lock().unwrap().iter().find(|(kind, _, _)| kind == "pagerduty").cloned().unwrap();
    assert_eq!((page["event_action"].as_str(), page["payload"]["severity"].as_str()), (Some("trigger"), Some("critical")), "{page}");
    assert!(page.to_string().contains("executor"), "the page says whose witness refused: {page}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(taken(&inbox, "pagerduty").len(), 1, "one page per spell of refusals");
}

/// Governor replicas on PostgreSQL: a decision the leader announced but could not
/// deliver (every receiver down) is delivered by the replica that takes the lead,
/// which follows the log from where the last leader's delivery stood, not from the
/// log's head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_the_leader_could_not_deliver_is_delivered_by_the_next_leader() {
    let server = arf_pg::testing::TestServer::start().await.unwrap();
    let postgres = server.database().await.unwrap();
    arf_pg::migrate(&mut postgres.connect().await.unwrap()).await.unwrap();
    let inbox = Arc::new(Inbox::default());
    let base = receivers(Arc::clone(&inbox)).await;
    let secrets = tempfile::tempdir().unwrap();
    let hook_secret = secrets.path().join("hook.secret");
    std::fs::write(&hook_secret, HMAC_SECRET).unwrap();
    let notify = NotifyConfig {
        console_url: None,
        receivers: vec![ReceiverConfig { url: Some(format!("{base}/hook")), secret_file: Some(hook_secret), ..ReceiverConfig::new("hook", ReceiverKind::Webhook) }],
    };
    let mut h = Harness::start(Setup { notify: Some(notify), postgres: Some(postgres.clone()), ..Setup::default() }).await;
    // The leader's notifier has taken its place, and saved it as delivered.
    let db = postgres.connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.query_opt("SELECT delivered_through FROM governor_notify", &[]).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the leader never saved where its notifications stand");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every receiver is down while the decision waits; the leader then stops.
    inbox.outage.store(usize::MAX / 2, Ordering::SeqCst);
    let waiting = h.evaluate(proposal("inc-failover", "restart_service", "web-prod", 0.9)).await.unwrap();
    assert_eq!(waiting.state, "pending");
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.fail_over_to("governor-b").await;
    inbox.outage.store(0, Ordering::SeqCst);
    wait_for(&inbox, "the waiting decision, from the new leader", |inbox| taken(inbox, "hook").iter().any(|(_, kind)| kind == "decision_waiting")).await;
}
