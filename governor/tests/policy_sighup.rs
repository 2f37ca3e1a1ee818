//! SIGHUP reloads the policy bundle. Alone in its test binary, because the signal
//! reaches every governor in the process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use arf_proto::v1 as pb;
use common::{Harness, Setup, default_policies, proposal, route};
use futures::StreamExt;

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_bundle() {
    let keep = tempfile::tempdir().unwrap();
    let policies = keep.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(default_policies().join("governor.rego"), policies.join("governor.rego")).unwrap();
    let h = Harness::start(Setup { policies_dir: policies.clone(), ..Setup::default() }).await;
    let rego = std::fs::read_to_string(policies.join("governor.rego")).unwrap();
    std::fs::write(policies.join("governor.rego"), rego.replace("autonomy_confidence := 0.6", "autonomy_confidence := 0.95"))
        .unwrap();
    let mut tail = h.audit.tail(1).await.unwrap();
    // The governor installed its SIGHUP handler before it answered the health check.
    let sent = std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(sent.success());
    loop {
        let record = tokio::time::timeout(std::time::Duration::from_secs(30), tail.next()).await.expect("timed out following the log").unwrap().unwrap();
        if record.payload["event"] == "policies_reloaded" {
            assert_eq!(record.payload["identity"], "SIGHUP");
            break;
        }
    }
    assert_eq!(route(&h.evaluate(proposal("inc-1", "restart_service", "web-staging", 0.9)).await.unwrap()), pb::Route::Approval);
}
