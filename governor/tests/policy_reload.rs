//! Policies reload without a restart (the `ReloadPolicies` RPC and SIGHUP). A broken
//! bundle is refused with the file named, and the running bundle keeps serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use arf_proto::v1 as pb;
use common::{Harness, Setup, default_policies, proposal, route};
use tonic::Code;

/// A copy of the default bundle the test may change.
fn bundle() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(default_policies().join("governor.rego"), policies.join("governor.rego")).unwrap();
    (dir, policies)
}

async fn staging(h: &Harness, incident: &str) -> pb::Decision {
    h.evaluate(proposal(incident, "restart_service", "web-staging", 0.9)).await.unwrap()
}

#[tokio::test]
async fn a_broken_bundle_is_refused_at_reload_and_the_running_one_keeps_serving() {
    let (_keep, policies) = bundle();
    let h = Harness::start(Setup { policies_dir: policies.clone(), ..Setup::default() }).await;
    assert_eq!(route(&staging(&h, "inc-1").await), pb::Route::Autonomous);

    std::fs::write(policies.join("freeze.rego"), "package arf.governor\n\nimport rego.v1\n\nfreeze if {\n  input.x ==\n}\n")
        .unwrap();
    let refused = h.reload("dave").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("freeze.rego") && refused.message().contains("does not parse"), "{}", refused.message());
    assert!(refused.message().contains("the running one keeps serving"), "{}", refused.message());
    assert_eq!(h.governance_events("policies_reload_refused").await.len(), 1);

    // The old bundle still decides.
    let decision = staging(&h, "inc-2").await;
    assert_eq!(route(&decision), pb::Route::Autonomous);
    assert_eq!(decision.policy.unwrap().rules_fired, vec!["low_risk_autonomy"]);

    // A bundle without the decision rule is refused too, naming the files.
    std::fs::remove_file(policies.join("freeze.rego")).unwrap();
    let rego = std::fs::read_to_string(policies.join("governor.rego")).unwrap();
    std::fs::write(policies.join("governor.rego"), rego.replace("\ndecision := {", "\nanswer := {")).unwrap();
    let refused = h.reload("dave").await.unwrap_err();
    assert!(refused.message().contains("defines no rule") && refused.message().contains("governor.rego"), "{}", refused.message());
    assert_eq!(route(&staging(&h, "inc-3").await), pb::Route::Autonomous);
}

#[tokio::test]
async fn a_good_bundle_is_reloaded_by_an_admin_only() {
    let (_keep, policies) = bundle();
    let h = Harness::start(Setup { policies_dir: policies.clone(), ..Setup::default() }).await;
    let rego = std::fs::read_to_string(policies.join("governor.rego")).unwrap();
    std::fs::write(policies.join("governor.rego"), rego.replace("autonomy_confidence := 0.6", "autonomy_confidence := 0.95"))
        .unwrap();

    let refused = h.reload("alice").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(route(&staging(&h, "inc-1").await), pb::Route::Autonomous);

    let files = h.reload("dave").await.unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("governor.rego"));
    let reloaded = h.governance_events("policies_reloaded").await;
    assert_eq!(reloaded[0].payload["identity"], "dave");
    // Confidence 0.9 is now below the bar for autonomy.
    assert_eq!(route(&staging(&h, "inc-2").await), pb::Route::Approval);
}
