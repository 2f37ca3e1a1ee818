//! Shadow mode and graduation, over a real governor, log and executor endpoint: a
//! shadow decision is logged with what would have run and never reaches the
//! executor; people's judgements of it build the pathway's record until it
//! graduates; in review mode a graduated pathway runs on its own, and one failure
//! demotes it at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly on anything unexpected")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arf_core::decision::Mode;
use arf_governor::graduation::{Graduation, ModeRule};
use arf_proto::v1 as pb;
use arf_proto::v1::executor_server::{Executor, ExecutorServer};
use common::{Harness, Setup, proposal, route};
use tonic::{Request, Response, Status};

/// An executor that counts what reaches it and reports `verified`, or `rolled_back` when told to fail.
struct Counting {
    calls: Arc<AtomicU64>,
    fail: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl Executor for Counting {
    async fn execute(&self, request: Request<pb::SignedDecision>) -> Result<Response<pb::Execution>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let body: arf_core::decision::DecisionBody = serde_json::from_slice(&request.into_inner().body).unwrap();
        let outcome = if self.fail.load(Ordering::SeqCst) { "rolled_back" } else { "verified" };
        Ok(Response::new(pb::Execution {
            decision_id: body.decision_id,
            pathway: body.pathway,
            target: body.target,
            outcome: outcome.to_owned(),
            detail: format!("scripted {outcome}"),
            verification: vec![],
            replayed: false,
        }))
    }

    async fn get_execution(&self, _: Request<pb::GetExecutionRequest>) -> Result<Response<pb::Execution>, Status> {
        Err(Status::unimplemented("not needed"))
    }
}

fn web_in(mode: Mode) -> Vec<ModeRule> {
    vec![ModeRule { environment: "staging".into(), service: "web".into(), mode }]
}

async fn decided(h: &Harness, incident: &str) -> pb::Decision {
    let proposal = proposal(incident, "restart_service", "web-staging", 0.9);
    h.back(&proposal).await;
    h.evaluate(proposal).await.unwrap()
}

/// Waits until the decision reaches `state`.
async fn until_state(h: &Harness, decision_id: &str, state: &str) -> pb::Decision {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let decision = h.get("alice", decision_id).await.unwrap();
        if decision.state == state {
            return decision;
        }
        assert!(std::time::Instant::now() < deadline, "decision {decision_id} stayed `{}`", decision.state);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn track(status: &pb::AutonomyStatus) -> &pb::PathwayOutcomeStats {
    status.stats.iter().find(|s| s.environment == "staging" && s.service == "web" && s.pathway == "restart_service").expect("web's restart_service has a record in staging")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_decisions_never_run_judgements_graduate_and_a_failure_demotes_at_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let executor_addr = listener.local_addr().unwrap().to_string();
    let (calls, fail) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let executor = Counting { calls: Arc::clone(&calls), fail: Arc::clone(&fail) };
    tokio::spawn(tonic::transport::Server::builder().add_service(ExecutorServer::new(executor)).serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    let setup = Setup { executor_addr: Some(executor_addr), modes: web_in(Mode::Shadow), graduation: Graduation { runs: 2, window_secs: 86_400 }, ..Setup::default() };
    let mut h = Harness::start(setup).await;

    // Shadow: policy would let it run on its own; it is logged as what would have
    // run, and nothing is signed or sent.
    let first = decided(&h, "inc-s1").await;
    assert_eq!((first.state.as_str(), first.mode.as_str(), route(&first)), ("shadow", "shadow", pb::Route::Autonomous));
    assert!(h.decision_records("inc-s1", &first.decision_id, "authorized").await.is_empty(), "nothing is authorized");
    let logged = h.decision_records("inc-s1", &first.decision_id, "shadow").await;
    assert_eq!(logged.len(), 1, "the decision is logged with its mode: {logged:#?}");
    assert_eq!(logged[0].payload["mode"], "shadow");
    let explained = h.explain("alice", &first.decision_id).await.unwrap().text;
    assert!(explained.contains("would have run on its own, but nothing was sent to the executor"), "{explained}");
    // Nobody can push it through: approving is refused, and asking again answers the same decision.
    let refused = h.approve("alice", &first.decision_id).await.unwrap_err();
    assert!(refused.message().contains("shadow mode"), "{refused:?}");
    let again = h.evaluate(proposal("inc-s1", "restart_service", "web-staging", 0.9)).await.unwrap();
    assert_eq!(again.decision_id, first.decision_id);

    // Judgements: people only, a reason to disagree, once per decision.
    assert_eq!(h.judge("dash", &first.decision_id, true, "").await.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert_eq!(h.judge("alice", &first.decision_id, false, " ").await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let judged = h.judge("alice", &first.decision_id, true, "a restart is what I did").await.unwrap();
    assert!(judged.judgement.as_ref().is_some_and(|j| j.agrees && j.identity == "alice"), "{judged:?}");
    let twice = h.judge("bob", &first.decision_id, true, "").await.unwrap_err();
    assert!(twice.message().contains("already judged by `alice`"), "{twice:?}");
    let record = h.autonomy("alice").await.unwrap();
    assert_eq!((track(&record).shadow_agreed, track(&record).earned, track(&record).graduated), (1, 1, false));

    let second = decided(&h, "inc-s2").await;
    h.judge("bob", &second.decision_id, true, "").await.unwrap();
    let record = h.autonomy("alice").await.unwrap();
    assert!(track(&record).graduated, "two agreeing judgements in a row graduate it: {:?}", track(&record));
    // The guard-rail file as it stands now, graduated: restored at the end, as an old backup would be.
    let guard_file = arf_governor::guard::state_path(&h.config.data_dir);
    let graduated_file = std::fs::read(&guard_file).unwrap();
    let promoted = h.governance_events("graduation").await;
    assert_eq!(promoted.len(), 1, "{promoted:#?}");
    assert_eq!(promoted[0].payload["graduated"], true);
    assert!(promoted[0].payload["reason"].as_str().unwrap().contains("2 agreeing shadow judgements"), "{:#?}", promoted[0]);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no shadow decision reached the executor");

    // Review mode, after a restart: the judgement is rebuilt from the log, and the
    // graduated pathway runs on its own.
    h.config.modes = web_in(Mode::Review);
    h.restart_governor().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let rebuilt = loop {
        match h.get("alice", &first.decision_id).await {
            Ok(decision) => break decision,
            Err(status) if status.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(status) => panic!("{status:?}"),
        }
    };
    assert!(rebuilt.judgement.is_some_and(|j| j.identity == "alice"), "the judgement survives a restart");
    let run = decided(&h, "inc-r1").await;
    assert_eq!((route(&run), run.mode.as_str()), (pb::Route::Autonomous, "review"));
    until_state(&h, &run.decision_id, "verified").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // One failure demotes it at once: the next action waits for a person.
    fail.store(true, Ordering::SeqCst);
    let failed = decided(&h, "inc-r2").await;
    until_state(&h, &failed.decision_id, "rolled_back").await;
    // Logged once the outcome is.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let demoted = loop {
        let events = h.governance_events("graduation").await;
        if events.len() >= 2 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(demoted.len(), 2, "{demoted:#?}");
    assert_eq!(demoted[1].payload["graduated"], false);
    assert!(demoted[1].payload["reason"].as_str().unwrap().contains("a run failed verification"), "{:#?}", demoted[1]);
    let held = decided(&h, "inc-r3").await;
    assert_eq!((route(&held), held.state.as_str()), (pb::Route::Approval, "pending"));
    let rules = &held.policy.as_ref().unwrap().rules_fired;
    assert!(rules.contains(&"review_mode".to_owned()), "{rules:?}");
    assert!(held.policy.as_ref().unwrap().reasons.iter().any(|r| r.contains("has 0 of the 2 successes")), "{:?}", held.policy);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the held action did not run");

    // The guard-rail file restored from before the demotion still says graduated;
    // the log's demotion holds after a restart, and the next action waits for a person.
    std::fs::write(&guard_file, graduated_file).unwrap();
    h.restart_governor().await;
    let fourth = proposal("inc-r4", "restart_service", "web-staging", 0.9);
    h.back(&fourth).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        match h.evaluate(fourth.clone()).await {
            Ok(decision) => break decision,
            Err(status) if status.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(status) => panic!("{status:?}"),
        }
    };
    assert_eq!((route(&after), after.state.as_str()), (pb::Route::Approval, "pending"), "a stale file graduated it again");
    assert!(!track(&h.autonomy("alice").await.unwrap()).graduated);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the held action did not run");
}

/// A shadow decision that left memory is read back from the log by each request
/// that judges it; however many people judge it at once, it counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_read_back_from_the_log_is_judged_once_however_many_try_at_once() {
    let setup = Setup { modes: web_in(Mode::Shadow), retain_decisions_secs: 0, ..Setup::default() };
    let h = Harness::start(setup).await;
    let decision = decided(&h, "inc-once").await;
    h.advance_ms(16 * 60 * 1000);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !h.decisions("alice", "inc-once").await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the shadow decision never left memory");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, b, c, d) = tokio::join!(
        h.judge("alice", &decision.decision_id, true, ""),
        h.judge("bob", &decision.decision_id, true, ""),
        h.judge("carol", &decision.decision_id, true, ""),
        h.judge("dave", &decision.decision_id, true, ""),
    );
    let counted = [a, b, c, d].into_iter().filter(Result::is_ok).count();
    assert_eq!(counted, 1, "one judgement counts");
    let record = h.autonomy("alice").await.unwrap();
    assert_eq!(track(&record).shadow_agreed, 1);
    let logged = h.records("inc-once", arf_audit::RecordKind::Decision).await.into_iter().filter(|r| r.payload["event"] == "shadow_judged").count();
    assert_eq!(logged, 1);
}

/// Two proposals of one incident at once: one is its first attempt, the other
/// its second, whichever comes first, so the second waits for a person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_actions_of_one_incident_at_once_are_attempts_one_and_two() {
    let h = Harness::start(Setup::default()).await;
    let first = proposal("inc-two", "restart_service", "web-staging", 0.9);
    let mut second = proposal("inc-two", "recycle_service", "web-staging", 0.9);
    second.id = "prop-inc-two-b".to_owned();
    h.back(&first).await;
    h.back(&second).await;
    let (a, b) = tokio::join!(h.evaluate(first), h.evaluate(second));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut routes = [route(&a), route(&b)];
    routes.sort_by_key(|r| *r as i32);
    assert_eq!(routes, [pb::Route::Autonomous, pb::Route::Approval], "{a:?}\n{b:?}");
    let later = if route(&a) == pb::Route::Approval { &a } else { &b };
    assert!(later.policy.as_ref().unwrap().rules_fired.contains(&"next_attempt".to_owned()), "{later:?}");
}
