//! One action per incident is decided at most once while a decision for it is live
//! or has succeeded: a repeated or re-diagnosed proposal gets the existing decision.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use common::{Harness, Setup, answer, authorized_with, log_started, proposal, serve};

#[tokio::test]
async fn a_repeated_or_rediagnosed_proposal_gets_the_existing_decision() {
    let mut h = Harness::start(Setup::default()).await;
    let first = proposal("inc-once", "restart_service", "web-prod", 0.9);
    let decided = h.evaluate(first.clone()).await.unwrap();
    assert_eq!(decided.state, "pending");
    // The same proposal again (a retried call), and a re-diagnosis after an agent
    // restart: a new proposal id for the same action.
    assert_eq!(h.evaluate(first.clone()).await.unwrap().decision_id, decided.decision_id);
    let mut rediagnosed = first.clone();
    rediagnosed.id = "prop-again".to_owned();
    assert_eq!(h.evaluate(rediagnosed.clone()).await.unwrap().decision_id, decided.decision_id);
    // Still so after a governor restart: the index is rebuilt from the log.
    h.restart_governor().await;
    assert_eq!(h.evaluate(rediagnosed.clone()).await.unwrap().decision_id, decided.decision_id);
    assert_eq!(h.decisions("alice", "inc-once").await.unwrap().len(), 1, "one decision for one action");
    // Reworded in a note no step of the pathway reads (`restart_service`'s
    // `reason`), it is the same action, not a new one to decide.
    let mut reworded = first.clone();
    reworded.id = "prop-reworded".to_owned();
    reworded.remediation.as_mut().unwrap().parameters_json = r#"{"reason":"another"}"#.to_owned();
    reworded.hypothesis.as_mut().unwrap().remediations[0].parameters_json = r#"{"reason":"another"}"#.to_owned();
    assert_eq!(h.evaluate(reworded).await.unwrap().decision_id, decided.decision_id);
    // Another action of the same incident is its own decision.
    let mut other = proposal("inc-once", "purge_cache", "web-prod", 0.9);
    other.id = "prop-other".to_owned();
    assert_ne!(h.evaluate(other).await.unwrap().decision_id, decided.decision_id);

    // A person's no stands: the action is not decided again on a repeat.
    h.reject("alice", &decided.decision_id, "not now").await.unwrap();
    let mut third = first.clone();
    third.id = "prop-third".to_owned();
    let answered = h.evaluate(third).await.unwrap();
    assert_eq!((answered.decision_id.as_str(), answered.state.as_str()), (decided.decision_id.as_str(), "rejected"));
}

#[tokio::test]
async fn an_action_whose_decision_expired_unrun_is_decided_again_and_policy_sees_it() {
    let h = Harness::start(Setup::default()).await;
    let first = proposal("inc-expire", "restart_service", "web-prod", 0.9);
    let decided = h.evaluate(first.clone()).await.unwrap();
    assert_eq!(decided.state, "pending");
    h.advance_ms(16 * 60 * 1000);
    assert_eq!(h.get("alice", &decided.decision_id).await.unwrap().state, "expired");
    let mut again = first.clone();
    again.id = "prop-again".to_owned();
    let second = h.evaluate(again).await.unwrap();
    assert_ne!(second.decision_id, decided.decision_id);
    let records = h.audit.read_incident("inc-expire").await.unwrap();
    let made = records.iter().find(|r| r.payload["decision_id"] == second.decision_id.as_str() && r.payload.get("policy_input").is_some()).unwrap();
    assert_eq!(
        made.payload["policy_input"]["action"]["earlier_attempts"],
        serde_json::json!([{"decision_id": decided.decision_id, "state": "expired"}])
    );
}

#[tokio::test]
async fn concurrent_proposals_for_one_action_make_one_decision() {
    let h = Harness::start(Setup::default()).await;
    let mut proposals = Vec::new();
    for i in 0..8 {
        let mut p = proposal("inc-race", "restart_service", "web-prod", 0.9);
        p.id = format!("prop-{i}");
        h.back(&p).await;
        proposals.push(p);
    }
    let answers = futures::future::join_all(proposals.into_iter().map(|p| h.evaluate_unbacked("agent", p))).await;
    let ids: std::collections::BTreeSet<String> = answers.into_iter().map(|a| a.unwrap().decision_id).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// Settled decisions leave memory (`retain_decisions_secs`), and nothing that
/// depends on them is lost: the decision is read back from the log by its id,
/// it still holds its action against a repeat (the log, not memory, says it was
/// decided), and a restarted governor does not hold it either.
#[tokio::test]
async fn a_settled_decision_that_left_memory_still_holds_its_action() {
    let mut h = Harness::start(Setup { retain_decisions_secs: 0, ..Setup::default() }).await;
    let first = proposal("inc-gone", "restart_service", "web-prod", 0.9);
    let decided = h.evaluate(first.clone()).await.unwrap();
    assert_eq!(decided.state, "pending");
    h.reject("alice", &decided.decision_id, "not this one").await.unwrap();
    h.advance_ms(16 * 60 * 1000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !h.decisions("alice", "inc-gone").await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the settled decision never left memory");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let read_back = h.get("alice", &decided.decision_id).await.unwrap();
    assert_eq!((read_back.decision_id.as_str(), read_back.state.as_str()), (decided.decision_id.as_str(), "rejected"));
    // A repeat of the action is answered with the rejection, read from the log.
    let mut again = first.clone();
    again.id = "prop-again".to_owned();
    let answered = h.evaluate(again.clone()).await.unwrap();
    assert_eq!((answered.decision_id.as_str(), answered.state.as_str()), (decided.decision_id.as_str(), "rejected"));
    // After a restart: not held, still read back, still holding its action.
    h.restart_governor().await;
    assert!(h.decisions("alice", "inc-gone").await.unwrap().is_empty());
    assert_eq!(h.get("alice", &decided.decision_id).await.unwrap().state, "rejected");
    again.id = "prop-third".to_owned();
    assert_eq!(h.evaluate(again).await.unwrap().decision_id, decided.decision_id);
}

/// An executor replica that takes the decision and answers `running`, then dies
/// before starting it; the replica that settles its claim finds nothing started and
/// gives the claim back, so `GetExecution` answers NotFound. Before the decision
/// expires, the governor sends it again (here, to the same address) and the second
/// `Execute` runs it: it must not wait for the decision's expiry with nobody to run it.
struct GivesBack {
    executes: std::sync::atomic::AtomicU32,
}

#[tonic::async_trait]
impl arf_proto::v1::executor_server::Executor for GivesBack {
    async fn execute(&self, request: tonic::Request<arf_proto::v1::SignedDecision>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        let body: arf_core::decision::DecisionBody = serde_json::from_slice(&request.into_inner().body).unwrap();
        let n = self.executes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let outcome = if n == 0 { "running" } else { "verified" };
        Ok(answer(body, outcome.to_owned(), format!("execute call {}", n + 1)))
    }

    async fn get_execution(&self, _: tonic::Request<arf_proto::v1::GetExecutionRequest>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        Err(tonic::Status::not_found("no execution of that decision"))
    }
}

#[tokio::test]
async fn a_claim_given_back_after_running_was_reported_is_sent_again_before_expiry() {
    let executor = std::sync::Arc::new(GivesBack { executes: std::sync::atomic::AtomicU32::new(0) });
    let (h, decided, _stop) = authorized_with(std::sync::Arc::clone(&executor), "inc-given-back").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Settled in the log (the decision's state changes just before its record lands).
    let settled = loop {
        let settled = h.decision_records("inc-given-back", &decided.decision_id, "verified").await;
        if let Some(record) = settled.first() {
            break record.clone();
        }
        let state = h.get("alice", &decided.decision_id).await.unwrap().state;
        assert!(std::time::Instant::now() < deadline, "the decision was not sent again: still `{state}` after {} Execute call(s)", executor.executes.load(std::sync::atomic::Ordering::SeqCst));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(executor.executes.load(std::sync::atomic::Ordering::SeqCst), 2, "sent once, then once again after the claim was given back");
    assert!(settled.payload["detail"].as_str().unwrap().contains("execute call 2"), "{settled:?}");
}

/// An executor that takes every decision (`running`) and then holds no record of
/// it: it gave every claim back, and each re-send meets the same. Once the
/// decision expires, the governor settles it from the log (which shows it never
/// started) rather than asking for ever.
struct NeverKeeps {
    executes: std::sync::atomic::AtomicU32,
}

#[tonic::async_trait]
impl arf_proto::v1::executor_server::Executor for NeverKeeps {
    async fn execute(&self, request: tonic::Request<arf_proto::v1::SignedDecision>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        let body: arf_core::decision::DecisionBody = serde_json::from_slice(&request.into_inner().body).unwrap();
        self.executes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(answer(body, "running".to_owned(), String::new()))
    }

    async fn get_execution(&self, _: tonic::Request<arf_proto::v1::GetExecutionRequest>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        Err(tonic::Status::not_found("no execution of that decision"))
    }
}

#[tokio::test]
async fn a_decision_no_executor_keeps_is_settled_from_the_log_once_it_expires() {
    let executor = std::sync::Arc::new(NeverKeeps { executes: std::sync::atomic::AtomicU32::new(0) });
    let (h, decided, _stop) = authorized_with(std::sync::Arc::clone(&executor), "inc-never-kept").await;
    // Sent again while it is live; then its time passes (the governor's clock is the test's).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while executor.executes.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "the decision was not sent again while it was live");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(h.get("alice", &decided.decision_id).await.unwrap().state, "authorized", "not settled while it is live");
    h.clock.fetch_add(901_000, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let settled = loop {
        if let Some(record) = h.decision_records("inc-never-kept", &decided.decision_id, "dispatch_failed").await.first() {
            break record.clone();
        }
        let state = h.get("alice", &decided.decision_id).await.unwrap().state;
        assert!(std::time::Instant::now() < deadline, "never settled: still `{state}`");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let detail = settled.payload["detail"].as_str().unwrap();
    assert!(detail.contains("the log shows it never started, so nothing ran"), "{detail}");
}

/// An executor that takes the decision (`running`), and then, once the test lets
/// it answer, holds no record of it (the claim was given back).
struct GivesBackWhenTold {
    executes: std::sync::atomic::AtomicU32,
    told: std::sync::Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl arf_proto::v1::executor_server::Executor for GivesBackWhenTold {
    async fn execute(&self, request: tonic::Request<arf_proto::v1::SignedDecision>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        let body: arf_core::decision::DecisionBody = serde_json::from_slice(&request.into_inner().body).unwrap();
        self.executes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(answer(body, "running".to_owned(), String::new()))
    }

    async fn get_execution(&self, _: tonic::Request<arf_proto::v1::GetExecutionRequest>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        self.told.notified().await;
        self.told.notify_one();
        Err(tonic::Status::not_found("no execution of that decision"))
    }
}

/// The kill switch is pulled after an autonomous decision was sent and before its
/// claim was given back: the governor does not send it again (it was allowed to run
/// alone under guard rails that no longer hold), and settles it as expired unrun.
#[tokio::test]
async fn a_claim_given_back_after_the_kill_switch_was_pulled_is_not_sent_again() {
    let told = std::sync::Arc::new(tokio::sync::Notify::new());
    let executor = std::sync::Arc::new(GivesBackWhenTold { executes: std::sync::atomic::AtomicU32::new(0), told: std::sync::Arc::clone(&told) });
    let (h, decided, _stop) = authorized_with(std::sync::Arc::clone(&executor), "inc-switched-off").await;
    h.set_autonomy("alice", false, "ARF misbehaves").await.unwrap();
    told.notify_one();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let settled = loop {
        if let Some(record) = h.decision_records("inc-switched-off", &decided.decision_id, "expired").await.first() {
            break record.clone();
        }
        let state = h.get("alice", &decided.decision_id).await.unwrap().state;
        assert!(std::time::Instant::now() < deadline, "never settled: still `{state}`");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(settled.payload["detail"].as_str().unwrap().contains("withdrawn before it started (the kill switch is off: ARF misbehaves)"), "{settled:?}");
    assert_eq!(executor.executes.load(std::sync::atomic::Ordering::SeqCst), 1, "not sent again");
    let withdrawn = withdrawal(&h, "inc-switched-off", &decided.decision_id).await;
    assert!(withdrawn.seq < settled.seq, "logged as withdrawn before it was settled unrun");
}

/// The governor's withdrawal of the decision, which must be in its incident's trail.
async fn withdrawal(h: &Harness, incident_id: &str, decision_id: &str) -> arf_audit_client::Record {
    let records = h.records(incident_id, arf_audit_client::RecordKind::Decision).await;
    let found = records.into_iter().find(|r| r.payload["event"] == "withdrawn" && r.payload["decision_id"] == decision_id);
    found.unwrap_or_else(|| panic!("decision `{decision_id}` was not logged as withdrawn"))
}

/// Waits until the decision's `state` record is in the log.
async fn settled_as(h: &Harness, incident_id: &str, decision_id: &str, state: &str) -> arf_audit_client::Record {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(record) = h.decision_records(incident_id, decision_id, state).await.first() {
            return record.clone();
        }
        let now = h.get("alice", decision_id).await.unwrap().state;
        assert!(std::time::Instant::now() < deadline, "not settled `{state}`: still `{now}`");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// An executor out of reach (`Unavailable`) until the test brings it back; then
/// it holds no claim of anything and takes (and would run) whatever it is sent.
#[derive(Default)]
struct OutOfReach {
    back: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicU32,
    taken: std::sync::atomic::AtomicU32,
}

#[tonic::async_trait]
impl arf_proto::v1::executor_server::Executor for OutOfReach {
    async fn execute(&self, request: tonic::Request<arf_proto::v1::SignedDecision>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        if !self.back.load(std::sync::atomic::Ordering::SeqCst) {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(tonic::Status::unavailable("the executor's host is down"));
        }
        let body: arf_core::decision::DecisionBody = serde_json::from_slice(&request.into_inner().body).unwrap();
        self.taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(answer(body, "verified".to_owned(), "ran".to_owned()))
    }

    async fn get_execution(&self, _: tonic::Request<arf_proto::v1::GetExecutionRequest>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        if !self.back.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(tonic::Status::unavailable("the executor's host is down"));
        }
        Err(tonic::Status::not_found("no execution of that decision"))
    }
}

/// The kill switch is pulled while an autonomous decision waits for an executor
/// out of reach: the switch withdraws it (logged before anything else), and when
/// the executor is back it is never sent; it settles expired, unrun.
#[tokio::test]
async fn the_kill_switch_withdraws_an_autonomous_decision_still_waiting_for_its_executor() {
    let executor = std::sync::Arc::new(OutOfReach::default());
    let (h, decided, _stop) = authorized_with(std::sync::Arc::clone(&executor), "inc-out-of-reach").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while executor.refused.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the decision was never sent");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    h.set_autonomy("alice", false, "ARF misbehaves").await.unwrap();
    // Withdrawn by the time the switch is answered.
    let withdrawn = withdrawal(&h, "inc-out-of-reach", &decided.decision_id).await;
    assert!(withdrawn.payload["reason"].as_str().unwrap().contains("the kill switch is off: ARF misbehaves"), "{withdrawn:?}");
    executor.back.store(true, std::sync::atomic::Ordering::SeqCst);
    let settled = settled_as(&h, "inc-out-of-reach", &decided.decision_id, "expired").await;
    let detail = settled.payload["detail"].as_str().unwrap();
    assert!(detail.contains("withdrawn before it started") && detail.contains("nothing ran"), "{detail}");
    assert!(withdrawn.seq < settled.seq);
    assert_eq!(executor.taken.load(std::sync::atomic::Ordering::SeqCst), 0, "a withdrawn decision is never sent");
}

/// A governor restarts with an authorized decision it had not got to the executor,
/// and a change freeze has begun meanwhile: it withdraws the decision rather than
/// sending it, and settles it unrun once the executor says it holds no claim.
#[tokio::test]
async fn a_restarted_governor_withdraws_an_authorized_decision_a_freeze_now_holds_back() {
    let mut h = Harness::start(Setup::default()).await;
    let decided = h.evaluate(proposal("inc-frozen-since", "restart_service", "web-staging", 0.9)).await.unwrap();
    assert_eq!(decided.state, "authorized", "{decided:?}");
    let executor = std::sync::Arc::new(OutOfReach::default());
    executor.back.store(true, std::sync::atomic::Ordering::SeqCst);
    let (address, _stop) = serve(arf_proto::v1::executor_server::ExecutorServer::from_arc(std::sync::Arc::clone(&executor))).await;
    let now = h.clock.load(std::sync::atomic::Ordering::SeqCst);
    h.config.guard_rails.freeze_windows = vec![arf_governor::guard::FreezeWindowConfig {
        name: "incident-review".to_owned(),
        starts_at: arf_core::time::format_ms(now - 60_000),
        ends_at: arf_core::time::format_ms(now + 3_600_000),
        reason: "a change review is under way".to_owned(),
    }];
    h.config.executor_addr = address;
    h.restart_governor().await;
    let settled = settled_as(&h, "inc-frozen-since", &decided.decision_id, "expired").await;
    let withdrawn = withdrawal(&h, "inc-frozen-since", &decided.decision_id).await;
    assert!(withdrawn.payload["reason"].as_str().unwrap().contains("change freeze `incident-review` is in force"), "{withdrawn:?}");
    assert!(withdrawn.seq < settled.seq);
    assert_eq!(executor.taken.load(std::sync::atomic::Ordering::SeqCst), 0, "a withdrawn decision is never sent");
}

/// An executor that takes every decision and holds its claim (`running`) until the
/// test lets the execution end, verified.
#[derive(Default)]
struct HoldsClaim {
    executes: std::sync::atomic::AtomicU32,
    asked: std::sync::atomic::AtomicU32,
    done: std::sync::atomic::AtomicBool,
}

#[tonic::async_trait]
impl arf_proto::v1::executor_server::Executor for HoldsClaim {
    async fn execute(&self, request: tonic::Request<arf_proto::v1::SignedDecision>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        let body: arf_core::decision::DecisionBody = serde_json::from_slice(&request.into_inner().body).unwrap();
        self.executes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(answer(body, "running".to_owned(), "waiting for the target".to_owned()))
    }

    async fn get_execution(&self, request: tonic::Request<arf_proto::v1::GetExecutionRequest>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let decision_id = request.into_inner().decision_id;
        let (outcome, detail) = if self.done.load(std::sync::atomic::Ordering::SeqCst) { ("verified", "ran and verified") } else { ("running", "running") };
        let execution = arf_proto::v1::Execution { decision_id, outcome: outcome.to_owned(), detail: detail.to_owned(), ..Default::default() };
        Ok(tonic::Response::new(execution))
    }
}

/// Waits until `count` reaches `at_least`.
async fn until(count: &std::sync::atomic::AtomicU32, at_least: u32, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count.load(std::sync::atomic::Ordering::SeqCst) < at_least {
        assert!(std::time::Instant::now() < deadline, "{what}: never reached {at_least}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The kill switch is pulled after the executor claimed the decision (it waits
/// for its target): the withdrawal is logged, but the executor holds the claim,
/// so the governor follows the execution to its outcome rather than calling it unrun.
#[tokio::test]
async fn a_withdrawal_the_executor_had_already_claimed_is_followed_to_its_outcome() {
    let executor = std::sync::Arc::new(HoldsClaim::default());
    let (h, decided, _stop) = authorized_with(std::sync::Arc::clone(&executor), "inc-claimed").await;
    until(&executor.executes, 1, "Execute calls").await;
    h.set_autonomy("alice", false, "ARF misbehaves").await.unwrap();
    let withdrawn = withdrawal(&h, "inc-claimed", &decided.decision_id).await;
    // Asked after the withdrawal, the executor still holds its claim: nothing is settled.
    let asked = executor.asked.load(std::sync::atomic::Ordering::SeqCst);
    until(&executor.asked, asked + 2, "GetExecution calls after the withdrawal").await;
    assert_eq!(h.get("alice", &decided.decision_id).await.unwrap().state, "authorized", "followed, not settled");
    executor.done.store(true, std::sync::atomic::Ordering::SeqCst);
    let settled = settled_as(&h, "inc-claimed", &decided.decision_id, "verified").await;
    assert!(withdrawn.seq < settled.seq);
    assert!(h.decision_records("inc-claimed", &decided.decision_id, "expired").await.is_empty());
    assert_eq!(executor.executes.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An executor that lost its store: it holds no claim of anything (`GetExecution`
/// answers NotFound once the test lets it answer at all), and a decision sent to
/// it that the log shows started is settled from the log, as the real executor
/// does (verified here), never run again.
#[derive(Default)]
struct LostStore {
    executes: std::sync::atomic::AtomicU32,
    answering: std::sync::atomic::AtomicBool,
}

#[tonic::async_trait]
impl arf_proto::v1::executor_server::Executor for LostStore {
    async fn execute(&self, request: tonic::Request<arf_proto::v1::SignedDecision>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        let body: arf_core::decision::DecisionBody = serde_json::from_slice(&request.into_inner().body).unwrap();
        let n = self.executes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (outcome, detail) = if n == 0 { ("running", "running") } else { ("verified", "settled from the log: the target verified") };
        Ok(answer(body, outcome.to_owned(), detail.to_owned()))
    }

    async fn get_execution(&self, _: tonic::Request<arf_proto::v1::GetExecutionRequest>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        if !self.answering.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(tonic::Status::unavailable("the executor is restarting"));
        }
        Err(tonic::Status::not_found("no execution of that decision"))
    }
}

/// The executor logged `execution_started`, then lost its store; the kill switch is
/// pulled. The log shows the action started, so it is not withdrawn (a withdrawal
/// means nothing ran), and the governor must not call it unrun: the executor, asked,
/// holds no claim, so the governor sends the decision again, whatever the guard
/// rails say now, for the executor to settle it from the log, and takes that outcome.
#[tokio::test]
async fn a_decision_the_log_shows_started_is_not_withdrawn_and_never_called_unrun() {
    let executor = std::sync::Arc::new(LostStore::default());
    let (h, decided, _stop) = authorized_with(std::sync::Arc::clone(&executor), "inc-lost-store").await;
    until(&executor.executes, 1, "Execute calls").await;
    log_started(&h, "inc-lost-store", &decided.decision_id).await;
    h.set_autonomy("alice", false, "ARF misbehaves").await.unwrap();
    executor.answering.store(true, std::sync::atomic::Ordering::SeqCst);
    let settled = settled_as(&h, "inc-lost-store", &decided.decision_id, "verified").await;
    assert!(settled.payload["detail"].as_str().unwrap().contains("settled from the log"), "{settled:?}");
    assert!(h.decision_records("inc-lost-store", &decided.decision_id, "expired").await.is_empty(), "never called unrun");
    let records = h.records("inc-lost-store", arf_audit_client::RecordKind::Decision).await;
    assert!(!records.iter().any(|r| r.payload["event"] == "withdrawn"), "a started decision is not logged as withdrawn");
    assert_eq!(executor.executes.load(std::sync::atomic::Ordering::SeqCst), 2, "sent again for the executor to settle it from the log");
}

/// A change freeze is configured, not switched: when it begins, the governor
/// withdraws the authorized decisions it holds back, here one the executor holds
/// a claim of (waiting for its target), which no send would look at again.
#[tokio::test]
async fn a_freeze_that_begins_withdraws_what_it_holds_back() {
    let executor = std::sync::Arc::new(HoldsClaim::default());
    let (address, _stop) = serve(arf_proto::v1::executor_server::ExecutorServer::from_arc(std::sync::Arc::clone(&executor))).await;
    let now = arf_core::time::now_ms();
    let rails = arf_governor::guard::GuardRails {
        freeze_windows: vec![arf_governor::guard::FreezeWindowConfig {
            name: "release-week".to_owned(),
            starts_at: arf_core::time::format_ms(now + 600_000),
            ends_at: arf_core::time::format_ms(now + 3_600_000),
            reason: "the release is being cut".to_owned(),
        }],
        ..arf_governor::guard::GuardRails::default()
    };
    let h = Harness::start(Setup { executor_addr: Some(address), guard_rails: rails, ..Setup::default() }).await;
    let decided = h.evaluate(proposal("inc-freeze-begins", "restart_service", "web-staging", 0.9)).await.unwrap();
    assert_eq!((decided.state.as_str(), decided.route), ("authorized", arf_proto::v1::Route::Autonomous as i32), "{decided:?}");
    until(&executor.executes, 1, "Execute calls").await;
    h.advance_ms(601_000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let withdrawn = loop {
        let found = h.records("inc-freeze-begins", arf_audit_client::RecordKind::Decision).await.into_iter().find(|r| r.payload["event"] == "withdrawn");
        if let Some(found) = found {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "the freeze began and nothing was withdrawn");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(withdrawn.payload["reason"].as_str().unwrap().contains("change freeze `release-week` is in force"), "{withdrawn:?}");
}

/// A withdrawal outlives a restart: the governor reads it back from the log, and
/// does not send the decision even though the guard rails let it start again.
#[tokio::test]
async fn a_withdrawn_decision_stays_withdrawn_across_a_restart() {
    let mut h = Harness::start(Setup::default()).await;
    let decided = h.evaluate(proposal("inc-withdrawn-restart", "restart_service", "web-staging", 0.9)).await.unwrap();
    assert_eq!(decided.state, "authorized", "{decided:?}");
    h.set_autonomy("alice", false, "ARF misbehaves").await.unwrap();
    withdrawal(&h, "inc-withdrawn-restart", &decided.decision_id).await;
    h.set_autonomy("dave", true, "looked into it").await.unwrap();
    let executor = std::sync::Arc::new(OutOfReach::default());
    executor.back.store(true, std::sync::atomic::Ordering::SeqCst);
    let (address, _stop) = serve(arf_proto::v1::executor_server::ExecutorServer::from_arc(std::sync::Arc::clone(&executor))).await;
    h.config.executor_addr = address;
    h.restart_governor().await;
    let settled = settled_as(&h, "inc-withdrawn-restart", &decided.decision_id, "expired").await;
    assert!(settled.payload["detail"].as_str().unwrap().contains("withdrawn before it started"), "{settled:?}");
    assert_eq!(executor.taken.load(std::sync::atomic::Ordering::SeqCst), 0, "a withdrawn decision is never sent, after a restart either");
}

/// An executor whose answer to the first `Execute` was lost (the connection broke,
/// the work went on and verified), and which refuses the retry (by its clock the
/// decision expired in flight).
#[derive(Default)]
struct LostAnswer {
    executes: std::sync::atomic::AtomicU32,
}

#[tonic::async_trait]
impl arf_proto::v1::executor_server::Executor for LostAnswer {
    async fn execute(&self, _: tonic::Request<arf_proto::v1::SignedDecision>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        if self.executes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err(tonic::Status::unavailable("connection reset by peer"));
        }
        Err(tonic::Status::failed_precondition("the decision expired"))
    }

    async fn get_execution(&self, request: tonic::Request<arf_proto::v1::GetExecutionRequest>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        let decision_id = request.into_inner().decision_id;
        Ok(tonic::Response::new(arf_proto::v1::Execution { decision_id, outcome: "verified".to_owned(), detail: "ran and verified".to_owned(), ..Default::default() }))
    }
}

/// A refusal after an attempt that may have reached the executor is no proof that
/// nothing ran: the governor asks the executor, and takes the outcome it reports.
#[tokio::test]
async fn a_refusal_after_a_lost_answer_is_not_taken_for_nothing_ran() {
    let executor = std::sync::Arc::new(LostAnswer::default());
    let (h, decided, _stop) = authorized_with(std::sync::Arc::clone(&executor), "inc-lost-answer").await;
    settled_as(&h, "inc-lost-answer", &decided.decision_id, "verified").await;
    assert!(h.decision_records("inc-lost-answer", &decided.decision_id, "dispatch_failed").await.is_empty());
    assert_eq!(executor.executes.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// The executor logged `execution_started`, lost its store, and stayed out of
/// reach until the decision expired. It takes no expired decision, so nobody will
/// settle this one from the log: the governor settles it `rollback_failed` (its
/// target in a state nobody verified, needing a person, the service quarantined),
/// never as nothing ran, and never leaves it `authorized` for ever.
#[tokio::test]
async fn a_started_decision_no_executor_can_settle_any_more_goes_to_a_person() {
    let executor = std::sync::Arc::new(LostStore::default());
    let (h, decided, _stop) = authorized_with(std::sync::Arc::clone(&executor), "inc-lost-expired").await;
    until(&executor.executes, 1, "Execute calls").await;
    log_started(&h, "inc-lost-expired", &decided.decision_id).await;
    h.advance_ms(901_000);
    executor.answering.store(true, std::sync::atomic::Ordering::SeqCst);
    let settled = settled_as(&h, "inc-lost-expired", &decided.decision_id, "rollback_failed").await;
    let detail = settled.payload["detail"].as_str().unwrap();
    assert!(detail.contains("the log shows it started") && detail.contains("the target needs a person"), "{detail}");
    for unrun in ["expired", "dispatch_failed"] {
        assert!(h.decision_records("inc-lost-expired", &decided.decision_id, unrun).await.is_empty(), "never called unrun ({unrun})");
    }
    assert_eq!(executor.executes.load(std::sync::atomic::Ordering::SeqCst), 1, "an expired decision is not sent again");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !h.governance_events("rollback_failed_tripped").await.iter().any(|r| r.payload["decision_id"] == decided.decision_id.as_str()) {
        assert!(std::time::Instant::now() < deadline, "the service was not quarantined");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
