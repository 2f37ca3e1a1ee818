//! A `promql` investigation tool against a real Prometheus (Debian's
//! `prometheus`, or `ARF_PROMETHEUS`), started by the test and scraping itself
//! under the job name of the incident's service.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use arf_agent::config::ReasonerKind;
use arf_audit::RecordKind;

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_promql_tool_reads_a_real_prometheus_and_the_model_cites_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = arf_core::net::free_loopback_port().unwrap().port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: checkout\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")).unwrap();
    let binary = std::env::var("ARF_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
    let _prometheus = Prometheus(
        Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{binary}` ({e}): install Debian's `prometheus` (`.ci/run` does) or set ARF_PROMETHEUS")),
    );
    let base = format!("http://127.0.0.1:{port}");
    // Until Prometheus has scraped itself once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer: Value = match reqwest::Client::new().get(format!("{base}/api/v1/query")).query(&[("query", "up{job=\"checkout\"}")]).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        if answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "Prometheus never scraped itself: {answer}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let tools = dir.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::write(
        tools.join("prometheus.toml"),
        format!(
            r#"
[[tool]]
name = "target_up"
kind = "promql"
description = "Whether Prometheus reaches the service's scrape targets."
endpoint = "{base}"
query = 'up{{job="{{{{ target.service }}}}"}}'

[[tool]]
name = "target_up_history"
kind = "promql"
description = "The same over the last 10 minutes."
endpoint = "{base}"
query = 'max_over_time(up{{job="{{{{ target.service }}}}"}}[{{{{ parameters.window }}}}])'
range_minutes = 10
step_secs = 30
parameters = {{ type = "object", properties = {{ window = {{ type = "string", enum = ["1m", "5m"] }} }}, required = ["window"] }}
"#
        ),
    )
    .unwrap();
    let scripted = dir.path().join("scripted");
    std::fs::create_dir_all(&scripted).unwrap();
    let completion = r#"{"hypotheses": [{"root_cause": "checkout is up to Prometheus, so the errors are in the application.", "evidence": ["{{ signals[0].id }}", "{{ tools.target_up.id }}", "{{ tools.target_up_history.id }}"], "confidence": 0.6, "uncertainty": "", "expected_impact": "", "remediations": [{"pathway": "restart_service", "target": "checkout-staging", "parameters": {"reason": "errors"}, "rationale": "recycle"}]}]}"#;
    let file = json!({"response": [{
        "name": "up", "match": {"alertname": "CheckoutHighErrorRate"}, "completion": completion,
        "investigate": [
            {"tool": "target_up", "arguments": {"target": "checkout-staging"}},
            {"tool": "target_up_history", "arguments": {"target": "checkout-staging", "window": "1m"}},
            {"tool": "target_up_history", "arguments": {"target": "checkout-staging", "window": "1m\"} or up{job=~\".+"}},
        ],
    }]});
    std::fs::write(scripted.join("up.toml"), toml::to_string(&toml::Value::try_from(file).unwrap()).unwrap()).unwrap();

    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Scripted;
        config.scripted_dir = Some(scripted.clone());
        config.investigation.tools_dir = Some(tools.clone());
    })
    .await;
    let _ = support::agent_client(&running.agent).await;
    let incident = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx at 40%").await;
    let trail = support::wait_for_state(&running.audit, &incident, &["escalated", "proposed"]).await;
    let calls: Vec<&Value> = trail.iter().filter(|r| r.kind == RecordKind::Investigation).map(|r| &r.payload).collect();
    assert_eq!(calls.len(), 3, "{calls:#?}");
    let output = |n: usize| calls[n]["item"]["data"]["output"].as_str().unwrap_or_default().to_owned();
    assert_eq!(calls[0]["status"], "answered", "{:#?}", calls[0]);
    assert!(output(0).contains("query: up{job=\"checkout\"}"), "{}", output(0));
    assert!(output(0).contains("job=\"checkout\"") && output(0).trim_end().ends_with(" 1"), "{}", output(0));
    assert_eq!(calls[1]["status"], "answered", "{:#?}", calls[1]);
    assert!(output(1).contains("points, min 1, max 1"), "a range answer, one line per series: {}", output(1));
    // A value outside the enum never reaches PromQL.
    assert_eq!(calls[2]["status"], "refused");
    let diagnosis = trail.iter().filter(|r| r.kind == RecordKind::Diagnosis).map(|r| &r.payload).find(|d| d["status"] == "grounded").unwrap();
    let evidence = diagnosis["proposal"]["hypothesis"]["evidence"].as_array().unwrap();
    assert!(evidence.contains(&json!("inv-1")) && evidence.contains(&json!("inv-2")), "{evidence:?}");
}
