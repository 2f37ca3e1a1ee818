//! The executor's core: checks a signed decision, claims its id, and runs its
//! pathway under the target's lock, logging each step to the audit log before it
//! takes effect, then verifies it and rolls it back when it did not work.
//!
//! This is where I/O is orchestrated; the rules it follows live in
//! [`crate::admission`], [`crate::plan`] and [`crate::execution`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

use arf_audit_client::{AuditClient, AuditError, Quiet, RecordKind};
use arf_core::canonical::sha256_hex;
use arf_core::catalog::Catalog;
use arf_core::decision::{self, DecisionBody, EnvelopeError, SignedDecision, TrustedKey};
use arf_core::target::Inventory;
use arf_core::time::now_ms;

use crate::admission::{self, AdmissionError};
use crate::execution::{self, Course, ExecutionState, Outcome, Phase};
use crate::plan::Plan;
use crate::records::{self, StepsPhase};
use crate::runner;
use crate::runner::processes::{self, Leftover, Ledger, Tracker};
use crate::recovery::{self, Settle};
use crate::secrets::{self, SecretSource};
use crate::store::{Claim, Store, StoreError, StoredDecision};
use crate::verify;

/// Why an `Execute` was refused or did not complete.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExecuteError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error("cannot check decision `{decision_id}` against the audit log, so nothing ran: {source}")]
    AuditUnavailable { decision_id: String, source: AuditError },
    #[error("decision `{decision_id}` expired at {expired_at} while it waited for its target, so nothing ran")]
    ExpiredWhileQueued { decision_id: String, expired_at: String },
    #[error("cannot log the start of decision `{decision_id}`, so nothing ran: {source}")]
    WriteAhead { decision_id: String, source: AuditError },
    #[error(
        "the start of decision `{decision_id}` was sent to the audit log, but its answer was lost ({detail}): no step of its action ran, and its execution is kept, as `starting`, until the log shows whether it holds the start"
    )]
    StartUnconfirmed { decision_id: String, detail: String },
    #[error("the precheck of decision `{decision_id}` refused its action, but the refusal cannot be logged; nothing ran, and the decision may be tried again: {source}")]
    RefusalNotLogged { decision_id: String, source: AuditError },
    #[error("the precheck of decision `{decision_id}` got no answer, so nothing ran and the decision may be tried again: {detail}")]
    PrecheckUnanswered { decision_id: String, detail: String },
    #[error(
        "decision `{decision_id}` stopped after {ran} ran: cannot log `{record}`: {source}; its state is kept, so a retry will not run it again"
    )]
    Interrupted { decision_id: String, ran: &'static str, record: &'static str, source: AuditError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("an execution task ended abnormally: {0}")]
    Task(String),
    #[error("the executor is shutting down")]
    ShuttingDown,
    #[error(
        "target `{target}` has an earlier execution (decision `{earlier}`) that was cut off and cannot be settled yet, so decision `{decision_id}` did not run: {reason}"
    )]
    TargetUnsettled { decision_id: String, target: String, earlier: String, reason: String },
    #[error(
        "the audit log knows this executor as `{writer}`{kinds}, but it must be `{expected}` with the execution record kinds: recovery after a crash reads back only `{expected}`'s records, so nothing runs until `audit.writers` names this executor's token `{expected}`"
    )]
    WrongWriter { writer: String, kinds: String, expected: &'static str },
    #[error(
        "decision `{decision_id}` asks for an action this incident already started under decision `{earlier}`, which did not fail: one action runs once, so nothing ran"
    )]
    SameActionStarted { decision_id: String, earlier: String },
    #[error("the governor withdrew decision `{decision_id}` before it started ({reason}), so nothing ran")]
    Withdrawn { decision_id: String, reason: String },
    #[error("the governor already settled decision `{decision_id}` as `{state}`, so nothing runs")]
    Settled { decision_id: String, state: String },
    #[error("the audit log holds an executor record that is not in the executor's format, so what ran is unknown and decision `{decision_id}` did not run: {source}")]
    Malformed { decision_id: String, source: arf_core::records::Malformed },
    #[error("the audit log failed this executor's witness check, so decision `{decision_id}` did not run: {source}")]
    LogNotWitnessed { decision_id: String, source: arf_audit_client::witness::WitnessError },
    #[error(
        "decision `{decision_id}` was issued at {issued_at}, before a rollback on target `{target}` failed at {failed_at} (decision `{failed}`): the target needs a human, and the governor must decide again knowing that, so nothing ran"
    )]
    TargetNeedsHuman { decision_id: String, target: String, failed: String, issued_at: String, failed_at: String },
}

/// An execution as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub state: ExecutionState,
    /// True when this repeats an earlier execution of the same decision.
    pub replayed: bool,
}

/// Why the incident's trail, read under the target's lock after the claim (and
/// again after a precheck), says this decision must not start: one action runs once
/// per incident, so the same action started under another decision that did not
/// fail refuses it; a decision the governor withdrew (the kill switch, say) does
/// not start, nor one it already settled (as expired, say). The governor logs a withdrawal before it asks whether the
/// decision was claimed, so either such a read sees the withdrawal, or the governor
/// sees the claim and follows the execution to its outcome.
fn refused_by_log(trail: &[arf_audit_client::Record], body: &DecisionBody, catalog: &Catalog) -> Option<ExecuteError> {
    let decision_id = body.decision_id.clone();
    let malformed = |source| ExecuteError::Malformed { decision_id: body.decision_id.clone(), source };
    let acting = |parameters: &serde_json::Value| catalog.get(&body.pathway).map_or_else(|| parameters.clone(), |pathway| pathway.acting_of(parameters));
    match recovery::same_action_started(trail, &body.decision_id, &body.pathway, &body.target, &body.parameters, acting) {
        Err(source) => return Some(malformed(source)),
        Ok(Some(earlier)) => {
            warn!(%earlier, "the same action of this incident already started under another decision and did not fail; refusing to run it again");
            return Some(ExecuteError::SameActionStarted { decision_id, earlier });
        }
        Ok(None) => {}
    }
    match recovery::withdrawn(trail, &body.decision_id) {
        Err(source) => return Some(malformed(source)),
        Ok(Some(reason)) => {
            warn!(%reason, "the governor withdrew this decision before it started; nothing runs");
            return Some(ExecuteError::Withdrawn { decision_id, reason });
        }
        Ok(None) => {}
    }
    // Settled already (as never run, above all: expired while a sending was on its
    // way): a start after it would make the governor's record a lie.
    match recovery::settled(trail, &body.decision_id) {
        Err(source) => Some(malformed(source)),
        Ok(Some(state)) => {
            warn!(%state, "the governor already settled this decision; nothing runs");
            Some(ExecuteError::Settled { decision_id, state })
        }
        Ok(None) => None,
    }
}

/// How many times the start is tried when the governor keeps writing to the
/// incident between a read of its trail and the start ([`Executor::write_ahead`]).
const WRITE_AHEAD_TRIES: usize = 5;

/// How many times the trail is read, right after a start whose answer was lost,
/// to find out whether the log holds it ([`Executor::confirm_start`]).
const CONFIRM_READS: u32 = 3;

/// How long after a start whose answer was lost an execution that the log shows
/// not started is kept, when the log signs no checkpoints (so none can show that
/// it took nothing more, [`Executor::start_settled`]): three times the audit
/// client's timeout.
const START_DOUBT: Duration = Duration::from_secs(30);

/// How long a restarted executor waits before it tries again to settle an
/// execution (times the attempt, up to five).
const RECOVERY_RETRY: Duration = Duration::from_secs(1);

/// Why an execution is being settled rather than run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The executor stopped (a crash, a SIGKILL) while it ran.
    Restart,
    /// The audit log stopped answering while it ran.
    AuditOutage,
    /// The log shows it started, but the execution store had no trace of it.
    LostStore,
    /// Another executor replica ran it and stopped renewing its lease.
    Takeover,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::AuditOutage => "audit_outage",
            Self::LostStore => "lost_store",
            Self::Takeover => "takeover",
        }
    }

    fn after(self) -> &'static str {
        match self {
            Self::Restart => "after a restart",
            Self::AuditOutage => "once the audit log answered again",
            Self::LostStore => "from the audit log",
            Self::Takeover => "by another executor replica, after the one running it stopped renewing its lease",
        }
    }
}

/// How a settled execution was cut off: where, and what of it was still running.
#[derive(Clone, Copy)]
struct Recovered<'a> {
    phase: Phase,
    leftovers: &'a [Leftover],
}

/// A target's locks, given back when dropped: this process's, and with shared
/// state the replicas' row in the database (released by a task, since dropping
/// cannot wait; if this process dies first, its lease lapsing frees it).
struct TargetGuard {
    local: Option<tokio::sync::OwnedMutexGuard<()>>,
    shared: Option<(Arc<crate::shared::Shared>, String, i64)>,
}

impl Drop for TargetGuard {
    fn drop(&mut self) {
        if let Some((shared, target, fence)) = self.shared.take() {
            let local = self.local.take();
            // This process's lock is held until the row is gone, so that its next
            // holder here does not find the row still taken.
            tokio::spawn(async move {
                if let Err(error) = shared.unlock_target(&target, fence).await {
                    warn!(%target, %error, "cannot give back the target's lock in the executors' database; it lapses with this executor's lease");
                }
                drop(local);
            });
        }
    }
}

/// What the executor is built from.
pub struct Parts {
    pub catalog: Catalog,
    pub inventory: Inventory,
    pub trusted_keys: Vec<TrustedKey>,
    pub audit: AuditClient,
    pub store: Store,
    pub max_concurrent: usize,
    /// Where the secrets that pathways name are read from.
    pub secrets: SecretSource,
    /// Where the process groups of running steps are recorded (see [`Store::processes`]).
    pub processes: Ledger,
    /// The client for `http` steps and probes (see [`crate::config::Tls::client`]).
    pub http: reqwest::Client,
    /// This executor's witness of the log, when the log's key is configured.
    pub witness: Option<arf_audit_client::witness::Witness>,
}

pub struct Executor {
    catalog: Catalog,
    inventory: Inventory,
    trusted_keys: Vec<TrustedKey>,
    audit: AuditClient,
    store: Store,
    secrets: SecretSource,
    /// One lock per target, so that two actions never touch a target at once.
    target_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bounds how many executions run at once; the rest queue.
    slots: Arc<Semaphore>,
    http: reqwest::Client,
    /// The process groups that running steps started.
    processes: Ledger,
    /// Set once the audit log has confirmed it knows this executor as `executor`.
    writer_checked: tokio::sync::OnceCell<()>,
    witness: Option<arf_audit_client::witness::Witness>,
}

impl Executor {
    pub fn new(parts: Parts) -> Self {
        Self {
            processes: parts.processes,
            writer_checked: tokio::sync::OnceCell::new(),
            catalog: parts.catalog,
            inventory: parts.inventory,
            trusted_keys: parts.trusted_keys,
            audit: parts.audit,
            store: parts.store,
            secrets: parts.secrets,
            target_locks: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(parts.max_concurrent.max(1))),
            http: parts.http,
            witness: parts.witness,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Where the execution of a decision stands, if it was ever claimed.
    pub async fn execution(&self, decision_id: &str) -> Result<Option<ExecutionState>, StoreError> {
        self.store.get(decision_id).await
    }

    /// Whether the execution store stopped after a failed sync: every execution is
    /// refused until a restart.
    pub fn store_stopped(&self) -> bool {
        self.store.stopped()
    }

    /// Executions that never reached an outcome, for the log at start.
    pub async fn unfinished(&self) -> Result<Vec<ExecutionState>, StoreError> {
        self.store.unfinished().await
    }

    /// Checks and runs a signed decision. The work runs in its own task, so that a
    /// caller who gives up (a cancelled RPC) cannot stop an execution halfway.
    pub async fn execute(self: &Arc<Self>, signed: SignedDecision, now_ms: i64) -> Result<Executed, ExecuteError> {
        let this = Arc::clone(self);
        tokio::spawn(tracing::Instrument::in_current_span(async move { this.verify_and_run(signed, now_ms).await }))
            .await
            .map_err(|e| ExecuteError::Task(e.to_string()))?
    }

    async fn verify_and_run(&self, signed: SignedDecision, now_ms: i64) -> Result<Executed, ExecuteError> {
        let body = decision::verify(&signed, &self.trusted_keys, now_ms).inspect_err(|error| {
            warn!(key_id = %signed.key_id, audit_seq = signed.audit_seq, %error, "decision refused");
        })?;
        let span = info_span!(
            "execute",
            decision_id = %body.decision_id,
            incident_id = %body.incident_id,
            pathway = %body.pathway,
            target = %body.target,
        );
        async move {
            self.check_and_run(&signed, &body, now_ms).await.inspect_err(|error| match error {
                ExecuteError::Interrupted { .. } | ExecuteError::Store(_) | ExecuteError::Task(_) => {
                    error!(%error, "execution failed")
                }
                _ => warn!(%error, "decision refused"),
            })
        }
        .instrument(span)
        .await
    }

    async fn check_and_run(
        &self,
        signed: &SignedDecision,
        body: &DecisionBody,
        now_ms: i64,
    ) -> Result<Executed, ExecuteError> {
        // Fail closed: a decision that cannot be found in the log does not run.
        let record = self
            .audit
            .get(signed.audit_seq)
            .await
            .map_err(|source| ExecuteError::AuditUnavailable { decision_id: body.decision_id.clone(), source })?;
        admission::check_record(record.as_ref(), signed.audit_seq, body, &sha256_hex(&signed.body))?;
        self.check_writer().await.map_err(|error| match error {
            ExecuteError::AuditUnavailable { source, .. } => {
                ExecuteError::AuditUnavailable { decision_id: body.decision_id.clone(), source }
            }
            other => other,
        })?;
        self.witness_log(&body.decision_id, signed.audit_seq).await?;
        let admitted = admission::admit(&self.catalog, &self.inventory, &self.secrets, body)?;

        let state = ExecutionState::claimed(body, now_ms);
        let stored = StoredDecision { body: body.clone(), decision_seq: signed.audit_seq };
        if let Claim::Existing(previous) = self.store.claim(&state, &stored).await? {
            info!(
                outcome = previous.outcome.as_str(),
                phase = previous.phase.as_str(),
                "decision already claimed; answering with its execution"
            );
            return Ok(Executed { state: previous, replayed: true });
        }
        self.run(body, signed.audit_seq, &admitted.plan, state).await
    }

    /// As the log's witness: has it sign a checkpoint now, which must cover the
    /// decision's `authorized` record, and refuses to act unless that checkpoint
    /// extends the last one this executor saw. A refusal is logged as an error: the log was rolled back,
    /// truncated or rewritten, and someone must look.
    async fn witness_log(&self, decision_id: &str, decision_seq: u64) -> Result<(), ExecuteError> {
        let Some(witness) = &self.witness else { return Ok(()) };
        match witness.check_fresh(&self.audit, decision_seq).await {
            Ok(seen) => {
                tracing::debug!(size = seen.checkpoint.size, "log checkpoint witnessed");
                Ok(())
            }
            Err(arf_audit_client::witness::WitnessError::Unavailable(source)) => {
                Err(ExecuteError::AuditUnavailable { decision_id: decision_id.to_owned(), source })
            }
            Err(source) => {
                tracing::error!(%decision_id, error = %source, "AUDIT LOG REFUSED BY WITNESS: nothing will run until an operator has checked the log");
                Err(ExecuteError::LogNotWitnessed { decision_id: decision_id.to_owned(), source })
            }
        }
    }

    /// Fails closed unless the audit log knows this executor's token as the writer
    /// `executor`, allowed to append the execution record kinds: recovery and the
    /// lost-store check read back only that writer's records, so under another name
    /// a crash could make an action run twice. Checked once; a refusal is not cached.
    pub async fn check_writer(&self) -> Result<(), ExecuteError> {
        self.writer_checked
            .get_or_try_init(|| async {
                let (writer, kinds) = match self.audit.who_am_i().await {
                    Ok(answer) => answer,
                    // The log answered, and does not take this token: as permanent as a wrong name.
                    Err(AuditError::Refused(why)) => {
                        return Err(ExecuteError::WrongWriter {
                            writer: format!("nobody ({why})"),
                            kinds: String::new(),
                            expected: recovery::EXECUTOR_WRITER,
                        });
                    }
                    Err(source) => return Err(ExecuteError::AuditUnavailable { decision_id: String::new(), source }),
                };
                let needed = [
                    RecordKind::ExecutionStarted,
                    RecordKind::ExecutionFinished,
                    RecordKind::Verification,
                    RecordKind::Rollback,
                    RecordKind::Outcome,
                ];
                let kinds_ok = kinds.is_empty() || needed.iter().all(|k| kinds.iter().any(|have| have == k.as_str()));
                if writer == recovery::EXECUTOR_WRITER && kinds_ok {
                    Ok(())
                } else {
                    let kinds = if kinds.is_empty() { String::new() } else { format!(" (may append {})", kinds.join(", ")) };
                    Err(ExecuteError::WrongWriter { writer, kinds, expected: recovery::EXECUTOR_WRITER })
                }
            })
            .await
            .map(|_| ())
    }

    /// Settles every execution that a previous run of this executor left without an
    /// outcome (see [`crate::recovery`]). The targets' locks are taken before this
    /// returns, so a new decision for such a target waits until it is settled; the
    /// settling itself runs in one task per target, whose handles are returned.
    ///
    /// First, whatever the stopped executor's steps left running is killed (see
    /// [`processes`]): an action still running unsupervised could change a target
    /// after it was verified again. This does not wait for the audit log, since it
    /// only stops things; what was killed goes into the execution's recovered records.
    pub async fn recover(self: &Arc<Self>) -> Result<Vec<tokio::task::JoinHandle<()>>, StoreError> {
        let mut leftovers: HashMap<String, Vec<Leftover>> = HashMap::new();
        for leftover in processes::sweep(&self.processes).await {
            warn!(
                decision_id = %leftover.owner,
                program = %leftover.program,
                pgid = ?leftover.pgid,
                killed = ?leftover.killed,
                "{}", leftover.detail
            );
            leftovers.entry(leftover.owner.clone()).or_default().push(leftover);
        }
        let mut by_target: HashMap<String, Vec<ExecutionState>> = HashMap::new();
        for state in self.store.unfinished().await? {
            by_target.entry(state.target.clone()).or_default().push(state);
        }
        let mut tasks = Vec::new();
        for (target, states) in by_target {
            // Nothing else runs yet here, so this process's lock is free; another
            // replica may hold the target for a while (it is waited for below).
            let Ok(local) = self.target_lock(&target).try_lock_owned() else {
                error!(%target, "target is locked at start; its unfinished executions are left for the next start");
                continue;
            };
            let this = Arc::clone(self);
            let mut leftovers: Vec<(ExecutionState, Vec<Leftover>)> =
                states.into_iter().map(|s| { let l = leftovers.remove(&s.decision_id).unwrap_or_default(); (s, l) }).collect();
            tasks.push(tokio::spawn(async move {
                let shared = loop {
                    match this.lock_shared(&target).await {
                        Ok(shared) => break shared,
                        Err(error) => {
                            warn!(%target, %error, "cannot take the target's lock in the executors' database to settle its executions yet; retrying");
                            tokio::time::sleep(RECOVERY_RETRY).await;
                        }
                    }
                };
                let _guard = TargetGuard { local: Some(local), shared };
                for (state, leftovers) in leftovers.drain(..) {
                    let span = info_span!(
                        "recover",
                        decision_id = %state.decision_id,
                        incident_id = %state.incident_id,
                        pathway = %state.pathway,
                        target = %state.target,
                    );
                    // The target stays locked until its execution is settled: a new
                    // decision must not act on a target in an unknown state. An audit
                    // outage only delays this; it is retried until it succeeds.
                    let mut attempt: u32 = 0;
                    loop {
                        // Recovery counts against the bound on concurrent actions too.
                        let Ok(slot) = Arc::clone(&this.slots).acquire_owned().await else { return };
                        let settled = this.settle(state.clone(), &leftovers, Cause::Restart).instrument(span.clone()).await;
                        drop(slot);
                        let Err(error) = settled else { break };
                        attempt += 1;
                        span.in_scope(|| warn!(%error, attempt, "cannot settle an execution cut off by a restart yet; its target stays locked; retrying"));
                        tokio::time::sleep(RECOVERY_RETRY.saturating_mul(attempt.min(5))).await;
                    }
                }
            }));
        }
        Ok(tasks)
    }

    /// Settles, while the executor runs, the executions an audit outage cut off
    /// (phase `interrupted`): once the log answers again, each is verified or rolled
    /// back and gets its one outcome, exactly as after a restart. Without this an
    /// outage in the middle of an action would leave it unaccounted until the next start.
    /// As the log's witness (when it is one), checks the log every `every` between
    /// actions too ([`arf_audit_client::witness::Witness::keep_up`]), so that what
    /// an action logged after its start (its outcome above all) is soon under a
    /// checkpoint this executor holds. A refusal is logged as an error, once until
    /// the log is accepted again; the next action is refused on it anyway.
    pub fn spawn_witness(self: &Arc<Self>, every: std::time::Duration) -> Option<tokio::task::JoinHandle<()>> {
        self.witness.as_ref()?;
        let this = Arc::clone(self);
        Some(tokio::spawn(async move {
            let Some(witness) = &this.witness else { return };
            let refusing = std::sync::atomic::AtomicBool::new(false);
            witness
                .keep_up(&this.audit, every, |checked| match checked {
                    Ok(seen) => {
                        refusing.store(false, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(size = seen.checkpoint.size, "log checkpoint witnessed between actions");
                    }
                    Err(error) => {
                        if !refusing.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            error!(%error, "AUDIT LOG REFUSED BY WITNESS: nothing will run until an operator has checked the log");
                        }
                    }
                })
                .await;
        }))
    }

    pub fn spawn_settler(self: &Arc<Self>, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let interrupted = match this.store.unfinished().await {
                    Ok(states) => states.into_iter().filter(|s| matches!(s.phase, Phase::Interrupted | Phase::Starting)).collect::<Vec<_>>(),
                    Err(error) => {
                        warn!(%error, "cannot read the execution store to settle interrupted executions");
                        continue;
                    }
                };
                for state in interrupted {
                    // A locked target is being worked on (a restart's recovery, or a
                    // new decision, which settles it first): skip it this round, so
                    // that one stuck target does not hold up the others.
                    let Ok(Some(_guard)) = this.try_lock_target(&state.target).await else { continue };
                    // Re-read under the lock: whoever held it may have settled it.
                    let state = match this.store.get(&state.decision_id).await {
                        Ok(Some(current)) if matches!(current.phase, Phase::Interrupted | Phase::Starting) => current,
                        Ok(_) => continue,
                        Err(error) => {
                            warn!(%error, "cannot read the execution store to settle an interrupted execution");
                            continue;
                        }
                    };
                    let Ok(_slot) = Arc::clone(&this.slots).acquire_owned().await else { return };
                    let span = info_span!(
                        "settle",
                        decision_id = %state.decision_id,
                        incident_id = %state.incident_id,
                        pathway = %state.pathway,
                        target = %state.target,
                    );
                    if let Err(error) = this.settle(state, &[], Cause::AuditOutage).instrument(span.clone()).await {
                        span.in_scope(|| warn!(%error, "cannot settle an interrupted execution yet; retrying"));
                    }
                }
            }
        })
    }

    /// Settles, before `body` acts, any earlier execution on its target that was cut
    /// off (an audit outage stopped it midway) and is not settled yet. The caller
    /// holds the target's lock, so such an execution is not running: acting on top
    /// of it would act on a target in an unknown state, and let its later rollback
    /// undo this decision's work. Executions merely claimed are queued behind the
    /// lock, not cut off, and are left alone, except another replica's whose lease
    /// lapsed: its start may be logged ([`crate::shared::Shared::unfinished_on`]),
    /// so it is settled by whoever takes it over first. If one cannot be settled
    /// yet, this decision gives its claim back and does not run. True when it
    /// settled one (and so may have written to the log).
    async fn settle_backlog(&self, body: &DecisionBody) -> Result<bool, ExecuteError> {
        let refuse = |earlier: String, reason: String| ExecuteError::TargetUnsettled {
            decision_id: body.decision_id.clone(),
            target: body.target.clone(),
            earlier,
            reason,
        };
        let backlog: Vec<(ExecutionState, bool)> = match self.store.unfinished_on(&body.target).await {
            Ok(states) => states.into_iter().filter(|(s, own)| s.decision_id != body.decision_id && (s.phase != Phase::Claimed || !own)).collect(),
            Err(error) => {
                self.store.release(&body.decision_id).await?;
                return Err(error.into());
            }
        };
        // Another replica's execution cut off on this target is that replica's to
        // settle (or, once its lease lapses, whoever takes it over): not this decision's.
        if let Some((earlier, _)) = backlog.iter().find(|(_, own)| !own) {
            self.store.release(&body.decision_id).await?;
            return Err(refuse(
                earlier.decision_id.clone(),
                format!("another executor replica's execution on it is {} and not settled yet", earlier.phase.as_str()),
            ));
        }
        let settled_any = !backlog.is_empty();
        for (earlier, _) in backlog {
            let earlier_id = earlier.decision_id.clone();
            warn!(earlier = %earlier_id, "settling an earlier execution on this target that was cut off, before acting");
            let settled = self.settle(earlier, &[], Cause::AuditOutage).await;
            let failure = match settled {
                Err(error) => Some(error.to_string()),
                // Settled, but into a failed rollback: the target needs a human, not
                // another action (the governor had no chance to quarantine it yet).
                Ok(()) => match self.store.get(&earlier_id).await {
                    Ok(Some(state)) if state.outcome == Outcome::RollbackFailed => {
                        Some(format!("it ended `rollback_failed`, so the target needs a human: {}", state.detail))
                    }
                    Ok(_) => None,
                    Err(error) => Some(error.to_string()),
                },
            };
            if let Some(reason) = failure {
                self.store.release(&body.decision_id).await?;
                return Err(refuse(earlier_id, reason));
            }
        }
        Ok(settled_any)
    }

    async fn settle(&self, mut state: ExecutionState, leftovers: &[Leftover], cause: Cause) -> Result<(), ExecuteError> {
        let interrupted_in = state.phase;
        let Some(stored) = self.store.decision(&state.decision_id).await? else {
            if interrupted_in == Phase::Claimed {
                self.store.release(&state.decision_id).await?;
                info!("execution was only claimed when the executor stopped; claim released");
            } else {
                // Without the decision there is no plan to verify or roll back with,
                // nor an incident to log to: say so once, and stop trying.
                error!(phase = interrupted_in.as_str(), "ROLLBACK FAILED: execution was cut off but its decision was not kept; the target needs a human");
                state.outcome = Outcome::RollbackFailed;
                state.phase = Phase::Finished;
                state.detail = format!(
                    "cut off while {} and its decision was not kept, so it cannot be verified or rolled back: target `{}` needs a human",
                    interrupted_in.as_str(),
                    state.target
                );
                state.updated_at_ms = now_ms();
                self.store.save(&state).await?;
            }
            return Ok(());
        };
        let body = stored.body;
        let trail = self
            .audit
            .read_incident(&body.incident_id)
            .await
            .map_err(|source| ExecuteError::AuditUnavailable { decision_id: body.decision_id.clone(), source })?;
        let logged = recovery::logged(&trail, &body.decision_id)
            .map_err(|source| ExecuteError::Malformed { decision_id: body.decision_id.clone(), source })?;
        let mut course = recovery::settle(&logged, interrupted_in);
        if course == Settle::Unconfirmed {
            course = self.start_settled(&body, &state).await?;
        }
        warn!(phase = interrupted_in.as_str(), course = ?course, cause = cause.as_str(), "settling an unfinished execution");
        match course {
            Settle::Logged(outcome) => {
                state.outcome = outcome;
                state.phase = Phase::Finished;
                state.detail = format!("settled {}: the log already holds the `{}` outcome", cause.after(), outcome.as_str());
                state.updated_at_ms = now_ms();
                self.store.save(&state).await?;
            }
            Settle::Unconfirmed | Settle::Release => {
                self.store.release(&body.decision_id).await?;
                info!("nothing was logged as started, so nothing ran; claim released");
            }
            // No step ran: nothing to verify or roll back, and no plan needed.
            Settle::StartedUnrun => {
                let detail = format!(
                    "the log holds its start, but the executor never ran it: {}; settled {}: nothing changed, so there is nothing to roll back",
                    state.detail,
                    cause.after()
                );
                self.finish(&body, &Plan::empty(), state, Outcome::NotRun, detail, Some(Recovered { phase: interrupted_in, leftovers })).await?;
            }
            Settle::Reverify | Settle::RollBackAgain => {
                let plan = match admission::admit(&self.catalog, &self.inventory, &self.secrets, &body) {
                    Ok(admitted) => admitted.plan,
                    Err(error) => {
                        // Without its plan there is nothing to verify or roll back with.
                        let plan = Plan::empty();
                        let detail = format!(
                            "cut off while {}; cannot settle after the restart: {error}; the target is in an unknown state",
                            interrupted_in.as_str()
                        );
                        let recovered = Recovered { phase: interrupted_in, leftovers };
                        self.finish(&body, &plan, state, Outcome::RollbackFailed, detail, Some(recovered)).await?;
                        return Ok(());
                    }
                };
                let mut prefix = match cause {
                    Cause::LostStore => format!("already started by an executor whose store no longer holds it; settled {} instead of running it again", cause.after()),
                    _ => format!("cut off while {} and settled {}", interrupted_in.as_str(), cause.after()),
                };
                if !leftovers.is_empty() {
                    let what: Vec<&str> = leftovers.iter().map(|l| l.detail.as_str()).collect();
                    prefix.push_str(&format!(" (first, what it left running was stopped: {})", what.join("; ")));
                }
                let (outcome, detail) = if course == Settle::RollBackAgain {
                    self.roll_back(&body, &plan, &mut state, format!("{prefix}: the rollback was under way")).await?
                } else {
                    self.advance(&mut state, Phase::Verifying, "verifying again after a restart").await?;
                    let report = verify::run(&plan.verify, &self.http).await;
                    state.verification = report.last_results();
                    let record = records::recovered_verification(&body, &report, leftovers.iter().map(arf_core::records::encode).collect());
                    self.log(&mut state, &body, &plan, RecordKind::Verification, record, "a verification after a restart")
                        .await?;
                    match execution::after_action(true, Some(report.passed), plan.irreversible, false) {
                        Course::Verified => (Outcome::Verified, format!("{prefix}: verification passed: {}", report.detail)),
                        Course::Failed => (
                            Outcome::Failed,
                            format!("{prefix}: verification failed: {}; the pathway is irreversible", report.detail),
                        ),
                        Course::RollBack => {
                            let why = format!("{prefix}: verification failed: {}", report.detail);
                            self.roll_back(&body, &plan, &mut state, why).await?
                        }
                    }
                };
                self.finish(&body, &plan, state, outcome, detail, Some(Recovered { phase: interrupted_in, leftovers }))
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether the log holds a start whose answer was lost, asked once the log can
    /// no longer take it. A checkpoint the log signs now is ordered after every
    /// append it took before: the file log first publishes all it has written,
    /// and fails rather than sign when a sync failed; on PostgreSQL it takes the
    /// head row's lock, which an append in flight holds until it commits. A trail
    /// read after it is final. A log without a checkpoint key signs nothing, and
    /// then only time tells ([`START_DOUBT`]).
    async fn start_settled(&self, body: &DecisionBody, state: &ExecutionState) -> Result<Settle, ExecuteError> {
        let unavailable = |source| ExecuteError::AuditUnavailable { decision_id: body.decision_id.clone(), source };
        let signed = self.audit.sign_checkpoint().await.map_err(unavailable)?;
        let doubted_ms = now_ms().saturating_sub(state.updated_at_ms);
        if signed.is_none() && doubted_ms < i64::try_from(START_DOUBT.as_millis()).unwrap_or(i64::MAX) {
            return Err(ExecuteError::StartUnconfirmed {
                decision_id: body.decision_id.clone(),
                detail: format!("the log, which signs no checkpoints, does not hold it {} s later and may still take it for up to {} s", doubted_ms / 1000, START_DOUBT.as_secs()),
            });
        }
        let trail = self.audit.read_incident(&body.incident_id).await.map_err(unavailable)?;
        let logged = recovery::logged(&trail, &body.decision_id).map_err(|source| ExecuteError::Malformed { decision_id: body.decision_id.clone(), source })?;
        Ok(match recovery::settle(&logged, Phase::Starting) {
            Settle::Unconfirmed => Settle::Release,
            settled => settled,
        })
    }

    fn tracker(&self, body: &DecisionBody) -> Tracker {
        Tracker::new(&self.processes, &body.decision_id)
    }

    fn target_lock(&self, target: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.target_locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(target.to_owned()).or_default())
    }

    /// Waits for `target`: this process's lock, then (with shared state) the
    /// replicas' lock in the database.
    async fn lock_target(&self, target: &str) -> Result<TargetGuard, StoreError> {
        let local = self.target_lock(target).lock_owned().await;
        let shared = self.lock_shared(target).await?;
        Ok(TargetGuard { local: Some(local), shared })
    }

    /// `target`'s locks if both are free now.
    async fn try_lock_target(&self, target: &str) -> Result<Option<TargetGuard>, StoreError> {
        let Ok(local) = self.target_lock(target).try_lock_owned() else { return Ok(None) };
        let shared = match self.store.shared() {
            Some(shared) => match shared.try_lock_target(target).await? {
                Some(fence) => Some((Arc::clone(shared), target.to_owned(), fence)),
                None => return Ok(None),
            },
            None => None,
        };
        Ok(Some(TargetGuard { local: Some(local), shared }))
    }

    /// With shared state, waits for the replicas' lock on `target`, for a caller
    /// that holds this process's lock; without it, there is nothing to wait for.
    async fn lock_shared(&self, target: &str) -> Result<Option<(Arc<crate::shared::Shared>, String, i64)>, StoreError> {
        Ok(match self.store.shared() {
            Some(shared) => Some((Arc::clone(shared), target.to_owned(), shared.lock_target(target).await?)),
            None => None,
        })
    }

    /// With shared state: every lease period, takes over the unfinished executions
    /// of replicas whose lease lapsed, each under its target's locks, and settles
    /// them as a restarted executor settles its own; one that cannot be settled
    /// yet (the log is down) is tried again the next period.
    pub fn spawn_takeover(self: &Arc<Self>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let shared = Arc::clone(self.store.shared()?);
        let this = Arc::clone(self);
        Some(tokio::spawn(async move {
            // Each with its target's locks once taken: a taken-over execution may have
            // started, so nothing else acts on its target until it is settled.
            let mut unsettled: Vec<(ExecutionState, Option<TargetGuard>)> = Vec::new();
            loop {
                tokio::time::sleep(every).await;
                // A lock row of this replica's whose target nothing here works on (its
                // release was lost, or a lock's answer was) would keep the others out
                // for as long as this replica lives: give it back.
                for (target, fence) in shared.own_target_locks() {
                    let Ok(_local) = this.target_lock(&target).try_lock_owned() else { continue };
                    if let Err(error) = shared.unlock_target(&target, fence).await {
                        warn!(%target, %error, "cannot give back a target's lock left behind");
                    }
                }
                let orphans = match shared.orphans().await {
                    Ok(orphans) => orphans,
                    Err(error) => {
                        warn!(%error, "cannot look for executions whose executor's lease lapsed");
                        Vec::new()
                    }
                };
                for orphan in orphans {
                    let Ok(Some(guard)) = this.try_lock_target(&orphan.target).await else { continue };
                    match shared.take_over(&orphan).await {
                        Ok(Some(state)) => {
                            warn!(decision_id = %orphan.decision_id, from = %orphan.owner, target = %orphan.target, phase = state.phase.as_str(), "took over an execution whose executor's lease lapsed; settling it");
                            unsettled.push((state, Some(guard)));
                        }
                        Ok(None) => {}
                        Err(error) => warn!(decision_id = %orphan.decision_id, %error, "cannot take over an execution whose executor's lease lapsed"),
                    }
                }
                let mut still = Vec::new();
                for (state, held) in unsettled.drain(..) {
                    let guard = match held {
                        Some(guard) => guard,
                        None => match this.try_lock_target(&state.target).await {
                            Ok(Some(guard)) => guard,
                            _ => {
                                still.push((state, None));
                                continue;
                            }
                        },
                    };
                    let state = match this.store.get(&state.decision_id).await {
                        Ok(Some(current)) if current.phase != Phase::Finished => current,
                        Ok(_) => continue,
                        Err(_) => {
                            still.push((state, Some(guard)));
                            continue;
                        }
                    };
                    let Ok(_slot) = Arc::clone(&this.slots).acquire_owned().await else { return };
                    let span = info_span!("take_over", decision_id = %state.decision_id, incident_id = %state.incident_id, pathway = %state.pathway, target = %state.target);
                    if let Err(error) = this.settle(state.clone(), &[], Cause::Takeover).instrument(span.clone()).await {
                        span.in_scope(|| warn!(%error, "cannot settle a taken-over execution yet; retrying"));
                        still.push((state, Some(guard)));
                    }
                }
                unsettled = still;
            }
        }))
    }

    /// Reads the incident's trail (after the claim) and refuses, giving the claim
    /// back, what it says must not start now ([`refused_by_log`]). Otherwise says
    /// how far it read: the start is logged only if the governor has appended
    /// nothing to the incident since ([`Executor::write_ahead`]).
    async fn check_log(&self, body: &DecisionBody) -> Result<Quiet, ExecuteError> {
        match self.audit.read_incident(&body.incident_id).await {
            Ok(trail) => self.judge(body, &trail).await,
            Err(source) => {
                self.store.release(&body.decision_id).await?;
                Err(ExecuteError::AuditUnavailable { decision_id: body.decision_id.clone(), source })
            }
        }
    }

    /// Refuses, giving the claim back, what `trail` says must not start now
    /// ([`refused_by_log`]); otherwise how far it reaches, for the start's condition.
    async fn judge(&self, body: &DecisionBody, trail: &[arf_audit_client::Record]) -> Result<Quiet, ExecuteError> {
        match refused_by_log(trail, body, &self.catalog) {
            None => Ok(Quiet::since(&body.incident_id, crate::admission::GOVERNOR_WRITER, trail)),
            Some(refusal) => {
                self.store.release(&body.decision_id).await?;
                Err(refusal)
            }
        }
    }

    /// Logs the start, write-ahead, only if the governor has appended nothing to
    /// the incident since the trail was read (`quiet`), judged in the log's own
    /// order. A withdrawal the governor logged in between is then read before the
    /// start, and refuses it; the log never shows a start after a withdrawal, nor
    /// after a settling as never run. Something else the governor logged there (a
    /// decision of its own) means reading again, a few times at most.
    ///
    /// An answer lost on the way (a timeout, a connection cut) does not say
    /// whether the log took the start: [`Executor::confirm_start`] asks the log.
    async fn write_ahead(&self, body: &DecisionBody, plan: &Plan, state: &mut ExecutionState, started: Value, mut quiet: Quiet) -> Result<(), ExecuteError> {
        for _ in 0..WRITE_AHEAD_TRIES {
            match self.append_on(body, plan, RecordKind::ExecutionStarted, started.clone(), Some(quiet.clone())).await {
                Ok(()) => return Ok(()),
                Err(AuditError::Spoken(why)) => {
                    info!(%why, "the governor wrote to the incident since its trail was read; reading it again before starting");
                    self.release_if_expired(body).await?;
                    quiet = self.check_log(body).await?;
                }
                Err(source @ (AuditError::Unavailable(_) | AuditError::Malformed(_))) => return self.confirm_start(body, state, source).await,
                Err(source) => {
                    self.store.release(&body.decision_id).await?;
                    return Err(ExecuteError::WriteAhead { decision_id: body.decision_id.clone(), source });
                }
            }
        }
        self.store.release(&body.decision_id).await?;
        let source = AuditError::Spoken(format!("the governor kept writing to the incident; {WRITE_AHEAD_TRIES} reads of its trail were each out of date by the time of the start"));
        Err(ExecuteError::WriteAhead { decision_id: body.decision_id.clone(), source })
    }

    /// After a start whose answer was lost: reads the trail a few times. The start
    /// found there means the write-ahead held, and the action runs as it would
    /// have. Otherwise the log may still take it (an append it had not synced
    /// yet), so the claim is not given back: it stays [`Phase::Starting`], and the
    /// settler settles it by the log ([`Executor::start_settled`]). Giving it back
    /// would let a late start stand in the log with no executor to settle it,
    /// which the governor must take for an action run and lost.
    async fn confirm_start(&self, body: &DecisionBody, state: &mut ExecutionState, source: AuditError) -> Result<(), ExecuteError> {
        warn!(error = %source, "the start was sent to the audit log, but its answer was lost; reading the trail to find out whether the log holds it");
        for read in 0..CONFIRM_READS {
            tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(read)).await;
            match self.audit.read_incident(&body.incident_id).await.map_err(|e| e.to_string()).and_then(|trail| recovery::logged(&trail, &body.decision_id).map_err(|e| e.to_string())) {
                Ok(logged) if logged.started => {
                    info!("the log holds the start; running the action");
                    return Ok(());
                }
                Ok(_) => {}
                Err(error) => warn!(%error, "cannot read the trail to confirm the start"),
            }
        }
        let detail = source.to_string();
        error!(%detail, "the log does not show the start yet, and may still take it: the execution is kept as starting, and nothing runs until the log settles it");
        state.phase = Phase::Starting;
        state.detail = format!("its start was sent to the audit log, but the answer was lost ({detail}); no step of the action ran");
        state.updated_at_ms = now_ms();
        self.store.save(state).await?;
        Err(ExecuteError::StartUnconfirmed { decision_id: body.decision_id.clone(), detail })
    }

    /// Runs a claimed decision under its target's lock and a slot, unless the log
    /// shows it already started or ended.
    async fn run(&self, body: &DecisionBody, decision_seq: u64, plan: &Plan, state: ExecutionState) -> Result<Executed, ExecuteError> {
        // The target first, then a slot: a queued execution holds no slot while it
        // waits for its target.
        let _target = match self.lock_target(&body.target).await {
            Ok(guard) => guard,
            Err(error) => {
                self.store.release(&body.decision_id).await?;
                return Err(error.into());
            }
        };
        let _slot = Arc::clone(&self.slots).acquire_owned().await.map_err(|_| ExecuteError::ShuttingDown)?;
        // The store is this executor's memory; the log is everyone's. If the log
        // shows this decision started, an executor whose store is gone (a new
        // disk, a restored backup) ran it: it is settled, never run again. The same
        // read, when it shows nothing of the kind, is what the start is judged
        // against ([`Executor::act`]).
        let trail = match self.audit.read_incident(&body.incident_id).await {
            Ok(trail) => trail,
            Err(source) => {
                self.store.release(&body.decision_id).await?;
                return Err(ExecuteError::AuditUnavailable { decision_id: body.decision_id.clone(), source });
            }
        };
        let logged = match recovery::logged(&trail, &body.decision_id) {
            Ok(logged) => logged,
            Err(source) => {
                self.store.release(&body.decision_id).await?;
                return Err(ExecuteError::Malformed { decision_id: body.decision_id.clone(), source });
            }
        };
        // Started, or refused by its precheck (an outcome with no start), by an
        // executor that lost the answer or its store: settled from the log.
        if logged.started || logged.progressed || logged.rollback || logged.outcome.is_some() {
            warn!("the log shows this decision already started or ended, but the execution store has no trace of it; settling it instead of running it again");
            let mut unknown = state;
            unknown.phase = Phase::Interrupted;
            self.store.save(&unknown).await?;
            self.settle(unknown.clone(), &[], Cause::LostStore).await?;
            let settled = self.store.get(&body.decision_id).await?.unwrap_or(unknown);
            return Ok(Executed { state: settled, replayed: true });
        }
        let state = self.act(body, decision_seq, plan, state, &trail).await?;
        Ok(Executed { state, replayed: false })
    }

    /// Runs a claimed decision whose trail (`trail`, read under the target's lock)
    /// shows it neither started nor ended. The caller holds the target's lock and a slot.
    async fn act(
        &self,
        body: &DecisionBody,
        decision_seq: u64,
        plan: &Plan,
        mut state: ExecutionState,
        trail: &[arf_audit_client::Record],
    ) -> Result<ExecutionState, ExecuteError> {
        // Expiry bounds when a decision may start, so a decision that waited too
        // long behind others gives its claim back without running.
        self.release_if_expired(body).await?;
        let settled_backlog = self.settle_backlog(body).await?;
        // A rollback on this target that failed after this decision was issued: the
        // governor decided without knowing that the target needs a human (it would
        // have quarantined the service). Later decisions were made knowing it.
        let failed = match self.store.latest_failed_rollback(&body.target).await {
            Ok(failed) => failed.filter(|f| f.updated_at_ms >= body.issued_at_ms),
            Err(error) => {
                self.store.release(&body.decision_id).await?;
                return Err(error.into());
            }
        };
        if let Some(failed) = failed {
            self.store.release(&body.decision_id).await?;
            return Err(ExecuteError::TargetNeedsHuman {
                decision_id: body.decision_id.clone(),
                target: body.target.clone(),
                failed: failed.decision_id,
                issued_at: arf_core::time::format_ms(body.issued_at_ms),
                failed_at: arf_core::time::format_ms(failed.updated_at_ms),
            });
        }
        // Settling can take a verification window and a rollback: check expiry again.
        self.release_if_expired(body).await?;

        // One action runs once per incident, whatever decision asks for it: checked
        // under the target's lock, so two decisions for it cannot both pass. Judged
        // on the trail read under the lock, or read again if settling an earlier
        // execution on the target wrote to the log since.
        let quiet = if settled_backlog { self.check_log(body).await? } else { self.judge(body, trail).await? };

        // Look before acting: the pathway's precheck (a dry run, a read of the
        // target's state) must pass, or the action never starts. Its steps change
        // nothing, so a crash here leaves a mere claim, released on restart, and the
        // precheck is logged with the start, or with the refusal.
        let tracker = self.tracker(body);
        let precheck = if plan.precheck.is_empty() {
            None
        } else {
            info!(steps = plan.precheck.len(), "running the precheck");
            let deadline = Instant::now() + Duration::from_secs(plan.timeout_secs);
            let mut report = runner::run_steps(&plan.precheck, deadline, &self.http, Some(&tracker)).await;
            report.redact(&plan.secret_values);
            if !report.ok && report.answered_no() {
                return self.refuse(body, plan, state, &report).await;
            }
            if !report.ok {
                // Not an answer (the target unreachable, a timeout, a server error):
                // nothing ran, and a retry asks again.
                self.store.release(&body.decision_id).await?;
                let detail = secrets::redact_text(&report.summary(), &plan.secret_values);
                warn!(%detail, "the precheck got no answer; nothing ran");
                return Err(ExecuteError::PrecheckUnanswered { decision_id: body.decision_id.clone(), detail });
            }
            // The precheck may take its time: expiry bounds when the action may start.
            // A withdrawal or a settling the governor logged meanwhile is read before
            // the start: the start is logged only if the governor wrote nothing to the
            // incident since `quiet`'s read, else the trail is read again
            // ([`Executor::write_ahead`]).
            self.release_if_expired(body).await?;
            Some(report)
        };

        // A replica whose lease may have lapsed starts nothing: another may be
        // taking its executions and targets over.
        if let Some(Err(error)) = self.store.shared().map(|s| s.check_live()) {
            self.store.release(&body.decision_id).await?;
            return Err(error.into());
        }
        // Write-ahead: nothing runs unless the intent is logged. If it cannot be,
        // nothing ran, so the claim is given back and a retry may run the decision.
        let started = records::execution_started(body, decision_seq, plan, precheck.as_ref());
        if let Some(pause) = arf_core::crash::pause("executor.before_write_ahead") {
            tokio::time::sleep(pause).await;
        }
        // From here the log may hold the start, whatever its answer says: a crash
        // or a takeover before the answer settles the execution by the log, as a
        // start whose answer was lost, never as a mere claim given back.
        self.advance(&mut state, Phase::Starting, "logging the start").await?;
        arf_core::crash::point("executor.starting_saved");
        self.write_ahead(body, plan, &mut state, started, quiet).await?;
        arf_core::crash::point("executor.start_logged");
        // With replicas, this save must land: a replica that stalled since it
        // claimed may have been taken over, and its claim settled, meanwhile.
        self.advance(&mut state, Phase::Acting, "running the action").await?;
        info!(steps = plan.action.len(), "running the action");
        let deadline = Instant::now() + Duration::from_secs(plan.timeout_secs);
        // With replicas, each step after the first runs only on the database's word
        // that the execution and this replica's lease are still its own.
        let mut action = match self.store.shared() {
            Some(shared) => runner::run_steps_confirmed(&plan.action, deadline, &self.http, Some(&tracker), || async {
                match shared.confirm(&body.decision_id).await {
                    Err(error @ (crate::store::StoreError::Fenced { .. } | crate::store::StoreError::LeaseLost(_))) => {
                        error!(%error, "this execution is no longer this replica's; stopping its action");
                        Err(ExecuteError::from(error))
                    }
                    // The database did not answer: the lease's renewal, which needs it
                    // too, stops this replica if the lease lapses meanwhile.
                    Err(error) => {
                        warn!(%error, "cannot confirm this execution is still this replica's; going on under its lease");
                        Ok(())
                    }
                    Ok(()) => Ok(()),
                }
            })
            .await?,
            None => runner::run_steps(&plan.action, deadline, &self.http, Some(&tracker)).await,
        };
        action.redact(&plan.secret_values);
        let finished = records::execution_finished(body, StepsPhase::Action, &action);
        self.log(&mut state, body, plan, RecordKind::ExecutionFinished, finished, "the action").await?;

        let verification = if action.ok {
            self.advance(&mut state, Phase::Verifying, "verifying the action").await?;
            let report = verify::run(&plan.verify, &self.http).await;
            state.verification = report.last_results();
            let record = records::verification(body, StepsPhase::Action, &report);
            self.log(&mut state, body, plan, RecordKind::Verification, record, "the action and its verification")
                .await?;
            Some(report)
        } else {
            None
        };

        let why = match &verification {
            Some(report) if report.passed => {
                format!("action succeeded ({}); verification passed: {}", action.summary(), report.detail)
            }
            Some(report) => {
                format!("action succeeded ({}) but verification failed: {}", action.summary(), report.detail)
            }
            None => format!("action failed: {}", action.summary()),
        };
        let changed_nothing = action.changed_nothing();
        let course =
            execution::after_action(action.ok, verification.as_ref().map(|r| r.passed), plan.irreversible, changed_nothing);
        let (outcome, detail) = match course {
                Course::Verified => (Outcome::Verified, why),
                Course::Failed if changed_nothing => {
                    (Outcome::Failed, format!("{why}; it failed before changing anything, so there is nothing to roll back"))
                }
                Course::Failed => {
                    (Outcome::Failed, format!("{why}; the pathway is irreversible, so there is nothing to roll back"))
                }
                Course::RollBack => self.roll_back(body, plan, &mut state, why).await?,
            };
        self.finish(body, plan, state, outcome, detail, None).await
    }

    /// Expiry bounds when a decision may start: one that expired while it waited
    /// (for its target, a settling, its precheck) gives its claim back unrun.
    async fn release_if_expired(&self, body: &DecisionBody) -> Result<(), ExecuteError> {
        if now_ms() < body.expires_at_ms {
            return Ok(());
        }
        self.store.release(&body.decision_id).await?;
        Err(ExecuteError::ExpiredWhileQueued { decision_id: body.decision_id.clone(), expired_at: arf_core::time::format_ms(body.expires_at_ms) })
    }

    /// Ends an execution whose precheck failed: nothing started, so nothing is
    /// rolled back; the `refused` outcome, with what the precheck answered, tells
    /// the governor and the agent. If the refusal cannot be logged, the claim is
    /// given back, as when the start cannot be.
    async fn refuse(&self, body: &DecisionBody, plan: &Plan, mut state: ExecutionState, precheck: &runner::StepsReport) -> Result<ExecutionState, ExecuteError> {
        let detail = secrets::redact_text(&format!("the precheck refused the action, so nothing ran: {}", precheck.summary()), &plan.secret_values);
        if let Err(source) = self.append(body, plan, RecordKind::Outcome, records::refused(body, &detail, plan, precheck)).await {
            self.store.release(&body.decision_id).await?;
            return Err(ExecuteError::RefusalNotLogged { decision_id: body.decision_id.clone(), source });
        }
        arf_proto::metrics::inc("arf_executor_outcomes_total", "Executions settled, by outcome.", &[("outcome", Outcome::Refused.as_str()), ("pathway", &body.pathway)]);
        warn!(outcome = Outcome::Refused.as_str(), %detail, "the precheck refused the action");
        state.outcome = Outcome::Refused;
        state.phase = Phase::Finished;
        state.detail = detail;
        state.updated_at_ms = now_ms();
        self.store.save(&state).await?;
        Ok(state)
    }

    async fn roll_back(
        &self,
        body: &DecisionBody,
        plan: &Plan,
        state: &mut ExecutionState,
        why: String,
    ) -> Result<(Outcome, String), ExecuteError> {
        warn!(reason = %why, "rolling back");
        self.log(state, body, plan, RecordKind::Rollback, records::rollback(body, &why, plan), "the action").await?;
        self.advance(state, Phase::RollingBack, "rolling back").await?;
        let deadline = Instant::now() + Duration::from_secs(plan.timeout_secs);
        let mut steps = runner::run_steps(&plan.rollback, deadline, &self.http, Some(&self.tracker(body))).await;
        steps.redact(&plan.secret_values);
        let finished = records::execution_finished(body, StepsPhase::Rollback, &steps);
        self.log(state, body, plan, RecordKind::ExecutionFinished, finished, "the action and the rollback").await?;

        let verification = match (&plan.rollback_verify, steps.ok) {
            (Some(rollback_verify), true) => {
                self.advance(state, Phase::VerifyingRollback, "verifying the rollback").await?;
                let report = verify::run(rollback_verify, &self.http).await;
                let record = records::verification(body, StepsPhase::Rollback, &report);
                self.log(
                    state,
                    body,
                    plan,
                    RecordKind::Verification,
                    record,
                    "the action, the rollback and its verification",
                )
                .await?;
                Some(report)
            }
            _ => None,
        };
        let outcome = execution::after_rollback(steps.ok, verification.as_ref().map(|r| r.passed));
        let rollback = match &verification {
            _ if !steps.ok => format!("rollback failed: {}", steps.summary()),
            Some(report) if report.passed => {
                format!("rolled back ({}); rollback verification passed: {}", steps.summary(), report.detail)
            }
            Some(report) => {
                format!("rollback ran ({}) but its verification failed: {}", steps.summary(), report.detail)
            }
            None => format!(
                "rolled back ({}); the pathway declares no `rollback_verify`, so only the rollback steps' success was checked",
                steps.summary()
            ),
        };
        Ok((outcome, format!("{why}; {rollback}")))
    }

    async fn finish(
        &self,
        body: &DecisionBody,
        plan: &Plan,
        mut state: ExecutionState,
        outcome: Outcome,
        detail: String,
        recovered: Option<Recovered<'_>>,
    ) -> Result<ExecutionState, ExecuteError> {
        let detail = secrets::redact_text(&detail, &plan.secret_values);
        let record = match recovered {
            Some(Recovered { phase, leftovers }) => {
                records::recovered_outcome(body, outcome, &detail, phase.as_str(), leftovers.iter().map(arf_core::records::encode).collect())
            }
            None => records::outcome(body, outcome, &detail),
        };
        self.log(&mut state, body, plan, RecordKind::Outcome, record, "everything but the `outcome` record").await?;
        arf_proto::metrics::inc("arf_executor_outcomes_total", "Executions settled, by outcome.", &[("outcome", outcome.as_str()), ("pathway", &body.pathway)]);
        match outcome {
            Outcome::Verified => info!(outcome = outcome.as_str(), %detail, "execution verified"),
            Outcome::RolledBack => warn!(outcome = outcome.as_str(), %detail, "execution rolled back"),
            Outcome::RollbackFailed => {
                error!(outcome = outcome.as_str(), %detail, "ROLLBACK FAILED: the target is in an unknown state and needs a human now")
            }
            Outcome::Failed => {
                error!(outcome = outcome.as_str(), %detail, "irreversible pathway failed: the target needs a human")
            }
            Outcome::Refused => warn!(outcome = outcome.as_str(), %detail, "the precheck refused the action"),
            Outcome::NotRun => warn!(outcome = outcome.as_str(), %detail, "the log holds a start the executor never ran: nothing changed"),
            Outcome::Running => {}
        }
        state.outcome = outcome;
        state.phase = Phase::Finished;
        state.detail = detail;
        state.updated_at_ms = now_ms();
        self.store.save(&state).await?;
        Ok(state)
    }

    /// Appends a record, with every secret value the plan holds scrubbed from it.
    async fn append(&self, body: &DecisionBody, plan: &Plan, kind: RecordKind, payload: Value) -> Result<(), AuditError> {
        self.append_on(body, plan, kind, payload, None).await
    }

    /// [`Executor::append`], only while `quiet` holds, when given.
    async fn append_on(&self, body: &DecisionBody, plan: &Plan, kind: RecordKind, payload: Value, quiet: Option<Quiet>) -> Result<(), AuditError> {
        // A replica whose lease lapsed logs nothing more about any execution: another
        // may be settling it, and its records would be read as that one's.
        if let Some(Err(error)) = self.store.shared().map(|s| s.check_live()) {
            return Err(AuditError::Refused(error.to_string()));
        }
        let payload = secrets::redact_json(payload, &plan.secret_values);
        let record = match quiet {
            Some(quiet) => self.audit.append_if_quiet(arf_audit_client::Entry::new(&body.incident_id, kind, payload), quiet).await?,
            None => self.audit.append_one(&body.incident_id, kind, payload).await?,
        };
        // `check_writer` said `executor` once; should the log's configuration change
        // under a running executor, stop at the first record rather than log what
        // recovery could not read back.
        if record.writer == recovery::EXECUTOR_WRITER {
            Ok(())
        } else {
            Err(AuditError::Refused(format!(
                "the audit log recorded this executor's `{}` record as writer `{}`, not `{}`; recovery could not read it back",
                kind.as_str(),
                record.writer,
                recovery::EXECUTOR_WRITER
            )))
        }
    }

    /// Appends a record after something ran. If the append fails, the execution
    /// stops where it is (nothing more may happen without its record) and the state
    /// is kept, so that a retry answers with it instead of running again.
    async fn log(
        &self,
        state: &mut ExecutionState,
        body: &DecisionBody,
        plan: &Plan,
        kind: RecordKind,
        payload: Value,
        ran: &'static str,
    ) -> Result<(), ExecuteError> {
        let Err(source) = self.append(body, plan, kind, payload).await else { return Ok(()) };
        let record = kind.as_str();
        error!(error = %source, record, ran, "audit append failed after something ran; execution stopped");
        state.phase = Phase::Interrupted;
        state.detail = format!("interrupted after {ran} ran: cannot log `{record}`: {source}");
        state.updated_at_ms = now_ms();
        if let Err(error) = self.store.save(state).await {
            error!(%error, "cannot record the interrupted execution");
        }
        Err(ExecuteError::Interrupted { decision_id: body.decision_id.clone(), ran, record, source })
    }

    /// Records progress for a restarted executor to find. On one machine a failure
    /// here is logged but does not stop the execution (the claim is durable, so a
    /// retry cannot run the decision twice, and the audit log holds the trail),
    /// except on the way into and out of [`Phase::Starting`], which recovery reads
    /// as "the start may be in the log, no step ran".
    /// With replicas it stops the execution when this replica's lease lapsed or the
    /// execution is no longer its own (another replica took it over): from then on
    /// the other replica settles it, and this one must not act on the target.
    async fn advance(&self, state: &mut ExecutionState, phase: Phase, detail: &str) -> Result<(), ExecuteError> {
        if let Some(shared) = self.store.shared() {
            shared.check_live()?;
        }
        let from = state.phase;
        state.phase = phase;
        detail.clone_into(&mut state.detail);
        state.updated_at_ms = now_ms();
        match (self.store.save(state).await, self.store.shared()) {
            // With replicas, the next phase starts only on the word of the database
            // that this replica still owns the execution, and with its lease live.
            (Ok(()), Some(shared)) => Ok(shared.check_live()?),
            (Ok(()), None) => Ok(()),
            (Err(error), Some(_)) => {
                error!(%error, phase = phase.as_str(), "cannot confirm this execution is still this replica's; stopping it");
                Err(error.into())
            }
            // `starting` must be recorded before the start is sent (a claim is
            // given back as never sent), and leaving it before any step runs (an
            // execution the store still shows `starting` is settled as never run).
            (Err(error), None) if from == Phase::Starting || phase == Phase::Starting => {
                error!(%error, phase = phase.as_str(), "cannot record where the start stands; nothing more runs");
                Err(error.into())
            }
            (Err(error), None) => {
                warn!(%error, phase = phase.as_str(), "cannot record execution progress");
                Ok(())
            }
        }
    }
}
