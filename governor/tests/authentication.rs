//! Every call is authenticated by bearer token, and each role may do only its part.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use arf_proto::v1 as pb;
use common::{Harness, Setup, proposal};
use tonic::{Code, Request};

#[tokio::test]
async fn calls_without_a_known_token_are_refused() {
    let h = Harness::start(Setup::default()).await;
    let evaluate = |token: Option<&str>| {
        let request = Request::new(pb::EvaluateRequest {
            proposal: Some(proposal("inc-auth", "restart_service", "web-staging", 0.9)),
        });
        let request = match token {
            Some(token) => arf_proto::server::with_bearer(request, token),
            None => request,
        };
        let mut client = h.governor.clone();
        async move { client.evaluate(request).await }
    };
    let anonymous = evaluate(None).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert!(anonymous.message().contains("needs credentials"), "{}", anonymous.message());
    let stranger = evaluate(Some("not-a-token-anybody-was-given-0123456789")).await.unwrap_err();
    assert_eq!(stranger.code(), Code::Unauthenticated);

    let mut client = h.governor.clone();
    let list = client.list_pending(Request::new(pb::ListPendingRequest {})).await.unwrap_err();
    assert_eq!(list.code(), Code::Unauthenticated);
    assert!(h.audit.read_incident("inc-auth").await.unwrap().is_empty());
}

#[tokio::test]
async fn only_the_agent_proposes_and_only_people_approve() {
    let h = Harness::start(Setup::default()).await;
    for who in ["alice", "carol", "dave", "dash"] {
        let refused = h.evaluate_as(who, proposal("inc-roles", "restart_service", "web-prod", 0.9)).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{who}");
        assert!(refused.message().contains("only the agent may ask for decisions"), "{}", refused.message());
    }
    let decision = h.evaluate(proposal("inc-roles", "restart_service", "web-prod", 0.9)).await.unwrap();

    // Anyone known may read.
    for who in ["agent", "alice", "carol", "dave", "dash"] {
        assert_eq!(h.pending(who).await.unwrap().len(), 1, "{who}");
        assert_eq!(h.get(who, &decision.decision_id).await.unwrap().decision_id, decision.decision_id);
    }
    let refused = h.reject("dash", &decision.decision_id, "looks odd").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("only people may approve or reject"), "{}", refused.message());
}
