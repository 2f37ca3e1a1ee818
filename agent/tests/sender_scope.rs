//! A sender limited to some services or environments (`services`,
//! `environments` on its identity) sends signals about those and nothing else: one about another service is refused whole (403
//! over HTTP, PERMISSION_DENIED over gRPC) and nothing of it is logged. Every
//! logged signal names its sender.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use arf_proto::v1 as pb;

const EU_TOKEN: &str = "arf-test-eu-alertmanager-token-not-a-secret-012345";
const STAGING_TOKEN: &str = "arf-test-staging-alertmanager-token-not-a-secret-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_sender_reaches_its_services_only_and_is_named_in_the_log() {
    let running = support::start(|config| {
        config.identities.push(arf_core::identity::Identity {
            name: "alertmanager-eu".into(),
            role: "source".into(),
            token_file: None,
            token_sha256: Some(arf_core::keys::token_hash(EU_TOKEN)),
            services: vec!["checkout".into()],
            environments: Vec::new(),
        });
        config.identities.push(arf_core::identity::Identity {
            name: "alertmanager-staging".into(),
            role: "source".into(),
            token_file: None,
            token_sha256: Some(arf_core::keys::token_hash(STAGING_TOKEN)),
            services: Vec::new(),
            environments: vec!["staging".into()],
        });
    })
    .await;
    let _ = support::agent_client(&running.agent).await;
    let url = format!("http://{}/v1/webhooks/generic", running.webhook);
    let http = reqwest::Client::new();
    let signal = |service: &str| serde_json::json!({"kind": "alert", "title": "Latency", "service": service, "environment": "staging"});

    let refused = http.post(&url).bearer_auth(EU_TOKEN).json(&serde_json::json!({"signals": [signal("checkout"), signal("payments")]})).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let message = refused.text().await.unwrap();
    assert!(message.contains("`alertmanager-eu` may send signals about `checkout` only, and signals[1] is about `payments`"), "{message}");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.agent)).unwrap().connect().await.unwrap();
    let mut grpc = pb::agent_client::AgentClient::with_interceptor(channel, arf_proto::server::Bearer::new(Some(EU_TOKEN)));
    let request = pb::SubmitSignalsRequest {
        signals: vec![pb::Signal { kind: "alert".into(), title: "Latency".into(), service: "payments".into(), environment: "staging".into(), ..Default::default() }],
    };
    assert_eq!(grpc.submit_signals(request).await.unwrap_err().code(), tonic::Code::PermissionDenied);

    let accepted = http.post(&url).bearer_auth(EU_TOKEN).json(&signal("checkout")).send().await.unwrap();
    assert_eq!(accepted.status(), 200, "{}", accepted.text().await.unwrap());
    let unlimited = support::http().post(&url).json(&signal("payments")).send().await.unwrap();
    assert_eq!(unlimited.status(), 200, "an identity without `services` sends about any service");

    // A sender limited to an environment: an alert labelled for production is
    // refused whole, whatever its service, and its own environment is accepted.
    let alertmanager = format!("http://{}/v1/webhooks/alertmanager", running.webhook);
    let alert = |env: &str| {
        let labels = serde_json::json!({"alertname": "Latency", "service": "payments", "env": env});
        serde_json::json!({"version": "4", "status": "firing", "receiver": "arf", "groupKey": "{}", "groupLabels": {}, "commonLabels": labels, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "alerts": [{"status": "firing", "labels": labels, "annotations": {}, "startsAt": "2026-11-26T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}]})
    };
    let refused = http.post(&alertmanager).bearer_auth(STAGING_TOKEN).json(&alert("production")).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let message = refused.text().await.unwrap();
    assert!(
        message.contains("`alertmanager-staging` may send signals about the environments `staging` only, and signals[0] is about the environment `production`"),
        "{message}"
    );
    let accepted = http.post(&alertmanager).bearer_auth(STAGING_TOKEN).json(&alert("staging")).send().await.unwrap();
    assert_eq!(accepted.status(), 200, "{}", accepted.text().await.unwrap());

    let log = running.audit.read_range(1, 0).await.unwrap();
    let signals: Vec<(String, String)> = log
        .iter()
        .filter(|r| r.kind == arf_audit::RecordKind::Signal)
        .map(|r| (r.payload["signal"]["service"].as_str().unwrap().to_owned(), r.payload["sender"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        signals,
        [("checkout".to_owned(), "alertmanager-eu".to_owned()), ("payments".to_owned(), "tests".to_owned()), ("payments".to_owned(), "alertmanager-staging".to_owned())],
        "only what was accepted, each with its sender"
    );
}
