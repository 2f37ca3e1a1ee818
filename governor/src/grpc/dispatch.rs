//! Sending signed decisions to the executor, and recording what it reports.
//!
//! `Execute` is idempotent per decision id, so while the executor is unreachable
//! the same signed decision is retried with backoff until it expires.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tonic::Code;
use tracing::{info, warn};

use arf_audit::RecordKind;
use arf_proto::v1 as pb;

use crate::decision::State;
use crate::grpc::Shared;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// After the executor took a decision, how long to keep asking for its outcome.
const OUTCOME_PATIENCE_MS: i64 = 60 * 60 * 1000;

/// Errors worth another try: the executor is down, restarting or overloaded.
fn retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::ResourceExhausted | Code::Aborted)
}

fn wait_for(now_ms: i64, deadline_ms: i64, backoff: Duration) -> Duration {
    let left = u64::try_from(deadline_ms.saturating_sub(now_ms)).unwrap_or(0);
    backoff.min(Duration::from_millis(left))
}

/// Dispatches one signed decision and records its outcome in the decision.
pub(crate) async fn run(
    shared: Arc<Shared>,
    decision_id: String,
    incident_id: String,
    signed: pb::SignedDecision,
    expires_at_ms: i64,
) {
    let (state, detail) = execute(&shared, &decision_id, signed, expires_at_ms).await;
    info!(%decision_id, state = state.as_str(), %detail, "dispatch finished");
    shared.finish(&decision_id, &incident_id, state, detail).await;
}

async fn execute(
    shared: &Shared,
    decision_id: &str,
    signed: pb::SignedDecision,
    expires_at_ms: i64,
) -> (State, String) {
    let mut backoff = FIRST_BACKOFF;
    let mut last_error = String::new();
    let execution = loop {
        let now = (shared.clock)();
        if now >= expires_at_ms {
            return (
                State::DispatchFailed,
                format!(
                    "the executor could not be reached before the decision expired at {}: {last_error}",
                    arf_core::time::format_ms(expires_at_ms)
                ),
            );
        }
        match shared.executor.clone().execute(signed.clone()).await {
            Ok(response) => break response.into_inner(),
            Err(status) if retryable(status.code()) => {
                warn!(%decision_id, code = ?status.code(), error = status.message(), "executor unreachable; retrying");
                last_error = format!("{:?}: {}", status.code(), status.message());
                tokio::time::sleep(wait_for(now, expires_at_ms, backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(status) => {
                return (
                    State::DispatchFailed,
                    format!("the executor refused the decision ({:?}): {}", status.code(), status.message()),
                );
            }
        }
    };
    follow(shared, decision_id, execution, expires_at_ms).await
}

/// Waits for a final outcome when the executor answered while still running.
async fn follow(
    shared: &Shared,
    decision_id: &str,
    mut execution: pb::Execution,
    expires_at_ms: i64,
) -> (State, String) {
    let give_up_at = expires_at_ms.saturating_add(OUTCOME_PATIENCE_MS);
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(state) = State::from_outcome(&execution.outcome) {
            return (state, execution.detail);
        }
        if execution.outcome != "running" {
            return (
                State::Failed,
                format!("the executor reported unknown outcome `{}`: {}", execution.outcome, execution.detail),
            );
        }
        let now = (shared.clock)();
        if now >= give_up_at {
            return (State::Failed, "the executor took the decision but never reported an outcome".to_owned());
        }
        tokio::time::sleep(wait_for(now, give_up_at, backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let request = pb::GetExecutionRequest { decision_id: decision_id.to_owned() };
        match shared.executor.clone().get_execution(request).await {
            Ok(response) => execution = response.into_inner(),
            Err(status) => {
                warn!(%decision_id, code = ?status.code(), error = status.message(), "cannot read the execution; retrying")
            }
        }
    }
}

impl Shared {
    /// Records a dispatch outcome: in memory first, then in the log (best effort:
    /// the executor logs its own outcome, this is the governor's view of it).
    pub(crate) async fn finish(&self, decision_id: &str, incident_id: &str, state: State, detail: String) {
        let mut subject = None;
        if let Some(entry) = self.entry(decision_id).await {
            let mut decision = entry.lock().await;
            decision.state = state;
            decision.detail.clone_from(&detail);
            subject = Some((decision.service.clone(), decision.remediation.pathway.clone()));
        }
        let payload = json!({ "decision_id": decision_id, "state": state.as_str(), "detail": detail });
        if let Err(error) = self.audit.append_one(incident_id, RecordKind::Decision, payload).await {
            warn!(%decision_id, %error, "cannot log the dispatch outcome");
        }
        // Feedback, after the outcome is logged: what the executor reports feeds the
        // statistics, the risk history factor and the error budget.
        if let Some((service, pathway)) = subject {
            self.record_outcome(incident_id, decision_id, &service, &pathway, state.as_str()).await;
        }
    }
}
