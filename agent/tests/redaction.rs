//! The redaction corpus (`tests/corpus/redaction.toml`: at least 100 secret forms,
//! and one in a label key), planted in every signal format, reaches neither the
//! model (the request bodies the scripted server receives) nor the audit log; and
//! the look-alikes an engineer needs reach the model intact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use serde_json::json;

use arf_agent::config::ReasonerKind;
use support::{ModelServer, Reply};

/// A secret in a label's key, not its value: every field is redacted, keys included.
const IN_A_LABEL_KEY: &str = "ASIAW9TR3KD7PLQ2XMVN";

/// Secrets under secret-named keys, as labels, annotations and fields: the name is
/// one field and the value another, so no rule on text sees them together. Short,
/// punctuated or hex values, which no rule finds by their looks either.
const UNDER_SECRET_NAMES: [(&str, &str); 4] =
    [("db_password", "Summer2024!x"), ("api_token", "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"), ("SMTP_PASS", "mailP4ss!"), ("clientSecret", "cs-7Hq!2x")];

/// Every secret, joined into one block of text, as a careless log line would carry them.
fn planted(corpus: &support::corpus::Corpus) -> String {
    let secrets = corpus.secrets.iter().map(|s| format!("{}: {}", s.name, s.text));
    let lookalikes = corpus.lookalikes.iter().map(|l| l.text.clone());
    secrets.chain(lookalikes).collect::<Vec<_>>().join("\n")
}

/// One payload per format, each carrying the whole corpus in its free text.
fn payloads(corpus: &support::corpus::Corpus) -> Vec<(&'static str, serde_json::Value)> {
    let text = planted(corpus);
    let secret = |name: &str| corpus.secrets.iter().find(|s| s.name == name).unwrap().text.clone();
    vec![
        ("alertmanager", json!({"version": "4", "status": "firing", "alerts": [{"status": "firing",
            "labels": {"alertname": "LeakyAlert", "service": "svc-alertmanager", "env": "staging", format!("k-{IN_A_LABEL_KEY}"): "1",
                UNDER_SECRET_NAMES[0].0: UNDER_SECRET_NAMES[0].1, UNDER_SECRET_NAMES[1].0: UNDER_SECRET_NAMES[1].1},
            "annotations": {"description": text, UNDER_SECRET_NAMES[2].0: UNDER_SECRET_NAMES[2].1, UNDER_SECRET_NAMES[3].0: UNDER_SECRET_NAMES[3].1}}]})),
        ("generic", json!({"kind": "alert", "title": "LeakyAlert", "service": "svc-generic", "environment": "staging",
            "description": text, "labels": {"dsn": secret("postgres url password"), UNDER_SECRET_NAMES[0].0: UNDER_SECRET_NAMES[0].1}})),
        ("sarif", json!({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "gitleaks"}},
            "results": [{"ruleId": "generic-secret", "level": "error", "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": "config/prod.env"}, "region": {"startLine": 3}}}]}]}]})),
        ("trivy", json!({"SchemaVersion": 2, "ArtifactName": "registry.example/checkout:1.2.3", "Results": [{"Target": "app",
            "Vulnerabilities": [{"VulnerabilityID": "CVE-2026-0001", "PkgName": "openssl", "InstalledVersion": "1.1.1",
            "Severity": "CRITICAL", "Title": "leaky", "Description": text}]}]})),
        ("asff", json!({"Findings": [{"SchemaVersion": "2018-10-08", "Id": "finding-1", "Title": "Exposed credentials",
            "Description": text, "Severity": {"Label": "CRITICAL"}, "Resources": [{"Type": "AwsS3Bucket", "Id": "arn:aws:s3:::leaky"}]}]})),
        ("falco", json!({"rule": "Read sensitive file untrusted", "priority": "Critical", "output": text,
            "time": "2026-11-22T03:00:00Z", "output_fields": {"proc.cmdline": secret("jdbc password parameter"), "container.name": "leaky"}})),
        ("kubernetes", json!({"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "BackOff", "message": text,
            "involvedObject": {"kind": "Pod", "name": "checkout-7d9f8c6b5d-x2k9q", "namespace": "prod"}, "lastTimestamp": "2026-11-22T03:00:00Z"})),
        ("cloudevents", json!({"specversion": "1.0", "id": "1", "source": "/monitoring", "type": "dev.cdevents.incident.detected.0.3.0",
            "data": {"context": {"type": "dev.cdevents.incident.detected.0.3.0", "source": "/monitoring", "timestamp": "2026-11-22T03:00:00Z"},
                     "subject": {"id": "incident-9", "content": {"description": text}}}})),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_model_or_the_log() {
    let corpus = support::corpus::load();
    assert!(corpus.secrets.len() >= 100);
    let server = ModelServer::start(vec![], Some(Reply::Content("{\"hypotheses\": []}".to_owned()))).await;
    let running = support::start(|config| {
        // Room for the whole planted corpus in one item: a signal over the budget
        // would be left out of the prompt, and the test would prove nothing there.
        config.max_snapshot_tokens = 200_000;
        config.reasoner = ReasonerKind::Openai;
        let mut openai = support::openai(&server.base_url);
        openai.max_repairs = 0;
        config.openai = Some(openai);
    })
    .await;
    let _ = support::agent_client(&running.agent).await;
    let http = support::http();
    let mut incidents = Vec::new();
    for (format, payload) in payloads(&corpus) {
        let service = format!("svc-{format}");
        let url = format!("http://{}/v1/webhooks/{format}?service={service}&environment=staging", running.webhook);
        let response = http.post(url).json(&payload).send().await.unwrap();
        assert_eq!(response.status(), 200, "{format}");
        let body: serde_json::Value = response.json().await.unwrap();
        incidents.push((format, body["accepted"][0]["incident_id"].as_str().unwrap().to_owned()));
    }
    // A second payload kind that travels as text: kubectl output.
    let kubectl = format!("LAST SEEN   TYPE      REASON   OBJECT                        MESSAGE\n1m          Warning   BackOff  Pod/leaky-7d9f8c6b5d-x2k9q    {}\n", corpus.secrets[0].text);
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
    for secret in &corpus.secrets {
        if prompts.contains(&secret.core) {
            leaks.push(format!("{} reached the model", secret.name));
        }
        if log.contains(&secret.core) {
            leaks.push(format!("{} reached the audit log", secret.name));
        }
    }
    for (place, text) in [("the model", &prompts), ("the audit log", &log)] {
        if text.contains(IN_A_LABEL_KEY) {
            leaks.push(format!("a secret in a label key reached {place}"));
        }
        for (name, value) in UNDER_SECRET_NAMES {
            if text.contains(value) {
                leaks.push(format!("the value of `{name}` reached {place}"));
            }
            if !text.contains(name) {
                leaks.push(format!("the name `{name}`, evidence, did not reach {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
    // What an engineer needs arrives intact: as JSON text in the log, and in the
    // model's request as the prompt shows data (JSON, markup characters as
    // `\uXXXX`) inside the request's own JSON.
    let json = |text: &str| {
        let encoded = serde_json::to_string(text).unwrap();
        encoded[1..encoded.len() - 1].to_owned()
    };
    let as_prompt_data = |text: &str| {
        json(text).chars().map(|c| if matches!(c, '<' | '>' | '&' | '\'') { format!("\\u{:04x}", c as u32) } else { c.to_string() }).collect::<String>()
    };
    let mut destroyed = Vec::new();
    for lookalike in &corpus.lookalikes {
        for (place, text, encoded) in [("the model", &prompts, json(&as_prompt_data(&lookalike.text))), ("the audit log", &log, json(&lookalike.text))] {
            if !text.contains(&encoded) {
                destroyed.push(format!("`{}` did not reach {place} intact", lookalike.text));
            }
        }
    }
    assert!(destroyed.is_empty(), "{}", destroyed.join("\n"));
    // Evidence survives: ordinary words are not redacted.
    assert!(prompts.contains("LeakyAlert"));
    assert!(log.contains("LeakyAlert"));
}
