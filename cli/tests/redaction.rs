//! The redaction corpus (`agent/tests/corpus/redaction.toml`) through a real
//! deployment: planted in an alert over HTTPS, no secret reaches what the CLI
//! prints (incident list and trail, as text and JSON, the audit records) or any
//! service's log (tracing output), and the look-alikes an engineer needs are in
//! the CLI's output unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

#[derive(serde::Deserialize)]
struct Secret {
    name: String,
    text: String,
    core: String,
}

#[derive(serde::Deserialize)]
struct Lookalike {
    text: String,
}

#[derive(serde::Deserialize)]
struct Corpus {
    secret: Vec<Secret>,
    lookalike: Vec<Lookalike>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_cli_or_tracing_output_and_lookalikes_survive() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/corpus/redaction.toml");
    let corpus: Corpus = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(corpus.secret.len() >= 100 && corpus.lookalike.len() >= 100);
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    for role in ["audit", "governor", "executor", "agent"] {
        plane.start(role, None).await;
    }
    let text: Vec<String> = corpus.secret.iter().map(|s| format!("{}: {}", s.name, s.text)).chain(corpus.lookalike.iter().map(|l| l.text.clone())).collect();
    let labels: serde_json::Map<String, serde_json::Value> =
        corpus.secret.iter().take(40).enumerate().map(|(i, s)| (format!("k{i}"), s.text.clone().into())).collect();
    let signal = serde_json::json!({"kind": "alert", "title": "LeakyAlert", "service": "worker", "environment": "staging",
        "severity": "warning", "description": text.join("\n"), "labels": labels});
    let url = format!("https://{}/v1/webhooks/generic", plane.webhook);
    let sent = plane.webhook_client().post(&url).bearer_auth(plane.token("alertmanager")).json(&signal).send().await.unwrap();
    assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    let answer: serde_json::Value = sent.json().await.unwrap();
    let incident = answer["accepted"][0]["incident_id"].as_str().unwrap().to_owned();
    plane.trail_until(&incident, std::time::Duration::from_secs(30), "the diagnosis", |t| t.iter().any(|r| r.kind == arf_audit::RecordKind::Diagnosis)).await;

    let arf = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_arf"));
        command.args(args).arg("--agent").arg(plane.addr("agent").to_string()).arg("--audit").arg(plane.addr("audit").to_string());
        command.arg("--governor").arg(plane.addr("governor").to_string()).arg("--tls-dir").arg(plane.certs());
        command.arg("--token-file").arg(plane.dir.path().join("secrets/alice.token"));
        let output = command.output().unwrap();
        assert!(output.status.success(), "arf {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    };
    let bundle = plane.dir.path().join("evidence.json");
    let data_dir = plane.dir.path().to_str().unwrap().to_owned();
    let shown = [
        arf(&["incident", "list"]),
        arf(&["incident", "list", "--json"]),
        arf(&["incident", "show", &incident]),
        arf(&["incident", "show", &incident, "--json"]),
        arf(&["audit", "export", &incident, "--out", bundle.to_str().unwrap(), "--data-dir", &data_dir]),
    ];
    let exported = std::fs::read_to_string(&bundle).unwrap();
    let cli = format!("{}\n{exported}", shown.join("\n"));
    let logs: String = ["audit", "governor", "executor", "agent"].iter().map(|role| plane.log(role)).collect();
    assert!(logs.contains("agent listening"), "the logs were read");
    let mut leaks = Vec::new();
    for secret in &corpus.secret {
        for (place, text) in [("the CLI's output", &cli), ("a service's log", &logs)] {
            if text.contains(&secret.core) {
                leaks.push(format!("{} reached {place}", secret.name));
            }
        }
    }
    assert!(leaks.is_empty(), "{} leaks:\n{}", leaks.len(), leaks.join("\n"));
    // The exported evidence holds the signal whole: its description keeps every look-alike.
    let bundle: serde_json::Value = serde_json::from_str(&exported).unwrap();
    let descriptions: String = bundle["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["record"]["kind"] == "signal")
        .filter_map(|r| r["record"]["payload"]["signal"]["description"].as_str())
        .collect();
    assert!(!descriptions.is_empty(), "the bundle holds the signal");
    let destroyed: Vec<&str> = corpus.lookalike.iter().map(|l| l.text.as_str()).filter(|t| !descriptions.contains(t)).collect();
    assert!(destroyed.is_empty(), "look-alikes missing from `arf audit export`:\n{}", destroyed.join("\n"));
}
