//! The bundled runbooks act on common kube-prometheus and node-exporter alerts
//! out of the box: with the `rules` reasoner (what `arf up` diagnoses with when no
//! model is configured), a stuck rollout proposes a rollback, a target down a
//! restart, and a filling disk is handed to a person with what to look at.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::time::Duration;

use arf_agent::config::ReasonerKind;
use arf_audit::RecordKind;

/// What the diagnosis of `incident` logged, as text.
async fn diagnosed(audit: &arf_audit::AuditClient, incident: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let trail = audit.read_incident(incident).await.unwrap();
        if let Some(diagnosis) = trail.iter().find(|r| r.kind == RecordKind::Diagnosis) {
            return diagnosis.payload.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no diagnosis for {incident}: {trail:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_kubernetes_alerts_get_the_bundled_runbooks_answer() {
    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Rules;
        config.runbooks_dir = Some(support::examples().join("runbooks"));
    })
    .await;
    support::agent_client(&running.agent).await;
    let cases = [
        ("KubeDeploymentRolloutStuck", Some("rollback_deployment"), "rollout makes no progress"),
        ("TargetDown", Some("restart_service"), "stopped answering its scrapes"),
        ("NodeFilesystemSpaceFillingUp", None, "no reviewed pathway frees disk space"),
        ("KubePodCrashLooping", None, "a restart would crash again"),
    ];
    for (alertname, pathway, cause) in cases {
        let incident = support::fire(&running.webhook, alertname, "staging", "from the kube-prometheus rules").await;
        let diagnosis = diagnosed(&running.audit, &incident).await;
        assert!(diagnosis.contains(cause), "{alertname}: {diagnosis}");
        match pathway {
            Some(pathway) => assert!(diagnosis.contains(&format!("\"pathway\":\"{pathway}\"")), "{alertname} proposes {pathway}: {diagnosis}"),
            None => assert!(!diagnosis.contains("\"pathway\":\"") || diagnosis.contains("\"pathway\":\"\""), "{alertname} proposes nothing: {diagnosis}"),
        }
    }
}
