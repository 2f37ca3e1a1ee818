//! A low-risk staging proposal runs without a person: it is authorized in the log
//! (the record the executor checks), signed, and dispatched; an unreachable executor
//! does not fail the evaluation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use arf_audit::AuditClient;
use arf_core::decision::{DecisionBody, SignedDecision, TrustedKey};
use arf_proto::v1 as pb;
use arf_proto::v1::executor_server::{Executor, ExecutorServer};
use common::{Harness, Setup, proposal, route};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

#[tokio::test]
async fn staging_low_risk_is_authorized_even_when_the_executor_is_down() {
    let h = Harness::start(Setup::default()).await;
    let decision = h.evaluate(proposal("inc-auto", "restart_service", "web-staging", 0.9)).await.unwrap();

    assert_eq!(route(&decision), pb::Route::Autonomous);
    assert_eq!(decision.state, "authorized");
    assert_eq!(decision.risk.as_ref().unwrap().band, "low");
    assert_eq!(decision.policy.as_ref().unwrap().rules_fired, vec!["low_risk_autonomy".to_owned()]);

    let authorized = h.decision_records("inc-auto", &decision.decision_id, "authorized").await;
    assert_eq!(authorized.len(), 1, "{authorized:#?}");
    let payload = &authorized[0].payload;
    let body: DecisionBody = serde_json::from_value(payload["body"].clone()).unwrap();
    let sha = arf_core::canonical::sha256_hex(&arf_core::canonical::to_vec(&body).unwrap());
    assert_eq!(payload["envelope_sha256"], sha.as_str());
    assert_eq!(body.decision_id, decision.decision_id);
    assert_eq!(body.pathway, "restart_service");
    assert_eq!(body.target, "web-staging");
    assert!(body.approvals.is_empty());
    assert_eq!(body.expires_at_ms - body.issued_at_ms, 900_000);

    // The first record, written before anything else, holds the whole decision.
    let decided = h.decision_records("inc-auto", &decision.decision_id, "approved").await;
    assert_eq!(decided.len(), 1);
    assert!(decided[0].seq < authorized[0].seq);
    assert_eq!(decided[0].payload["risk"]["band"], "low");

    // The pathway digest is the governor's own catalog's.
    let catalog = arf_core::catalog::Catalog::load_dir(&h.config.catalog_dir).unwrap();
    assert_eq!(body.pathway_digest, catalog.digest("restart_service").unwrap());

    // The executor being down is the dispatcher's problem, retried in the background.
    let again = h.get("dash", &decision.decision_id).await.unwrap();
    assert_eq!(again.state, "authorized");
}

/// An executor that checks what the real one checks, then reports `verified`.
struct FakeExecutor {
    trusted: Vec<TrustedKey>,
    audit: AuditClient,
    seen: mpsc::UnboundedSender<DecisionBody>,
}

#[tonic::async_trait]
impl Executor for FakeExecutor {
    async fn execute(&self, request: Request<pb::SignedDecision>) -> Result<Response<pb::Execution>, Status> {
        let signed = request.into_inner();
        let signed = SignedDecision {
            body: signed.body,
            signature: signed.signature,
            key_id: signed.key_id,
            audit_seq: signed.audit_seq,
        };
        let body = arf_core::decision::verify(&signed, &self.trusted, arf_core::time::now_ms())
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let record = self.audit.get(signed.audit_seq).await.unwrap().unwrap();
        let sha = arf_core::canonical::sha256_hex(&signed.body);
        if record.payload["state"] != "authorized"
            || record.payload["decision_id"] != body.decision_id.as_str()
            || record.payload["envelope_sha256"] != sha.as_str()
        {
            return Err(Status::permission_denied("the audit record does not authorize this body"));
        }
        let reply = pb::Execution {
            decision_id: body.decision_id.clone(),
            pathway: body.pathway.clone(),
            target: body.target.clone(),
            outcome: "verified".to_owned(),
            detail: "health probe passed".to_owned(),
            verification: vec![],
            replayed: false,
        };
        self.seen.send(body).unwrap();
        Ok(Response::new(reply))
    }

    async fn get_execution(&self, _: Request<pb::GetExecutionRequest>) -> Result<Response<pb::Execution>, Status> {
        Err(Status::unimplemented("not needed"))
    }
}

#[tokio::test]
async fn the_executor_receives_a_signed_decision_bound_to_its_record_and_the_outcome_is_recorded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let executor_addr = listener.local_addr().unwrap().to_string();
    let h = Harness::start(Setup { executor_addr: Some(executor_addr), ..Setup::default() }).await;

    // The governor generated its key at start; the executor trusts its public half.
    let public = arf_core::keys::public_path(&h.config.signing_key_file);
    let trusted = vec![arf_core::keys::load_trusted(&public).unwrap()];
    let (seen, mut received) = mpsc::unbounded_channel();
    let executor = FakeExecutor { trusted, audit: h.audit.clone(), seen };
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder().add_service(ExecutorServer::new(executor)).serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move {
                let _ = stopped.await;
            },
        ),
    );

    let mut tail = h.audit.tail(1).await.unwrap();
    let decision = h.evaluate(proposal("inc-run", "restart_service", "web-staging", 0.9)).await.unwrap();
    let body = received.recv().await.unwrap();
    assert_eq!(body.decision_id, decision.decision_id);

    // Wait for the governor to log the outcome, then read it back.
    loop {
        let record = tokio::time::timeout(std::time::Duration::from_secs(30), tail.next()).await.expect("timed out following the log").unwrap().unwrap();
        if record.payload["decision_id"] == decision.decision_id.as_str() && record.payload["state"] == "verified" {
            assert_eq!(record.payload["detail"], "health probe passed");
            break;
        }
    }
    assert_eq!(h.get("alice", &decision.decision_id).await.unwrap().state, "verified");
    let explanation = h.explain("alice", &decision.decision_id).await.unwrap();
    assert!(explanation.text.contains("done: the executor ran it and verification passed"), "{}", explanation.text);
}

/// The governor is a witness of the log: once it has seen a checkpoint, it
/// authorizes nothing on a log that cannot prove it extends that checkpoint.
#[tokio::test]
async fn nothing_is_authorized_on_a_log_behind_the_governors_checkpoint() {
    let mut h = Harness::start(Setup::default()).await;
    let first = h.evaluate(proposal("inc-first", "restart_service", "web-staging", 0.9)).await.unwrap();
    assert_eq!(first.state, "authorized");
    let state = h.config.data_dir.join("witness").join("checkpoint");
    let note = std::fs::read_to_string(&state).unwrap();
    let key = arf_core::keys::load_signing(&h.dir.path().join("audit-checkpoint.key")).unwrap();
    let verifier = arf_audit::checkpoint::NoteVerifier::new("arf-audit-log", key.verifying_key());
    assert!(verifier.verify(&note).unwrap().size >= 1, "the governor keeps a checkpoint covering the decision it authorized");

    // The governor once saw a much longer log, signed by the log's own key: the log
    // it now talks to was rolled back (restored from an old copy, say).
    let longer = arf_audit::checkpoint::Checkpoint { origin: "arf-audit-log".into(), size: 1000, root: [9; 32] };
    std::fs::write(&state, longer.sign(&key)).unwrap();
    h.restart_governor().await;

    let refused = h.evaluate(proposal("inc-second", "restart_service", "web-staging", 0.9)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("rolled back or truncated"), "{}", refused.message());
    let authorized = h.audit.read_incident("inc-second").await.unwrap();
    assert!(
        authorized.iter().all(|r| r.payload["state"] != "authorized"),
        "nothing was authorized: {authorized:#?}"
    );
    // The refusal is in the log, so a restarted governor does not authorize what
    // this one refused, and the trail says why nothing ran.
    let failed = authorized.iter().find(|r| r.payload["state"] == "authorization_failed").expect("the failure is logged");
    assert!(failed.payload["detail"].as_str().unwrap().contains("witness check"), "{failed:?}");
    let decision_id = failed.payload["decision_id"].as_str().unwrap().to_owned();
    h.restart_governor().await;
    // The restarted governor answers once it has rebuilt its decisions from the log;
    // what it rebuilt is what the log says, so nothing is resumed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let restored = loop {
        match h.get("alice", &decision_id).await {
            Ok(decision) => break decision,
            Err(status) if std::time::Instant::now() < deadline && status.code() == tonic::Code::Unavailable => {
                tokio::task::yield_now().await;
            }
            Err(status) => panic!("the restarted governor does not answer: {status:?}"),
        }
    };
    assert_eq!(restored.state, "authorization_failed");
    let after = h.audit.read_incident("inc-second").await.unwrap();
    assert!(after.iter().all(|r| r.payload["state"] != "authorized"), "not resumed after the restart: {after:#?}");
}
