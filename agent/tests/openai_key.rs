//! The API key comes from the environment variable the configuration names: it
//! is sent as a bearer token, and it is never logged or stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use arf_agent::config::ReasonerKind;
use support::{ModelServer, Reply};

const KEY: &str = "sk-test-Wq7rX2pL9vK4mZ8nB3cD6fG1hJ5kT0yU";

#[tokio::test]
async fn the_key_is_sent_and_never_recorded() {
    // This file holds one test, so nothing else reads the environment while it changes.
    #[expect(unsafe_code, reason = "set_var is unsafe in edition 2024; no other thread reads the environment yet")]
    unsafe {
        std::env::set_var("ARF_TEST_MODEL_KEY", KEY);
    }
    let server = ModelServer::start(vec![], Some(Reply::Content("{\"hypotheses\": []}".to_owned()))).await;
    let mut openai = support::openai(&server.base_url);
    openai.api_key_env = Some("ARF_TEST_MODEL_KEY".to_owned());
    openai.max_repairs = 0;
    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Openai;
        config.openai = Some(openai.clone());
        assert_eq!(config.validate(), Ok(()), "a set key variable validates");
    })
    .await;
    let _ = support::agent_client(&running.agent).await;
    let incident = support::fire(&running.webhook, "CheckoutHighErrorRate", "staging", "5xx").await;
    support::wait_for_state(&running.audit, &incident, &["escalated", "proposed"]).await;
    let received = server.received();
    assert_eq!(received[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    let log: String = running.audit.read_range(1, 0).await.unwrap().iter().map(|r| r.payload.to_string()).collect();
    assert!(!log.contains(KEY), "the key is not in the audit log");
    assert!(!received[0].body.to_string().contains(KEY), "nor in the prompt");

    let mut unset = support::openai(&server.base_url);
    unset.api_key_env = Some("ARF_TEST_MODEL_KEY_THAT_IS_NOT_SET".to_owned());
    let mut config = arf_agent::config::Config { openai: Some(unset), reasoner: ReasonerKind::Openai, ..base_config() };
    config.runbooks_dir = None;
    let error = config.validate().unwrap_err();
    assert!(error.contains("`ARF_TEST_MODEL_KEY_THAT_IS_NOT_SET`, which is not set"), "{error}");
}

fn base_config() -> arf_agent::config::Config {
    let dir = std::env::temp_dir().join(format!("arf-key-test-{}", std::process::id()));
    let token = dir.join("token");
    arf_core::keys::load_or_generate_token(&token).unwrap();
    arf_agent::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        webhook_listen: "127.0.0.1:0".parse().unwrap(),
        audit_addr: "127.0.0.1:1".into(),
        audit_token_file: token.clone(),
        governor_addr: "127.0.0.1:1".into(),
        governor_token_file: token,
        governor_retry_secs: 0,
        catalog_dir: support::examples().join("pathways"),
        reasoner: ReasonerKind::Scripted,
        scripted_dir: None,
        runbooks_dir: None,
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
        targets: support::inventory(),
        identities: support::identities(),
        webhook_hmac: vec![],
        mtls: None,
        insecure_loopback_only: true,
        metrics_listen: None,
    }
}
