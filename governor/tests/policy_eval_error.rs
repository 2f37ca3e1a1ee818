//! A rule that errors at evaluation makes the decision `deny`, with the error in
//! the diagnostics: never a failed call, and never an action.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use arf_proto::v1 as pb;
use common::{Harness, Setup, proposal, route};

const ERRORING: &str = r#"package arf.governor

import rego.v1

# A typo'd threshold that only fails at evaluation time.
threshold := to_number("zero point six")

decision := {
	"route": "autonomous",
	"reasons": ["confident enough"],
	"rules_fired": ["confidence"],
	"approvals_required": 0,
	"approver_roles": [],
} if {
	input.confidence >= threshold
}
"#;

#[tokio::test]
async fn a_rule_that_errors_denies_with_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erroring.rego"), ERRORING).unwrap();
    let h = Harness::start(Setup { policies_dir: dir.path().to_owned(), ..Setup::default() }).await;

    let decision = h.evaluate(proposal("inc-err", "restart_service", "web-staging", 0.99)).await.unwrap();
    assert_eq!(route(&decision), pb::Route::Deny);
    assert_eq!(decision.state, "denied");
    let policy = decision.policy.unwrap();
    assert_eq!(policy.diagnostics.len(), 1, "{policy:?}");
    assert!(policy.diagnostics[0].contains("evaluating `data.arf.governor.decision` failed"), "{policy:?}");
    assert!(policy.diagnostics[0].contains("to_number"), "{policy:?}");

    let logged = h.decision_records("inc-err", &decision.decision_id, "denied").await;
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].payload["policy"]["diagnostics"][0], policy.diagnostics[0].as_str());
    assert!(h.decision_records("inc-err", &decision.decision_id, "authorized").await.is_empty());

    let explanation = h.explain("alice", &decision.decision_id).await.unwrap();
    assert!(explanation.text.contains("! policy error:"), "{}", explanation.text);
}
