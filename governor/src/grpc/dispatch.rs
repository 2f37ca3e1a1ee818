//! Sending signed decisions to the executor, following them to their outcome, and
//! feeding that outcome back into the guard rails.
//!
//! `Execute` is idempotent per decision id, so while the executor is unreachable
//! the same signed decision is retried with backoff until it expires. A decision is
//! settled only on the executor's word: an outcome, a refusal, or, once the decision
//! has expired, the executor saying it never received it. Until then the governor
//! keeps asking, and after a restart it asks again ([`follow`]).

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use tracing::{error, info, warn};

use arf_audit_client::{Quiet, RecordKind};
use arf_core::records::{self, DecisionStateRecord};
use arf_proto::v1 as pb;

use crate::decision::State;
use crate::grpc::Shared;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often to look whether a change freeze began.
const FREEZE_WATCH: Duration = Duration::from_secs(1);
/// How often to ask for an outcome that is overdue.
const OVERDUE_BACKOFF: Duration = Duration::from_secs(60);

/// How many reads of the trail a withdrawal takes at most while the executor keeps
/// writing to the incident ([`Shared::withdraw`]).
const WITHDRAW_TRIES: usize = 5;

/// After a decision expired, how long an execution may run before its outcome is
/// overdue and it counts as a failure.
const OUTCOME_PATIENCE_MS: i64 = 60 * 60 * 1000;

/// Errors worth another try: the executor is down, restarting or overloaded.
fn retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::ResourceExhausted | Code::Aborted)
}

fn wait_for(now_ms: i64, deadline_ms: i64, backoff: Duration) -> Duration {
    let left = u64::try_from(deadline_ms.saturating_sub(now_ms)).unwrap_or(0);
    backoff.min(Duration::from_millis(left))
}

/// What came of sending the decision.
enum Sent {
    /// The executor took it and said how the execution stands.
    Taken(pb::Execution),
    /// The executor refused it. With `true`, on the only attempt of this send, so
    /// nothing ran, unless a governor before a restart sent it too; with `false`,
    /// an earlier attempt that failed may have reached the executor, whose work
    /// goes on after a lost answer, so only the executor or the log can say.
    Refused(String, bool),
    /// The executor could not be reached before the decision expired, or failed
    /// while handling it. An attempt may have run it, so only the executor can say.
    Unreached(String),
    /// The guard rails no longer let the decision start (why), so it was not sent
    /// (again); an earlier attempt may have reached the executor all the same.
    Withheld(String),
}

/// Dispatches one signed decision and follows it to its outcome. `fresh`: just
/// authorized by this process, so never sent before (not so when a restart resumes it).
pub(crate) async fn run(
    shared: Arc<Shared>,
    (decision_id, incident_id): (String, String),
    signed: pb::SignedDecision,
    expires_at_ms: i64,
    fresh: bool,
) {
    // Withdrawn before a restart: never sent again; the executor's word settles it.
    if let Some(why) = shared.withdrawal(&decision_id) {
        follow(shared, (decision_id, incident_id), (expires_at_ms, Some(signed)), None, why).await;
        return;
    }
    match send(&shared, &decision_id, signed.clone(), expires_at_ms, true).await {
        Sent::Taken(execution) => {
            follow(shared, (decision_id, incident_id), (expires_at_ms, Some(signed)), Some(execution), String::new()).await;
        }
        // Refused on its only sending: nothing ran.
        Sent::Refused(detail, true) if fresh && shared.withdrawal(&decision_id).is_none() => {
            info!(%decision_id, %detail, "the executor refused the decision");
            shared.finish(&decision_id, &incident_id, State::DispatchFailed, detail).await;
        }
        // An earlier sending may have reached the executor (an answer lost, or a
        // governor before a restart), whose work goes on after a lost answer, or the
        // executor refused what the governor withdrew. The refusal stands: the
        // decision is withdrawn (so no earlier sending still under way starts it),
        // then settled by the executor's claim and the log, at once when neither
        // shows it (a decision the log shows started is sent again to be settled).
        Sent::Refused(detail, _) => {
            info!(%decision_id, %detail, "the executor refused the decision; withdrawing it and asking whether an earlier sending ran it");
            shared.note(&decision_id, &detail).await;
            shared.withdraw(&decision_id, &incident_id, &format!("the executor refused it: {detail}")).await;
            follow(shared, (decision_id, incident_id), (expires_at_ms, Some(signed)), None, detail).await;
        }
        Sent::Unreached(detail) => {
            warn!(%decision_id, %detail, "whether the decision ran is unknown; asking the executor");
            shared.note(&decision_id, &detail).await;
            follow(shared, (decision_id, incident_id), (expires_at_ms, Some(signed)), None, detail).await;
        }
        Sent::Withheld(why) => {
            // An earlier attempt may have reached the executor: logged as withdrawn
            // first, then followed, and settled unrun only on the executor's word.
            shared.withdraw(&decision_id, &incident_id, &why).await;
            follow(shared, (decision_id, incident_id), (expires_at_ms, Some(signed)), None, why).await;
        }
    }
}

/// What a withdrawn decision settles with.
fn withdrawn_detail(why: &str, executor_said: &str) -> String {
    format!("withdrawn before it started ({why}); {executor_said}; nothing ran")
}

/// Sends the signed decision until the executor answers or it expires. With
/// `ask_rails`, the guard rails are asked before every attempt; without, only for
/// a decision the log shows started, which the executor settles from the log and
/// never runs again, whatever the guard rails say now.
async fn send(shared: &Shared, decision_id: &str, signed: pb::SignedDecision, expires_at_ms: i64, ask_rails: bool) -> Sent {
    let mut backoff = FIRST_BACKOFF;
    let mut last_error = String::new();
    loop {
        let now = (shared.clock)();
        if now >= expires_at_ms {
            return Sent::Unreached(format!(
                "the executor could not be reached before the decision expired at {}: {last_error}",
                arf_core::time::format_ms(expires_at_ms)
            ));
        }
        // Asked before every attempt: the kill switch pulled (or a freeze begun)
        // while the executor was out of reach, or while this governor was down, holds
        // the decision back. (The first attempt waits here for the call that
        // authorized the decision to let go of it.)
        if ask_rails && let Some(entry) = shared.entry(decision_id).await {
            let withheld = shared.withheld_now(&*entry.lock().await, now, true);
            if let Some(why) = withheld {
                return Sent::Withheld(why);
            }
        }
        let (which, mut executor) = shared.executor.client();
        match executor.execute(signed.clone()).await {
            Ok(response) => {
                // The executor witnessed the log before it took the decision.
                shared.alarm.witness_accepted("executor");
                return Sent::Taken(response.into_inner());
            }
            Err(status) if retryable(status.code()) => {
                warn!(%decision_id, code = ?status.code(), error = status.message(), "executor unreachable; retrying");
                shared.executor.failed(which);
                last_error = format!("{:?}: {}", status.code(), status.message());
                tokio::time::sleep(wait_for(now, expires_at_ms, backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            // An internal error can come after the action ran (the executor's store
            // or log failed midway): only the executor can say how it stands.
            // Cancelled is the transport's word (a reset stream), not the executor's:
            // the executor's work goes on without the caller.
            Err(status) if matches!(status.code(), Code::Internal | Code::Cancelled) => {
                warn!(%decision_id, error = status.message(), "the executor failed while handling the decision; following it");
                return Sent::Unreached(format!(
                    "the executor failed while handling the decision ({}); following it to its outcome",
                    status.message()
                ));
            }
            Err(status) => {
                if status.metadata().get(arf_proto::server::REFUSAL).is_some_and(|v| v == arf_proto::server::LOG_NOT_WITNESSED) {
                    shared.alarm.witness_refused("executor", status.message(), decision_id, (shared.clock)());
                }
                return Sent::Refused(format!("the executor refused the decision ({:?}): {}", status.code(), status.message()), last_error.is_empty());
            }
        }
    }
}

/// Asks the executor about a dispatched decision until it settles, then records the
/// outcome with [`Shared::finish`]: right after dispatch, and after a restart for the
/// decisions the log shows authorized but not settled.
///
/// `execution` is what the executor last said, if it said anything; `known` is what
/// the governor knew before asking, for the record if the executor never got it.
/// An execution still running an hour after its decision expired is counted as a
/// failure, once ([`Shared::overdue`]), and followed on, so that its real outcome, a
/// failed rollback above all, still reaches the guard rails.
///
/// A decision the executor holds no record of is judged by the log. With an
/// outcome logged, it is settled by it. Started, it is sent again while live (its
/// executor's store was lost; the executor settles it from the log) and followed
/// on; once expired, no executor will settle it, so it is settled
/// `rollback_failed`: unverified, its target needing a person. Never started:
/// withdrawn before the executor was asked, it is settled unrun; expired, it is
/// settled as never run (either only if the executor wrote nothing to the incident
/// since the trail was read, [`Shared::finish_unrun`]); live, it is sent again (with the
/// `signed` decision, if the guard rails still let it start, otherwise withdrawn):
/// a claim can be given back after the governor was told `running` (the executor
/// replica that claimed it died before starting it, and the one that settled the
/// cut-off claim found nothing started), and this follower would otherwise wait
/// for the expiry. `Execute` is idempotent per decision id and reads the log
/// before it acts, so this never runs an action twice.
pub(crate) async fn follow(
    shared: Arc<Shared>,
    (decision_id, incident_id): (String, String),
    (expires_at_ms, signed): (i64, Option<pb::SignedDecision>),
    mut execution: Option<pb::Execution>,
    known: String,
) {
    let overdue_at = expires_at_ms.saturating_add(OUTCOME_PATIENCE_MS);
    let mut overdue = false;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(execution) = &execution {
            if let Some(state) = State::from_outcome(&execution.outcome) {
                info!(%decision_id, state = state.as_str(), "the executor reported an outcome");
                shared.finish(&decision_id, &incident_id, state, execution.detail.clone()).await;
                return;
            }
            if execution.outcome != "running" {
                let detail =
                    format!("the executor reported unknown outcome `{}`: {}", execution.outcome, execution.detail);
                shared.finish(&decision_id, &incident_id, State::Failed, detail).await;
                return;
            }
            if !overdue && (shared.clock)() >= overdue_at {
                overdue = true;
                shared.overdue(&decision_id, &incident_id).await;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(if overdue { OVERDUE_BACKOFF } else { MAX_BACKOFF });
        // Read before asking: a withdrawal logged before the executor is asked is one
        // any later claim of the decision will find in the log.
        let withdrawn = shared.withdrawal(&decision_id);
        let request = pb::GetExecutionRequest { decision_id: decision_id.clone() };
        let (which, mut executor) = shared.executor.client();
        match executor.get_execution(request).await {
            Ok(response) => execution = Some(response.into_inner()),
            // The executor holds no claim of the decision: what the log says of it decides.
            Err(status) if status.code() == Code::NotFound => match logged_execution(&shared, &incident_id, &decision_id).await {
                Err(error) => warn!(%decision_id, %error, "cannot read the incident's trail to settle the decision; retrying"),
                // Its executor lost the record of an outcome (a store gone): settled by the log.
                Ok((Logged::Ended(state, detail), _)) => {
                    info!(%decision_id, state = state.as_str(), "the executor has no record of the decision; its outcome is in the log");
                    shared.finish(&decision_id, &incident_id, state, detail).await;
                    return;
                }
                // Started, its executor holds no record (its store is gone), and expired:
                // the executor takes no expired decision, so none will settle it from the
                // log. What ran, and the target's state, are unknown: it is settled as
                // needing a person (the service quarantined, the incident escalated),
                // never as nothing ran.
                Ok((Logged::Started, _)) if (shared.clock)() >= expires_at_ms => {
                    error!(%decision_id, "the log shows the decision started, no executor holds it, and it expired; the target needs a person");
                    let detail = format!(
                        "the log shows it started, but no executor holds a record of it (its store was lost) and it expired at {}, so no executor will settle it from the log: whether its action finished, and the state of its target, are unknown, and it was neither verified nor rolled back; the target needs a person",
                        arf_core::time::format_ms(expires_at_ms)
                    );
                    shared.finish(&decision_id, &incident_id, State::RollbackFailed, detail).await;
                    return;
                }
                // Started, and its executor holds no record (its store is gone, or another
                // replica holds it): sent again while live, whatever the guard rails say
                // now, since the executor then settles it from the log (verifies it, rolls
                // it back) and never runs it again; followed on until its outcome.
                Ok((Logged::Started, _)) => {
                    warn!(%decision_id, "the log shows the decision started, but the executor has no record of it; following on");
                    if let Some(signed) = &signed {
                        match send(&shared, &decision_id, signed.clone(), expires_at_ms, false).await {
                            Sent::Taken(answer) => execution = Some(answer),
                            Sent::Refused(detail, _) | Sent::Unreached(detail) | Sent::Withheld(detail) => shared.note(&decision_id, &detail).await,
                        }
                    }
                }
                // Withdrawn before the executor was asked, never claimed, never started:
                // a later claim finds the withdrawal in the log and refuses, so it never runs.
                Ok((Logged::NeverStarted, quiet)) if let Some(why) = withdrawn => {
                    let detail = withdrawn_detail(&why, "the executor holds no claim of it and the log shows it never started");
                    if shared.finish_unrun(&decision_id, &incident_id, State::Expired, detail, quiet).await {
                        info!(%decision_id, "the withdrawn decision was never taken by the executor; settled unrun");
                        return;
                    }
                }
                // The executor starts nothing after expiry.
                Ok((Logged::NeverStarted, quiet)) if (shared.clock)() >= expires_at_ms => {
                    let expired = arf_core::time::format_ms(expires_at_ms);
                    let detail = format!(
                        "{}the executor has no record of the decision, which expired at {expired}, and the log shows it never started, so nothing ran",
                        if known.is_empty() { String::new() } else { format!("{known}; ") }
                    );
                    if shared.finish_unrun(&decision_id, &incident_id, State::DispatchFailed, detail, quiet).await {
                        return;
                    }
                }
                // Live, never started, no claim (given back, or never made): sent again
                // if the guard rails still let it start, withdrawn otherwise.
                Ok((Logged::NeverStarted, _)) => {
                    if let Some(signed) = &signed {
                        warn!(%decision_id, "the executor holds no claim of the decision (given back, or never made); sending it again");
                        match send(&shared, &decision_id, signed.clone(), expires_at_ms, true).await {
                            Sent::Taken(answer) => execution = Some(answer),
                            Sent::Withheld(why) => {
                                warn!(%decision_id, %why, "the guard rails no longer let the decision start; withdrawing it");
                                shared.withdraw(&decision_id, &incident_id, &why).await;
                            }
                            // Not settled on a refusal now (it may be the expiry, checked before
                            // the log): followed on, by the rules above.
                            Sent::Refused(detail, _) | Sent::Unreached(detail) => shared.note(&decision_id, &detail).await,
                        }
                    }
                }
            },
            Err(status) => {
                warn!(%decision_id, code = ?status.code(), error = status.message(), "cannot read the execution; retrying");
                if retryable(status.code()) {
                    shared.executor.failed(which);
                }
            }
        }
    }
}

/// What the log says of a decision's execution, by the executor's records.
enum Logged {
    NeverStarted,
    Started,
    Ended(State, String),
}

/// What the log says of the decision's execution, and how far the trail was read:
/// a settling as never run is logged only if the executor has written nothing to
/// the incident since ([`Shared::finish_unrun`]).
async fn logged_execution(shared: &Shared, incident_id: &str, decision_id: &str) -> Result<(Logged, Quiet), arf_audit_client::AuditError> {
    let trail = shared.audit.read_incident(incident_id).await?;
    let quiet = Quiet::since(incident_id, EXECUTOR_WRITER, &trail);
    let ours = |r: &&arf_audit_client::Record| r.writer == EXECUTOR_WRITER && r.payload.get("decision_id").and_then(serde_json::Value::as_str) == Some(decision_id);
    if let Some(outcome) = trail.iter().filter(ours).filter(|r| r.kind == RecordKind::Outcome).find_map(|r| r.parse::<records::OutcomeRecord>().ok()) {
        let state = State::from_outcome(&outcome.outcome).unwrap_or(State::Failed);
        return Ok((Logged::Ended(state, outcome.detail), quiet));
    }
    let started = trail.iter().filter(ours).any(|r| r.kind == RecordKind::ExecutionStarted);
    Ok((if started { Logged::Started } else { Logged::NeverStarted }, quiet))
}

/// The writer whose `execution_started` and `outcome` records the governor believes.
const EXECUTOR_WRITER: &str = "executor";

impl Shared {
    /// Settles a dispatched decision with what the executor reported, once: the
    /// outcome feeds the guard rails (statistics, error budget, quarantine), then it
    /// is logged, then the guard rails it tripped. A decision already settled stays
    /// as it is, so two followers of one decision cannot count it twice.
    pub(crate) async fn finish(&self, decision_id: &str, incident_id: &str, state: State, detail: String) {
        let Some(entry) = self.entry(decision_id).await else {
            warn!(%decision_id, state = state.as_str(), "an outcome for a decision the governor does not hold; ignored");
            return;
        };
        let mut decision = entry.lock().await;
        if decision.state.is_final() {
            info!(%decision_id, state = decision.state.as_str(), reported = state.as_str(), "decision already settled; report ignored");
            return;
        }
        // Counted before it is logged: if the governor stops in between, the log still
        // shows the decision authorized, the next governor asks the executor again,
        // and the guard state remembers that this outcome was counted.
        let (trips, graduation) = self.count_outcome(decision_id, (&decision.environment, &decision.service), &decision.remediation.pathway, &decision.model, state.as_str());
        decision.state = state;
        decision.detail.clone_from(&detail);
        drop(decision);
        self.withdrawn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(decision_id);
        // Retried until the log takes it (the decision's lock is not held meanwhile,
        // so it can still be read): a settled decision the log does not show settled
        // would be followed again by the next governor.
        let payload = records::encode(&DecisionStateRecord { decision_id: decision_id.to_owned(), state: state.as_str().to_owned(), detail });
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.audit.append_one(incident_id, RecordKind::Decision, payload.clone()).await {
                Ok(_) => {
                    self.forget_outcomes(|guard| crate::guard::outcome_logged(guard, decision_id));
                    break;
                }
                Err(error) => {
                    warn!(%decision_id, %error, "cannot log the decision's outcome yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.log_trips(&trips, incident_id, decision_id).await;
        self.log_graduation(graduation).await;
    }

    /// Settles a decision the trail (read up to `quiet`) shows never started as never
    /// run (`expired`, `dispatch_failed`), only if the executor has written nothing
    /// to the incident since, judged in the log's own order. So a start that
    /// reached the log first makes this refuse (false: read the trail again), and
    /// one that comes later is refused in its turn (the executor starts only if the
    /// governor said nothing since its own read): the log never shows a decision
    /// settled as never run and then started. True once it is settled, by this or
    /// by another follower.
    pub(crate) async fn finish_unrun(&self, decision_id: &str, incident_id: &str, state: State, detail: String, quiet: Quiet) -> bool {
        let Some(entry) = self.entry(decision_id).await else { return true };
        let mut decision = entry.lock().await;
        if decision.state.is_final() {
            return true;
        }
        if let Some(pause) = arf_core::crash::pause("governor.before_settling_unrun") {
            tokio::time::sleep(pause).await;
        }
        let payload = records::encode(&DecisionStateRecord { decision_id: decision_id.to_owned(), state: state.as_str().to_owned(), detail: detail.clone() });
        let entry = arf_audit_client::Entry::new(incident_id, RecordKind::Decision, payload);
        match self.audit.append_if_quiet(entry, quiet).await {
            Ok(_) => {
                info!(%decision_id, state = state.as_str(), "settled as never run");
                decision.state = state;
                decision.detail = detail;
                drop(decision);
                self.withdrawn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(decision_id);
                // An overdue outcome counted earlier is settled now, as by `finish`.
                self.forget_outcomes(|guard| crate::guard::outcome_logged(guard, decision_id));
                true
            }
            Err(arf_audit_client::AuditError::Spoken(why)) => {
                warn!(%decision_id, %why, "the executor wrote to the incident since its trail was read; reading it again before settling");
                false
            }
            Err(error) => {
                warn!(%decision_id, %error, "cannot log the decision settled as never run yet; retrying");
                false
            }
        }
    }

    /// Counts an execution whose outcome is overdue as a failure, once: its target is
    /// in a state nobody has verified. The decision stays authorized, so it is still
    /// followed (after a restart too) until the executor reports.
    pub(crate) async fn overdue(&self, decision_id: &str, incident_id: &str) {
        let Some(entry) = self.entry(decision_id).await else { return };
        let mut decision = entry.lock().await;
        if decision.state.is_final() {
            return;
        }
        let detail = format!(
            "the executor took the decision but had reported no outcome by {}; counted as a failure until it does",
            arf_core::time::format_ms((self.clock)())
        );
        warn!(%decision_id, "outcome overdue; counted as a failure, still asking");
        let (trips, graduation) = self.count_outcome(decision_id, (&decision.environment, &decision.service), &decision.remediation.pathway, &decision.model, "failed");
        decision.detail.clone_from(&detail);
        // No `state`: the decision is not settled, and a restart must follow it again.
        let payload = records::encode(&records::GovernanceEvent::OutcomeOverdue { decision_id: decision_id.to_owned(), detail });
        if let Err(error) = self.audit.append_one(incident_id, RecordKind::Decision, payload).await {
            warn!(%decision_id, %error, "cannot log the overdue outcome");
        }
        drop(decision);
        self.log_trips(&trips, incident_id, decision_id).await;
        self.log_graduation(graduation).await;
    }

    /// Withdraws an authorized decision the guard rails no longer let start (`why`),
    /// if the log shows it has not started: logs so under its incident, only if the
    /// executor has appended nothing to it since that read (in the log's order), then
    /// remembers it. The executor logs a start only if the governor appended nothing
    /// since its own last read of the trail, so a start never follows a withdrawal,
    /// and a withdrawal never follows a start: the record means nothing ran. One
    /// already started, or settled, is left to its follower. Best effort: a
    /// withdrawal the log did not take is tried again by the decision's follower.
    pub(crate) async fn withdraw(&self, decision_id: &str, incident_id: &str, why: &str) {
        for _ in 0..WITHDRAW_TRIES {
            if self.withdrawal(decision_id).is_some() {
                return;
            }
            let quiet = match logged_execution(self, incident_id, decision_id).await {
                Ok((Logged::NeverStarted, quiet)) => quiet,
                Ok(_) => {
                    info!(%decision_id, %why, "the guard rails hold the decision back, but the log shows it already started; followed to its outcome, not withdrawn");
                    return;
                }
                Err(error) => {
                    warn!(%decision_id, %error, "cannot read the incident's trail to withdraw the decision yet; it is not sent meanwhile");
                    return;
                }
            };
            let payload = records::encode(&records::GovernanceEvent::Withdrawn { decision_id: decision_id.to_owned(), reason: why.to_owned(), at_ms: (self.clock)() });
            match self.audit.append_if_quiet(arf_audit_client::Entry::new(incident_id, RecordKind::Decision, payload), quiet).await {
                Ok(_) => {
                    warn!(%decision_id, %why, "authorized decision withdrawn before it started");
                    arf_proto::metrics::inc("arf_governor_decisions_withdrawn_total", "Authorized decisions withdrawn before they started: the guard rails no longer let them start, or the executor refused them after an attempt that may have reached it.", &[]);
                    self.withdrawn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(decision_id.to_owned(), why.to_owned());
                    return;
                }
                Err(arf_audit_client::AuditError::Spoken(_)) => info!(%decision_id, "the executor wrote to the incident since its trail was read; reading it again before withdrawing"),
                Err(error) => {
                    warn!(%decision_id, %error, "cannot log the decision's withdrawal yet; it is not sent meanwhile");
                    return;
                }
            }
        }
    }

    /// Why this process withdrew the decision, if it did (and the log took it).
    pub(crate) fn withdrawal(&self, decision_id: &str) -> Option<String> {
        self.withdrawn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(decision_id).cloned()
    }

    /// After the guard rails tightened (the kill switch pulled, a service
    /// quarantined, an error budget spent): withdraws every authorized decision not
    /// yet settled that they now hold back. Its follower then settles it unrun,
    /// unless the executor already holds it.
    pub(crate) async fn withdraw_withheld(&self) {
        let now = (self.clock)();
        for entry in self.entries().await {
            let withheld = {
                let decision = entry.lock().await;
                (decision.state == State::Authorized)
                    .then(|| self.withheld_now(&decision, now, true))
                    .flatten()
                    .map(|why| (decision.decision_id.clone(), decision.incident_id.clone(), why))
            };
            if let Some((decision_id, incident_id, why)) = withheld {
                self.withdraw(&decision_id, &incident_id, &why).await;
            }
        }
    }

    /// As each change freeze begins, withdraws the authorized decisions it now holds
    /// back (those waiting for an executor, or at the executor for their target), for
    /// as long as the governor lives. A freeze is configured, not switched, so its
    /// start is watched for.
    pub(crate) fn withdraw_as_freezes_begin(self: &Arc<Self>) {
        if self.freezes.is_empty() {
            return;
        }
        let shared = Arc::downgrade(self);
        let mut before = (self.clock)();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FREEZE_WATCH).await;
                let Some(shared) = shared.upgrade() else { return };
                let now = (shared.clock)();
                if shared.freezes.iter().any(|w| before < w.starts_at_ms && w.starts_at_ms <= now) {
                    info!("a change freeze began; withdrawing what it holds back");
                    shared.withdraw_withheld().await;
                }
                before = now;
            }
        });
    }

    /// Says in a decision that is not settled what the governor knows while it waits.
    pub(crate) async fn note(&self, decision_id: &str, detail: &str) {
        if let Some(entry) = self.entry(decision_id).await {
            let mut decision = entry.lock().await;
            if !decision.state.is_final() {
                detail.clone_into(&mut decision.detail);
            }
        }
    }
}
