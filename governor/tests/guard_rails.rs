//! Guard rails over real gRPC: the kill switch, the rate limit, the error budget and
//! change freezes switch autonomy off (or deny), show up in explanations and in the
//! log, and only an admin switches autonomy back on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use std::sync::Arc;

use arf_audit::Record;
use arf_governor::guard::{FreezeWindowConfig, GuardRails, GuardState};
use arf_proto::v1 as pb;
use arf_proto::v1::executor_server::{Executor, ExecutorServer};
use common::{Harness, Setup, proposal, route};
use futures::StreamExt;
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

fn rules(decision: &pb::Decision) -> Vec<String> {
    decision.policy.as_ref().unwrap().rules_fired.clone()
}

async fn staging(h: &Harness, incident: &str) -> pb::Decision {
    h.evaluate(proposal(incident, "restart_service", "web-staging", 0.9)).await.unwrap()
}

#[tokio::test]
async fn the_kill_switch_is_on_calls_to_pull_and_only_an_admin_turns_autonomy_back_on() {
    let h = Harness::start(Setup::default()).await;
    assert_eq!(route(&staging(&h, "inc-k1").await), pb::Route::Autonomous);

    // Tooling reads; it does not stop the plane.
    let refused = h.set_autonomy("dash", false, "a dashboard thinks so").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = h.set_autonomy("alice", false, " ").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // The engineer on call sees ARF misbehave at 3 a.m. and pulls the switch.
    let status = h.set_autonomy("alice", false, "incident review after a bad night").await.unwrap();
    assert!(!status.enabled);
    assert_eq!(status.changed_by, "alice");
    // But cannot hand autonomy back.
    let refused = h.set_autonomy("alice", true, "looks fine now").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("only an admin may switch autonomy on"), "{}", refused.message());

    let held = staging(&h, "inc-k2").await;
    assert_eq!(route(&held), pb::Route::Approval);
    assert_eq!(held.state, "pending");
    assert_eq!(rules(&held), vec!["autonomy_off"]);
    let text = h.explain("alice", &held.decision_id).await.unwrap().text;
    assert!(text.contains("global autonomy switch: OFF (incident review after a bad night)"), "{text}");
    assert!(text.contains("the global autonomy switch is off (incident review after a bad night)"), "{text}");

    // The switch is logged with who moved it, and saved for the next start.
    let switched = h.governance_events("autonomy_switched").await;
    assert_eq!(switched.len(), 1);
    assert_eq!(switched[0].payload["identity"], "alice");
    assert_eq!(switched[0].payload["role"], "oncall");
    assert_eq!(switched[0].payload["enabled"], false);
    let saved = arf_governor::guard::load(&arf_governor::guard::state_path(&h.config.data_dir)).unwrap();
    assert!(!saved.autonomy.enabled);

    h.set_autonomy("dave", true, "review done").await.unwrap();
    assert_eq!(route(&staging(&h, "inc-k3").await), pb::Route::Autonomous);
}

#[tokio::test]
async fn a_kill_switch_saved_by_an_earlier_governor_holds_after_a_restart() {
    let mut state = GuardState::default();
    arf_governor::guard::set_autonomy(&mut state, false, "dave", "saved before the restart", 1);
    let h = Harness::start(Setup { guard_state: Some(state), ..Setup::default() }).await;
    let held = staging(&h, "inc-restart").await;
    assert_eq!(route(&held), pb::Route::Approval);
    assert_eq!(rules(&held), vec!["autonomy_off"]);
    assert!(!h.autonomy("dash").await.unwrap().enabled);
}

/// The kill switch is logged before it takes effect: a governor whose guard-rail
/// file lost it (a restored backup, a new disk) finds it in the log and keeps
/// autonomy off; a later switch back on, logged too, is found the same way.
#[tokio::test]
async fn a_kill_switch_lost_with_the_guard_file_is_restored_from_the_log() {
    let mut h = Harness::start(Setup::default()).await;
    h.set_autonomy("alice", false, "pulled before the disk was lost").await.unwrap();
    let file = arf_governor::guard::state_path(&h.config.data_dir);
    std::fs::remove_file(&file).unwrap();
    h.restart_governor().await;
    let held = staging(&h, "inc-lost").await;
    assert_eq!(route(&held), pb::Route::Approval, "autonomy came back with the lost file");
    assert_eq!(rules(&held), vec!["autonomy_off"]);
    let status = h.autonomy("dash").await.unwrap();
    assert!(!status.enabled && status.changed_by == "alice", "{status:?}");
    assert!(!arf_governor::guard::load(&file).unwrap().autonomy.enabled, "and saved again");

    // Switched back on by an admin, then the file restored from an older backup
    // that still says off: the log's later switch wins again.
    let stale = std::fs::read(&file).unwrap();
    h.set_autonomy("dave", true, "review done").await.unwrap();
    std::fs::write(&file, stale).unwrap();
    h.restart_governor().await;
    assert_eq!(route(&staging(&h, "inc-back").await), pb::Route::Autonomous);
}

#[tokio::test]
async fn the_rate_limit_switches_autonomy_off_for_the_service_until_an_admin_resets_it() {
    let rails = GuardRails { autonomous_per_service_per_hour: 2, ..GuardRails::default() };
    let h = Harness::start(Setup { guard_rails: rails, ..Setup::default() }).await;
    assert_eq!(route(&staging(&h, "inc-r1").await), pb::Route::Autonomous);
    assert_eq!(route(&staging(&h, "inc-r2").await), pb::Route::Autonomous);

    let third = staging(&h, "inc-r3").await;
    assert_eq!(route(&third), pb::Route::Approval);
    assert_eq!(rules(&third), vec!["rate_limit"]);
    let text = h.explain("alice", &third.decision_id).await.unwrap().text;
    assert!(text.contains("rate limit: 2 of 2 autonomous actions on service `web` in the last hour; limit reached"), "{text}");
    assert_eq!(h.governance_events("rate_limit_tripped").await.len(), 1);

    // Latched: an hour later it is still off, because nobody has looked yet.
    h.advance_ms(2 * 3600 * 1000);
    assert_eq!(route(&staging(&h, "inc-r4").await), pb::Route::Approval);

    let refused = h.reset_autonomy("alice", "web", "").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // The limit is the service's: resetting one pathway does not lift it.
    let refused = h.reset_autonomy("dave", "web", "restart_service").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("the service-wide `rate_limit` is lifted only by a reset of the whole service"), "{}", refused.message());
    assert_eq!(route(&staging(&h, "inc-r4b").await), pb::Route::Approval);
    let status = h.reset_autonomy("dave", "web", "").await.unwrap();
    assert_eq!(status.cleared.len(), 1);
    assert_eq!(status.cleared[0].kind, "rate_limit");
    assert!(status.trips.is_empty());
    assert_eq!(h.governance_events("autonomy_reset").await.len(), 1);

    assert_eq!(route(&staging(&h, "inc-r5").await), pb::Route::Autonomous);
    let nothing = h.reset_autonomy("dave", "web", "").await.unwrap_err();
    assert_eq!(nothing.code(), Code::FailedPrecondition, "{nothing:?}");
}

/// A latched guard rail the guard-rail file lost (a new disk, an older backup) is
/// read back from the log's trip event: the service stays off until an admin
/// resets it, and once reset (logged), a later restart does not bring it back.
#[tokio::test]
async fn a_tripped_guard_rail_lost_with_the_guard_file_is_restored_from_the_log() {
    let rails = GuardRails { autonomous_per_service_per_hour: 1, ..GuardRails::default() };
    let mut h = Harness::start(Setup { guard_rails: rails, ..Setup::default() }).await;
    assert_eq!(route(&staging(&h, "inc-t1").await), pb::Route::Autonomous);
    assert_eq!(rules(&staging(&h, "inc-t2").await), vec!["rate_limit"]);
    let file = arf_governor::guard::state_path(&h.config.data_dir);
    std::fs::remove_file(&file).unwrap();
    h.restart_governor().await;
    let held = staging(&h, "inc-t3").await;
    assert_eq!(route(&held), pb::Route::Approval, "the service's autonomy came back with the lost file");
    assert_eq!(rules(&held), vec!["rate_limit"]);

    h.reset_autonomy("dave", "web", "").await.unwrap();
    std::fs::remove_file(&file).unwrap();
    h.advance_ms(2 * 3600 * 1000);
    h.restart_governor().await;
    assert_eq!(route(&staging(&h, "inc-t4").await), pb::Route::Autonomous, "a reset trip came back");
}

/// The hour's autonomous actions, lost with the guard-rail file (or never in the
/// file of a replica that takes over from another leader), are counted again from
/// the log's decisions: the rate limit does not grant the hour twice.
#[tokio::test]
async fn the_hours_autonomous_actions_lost_with_the_guard_file_still_count_toward_the_rate_limit() {
    let rails = GuardRails { autonomous_per_service_per_hour: 3, ..GuardRails::default() };
    let mut h = Harness::start(Setup { guard_rails: rails, ..Setup::default() }).await;
    assert_eq!(route(&staging(&h, "inc-h1").await), pb::Route::Autonomous);
    assert_eq!(route(&staging(&h, "inc-h2").await), pb::Route::Autonomous);
    std::fs::remove_file(arf_governor::guard::state_path(&h.config.data_dir)).unwrap();
    h.restart_governor().await;
    assert_eq!(route(&staging(&h, "inc-h3").await), pb::Route::Autonomous, "the third of three");
    let fourth = staging(&h, "inc-h4").await;
    assert_eq!(route(&fourth), pb::Route::Approval, "a fourth autonomous action within the hour");
    assert_eq!(rules(&fourth), vec!["rate_limit"]);
    assert_eq!(h.governance_events("rate_limit_tripped").await.len(), 1);
}

/// What a scripted executor answers `GetExecution` with; the test changes it.
type Later = Arc<std::sync::Mutex<&'static str>>;

/// An executor that takes every decision with the outcome `taken`, and answers
/// `GetExecution` with whatever `later` holds at the time.
struct Reporting {
    taken: &'static str,
    later: Later,
}

fn execution(decision_id: String, outcome: &str) -> pb::Execution {
    pb::Execution {
        decision_id,
        pathway: "restart_service".to_owned(),
        target: "web-staging".to_owned(),
        outcome: outcome.to_owned(),
        detail: "the health probe kept failing".to_owned(),
        verification: vec![],
        replayed: false,
    }
}

#[tonic::async_trait]
impl Executor for Reporting {
    async fn execute(&self, request: Request<pb::SignedDecision>) -> Result<Response<pb::Execution>, Status> {
        let body: arf_core::decision::DecisionBody = serde_json::from_slice(&request.into_inner().body).unwrap();
        Ok(Response::new(execution(body.decision_id, self.taken)))
    }

    async fn get_execution(&self, request: Request<pb::GetExecutionRequest>) -> Result<Response<pb::Execution>, Status> {
        let outcome = *self.later.lock().unwrap();
        Ok(Response::new(execution(request.into_inner().decision_id, outcome)))
    }
}

async fn start_scripted(taken: &'static str, later: &'static str) -> (String, Later, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let later = Arc::new(std::sync::Mutex::new(later));
    let executor = Reporting { taken, later: Arc::clone(&later) };
    tokio::spawn(tonic::transport::Server::builder().add_service(ExecutorServer::new(executor)).serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        async move {
            let _ = stopped.await;
        },
    ));
    (address, later, stop)
}

async fn start_executor(outcome: &'static str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let (address, _, stop) = start_scripted(outcome, outcome).await;
    (address, stop)
}

/// Follows the log until a record satisfies `wanted`.
async fn wait_for_record(tail: &mut (impl futures::Stream<Item = Result<Record, arf_audit::AuditError>> + Unpin), wanted: impl Fn(&Record) -> bool) -> Record {
    loop {
        let record = tokio::time::timeout(std::time::Duration::from_secs(30), tail.next()).await.expect("timed out following the log").unwrap().unwrap();
        if wanted(&record) {
            break record;
        }
    }
}

/// (runs, verified, rolled back, failed) of `restart_service` on `web`.
async fn stats(h: &Harness) -> (u64, u64, u64, u64) {
    let status = h.autonomy("dash").await.unwrap();
    let stats = status.stats.iter().find(|s| s.service == "web" && s.pathway == "restart_service").unwrap();
    (stats.runs, stats.verified, stats.rolled_back, stats.failed)
}

#[tokio::test]
async fn the_error_budget_switches_autonomy_off_for_the_pathway_until_an_admin_resets_it() {
    let (executor, _stop) = start_executor("rolled_back").await;
    let rails = GuardRails { error_budget_failures: 2, ..GuardRails::default() };
    let h = Harness::start(Setup { guard_rails: rails, executor_addr: Some(executor), ..Setup::default() }).await;
    let mut tail = h.audit.tail(1).await.unwrap();

    for incident in ["inc-e1", "inc-e2"] {
        let decision = staging(&h, incident).await;
        assert_eq!(route(&decision), pb::Route::Autonomous);
        // Wait until the governor has recorded this decision's outcome.
        loop {
            let record = tokio::time::timeout(std::time::Duration::from_secs(30), tail.next()).await.expect("timed out following the log").unwrap().unwrap();
            if record.payload["decision_id"] == decision.decision_id.as_str() && record.payload["state"] == "rolled_back" {
                break;
            }
        }
    }
    // The second failure used up the budget; the trip is logged right after the outcome.
    loop {
        let record = tokio::time::timeout(std::time::Duration::from_secs(30), tail.next()).await.expect("timed out following the log").unwrap().unwrap();
        if record.payload["event"] == "error_budget_tripped" {
            assert_eq!(record.payload["trip"]["pathway"], "restart_service");
            assert_eq!(record.payload["trip"]["service"], "web");
            break;
        }
    }

    let held = staging(&h, "inc-e3").await;
    assert_eq!(route(&held), pb::Route::Approval);
    assert_eq!(rules(&held), vec!["error_budget"]);
    // The failures also feed the risk history factor.
    let history = held.risk.as_ref().unwrap().factors.iter().find(|f| f.name == "success_history").unwrap().clone();
    assert_eq!(history.value, 1.0);
    assert!(history.detail.contains("verified in 0% of past runs"), "{}", history.detail);
    let text = h.explain("alice", &held.decision_id).await.unwrap().text;
    assert!(text.contains("error budget: 2 of 2 failed verifications of `restart_service` on `web`"), "{text}");
    assert!(text.contains("history of `restart_service` on `web`: 2 runs, 0 verified, 2 rolled back, 0 failed"), "{text}");

    let status = h.autonomy("dash").await.unwrap();
    assert_eq!(status.trips.len(), 1);
    assert_eq!((status.stats[0].runs, status.stats[0].rolled_back), (2, 2));

    assert_eq!(h.reset_autonomy("carol", "web", "restart_service").await.unwrap_err().code(), Code::PermissionDenied);
    let status = h.reset_autonomy("dave", "web", "restart_service").await.unwrap();
    assert_eq!(status.cleared[0].kind, "error_budget");
    // Statistics are history: a reset clears the budget, not the record.
    assert_eq!(status.stats[0].runs, 2);
    assert_eq!(route(&staging(&h, "inc-e4").await), pb::Route::Autonomous);
}

/// Governor replicas on PostgreSQL: what the guard rails remember beyond the log
/// (here, failed verifications short of the error budget, and the statistics)
/// passes to the replica that takes the lead, whose own guard-rail file is empty:
/// the failure after the failover uses the budget up.
#[tokio::test]
async fn the_error_budget_passes_to_the_governor_replica_that_takes_the_lead() {
    let server = arf_pg::testing::TestServer::start().await.unwrap();
    let postgres = server.database().await.unwrap();
    arf_pg::migrate(&mut postgres.connect().await.unwrap()).await.unwrap();
    let (executor, _stop) = start_executor("rolled_back").await;
    let rails = GuardRails { error_budget_failures: 3, ..GuardRails::default() };
    let mut h = Harness::start(Setup { guard_rails: rails, executor_addr: Some(executor), postgres: Some(postgres), ..Setup::default() }).await;
    let audit = h.audit.clone();
    let mut tail = audit.tail(1).await.unwrap();
    for incident in ["inc-p1", "inc-p2"] {
        let decision = staging(&h, incident).await;
        assert_eq!(route(&decision), pb::Route::Autonomous);
        wait_for_record(&mut tail, |r| r.payload["decision_id"] == decision.decision_id.as_str() && r.payload["state"] == "rolled_back").await;
    }
    assert_eq!(stats(&h).await, (2, 0, 2, 0));

    h.fail_over_to("governor-b").await;
    assert_eq!(stats(&h).await, (2, 0, 2, 0), "the new leader's statistics are the last leader's");
    let third = staging(&h, "inc-p3").await;
    assert_eq!(route(&third), pb::Route::Autonomous);
    wait_for_record(&mut tail, |r| r.payload["event"] == "error_budget_tripped").await;
    assert_eq!(rules(&staging(&h, "inc-p4").await), vec!["error_budget"]);
}

#[tokio::test]
async fn a_failed_rollback_quarantines_the_service_until_an_admin_resets_it() {
    let (executor, _stop) = start_executor("rollback_failed").await;
    let h = Harness::start(Setup { executor_addr: Some(executor), ..Setup::default() }).await;
    let mut tail = h.audit.tail(1).await.unwrap();

    let decision = staging(&h, "inc-q1").await;
    assert_eq!(route(&decision), pb::Route::Autonomous);
    // One failed rollback is enough: the quarantine is logged right after the outcome.
    let trip = loop {
        let record = tokio::time::timeout(std::time::Duration::from_secs(30), tail.next()).await.expect("timed out following the log").unwrap().unwrap();
        if record.payload["event"] == "rollback_failed_tripped" {
            break record;
        }
    };
    assert_eq!(trip.payload["decision_id"], decision.decision_id.as_str());
    assert_eq!(trip.payload["trip"]["service"], "web");
    assert_eq!(trip.payload["trip"]["pathway"], "", "the whole service is quarantined");

    // Well within the error budget, yet nothing runs on the service without a person.
    let held = staging(&h, "inc-q2").await;
    assert_eq!(route(&held), pb::Route::Approval);
    assert_eq!(rules(&held), vec!["quarantine"]);
    let text = h.explain("alice", &held.decision_id).await.unwrap().text;
    assert!(text.contains("service `web` is quarantined (the rollback of pathway `restart_service` on service `web` failed"), "{text}");

    assert_eq!(h.reset_autonomy("carol", "web", "").await.unwrap_err().code(), Code::PermissionDenied);
    // Resetting one pathway does not lift the quarantine of the whole service.
    let refused = h.reset_autonomy("dave", "web", "restart_service").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("the service-wide `rollback_failed` is lifted only by a reset of the whole service"), "{}", refused.message());
    assert_eq!(rules(&staging(&h, "inc-q2b").await), vec!["quarantine"]);
    let status = h.reset_autonomy("dave", "web", "").await.unwrap();
    assert_eq!(status.cleared[0].kind, "rollback_failed");
    assert_eq!(route(&staging(&h, "inc-q3").await), pb::Route::Autonomous);
}

#[tokio::test]
async fn a_failed_rollback_learned_after_a_restart_quarantines_the_service_and_counts_once() {
    // The first governor dispatches, and stops while the executor is still running.
    let (running, _, _stop_running) = start_scripted("running", "running").await;
    let mut h = Harness::start(Setup { executor_addr: Some(running), ..Setup::default() }).await;
    let decision = staging(&h, "inc-qr1").await;
    assert_eq!(decision.state, "authorized");

    // The next governor finds the decision authorized in the log and asks an
    // executor that has finished it.
    let (finished, _, _stop_finished) = start_scripted("running", "rollback_failed").await;
    h.config.executor_addr = finished;
    let audit = h.audit.clone();
    let mut tail = audit.tail(1).await.unwrap();
    h.restart_governor().await;
    let trip = wait_for_record(&mut tail, |r| r.payload["event"] == "rollback_failed_tripped").await;
    assert_eq!(trip.payload["decision_id"], decision.decision_id.as_str());
    assert_eq!(trip.payload["trip"]["pathway"], "", "the whole service is quarantined");
    assert_eq!(h.decision_records("inc-qr1", &decision.decision_id, "rollback_failed").await.len(), 1);
    assert_eq!(rules(&staging(&h, "inc-qr2").await), vec!["quarantine"]);
    assert_eq!(stats(&h).await, (1, 0, 1, 0));

    // The outcome is in the log now, so a third governor rebuilds the decision as
    // settled and neither asks for it nor counts it again.
    h.restart_governor().await;
    let settled = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match h.get("alice", &decision.decision_id).await {
                Ok(found) => break found,
                Err(status) => assert!(matches!(status.code(), Code::NotFound | Code::Unavailable), "{status:?}"),
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the decision is restored");
    assert_eq!(settled.state, "rollback_failed");
    assert_eq!(stats(&h).await, (1, 0, 1, 0));
    let saved = arf_governor::guard::load(&arf_governor::guard::state_path(&h.config.data_dir)).unwrap();
    assert!(saved.unlogged_outcomes.is_empty(), "{:?}", saved.unlogged_outcomes);
}

#[tokio::test]
async fn an_outcome_reported_after_the_governor_stopped_waiting_still_reaches_the_guard_rails() {
    let (executor, later, _stop) = start_scripted("running", "running").await;
    let h = Harness::start(Setup { executor_addr: Some(executor), ..Setup::default() }).await;
    let mut tail = h.audit.tail(1).await.unwrap();
    let decision = staging(&h, "inc-late").await;

    // An hour after the decision expired the executor still says it is running: the
    // governor counts a failure, once, and keeps asking.
    h.advance_ms((900 + 3600) * 1000 + 1);
    let overdue = wait_for_record(&mut tail, |r| r.payload["event"] == "outcome_overdue").await;
    assert_eq!(overdue.payload["decision_id"], decision.decision_id.as_str());
    assert_eq!(stats(&h).await, (1, 0, 0, 1));
    let waiting = h.get("alice", &decision.decision_id).await.unwrap();
    assert_eq!(waiting.state, "authorized");
    let text = h.explain("alice", &decision.decision_id).await.unwrap().text;
    assert!(text.contains("the executor has not reported an outcome yet: the executor took the decision but had reported no outcome by"), "{text}");
    assert!(text.contains("counted as a failure until it does"), "{text}");

    // Then the executor reports that the rollback failed: the service is
    // quarantined, and the execution is not counted a second time.
    *later.lock().unwrap() = "rollback_failed";
    let trip = wait_for_record(&mut tail, |r| r.payload["event"] == "rollback_failed_tripped").await;
    assert_eq!(trip.payload["decision_id"], decision.decision_id.as_str());
    assert_eq!(h.get("alice", &decision.decision_id).await.unwrap().state, "rollback_failed");
    assert_eq!(stats(&h).await, (1, 0, 0, 1));
    assert_eq!(rules(&staging(&h, "inc-late2").await), vec!["quarantine"]);
}

#[tokio::test]
async fn a_freeze_blocks_everything_except_rollbacks() {
    let now = arf_core::time::now_ms();
    let rails = GuardRails {
        freeze_windows: vec![FreezeWindowConfig {
            name: "year-end".to_owned(),
            starts_at: arf_core::time::format_ms(now - 3600 * 1000),
            ends_at: arf_core::time::format_ms(now + 3600 * 1000),
            reason: "year-end close".to_owned(),
        }],
        // For this test, restarting counts as undoing a change.
        rollback_pathways: vec!["restart_service".to_owned()],
        ..GuardRails::default()
    };
    let h = Harness::start(Setup { guard_rails: rails, ..Setup::default() }).await;

    let rollback = staging(&h, "inc-f1").await;
    assert_eq!(route(&rollback), pb::Route::Autonomous);
    let text = h.explain("alice", &rollback.decision_id).await.unwrap().text;
    assert!(text.contains("change freeze: `year-end`"), "{text}");
    assert!(text.contains("this pathway is a rollback, so it is exempt"), "{text}");

    // Everything else is denied, even what people could otherwise approve.
    let purge = h.evaluate(proposal("inc-f2", "purge_cache", "web-staging", 0.99)).await.unwrap();
    assert_eq!(route(&purge), pb::Route::Deny);
    assert_eq!(rules(&purge), vec!["change_freeze", "irreversible"]);
    assert_eq!(purge.state, "denied");

    // A rollback in production still needs its approval.
    let production = h.evaluate(proposal("inc-f3", "restart_service", "web-prod", 0.9)).await.unwrap();
    assert_eq!(route(&production), pb::Route::Approval);

    assert_eq!(h.autonomy("dash").await.unwrap().active_freezes, vec!["year-end"]);

    // When the freeze ends, ordinary routing resumes.
    h.advance_ms(2 * 3600 * 1000);
    let after = h.evaluate(proposal("inc-f4", "purge_cache", "web-staging", 0.99)).await.unwrap();
    assert_eq!(route(&after), pb::Route::Approval);
}

/// A model's stated confidence is weighed by its record: after one of its
/// proposals on a pathway rolled back, the same model saying 1.0 no longer gets
/// autonomy there, while another model (no record) still does.
#[tokio::test]
async fn a_model_whose_actions_rolled_back_is_trusted_less_whatever_it_states() {
    let (executor, _stop) = start_executor("rolled_back").await;
    // An error budget too large to trip: only calibration is at work here.
    let rails = GuardRails { error_budget_failures: 100, ..GuardRails::default() };
    let h = Harness::start(Setup { guard_rails: rails, executor_addr: Some(executor), ..Setup::default() }).await;
    let mut tail = h.audit.tail(1).await.unwrap();
    let propose = |incident: &str, confidence: f64| proposal(incident, "restart_service", "web-staging", confidence);
    let first = propose("inc-c1", 0.9);
    h.back_as_model(&first, "web", "staging", "overconfident-7b").await;
    let decision = h.evaluate_unbacked("agent", first).await.unwrap();
    assert_eq!(route(&decision), pb::Route::Autonomous, "no record yet: trusted up to the prior, 0.7");
    let id = decision.decision_id.clone();
    wait_for_record(&mut tail, |r| r.payload["decision_id"] == id.as_str() && r.payload["state"] == "rolled_back").await;
    let p = propose("inc-c2", 1.0);
    h.back_as_model(&p, "web", "staging", "overconfident-7b").await;
    let held = h.evaluate_unbacked("agent", p).await.unwrap();
    assert_eq!(route(&held), pb::Route::Approval, "{:?}", rules(&held));
    let record = h.decision_records("inc-c2", &held.decision_id, "pending").await.remove(0);
    let calibration = &record.payload["policy_input"]["calibration"];
    assert_eq!((calibration["runs"].as_u64(), calibration["verified"].as_u64()), (Some(1), Some(0)), "{calibration}");
    assert!((calibration["confidence"].as_f64().unwrap() - 3.5 / 6.0).abs() < 1e-9, "(5 x 0.7 + 0) / (5 + 1): {calibration}");
    let text = h.explain("alice", &held.decision_id).await.unwrap().text;
    assert!(text.contains("confidence 1.00 as stated, 0.58 calibrated by `scripted:overconfident-7b`"), "{text}");
    // Another model, with no record, is trusted up to the prior.
    let p = propose("inc-c4", 1.0);
    h.back_as_model(&p, "web", "staging", "fresh-7b").await;
    assert_eq!(route(&h.evaluate_unbacked("agent", p).await.unwrap()), pb::Route::Autonomous);
}

/// An outcome learned while the log is down is logged once the log is back, by
/// the same governor: the settled state is retried until it lands, not left for a
/// restart to find.
#[tokio::test]
async fn an_outcome_learned_while_the_log_is_down_is_logged_when_it_returns() {
    let (executor, later, _stop) = start_scripted("running", "running").await;
    let mut h = Harness::start(Setup { executor_addr: Some(executor), ..Setup::default() }).await;
    let decision = staging(&h, "inc-outage").await;
    assert_eq!(decision.state, "authorized");
    h.stop_audit().await;
    *later.lock().unwrap() = "verified";
    // The governor learns the outcome and cannot log it; then the log returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while h.get("alice", &decision.decision_id).await.unwrap().state != "verified" {
        assert!(std::time::Instant::now() < deadline, "the governor never learned the outcome");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    h.start_audit().await;
    let logged = loop {
        let trail = h.audit.read_incident("inc-outage").await.unwrap_or_default();
        if let Some(record) = trail.into_iter().find(|r| r.payload["decision_id"] == decision.decision_id.as_str() && r.payload["state"] == "verified") {
            break record;
        }
        assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(30), "the outcome never reached the log");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(logged.writer, "governor");
}
