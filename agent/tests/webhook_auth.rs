//! A sender that signs its webhooks (`agent.webhook_hmac`), over real HTTP: a
//! signed body is accepted once; a replay, a changed body, a stale timestamp and a
//! wrong secret are refused with 401, and none of them reaches the log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use arf_agent::config::HmacSource;

const SECRET: &str = "a-test-secret-for-signing-webhooks-not-a-real-one";

const PATH: &str = "/v1/webhooks/generic";

fn signed(secret: &str, timestamp: i64, body: &str) -> [(&'static str, String); 2] {
    let content = arf_agent::http::auth::signed_content(&timestamp.to_string(), PATH, body.as_bytes());
    let mac = arf_core::keys::hmac_sha256(secret.as_bytes(), &content);
    [("x-hub-signature-256", format!("sha256={}", hex::encode(mac))), ("x-arf-timestamp", timestamp.to_string())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_is_accepted_once_and_nothing_forged_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("ci.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let running = support::start(|config| {
        config.webhook_hmac = vec![HmacSource { name: "ci-scanner".into(), secret_file: secret_file.clone(), services: Vec::new(), environments: Vec::new() }];
    })
    .await;
    let _ = support::agent_client(&running.agent).await;
    let url = format!("http://{}{PATH}", running.webhook);
    let body = r#"{"kind": "alert", "title": "SignedAlert", "service": "checkout", "environment": "staging", "severity": "warning"}"#;
    let now = arf_core::time::now_ms() / 1000;
    let http = reqwest::Client::new();
    let post = |headers: [(&'static str, String); 2], body: &'static str| {
        let mut request = http.post(&url).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };

    let accepted = post(signed(SECRET, now, body), body).await.unwrap();
    assert_eq!(accepted.status(), 200, "{}", accepted.text().await.unwrap());
    let cases = [
        ("a replay", signed(SECRET, now, body), body),
        ("a changed body", signed(SECRET, now - 1, body), r#"{"kind": "alert", "title": "Forged", "service": "payments", "environment": "staging"}"#),
        ("a stale timestamp", signed(SECRET, now - 301, body), body),
        ("another secret", signed("another-secret-of-sufficient-length-000000", now - 2, body), body),
    ];
    for (what, headers, body) in cases {
        let refused = post(headers, body).await.unwrap();
        assert_eq!(refused.status(), 401, "{what}");
        let message = refused.text().await.unwrap();
        assert!(message.contains("error"), "{what}: {message}");
    }
    let log = running.audit.read_range(1, 0).await.unwrap();
    let signals: Vec<_> = log.iter().filter(|r| r.kind == arf_audit::RecordKind::Signal).collect();
    assert_eq!(signals.len(), 1, "only the one signed signal is in the log");
    assert_eq!(signals[0].payload["signal"]["title"], "SignedAlert");
}
