//! The redaction corpus: 40 distinct secret forms, and one in a label key, planted in every signal
//! format, reach neither the model (the request bodies the scripted server
//! receives) nor the audit log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use serde_json::json;

use arf_agent::config::ReasonerKind;
use support::{ModelServer, Reply};

/// `(name, secret as planted, the part that must never appear)`. Test values, none real.
const CORPUS: &[(&str, &str, &str)] = &[
    ("aws access key id", "AKIAZ7QK3MW9XR2TLPVB", "AKIAZ7QK3MW9XR2TLPVB"),
    ("aws temporary key id", "ASIAQ4NX8JW2KD7PLRMT", "ASIAQ4NX8JW2KD7PLRMT"),
    ("aws secret access key", "aws_secret_access_key=Wq7rX2pL9vK4mZ8nB3cD6fG1hJ5kT0yU2iO9aS4e", "Wq7rX2pL9vK4mZ8nB3cD6fG1hJ5kT0yU2iO9aS4e"),
    ("github classic token", "ghp_R7dK2mQ9xW4vL8nZ3pB6tY1cF5hJ0sG2aE7u", "R7dK2mQ9xW4vL8nZ3pB6tY1cF5hJ0sG2aE7u"),
    ("github oauth token", "gho_T4nW8qZ2xK6vM9pL3dR7bY1cF5hJ0sG2aE7u", "T4nW8qZ2xK6vM9pL3dR7bY1cF5hJ0sG2aE7u"),
    ("github app token", "ghs_P9mX3qW7zK2vN6tL4dR8bY1cF5hJ0sG2aE7u", "P9mX3qW7zK2vN6tL4dR8bY1cF5hJ0sG2aE7u"),
    ("github fine-grained token", "github_pat_11AB3CD5E0xK7mQ2wZ9vL4_pT8nR3bY6cF1hJ5sG0aE2uW7qX4zK9vM3dL8tN6pR", "11AB3CD5E0xK7mQ2wZ9vL4_pT8nR3bY6cF1hJ5sG0aE2uW7qX4zK9vM3dL8tN6pR"),
    ("gitlab token", "glpat-Xk7Qm2Wz9Lv4Np8Tb3Rc", "Xk7Qm2Wz9Lv4Np8Tb3Rc"),
    ("slack bot token", "xoxb-283746519203-918273645501-Qm7Xk2Wz9Lv4Np8Tb3RcY6", "918273645501-Qm7Xk2Wz9Lv4Np8Tb3RcY6"),
    ("slack user token", "xoxp-918273645501-283746519203-Zk3Qm7Wx2Lv9Np4Tb8RcY1", "283746519203-Zk3Qm7Wx2Lv9Np4Tb8RcY1"),
    ("slack webhook", "https://hooks.slack.com/services/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", "q7Xk2Wz9Lv4Np8Tb3RcY6mQ1"),
    ("jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhcmYtdGVzdCIsImFkbWluIjp0cnVlfQ.Qm7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW7qX4zK", "Qm7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW7qX4zK"),
    ("bearer header", "Authorization: Bearer sk-proj-Tb3RcY6dF1hJ5sG0aE2uW7qX4zK9vM3", "sk-proj-Tb3RcY6dF1hJ5sG0aE2uW7qX4zK9vM3"),
    ("basic auth header", "Authorization: Basic YXJmLWFkbWluOlM3cjBuZ1Bhc3M=", "YXJmLWFkbWluOlM3cjBuZ1Bhc3M"),
    ("rsa private key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAq7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW7qX4zK9vM3dL8\n-----END RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEAq7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW7qX4zK9vM3dL8"),
    ("ec private key", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBq7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW7qX4zKoAoGCCqGSM49\n-----END EC PRIVATE KEY-----", "MHcCAQEEIBq7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW7qX4zKoAoGCCqGSM49"),
    ("openssh private key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"),
    ("pkcs8 private key", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7Xk2Wz9Lv4Np8T\n-----END PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7Xk2Wz9Lv4Np8T"),
    ("pgp private key", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBGXk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW7qX4zK9vM3dL8tN6pRq7Xk2W\n-----END PGP PRIVATE KEY BLOCK-----", "lQOYBGXk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW7qX4zK9vM3dL8tN6pRq7Xk2W"),
    ("postgres url", "postgres://checkout_app:Pg-s3cr3t-Vk7Qm2@db.internal:5432/orders", "Pg-s3cr3t-Vk7Qm2"),
    ("mysql url", "mysql://root:My-s3cr3t-Lw9Np4@mysql.internal:3306/app", "My-s3cr3t-Lw9Np4"),
    ("mongodb url", "mongodb+srv://svc:Mg-s3cr3t-Tb8Rc1@cluster0.example.net/db", "Mg-s3cr3t-Tb8Rc1"),
    ("redis url", "redis://:Rd-s3cr3t-Qx3Zk7@redis.internal:6379/0", "Rd-s3cr3t-Qx3Zk7"),
    ("amqp url", "amqp://guest:Mq-s3cr3t-Wz2Lv9@rabbit.internal:5672/", "Mq-s3cr3t-Wz2Lv9"),
    ("ado.net connection string", "Server=sql.internal;Database=app;User Id=sa;Password=Sql-s3cr3t-Np4Tb8;", "Sql-s3cr3t-Np4Tb8"),
    ("jdbc password parameter", "jdbc:postgresql://db:5432/app?user=app&password=Jd-s3cr3t-Rc6dF1", "Jd-s3cr3t-Rc6dF1"),
    ("azure storage key", "DefaultEndpointsProtocol=https;AccountName=arf;AccountKey=Az7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW7qX4zK9vM3dL8tN6pRq7==;EndpointSuffix=core.windows.net", "Az7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW7qX4zK9vM3dL8tN6pRq7"),
    ("google api key", "AIzaSyQm7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2", "AIzaSyQm7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2"),
    ("stripe live key", "sk_live_51Hq7Xk2Wz9Lv4Np8Tb3RcY6dF1", "sk_live_51Hq7Xk2Wz9Lv4Np8Tb3RcY6dF1"),
    ("stripe restricted key", "rk_live_51Tb3RcY6dF1hJ5sG0aE2uW7", "rk_live_51Tb3RcY6dF1hJ5sG0aE2uW7"),
    ("sendgrid key", "SG.Qm7Xk2Wz9Lv4Np8Tb3Rc.Y6dF1hJ5sG0aE2uW7qX4zK9vM3dL8tN6pRq7Xk2W", "Y6dF1hJ5sG0aE2uW7qX4zK9vM3dL8tN6pRq7Xk2W"),
    ("twilio key", "SK0f3a9c2b7d4e1f8a6b5c3d2e1f0a9b8c", "SK0f3a9c2b7d4e1f8a6b5c3d2e1f0a9b8c"),
    ("npm token", "npm_Qm7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW", "npm_Qm7Xk2Wz9Lv4Np8Tb3RcY6dF1hJ5sG0aE2uW"),
    ("api key assignment", "api_key: \"ak-7Xk2Wz9Lv4Np8Tb3\"", "ak-7Xk2Wz9Lv4Np8Tb3"),
    ("client secret assignment", "client_secret=cs-Lv4Np8Tb3RcY6dF1", "cs-Lv4Np8Tb3RcY6dF1"),
    ("unlabelled high-entropy key", "X9fK2mQ7vL4pW8zR3tB6nY1cH5jD0sG2aE7uV4kM9", "X9fK2mQ7vL4pW8zR3tB6nY1cH5jD0sG2aE7uV4kM9"),
    // The forms a review found getting through (issue 13).
    ("json-quoted password", r#"{"password": "Hx7-quoted-pw-Q2"}"#, "Hx7-quoted-pw-Q2"),
    ("x-api-key header", "x-api-key: 9f86d081884c7d659a2feaa0c55ad015", "9f86d081884c7d659a2feaa0c55ad015"),
    ("password with an ampersand", "password=Tr0ub&dorUniq3", "dorUniq3"),
    ("azure sas signature", "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=Qm7Xk2Wz9Lv4Np8Tb3RcY6dF%3D", "Qm7Xk2Wz9Lv4Np8Tb3RcY6dF"),
];

/// A secret in a label's key, not its value: every field is redacted, keys included.
const IN_A_LABEL_KEY: &str = "ASIAW9TR3KD7PLQ2XMVN";

/// Every secret, joined into one block of text, as a careless log line would carry them.
fn planted() -> String {
    CORPUS.iter().map(|(name, secret, _)| format!("{name}: {secret}")).collect::<Vec<_>>().join("\n")
}

/// One payload per format, each carrying the whole corpus in its free text.
fn payloads() -> Vec<(&'static str, serde_json::Value)> {
    let text = planted();
    vec![
        ("alertmanager", json!({"version": "4", "status": "firing", "alerts": [{"status": "firing",
            "labels": {"alertname": "LeakyAlert", "service": "svc-alertmanager", "env": "staging", format!("k-{IN_A_LABEL_KEY}"): "1"},
            "annotations": {"description": text}}]})),
        ("generic", json!({"kind": "alert", "title": "LeakyAlert", "service": "svc-generic", "environment": "staging",
            "description": text, "labels": {"dsn": CORPUS[19].1}})),
        ("sarif", json!({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "gitleaks"}},
            "results": [{"ruleId": "generic-secret", "level": "error", "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": "config/prod.env"}, "region": {"startLine": 3}}}]}]}]})),
        ("trivy", json!({"SchemaVersion": 2, "ArtifactName": "registry.example/checkout:1.2.3", "Results": [{"Target": "app",
            "Vulnerabilities": [{"VulnerabilityID": "CVE-2026-0001", "PkgName": "openssl", "InstalledVersion": "1.1.1",
            "Severity": "CRITICAL", "Title": "leaky", "Description": text}]}]})),
        ("asff", json!({"Findings": [{"SchemaVersion": "2018-10-08", "Id": "finding-1", "Title": "Exposed credentials",
            "Description": text, "Severity": {"Label": "CRITICAL"}, "Resources": [{"Type": "AwsS3Bucket", "Id": "arn:aws:s3:::leaky"}]}]})),
        ("falco", json!({"rule": "Read sensitive file untrusted", "priority": "Critical", "output": text,
            "time": "2026-11-22T03:00:00Z", "output_fields": {"proc.cmdline": CORPUS[25].1, "container.name": "leaky"}})),
        ("kubernetes", json!({"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "BackOff", "message": text,
            "involvedObject": {"kind": "Pod", "name": "checkout-7d9f8c6b5d-x2k9q", "namespace": "prod"}, "lastTimestamp": "2026-11-22T03:00:00Z"})),
        ("cloudevents", json!({"specversion": "1.0", "id": "1", "source": "/monitoring", "type": "dev.cdevents.incident.detected.0.3.0",
            "data": {"context": {"type": "dev.cdevents.incident.detected.0.3.0", "source": "/monitoring", "timestamp": "2026-11-22T03:00:00Z"},
                     "subject": {"id": "incident-9", "content": {"description": text}}}})),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_model_or_the_log() {
    assert!(CORPUS.len() >= 30);
    let server = ModelServer::start(vec![], Some(Reply::Content("{\"hypotheses\": []}".to_owned()))).await;
    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Openai;
        let mut openai = support::openai(&server.base_url);
        openai.max_repairs = 0;
        config.openai = Some(openai);
    })
    .await;
    let _ = support::agent_client(&running.agent).await;
    let http = support::http();
    let mut incidents = Vec::new();
    for (format, payload) in payloads() {
        let service = format!("svc-{format}");
        let url = format!("http://{}/v1/webhooks/{format}?service={service}&environment=staging", running.webhook);
        let response = http.post(url).json(&payload).send().await.unwrap();
        assert_eq!(response.status(), 200, "{format}");
        let body: serde_json::Value = response.json().await.unwrap();
        incidents.push((format, body["accepted"][0]["incident_id"].as_str().unwrap().to_owned()));
    }
    // A second payload kind that travels as text: kubectl output.
    let kubectl = format!("LAST SEEN   TYPE      REASON   OBJECT                        MESSAGE\n1m          Warning   BackOff  Pod/leaky-7d9f8c6b5d-x2k9q    {}\n", CORPUS[0].1);
    let response = http
        .post(format!("http://{}/v1/webhooks/kubectl?service=svc-kubectl&environment=staging", running.webhook))
        .body(kubectl)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    incidents.push(("kubectl", body["accepted"][0]["incident_id"].as_str().unwrap().to_owned()));

    for (format, incident) in &incidents {
        assert!(!incident.is_empty(), "{format} opened an incident");
        support::wait_for_state(&running.audit, incident, &["escalated", "proposed"]).await;
    }
    let requests = server.received();
    assert_eq!(requests.len(), incidents.len(), "one diagnosis per format");
    let prompts: String = requests.iter().map(|r| r.body.to_string()).collect();
    assert!(prompts.contains("[REDACTED]"), "the marker shows where secrets were");
    let log: String = running.audit.read_range(1, 0).await.unwrap().iter().map(|r| r.payload.to_string()).collect();
    let mut leaks = Vec::new();
    for (name, _, core) in CORPUS {
        if prompts.contains(core) {
            leaks.push(format!("{name} reached the model"));
        }
        if log.contains(core) {
            leaks.push(format!("{name} reached the audit log"));
        }
    }
    for (place, text) in [("the model", &prompts), ("the audit log", &log)] {
        if text.contains(IN_A_LABEL_KEY) {
            leaks.push(format!("a secret in a label key reached {place}"));
        }
    }
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
    // Evidence survives: ordinary words are not redacted.
    assert!(prompts.contains("LeakyAlert"));
    assert!(log.contains("LeakyAlert"));
}
