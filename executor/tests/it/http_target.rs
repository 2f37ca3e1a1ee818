//! The HTTP runner and the HTTP probe against a real HTTP target on loopback.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use serde_json::{Value, json};

use arf_audit::RecordKind;
use arf_core::catalog::{Pathway, Probe, Step};
use arf_executor::plan::RenderedProbe;

use crate::harness::{Harness, Setup, pathway, target};

/// One request the target received.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    name: Option<String>,
    headers: BTreeMap<String, String>,
    body: Value,
}

#[derive(Default)]
struct Service {
    healthy: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

impl Service {
    fn record(&self, uri: &Uri, name: Option<String>, headers: &HeaderMap, body: Value) {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned())).collect();
        self.seen.lock().unwrap().push(Seen { uri: uri.to_string(), name, headers, body });
    }

    fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn scale(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    let broken = name == "broken";
    service.record(&uri, Some(name), &headers, body);
    if broken { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}

async fn restore(State(service): State<Arc<Service>>, uri: Uri, headers: HeaderMap) -> StatusCode {
    service.record(&uri, None, &headers, Value::Null);
    service.healthy.store(true, Ordering::SeqCst);
    StatusCode::OK
}

/// A dry run: a deployment named `steady` already has what is asked for.
async fn dry_run(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, String) {
    let replicas = body["replicas"].clone();
    let caller = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    service.record(&uri, Some(name.clone()), &headers, body);
    if name == "steady" {
        (StatusCode::CONFLICT, format!("deployment {name} already has {replicas} replicas: scaling to it changes nothing (asked by {caller})\n<second line>"))
    } else if name == "busy" {
        (StatusCode::SERVICE_UNAVAILABLE, "the API server is overloaded".to_owned())
    } else {
        (StatusCode::OK, format!("deployment {name} would be scaled to {replicas}"))
    }
}

async fn health(State(service): State<Arc<Service>>) -> (StatusCode, &'static str) {
    if service.healthy.load(Ordering::SeqCst) {
        (StatusCode::OK, "status: ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "status: down")
    }
}

/// Starts the target and returns its base URL.
async fn start_target(service: Arc<Service>) -> String {
    let app = axum::Router::new()
        .route("/scale/{name}", post(scale))
        .route("/restore", post(restore))
        .route("/dry-run/{name}", post(dry_run))
        .route("/health", get(health))
        .route("/degraded", get(|| async { "status: degraded" }))
        .route(
            "/slow",
            get(|| async {
                // The target is slow on purpose; the test itself never waits on a clock.
                tokio::time::sleep(Duration::from_millis(300)).await;
                "status: ok"
            }),
        )
        .with_state(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn scale_pathway() -> Pathway {
    let action = Step::Http {
        method: "POST".into(),
        url: "{{target.url}}/scale/{{params.name}}?decision={{decision.id}}".into(),
        headers: [
            ("authorization".to_owned(), "Bearer {{target.token}}".to_owned()),
            ("x-decision".to_owned(), "{{decision.id}}".to_owned()),
        ]
        .into(),
        body: Some(
            json!({ "replicas": "{{params.replicas}}", "by": "arf", "meta": { "decision": "{{decision.id}}" } }),
        ),
        expect_status: 200,
        timeout_secs: Some(5),
    };
    let restore = Step::Http {
        method: "POST".into(),
        url: "{{target.url}}/restore".into(),
        headers: BTreeMap::new(),
        body: None,
        expect_status: 200,
        timeout_secs: None,
    };
    let health = Probe::Http {
        name: "health".into(),
        url: "{{target.url}}/health".into(),
        expect_status: 200,
        body_contains: Some("ok".into()),
        max_latency_ms: Some(5_000),
    };
    let mut p = pathway("scale", vec![action], vec![health], vec![restore]);
    p.parameters = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "replicas"],
        "properties": { "name": { "type": "string" }, "replicas": { "type": "integer" } },
    });
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_runner_renders_sends_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(Service::default());
    let url = start_target(Arc::clone(&service)).await;
    let token = "s3cret-token-value";
    let targets = [("web".to_owned(), target(&[("url", url.as_str()), ("token", token)]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![scale_pathway()], targets)).await;

    // Healthy: the request arrives as rendered, and verification passes.
    service.healthy.store(true, Ordering::SeqCst);
    let body = h.body("scale", "web", json!({ "name": "web api/v2", "replicas": 3 }));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);
    assert_eq!(execution.verification[0].probe, "health");
    assert!(execution.verification[0].passed);
    let seen = service.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let request = &seen[0];
    // The parameter is percent-encoded into one path segment, so it cannot add segments or a query.
    assert_eq!(request.uri, format!("/scale/web%20api%2Fv2?decision={}", body.decision_id));
    assert_eq!(request.name.as_deref(), Some("web api/v2"));
    assert_eq!(request.headers["authorization"], format!("Bearer {token}"));
    assert_eq!(request.headers["x-decision"], body.decision_id);
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.body, json!({ "replicas": 3, "by": "arf", "meta": { "decision": body.decision_id } }));
    // The log shows the request, but not the credential.
    let trail = h.trail(&body.incident_id).await;
    let started = trail.iter().find(|r| r.kind == RecordKind::ExecutionStarted).unwrap();
    assert_eq!(started.payload["steps"][0]["headers"]["authorization"], json!("[redacted]"));
    assert_eq!(started.payload["steps"][0]["headers"]["x-decision"], json!(body.decision_id));
    assert!(!trail.iter().any(|r| r.payload.to_string().contains(token)), "the token reached the log");

    // (healthy before, parameters, expected detail fragment, requests the target sees)
    let failures = [
        (
            false,
            json!({ "name": "web", "replicas": 3 }),
            "probe `health`: status 503, expected 200",
            ["/scale/web", "/restore"],
        ),
        (true, json!({ "name": "broken", "replicas": 3 }), "answered 500, expected 200", ["/scale/broken", "/restore"]),
    ];
    for (healthy, parameters, fragment, paths) in failures {
        service.healthy.store(healthy, Ordering::SeqCst);
        let body = h.body("scale", "web", parameters);
        let execution = h.execute(h.decide(&body).await).await.unwrap();
        assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
        assert!(execution.detail.contains(fragment), "{}", execution.detail);
        let seen: Vec<String> = service.seen().iter().map(|s| s.uri.split('?').next().unwrap().to_owned()).collect();
        assert_eq!(seen, paths);
    }
}

/// Look before acting: a pathway's precheck runs before anything is started. When
/// it fails, the action never runs, the execution ends `refused` with what the
/// check answered, and the log holds the refusal, never a start; asking again runs
/// nothing. When it passes, the start record carries what it answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_precheck_refuses_the_action_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(Service::default());
    service.healthy.store(true, Ordering::SeqCst);
    let url = start_target(Arc::clone(&service)).await;
    let targets = [("web".to_owned(), target(&[("url", url.as_str()), ("token", "s3cret-token-value")]))].into();
    let mut checked = scale_pathway();
    checked.precheck = vec![Step::Http {
        method: "POST".into(),
        url: "{{target.url}}/dry-run/{{params.name}}".into(),
        headers: [("authorization".to_owned(), "Bearer {{target.token}}".to_owned())].into(),
        body: Some(json!({ "replicas": "{{params.replicas}}" })),
        expect_status: 200,
        timeout_secs: Some(5),
    }];
    let mut h = Harness::start(dir.path(), Setup::new(vec![checked], targets)).await;
    let paths = |seen: Vec<Seen>| seen.iter().map(|s| s.uri.split('?').next().unwrap().to_owned()).collect::<Vec<_>>();

    let body = h.body("scale", "web", json!({ "name": "steady", "replicas": 3 }));
    let signed = h.decide(&body).await;
    let execution = h.execute(signed.clone()).await.unwrap();
    assert_eq!(execution.outcome, "refused", "{}", execution.detail);
    assert!(
        execution.detail.contains("answered 409, expected 200: deployment steady already has 3 replicas: scaling to it changes nothing")
            && !execution.detail.contains("second line")
            && execution.detail.contains("(asked by [redacted])"),
        "the refusal says why, in one line, without the credential the target echoed: {}",
        execution.detail
    );
    assert_eq!(paths(service.seen()), ["/dry-run/steady"], "neither the action nor a rollback ran");
    assert_eq!(h.kinds(&body.incident_id).await, ["decision", "outcome"], "a refusal, never a start");
    let trail = h.trail(&body.incident_id).await;
    let outcome = &trail[1].payload;
    assert_eq!((&outcome["outcome"], &outcome["precheck"]["ok"]), (&json!("refused"), &json!(false)), "{outcome}");
    assert_eq!(outcome["precheck"]["steps"][0]["report"]["status"], json!(409), "{outcome}");
    assert_eq!(outcome["precheck"]["planned"][0]["headers"]["authorization"], json!("[redacted]"), "what was sent is logged, its credential hidden: {outcome}");
    assert!(!outcome.to_string().contains("s3cret-token-value"), "the token the target echoed reached the log: {outcome}");
    let again = h.execute(signed).await.unwrap();
    assert_eq!(again.outcome, "refused");
    assert!(service.seen().is_empty(), "a retry answers with the refusal and sends nothing");
    assert_eq!(h.kinds(&body.incident_id).await.len(), 2);
    // An executor whose store lost the refusal (or the answer to its append) reads
    // it from the log when asked again: it neither checks again nor acts.
    h.stop_executor().await;
    std::fs::remove_dir_all(&h.executor_config().data_dir).unwrap();
    h.restart_executor().await;
    let recovered = h.execute(h.decide(&body).await).await.unwrap();
    assert!(recovered.replayed && recovered.outcome == "refused", "{recovered:?}");
    assert!(service.seen().is_empty(), "nothing was sent to the target again");

    // No answer is not a refusal: a precheck that met a server error (or no server)
    // ran nothing and gives the decision back, to be tried again.
    let body = h.body("scale", "web", json!({ "name": "busy", "replicas": 3 }));
    let status = h.execute(h.decide(&body).await).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("got no answer") && status.message().contains("answered 503"), "{}", status.message());
    assert_eq!(paths(service.seen()), ["/dry-run/busy"]);
    assert_eq!(h.kinds(&body.incident_id).await, ["decision"], "nothing is logged for a check that got no answer");

    let body = h.body("scale", "web", json!({ "name": "web", "replicas": 4 }));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);
    assert_eq!(paths(service.seen()), ["/dry-run/web", "/scale/web"]);
    let trail = h.trail(&body.incident_id).await;
    let started = trail.iter().find(|r| r.kind == RecordKind::ExecutionStarted).unwrap();
    assert_eq!(started.payload["precheck"]["ok"], json!(true), "{}", started.payload);
    assert!(started.payload["precheck"]["summary"].as_str().unwrap().contains("1 step(s) succeeded"), "{}", started.payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_probe_checks_status_body_and_latency() {
    let service = Arc::new(Service::default());
    service.healthy.store(true, Ordering::SeqCst);
    let url = start_target(service).await;
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let client = reqwest::Client::new();
    // (path, expected status, body must contain, latency limit) -> passed, detail fragment
    let cases = [
        ((url.as_str(), "/health", 200, Some("ok"), Some(5_000)), true, "status 200 in"),
        ((url.as_str(), "/health", 204, None, None), false, "status 200, expected 204"),
        ((url.as_str(), "/degraded", 200, Some("ok"), None), false, "the body does not contain `ok`"),
        ((url.as_str(), "/slow", 200, Some("ok"), Some(100)), false, "over the 100 ms limit"),
        ((url.as_str(), "/missing", 200, None, None), false, "status 404, expected 200"),
        ((closed.as_str(), "/health", 200, None, None), false, "cannot connect"),
    ];
    for ((base, path, expect_status, body_contains, max_latency_ms), passed, fragment) in cases {
        let probe = RenderedProbe::Http {
            name: "health".into(),
            url: format!("{base}{path}"),
            expect_status,
            body_contains: body_contains.map(str::to_owned),
            max_latency_ms,
        };
        let result = arf_executor::probe::run(&probe, &client).await;
        assert_eq!(result.passed, passed, "{path}: {}", result.detail);
        assert!(result.detail.contains(fragment), "{path}: {}", result.detail);
    }
}
