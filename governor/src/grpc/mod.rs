//! The `Governor` gRPC service: authentication, write-ahead logging, oversight and dispatch.
//!
//! Decisions live in memory and are rebuilt from the governor's own audit records
//! at start: a pending decision can still be approved after a restart, and one
//! authorized before it learns its outcome from the executor.

pub(crate) mod convert;
mod dispatch;
mod guard;
mod state;
mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, RwLock};
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};
use tracing::{Instrument, field, info, info_span, warn};

use arf_audit_client::{AuditClient, RecordKind};
use arf_core::catalog::Catalog;
use arf_core::decision::Route;
use arf_core::diagnosis::Proposal;
use arf_core::records::{self, ApprovalRecord, AuthorizedRecord, DecidedRecord, DecisionStateRecord, GovernanceEvent};
use arf_core::target::Inventory;
use arf_proto::v1 as pb;
use arf_proto::v1::executor_client::ExecutorClient;
use arf_proto::v1::governor_server::{Governor, GovernorServer};

use crate::backing::IncidentScope;
use crate::config::Config;
use crate::decide::{self, Governance};
use crate::decision::{self, Approval, Decision, Progress, State, Verdict};
use crate::guard::{GuardRails, GuardState};
use crate::identity::Caller;
use crate::policy::{FreezeWindow, Policies, PolicyInput};
use crate::risk::RiskWeights;

/// The governor's clock, in Unix milliseconds. Tests pass a clock they control.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

type Entry = Arc<Mutex<Decision>>;

/// Everything the handlers and the dispatch tasks share.
pub(crate) struct Shared {
    /// Who may call the governor; the authentication layer holds its own copy.
    callers: arf_core::identity::Identities,
    catalog: Catalog,
    targets: Inventory,
    environments: BTreeMap<String, f64>,
    weights: RiskWeights,
    /// The bundle serving now; a reload swaps it whole, or not at all.
    policies: std::sync::RwLock<Arc<Policies>>,
    policies_dir: PathBuf,
    guard_rails: GuardRails,
    freezes: Vec<FreezeWindow>,
    /// The guard rails' memory; saved to `guard_path` after every change. Never
    /// held across an `.await`.
    guard: std::sync::Mutex<GuardState>,
    guard_path: PathBuf,
    /// Decisions are made one at a time, so that two cannot both take the last
    /// autonomous action a service's rate limit allows.
    deciding: Mutex<()>,
    /// Judgements are given one at a time: a decision read back from the log for
    /// each request is a copy of its own, so only this keeps two requests from
    /// both finding it unjudged and both counting.
    judging: Mutex<()>,
    decision_ttl_ms: i64,
    audit: AuditClient,
    executor: Executors,
    key: ed25519_dalek::SigningKey,
    clock: Clock,
    decisions: RwLock<BTreeMap<String, Entry>>,
    /// Set once the decisions of earlier runs have been rebuilt from the log.
    restored: std::sync::atomic::AtomicBool,
    /// Action key ([`decision::action_key`]) → the decisions made for it, oldest first.
    actions: Mutex<BTreeMap<String, Vec<String>>>,
    /// The governor's witness of the log, when the log's key is configured.
    witness: Option<arf_audit_client::witness::Witness>,
    /// The writer identity whose records back proposals (the agent's).
    agent_writer: String,
    /// How long an autonomous decision may wait to run, after a crash, before it expires.
    settle_ms: i64,
    calibration: crate::calibration::Prior,
    modes: Vec<crate::graduation::ModeRule>,
    graduation: crate::graduation::Graduation,
    /// How long a settled decision stays in memory after it expired.
    retain_ms: i64,
    /// Where the decisions that left memory are in the log.
    evicted: std::sync::Mutex<decision::Evicted>,
    /// Authorized decisions this process withdrew (logged so), with why, until settled.
    withdrawn: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The state snapshot restarts start from (`crate::snapshot`).
    snapshots: state::Snapshots,
    /// Tells people what the log cannot: that a witness refused it.
    alarm: crate::notify::Alarm,
    /// Decision id → the trace context of the proposal it answers, so that its
    /// dispatch, after an approval perhaps, continues the incident's trace (only
    /// while traces are exported; bounded).
    traces: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// One of several replicas (`governor.postgres`): only the one holding the
    /// leader's lease acts; the others stand by and refuse every call. Then this
    /// process's incarnation, made at start, under which it takes the lead when
    /// it can; every append of it is fenced by it, so the log takes them only
    /// while this process holds the leader's lease ([`AuditClient::fenced`]).
    incarnation: Option<String>,
    /// The leader's lease, once this replica holds it.
    leadership: std::sync::OnceLock<Arc<arf_pg::lease::Lease>>,
    /// With replicas, where the leader's guard-rail state goes after each change
    /// ([`Shared::share_guard_state`]).
    guard_sync: std::sync::OnceLock<tokio::sync::watch::Sender<GuardState>>,
    /// The health reporter: a replica reports `arf.v1.Governor` SERVING once it leads.
    health: std::sync::OnceLock<tonic_health::server::HealthReporter>,
}

impl Shared {
    fn load(config: &Config, clock: Clock, tls: &arf_proto::tls::Loaded, alarm: crate::notify::Alarm) -> anyhow::Result<Self> {
        let callers = config.load_identities()?;
        let catalog = Catalog::load_dir(&config.catalog_dir)?;
        let policies = Policies::load_dir(&config.policies_dir)?;
        let freezes = config.guard_rails.freezes().map_err(|(field, message)| {
            anyhow::anyhow!("`governor.{field}`: {message}")
        })?;
        let guard_path = crate::guard::state_path(&config.data_dir);
        let guard = crate::guard::load(&guard_path)?;
        let audit_token = arf_core::keys::load_token(&config.audit_token_file)?;
        let audit = AuditClient::connect_dial(&config.audit_addr, Some(audit_token), &tls.dial(arf_core::identity::Role::Audit))?;
        let incarnation = config.postgres.as_ref().map(|_| format!("{}/{}", replica_name(config), arf_core::canonical::random_id("gov")));
        let audit = match &incarnation {
            Some(incarnation) => audit.fenced(LEADER, incarnation),
            None => audit,
        };
        // Replicas sign with one key the executors trust: a replica that made a key
        // of its own would have every dispatch after a failover refused.
        let key = match &config.postgres {
            Some(_) => arf_core::keys::load_signing(&config.signing_key_file)
                .with_context(|| format!("`governor.signing_key_file` `{}`: governor replicas share one signing key, copied to each host (none is made here)", config.signing_key_file.display()))?,
            None => arf_core::keys::load_or_generate(&config.signing_key_file)?,
        };
        let executor_token = match &config.executor_token_file {
            Some(file) => Some(arf_core::keys::load_token(file).map_err(|e| anyhow::anyhow!("`governor.executor_token_file`: {e}"))?),
            None => None,
        };
        let executor = Executors::new(&config.executor_addr, executor_token.as_deref(), &tls.dial(arf_core::identity::Role::Executor))?;
        let witness = match &config.audit_checkpoint_key {
            Some(path) => {
                let key = arf_core::keys::load_trusted(path)
                    .map_err(|e| anyhow::anyhow!("`governor.audit_checkpoint_key`: {e}"))?
                    .key;
                let verifier = arf_audit_client::checkpoint::NoteVerifier::new(config.audit_checkpoint_origin.clone(), key);
                Some(arf_audit_client::witness::Witness::open(&config.data_dir.join("witness").join("checkpoint"), verifier)?)
            }
            None => {
                tracing::warn!("`governor.audit_checkpoint_key` is not set: this governor does not witness the log's checkpoints");
                None
            }
        };
        Ok(Self {
            witness,
            agent_writer: config.agent_writer.clone(),
            settle_ms: i64::try_from(config.settle_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            calibration: config.calibration.clone(),
            modes: config.modes.clone(),
            graduation: config.graduation.clone(),
            retain_ms: i64::try_from(config.retain_decisions_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            evicted: std::sync::Mutex::new(decision::Evicted::default()),
            withdrawn: std::sync::Mutex::new(std::collections::HashMap::new()),
            snapshots: state::Snapshots {
                dir: config.data_dir.clone(),
                every_records: config.snapshot_every_records,
                check_every: Duration::from_secs(config.snapshot_check_secs),
                through: std::sync::atomic::AtomicU64::new(0),
                looked_at: std::sync::atomic::AtomicU64::new(0),
                writing: tokio::sync::Mutex::new(()),
            },
            alarm,
            traces: std::sync::Mutex::default(),
            callers,
            catalog,
            targets: config.targets.clone(),
            environments: config.environments.clone(),
            weights: config.risk.clone(),
            policies: std::sync::RwLock::new(Arc::new(policies)),
            policies_dir: config.policies_dir.clone(),
            guard_rails: config.guard_rails.clone(),
            freezes,
            guard: std::sync::Mutex::new(guard),
            guard_path,
            deciding: Mutex::new(()),
            judging: Mutex::new(()),
            decision_ttl_ms: i64::try_from(config.decision_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            audit,
            executor,
            key,
            clock,
            decisions: RwLock::new(BTreeMap::new()),
            restored: std::sync::atomic::AtomicBool::new(false),
            actions: Mutex::new(BTreeMap::new()),
            incarnation,
            leadership: std::sync::OnceLock::new(),
            health: std::sync::OnceLock::new(),
            guard_sync: std::sync::OnceLock::new(),
        })
    }

    /// With replicas: refuses, as unavailable (so clients try the next address),
    /// unless this replica holds the leader's lease and it is live by this clock.
    fn check_leading(&self) -> Result<(), Status> {
        if self.incarnation.is_none() {
            return Ok(());
        }
        match self.leadership.get() {
            // Nothing is answered before the decisions are rebuilt from the log: a
            // reset or an approval then could be undone by what the rebuild reads.
            Some(lease) if lease.is_live() && !self.restored.load(std::sync::atomic::Ordering::SeqCst) => {
                Err(Status::unavailable("this governor replica has just taken the lead and is rebuilding its decisions from the audit log; retry"))
            }
            Some(lease) if lease.is_live() => Ok(()),
            Some(_) => Err(Status::unavailable("this governor replica's lease as leader lapsed: it does nothing more; ask the next governor address")),
            None => Err(Status::unavailable("this governor replica stands by while another leads: nothing was done here; ask the next governor address")),
        }
    }

    /// A replica that does not lead (yet): it decides nothing, and the log takes
    /// nothing from it.
    pub(crate) fn standing_by(&self) -> bool {
        self.incarnation.is_some() && self.leadership.get().is_none()
    }

    fn governance<'a>(&'a self, policies: &'a Policies, guard: &'a GuardState) -> Governance<'a> {
        Governance {
            catalog: &self.catalog,
            targets: &self.targets,
            environments: &self.environments,
            weights: &self.weights,
            policies,
            guard,
            guard_rails: &self.guard_rails,
            freezes: &self.freezes,
            decision_ttl_ms: self.decision_ttl_ms,
            calibration: &self.calibration,
            modes: &self.modes,
            graduation: &self.graduation,
        }
    }

    /// The caller the authentication layer named, once this replica may act
    /// ([`Shared::check_leading`]): every call comes through here.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.check_leading()?;
        arf_proto::auth::caller(request).cloned()
    }

    /// The caller, when its role may read decisions (a signal source may not).
    fn reader<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.authenticate(request)?;
        arf_proto::auth::require(&caller, caller.role.may_read(), "read decisions")?;
        Ok(caller)
    }

    async fn entry(&self, decision_id: &str) -> Option<Entry> {
        self.decisions.read().await.get(decision_id).cloned()
    }

    async fn entries(&self) -> Vec<Entry> {
        self.decisions.read().await.values().cloned().collect()
    }

    /// What, if anything, in the guard rails now keeps `decision` from starting,
    /// though they let it when it was decided: for one that was to run on its own,
    /// the kill switch, a quarantine, an exhausted error budget, or (`authorized`
    /// false: its run is not counted yet) the hour's rate limit; for anything but a
    /// rollback, a change freeze. An authorized decision is one of the hour's runs
    /// already, and the limit it reached is no reason to hold it back.
    pub(crate) fn withheld_now(&self, decision: &Decision, now: i64, authorized: bool) -> Option<String> {
        let guard = self.guard_snapshot();
        let assessment = crate::guard::assess(&guard, &self.guard_rails, &self.freezes, &decision.service, &decision.remediation.pathway, now);
        let autonomy = &assessment.autonomy;
        let service = &decision.service;
        if decision.route == Route::Autonomous {
            if !autonomy.global {
                return Some(format!("the kill switch is off: {}", autonomy.global_reason));
            }
            if autonomy.quarantine.active {
                return Some(format!("service `{service}` is quarantined after a failed rollback"));
            }
            if autonomy.error_budget.exhausted {
                return Some(format!("pathway `{}` has no error budget left on service `{service}`", decision.remediation.pathway));
            }
            if !authorized && autonomy.rate_limit.exceeded {
                return Some(format!("service `{service}` has reached its hourly limit of autonomous actions"));
            }
        }
        let frozen = assessment.freeze_windows.iter().find(|w| w.active).filter(|_| !assessment.is_rollback);
        frozen.map(|w| format!("change freeze `{}` is in force: {}", w.name, w.reason))
    }

    /// The action a decision or proposal is about, by the parameters its pathway
    /// acts with ([`Catalog::acting`]): a reworded note is the same action, with
    /// the same earlier attempts and the same hold on it.
    fn action_key(&self, incident_id: &str, remediation: &arf_core::diagnosis::Remediation) -> String {
        decision::action_key(incident_id, &self.catalog.acting(remediation))
    }

    /// Holds a new decision, and files it under its action.
    async fn insert(&self, decision_id: String, key: String, entry: Arc<Mutex<Decision>>) {
        self.actions.lock().await.entry(key).or_default().push(decision_id.clone());
        self.decisions.write().await.insert(decision_id, entry);
    }

    /// The decision that holds the action (live or verified), if any; otherwise the
    /// earlier attempts at it, for policy to see. Decisions held in memory, and those
    /// of the incident's trail (`trail`) that have left memory: an action is held by
    /// the log, not by what this process happens to remember.
    async fn attempts(&self, key: &str, trail: &[arf_audit_client::Record]) -> Result<(Option<Decision>, Vec<crate::policy::EarlierAttempt>), Status> {
        let ids = self.actions.lock().await.get(key).cloned().unwrap_or_default();
        let mut decisions = Vec::new();
        for id in ids {
            if let Some(entry) = self.entry(&id).await {
                decisions.push(entry.lock().await.clone());
            }
        }
        let mut logged = decision::Restored::default();
        for record in trail {
            logged.add(record).map_err(|e| {
                tracing::error!(error = %e, "one of the governor's own records of this incident is malformed; nothing is decided for it");
                Status::failed_precondition(format!("the governor's own record of this incident is malformed, so whether the action was decided before is unknown; nothing was decided: {e}"))
            })?;
        }
        let now = (self.clock)();
        for (id, mut earlier) in logged.decisions {
            if self.action_key(&earlier.incident_id, &earlier.remediation) == key && !decisions.iter().any(|d| d.decision_id == id) {
                earlier.expire_if_due(now);
                decisions.push(earlier);
            }
        }
        decisions.sort_by_key(|d| d.issued_at_ms);
        if let Some(holding) = decisions.iter().find(|d| d.state.holds_action()) {
            return Ok((Some(holding.clone()), Vec::new()));
        }
        let earlier = decisions
            .into_iter()
            .map(|d| crate::policy::EarlierAttempt { decision_id: d.decision_id, state: d.state.as_str().to_owned() })
            .collect();
        Ok((None, earlier))
    }

    /// Which attempt at `incident_id` a new decision would be: 1 plus its earlier
    /// actions that ran, run, or may run. From the governor's own `authorized`
    /// records in the incident's trail, and from its decisions in memory that are
    /// approved or later (one being authorized right now counts too).
    async fn attempt(&self, incident_id: &str, trail: &[arf_audit_client::Record]) -> u32 {
        let mut ran: std::collections::BTreeSet<String> = trail
            .iter()
            .filter(|r| r.writer == "governor" && r.kind == RecordKind::Decision && r.payload["state"] == "authorized")
            .filter_map(|r| r.payload["decision_id"].as_str().map(str::to_owned))
            .collect();
        let prefix = decision::action_key_prefix(incident_id);
        let ids: Vec<String> = self.actions.lock().await.range(prefix.clone()..).take_while(|(key, _)| key.starts_with(&prefix)).flat_map(|(_, ids)| ids.clone()).collect();
        for id in ids {
            let Some(entry) = self.entry(&id).await else { continue };
            let may_run = entry.try_lock().map_or(true, |d| {
                matches!(d.state, State::Approved | State::Authorized | State::Verified | State::RolledBack | State::RollbackFailed | State::Failed | State::Refused)
            });
            if may_run {
                ran.insert(id);
            }
        }
        u32::try_from(ran.len()).unwrap_or(u32::MAX).saturating_add(1)
    }

    /// Lets settled decisions that expired more than `retain_ms` ago leave memory.
    /// Their trail stays in the log: [`Service::find`] reads one back by its id, and
    /// [`Shared::attempts`] finds them in the incident's trail.
    async fn evict(&self) -> usize {
        let now = (self.clock)();
        // No decision is made meanwhile, so the action index stays whole.
        let _deciding = self.deciding.lock().await;
        let mut decisions = self.decisions.write().await;
        let mut actions = self.actions.lock().await;
        let mut gone = Vec::new();
        for (id, entry) in decisions.iter() {
            // One in use (being dispatched, approved, read) is not settled for long.
            let Ok(mut decision) = entry.try_lock() else { continue };
            decision.expire_if_due(now);
            if decision.state.is_final() && now - decision.expires_at_ms > self.retain_ms {
                gone.push((id.clone(), decision.incident_id.clone(), self.action_key(&decision.incident_id, &decision.remediation)));
            }
        }
        let mut evicted = self.evicted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, incident_id, key) in &gone {
            decisions.remove(id);
            if let Some(ids) = actions.get_mut(key) {
                ids.retain(|held| held != id);
                if ids.is_empty() {
                    actions.remove(key);
                }
            }
            evicted.insert(id.clone(), incident_id.clone());
        }
        gone.len()
    }

    /// A decision that left memory, read back from its incident's trail.
    async fn read_back(&self, decision_id: &str) -> Result<Option<Decision>, Status> {
        let incident_id = self.evicted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).incident_of.get(decision_id).cloned();
        let Some(incident_id) = incident_id else { return Ok(None) };
        let trail = self
            .audit
            .read_incident(&incident_id)
            .await
            .map_err(|e| status::audit_unreadable(&e, &format!("decision `{decision_id}` is no longer held in memory and cannot be read back")))?;
        let mut logged = decision::Restored::default();
        for record in &trail {
            logged.add(record).map_err(|e| Status::internal(format!("decision `{decision_id}` cannot be read back: {e}")))?;
        }
        Ok(logged.decisions.remove(decision_id))
    }

    /// Reads the incident's trail and checks that it backs the proposal (see
    /// [`crate::backing`]). A proposal without backing is refused, and the refusal
    /// is logged; a log that cannot be read means nothing is decided.
    async fn backing(&self, proposal: &Proposal) -> Result<(IncidentScope, Vec<arf_audit_client::Record>), Status> {
        let records = self
            .audit
            .read_incident(&proposal.incident_id)
            .await
            .map_err(|e| status::audit_unreadable(&e, "the proposal's backing cannot be checked and no decision was made"))?;
        match crate::backing::backing(&records, proposal, &self.agent_writer) {
            Ok(scope) => Ok((scope, records)),
            Err(unbacked) => {
                warn!(incident_id = %proposal.incident_id, proposal_id = %proposal.id, reason = %unbacked, "proposal refused: the log does not back it");
                let payload = records::encode(&GovernanceEvent::ProposalRefused {
                    proposal_id: proposal.id.clone(),
                    target: proposal.remediation.target.clone(),
                    pathway: proposal.remediation.pathway.clone(),
                    reason: unbacked.to_string(),
                });
                if let Err(error) = self.audit.append_one(&proposal.incident_id, RecordKind::Decision, payload).await {
                    warn!(%error, "cannot log the refusal of an unbacked proposal");
                }
                Err(Status::failed_precondition(format!("refused: {unbacked}; nothing was decided")))
            }
        }
    }

    /// Signs an approved decision, logs the authorization at the sequence number the
    /// executor will check, and starts the dispatch. On failure nothing runs, and the
    /// failure is logged (when the log takes it), so a restarted governor does not
    /// authorize what this one refused and the trail says why nothing ran.
    async fn authorize(self: &Arc<Self>, decision: &mut Decision) -> Result<(), Status> {
        let result = self.sign_and_dispatch(decision).await;
        if result.is_err() && decision.state == State::AuthorizationFailed {
            self.log_state(decision).await;
        }
        result
    }

    async fn sign_and_dispatch(self: &Arc<Self>, decision: &mut Decision) -> Result<(), Status> {
        // A replica that is not (or no longer) the leader signs nothing: the leader
        // after it resumes what is authorized.
        self.check_leading()?;
        // Whatever path led here, a shadow decision is never signed.
        if decision.mode == arf_core::decision::Mode::Shadow {
            return Err(Status::failed_precondition(format!("decision `{}` was made in shadow mode: nothing is ever sent to the executor for it", decision.decision_id)));
        }
        let fail = |decision: &mut Decision, detail: String| {
            decision.state = State::AuthorizationFailed;
            decision.detail.clone_from(&detail);
            detail
        };
        let Some(digest) = self.catalog.digest(&decision.remediation.pathway) else {
            let detail = fail(decision, format!("pathway `{}` is not in the catalog", decision.remediation.pathway));
            return Err(Status::failed_precondition(detail));
        };
        let body = decision.body(digest);
        let bytes = match arf_core::canonical::to_vec(&body) {
            Ok(bytes) => bytes,
            Err(error) => return Err(Status::internal(fail(decision, format!("cannot encode the decision: {error}")))),
        };
        if let Some(witness) = &self.witness {
            // The checkpoint must cover everything the log acknowledged to this
            // governor, its record of this decision included.
            match witness.check_fresh(&self.audit, 0).await {
                Ok(_) => self.alarm.witness_accepted("governor"),
                Err(arf_audit_client::witness::WitnessError::Unavailable(error)) => {
                    let status = status::audit_unavailable(&error, "the decision was not authorized and nothing will run");
                    fail(decision, status.message().to_owned());
                    return Err(status);
                }
                Err(error) => {
                    tracing::error!(decision_id = %decision.decision_id, %error, "AUDIT LOG REFUSED BY WITNESS: nothing is authorized until an operator has checked the log");
                    self.alarm.witness_refused("governor", &error.to_string(), &decision.decision_id, (self.clock)());
                    let detail = fail(decision, format!("the audit log failed the governor's witness check, so nothing was authorized: {error}"));
                    return Err(Status::failed_precondition(detail));
                }
            }
        }
        let payload = records::encode(&AuthorizedRecord {
            decision_id: decision.decision_id.clone(),
            state: State::Authorized.as_str().to_owned(),
            envelope_sha256: arf_core::canonical::sha256_hex(&bytes),
            body: body.clone(),
            route: decision.route.as_str().to_owned(),
            approvals: decision.approvals.clone(),
        });
        let record = match self.audit.append_one(&decision.incident_id, RecordKind::Decision, payload).await {
            Ok(record) => record,
            Err(error) => {
                let status = status::audit_unavailable(&error, "the decision was not authorized and nothing will run");
                fail(decision, status.message().to_owned());
                return Err(status);
            }
        };
        arf_core::crash::point("governor.authorized_logged");
        let signed = match arf_core::decision::sign(&body, &self.key, record.seq) {
            Ok(signed) => signed,
            Err(error) => return Err(Status::internal(fail(decision, format!("cannot sign the decision: {error}")))),
        };
        decision.state = State::Authorized;
        info!(decision_id = %decision.decision_id, audit_seq = record.seq, "decision authorized; dispatching");
        let task = dispatch::run(Arc::clone(self), (decision.decision_id.clone(), decision.incident_id.clone()), convert::signed(&signed), decision.expires_at_ms, true);
        // The dispatch continues the incident's trace, whoever's call authorized it.
        let traceparent = self.traces.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&decision.decision_id);
        let span = match traceparent {
            Some(traceparent) => arf_proto::telemetry::continue_span("dispatch", Some(&traceparent)),
            None => tracing::Span::current(),
        };
        tokio::spawn(task.instrument(span));
        Ok(())
    }

    /// Logs a decision's new state and why (expired, failed to authorize); best
    /// effort, since nothing acts on it.
    async fn log_state(&self, decision: &Decision) {
        let payload = records::encode(&DecisionStateRecord {
            decision_id: decision.decision_id.clone(),
            state: decision.state.as_str().to_owned(),
            detail: decision.detail.clone(),
        });
        if let Err(error) = self.audit.append_one(&decision.incident_id, RecordKind::Decision, payload).await {
            warn!(decision_id = %decision.decision_id, state = decision.state.as_str(), %error, "cannot log the decision's state");
        }
    }
}

/// As the log's witness (when it is one), checks the log between decisions too
/// ([`arf_audit_client::witness::Witness::keep_up`]), so that what was logged
/// after the last one (its execution's records among them) is soon under a
/// checkpoint this governor holds. A refusal pages, as one before an
/// authorization does.
fn keep_up_with_the_log(shared: &Arc<Shared>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
    shared.witness.as_ref()?;
    let shared = Arc::clone(shared);
    Some(tokio::spawn(async move {
        let Some(witness) = &shared.witness else { return };
        witness
            .keep_up(&shared.audit, every, |checked| match checked {
                Ok(_) => shared.alarm.witness_accepted("governor"),
                Err(error) => {
                    tracing::error!(%error, "AUDIT LOG REFUSED BY WITNESS: nothing is authorized until an operator has checked the log");
                    shared.alarm.witness_refused("governor", &error.to_string(), "", (shared.clock)());
                }
            })
            .await;
    }))
}

/// Notifications follow the log on their own audit connection; nothing on the
/// path of a decision waits for them.
fn spawn_notifier(config: &Config, tls: &arf_proto::tls::Loaded, alarms: crate::notify::Alarms, shared: Option<crate::notify::SharedCursor>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let Some(notify) = &config.notify else { return Ok(Vec::new()) };
    let token = arf_core::keys::load_token(&config.audit_token_file)?;
    let audit = AuditClient::connect_dial(&config.audit_addr, Some(token), &tls.dial(arf_core::identity::Role::Audit))?;
    let writers = crate::notify::event::Writers { agent: config.agent_writer.clone(), ..Default::default() };
    crate::notify::spawn(notify, &config.data_dir.join("notify"), audit, writers, alarms, shared).map_err(|e| anyhow::anyhow!(e))
}

/// This replica's name (`governor.replica`).
fn replica_name(config: &Config) -> String {
    config.replica.clone().unwrap_or_else(|| "governor".to_owned())
}

/// The name of the one lease governor replicas contend for, in `governor_members`.
const LEADER: &str = "leader";

/// Waits until this replica holds the leader's lease (`governor_members`, the row
/// `leader`; [`arf_pg::lease::Lease`]), for as long as it takes.
async fn lead(settings: &arf_pg::Settings, member: &str, incarnation: &str, length: Duration) -> Arc<arf_pg::lease::Lease> {
    let mut said = false;
    loop {
        match arf_pg::lease::Lease::open_standby(settings, "governor_members", LEADER, incarnation, length).await {
            Ok((_, lease)) => {
                info!(%member, "this governor replica leads: it decides, takes approvals and dispatches");
                return lease;
            }
            Err(arf_pg::PgError::LeaseLost(_)) => {
                if !said {
                    info!(%member, "another governor replica leads: this one stands by, refusing every call as unavailable");
                    said = true;
                }
            }
            Err(error) => {
                warn!(%error, %member, "cannot reach the governors' database: standing by");
                tokio::time::sleep(length / 2).await;
            }
        }
    }
}

/// Rebuilds the decisions of an earlier run from the log (retrying until the log
/// answers), so pending decisions can still be approved after a restart and
/// authorized ones learn their outcome from the executor.
async fn restore(shared: Arc<Shared>) {
    loop {
        match restore_once(&shared).await {
            Ok(()) => return,
            Err(RestoreError::Audit(error)) => {
                warn!(%error, "cannot read the log to restore decisions yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(RestoreError::Malformed(error)) => {
                // Reading it again reads the same record: nothing is decided until an
                // operator has looked, and every `Evaluate` answers `Unavailable`.
                tracing::error!(%error, "THE GOVERNOR CANNOT REBUILD ITS DECISIONS: one of its own audit records is malformed; it decides nothing until an operator has checked the log (`arf audit verify`)");
                return;
            }
        }
    }
}

/// Why decisions could not be rebuilt from the log.
#[derive(Debug, thiserror::Error)]
enum RestoreError {
    #[error(transparent)]
    Audit(#[from] arf_audit_client::AuditError),
    #[error(transparent)]
    Malformed(#[from] records::Malformed),
}

async fn restore_once(shared: &Arc<Shared>) -> Result<(), RestoreError> {
    // From the state snapshot the log vouches for, if any; then the log after it,
    // folded record by record as it streams in, never held whole.
    let (mut folded, from) = shared.starting_state().await?;
    arf_proto::metrics::set("arf_governor_recovery_from_seq", "The record the last rebuild folded the log from (1: the whole log).", &[], from as f64);
    let (_, count) = shared.fold(&mut folded, (from, 0)).await?;
    arf_proto::metrics::set("arf_governor_recovery_folded_records", "Records the last rebuild folded.", &[], count as f64);
    folded.evict((shared.clock)(), shared.retain_ms);
    let decision::Restored { decisions: restored, authorized, autonomy, trips, graduations, autonomous_runs, evicted, withdrawn } = folded;
    // A decision withdrawn before the restart stays withdrawn: never sent again.
    shared.withdrawn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(withdrawn);
    // The kill switch is logged before it takes effect; a guard-rail file that lost
    // a later switch (restored from a backup, a new disk, a crash between the two)
    // must not hand autonomy back: the log's last switch, if newer, is the one in force.
    if let Some((enabled, by, reason, at_ms)) = autonomy {
        shared.adopt_logged_autonomy(enabled, &by, &reason, at_ms);
    }
    // Likewise a latched guard rail the log shows tripped and never reset: a file
    // without it would hand the service or pathway its autonomy back.
    shared.adopt_logged_trips(trips);
    // And a demotion: a file that still says graduated would let the pathway run
    // on its own again after the failure that demoted it.
    shared.adopt_logged_demotions(&graduations);
    // And the hour's autonomous actions, which the rate limit counts: a replica that
    // took over from another leader, or a lost file, must not grant the hour again.
    shared.adopt_logged_runs(autonomous_runs);
    // An outcome the log holds is never asked for again, so the guard rails need
    // not remember that they counted it (a decision that left memory is settled).
    shared.forget_outcomes(|guard| {
        crate::guard::forget_logged_outcomes(guard, |id| evicted.contains(id) || restored.get(id).is_some_and(|d| d.state.is_final()))
    });
    // Where the decisions the fold let go are in the log, for reading them back.
    shared.evicted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).absorb(evicted);
    {
        let mut decisions = shared.decisions.write().await;
        let mut actions = shared.actions.lock().await;
        for (id, restored) in restored {
            if decisions.contains_key(&id) {
                continue;
            }
            actions.entry(shared.action_key(&restored.incident_id, &restored.remediation)).or_default().push(id.clone());
            decisions.insert(id, Arc::new(Mutex::new(restored)));
        }
        info!(decisions = decisions.len(), "decisions restored from the audit log");
    }
    // Resumed on its own task: the start-up timeout around this function must not
    // cut a resumption off halfway. Every decision held in a state a crash can cut
    // off is resumed, not only those just read, so a retry misses none.
    let unfinished: Vec<(String, Arc<Mutex<Decision>>)> = {
        let decisions = shared.decisions.read().await;
        let mut out = Vec::new();
        for (id, entry) in decisions.iter() {
            if matches!(entry.lock().await.state, State::Authorized | State::Approved) {
                out.push((id.clone(), Arc::clone(entry)));
            }
        }
        out
    };
    shared.restored.store(true, std::sync::atomic::Ordering::SeqCst);
    evict_periodically(shared);
    state::snapshot_periodically(shared);
    shared.withdraw_as_freezes_begin();
    tokio::spawn(resume(Arc::clone(shared), unfinished, authorized));
    Ok(())
}

/// Lets settled decisions leave memory now and then, for as long as the governor lives.
fn evict_periodically(shared: &Arc<Shared>) {
    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            let every = match shared.upgrade() {
                Some(shared) => Duration::from_millis(u64::try_from(shared.retain_ms / 4).unwrap_or(0).clamp(1_000, 60_000)),
                None => return,
            };
            tokio::time::sleep(every).await;
            let Some(shared) = shared.upgrade() else { return };
            let left = shared.evict().await;
            if left > 0 {
                tracing::debug!(left, "settled decisions left memory; their trails stay in the log");
            }
        }
    });
}

/// Continues decisions a crash cut off from where the log says they stopped, at
/// once, rather than waiting for their expiry: approved ones are authorized (or,
/// past the bound for acting alone, or against guard rails that now say no, expire
/// unrun), authorized ones are sent again (`Execute` is idempotent per decision id)
/// and followed to their outcome.
async fn resume(
    shared: Arc<Shared>,
    unfinished: Vec<(String, Arc<Mutex<Decision>>)>,
    authorized: BTreeMap<String, (arf_core::decision::DecisionBody, u64)>,
) {
    for (decision_id, entry) in unfinished {
        let mut decision = entry.lock_owned().await;
        let now = (shared.clock)();
        let incident_id = decision.incident_id.clone();
        let expires_at_ms = decision.expires_at_ms;
        match decision.state {
            State::Approved => {
                let autonomous = decision.route == Route::Autonomous;
                let too_late = autonomous && now.saturating_sub(decision.issued_at_ms) > shared.settle_ms;
                // What was allowed alone before the crash may not be now: the kill
                // switch, a quarantine, a rate limit or a freeze are asked again.
                let withheld = shared.withheld_now(&decision, now, false);
                if now >= expires_at_ms || too_late || withheld.is_some() {
                    decision.state = State::Expired;
                    decision.detail = if let Some(why) = withheld {
                        format!("the governor stopped before it authorized this decision, and when it came back the guard rails no longer let it run ({why}); nothing ran")
                    } else {
                        format!(
                            "the governor stopped before it authorized this decision and restarted {} s after it was made, past the {} s an action may wait to run on its own; nothing ran",
                            now.saturating_sub(decision.issued_at_ms) / 1000,
                            shared.settle_ms / 1000
                        )
                    };
                    shared.log_state(&decision).await;
                    warn!(%decision_id, "an approved decision the crash cut off expired unrun");
                } else if let Err(status) = shared.authorize(&mut decision).await {
                    warn!(%decision_id, error = status.message(), "could not authorize a decision the crash cut off");
                }
            }
            State::Authorized => {
                let signed = authorized.get(&decision_id).and_then(|(body, seq)| arf_core::decision::sign(body, &shared.key, *seq).ok());
                drop(decision);
                match signed {
                    Some(signed) if now < expires_at_ms => {
                        tokio::spawn(dispatch::run(Arc::clone(&shared), (decision_id, incident_id), convert::signed(&signed), expires_at_ms, false));
                    }
                    _ => {
                        // Followed like a fresh dispatch, so an outcome learned now feeds the guard
                        // rails (statistics, error budget, quarantine) exactly as it would have then.
                        let known = "the governor restarted before it learned the outcome".to_owned();
                        tokio::spawn(dispatch::follow(Arc::clone(&shared), (decision_id, incident_id), (expires_at_ms, None), None, known));
                    }
                }
            }
            _ => {}
        }
    }
}

/// The executor's addresses (`governor.executor_addr`, several separated by commas
/// for replicas that share `executor.postgres`): calls go to one until it fails to
/// answer, then to the next. Any replica answers for any decision, since they share
/// their executions; replicas with stores of their own must not be listed together.
pub(crate) struct Executors(arf_core::net::Rotation<ExecutorClient<arf_proto::server::Authenticated>>);

impl Executors {
    fn new(addresses: &str, token: Option<&str>, dial: &arf_proto::tls::Dial) -> anyhow::Result<Self> {
        let clients = crate::config::addresses(addresses).map(|a| executor_client(a, token, dial)).collect::<anyhow::Result<Vec<_>>>()?;
        arf_core::net::Rotation::new(clients).map(Self).context("`governor.executor_addr` names no address")
    }

    /// The client to call now, and which it is.
    pub(crate) fn client(&self) -> (usize, ExecutorClient<arf_proto::server::Authenticated>) {
        self.0.pick()
    }

    /// The call to client `i` found no executor there: later calls go to the next.
    pub(crate) fn failed(&self, i: usize) {
        self.0.failed(i);
    }
}

fn executor_client(address: &str, token: Option<&str>, dial: &arf_proto::tls::Dial) -> anyhow::Result<ExecutorClient<arf_proto::server::Authenticated>> {
    let uri = if address.starts_with("http") { address.to_owned() } else { format!("http://{address}") };
    let endpoint = Endpoint::from_shared(uri)
        .with_context(|| format!("`governor.executor_addr`: address `{address}` is invalid"))?
        .connect_timeout(Duration::from_secs(2));
    Ok(ExecutorClient::with_interceptor(dial.channel(endpoint), arf_proto::server::Bearer::new(token)))
}

/// The first record of a decision: the decision itself and the exact document policy saw.
fn decision_payload(decision: &Decision, input: &PolicyInput) -> Value {
    records::encode(&DecidedRecord { decision: decision.clone(), policy_input: serde_json::to_value(input).unwrap_or_default() })
}

fn require_decision_id(decision_id: &str) -> Result<(), Status> {
    if decision_id.trim().is_empty() {
        return Err(Status::invalid_argument("`decision_id` must not be empty"));
    }
    Ok(())
}

/// How long a look-up of a decision not held waits for the decision being made.
const DECISION_IN_PROGRESS: Duration = Duration::from_secs(5);

/// The service.
pub struct Service {
    shared: Arc<Shared>,
}

impl Service {
    async fn find(&self, decision_id: &str) -> Result<Entry, Status> {
        require_decision_id(decision_id)?;
        match self.shared.entry(decision_id).await {
            Some(entry) => Ok(entry),
            None if !self.shared.restored.load(std::sync::atomic::Ordering::SeqCst) => Err(status::restoring(decision_id)),
            None => {
                // A decision is logged a moment before it is held (a guard rail's trip
                // is logged in between): one being made now is waited for, so an id
                // the log already shows is never answered NotFound. Bounded, since the
                // lock is also held while the log is down.
                if tokio::time::timeout(DECISION_IN_PROGRESS, self.shared.deciding.lock()).await.is_ok()
                    && let Some(entry) = self.shared.entry(decision_id).await
                {
                    return Ok(entry);
                }
                // Settled long ago: read back from the log, and not held again.
                match self.shared.read_back(decision_id).await? {
                    Some(decision) => Ok(Arc::new(Mutex::new(decision))),
                    None => Err(status::not_found(decision_id)),
                }
            }
        }
    }

    /// Every decision matching `keep`, oldest first, with expiries brought up to date.
    async fn list(&self, keep: impl Fn(&Decision) -> bool) -> Vec<pb::Decision> {
        let now = (self.shared.clock)();
        let mut found = Vec::new();
        for entry in self.shared.entries().await {
            let mut decision = entry.lock().await;
            decision.expire_if_due(now);
            if keep(&decision) {
                found.push(decision.clone());
            }
        }
        found.sort_by(|a, b| (a.issued_at_ms, &a.decision_id).cmp(&(b.issued_at_ms, &b.decision_id)));
        found.iter().map(convert::decision).collect()
    }
}

#[tonic::async_trait]
impl Governor for Service {
    async fn evaluate(&self, request: Request<pb::EvaluateRequest>) -> Result<Response<pb::Decision>, Status> {
        let caller = self.shared.authenticate(&request)?;
        if !caller.role.may_propose() {
            return Err(Status::permission_denied(format!(
                "only the agent may ask for decisions; `{}` has role `{}`",
                caller.name, caller.role
            )));
        }
        let proposal = convert::proposal(request.into_inner())?;
        let span = info_span!(
            "evaluate",
            incident_id = %proposal.incident_id,
            pathway = %proposal.remediation.pathway,
            decision_id = field::Empty,
        );
        async move {
            // Until the decisions of earlier runs are back, which actions already have
            // one is unknown: deciding now could decide one twice.
            if !self.shared.restored.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Status::unavailable("the governor is still rebuilding its decisions from the audit log; nothing was decided, retry"));
            }
            // Malformed input is named before anything else is read or written.
            decide::check(&proposal, &self.shared.governance(&self.shared.current_policies(), &self.shared.guard_snapshot()))
                .map_err(status::invalid_proposal)?;
            let (mut scope, trail) = self.shared.backing(&proposal).await?;
            // Decisions are made one at a time, and an action is decided at most once
            // while a decision for it is live or has succeeded: held from the look-up
            // until the new decision is in place, so two proposals cannot both pass.
            let deciding = self.shared.deciding.lock().await;
            // Which attempt at the incident this is, counted under the lock so that two
            // proposals of one incident at once cannot both be the first.
            scope.attempt = self.shared.attempt(&proposal.incident_id, &trail).await;
            let key = self.shared.action_key(&proposal.incident_id, &proposal.remediation);
            let (holding, earlier_attempts) = self.shared.attempts(&key, &trail).await?;
            if let Some(existing) = holding {
                drop(deciding);
                info!(decision_id = %existing.decision_id, state = existing.state.as_str(), "the action is already decided; answering with that decision");
                return Ok(Response::new(convert::decision(&existing)));
            }
            let now = (self.shared.clock)();
            let decision_id = arf_core::canonical::random_id("dec");
            tracing::Span::current().record("decision_id", decision_id.as_str());
            if let Some(traceparent) = arf_proto::telemetry::traceparent() {
                let mut traces = self.shared.traces.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                // Decisions never dispatched leave theirs behind: bounded, not precise.
                if traces.len() >= 10_000 {
                    traces.clear();
                }
                traces.insert(decision_id.clone(), traceparent);
            }
            // Policy evaluation is CPU work bounded by the engine's time limit; it runs
            // off the async workers so a slow policy cannot stall other calls.
            let policies = self.shared.current_policies();
            let guard = self.shared.guard_snapshot();
            let shared = Arc::clone(&self.shared);
            let span = tracing::Span::current();
            let decided = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    decide::decide_again(&shared.governance(&policies, &guard), &proposal, &scope, earlier_attempts, &caller, decision_id, now)
                })
            })
            .await
            .map_err(|_| Status::internal("the decision could not be computed; nothing was decided"))?;
            let (decision, input) = decided.map_err(status::invalid_proposal)?;
            // Counted before the decision is logged: a run that then fails to happen
            // only makes the rate limit stricter. A shadow decision runs nothing.
            let trip = (decision.state == State::Approved)
                .then(|| self.shared.note_autonomous(&decision.service, now))
                .flatten();
            // Write-ahead: a decision that is not in the log was never made.
            self.shared
                .audit
                .append_one(&decision.incident_id, RecordKind::Decision, decision_payload(&decision, &input))
                .await
                .map_err(|e| status::audit_unavailable(&e, "no decision was made"))?;
            arf_core::crash::point("governor.decision_logged");
            if let Some(pause) = arf_core::crash::pause("governor.decision_logged") {
                tokio::time::sleep(pause).await;
            }
            arf_proto::metrics::inc("arf_governor_decisions_total", "Decisions made, by route.", &[("route", decision.route.as_str())]);
            info!(
                route = decision.route.as_str(),
                risk = decision.risk.score,
                rules_fired = ?decision.policy.rules_fired,
                diagnostics = ?decision.policy.diagnostics,
                "decision made"
            );
            if let Some(trip) = trip {
                self.shared.log_trip(&trip, &decision.incident_id, &decision.decision_id).await;
            }
            let decision_id = decision.decision_id.clone();
            // Only a decision policy let run on its own, outside shadow mode, is
            // authorized now: a shadow decision is never signed or sent.
            let autonomous = decision.state == State::Approved;
            if decision.mode == arf_core::decision::Mode::Shadow {
                arf_proto::metrics::inc("arf_governor_shadow_decisions_total", "Decisions made in shadow mode (never sent to the executor), by route.", &[("route", decision.route.as_str())]);
                info!(route = decision.route.as_str(), "shadow mode: decision logged, nothing sent to the executor");
            }
            // Held locked from before it is visible until it is authorized, so the
            // dispatch task can only record an outcome once the decision is in place.
            let entry = Arc::new(Mutex::new(decision));
            let mut decision = Arc::clone(&entry).lock_owned().await;
            self.shared.insert(decision_id, key, entry).await;
            drop(deciding);
            if autonomous {
                self.shared.authorize(&mut decision).await?;
            }
            Ok(Response::new(convert::decision(&decision)))
        }
        .instrument(span)
        .await
    }

    async fn list_pending(
        &self,
        request: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        self.shared.reader(&request)?;
        let decisions = self.list(|d| d.state == State::Pending).await;
        Ok(Response::new(pb::ListDecisionsResponse { decisions }))
    }

    async fn list_decisions(
        &self,
        request: Request<pb::ListDecisionsRequest>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        self.shared.reader(&request)?;
        let incident_id = request.into_inner().incident_id;
        let decisions = self.list(|d| incident_id.is_empty() || d.incident_id == incident_id).await;
        Ok(Response::new(pb::ListDecisionsResponse { decisions }))
    }

    async fn get_decision(&self, request: Request<pb::GetDecisionRequest>) -> Result<Response<pb::Decision>, Status> {
        self.shared.reader(&request)?;
        let entry = self.find(&request.into_inner().decision_id).await?;
        let mut decision = entry.lock().await;
        decision.expire_if_due((self.shared.clock)());
        Ok(Response::new(convert::decision(&decision)))
    }

    async fn explain(&self, request: Request<pb::GetDecisionRequest>) -> Result<Response<pb::Explanation>, Status> {
        self.shared.reader(&request)?;
        let entry = self.find(&request.into_inner().decision_id).await?;
        let mut decision = entry.lock().await;
        decision.expire_if_due((self.shared.clock)());
        let pathway = self.shared.catalog.get(&decision.remediation.pathway);
        let target = self.shared.targets.get(&decision.remediation.target);
        let text = crate::explain::explain(&decision, pathway, target);
        Ok(Response::new(pb::Explanation { decision: Some(convert::decision(&decision)), text }))
    }

    async fn approve(&self, request: Request<pb::ApproveRequest>) -> Result<Response<pb::Decision>, Status> {
        let caller = self.shared.authenticate(&request)?;
        decision::check_person(&caller).map_err(status::oversight)?;
        let request = request.into_inner();
        let entry = self.find(&request.decision_id).await?;
        // The decision stays locked until the approval is logged and counted, so two
        // approvals of one decision are judged one after the other.
        let mut decision = entry.lock().await;
        let span = info_span!(
            "approve",
            incident_id = %decision.incident_id,
            decision_id = %decision.decision_id,
            pathway = %decision.remediation.pathway,
        );
        async move {
            let now = (self.shared.clock)();
            if let Err(error) = decision::check_approval(&decision, &caller, now) {
                if decision.expire_if_due(now) {
                    self.shared.log_state(&decision).await;
                }
                return Err(status::oversight(error));
            }
            let approval = Approval {
                identity: caller.name.clone(),
                role: caller.role.as_str().to_owned(),
                at_ms: now,
                verdict: Verdict::Approve,
                reason: request.comment.clone(),
            };
            let payload = records::encode(&ApprovalRecord {
                decision_id: decision.decision_id.clone(),
                identity: approval.identity.clone(),
                role: approval.role.clone(),
                verdict: approval.verdict,
                at_ms: approval.at_ms,
                comment: Some(approval.reason.clone()),
                reason: None,
                approvals_given: Some(decision.approvals_given() + 1),
                approvals_required: Some(decision.approvals_required()),
                state: None,
            });
            // Write-ahead: an approval counts only once it is in the log.
            self.shared
                .audit
                .append_one(&decision.incident_id, RecordKind::Approval, payload)
                .await
                .map_err(|e| status::audit_unavailable(&e, "the approval was not counted"))?;
            match decision::record_approval(&mut decision, approval) {
                Progress::Waiting { given, required } => {
                    info!(identity = %caller.name, given, required, "approval counted; waiting for more");
                }
                Progress::Approved => {
                    info!(identity = %caller.name, "approval counted; decision approved");
                    self.shared.authorize(&mut decision).await?;
                }
            }
            Ok(Response::new(convert::decision(&decision)))
        }
        .instrument(span)
        .await
    }

    async fn reject(&self, request: Request<pb::RejectRequest>) -> Result<Response<pb::Decision>, Status> {
        let caller = self.shared.authenticate(&request)?;
        // Who may not decide is told so before learning whether the decision exists.
        decision::check_person(&caller).map_err(status::oversight)?;
        let request = request.into_inner();
        if request.reason.trim().is_empty() {
            return Err(status::oversight(decision::OversightError::MissingReason));
        }
        let entry = self.find(&request.decision_id).await?;
        let mut decision = entry.lock().await;
        let span = info_span!(
            "reject",
            incident_id = %decision.incident_id,
            decision_id = %decision.decision_id,
            pathway = %decision.remediation.pathway,
        );
        async move {
            let now = (self.shared.clock)();
            if let Err(error) = decision::check_rejection(&decision, &caller, &request.reason, now) {
                if decision.expire_if_due(now) {
                    self.shared.log_state(&decision).await;
                }
                return Err(status::oversight(error));
            }
            let rejection = Approval {
                identity: caller.name.clone(),
                role: caller.role.as_str().to_owned(),
                at_ms: now,
                verdict: Verdict::Reject,
                reason: request.reason.trim().to_owned(),
            };
            let payload = records::encode(&ApprovalRecord {
                decision_id: decision.decision_id.clone(),
                identity: rejection.identity.clone(),
                role: rejection.role.clone(),
                verdict: rejection.verdict,
                at_ms: rejection.at_ms,
                comment: None,
                reason: Some(rejection.reason.clone()),
                approvals_given: None,
                approvals_required: None,
                state: Some(State::Rejected.as_str().to_owned()),
            });
            self.shared
                .audit
                .append_one(&decision.incident_id, RecordKind::Approval, payload)
                .await
                .map_err(|e| status::audit_unavailable(&e, "the rejection was not recorded"))?;
            decision::record_rejection(&mut decision, rejection);
            info!(identity = %caller.name, "decision rejected");
            Ok(Response::new(convert::decision(&decision)))
        }
        .instrument(span)
        .await
    }

    async fn judge_shadow(&self, request: Request<pb::JudgeShadowRequest>) -> Result<Response<pb::Decision>, Status> {
        let caller = self.shared.authenticate(&request)?;
        // Judging teaches the governor what may run on its own: people only.
        decision::check_person(&caller).map_err(status::oversight)?;
        let request = request.into_inner();
        if !request.agrees && request.reason.trim().is_empty() {
            return Err(Status::invalid_argument("a disagreeing judgement needs a reason: say what should have been done instead"));
        }
        // Held from the look-up until the judgement is counted (see `judging`).
        let _judging = self.shared.judging.lock().await;
        let entry = self.find(&request.decision_id).await?;
        let mut decision = entry.lock().await;
        if decision.state != State::Shadow {
            return Err(Status::failed_precondition(format!(
                "decision `{}` is `{}`, not a shadow decision: only what ARF would have done in shadow mode is judged",
                decision.decision_id,
                decision.state.as_str()
            )));
        }
        if let Some(judged) = &decision.judgement {
            return Err(Status::failed_precondition(format!(
                "decision `{}` was already judged by `{}` ({}); a judgement counts once",
                decision.decision_id,
                judged.identity,
                if judged.agrees { "agrees" } else { "disagrees" }
            )));
        }
        let judgement = arf_core::decision::Judgement {
            identity: caller.name.clone(),
            role: caller.role.as_str().to_owned(),
            at_ms: (self.shared.clock)(),
            agrees: request.agrees,
            reason: request.reason.trim().to_owned(),
        };
        let event = records::GovernanceEvent::ShadowJudged {
            decision_id: decision.decision_id.clone(),
            service: decision.service.clone(),
            pathway: decision.remediation.pathway.clone(),
            judgement: judgement.clone(),
        };
        // A disagreement counts before it is logged, an agreement after: whatever
        // stops the governor in between, the record errs toward less autonomy (a
        // demotion that stands without its record, or an agreement never counted).
        let early = (!judgement.agrees).then(|| self.shared.count_judgement(&decision.environment, &decision.service, &decision.remediation.pathway, false));
        self.shared
            .audit
            .append_one(&decision.incident_id, RecordKind::Decision, records::encode(&event))
            .await
            .map_err(|e| status::audit_unavailable(&e, "the judgement was not recorded"))?;
        let change = match early {
            Some(change) => change,
            None => self.shared.count_judgement(&decision.environment, &decision.service, &decision.remediation.pathway, true),
        };
        info!(decision_id = %decision.decision_id, identity = %caller.name, agrees = judgement.agrees, "shadow decision judged");
        decision.judgement = Some(judgement);
        let answer = convert::decision(&decision);
        drop(decision);
        self.shared.log_graduation(change).await;
        Ok(Response::new(answer))
    }

    async fn get_autonomy(
        &self,
        request: Request<pb::GetAutonomyRequest>,
    ) -> Result<Response<pb::AutonomyStatus>, Status> {
        self.shared.reader(&request)?;
        Ok(Response::new(self.shared.autonomy_status(Vec::new())))
    }

    async fn set_autonomy(
        &self,
        request: Request<pb::SetAutonomyRequest>,
    ) -> Result<Response<pb::AutonomyStatus>, Status> {
        let caller = self.shared.authenticate(&request)?;
        let request = request.into_inner();
        self.shared.set_autonomy(&caller, request.enabled, &request.reason).await.map(Response::new)
    }

    async fn reset_autonomy(
        &self,
        request: Request<pb::ResetAutonomyRequest>,
    ) -> Result<Response<pb::AutonomyStatus>, Status> {
        let caller = self.shared.authenticate(&request)?;
        let request = request.into_inner();
        self.shared.reset_autonomy(&caller, &request.service, &request.pathway, &request.reason).await.map(Response::new)
    }

    async fn reload_policies(
        &self,
        request: Request<pb::ReloadPoliciesRequest>,
    ) -> Result<Response<pb::ReloadPoliciesResponse>, Status> {
        let caller = self.shared.authenticate(&request)?;
        self.shared.reload_policies(Some(&caller)).await.map(|files| Response::new(pb::ReloadPoliciesResponse { files }))
    }
}

/// Runs the governor on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_clock(config, listener, shutdown, Arc::new(arf_core::time::now_ms)).await
}

/// [`serve`] with a clock of the caller's choosing, for tests and simulated time.
pub async fn serve_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    clock: Clock,
) -> anyhow::Result<()> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory `{}`", config.data_dir.display()))?;
    let tls = arf_proto::tls::Loaded::load(&config.transport()?)?;
    let (alarm, alarms) = crate::notify::alarm();
    let shared = Arc::new(Shared::load(&config, clock, &tls, alarm)?);
    let notifying: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    // A standby tells health checks of `arf.v1.Governor` it is NOT_SERVING (the
    // process itself is SERVING), so tooling finds the leader among the replicas;
    // made before anything can report on it.
    let (health_reporter, health) = arf_proto::server::health_reporting::<GovernorServer<Service>>(shared.incarnation.is_none()).await;
    let _ = shared.health.set(health_reporter);
    match &config.postgres {
        // One of several replicas: it leads once it holds the leader's lease, and
        // only then rebuilds the decisions from the log (the last leader's
        // included) and delivers notifications.
        Some(postgres) => {
            state::follow_snapshots_while_standing_by(&shared);
            let (shared, notifying, config, tls) = (Arc::clone(&shared), Arc::clone(&notifying), config.clone(), tls.clone());
            let postgres = postgres.clone();
            tokio::spawn(async move {
                let member = replica_name(&config);
                let Some(incarnation) = shared.incarnation.clone() else { return };
                let lease = lead(&postgres, &member, &incarnation, Duration::from_secs(config.lease_secs)).await;
                lease.renew_or_exit("governor replica, as leader,");
                let _ = shared.leadership.set(Arc::clone(&lease));
                // The guard rails as the last leader left them, before the log makes
                // them at least as strict as it says. A state that cannot be read
                // (a database down, a row from a newer ARF) is retried for a while;
                // then this replica carries on from its own file and the log, loudly.
                let mut attempt = 0;
                loop {
                    match shared.share_guard_state(Arc::clone(&lease)).await {
                        Ok(()) => break,
                        Err(error) if attempt < 10 => {
                            attempt += 1;
                            tracing::error!(%error, attempt, "cannot read the last leader's guard-rail state yet; this governor decides nothing meanwhile");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(error) => {
                            tracing::error!(%error, "THE LAST LEADER'S GUARD-RAIL STATE CANNOT BE READ: carrying on from this replica's own guard-rail file, made as strict as the log says; statistics and budgets the log does not hold may be behind");
                            break;
                        }
                    }
                }
                shared.log_policies_in_force(&member).await;
                restore(Arc::clone(&shared)).await;
                // SERVING only once the decisions are back (a rebuild stopped by a
                // malformed record leaves it NOT_SERVING, and every call refused).
                if shared.restored.load(std::sync::atomic::Ordering::SeqCst)
                    && let Some(health) = shared.health.get()
                {
                    health.set_serving::<GovernorServer<Service>>().await;
                }
                match spawn_notifier(&config, &tls, alarms, Some(crate::notify::SharedCursor(lease.db()))) {
                    Ok(tasks) => notifying.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(tasks),
                    Err(error) => tracing::error!(%error, "the leading governor cannot deliver notifications"),
                }
            });
        }
        None => {
            // Decisions live in memory; the log is their memory across restarts. With the
            // log up they are back before the first call; with it down, as soon as it answers.
            let restored_now = matches!(tokio::time::timeout(Duration::from_secs(3), restore_once(&shared)).await, Ok(Ok(())));
            if !restored_now {
                tokio::spawn(restore(Arc::clone(&shared)));
            }
            notifying.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(spawn_notifier(&config, &tls, alarms, None)?);
        }
    }
    let addr = listener.local_addr()?;
    #[cfg(unix)]
    guard::reload_on_sighup(Arc::clone(&shared))?;
    info!(
        %addr,
        pathways = shared.catalog.len(),
        targets = shared.targets.len(),
        policies = shared.current_policies().files().len(),
        key_id = %arf_core::decision::key_id(&shared.key.verifying_key()),
        "governor listening"
    );
    let ready = Arc::clone(&shared);
    let endpoint = arf_proto::metrics::Endpoint {
        service: "governor",
        identities: Arc::new(shared.callers.clone()),
        ready: arf_proto::metrics::ready_with_tls(tls.server.clone(), move || ready.restored.load(std::sync::atomic::Ordering::SeqCst)),
    };
    let metrics = arf_proto::metrics::spawn(config.metrics_listen, config.mtls.as_ref(), endpoint).await.map_err(|e| anyhow::anyhow!(e))?;
    let authenticator = arf_proto::auth::Authenticator::new("the governor", shared.callers.clone(), tls.server.is_some());
    let router = arf_proto::server::builder(authenticator)
        .add_service(health)
        .add_service(arf_proto::server::reflection::<GovernorServer<Service>>()?)
        .add_service(arf_proto::server::reflection_v1alpha::<GovernorServer<Service>>()?)
        .add_service(GovernorServer::new(Service { shared: Arc::clone(&shared) }));
    let witnessing = keep_up_with_the_log(&shared, Duration::from_secs(config.witness_every_secs));
    let shared_for_stop = shared;
    let served = arf_proto::server::serve(router, listener, tls.server, shutdown)
        .await
        .context("governor server failed");
    if let Some(witnessing) = witnessing {
        // Awaited: a check under way may still be writing the witness's state file.
        witnessing.abort();
        let _ = witnessing.await;
    }
    for task in notifying.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
        task.abort();
    }
    // A clean stop hands the lead over at once, its guard-rail state saved first.
    if let Some(lease) = shared_for_stop.leadership.get() {
        shared_for_stop.save_guard_state_now(lease).await;
        lease.release().await;
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    served
}
