//! Key rotation: while the executor trusts both the previous and the current
//! governor key, envelopes signed with either verify; once the previous key is
//! dropped from the trusted list, its envelopes are refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

use arf_core::decision::{self, DecisionBody, EnvelopeError, Route};

fn body(decision_id: &str, now_ms: i64) -> DecisionBody {
    DecisionBody {
        version: decision::ENVELOPE_VERSION,
        decision_id: decision_id.to_owned(),
        incident_id: "inc-1".to_owned(),
        proposal_id: "prop-1".to_owned(),
        snapshot_hash: "5f1c0ffee".to_owned(),
        pathway: "restart_service".to_owned(),
        pathway_digest: "abc".to_owned(),
        target: "web-staging".to_owned(),
        parameters: serde_json::json!({}),
        route: Route::Autonomous,
        approvals: vec![],
        risk_score: 0.2,
        issued_at_ms: now_ms,
        expires_at_ms: now_ms + 900_000,
    }
}

#[test]
fn an_envelope_signed_with_the_previous_key_verifies_while_both_are_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let previous_file = dir.path().join("keys/governor.key");
    let current_file = dir.path().join("keys/governor-2.key");
    // Both generated the way the governor (and `arf keys generate`) does: 0600, with a `.pub`.
    let previous = arf_core::keys::load_or_generate(&previous_file).unwrap();
    let current = arf_core::keys::load_or_generate(&current_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&current_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // The executor's configuration during the rotation: both public keys.
    let trusted_both = vec![
        arf_core::keys::load_trusted(&arf_core::keys::public_path(&previous_file)).unwrap(),
        arf_core::keys::load_trusted(&arf_core::keys::public_path(&current_file)).unwrap(),
    ];
    let now = arf_core::time::now_ms();

    let in_flight = decision::sign(&body("dec-old", now), &previous, 7).unwrap();
    let fresh = decision::sign(&body("dec-new", now), &current, 8).unwrap();
    assert_ne!(in_flight.key_id, fresh.key_id);
    assert_eq!(decision::verify(&in_flight, &trusted_both, now).unwrap().decision_id, "dec-old");
    assert_eq!(decision::verify(&fresh, &trusted_both, now).unwrap().decision_id, "dec-new");

    // After the rotation, only the current key is trusted.
    let trusted_current = vec![trusted_both[1].clone()];
    assert_eq!(decision::verify(&fresh, &trusted_current, now).unwrap().decision_id, "dec-new");
    assert_eq!(
        decision::verify(&in_flight, &trusted_current, now).unwrap_err(),
        EnvelopeError::UnknownKey(in_flight.key_id.clone())
    );

    // A signature cannot be moved to the other key's id.
    let mut relabelled = in_flight.clone();
    relabelled.key_id = fresh.key_id.clone();
    assert_eq!(decision::verify(&relabelled, &trusted_both, now).unwrap_err(), EnvelopeError::BadSignature);
}
