//! A decision the trail shows never started is settled as never run only if the
//! executor wrote nothing to the incident since the trail was read, judged in the
//! log's own order: a start that lands in between turns the settling down, and
//! the decision is judged again from the log. The log never shows a decision
//! settled as never run that then started (the eval harness's `unrun`).
//!
//! In a file of its own: the pause it sets is taken by the next settling in this
//! process, whichever test makes it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly on anything unexpected")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{answer, authorized_with, log_started};

/// An executor that takes the decision (`running`), then holds no record of it.
#[derive(Default)]
struct Forgets {
    executes: AtomicU32,
}

#[tonic::async_trait]
impl arf_proto::v1::executor_server::Executor for Forgets {
    async fn execute(&self, request: tonic::Request<arf_proto::v1::SignedDecision>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        let body: arf_core::decision::DecisionBody = serde_json::from_slice(&request.into_inner().body).unwrap();
        self.executes.fetch_add(1, Ordering::SeqCst);
        Ok(answer(body, "running".to_owned(), String::new()))
    }

    async fn get_execution(&self, _: tonic::Request<arf_proto::v1::GetExecutionRequest>) -> Result<tonic::Response<arf_proto::v1::Execution>, tonic::Status> {
        Err(tonic::Status::not_found("no execution of that decision"))
    }
}

/// The decision expires with nothing started in the log; the governor reads the
/// trail and is held before it logs `dispatch_failed`. Meanwhile the executor's
/// start reaches the log (an append that its executor took for failed, committed
/// late). The settling is turned down, and the decision, now shown started and
/// expired, goes to a person instead.
#[tokio::test]
async fn a_start_that_lands_before_a_settling_as_never_run_turns_it_down() {
    let executor = Arc::new(Forgets::default());
    let (h, decided, _stop) = authorized_with(Arc::clone(&executor), "inc-late-start").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while executor.executes.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    arf_core::crash::pause_next("governor.before_settling_unrun", Duration::from_secs(3));
    h.advance_ms(901_000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while arf_core::crash::pending("governor.before_settling_unrun") {
        assert!(Instant::now() < deadline, "the governor never came to settle the decision");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log_started(&h, "inc-late-start", &decided.decision_id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = 'settled: loop {
        for state in ["dispatch_failed", "rollback_failed"] {
            if let Some(record) = h.decision_records("inc-late-start", &decided.decision_id, state).await.pop() {
                break 'settled (state, record);
            }
        }
        assert!(Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(settled.0, "rollback_failed", "settled as never run after the start reached the log: {:?}", settled.1);
    assert!(h.decision_records("inc-late-start", &decided.decision_id, "dispatch_failed").await.is_empty());
}
