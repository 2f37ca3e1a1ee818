//! A forged, altered, expired, denied or unlogged decision is refused, and nothing runs.

use serde_json::json;
use tonic::Code;

use arf_audit::RecordKind;
use arf_core::decision::{DecisionBody, Route};
use arf_proto::v1 as pb;

use crate::harness::{Harness, Setup, command, command_probe, decision_record, path_str, pathway, target, to_pb};

/// Ways a decision can be wrong.
#[derive(Debug, Clone, Copy)]
enum Forgery {
    /// Signed by a key the executor does not trust.
    OtherKey,
    /// Signed by another key but naming the trusted key's id.
    OtherKeyClaimingTrustedId,
    /// Body bytes changed after signing.
    AlteredBody,
    Expired,
    DenyRoute,
    /// Points at a record that does not exist.
    Unlogged,
    /// The record logs another envelope for the same decision id.
    RecordOfAnotherEnvelope,
    /// The record logs the same envelope hash under another decision id.
    RecordOfAnotherDecision,
    /// The record was appended by the executor, not the governor.
    RecordByAnotherWriter,
    /// The record is an approval, not a decision.
    RecordOfAnotherKind,
    /// The digest differs from the executor's definition of the pathway.
    PathwayChanged,
    UnknownPathway,
    UnknownTarget,
    WrongTargetKind,
    ParametersOutsideSchema,
}

async fn forge(h: &Harness, forgery: Forgery) -> (DecisionBody, pb::SignedDecision) {
    let forger = arf_core::keys::load_or_generate(&h.dir.join("forger.key")).unwrap();
    let mut body = h.body("touch_marker", "web", json!({ "reason": "disk full" }));
    let sign = |body: &DecisionBody, key: &ed25519_dalek::SigningKey, seq: u64| {
        to_pb(arf_core::decision::sign(body, key, seq).unwrap())
    };
    let signed = match forgery {
        Forgery::OtherKey => {
            let seq = h.log_decision(&body).await;
            sign(&body, &forger, seq)
        }
        Forgery::OtherKeyClaimingTrustedId => {
            let seq = h.log_decision(&body).await;
            let mut signed = sign(&body, &forger, seq);
            signed.key_id = arf_core::decision::key_id(&h.key.verifying_key());
            signed
        }
        Forgery::AlteredBody => {
            let mut signed = h.decide(&body).await;
            let text = String::from_utf8(signed.body).unwrap().replace("disk full", "disk fuller");
            signed.body = text.into_bytes();
            signed
        }
        Forgery::Expired => {
            body.expires_at_ms = arf_core::time::now_ms() - 1;
            h.decide(&body).await
        }
        Forgery::DenyRoute => {
            body.route = Route::Deny;
            h.decide(&body).await
        }
        Forgery::Unlogged => sign(&body, &h.key, 1_000_000),
        Forgery::RecordOfAnotherEnvelope => {
            let mut other = body.clone();
            other.parameters = json!({ "reason": "something else" });
            let seq = h.log_decision(&other).await;
            sign(&body, &h.key, seq)
        }
        Forgery::RecordOfAnotherDecision => {
            let mut payload = decision_record(&body);
            payload["decision_id"] = json!("dec-someone-else");
            let seq = h.governor.append_one(&body.incident_id, RecordKind::Decision, payload).await.unwrap().seq;
            sign(&body, &h.key, seq)
        }
        Forgery::RecordByAnotherWriter => {
            let record = h
                .as_executor
                .append_one(&body.incident_id, RecordKind::Decision, decision_record(&body))
                .await
                .unwrap();
            sign(&body, &h.key, record.seq)
        }
        Forgery::RecordOfAnotherKind => {
            let record =
                h.governor.append_one(&body.incident_id, RecordKind::Approval, decision_record(&body)).await.unwrap();
            sign(&body, &h.key, record.seq)
        }
        Forgery::PathwayChanged => {
            body.pathway_digest = "0".repeat(64);
            h.decide(&body).await
        }
        Forgery::UnknownPathway => {
            body.pathway = "delete_everything".into();
            h.decide(&body).await
        }
        Forgery::UnknownTarget => {
            body.target = "mainframe".into();
            h.decide(&body).await
        }
        Forgery::WrongTargetKind => {
            body.target = "db".into();
            h.decide(&body).await
        }
        Forgery::ParametersOutsideSchema => {
            body.parameters = json!({ "reason": "x", "command": "rm -rf /" });
            h.decide(&body).await
        }
    };
    (body, signed)
}

fn markers(h: &Harness) -> Vec<String> {
    std::fs::read_dir(h.dir.join("markers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

async fn check(h: &Harness, forgery: Forgery, code: Code, fragment: &str) {
    let (body, signed) = forge(h, forgery).await;
    let Err(status) = h.execute(signed).await else { panic!("{forgery:?} was accepted") };
    assert_eq!(status.code(), code, "{forgery:?}: {}", status.message());
    assert!(status.message().contains(fragment), "{forgery:?}: {}", status.message());
    assert_eq!(status.message(), status.message().trim_end_matches('.'), "{forgery:?}: messages have no final period");
    assert!(markers(h).is_empty(), "{forgery:?} ran something: {:?}", markers(h));
    assert_eq!(h.get_execution(&body.decision_id).await.unwrap_err().code(), Code::NotFound, "{forgery:?} was claimed");
    let kinds = h.kinds(&body.incident_id).await;
    assert!(!kinds.contains(&"execution_started"), "{forgery:?} logged a start: {kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_decisions_are_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let markers_dir = dir.path().join("markers");
    std::fs::create_dir_all(&markers_dir).unwrap();
    let mut touch_marker = pathway(
        "touch_marker",
        vec![command(&["touch", "{{target.markers}}/{{decision.id}}"])],
        vec![command_probe("marker", &["test", "-e", "{{target.markers}}/{{decision.id}}"])],
        vec![command(&["true"])],
    );
    touch_marker.parameters = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": { "reason": { "type": "string" } },
    });
    let markers_fact = [("markers", path_str(&markers_dir))];
    let mut db = target(&markers_fact);
    db.kind = "database".into();
    let targets = [("web".to_owned(), target(&markers_fact)), ("db".to_owned(), db)].into();
    let h = Harness::start(dir.path(), Setup::new(vec![touch_marker], targets)).await;

    let cases = [
        (Forgery::OtherKey, Code::PermissionDenied, "signed by unknown key"),
        (Forgery::OtherKeyClaimingTrustedId, Code::PermissionDenied, "signature does not verify"),
        (Forgery::AlteredBody, Code::PermissionDenied, "signature does not verify"),
        (Forgery::Expired, Code::FailedPrecondition, "expired at"),
        (Forgery::DenyRoute, Code::PermissionDenied, "route `deny`"),
        (Forgery::Unlogged, Code::PermissionDenied, "is not in the audit log: there is no record `1000000`"),
        (Forgery::RecordOfAnotherEnvelope, Code::PermissionDenied, "`envelope_sha256` differs"),
        (Forgery::RecordOfAnotherDecision, Code::PermissionDenied, "`decision_id` differs"),
        (Forgery::RecordByAnotherWriter, Code::PermissionDenied, "written by `executor`, not by the governor"),
        (Forgery::RecordOfAnotherKind, Code::PermissionDenied, "is of kind `approval`, not `decision`"),
        (
            Forgery::PathwayChanged,
            Code::FailedPrecondition,
            "pathway `touch_marker` changed since the governor judged it",
        ),
        (
            Forgery::UnknownPathway,
            Code::FailedPrecondition,
            "pathway `delete_everything` is not in this executor's catalog",
        ),
        (Forgery::UnknownTarget, Code::FailedPrecondition, "target `mainframe` is not in this executor's inventory"),
        (Forgery::WrongTargetKind, Code::FailedPrecondition, "target `db` is a `database`"),
        (Forgery::ParametersOutsideSchema, Code::InvalidArgument, "do not match its schema"),
    ];
    for (forgery, code, fragment) in cases {
        check(&h, forgery, code, fragment).await;
    }

    // The same decision, done right, runs: the refusals above were not for want of a working pathway.
    let body = h.body("touch_marker", "web", json!({ "reason": "disk full" }));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);
    assert_eq!(markers(&h), vec![body.decision_id.clone()]);
}
