//! The agent's state and its pipeline: accept signals (logged before the call
//! returns), group them, and for each new incident build a snapshot, ask the
//! reasoner, ground the answer, and propose to the governor.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{Instrument, error, info, info_span, warn};

use arf_audit_client::state::Unvouched;
use arf_audit_client::{AuditClient, AuditError, Entry, RecordKind};
use arf_core::canonical::random_id;
use arf_core::catalog::Catalog;
use arf_core::diagnosis::Proposal;
use arf_core::records::{self, DiagnosisRecord, DiagnosisStatus, IncidentRecord, Malformed, SignalRecord, SnapshotRecord};
use arf_core::signal::Signal;
use arf_core::target::Inventory;

use crate::context::{self, Budget};
use crate::grpc::governor::GovernorLink;
use crate::ground;
use crate::incident::{Incident, IncidentState, Incidents, Placement};
use crate::prompt;
use crate::reasoner::{Attempt, DiagnosisRequest, Reasoner, ReasonerError};
use crate::redact::Redactor;

/// Why signals were not accepted. Either way none of them was, and the caller may retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("the agent is still rebuilding its state from the audit log; retry shortly")]
    Recovering,
    #[error("signals were not accepted because they could not be logged: {0}")]
    Audit(#[from] AuditError),
    #[error("the agent is stopping; nothing was accepted")]
    Stopping,
    #[error("`{sender}` may send signals about {allowed} only, and signals[{index}] is about {about}; nothing was accepted")]
    OutOfScope { sender: String, index: usize, about: String, allowed: String },
}

/// Where one accepted signal went.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub signal_id: String,
    pub fingerprint: String,
    pub incident_id: String,
    pub duplicate: bool,
    pub audit_seq: u64,
}

pub struct Agent {
    incidents: Mutex<Incidents>,
    audit: AuditClient,
    governor: GovernorLink,
    catalog: Catalog,
    inventory: Inventory,
    reasoner: Arc<dyn Reasoner>,
    /// Used when the reasoner cannot be reached, if configured.
    fallback: Option<Arc<dyn Reasoner>>,
    redactor: Redactor,
    /// Senders limited to some services: name → the services it may send signals about.
    scopes: std::collections::BTreeMap<String, crate::config::SenderScope>,
    budget: Budget,
    max_diagnoses: u32,
    max_model_calls: u32,
    /// Set once the state has been rebuilt from the log.
    ready: std::sync::atomic::AtomicBool,
    /// The queue of the task that places and logs signals, started by the first request.
    batcher: std::sync::OnceLock<tokio::sync::mpsc::Sender<Pending>>,
    /// Woken whenever a batch of signals is applied or given up: a diagnosis
    /// waiting for signals in flight into its incident looks again.
    settled: tokio::sync::Notify,
    /// How long a new incident gathers signals before its snapshot.
    group_wait: std::time::Duration,
    /// How long a done incident stays in memory.
    retain_ms: i64,
    /// How recent an incident's last change must be for unfinished work on it to resume.
    resume_within_ms: i64,
    investigator: Option<Arc<crate::investigate::Investigator>>,
    /// Where the state snapshot is kept, and how often it is folded again.
    snapshots: Option<Snapshots>,
    group_window_ms: i64,
    max_attempts: u32,
    /// The record the latest state snapshot folds the log up to (0: none).
    snapshot_through: std::sync::atomic::AtomicU64,
    /// With replicas (`agent.postgres`): the agents' database ([`crate::replicas`]).
    replicas: Option<Arc<crate::replicas::Replicas>>,
    /// The last record the follower has taken in: what a replica waits for before
    /// it places a key's signals after another replica.
    followed: tokio::sync::watch::Sender<u64>,
    /// With replicas: the last record of each grouping key this replica appended and
    /// applied itself, so it need not wait for its follower when no peer came between.
    mine: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// The incidents a task here works on (diagnosing, proposing, a next attempt).
    working: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// An incident a task works on, until dropped ([`Agent::work`]).
struct Working {
    agent: std::sync::Weak<Agent>,
    incident_id: String,
}

impl Drop for Working {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.upgrade() {
            agent.working.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.incident_id);
        }
    }
}

/// How long a replica keeps a grouping key's locks after an append of it failed:
/// an append whose answer was lost may still land, and the next holder must see it.
const SETTLE_AFTER_FAILED_APPEND: std::time::Duration = std::time::Duration::from_secs(2);

/// After an append under grouping-key locks failed: keeps the locks (if any) for
/// [`SETTLE_AFTER_FAILED_APPEND`], since the append may still land, then gives them back.
fn settle(held: Option<crate::replicas::Held>) {
    if let Some(held) = held {
        tokio::spawn(async move {
            tokio::time::sleep(SETTLE_AFTER_FAILED_APPEND).await;
            drop(held);
        });
    }
}

/// `agent.state_dir` and when to fold a new state snapshot.
#[derive(Debug, Clone)]
pub struct Snapshots {
    pub dir: std::path::PathBuf,
    /// Fold a new snapshot once the log has grown this many records past the last.
    pub every_records: u64,
    /// How often to look.
    pub check_every: std::time::Duration,
}

/// How many requests may wait for the batcher before senders wait too.
const BATCHER_QUEUE: usize = 1024;
/// The most signals one batch carries into one append (a single request may carry more).
const BATCH_SIGNALS: usize = 512;
/// How many batches may be on their way into the log at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// One ingest request waiting for the batcher.
struct Pending {
    signals: Vec<Signal>,
    /// Who sent them, as the log records it.
    sender: String,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Accepted>, IngestError>>,
    /// The grouping keys of its signals.
    keys: std::collections::HashSet<crate::incident::Key>,
}

/// Places and logs requests in batches, several at once: a batch is planned from
/// the state its incidents are in, so two batches in flight together never hold a
/// grouping key in common (signals of different keys never share an incident, and
/// their records commute in the log). A request whose key is in flight waits for
/// that batch, and every later request of one of its keys waits behind it, so each
/// key's signals are placed and logged in the order they came. While batches are
/// in the log, the requests arriving go into the next ones. Ends when the agent is
/// dropped.
async fn batcher(agent: std::sync::Weak<Agent>, mut queue: tokio::sync::mpsc::Receiver<Pending>) {
    use futures::StreamExt;
    let mut waiting: std::collections::VecDeque<Pending> = std::collections::VecDeque::new();
    let mut busy: std::collections::HashMap<crate::incident::Key, usize> = std::collections::HashMap::new();
    let mut running = futures::stream::FuturesUnordered::new();
    let mut open = true;
    loop {
        while waiting.len() < BATCHER_QUEUE
            && let Ok(next) = queue.try_recv()
        {
            waiting.push_back(next);
        }
        while running.len() < BATCHES_IN_FLIGHT {
            let (batch, keys) = next_batch(&mut waiting, &busy);
            if batch.is_empty() {
                break;
            }
            let Some(agent) = agent.upgrade() else { return };
            for key in &keys {
                *busy.entry(key.clone()).or_default() += 1;
            }
            let task = tokio::spawn(async move { agent.ingest_batch(batch).await }.in_current_span());
            running.push(async move {
                // A batch that panicked has answered no one; its senders see the
                // agent stopping. Its keys are free again either way.
                let _ = task.await;
                keys
            });
        }
        if !open && waiting.is_empty() && running.is_empty() {
            return;
        }
        tokio::select! {
            next = queue.recv(), if open && waiting.len() < BATCHER_QUEUE => match next {
                Some(next) => waiting.push_back(next),
                None => open = false,
            },
            Some(keys) = running.next(), if !running.is_empty() => {
                for key in keys {
                    if let std::collections::hash_map::Entry::Occupied(mut entry) = busy.entry(key) {
                        *entry.get_mut() -= 1;
                        if *entry.get() == 0 {
                            entry.remove();
                        }
                    }
                }
            },
        }
    }
}

/// The next batch: waiting requests in order, up to [`BATCH_SIGNALS`], none with a
/// key that a batch in flight holds or that an earlier request left waiting holds.
/// Returns the batch and its keys.
fn next_batch(
    waiting: &mut std::collections::VecDeque<Pending>,
    busy: &std::collections::HashMap<crate::incident::Key, usize>,
) -> (Vec<Pending>, std::collections::HashSet<crate::incident::Key>) {
    let mut batch = Vec::new();
    let mut keys = std::collections::HashSet::new();
    let mut blocked: std::collections::HashSet<crate::incident::Key> = std::collections::HashSet::new();
    let mut count = 0;
    let mut left = std::collections::VecDeque::with_capacity(waiting.len());
    while let Some(pending) = waiting.pop_front() {
        let free = count < BATCH_SIGNALS && pending.keys.iter().all(|k| !busy.contains_key(k) && !blocked.contains(k));
        if free {
            count += pending.signals.len();
            keys.extend(pending.keys.iter().cloned());
            batch.push(pending);
        } else {
            blocked.extend(pending.keys.iter().cloned());
            left.push_back(pending);
        }
    }
    *waiting = left;
    (batch, keys)
}

/// The agent's bounds and reasoners, as configured.
pub struct Settings {
    pub reasoner: Arc<dyn Reasoner>,
    pub fallback: Option<Arc<dyn Reasoner>>,
    pub redactor: Redactor,
    pub scopes: std::collections::BTreeMap<String, crate::config::SenderScope>,
    pub budget: Budget,
    pub group_window_ms: i64,
    pub group_wait: std::time::Duration,
    /// How long a done incident stays in memory ([`Incidents::evict`]).
    pub retain_ms: i64,
    /// How recent an incident must be for a restart or a takeover to resume it ([`Agent::resume`]).
    pub resume_within_ms: i64,
    pub max_diagnoses: u32,
    pub max_model_calls: u32,
    /// Actions tried per incident ([`Incidents::with_max_attempts`]).
    pub max_attempts: u32,
    /// The investigation tools, when configured.
    pub investigator: Option<Arc<crate::investigate::Investigator>>,
    /// The state snapshot for restarts, when `agent.state_dir` is set.
    pub snapshots: Option<Snapshots>,
    /// The agents' database, when this agent is one of several replicas.
    pub replicas: Option<Arc<crate::replicas::Replicas>>,
}

impl Agent {
    pub fn new(audit: AuditClient, governor: GovernorLink, catalog: Catalog, inventory: Inventory, settings: Settings) -> Self {
        Self {
            incidents: Mutex::new(Incidents::new(settings.group_window_ms).with_max_attempts(settings.max_attempts)),
            // A replica tells its own records from its peers' as it follows the log,
            // and appends only while its lease holds.
            audit: match &settings.replicas {
                Some(replicas) => audit.telling_own().fenced(replicas.member(), replicas.incarnation()),
                None => audit,
            },
            governor,
            catalog,
            inventory,
            reasoner: settings.reasoner,
            fallback: settings.fallback,
            redactor: settings.redactor,
            scopes: settings.scopes,
            budget: settings.budget,
            max_diagnoses: settings.max_diagnoses,
            max_model_calls: settings.max_model_calls,
            ready: std::sync::atomic::AtomicBool::new(false),
            batcher: std::sync::OnceLock::new(),
            settled: tokio::sync::Notify::new(),
            group_wait: settings.group_wait,
            retain_ms: settings.retain_ms,
            resume_within_ms: settings.resume_within_ms,
            investigator: settings.investigator,
            snapshots: settings.snapshots,
            group_window_ms: settings.group_window_ms,
            max_attempts: settings.max_attempts,
            snapshot_through: std::sync::atomic::AtomicU64::new(0),
            replicas: settings.replicas,
            followed: tokio::sync::watch::Sender::new(0),
            mine: std::sync::Mutex::default(),
            working: std::sync::Mutex::default(),
        }
    }

    /// Rebuilds the incidents from the log after a restart, and resumes the
    /// diagnoses that never finished, so no accepted signal is forgotten.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, RecoverError> {
        // From the state snapshot, when the log vouches for it; else from the start.
        let saved = match &self.snapshots {
            Some(snapshots) => match self.verified_snapshot(&snapshots.dir).await {
                Ok(saved) => saved,
                // The log did not answer: the rebuild is retried, as any read of the log would be.
                Err(Unvouched::Audit(error)) => return Err(RecoverError::Audit(error)),
                Err(Unvouched::Refused(why)) => {
                    tracing::error!(%why, "THE AGENT'S STATE SNAPSHOT IS NOT ONE THE LOG VOUCHES FOR: rebuilding from the whole log instead");
                    arf_proto::metrics::inc("arf_agent_state_snapshots_refused_total", "State snapshots a restart did not start from, because the log does not vouch for them.", &[]);
                    None
                }
            },
            None => None,
        };
        let mut proposals = Proposals::default();
        let (last_seq, folded) = {
            let mut incidents = self.incidents.lock().await;
            // A rebuild that failed halfway is retried from nothing, never on top of what it folded.
            *incidents = Incidents::new(self.group_window_ms).with_max_attempts(self.max_attempts);
            let from = match saved {
                Some(saved) => {
                    self.snapshot_through.store(saved.through_seq, std::sync::atomic::Ordering::SeqCst);
                    proposals.load(saved.proposals);
                    incidents.load_stored(saved.incidents);
                    saved.through_seq + 1
                }
                None => 1,
            };
            arf_proto::metrics::set("arf_agent_recovery_from_seq", "The record the last rebuild folded the log from (1: the whole log).", &[], from as f64);
            let (last, folded) = self.fold(&mut incidents, &mut proposals, from).await?;
            incidents.evict(arf_core::time::now_ms(), self.retain_ms);
            (last.map_or(from.saturating_sub(1), |(seq, _)| seq), folded)
        };
        arf_proto::metrics::set("arf_agent_recovery_folded_records", "Records the last rebuild folded.", &[], folded as f64);
        let unfinished = self.incidents.lock().await.unfinished();
        let resumed: Vec<(String, Option<Proposal>, Option<String>)> = {
            let incidents = self.incidents.lock().await;
            unfinished
                .into_iter()
                .map(|id| {
                    let proposal = proposals.unanswered(&id);
                    let retry = incidents.by_id.get(&id).and_then(|i| i.retry_after.clone());
                    (id, proposal, retry)
                })
                .collect()
        };
        let count = self.incidents.lock().await.by_id.len();
        self.followed.send_replace(last_seq);
        self.follow_from(last_seq + 1);
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        for (incident_id, proposal, retry) in resumed {
            // A replica resumes only what it owns; its peers' are theirs, or taken
            // over once their owner's lease lapsed (`take_over_periodically`).
            if let Some(replicas) = &self.replicas {
                match replicas.owns(&incident_id).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(error) => return Err(RecoverError::Audit(AuditError::Unavailable(format!("the agents' database: {error}")))),
                }
            }
            self.resume(&incident_id, proposal, retry);
        }
        Ok(count)
    }

    /// Resumes an incident a restart (or a takeover) found unfinished, unless its
    /// last change is older than `agent.resume_within_secs` ([`Agent::too_old_to_resume`]).
    fn resume(self: &Arc<Self>, incident_id: &str, proposal: Option<Proposal>, retry: Option<String>) {
        let agent = Arc::clone(self);
        let id = incident_id.to_owned();
        // A proposal already logged goes to the governor as it was (the governor
        // answers a proposal it holds with its decision); diagnosing again could
        // propose something else for the same incident. A next attempt the restart
        // cut off is tried, not diagnosed afresh.
        match (proposal, retry) {
            (None, Some(after)) => {
                info!(%incident_id, %after, "resuming the next attempt after an action that rolled back or was refused");
                self.spawn_work_after(incident_id, info_span!("next_attempt", %incident_id), Some(after.clone()), async move {
                    if !agent.too_old_to_resume(&id).await {
                        agent.next_attempt(&id, &after).await;
                    }
                });
            }
            (Some(proposal), _) => {
                info!(%incident_id, proposal_id = %proposal.id, "resuming a logged proposal the governor may not have answered");
                self.spawn_work(incident_id, info_span!("propose", %incident_id), async move {
                    if !agent.too_old_to_resume(&id).await {
                        agent.propose(&id, proposal).await;
                    }
                });
            }
            (None, None) => {
                info!(%incident_id, "resuming an unfinished diagnosis");
                self.spawn_work(incident_id, info_span!("diagnose", %incident_id), async move {
                    if !agent.too_old_to_resume(&id).await {
                        agent.diagnose(&id).await;
                    }
                });
            }
        }
    }

    /// Whether the incident's last change (its latest record in the log, whoever
    /// wrote it: a signal, a diagnosis, a decision, an outcome) is older than
    /// `agent.resume_within_secs`; if so, it is escalated instead of resumed. Work a
    /// restart or a takeover found unfinished (after a long outage, or a refusal the
    /// log shows from weeks ago) would otherwise act now on signals that may no
    /// longer hold. A trail that cannot be read says nothing: the work itself then
    /// waits on the log.
    async fn too_old_to_resume(&self, incident_id: &str) -> bool {
        let changed_at = match self.audit.read_incident(incident_id).await {
            Ok(trail) => trail.iter().map(|r| r.time_ms).max(),
            Err(error) => {
                warn!(%incident_id, %error, "cannot read the incident's trail to tell its age; resuming it");
                None
            }
        };
        let Some(changed_at) = changed_at else { return false };
        let age_ms = arf_core::time::now_ms().saturating_sub(changed_at);
        if age_ms <= self.resume_within_ms {
            return false;
        }
        let reason = format!(
            "the agent stopped while working on this incident and came back {} s after its last change, past `agent.resume_within_secs` ({} s): its signals may no longer hold, so it is handed to a person rather than resumed",
            age_ms / 1000,
            self.resume_within_ms / 1000
        );
        self.escalate(incident_id, &reason).await;
        true
    }

    /// Runs `task` for `incident_id` on a task of its own, marked as worked on
    /// ([`Agent::work`]) until it ends; nothing when a task already works on it.
    fn spawn_work(self: &Arc<Self>, incident_id: &str, span: tracing::Span, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.spawn_work_after(incident_id, span, None, task);
    }

    /// [`Agent::spawn_work`] for a task that follows up decision `follows_up`'s
    /// refusal or rollback. A follow-up that came due while the task ran (the
    /// follower saw the latest decision refused or rolled back, and `work` turned
    /// its task away) is made before the incident is let go, and again for each
    /// later decision that came due meanwhile; never twice for one decision here
    /// (one that could not be made now is left to reconciling or a restart).
    fn spawn_work_after(self: &Arc<Self>, incident_id: &str, span: tracing::Span, follows_up: Option<String>, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let Some(working) = self.work(incident_id) else { return };
        let (agent, id) = (Arc::clone(self), incident_id.to_owned());
        tokio::spawn(
            async move {
                task.await;
                let mut made = follows_up;
                while let Some(after) = agent.follow_up_due(&id).await {
                    if made.as_ref() == Some(&after) {
                        break;
                    }
                    agent.next_attempt(&id, &after).await;
                    made = Some(after);
                }
                drop(working);
            }
            .instrument(span),
        );
    }

    /// The decision whose refusal or rollback the incident's next attempt must
    /// follow up, if that is still due: it is the incident's latest decision and no
    /// follow-up of it was logged.
    async fn follow_up_due(&self, incident_id: &str) -> Option<String> {
        let incidents = self.incidents.lock().await;
        let incident = incidents.by_id.get(incident_id)?;
        incident.retry_after.clone().filter(|after| incident.decision_ids.last() == Some(after) && incident.state != IncidentState::Resolved)
    }

    /// With replicas: every third of a lease, takes over the incidents of replicas
    /// whose lease lapsed, then reconciles the incidents this replica owns with
    /// where their trails stand ([`Agent::reconcile`]).
    pub fn take_over_periodically(self: &Arc<Self>) {
        let Some(replicas) = self.replicas.clone() else { return };
        let agent = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(replicas.lease() / 3).await;
                let Some(agent) = agent.upgrade() else { return };
                if !replicas.is_live() {
                    return;
                }
                match replicas.free_lapsed_holders().await {
                    Ok(0) => {}
                    Ok(ended) => warn!(ended, "ended the database sessions in which replicas whose lease lapsed held grouping-key locks"),
                    Err(error) => warn!(%error, "cannot end the key-lock sessions of replicas whose lease lapsed"),
                }
                match replicas.orphans().await {
                    Ok(orphans) => {
                        for orphan in orphans {
                            match replicas.take_over(&orphan).await {
                                Ok(true) => info!(incident_id = %orphan.incident_id, owner = %orphan.owner, "took over an incident whose owner's lease lapsed"),
                                Ok(false) => {}
                                Err(error) => warn!(incident_id = %orphan.incident_id, %error, "cannot take the incident over yet"),
                            }
                        }
                    }
                    Err(error) => warn!(%error, "cannot look for incidents to take over"),
                }
                match replicas.own_open(replicas.lease()).await {
                    Ok(owned) => agent.reconcile(&replicas, owned).await,
                    Err(error) => warn!(%error, "cannot list the incidents this replica owns"),
                }
            }
        });
    }

    /// With replicas: once this replica has read the log to its head, resumes each
    /// incident of `owned` that nothing here works on and that its trail shows
    /// unfinished (as a restart would: a logged proposal is sent, a next attempt
    /// tried, a diagnosis made), and marks those whose trail shows settled as done.
    /// So an incident taken over, or one whose work here was cut off by an error,
    /// is carried on; none waits for a restart.
    async fn reconcile(self: &Arc<Self>, replicas: &crate::replicas::Replicas, owned: Vec<String>) {
        if owned.is_empty() {
            return;
        }
        if let Err(error) = self.catch_up(0, true).await {
            warn!(%error, "cannot read the log to the head to reconcile this replica's incidents; next time");
            return;
        }
        for incident_id in owned {
            if self.is_working(&incident_id) {
                continue;
            }
            let view = self.incidents.lock().await.by_id.get(&incident_id).map(|i| (i.state, i.pipeline_done, i.retry_after.clone()));
            match view {
                // Left memory (only done incidents do), or never logged.
                None => replicas.finished(&incident_id).await,
                Some((IncidentState::Escalated | IncidentState::Verified | IncidentState::Failed | IncidentState::RolledBack, _, None) | (IncidentState::Resolved, _, _)) => {
                    replicas.finished(&incident_id).await;
                }
                Some((_, true, Some(after))) => self.resume(&incident_id, None, Some(after)),
                Some((_, false, retry)) => {
                    let trail = match self.audit.read_incident(&incident_id).await {
                        Ok(trail) => trail,
                        Err(error) => {
                            warn!(%incident_id, %error, "cannot read the incident's trail to resume it; next time");
                            continue;
                        }
                    };
                    let mut proposals = Proposals::default();
                    if let Err(error) = trail.iter().try_for_each(|record| proposals.add(record, "agent")) {
                        error!(%incident_id, %error, "the incident's trail is not in the agent's format; it is not resumed");
                        continue;
                    }
                    info!(%incident_id, "resuming an incident this replica owns");
                    self.resume(&incident_id, proposals.unanswered(&incident_id), retry);
                }
                // Proposed and waiting for its decision's outcome.
                Some(_) => {}
            }
        }
    }

    /// Marks `incident_id` as worked on by a task here until the guard drops; `None`
    /// when a task already works on it.
    fn work(self: &Arc<Self>, incident_id: &str) -> Option<Working> {
        let mut working = self.working.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        working.insert(incident_id.to_owned()).then(|| Working { agent: Arc::downgrade(self), incident_id: incident_id.to_owned() })
    }

    fn is_working(&self, incident_id: &str) -> bool {
        self.working.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(incident_id)
    }

    /// Whether this agent works on `incident_id`: always, without replicas; with
    /// them, while its lease is live and it owns the incident. Asked before each
    /// model call and each proposal, so a replica that was paused past its lease
    /// does neither once another has taken the incident over.
    async fn owns(&self, incident_id: &str) -> bool {
        let Some(replicas) = &self.replicas else { return true };
        if !replicas.is_live() {
            return false;
        }
        match replicas.owns(incident_id).await {
            Ok(owns) => owns,
            Err(error) => {
                // Still this replica's in the database: reconciling resumes it.
                error!(%incident_id, %error, "cannot tell which agent replica owns the incident; this replica leaves it for now");
                false
            }
        }
    }

    /// With replicas: takes the locks of grouping `keys` and waits until this
    /// replica's state has what their previous holders appended (not at all when
    /// this replica was the last to append for each of them).
    async fn hold_keys(&self, replicas: &Arc<crate::replicas::Replicas>, keys: &[String]) -> Result<crate::replicas::Held, AuditError> {
        let held = replicas.hold(keys).await.map_err(|e| AuditError::Unavailable(format!("the agents' database: {e}")))?;
        let target = {
            let mine = self.mine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            held.last.iter().filter(|(key, seq)| mine.get(key) != Some(seq)).map(|(_, seq)| *seq).max().unwrap_or(0)
        };
        self.catch_up(target, held.unrecorded).await?;
        Ok(held)
    }

    /// With replicas: records that this replica appended (and applied) `seq` last
    /// for `held`'s keys, and gives their locks back.
    async fn release_keys(&self, held: crate::replicas::Held, seq: u64) {
        let keys: Vec<String> = held.last.iter().map(|(key, _)| key.clone()).collect();
        match held.release(seq).await {
            Ok(()) => {
                let mut mine = self.mine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for key in keys {
                    mine.insert(key, seq);
                }
            }
            // The records are in the log; unless the record's update committed
            // before the failure, the key stays marked as appending, so the next
            // holder reads the log to its head (and if it committed, the key's
            // last record is this one).
            Err(error) => warn!(%error, "cannot record a grouping key's last record in the agents' database"),
        }
    }

    /// With replicas: waits until the follower has taken in the log up to `target`;
    /// when a holder may have appended without recording it (`unrecorded`), up to
    /// the last record of the agents' at the log's head. Bounded: a follower that
    /// cannot catch up in 10 s fails the caller, which retries.
    async fn catch_up(&self, mut target: u64, unrecorded: bool) -> Result<(), AuditError> {
        use futures::StreamExt;
        if unrecorded {
            let (head, _) = self.audit.head().await?;
            let from = target.max(*self.followed.borrow()) + 1;
            if head >= from {
                let mut stream = std::pin::pin!(self.audit.stream_range(from, head + 1).await?);
                while let Some(record) = stream.next().await {
                    let record = record?;
                    if record.writer == "agent" {
                        target = target.max(record.seq);
                    }
                }
            }
        }
        let mut followed = self.followed.subscribe();
        match tokio::time::timeout(std::time::Duration::from_secs(10), followed.wait_for(|seq| *seq >= target)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(AuditError::Unavailable(format!("this agent has not read the log up to record {target} yet"))),
        }
    }

    /// Folds the log from `from` to its head into `incidents` and `proposals`, as it
    /// streams in; the last record folded (seq, hash) and how many.
    async fn fold(&self, incidents: &mut Incidents, proposals: &mut Proposals, from: u64) -> Result<(Option<(u64, String)>, u64), RecoverError> {
        use futures::StreamExt;
        let mut stream = std::pin::pin!(self.audit.stream_range(from, 0).await.map_err(RecoverError::Audit)?);
        let mut last = None;
        let mut folded = 0u64;
        while let Some(record) = stream.next().await {
            let record = record.map_err(RecoverError::Audit)?;
            incidents.restore_one(&record).map_err(RecoverError::Malformed)?;
            proposals.add(&record, "agent").map_err(RecoverError::Malformed)?;
            // What was done long before the log's end leaves memory as the log is
            // read, so a rebuild holds no more than a running agent would.
            folded += 1;
            // At the same records whichever record the fold started from, so a fold from a
            // snapshot evicts exactly where a whole fold does.
            if record.seq.is_multiple_of(4096) {
                incidents.evict(record.time_ms, self.retain_ms);
                proposals.keep_held(incidents);
            }
            last = Some((record.seq, record.hash));
        }
        proposals.keep_held(incidents);
        Ok((last, folded))
    }

    /// The state snapshot in `dir`, if there is one and the log vouches for it.
    async fn verified_snapshot(&self, dir: &std::path::Path) -> Result<Option<crate::snapshot::Saved>, Unvouched> {
        arf_audit_client::state::verified::<crate::snapshot::Saved>(&self.audit, dir, &self.fold_settings(), "agent", |r, hash, through| {
            r.writer == "agent"
                && r.kind == RecordKind::Incident
                && r.incident_id == arf_core::records::STATE_SNAPSHOT
                && matches!(r.parse::<IncidentRecord>(), Ok(IncidentRecord::StateSnapshot { hash: logged, through_seq }) if logged == hash && through_seq == through)
        })
        .await
    }

    /// What a fold's result depends on besides the log.
    fn fold_settings(&self) -> crate::snapshot::FoldSettings {
        crate::snapshot::FoldSettings { rules: crate::snapshot::FOLD_RULES, group_window_ms: self.group_window_ms, retain_ms: self.retain_ms, max_attempts: self.max_attempts }
    }

    /// Folds a new state snapshot in the background whenever the log has grown
    /// `every_records` past the last one: from the last verified snapshot (or the
    /// start) with the fold a restart uses, never from the live state.
    pub fn snapshot_periodically(self: &Arc<Self>) {
        let Some(snapshots) = self.snapshots.clone() else { return };
        let agent = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(snapshots.check_every).await;
                let Some(agent) = agent.upgrade() else { return };
                if let Err(error) = agent.snapshot_if_due(&snapshots).await {
                    warn!(%error, "cannot save the agent's state snapshot; restarts fold more of the log until one is saved");
                    // Not again at once: a full disk or a log outage is not fixed in a minute.
                    tokio::time::sleep(snapshots.check_every.saturating_mul(9)).await;
                }
            }
        });
    }

    /// Saves a new snapshot if the log has grown enough since the last one.
    pub async fn snapshot_if_due(&self, snapshots: &Snapshots) -> Result<bool, String> {
        let (head, _) = self.audit.head().await.map_err(|e| e.to_string())?;
        if head.saturating_sub(self.snapshot_through.load(std::sync::atomic::Ordering::SeqCst)) < snapshots.every_records {
            return Ok(false);
        }
        let base = match self.verified_snapshot(&snapshots.dir).await {
            Ok(base) => base,
            Err(Unvouched::Audit(error)) => return Err(format!("cannot read the log: {error}")),
            // A file the log does not vouch for is replaced by one folded from the start.
            Err(Unvouched::Refused(why)) => {
                warn!(%why, "the saved state snapshot is not one the log vouches for; folding a new one from the start");
                None
            }
        };
        let mut incidents = Incidents::new(self.group_window_ms).with_max_attempts(self.max_attempts);
        let mut proposals = Proposals::default();
        let from = match base {
            Some(saved) => {
                proposals.load(saved.proposals);
                incidents.load_stored(saved.incidents);
                saved.through_seq + 1
            }
            None => 1,
        };
        let (Some((through_seq, through_hash)), _) = self.fold(&mut incidents, &mut proposals, from).await.map_err(|e| e.to_string())? else { return Ok(false) };
        let saved = crate::snapshot::Saved {
            format: crate::snapshot::FORMAT,
            fold: self.fold_settings(),
            through_seq,
            through_hash,
            incidents: incidents.to_stored(),
            proposals: proposals.stored(),
        };
        drop(incidents);
        // Written (synced, not yet in place) before the log vouches for it, put in place after:
        // a file that cannot be written never costs a record, and a file in place always has one.
        arf_audit_client::state::save(&self.audit, &snapshots.dir, saved, |hash| {
            Entry::new(arf_core::records::STATE_SNAPSHOT, RecordKind::Incident, records::encode(&IncidentRecord::StateSnapshot { hash: hash.to_owned(), through_seq }))
        })
        .await?;
        self.snapshot_through.store(through_seq, std::sync::atomic::Ordering::SeqCst);
        arf_proto::metrics::set("arf_agent_state_snapshot_seq", "The record the agent's latest state snapshot folds the log up to.", &[], through_seq as f64);
        info!(through_seq, "state snapshot saved");
        Ok(true)
    }

    /// Whether the state has been rebuilt from the log since start.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts one model call against the incident's bound; false when the bound is reached.
    /// Model calls the incident may still make.
    async fn model_calls_left(&self, incident_id: &str) -> u32 {
        self.incidents.lock().await.by_id.get(incident_id).map_or(0, |i| self.max_model_calls.saturating_sub(i.model_calls))
    }

    async fn take_model_call(&self, incident_id: &str) -> bool {
        let mut incidents = self.incidents.lock().await;
        match incidents.by_id.get_mut(incident_id) {
            Some(incident) if incident.model_calls < self.max_model_calls => {
                incident.model_calls += 1;
                true
            }
            _ => false,
        }
    }

    /// Accepts validated signals. They are in the log before this returns; if the
    /// log cannot take them, none is accepted and the caller must retry.
    ///
    /// Requests are placed by the batcher, so grouping sees each key's signals in
    /// one order; what concurrent requests send while the log is writing goes into
    /// the next batches, each one append (the log's group commit does the rest). No
    /// lock is held while the log writes, and nothing is cloned but the incidents a
    /// batch touches.
    pub async fn ingest(self: &Arc<Self>, signals: Vec<Signal>, sender: &str) -> Result<Vec<Accepted>, IngestError> {
        if !self.ready.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(IngestError::Recovering);
        }
        // Secrets never reach the log, the snapshot or the prompt: redact on the way in.
        let signals: Vec<Signal> = signals.into_iter().map(|s| self.redactor.signal(s)).collect();
        // A sender limited to some services or environments sends about those, or
        // nothing is accepted.
        if let Some((index, about, allowed)) = self.scopes.get(sender).and_then(|scope| scope.first_outside(&signals)) {
            return Err(IngestError::OutOfScope { sender: sender.to_owned(), index, about, allowed });
        }
        let batcher = self
            .batcher
            .get_or_init(|| {
                let (sender, receiver) = tokio::sync::mpsc::channel(BATCHER_QUEUE);
                tokio::spawn(batcher(Arc::downgrade(self), receiver).instrument(info_span!("ingest")));
                sender
            })
            .clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let keys = signals.iter().filter_map(crate::incident::grouping_key).collect();
        batcher.send(Pending { signals, sender: sender.to_owned(), reply, keys }).await.map_err(|_| IngestError::Stopping)?;
        answer.await.map_err(|_| IngestError::Stopping)?
    }

    /// Places, logs and applies one batch of requests, then answers each.
    async fn ingest_batch(self: &Arc<Self>, batch: Vec<Pending>) {
        let now = arf_core::time::now_ms();
        let signals: Vec<&Signal> = batch.iter().flat_map(|p| p.signals.iter()).collect();
        let senders: Vec<&str> = batch.iter().flat_map(|p| p.signals.iter().map(|_| p.sender.as_str())).collect();
        let owned: Vec<Signal> = signals.iter().map(|s| (*s).clone()).collect();
        if owned.is_empty() {
            for pending in batch {
                let _ = pending.reply.send(Ok(Vec::new()));
            }
            return;
        }
        // With replicas, the batch's grouping keys are this replica's until it has
        // logged and applied it, and its state first takes in what peers logged.
        let held = match &self.replicas {
            Some(replicas) => {
                let keys: Vec<String> = batch.iter().flat_map(|p| p.keys.iter()).map(|(e, s, f)| crate::incident::key_name((e, s, f))).collect();
                match self.hold_keys(replicas, &keys).await {
                    Ok(held) => Some(held),
                    Err(error) => {
                        for pending in batch {
                            let _ = pending.reply.send(Err(IngestError::Audit(error.clone())));
                        }
                        return;
                    }
                }
            }
            None => None,
        };
        // Only the plan is made under the lock: CPU work on the incidents touched.
        let planned = {
            let mut incidents = self.incidents.lock().await;
            let planned = incidents.plan(&owned, now, || random_id("inc"));
            incidents.hold(&planned, true);
            planned
        };
        let mut entries = Vec::with_capacity(owned.len() + 1);
        for ((signal, plan), sender) in owned.iter().zip(&planned).zip(&senders) {
            let incident_id = plan.placement.incident_id().to_owned();
            if let Some(incident) = &plan.opened {
                entries.push(Entry::new(
                    incident_id.clone(),
                    RecordKind::Incident,
                    records::encode(&IncidentRecord::Opened {
                        title: incident.title.clone(),
                        service: incident.service.clone(),
                        family: incident.family.clone(),
                        environment: incident.environment.clone(),
                        state: incident.state.as_str().to_owned(),
                        first_signal: signal.id.clone(),
                    }),
                ));
            }
            if plan.resolves {
                entries.push(Entry::new(
                    incident_id.clone(),
                    RecordKind::Incident,
                    records::encode(&IncidentRecord::resolved("every alert in the incident resolved")),
                ));
            }
            let duplicate = matches!(plan.placement, Placement::Joined { duplicate: true, .. });
            entries.push(Entry::new(incident_id, RecordKind::Signal, records::encode(&SignalRecord { signal: signal.clone(), duplicate, sender: Some((*sender).to_owned()) })));
        }
        // With replicas: the incidents this batch opens are this replica's to
        // diagnose, claimed before their opening is logged; and the keys' locks are
        // checked once more (they were marked as appending when taken, so a holder
        // after a crash here reads the log to its head).
        let prepared = match (&self.replicas, &held) {
            (Some(replicas), Some(held)) => {
                let opened: Vec<String> = planned.iter().filter_map(|p| p.opened.as_ref().map(|i| i.id.clone())).collect();
                match replicas.claim(&opened).await {
                    Ok(()) => held.appending().await,
                    Err(error) => Err(error),
                }
                .map_err(|e| AuditError::Unavailable(format!("the agents' database: {e}")))
            }
            _ => Ok(()),
        };
        let logged = match (prepared, &held) {
            // Under the keys' tokens: nothing is taken once a peer took a key.
            (Ok(()), Some(held)) => self.audit.under_keys(&held.tokens).append(entries).await,
            (Ok(()), None) => self.audit.append(entries).await,
            (Err(error), _) => Err(error),
        };
        let logged = match logged {
            Ok(logged) => logged,
            Err(error) => {
                settle(held);
                // Nothing was applied, so nothing is lost: every request is told to retry.
                self.incidents.lock().await.hold(&planned, false);
                self.settled.notify_waiters();
                for pending in batch {
                    let _ = pending.reply.send(Err(IngestError::Audit(error.clone())));
                }
                return;
            }
        };
        // In the log: applied exactly as logged, never decided again, at the time
        // the log gave it (so a replica that folds it, or a restart, sees the same).
        {
            let mut incidents = self.incidents.lock().await;
            let times = logged.iter().filter(|r| r.kind == RecordKind::Signal).map(|r| r.time_ms).chain(std::iter::repeat(now));
            for ((signal, plan), at) in owned.iter().zip(&planned).zip(times) {
                incidents.apply(signal, &plan.placement, at);
            }
            incidents.hold(&planned, false);
        }
        if let Some(held) = held {
            self.release_keys(held, logged.iter().map(|r| r.seq).max().unwrap_or(0)).await;
        }
        self.settled.notify_waiters();
        let mut seqs = logged.iter().filter(|r| r.kind == RecordKind::Signal).map(|r| r.seq);
        let mut plans = planned.iter();
        for pending in batch {
            let accepted: Vec<Accepted> = pending
                .signals
                .iter()
                .zip(plans.by_ref())
                .zip(seqs.by_ref())
                .map(|((signal, plan), audit_seq)| Accepted {
                    signal_id: signal.id.clone(),
                    fingerprint: signal.fingerprint.clone(),
                    incident_id: plan.placement.incident_id().to_owned(),
                    duplicate: matches!(plan.placement, Placement::Joined { duplicate: true, .. }),
                    audit_seq,
                })
                .collect();
            let duplicates = accepted.iter().filter(|a| a.duplicate).count() as u64;
            arf_proto::metrics::add("arf_agent_signals_total", "Signals accepted into the log, new or repeated.", &[("repeat", "false")], accepted.len() as u64 - duplicates);
            arf_proto::metrics::add("arf_agent_signals_total", "Signals accepted into the log, new or repeated.", &[("repeat", "true")], duplicates);
            let _ = pending.reply.send(Ok(accepted));
        }
        for incident in planned.iter().filter_map(|p| p.opened.as_ref()).filter(|i| i.state == IncidentState::Open) {
            arf_proto::metrics::inc("arf_agent_incidents_opened_total", "Incidents opened.", &[]);
            let agent = Arc::clone(self);
            let incident_id = incident.id.clone();
            let span = info_span!("diagnose", %incident_id);
            self.spawn_work(&incident.id, span, async move { agent.diagnose(&incident_id).await });
        }
    }

    pub async fn incidents(&self) -> Vec<Incident> {
        self.incidents.lock().await.by_id.values().cloned().collect()
    }

    /// The incident `id`: from memory, or, once it has left memory, rebuilt from
    /// its trail in the log.
    pub async fn incident(&self, id: &str) -> Result<Option<Incident>, arf_audit_client::AuditError> {
        if let Some(incident) = self.incidents.lock().await.by_id.get(id).cloned() {
            return Ok(Some(incident));
        }
        let trail = self.audit.read_incident(id).await?;
        let mut rebuilt = Incidents::new(i64::MAX);
        for record in &trail {
            // A record of ours that is not in our format rebuilds nothing.
            if rebuilt.restore_one(record).is_err() {
                return Ok(None);
            }
        }
        Ok(rebuilt.by_id.remove(id))
    }

    /// Follows the log from `from` for as long as the agent lives, so each incident
    /// shows what the governor and the executor logged about it (waiting, acting,
    /// its outcome; [`Incidents::follow`]). The agent's own records are applied
    /// where it writes them, and skipped here.
    fn follow_from(self: &Arc<Self>, from: u64) {
        use futures::StreamExt;
        let agent = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut next = from;
            loop {
                let Some((audit, replicated)) = agent.upgrade().map(|a| (a.audit.clone(), a.replicas.is_some())) else { return };
                // Only what `Incidents::follow` reads: the log leaves out the signals.
                // A replica also reads its peers' records, the signals included.
                let writers: &[&str] = if replicated { &["agent", "governor", "executor"] } else { &["governor", "executor"] };
                match audit.tail_of(next, writers, &[]).await {
                    Ok(stream) => {
                        let mut stream = std::pin::pin!(stream);
                        let mut ended = false;
                        while let Some(Ok(first)) = stream.next().await {
                            // What has arrived, in one go: which of them are this
                            // replica's own is told once for them all.
                            let mut chunk = vec![first];
                            while chunk.len() < 1024 {
                                match futures::FutureExt::now_or_never(stream.next()) {
                                    Some(Some(Ok(record))) => chunk.push(record),
                                    Some(_) => {
                                        ended = true;
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            let peers: Vec<u64> = chunk.iter().filter(|r| r.writer == "agent").map(|r| r.seq).collect();
                            let own = match audit.own() {
                                Some(own) if !peers.is_empty() => own.which(&peers).await,
                                _ => vec![true; peers.len()],
                            };
                            let mut own = own.into_iter();
                            let Some(agent) = agent.upgrade() else { return };
                            for record in chunk {
                                next = record.seq + 1;
                                if record.writer == "agent" {
                                    // A peer's record, folded as a restart would; this
                                    // replica's own were applied where it wrote them.
                                    if !own.next().unwrap_or(true)
                                        && let Err(error) = agent.incidents.lock().await.restore_one(&record)
                                    {
                                        error!(seq = record.seq, %error, "a peer's record is not in the agent's format; the incident it names may be out of date here");
                                    }
                                } else {
                                    let retry = agent.incidents.lock().await.follow(&record);
                                    if let Some(after) = retry {
                                        let (agent, incident_id) = (Arc::clone(&agent), record.incident_id.clone());
                                        tokio::spawn(async move {
                                            // With replicas, the incident's owner tries the next attempt
                                            // (or reconciling does, should this fail).
                                            if agent.owns(&incident_id).await {
                                                let (task, id, made) = (Arc::clone(&agent), incident_id.clone(), after.clone());
                                                agent.spawn_work_after(&incident_id, info_span!("next_attempt", %incident_id), Some(made), async move { task.next_attempt(&id, &after).await });
                                            }
                                        });
                                    }
                                }
                                agent.followed.send_replace(record.seq);
                            }
                            if ended {
                                break;
                            }
                        }
                    }
                    Err(error) => tracing::debug!(%error, "cannot follow the log yet; retrying"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    /// Lets done incidents leave memory, now and then, for as long as the agent lives.
    pub fn evict_periodically(self: &Arc<Self>) {
        let agent = Arc::downgrade(self);
        let every = std::time::Duration::from_millis(u64::try_from(self.retain_ms / 4).unwrap_or(0).clamp(1_000, 60_000));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(agent) = agent.upgrade() else { return };
                let left = agent.incidents.lock().await.evict(arf_core::time::now_ms(), agent.retain_ms);
                if left > 0 {
                    tracing::debug!(left, "done incidents left memory; their trails stay in the log");
                }
            }
        });
    }

    async fn set_state(&self, incident_id: &str, state: IncidentState, reason: &str, decision_id: Option<&str>) {
        let mut incidents = self.incidents.lock().await;
        if let Some(incident) = incidents.by_id.get_mut(incident_id) {
            // Only forward: a resolution that arrived meanwhile wins over the
            // pipeline's view, and so does an outcome the log already told.
            if incident.advance(state) {
                reason.clone_into(&mut incident.reason);
            }
            if matches!(state, IncidentState::Proposed | IncidentState::Escalated) {
                incident.pipeline_done = true;
            }
            // Escalated is settled; a proposal is not until its outcome (a rollback
            // brings a next attempt), which reconciling finds.
            if state == IncidentState::Escalated
                && let Some(replicas) = &self.replicas
            {
                let (replicas, incident_id) = (Arc::clone(replicas), incident_id.to_owned());
                tokio::spawn(async move { replicas.finished(&incident_id).await });
            }
            if let Some(id) = decision_id
                && !incident.decision_ids.iter().any(|d| d == id)
            {
                incident.decision_ids.push(id.to_owned());
            }
        }
    }

    /// Whether every alert of the incident has resolved (or it is gone).
    async fn resolved(&self, incident_id: &str) -> bool {
        self.incidents.lock().await.by_id.get(incident_id).is_none_or(|i| i.state == IncidentState::Resolved)
    }

    /// Escalates to a human: logged, and nothing is proposed. An incident whose
    /// alerts all resolved meanwhile needs no one, and is left resolved.
    /// Returns the escalation's record, once logged.
    async fn escalate(&self, incident_id: &str, reason: &str) -> Option<u64> {
        if self.resolved(incident_id).await {
            info!(%incident_id, %reason, "not escalated: every alert of the incident resolved meanwhile");
            return None;
        }
        warn!(%incident_id, %reason, "incident escalated");
        let payload = records::encode(&IncidentRecord::escalated(reason));
        let logged = match self.audit.append_one(incident_id, RecordKind::Incident, payload).await {
            Ok(record) => Some(record.seq),
            // The log refused this replica (its lease lapsed): the incident is no
            // longer its own, and is left as it was for whoever takes it over.
            Err(error @ AuditError::Fenced(_)) => {
                error!(%incident_id, %error, "cannot log the escalation, since this replica's lease does not hold; the incident is left to the replica that takes it over");
                return None;
            }
            Err(error) => {
                error!(%incident_id, %error, "cannot log the escalation");
                None
            }
        };
        self.set_state(incident_id, IncidentState::Escalated, reason, None).await;
        if let Some(incident) = self.incidents.lock().await.by_id.get_mut(incident_id) {
            // A person has it now: no follow-up of an earlier decision is due (as the
            // `escalated` record says to a rebuild; a fenced one returned above).
            incident.retry_after = None;
        }
        logged
    }

    /// Targets offered for an incident: only those in its scope, its own service's
    /// (in its environment) first, then their declared dependencies. An action on
    /// anything else has no incident to answer for, so the model never sees it.
    fn offered_targets(&self, incident: &Incident) -> Vec<String> {
        let services = std::collections::BTreeSet::from([incident.service.clone()]);
        let environments = std::collections::BTreeSet::from([incident.environment.clone()]);
        let mut targets: Vec<(bool, String)> = self
            .inventory
            .keys()
            .filter_map(|name| match arf_core::target::relation(&self.inventory, &services, &environments, name) {
                arf_core::target::Relation::IncidentService => Some((false, name.clone())),
                arf_core::target::Relation::Dependency { .. } => Some((true, name.clone())),
                arf_core::target::Relation::OutOfScope => None,
            })
            .collect();
        targets.sort();
        targets.into_iter().map(|(_, name)| name).collect()
    }

    async fn diagnose(&self, incident_id: &str) {
        // A new incident gathers what arrives within `group_wait` of its opening.
        if !self.group_wait.is_zero() {
            let opened_at_ms = self.incidents.lock().await.by_id.get(incident_id).map(|i| i.opened_at_ms);
            if let Some(opened_at_ms) = opened_at_ms {
                let waited = u64::try_from(arf_core::time::now_ms().saturating_sub(opened_at_ms)).unwrap_or(0);
                let wait = self.group_wait.saturating_sub(std::time::Duration::from_millis(waited));
                tokio::time::sleep(wait).await;
            }
        }
        // Incident memory: what happened in similar past incidents, from the log.
        let similar: Vec<crate::incident::Summary> = {
            let incidents = self.incidents.lock().await;
            let Some(incident) = incidents.by_id.get(incident_id) else { return };
            context::similar(incident, &incidents, 3)
        };
        // Read at once, not one after the other: each is a round trip to the log.
        let reads = similar.iter().map(|other| async move { (other, self.audit.read_incident(&other.id).await) });
        let mut past = Vec::with_capacity(similar.len());
        for (other, read) in futures::future::join_all(reads).await {
            match read {
                Ok(trail) => past.push(context::past_outcome(other, &trail)),
                Err(error) => warn!(%incident_id, past = %other.id, %error, "cannot read a past incident's trail"),
            }
        }
        // Diagnosing again after an attempt: what each earlier action of the incident
        // met, so the model sees why it did not work, and what was tried, so the same
        // action is not proposed twice.
        let (attempts, tried) = if self.incidents.lock().await.by_id.get(incident_id).is_some_and(|i| !i.decision_ids.is_empty()) {
            match self.audit.read_incident(incident_id).await {
                Ok(trail) => (context::attempts(&trail, &self.redactor), context::tried(&trail, "agent")),
                Err(error) => {
                    self.escalate(incident_id, &format!("cannot read the incident's earlier attempts to diagnose it again: {error}")).await;
                    return;
                }
            }
        } else {
            (Vec::new(), Vec::new())
        };
        // With replicas: the snapshot is taken under the incident's grouping key, once
        // what peers logged for the key is in, and logged before the key is given
        // back, so no peer places a signal around it otherwise than one agent would.
        let held = match &self.replicas {
            Some(replicas) => {
                let key = self.incidents.lock().await.by_id.get(incident_id).map(Incident::key_name);
                let Some(key) = key else { return };
                let mut backoff = std::time::Duration::from_millis(500);
                let held = loop {
                    match self.hold_keys(replicas, std::slice::from_ref(&key)).await {
                        Ok(held) => break Some(held),
                        Err(error) if backoff < std::time::Duration::from_secs(8) => {
                            warn!(%incident_id, %error, "cannot hold the incident's grouping key yet; trying again");
                            tokio::time::sleep(backoff).await;
                            backoff *= 2;
                        }
                        Err(error) => {
                            // Still this replica's and unfinished: reconciling resumes it.
                            error!(%incident_id, %error, "cannot hold the incident's grouping key among the agent replicas; its diagnosis waits");
                            break None;
                        }
                    }
                };
                let Some(held) = held else { return };
                // Taken over while it waited for the key: no longer this replica's.
                if !self.owns(incident_id).await {
                    warn!(%incident_id, "this agent replica no longer owns the incident: it takes no snapshot");
                    return;
                }
                Some(held)
            }
            None => None,
        };
        let prepared = loop {
            let mut incidents = self.incidents.lock().await;
            let Some(incident) = incidents.by_id.get(incident_id).cloned() else { return };
            // Signals planned into this incident but not yet logged would miss the
            // snapshot: wait until their batch is applied (or given up).
            if incident.in_flight > 0 {
                let settled = self.settled.notified();
                let mut settled = std::pin::pin!(settled);
                settled.as_mut().enable();
                drop(incidents);
                settled.await;
                continue;
            }
            // Every alert resolved before the diagnosis began: nothing to diagnose.
            if incident.state == IncidentState::Resolved {
                info!(%incident_id, "not diagnosed: every alert of the incident resolved first");
                return;
            }
            if incident.diagnoses >= self.max_diagnoses {
                drop(incidents);
                // Under the key's locks, checked as for any append (they were marked as appending when taken).
                if let Some(held) = &held
                    && let Err(error) = held.appending().await
                {
                    error!(%incident_id, %error, "cannot escalate the incident among the agent replicas; reconciling tries again");
                    return;
                }
                let escalated = self.escalate(incident_id, "the incident reached its bound on diagnoses").await;
                // The escalation changes what the incident takes: the key's next holder reads it.
                if let (Some(held), Some(seq)) = (held, escalated) {
                    self.release_keys(held, seq).await;
                }
                return;
            }
            let snapshot = context::snapshot(&incident, &incidents, &self.inventory, &self.redactor, self.budget, (&attempts, &past));
            if let Some(stored) = incidents.by_id.get_mut(incident_id) {
                stored.diagnoses += 1;
                stored.state = IncidentState::Diagnosing;
                stored.snapshot_hash = snapshot.hash();
                stored.retry_after = None;
            }
            break (incident, snapshot);
        };
        let (incident, snapshot) = prepared;
        let snapshot_hash = snapshot.hash();
        let snapshot_record = records::encode(&SnapshotRecord { hash: snapshot_hash.clone(), snapshot: snapshot.clone(), extends: None });
        // With replicas: the lease must be live and the locks still held, and the
        // snapshot is appended under the key's token. A replica that lost either
        // logs nothing more for the incident here: a peer may already place signals
        // into it as the log shows it (not yet diagnosing), so it is left as the log
        // shows it, and taken up again when this replica reconciles what it owns
        // (or by a peer, once this replica's lease lapsed).
        let lost = match &held {
            Some(held) => match held.appending().await {
                Ok(()) => None,
                Err(error) => Some(error.to_string()),
            },
            None => None,
        };
        let logged = match lost {
            Some(error) => Err(AuditError::Fenced(error)),
            None => {
                let audit = held.as_ref().map_or_else(|| self.audit.clone(), |held| self.audit.under_keys(&held.tokens));
                audit.append_one(incident_id, RecordKind::Snapshot, snapshot_record).await
            }
        };
        match logged {
            Ok(record) => {
                if let Some(held) = held {
                    self.release_keys(held, record.seq).await;
                }
            }
            Err(AuditError::Fenced(error)) if self.replicas.is_some() => {
                settle(held);
                if let Some(stored) = self.incidents.lock().await.by_id.get_mut(incident_id) {
                    stored.diagnoses = incident.diagnoses;
                    stored.state = incident.state;
                    stored.snapshot_hash.clone_from(&incident.snapshot_hash);
                    stored.retry_after.clone_from(&incident.retry_after);
                }
                warn!(%incident_id, %error, "the snapshot was not logged: this replica no longer holds the incident's grouping key or its lease; the diagnosis is taken up again when it reconciles");
                return;
            }
            Err(error) => {
                settle(held);
                self.escalate(incident_id, &format!("cannot log the snapshot, so no diagnosis ran: {error}")).await;
                return;
            }
        }
        let targets = self.offered_targets(&incident);
        let target_offers: Vec<Value> = targets
            .iter()
            .filter_map(|name| {
                self.inventory.get(name).map(|t| {
                    let relation = if t.service == incident.service { "incident_service" } else { "dependency" };
                    json!({"name": name, "kind": t.kind, "service": t.service, "environment": t.environment, "relation": relation})
                })
            })
            .collect();
        let pathways: Vec<Value> = self.catalog.pathways().map(arf_core::catalog::Pathway::offer).collect();
        let session = self.investigator.as_deref().map(|investigator| {
            let reach = crate::investigate::Reach {
                incident_id,
                service: &incident.service,
                environment: &incident.environment,
                snapshot_hash: &snapshot_hash,
                targets: &targets,
            };
            crate::investigate::Session::new(investigator, reach, &self.inventory, &self.redactor, &self.audit, &self.incidents)
        });
        let tools = session.as_ref().map(crate::investigate::Session::offers).unwrap_or_default();
        let prompt = match prompt::render(&snapshot, &pathways, &target_offers, &tools) {
            Ok(prompt) => prompt,
            Err(error) => {
                self.escalate(incident_id, &format!("cannot render the prompt: {error}")).await;
                return;
            }
        };
        tracing::debug!(system = %prompt.system, user = %prompt.user, "prompt");
        let base = DiagnosisRecord::attempt(&prompt.id, &prompt.hash, &snapshot_hash, "");
        let mut reasoner = Arc::clone(&self.reasoner);
        let mut fallback = self.fallback.clone();
        let mut attempts: Vec<Attempt> = Vec::new();
        // What the answer is grounded in and the proposal cites: the snapshot, or the
        // snapshot extended with the investigation's results (logged before use).
        let mut cited = (snapshot.clone(), snapshot_hash.clone());
        let (grounded, mut payload) = loop {
            // With replicas: not once another replica has taken the incident over.
            if !self.owns(incident_id).await {
                warn!(%incident_id, "this agent replica no longer owns the incident: it asks the model nothing more");
                return;
            }
            if !self.take_model_call(incident_id).await {
                self.escalate(incident_id, &format!("the incident reached its bound of {} model calls", self.max_model_calls)).await;
                return;
            }
            let request = DiagnosisRequest {
                snapshot: &snapshot,
                prompt: &prompt,
                targets: &targets,
                pathways: &pathways,
                repairs: &attempts,
                investigation: session.as_ref().filter(|_| !tools.is_empty()),
                model_calls_left: self.model_calls_left(incident_id).await,
            };
            let mut payload = base.clone();
            reasoner.name().clone_into(&mut payload.reasoner);
            payload.attempt = u32::try_from(attempts.len() + 1).unwrap_or(u32::MAX);
            let completion = match reasoner.diagnose(&request).await {
                Ok(completion) => completion,
                Err(error) => {
                    payload.status = DiagnosisStatus::Failed;
                    arf_proto::metrics::inc("arf_agent_diagnoses_total", "Diagnoses, by how they ended: grounded (a proposal), refused (the model's answer failed grounding) or failed.", &[("status", "failed")]);
                    payload.error = Some(error.to_string());
                    let next = match (&error, fallback.take()) {
                        (ReasonerError::Unavailable(_), Some(next)) => {
                            payload.fallback = Some(next.name().to_owned());
                            Some(next)
                        }
                        _ => None,
                    };
                    if let Err(log_error) = self.audit.append_one(incident_id, RecordKind::Diagnosis, records::encode(&payload)).await {
                        self.escalate(incident_id, &format!("cannot log the failed diagnosis: {log_error}")).await;
                        return;
                    }
                    match next {
                        Some(next) => {
                            warn!(%incident_id, %error, fallback = next.name(), "reasoner unavailable; falling back");
                            reasoner = next;
                            attempts.clear();
                            continue;
                        }
                        None => {
                            self.escalate(incident_id, &format!("diagnosis failed: {error}")).await;
                            return;
                        }
                    }
                }
            };
            if let Some(extended) = match &session {
                Some(session) => session.extend(&snapshot).await,
                None => None,
            } {
                let hash = extended.hash();
                if hash != cited.1 {
                    let record = SnapshotRecord { hash: hash.clone(), snapshot: extended.clone(), extends: Some(snapshot_hash.clone()) };
                    if let Err(error) = self.audit.append_one(incident_id, RecordKind::Snapshot, records::encode(&record)).await {
                        self.escalate(incident_id, &format!("cannot log the investigation's results, so nothing was proposed: {error}")).await;
                        return;
                    }
                    cited = (extended, hash);
                }
            }
            payload.snapshot_hash.clone_from(&cited.1);
            // The model requests its tool calls took count against the incident's bound too.
            if completion.tool_rounds > 0 {
                payload.tool_rounds = completion.tool_rounds;
                if let Some(incident) = self.incidents.lock().await.by_id.get_mut(incident_id) {
                    incident.model_calls = incident.model_calls.saturating_add(completion.tool_rounds);
                }
            }
            tracing::debug!(completion = %completion.text, model = %completion.model, "completion");
            payload.model = Some(completion.model.clone());
            payload.served_by.clone_from(&completion.served_by);
            payload.prompt_tokens = Some(completion.prompt_tokens);
            payload.completion_tokens = Some(completion.completion_tokens);
            payload.latency_ms = Some(completion.latency_ms);
            payload.json_mode = Some(completion.json_mode);
            payload.completion = Some(completion.text.clone());
            payload.injected_mistake.clone_from(&completion.injected_mistake);
            let result = if completion.problems.is_empty() {
                ground::ground(&completion.text, &cited.0, &self.catalog, &self.inventory, &targets)
            } else {
                Err(ground::Refusal { reasons: completion.problems.clone() })
            };
            match result {
                Ok(grounded) => break (grounded, payload),
                Err(refusal) => {
                    payload.status = DiagnosisStatus::Refused;
                    arf_proto::metrics::inc("arf_agent_diagnoses_total", "Diagnoses, by how they ended: grounded (a proposal), refused (the model's answer failed grounding) or failed.", &[("status", "refused")]);
                    payload.reasons.clone_from(&refusal.reasons);
                    if let Err(error) = self.audit.append_one(incident_id, RecordKind::Diagnosis, records::encode(&payload)).await {
                        self.escalate(incident_id, &format!("cannot log the refused diagnosis: {error}")).await;
                        return;
                    }
                    attempts.push(Attempt { completion: completion.text, reasons: refusal.reasons.clone() });
                    let allowed = usize::try_from(reasoner.repairs()).unwrap_or(0);
                    if attempts.len() > allowed {
                        let after = if attempts.len() > 1 { format!(" after {} repairs", attempts.len() - 1) } else { String::new() };
                        self.escalate(incident_id, &format!("the model's answer was refused{after}: {refusal}")).await;
                        return;
                    }
                }
            }
        };
        let reasoner_name = reasoner.name().to_owned();
        let Some((hypothesis, remediation)) = grounded.choice_untried(&tried, &self.catalog) else {
            payload.status = DiagnosisStatus::Grounded;
            arf_proto::metrics::inc("arf_agent_diagnoses_total", "Diagnoses, by how they ended: grounded (a proposal), refused (the model's answer failed grounding) or failed.", &[("status", "grounded")]);
            payload.hypotheses.clone_from(&grounded.hypotheses);
            if let Err(error) = self.audit.append_one(incident_id, RecordKind::Diagnosis, records::encode(&payload)).await {
                error!(%incident_id, %error, "cannot log the diagnosis");
            }
            let why = if grounded.choice().is_some() {
                "the model proposed again only actions this incident already tried; a human should look"
            } else {
                "no remediation was proposed; a human should look"
            };
            self.escalate(incident_id, why).await;
            return;
        };
        let environment = self
            .inventory
            .get(&remediation.target)
            .map_or_else(|| incident.environment.clone(), |t| t.environment.clone());
        let proposal = Proposal {
            id: random_id("prop"),
            incident_id: incident_id.to_owned(),
            snapshot_hash: cited.1.clone(),
            hypothesis: hypothesis.clone(),
            remediation: remediation.clone(),
            service: incident.service.clone(),
            environment,
            reasoner: reasoner_name,
        };
        payload.status = DiagnosisStatus::Grounded;
        arf_proto::metrics::inc("arf_agent_diagnoses_total", "Diagnoses, by how they ended: grounded (a proposal), refused (the model's answer failed grounding) or failed.", &[("status", "grounded")]);
        payload.hypotheses.clone_from(&grounded.hypotheses);
        // Every alert resolved while the model was thinking: the diagnosis is logged,
        // and nothing is proposed for a failure that is gone.
        if self.resolved(incident_id).await {
            if let Err(error) = self.audit.append_one(incident_id, RecordKind::Diagnosis, records::encode(&payload)).await {
                error!(%incident_id, %error, "cannot log the diagnosis");
            }
            info!(%incident_id, "nothing proposed: every alert of the incident resolved during its diagnosis");
            return;
        }
        payload.proposal = Some(proposal.clone());
        // Write-ahead: the proposal is in the log before the governor sees it.
        if let Err(error) = self.audit.append_one(incident_id, RecordKind::Diagnosis, records::encode(&payload)).await {
            self.escalate(incident_id, &format!("cannot log the diagnosis, so nothing was proposed: {error}")).await;
            return;
        }
        self.propose(incident_id, proposal).await;
    }

    /// After `after_decision`'s action failed verification and was rolled back, or
    /// was refused by its pathway's precheck:
    /// proposes the next hypothesis of the incident's last grounded diagnosis whose
    /// action was not tried yet, without asking the model again. Logged first (a
    /// `reattempt` record, then a diagnosis record carrying the proposal, which is
    /// what the governor checks it against); policy sees it as a later attempt. With
    /// no such hypothesis, the incident is diagnosed again, its earlier attempts and
    /// what they met (the precheck's answer, the failed verification) in the
    /// snapshot, within the bound on diagnoses; past that bound, it is escalated.
    async fn next_attempt(&self, incident_id: &str, after_decision: &str) {
        arf_core::crash::point("agent.before_next_attempt");
        // Once per refusal or rollback: a follow-up already logged (by a task that
        // raced this one here, or before a restart) is not made again.
        if self.follow_up_due(incident_id).await.as_deref() != Some(after_decision) {
            info!(%incident_id, %after_decision, "no follow-up of this decision is due");
            return;
        }
        let trail = match self.audit.read_incident(incident_id).await {
            Ok(trail) => trail,
            Err(error) => {
                self.escalate(incident_id, &format!("decision `{after_decision}` did not fix the incident (rolled back, or refused by its precheck), and the incident's diagnosis could not be read for a next attempt: {error}")).await;
                return;
            }
        };
        // Every decision the governor made for the incident counts, as it does for the governor.
        let (attempt, diagnoses) = self
            .incidents
            .lock()
            .await
            .by_id
            .get(incident_id)
            .map_or((2, 0), |i| (u32::try_from(i.decision_ids.len()).unwrap_or(u32::MAX).saturating_add(1), i.diagnoses));
        // Refusals are followed up whatever the attempts left, but each later proposal asks a person: as many
        // refusals are followed up as the incident may have diagnoses, no more.
        let refusals = trail
            .iter()
            .filter(|r| r.writer == "executor" && r.kind == RecordKind::Outcome && r.payload.get("outcome").and_then(serde_json::Value::as_str) == Some("refused"))
            .count();
        if refusals > usize::try_from(self.max_diagnoses).unwrap_or(usize::MAX) {
            self.escalate(incident_id, &format!("{refusals} of the incident's actions were refused by their prechecks, more than its bound of {} diagnoses allows to follow up", self.max_diagnoses)).await;
            return;
        }
        let Some((diagnosis, proposal)) = next_hypothesis(&trail, "agent", &self.inventory, &self.catalog) else {
            if diagnoses >= self.max_diagnoses {
                self.escalate(incident_id, &format!("decision `{after_decision}` did not fix the incident (rolled back, or refused by its precheck), no other grounded hypothesis proposes a different action, and the incident reached its bound of {} diagnoses", self.max_diagnoses)).await;
                return;
            }
            // Logged first, so a restart before the new snapshot diagnoses again too.
            let reason = format!("no other grounded hypothesis of the diagnosis proposes a different action: diagnosing again with what decision `{after_decision}` met in view");
            let marker = records::encode(&IncidentRecord::Reattempt { state: "diagnosing".to_owned(), after_decision: after_decision.to_owned(), attempt, reason });
            if let Err(error) = self.audit.append_one(incident_id, RecordKind::Incident, marker).await {
                self.escalate(incident_id, &format!("cannot log the next attempt, so nothing was diagnosed again: {error}")).await;
                return;
            }
            info!(%incident_id, %after_decision, attempt, "diagnosing again after an attempt that did not fix the incident");
            self.diagnose(incident_id).await;
            return;
        };
        let reason = format!("`{}` on `{}`: {}", proposal.remediation.pathway, proposal.remediation.target, proposal.hypothesis.root_cause);
        let marker = records::encode(&IncidentRecord::Reattempt { state: "diagnosing".to_owned(), after_decision: after_decision.to_owned(), attempt, reason });
        if let Err(error) = self.audit.append_one(incident_id, RecordKind::Incident, marker).await {
            self.escalate(incident_id, &format!("cannot log the next attempt, so nothing was proposed: {error}")).await;
            return;
        }
        let payload = DiagnosisRecord { proposal: Some(proposal.clone()), after_decision: Some(after_decision.to_owned()), completion: None, ..diagnosis };
        // Write-ahead, as for the first proposal.
        if let Err(error) = self.audit.append_one(incident_id, RecordKind::Diagnosis, records::encode(&payload)).await {
            self.escalate(incident_id, &format!("cannot log the next attempt's proposal, so nothing was proposed: {error}")).await;
            return;
        }
        if let Some(incident) = self.incidents.lock().await.by_id.get_mut(incident_id) {
            incident.retry_after = None;
        }
        info!(%incident_id, %after_decision, attempt, pathway = %proposal.remediation.pathway, "proposing the next hypothesis");
        self.propose(incident_id, proposal).await;
    }

    /// Sends a logged proposal to the governor and logs its answer. The `proposed`
    /// record is what tells a restarted agent the proposal was answered, so its
    /// append is retried (about half a minute) before the incident is escalated.
    async fn propose(&self, incident_id: &str, proposal: Proposal) {
        if !self.owns(incident_id).await {
            warn!(%incident_id, proposal_id = %proposal.id, "this agent replica no longer owns the incident: it proposes nothing");
            return;
        }
        match self.governor.evaluate(&proposal).await {
            Ok(decision) => {
                info!(%incident_id, decision_id = %decision.decision_id, route = %decision.route, "proposal evaluated");
                arf_core::crash::point("agent.decision_received");
                let payload = records::encode(&IncidentRecord::proposed(&proposal.id, &decision.decision_id, &decision.route));
                let mut backoff = std::time::Duration::from_millis(100);
                let mut logged = false;
                for _ in 0..10 {
                    match self.audit.append_one(incident_id, RecordKind::Incident, payload.clone()).await {
                        Ok(_) => {
                            logged = true;
                            break;
                        }
                        Err(error) => {
                            warn!(%incident_id, %error, "cannot log the proposal's decision yet; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                        }
                    }
                }
                if !logged {
                    self.escalate(incident_id, &format!("the governor made decision `{}`, but the log would not take it", decision.decision_id)).await;
                    return;
                }
                let reason = format!("governor routed decision `{}` as `{}`", decision.decision_id, decision.route);
                self.set_state(incident_id, IncidentState::Proposed, &reason, Some(&decision.decision_id)).await;
            }
            Err(error) => {
                self.escalate(incident_id, &format!("the governor did not take the proposal: {error}")).await;
            }
        }
    }
}

/// The next action to try for an incident whose latest action rolled back: in the
/// incident's last grounded diagnosis (by `writer`), the first hypothesis, in the
/// order grounding kept them, with a remediation no proposal of the incident has
/// tried; as a proposal like the diagnosis's own (same snapshot, reasoner and
/// service), with that diagnosis's record for the new one to copy.
pub fn next_hypothesis(trail: &[arf_audit_client::Record], writer: &str, inventory: &Inventory, catalog: &Catalog) -> Option<(DiagnosisRecord, Proposal)> {
    let tried = context::tried(trail, writer);
    let mut last = None;
    for record in trail.iter().filter(|r| r.writer == writer && r.kind == RecordKind::Diagnosis) {
        let Ok(diagnosis) = record.parse::<DiagnosisRecord>() else { continue };
        if diagnosis.status == DiagnosisStatus::Grounded && diagnosis.after_decision.is_none() && diagnosis.proposal.is_some() {
            last = Some(diagnosis);
        }
    }
    let diagnosis = last?;
    let first = diagnosis.proposal.clone()?;
    let (hypothesis, remediation) = crate::ground::Grounded { hypotheses: diagnosis.hypotheses.clone() }.choice_untried(&tried, catalog).map(|(h, r)| (h.clone(), r.clone()))?;
    let proposal = Proposal {
        id: random_id("prop"),
        incident_id: first.incident_id.clone(),
        snapshot_hash: diagnosis.snapshot_hash.clone(),
        hypothesis: hypothesis.clone(),
        remediation: remediation.clone(),
        service: first.service.clone(),
        environment: inventory.get(&remediation.target).map_or_else(|| first.environment.clone(), |t| t.environment.clone()),
        reasoner: first.reasoner.clone(),
    };
    Some((diagnosis, proposal))
}

/// Why the agent could not rebuild its state from the log.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The log did not answer; worth retrying.
    #[error(transparent)]
    Audit(AuditError),
    /// One of the agent's own records is not what the agent writes; retrying reads it again.
    #[error(transparent)]
    Malformed(Malformed),
}

/// Per incident, the last grounded proposal the agent logged and whether a
/// `proposed` record answers it, folded from the log at a restart: an unanswered
/// one means a crash (or an audit outage) came between the two.
#[derive(Default)]
struct Proposals {
    last: std::collections::HashMap<String, (Proposal, bool)>,
}

impl Proposals {
    fn add(&mut self, record: &arf_audit_client::Record, agent_writer: &str) -> Result<(), Malformed> {
        if record.writer != agent_writer {
            return Ok(());
        }
        match record.kind {
            RecordKind::Diagnosis => {
                let diagnosis: DiagnosisRecord = record.parse()?;
                if let Some(proposal) = diagnosis.proposal {
                    self.last.insert(record.incident_id.clone(), (proposal, false));
                }
            }
            RecordKind::Incident => {
                if let IncidentRecord::Proposed { proposal_id, .. } = record.parse()?
                    && let Some((proposal, answered)) = self.last.get_mut(&record.incident_id)
                    && proposal.id == proposal_id
                {
                    *answered = true;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Forgets the proposals of incidents that left memory: they are done.
    fn keep_held(&mut self, incidents: &Incidents) {
        self.last.retain(|id, _| incidents.by_id.contains_key(id));
    }

    /// As a state snapshot keeps them, in incident order.
    fn stored(&self) -> Vec<(String, Proposal, bool)> {
        let mut stored: Vec<_> = self.last.iter().map(|(id, (p, answered))| (id.clone(), p.clone(), *answered)).collect();
        stored.sort_by(|a, b| a.0.cmp(&b.0));
        stored
    }

    fn load(&mut self, stored: Vec<(String, Proposal, bool)>) {
        self.last = stored.into_iter().map(|(id, p, answered)| (id, (p, answered))).collect();
    }

    fn unanswered(&self, incident_id: &str) -> Option<Proposal> {
        self.last.get(incident_id).filter(|(_, answered)| !answered).map(|(proposal, _)| proposal.clone())
    }
}
