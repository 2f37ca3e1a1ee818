//! Grouping signals into incidents: pure state, time passed in.
//!
//! The rule, in order, for a firing alert, finding or detection about one service
//! in one environment and family (alerts, findings, detections):
//! 1. It joins the newest incident of that key, younger than the grouping window
//!    and not resolved, that already holds it: the same fingerprint, or the same
//!    alert (`alertname`, else title) from another replica or instance. A repeat of
//!    a fingerprint with the same status is a duplicate.
//! 2. Otherwise it joins the newest such incident whose diagnosis has not yet taken
//!    its snapshot (state `open`): it arrived with the alerts that opened it, so the
//!    diagnosis sees it. The diagnosis waits for signals being logged into its
//!    incident before it takes the snapshot ([`Incident::in_flight`]).
//! 3. Otherwise it opens a new incident, with a diagnosis of its own. An alert is
//!    never absorbed by an incident whose diagnosis cannot see it: not by one being
//!    diagnosed, proposed, escalated or resolved.
//!
//! Change events open no incident: they are context for the incidents they precede.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use arf_core::records::{DiagnosisRecord, IncidentRecord, Malformed, SignalRecord, SnapshotRecord};
use arf_core::signal::{Signal, SignalKind, SignalStatus};

/// The most distinct fingerprints one incident keeps signals for.
const MAX_SIGNALS_PER_INCIDENT: usize = 256;
/// The most recent change events kept as context.
const MAX_CHANGES: usize = 512;
/// The most incidents that left memory that incident memory still remembers.
const MAX_PAST: usize = 10_000;

/// Where an incident stands. States only move forward:
///
/// ```text
/// open → diagnosing → proposed → waiting → acting → verified | rolled_back | failed
///                                                 ↘ escalated (from any state before the last row)
/// resolved: every alert of the incident resolved, from any state
/// ```
///
/// The agent moves an incident to `diagnosing`, `proposed` and `escalated`
/// itself; `waiting`, `acting` and the outcomes follow the governor's and the
/// executor's records in the log ([`Incidents::follow`]), so the state an incident
/// shows is the one the log holds, live and after a rebuild alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Diagnosing,
    Proposed,
    /// Its decision waits for a person's acknowledgment or approval.
    Waiting,
    /// Its action is authorized or running.
    Acting,
    Verified,
    RolledBack,
    Failed,
    Escalated,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Diagnosing => "diagnosing",
            Self::Proposed => "proposed",
            Self::Waiting => "waiting",
            Self::Acting => "acting",
            Self::Verified => "verified",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Escalated => "escalated",
            Self::Resolved => "resolved",
        }
    }

    /// How far along the machine a state is: an incident moves only to a state of
    /// a higher rank, except that a resolution wins from anywhere.
    fn rank(self) -> u8 {
        match self {
            Self::Open => 0,
            Self::Diagnosing => 1,
            Self::Proposed => 2,
            Self::Waiting => 3,
            Self::Acting => 4,
            Self::Verified | Self::RolledBack | Self::Failed | Self::Escalated => 5,
            Self::Resolved => 6,
        }
    }

    /// Nothing more will happen to it but a person's look.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Proposed | Self::Verified | Self::RolledBack | Self::Failed | Self::Escalated | Self::Resolved)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub id: String,
    pub title: String,
    pub service: String,
    pub environment: String,
    pub state: IncidentState,
    /// The latest signal of each fingerprint.
    pub signals: Held,
    pub signal_count: u32,
    pub opened_at_ms: i64,
    pub updated_at_ms: i64,
    pub snapshot_hash: String,
    pub decision_ids: Vec<String>,
    pub reason: String,
    /// How many diagnoses this incident has had.
    pub diagnoses: u32,
    /// How many reasoner calls (repairs included) this incident has had.
    pub model_calls: u32,
    /// What kind of signals it groups: `alert` (alerts and events), `finding` or `detection`.
    pub family: String,
    /// Signals planned into this incident whose batch is not yet logged and
    /// applied: its diagnosis waits for them before it takes the snapshot.
    #[serde(skip)]
    pub in_flight: u32,
    /// The agent's own part is over: it logged the governor's answer to its
    /// proposal, or escalated, or every alert resolved. Until then a restarted
    /// agent resumes the incident (sends its logged proposal again, or diagnoses),
    /// whatever the governor and the executor have logged since.
    #[serde(skip)]
    pub pipeline_done: bool,
    /// The decision whose rolled-back action the next attempt follows, until that
    /// attempt's proposal is logged: what a restart resumes.
    #[serde(skip)]
    pub retry_after: Option<String>,
}

/// The latest signal of each fingerprint an incident holds (at most
/// [`MAX_SIGNALS_PER_INCIDENT`]), with what grouping asks of them kept up to date
/// as they change: how many still fire, and which alerts they are. So placing a
/// signal looks things up rather than scanning every signal, and a plan copies
/// only the fingerprints its batch names ([`Held::for_planning`]).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Held {
    signals: BTreeMap<String, Signal>,
    /// How many fingerprints are held (a planning copy holds only some of them).
    #[serde(skip)]
    len: usize,
    /// How many of them are not resolved.
    #[serde(skip)]
    firing: usize,
    /// How many of them are each alert ([`identity`]).
    #[serde(skip)]
    identities: BTreeMap<String, usize>,
}

impl Held {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, fingerprint: &str) -> Option<&Signal> {
        self.signals.get(fingerprint)
    }

    pub fn contains_key(&self, fingerprint: &str) -> bool {
        self.signals.contains_key(fingerprint)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.signals.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &Signal> {
        self.signals.values()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Signal)> {
        self.signals.iter()
    }

    /// Keeps `signal` as the latest of its fingerprint; a new fingerprint only
    /// while the incident holds fewer than [`MAX_SIGNALS_PER_INCIDENT`].
    fn keep(&mut self, signal: Signal) {
        if let Some(old) = self.signals.get(&signal.fingerprint) {
            let (firing, identity) = (old.status != SignalStatus::Resolved, identity(old).to_owned());
            self.uncount(firing, &identity);
        } else if self.len < MAX_SIGNALS_PER_INCIDENT {
            self.len += 1;
        } else {
            return;
        }
        self.firing += usize::from(signal.status != SignalStatus::Resolved);
        *self.identities.entry(identity(&signal).to_owned()).or_default() += 1;
        self.signals.insert(signal.fingerprint.clone(), signal);
    }

    fn uncount(&mut self, firing: bool, identity: &str) {
        self.firing -= usize::from(firing);
        if let Some(count) = self.identities.get_mut(identity) {
            *count -= 1;
            if *count == 0 {
                self.identities.remove(identity);
            }
        }
    }

    /// Whether it holds this signal: its fingerprint, or the same alert from
    /// another replica or instance.
    fn holds(&self, signal: &Signal) -> bool {
        self.signals.contains_key(&signal.fingerprint) || self.identities.contains_key(identity(signal))
    }

    fn all_resolved(&self) -> bool {
        self.firing == 0
    }

    /// A copy for planning a batch whose signals have these fingerprints: those
    /// of them held, each reduced to what placement reads (its status, and what
    /// names the alert), and the counts of all.
    fn for_planning(&self, fingerprints: &[&str]) -> Self {
        let stub = |s: &Signal| {
            let alertname: BTreeMap<String, String> = s.labels.get_key_value("alertname").map(|(k, v)| (k.clone(), v.clone())).into_iter().collect();
            Signal {
                id: String::new(),
                source: String::new(),
                kind: s.kind,
                status: s.status,
                title: if alertname.is_empty() { s.title.clone() } else { String::new() },
                description: String::new(),
                severity: String::new(),
                service: String::new(),
                environment: String::new(),
                labels: alertname,
                annotations: BTreeMap::new(),
                observed_at_ms: 0,
                fingerprint: s.fingerprint.clone(),
            }
        };
        Self {
            signals: fingerprints.iter().filter_map(|fp| self.signals.get_key_value(*fp)).map(|(fp, s)| (fp.clone(), stub(s))).collect(),
            len: self.len,
            firing: self.firing,
            identities: self.identities.clone(),
        }
    }
}

/// What incident memory keeps of an incident ([`Incidents::evict`]): enough to
/// find similar past incidents, whose trail is then read from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub id: String,
    pub title: String,
    pub service: String,
    pub environment: String,
    pub opened_at_ms: i64,
    pub state: IncidentState,
}

impl From<&Incident> for Summary {
    fn from(incident: &Incident) -> Self {
        Self {
            id: incident.id.clone(),
            title: incident.title.clone(),
            service: incident.service.clone(),
            environment: incident.environment.clone(),
            opened_at_ms: incident.opened_at_ms,
            state: incident.state,
        }
    }
}

/// The family a signal groups by: an alert never joins a scanner's finding, nor a
/// finding a runtime detection, even for the same service.
pub fn family(kind: SignalKind) -> &'static str {
    match kind {
        SignalKind::Finding => "finding",
        SignalKind::Detection => "detection",
        SignalKind::Alert | SignalKind::Event | SignalKind::Change => "alert",
    }
}

/// What an alert is, whatever replica or instance sent it: its `alertname` (or rule),
/// else its title.
fn identity(signal: &Signal) -> &str {
    signal.labels.get("alertname").map_or(signal.title.as_str(), String::as_str)
}

/// What an incident is open for: environment, service and signal family.
/// What groups signals: environment, service and family. Signals of different keys
/// never share an incident, so they can be placed independently.
pub type Key = (String, String, String);

/// The key a signal is grouped by; `None` for context, which opens no incident.
pub fn grouping_key(signal: &Signal) -> Option<Key> {
    (!is_context(signal)).then(|| key(signal))
}

fn key(signal: &Signal) -> Key {
    (signal.environment.clone(), signal.service.clone(), family(signal.kind).to_owned())
}

/// A grouping key as agent replicas name it in their database (`agent_keys`, and
/// the key's advisory lock): one spelling for every place that takes the lock.
pub fn key_name((environment, service, family): (&str, &str, &str)) -> String {
    serde_json::to_string(&(environment, service, family)).unwrap_or_default()
}

impl Incident {
    /// [`key_name`] of the incident's grouping key.
    pub fn key_name(&self) -> String {
        key_name((&self.environment, &self.service, &self.family))
    }
}

/// Changes, and informational events, are context: they open no incident.
fn is_context(signal: &Signal) -> bool {
    signal.kind == SignalKind::Change || (signal.kind == SignalKind::Event && signal.severity == "info")
}

/// One signal's place in a plan ([`Incidents::plan`]).
#[derive(Debug, Clone)]
pub struct Planned {
    pub placement: Placement,
    /// The signal resolves its incident (its last firing alert resolved).
    pub resolves: bool,
    /// The incident the signal opens, as it will be.
    pub opened: Option<Incident>,
}

impl Incident {
    /// Moves the incident forward to `to` (never back; a resolution always);
    /// true when it moved.
    pub fn advance(&mut self, to: IncidentState) -> bool {
        let forward = to.rank() > self.state.rank() || (to == IncidentState::Resolved && self.state != IncidentState::Resolved);
        if forward {
            self.state = to;
        }
        forward
    }

    fn all_resolved(&self) -> bool {
        self.signals.all_resolved()
    }

    /// A copy for planning ([`Incidents::plan`]) a batch whose signals of this
    /// incident's key have these fingerprints ([`Held::for_planning`]).
    fn for_planning(&self, fingerprints: &[&str]) -> Self {
        Self {
            id: self.id.clone(),
            title: self.title.clone(),
            service: self.service.clone(),
            environment: self.environment.clone(),
            state: self.state,
            signals: self.signals.for_planning(fingerprints),
            signal_count: self.signal_count,
            opened_at_ms: self.opened_at_ms,
            updated_at_ms: self.updated_at_ms,
            snapshot_hash: String::new(),
            decision_ids: Vec::new(),
            reason: String::new(),
            diagnoses: self.diagnoses,
            model_calls: self.model_calls,
            family: self.family.clone(),
            in_flight: self.in_flight,
            pipeline_done: self.pipeline_done,
            retry_after: self.retry_after.clone(),
        }
    }

    /// Whether the incident already holds this signal: its fingerprint, or the
    /// same alert from another replica or instance.
    fn holds(&self, signal: &Signal) -> bool {
        self.signals.holds(signal)
    }
}

/// Where one signal went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A change event, kept as context.
    Change,
    /// Opened a new incident.
    Opened { incident_id: String },
    /// Joined an open incident.
    Joined { incident_id: String, duplicate: bool },
}

impl Placement {
    pub fn incident_id(&self) -> &str {
        match self {
            Self::Change => "",
            Self::Opened { incident_id } | Self::Joined { incident_id, .. } => incident_id,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Incidents {
    pub by_id: BTreeMap<String, Incident>,
    /// The incidents of each key that may still take signals, oldest first.
    open_by_key: HashMap<Key, Vec<String>>,
    pub changes: VecDeque<Signal>,
    /// Incidents that left memory, newest last, at most [`MAX_PAST`].
    pub past: VecDeque<Summary>,
    window_ms: i64,
    /// Actions tried per incident (`agent.max_attempts_per_incident`).
    max_attempts: u32,
}

impl Incidents {
    pub fn new(window_ms: i64) -> Self {
        Self { by_id: BTreeMap::new(), open_by_key: HashMap::new(), changes: VecDeque::new(), past: VecDeque::new(), window_ms, max_attempts: 1 }
    }

    /// With up to `max_attempts` actions tried per incident ([`Incidents::follow`]).
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// Places one signal, as a batch of its own; `new_id` names an incident if one
    /// must be opened.
    pub fn place(&mut self, signal: &Signal, now_ms: i64, new_id: impl FnMut() -> String) -> Placement {
        self.place_batch(std::slice::from_ref(signal), now_ms, new_id).pop().unwrap_or(Placement::Change)
    }

    /// Plans and applies one batch of signals, as the agent's ingest does once the
    /// log holds them.
    pub fn place_batch(&mut self, signals: &[Signal], now_ms: i64, new_id: impl FnMut() -> String) -> Vec<Placement> {
        let planned = self.plan(signals, now_ms, new_id);
        for (signal, plan) in signals.iter().zip(&planned) {
            self.apply(signal, &plan.placement, now_ms);
        }
        planned.into_iter().map(|p| p.placement).collect()
    }

    /// The incidents of `key` that may still take signals: younger than the window
    /// and not resolved, newest first.
    fn candidates<'a>(&'a self, key: &Key, now_ms: i64) -> impl Iterator<Item = &'a Incident> + 'a {
        let window_ms = self.window_ms;
        self.open_by_key
            .get(key)
            .into_iter()
            .flat_map(|ids| ids.iter().rev())
            .filter_map(|id| self.by_id.get(id))
            .filter(move |i| now_ms - i.opened_at_ms <= window_ms && i.state != IncidentState::Resolved)
    }

    /// Where `signal` goes, without placing it (the rule is in the module's documentation).
    fn decide(&self, signal: &Signal, now_ms: i64, new_id: impl FnOnce() -> String) -> Placement {
        if is_context(signal) {
            return Placement::Change;
        }
        let key = key(signal);
        let target = self.candidates(&key, now_ms).find(|i| i.holds(signal)).or_else(|| self.candidates(&key, now_ms).find(|i| i.state == IncidentState::Open));
        match target {
            Some(incident) => {
                let duplicate = incident.signals.get(&signal.fingerprint).is_some_and(|s| s.status == signal.status);
                Placement::Joined { incident_id: incident.id.clone(), duplicate }
            }
            None => Placement::Opened { incident_id: new_id() },
        }
    }

    /// Forgets, for grouping, the incidents of `key` that can take no more signals.
    fn prune(&mut self, key: &Key, now_ms: i64) {
        let Some(ids) = self.open_by_key.get_mut(key) else { return };
        ids.retain(|id| self.by_id.get(id).is_some_and(|i| now_ms - i.opened_at_ms <= self.window_ms && i.state != IncidentState::Resolved));
        if ids.is_empty() {
            self.open_by_key.remove(key);
        }
    }

    /// Lets incidents that are done leave memory: resolved, escalated or proposed,
    /// untouched for `retain_ms`, and (unless resolved) past the grouping window, so
    /// no alert of theirs can still join them. Their trail stays in the log, where
    /// [`Incidents::restore_one`] reads it back on demand; incident memory keeps a
    /// [`Summary`]. Incidents still being diagnosed never leave. Returns how many left.
    pub fn evict(&mut self, now_ms: i64, retain_ms: i64) -> usize {
        let window_ms = self.window_ms;
        let done: Vec<String> = self
            .by_id
            .values()
            .filter(|i| i.state.is_done())
            // One whose latest decision's refusal or rollback is still to be followed up stays.
            .filter(|i| i.in_flight == 0 && (i.pipeline_done || i.state == IncidentState::Resolved) && i.retry_after.is_none() && now_ms - i.updated_at_ms > retain_ms)
            .filter(|i| i.state == IncidentState::Resolved || now_ms - i.opened_at_ms > window_ms)
            .map(|i| i.id.clone())
            .collect();
        for id in &done {
            if let Some(incident) = self.by_id.remove(id) {
                let key = (incident.environment.clone(), incident.service.clone(), incident.family.clone());
                self.prune(&key, now_ms);
                self.past.push_back(Summary::from(&incident));
            }
        }
        while self.past.len() > MAX_PAST {
            self.past.pop_front();
        }
        done.len()
    }

    /// Holds (`true`) or releases the incidents a plan places signals into, so no
    /// diagnosis takes its snapshot between the plan and its application.
    pub fn hold(&mut self, planned: &[Planned], hold: bool) {
        for plan in planned {
            if let Placement::Joined { incident_id, .. } = &plan.placement
                && let Some(incident) = self.by_id.get_mut(incident_id)
            {
                incident.in_flight = if hold { incident.in_flight.saturating_add(1) } else { incident.in_flight.saturating_sub(1) };
            }
        }
    }

    /// Places `signal` where `placement` says, as decided earlier (and logged):
    /// applying a logged placement never decides again.
    pub fn apply(&mut self, signal: &Signal, placement: &Placement, now_ms: i64) {
        match placement {
            Placement::Change => {
                self.changes.push_back(signal.clone());
                while self.changes.len() > MAX_CHANGES {
                    self.changes.pop_front();
                }
            }
            Placement::Joined { incident_id, .. } => {
                let Some(incident) = self.by_id.get_mut(incident_id) else { return };
                incident.signals.keep(signal.clone());
                incident.signal_count = incident.signal_count.saturating_add(1);
                incident.updated_at_ms = now_ms;
                if incident.all_resolved() && incident.state != IncidentState::Resolved {
                    incident.state = IncidentState::Resolved;
                    incident.reason = "every alert in the incident resolved".to_owned();
                    let key = (incident.environment.clone(), incident.service.clone(), incident.family.clone());
                    self.prune(&key, now_ms);
                }
            }
            Placement::Opened { incident_id } => {
                let key = key(signal);
                let mut signals = Held::default();
                signals.keep(signal.clone());
                let incident = Incident {
                    id: incident_id.clone(),
                    title: signal.title.clone(),
                    service: signal.service.clone(),
                    environment: signal.environment.clone(),
                    state: if signal.status == SignalStatus::Resolved { IncidentState::Resolved } else { IncidentState::Open },
                    signals,
                    signal_count: 1,
                    opened_at_ms: now_ms,
                    updated_at_ms: now_ms,
                    snapshot_hash: String::new(),
                    decision_ids: Vec::new(),
                    reason: String::new(),
                    diagnoses: 0,
                    model_calls: 0,
                    family: key.2.clone(),
                    in_flight: 0,
                    pipeline_done: false,
                    retry_after: None,
                };
                let resolved = incident.state == IncidentState::Resolved;
                self.by_id.insert(incident_id.clone(), incident);
                if !resolved {
                    self.open_by_key.entry(key.clone()).or_default().push(incident_id.clone());
                }
                self.prune(&key, now_ms);
            }
        }
    }

    /// Plans where each of `signals` goes, in order, as if placed one after another,
    /// without changing anything: the plan is logged first and applied ([`Incidents::apply`])
    /// only once the log has it. Only the incidents the signals touch are copied.
    pub fn plan(&self, signals: &[Signal], now_ms: i64, mut new_id: impl FnMut() -> String) -> Vec<Planned> {
        let mut scratch = Incidents::new(self.window_ms);
        let mut copied: std::collections::HashSet<Key> = std::collections::HashSet::new();
        let mut resolved: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut planned = Vec::with_capacity(signals.len());
        let mut fingerprints: HashMap<Key, Vec<&str>> = HashMap::new();
        for signal in signals.iter().filter(|s| !is_context(s)) {
            fingerprints.entry(key(signal)).or_default().push(&signal.fingerprint);
        }
        for signal in signals {
            if !is_context(signal) && copied.insert(key(signal)) {
                let key = key(signal);
                let named = fingerprints.get(&key).map_or(&[][..], Vec::as_slice);
                for incident in self.candidates(&key, now_ms) {
                    scratch.by_id.insert(incident.id.clone(), incident.for_planning(named));
                }
                let mut ids: Vec<String> = self.candidates(&key, now_ms).map(|i| i.id.clone()).collect();
                ids.reverse();
                scratch.open_by_key.insert(key, ids);
            }
            let placement = scratch.decide(signal, now_ms, &mut new_id);
            scratch.apply(signal, &placement, now_ms);
            // An incident that was not resolved before this plan and is now: its
            // resolution is logged once, with the signal that resolved it.
            let resolves = match &placement {
                Placement::Joined { incident_id, .. } => {
                    self.by_id.get(incident_id).is_some_and(|i| i.state != IncidentState::Resolved)
                        && scratch.by_id.get(incident_id).is_some_and(|i| i.state == IncidentState::Resolved)
                        && resolved.insert(incident_id.clone())
                }
                _ => false,
            };
            let opened = match &placement {
                Placement::Opened { incident_id } => scratch.by_id.get(incident_id).cloned(),
                _ => None,
            };
            planned.push(Planned { placement, resolves, opened });
        }
        planned
    }

    /// Rebuilds the state from the agent's own audit records, in log order, after a
    /// restart. Returns the incidents whose diagnosis never finished. A record of the
    /// agent's that is not the shape the agent writes stops the rebuild: state built
    /// around it would be a guess.
    pub fn restore(&mut self, records: &[arf_audit_client::Record]) -> Result<Vec<String>, Malformed> {
        for record in records {
            self.restore_one(record)?;
        }
        Ok(self.unfinished())
    }

    /// The incidents whose diagnosis (or the logging of its answer) never finished,
    /// or whose latest decision's refusal or rollback was not followed up.
    pub fn unfinished(&self) -> Vec<String> {
        self.by_id
            .values()
            .filter(|i| (!i.pipeline_done || i.retry_after.is_some()) && i.state != IncidentState::Resolved)
            .map(|i| i.id.clone())
            .collect()
    }

    /// Folds one record, in log order, into the state ([`Incidents::restore`]); so a
    /// restart can stream the log rather than hold it.
    pub fn restore_one(&mut self, record: &arf_audit_client::Record) -> Result<(), Malformed> {
        use arf_audit_client::RecordKind;
        if record.writer != "agent" {
            self.follow(record);
            return Ok(());
        }
        {
            let id = record.incident_id.clone();
            match record.kind {
                RecordKind::Incident => {
                    match record.parse::<IncidentRecord>()? {
                        IncidentRecord::Opened { title, service, family, environment, state, .. } => {
                            // Opened by a signal that had already resolved: resolved from
                            // the start, as the agent that logged it applied it.
                            let resolved = state == IncidentState::Resolved.as_str();
                            self.by_id.insert(
                                id.clone(),
                                Incident {
                                    id: id.clone(),
                                    title,
                                    service: service.clone(),
                                    environment: environment.clone(),
                                    state: if resolved { IncidentState::Resolved } else { IncidentState::Open },
                                    signals: Held::default(),
                                    signal_count: 0,
                                    opened_at_ms: record.time_ms,
                                    updated_at_ms: record.time_ms,
                                    snapshot_hash: String::new(),
                                    decision_ids: Vec::new(),
                                    reason: String::new(),
                                    diagnoses: 0,
                                    model_calls: 0,
                                    family: family.clone(),
                                    in_flight: 0,
                                    pipeline_done: false,
                                    retry_after: None,
                                },
                            );
                            let key = (environment, service, family);
                            if !resolved {
                                self.open_by_key.entry(key.clone()).or_default().push(id);
                            }
                            self.prune(&key, record.time_ms);
                        }
                        event => {
                            let Some(incident) = self.by_id.get_mut(&id) else { return Ok(()) };
                            match event {
                                IncidentRecord::Resolved { reason, .. } => {
                                    incident.state = IncidentState::Resolved;
                                    incident.reason = reason;
                                }
                                // A resolution wins over what a diagnosis that was under way
                                // logged after it, as it does in a running agent.
                                IncidentRecord::Escalated { reason, .. } => {
                                    incident.advance(IncidentState::Escalated);
                                    incident.pipeline_done = true;
                                    incident.reason = reason;
                                    incident.retry_after = None;
                                }
                                IncidentRecord::Reattempt { after_decision, attempt, reason, .. } => {
                                    // Back to diagnosing: the next attempt's answer moves it on.
                                    incident.state = IncidentState::Diagnosing;
                                    incident.pipeline_done = false;
                                    incident.reason = format!("attempt {attempt} after decision `{after_decision}`: {reason}");
                                    incident.retry_after = Some(after_decision);
                                }
                                IncidentRecord::Proposed { decision_id, route, .. } => {
                                    incident.advance(IncidentState::Proposed);
                                    incident.pipeline_done = true;
                                    incident.reason = format!("governor routed decision `{decision_id}` as `{route}`");
                                    if !incident.decision_ids.contains(&decision_id) {
                                        incident.decision_ids.push(decision_id);
                                    }
                                }
                                IncidentRecord::Opened { .. } | IncidentRecord::StateSnapshot { .. } => {}
                            }
                            incident.updated_at_ms = record.time_ms;
                            if incident.state == IncidentState::Resolved {
                                let key = (incident.environment.clone(), incident.service.clone(), incident.family.clone());
                                self.prune(&key, record.time_ms);
                            }
                        }
                    }
                }
                RecordKind::Signal => {
                    let SignalRecord { signal, .. } = record.parse()?;
                    match self.by_id.get_mut(&id) {
                        Some(incident) => {
                            incident.signals.keep(signal);
                            incident.signal_count = incident.signal_count.saturating_add(1);
                            incident.updated_at_ms = record.time_ms;
                        }
                        None if id.is_empty() => {
                            self.changes.push_back(signal);
                            while self.changes.len() > MAX_CHANGES {
                                self.changes.pop_front();
                            }
                        }
                        None => {}
                    }
                }
                RecordKind::Snapshot => {
                    let SnapshotRecord { hash, extends, .. } = record.parse()?;
                    if let Some(incident) = self.by_id.get_mut(&id) {
                        // A snapshot extended by an investigation belongs to the diagnosis it extends.
                        if extends.is_none() {
                            incident.diagnoses += 1;
                            // A diagnosis after an attempt is that attempt's follow-up:
                            // a restart from here diagnoses afresh, it does not start another.
                            incident.retry_after = None;
                            // As the diagnosing agent moved it when it took the snapshot:
                            // from now on it takes only its own alerts.
                            incident.advance(IncidentState::Diagnosing);
                        }
                        incident.snapshot_hash = hash;
                    }
                }
                RecordKind::Diagnosis => {
                    let diagnosis = record.parse::<DiagnosisRecord>()?;
                    if let Some(incident) = self.by_id.get_mut(&id) {
                        match (&diagnosis.after_decision, &diagnosis.proposal) {
                            // A next attempt: no model call, and its proposal logged (a
                            // restart sends it if unanswered).
                            (Some(_), _) => incident.retry_after = None,
                            (None, _) => {
                                incident.model_calls = incident.model_calls.saturating_add(1).saturating_add(diagnosis.tool_rounds);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Follows what the governor and the executor logged about an incident held
    /// here: its decision waiting for a person, its action authorized or started,
    /// its outcome, or its decision ending unrun. Each kind is believed only from
    /// the writer that owns it; a record not in its writer's format moves nothing.
    ///
    /// When the incident's latest action failed verification and was rolled back
    /// with attempts left (`with_max_attempts`), or its pathway's precheck refused
    /// it (nothing ran, so no attempt is spent; the bound on diagnoses still holds),
    /// the incident goes back to `diagnosing` and the decision's id comes back: the
    /// caller tries the diagnosis's next grounded hypothesis, or diagnoses again
    /// with what the attempt met in view.
    pub fn follow(&mut self, record: &arf_audit_client::Record) -> Option<String> {
        let max_attempts = self.max_attempts;
        let incident = self.by_id.get_mut(&record.incident_id)?;
        if record.writer == "executor"
            && record.kind == arf_audit_client::RecordKind::Outcome
            && let Ok(outcome) = record.parse::<arf_core::records::OutcomeRecord>()
            && (outcome.outcome == "refused"
                || (outcome.outcome == "rolled_back" && u64::try_from(incident.decision_ids.len()).unwrap_or(u64::MAX) < u64::from(max_attempts)))
            && incident.decision_ids.last() == Some(&outcome.decision_id)
            && incident.state != IncidentState::Resolved
        {
            incident.state = IncidentState::Diagnosing;
            incident.pipeline_done = false;
            let what = if outcome.outcome == "refused" { "was refused by its precheck" } else { "failed verification and was rolled back" };
            incident.reason = format!(
                "`{}` on `{}` {what}; trying the next hypothesis, or diagnosing again with that in view (attempt {})",
                outcome.pathway,
                outcome.target,
                incident.decision_ids.len() + 1
            );
            incident.updated_at_ms = record.time_ms;
            incident.retry_after = Some(outcome.decision_id.clone());
            return Some(outcome.decision_id);
        }
        self.follow_state(record);
        None
    }

    fn follow_state(&mut self, record: &arf_audit_client::Record) {
        use arf_audit_client::RecordKind;
        use arf_core::decision::Route;
        use arf_core::records::{AuthorizedRecord, DecidedRecord, DecisionRecordKind, DecisionStateRecord, ExecutionStartedRecord, OutcomeRecord};
        let Some(incident) = self.by_id.get_mut(&record.incident_id) else { return };
        let (to, why) = match (record.writer.as_str(), record.kind) {
            ("governor", RecordKind::Decision) => match DecisionRecordKind::of(&record.payload) {
                DecisionRecordKind::Decided => match record.parse::<DecidedRecord>() {
                    Ok(DecidedRecord { decision, .. }) => {
                        if !incident.decision_ids.contains(&decision.decision_id) {
                            incident.decision_ids.push(decision.decision_id.clone());
                        }
                        if decision.mode == arf_core::decision::Mode::Shadow {
                            // Nothing waits and nothing runs: people handle the incident,
                            // and it says what ARF would have done.
                            incident.reason = format!(
                                "shadow mode: decision `{}` would have been `{}` for `{}` on `{}`; nothing was sent",
                                decision.decision_id,
                                decision.route.as_str(),
                                decision.remediation.pathway,
                                decision.remediation.target
                            );
                            incident.updated_at_ms = record.time_ms;
                            return;
                        }
                        match decision.route {
                            Route::Approval | Route::Acknowledge => (IncidentState::Waiting, format!("decision `{}` waits for a person", decision.decision_id)),
                            Route::Autonomous | Route::Deny => return,
                        }
                    }
                    Err(_) => return,
                },
                DecisionRecordKind::Authorized => match record.parse::<AuthorizedRecord>() {
                    Ok(authorized) => (IncidentState::Acting, format!("decision `{}` authorized", authorized.decision_id)),
                    Err(_) => return,
                },
                DecisionRecordKind::State => match record.parse::<DecisionStateRecord>() {
                    // Only the incident's latest decision speaks for it.
                    Ok(state) if incident.decision_ids.last() == Some(&state.decision_id) => match state.state.as_str() {
                        "rejected" | "expired" | "dispatch_failed" | "authorization_failed" => {
                            (IncidentState::Escalated, format!("decision `{}` ended `{}`: {}", state.decision_id, state.state, state.detail))
                        }
                        _ => return,
                    },
                    _ => return,
                },
                DecisionRecordKind::Event => return,
            },
            // A person's rejection ends the decision: the incident needs a person.
            ("governor", RecordKind::Approval) => match record.parse::<arf_core::records::ApprovalRecord>() {
                Ok(approval) if approval.state.as_deref() == Some("rejected") && incident.decision_ids.last() == Some(&approval.decision_id) => (
                    IncidentState::Escalated,
                    format!("decision `{}` was rejected by `{}`: {}", approval.decision_id, approval.identity, approval.reason.unwrap_or_default()),
                ),
                _ => return,
            },
            ("executor", RecordKind::ExecutionStarted) => match record.parse::<ExecutionStartedRecord>() {
                Ok(started) => (IncidentState::Acting, format!("`{}` on `{}` started", started.pathway, started.target)),
                Err(_) => return,
            },
            ("executor", RecordKind::Outcome) => match record.parse::<OutcomeRecord>() {
                Ok(outcome) => {
                    let on = format!("`{}` on `{}`", outcome.pathway, outcome.target);
                    match outcome.outcome.as_str() {
                        "verified" => (IncidentState::Verified, format!("{on}: verified")),
                        "rolled_back" => (IncidentState::RolledBack, format!("{on}: rolled_back")),
                        "failed" | "rollback_failed" => (IncidentState::Failed, format!("{on}: {}", outcome.outcome)),
                        // Nothing ran: the incident is as it was, and needs a person.
                        "refused" => (IncidentState::Escalated, format!("{on} was refused by its precheck, so nothing ran: {}", outcome.detail)),
                        "not_run" => (IncidentState::Escalated, format!("{on} was logged as started but never ran, so nothing changed: {}", outcome.detail)),
                        _ => return,
                    }
                }
                Err(_) => return,
            },
            _ => return,
        };
        if incident.advance(to) {
            incident.reason = why;
            incident.updated_at_ms = record.time_ms;
        }
    }

    /// Changes to the incident's service and environment in the `lookback_ms` before it opened.
    pub fn changes_for(&self, incident: &Incident, lookback_ms: i64) -> Vec<&Signal> {
        self.changes
            .iter()
            .filter(|c| c.service == incident.service && c.environment == incident.environment)
            .filter(|c| c.observed_at_ms >= incident.opened_at_ms - lookback_ms && c.observed_at_ms <= incident.updated_at_ms)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(title: &str, service: &str, status: SignalStatus) -> Signal {
        let mut s = Signal {
            id: String::new(),
            source: "test".into(),
            kind: SignalKind::Alert,
            status,
            title: title.into(),
            description: String::new(),
            severity: "critical".into(),
            service: service.into(),
            environment: "prod".into(),
            labels: [("alertname".to_owned(), title.to_owned())].into(),
            annotations: BTreeMap::new(),
            observed_at_ms: 0,
            fingerprint: String::new(),
        };
        s.fingerprint = s.compute_fingerprint();
        s
    }

    /// What an incident keeps about its signals for grouping stays what its signals
    /// say, through replacements, resolutions, changed identities and the cap; and
    /// planning a batch from the reduced copy places as the whole state would.
    #[test]
    fn held_counts_stay_true_and_plans_match_placing_one_by_one() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut batched, mut single) = (Incidents::new(i64::MAX), Incidents::new(i64::MAX));
        let (mut a, mut b) = (0, 0);
        for round in 0..60 {
            let batch: Vec<Signal> = (0..1 + next(12))
                .map(|_| {
                    let status = if next(3) == 0 { SignalStatus::Resolved } else { SignalStatus::Firing };
                    let mut s = signal(["Errors", "Latency", "Memory"][next(3) as usize], "web", status);
                    // Up to 400 instances: past the cap of 256 fingerprints.
                    s.labels.insert("pod".into(), format!("web-{}", next(400)));
                    s.fingerprint = s.compute_fingerprint();
                    s
                })
                .collect();
            let planned = batched.place_batch(&batch, round, || { a += 1; format!("inc-{a}") });
            let one_by_one: Vec<Placement> = batch.iter().map(|s| single.place(s, round, || { b += 1; format!("inc-{b}") })).collect();
            assert_eq!(planned, one_by_one, "round {round}");
            for incident in batched.by_id.values() {
                let held = &incident.signals;
                assert_eq!(held.len(), held.signals.len());
                assert!(held.len() <= MAX_SIGNALS_PER_INCIDENT);
                assert_eq!(held.firing, held.values().filter(|s| s.status != SignalStatus::Resolved).count());
                let mut identities: BTreeMap<String, usize> = BTreeMap::new();
                for s in held.values() {
                    *identities.entry(identity(s).to_owned()).or_default() += 1;
                }
                assert_eq!(held.identities, identities);
            }
        }
        assert!(batched.by_id.values().any(|i| i.signals.len() == MAX_SIGNALS_PER_INCIDENT), "the cap was reached");
    }

    /// A state snapshot keeps every incident whole: stored, loaded and placed into
    /// again, it behaves as the original does.
    #[test]
    fn a_stored_state_loads_back_and_places_signals_as_the_original() {
        let mut original = Incidents::new(i64::MAX);
        let mut n = 0;
        for round in 0..40 {
            let mut s = signal(["Errors", "Latency", "Memory"][round % 3], ["web", "api"][round % 2], if round % 5 == 0 { SignalStatus::Resolved } else { SignalStatus::Firing });
            s.labels.insert("pod".into(), format!("p-{}", round % 7));
            s.fingerprint = s.compute_fingerprint();
            original.place(&s, i64::try_from(round).unwrap(), || { n += 1; format!("inc-{n}") });
        }
        let stored = original.to_stored();
        let mut loaded = Incidents::new(i64::MAX);
        loaded.load_stored(serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap());
        assert_eq!(loaded.to_stored(), stored);
        for incident in loaded.by_id.values() {
            let was = &original.by_id[&incident.id].signals;
            assert_eq!((incident.signals.len(), incident.signals.firing, &incident.signals.identities), (was.len(), was.firing, &was.identities));
        }
        let mut next = signal("Errors", "web", SignalStatus::Firing);
        next.labels.insert("pod".into(), "p-new".into());
        next.fingerprint = next.compute_fingerprint();
        let (mut a, mut b) = (n, n);
        assert_eq!(original.place(&next, 50, || { a += 1; format!("inc-{a}") }), loaded.place(&next, 50, || { b += 1; format!("inc-{b}") }));
    }

    #[test]
    fn a_storm_is_one_incident() {
        let mut incidents = Incidents::new(60_000);
        let mut n = 0;
        let first = incidents.place(&signal("HighErrorRate", "web", SignalStatus::Firing), 0, || { n += 1; format!("inc-{n}") });
        assert_eq!(first, Placement::Opened { incident_id: "inc-1".into() });
        for t in 1..1000 {
            let p = incidents.place(&signal("HighErrorRate", "web", SignalStatus::Firing), t, || "inc-x".into());
            assert_eq!(p, Placement::Joined { incident_id: "inc-1".into(), duplicate: true });
        }
        let other = incidents.place(&signal("HighLatency", "web", SignalStatus::Firing), 2000, || "inc-x".into());
        assert_eq!(other, Placement::Joined { incident_id: "inc-1".into(), duplicate: false });
        assert_eq!(incidents.by_id.len(), 1);
        assert_eq!(incidents.by_id["inc-1"].signal_count, 1001);
    }

    #[test]
    fn resolution_closes_and_a_new_alert_reopens() {
        let mut incidents = Incidents::new(60_000);
        incidents.place(&signal("Down", "web", SignalStatus::Firing), 0, || "inc-1".into());
        incidents.place(&signal("Down", "web", SignalStatus::Resolved), 10, || "inc-x".into());
        assert_eq!(incidents.by_id["inc-1"].state, IncidentState::Resolved);
        let again = incidents.place(&signal("Down", "web", SignalStatus::Firing), 20, || "inc-2".into());
        assert_eq!(again, Placement::Opened { incident_id: "inc-2".into() });
    }

    #[test]
    fn an_escalated_incident_keeps_its_alerts_but_takes_no_new_one() {
        let mut incidents = Incidents::new(60_000);
        incidents.place(&signal("Down", "web", SignalStatus::Firing), 0, || "inc-1".into());
        incidents.by_id.get_mut("inc-1").unwrap().state = IncidentState::Escalated;
        let again = incidents.place(&signal("Down", "web", SignalStatus::Firing), 10, || "inc-x".into());
        assert_eq!(again, Placement::Joined { incident_id: "inc-1".into(), duplicate: true });
        let unrelated = incidents.place(&signal("HighMemoryLoad", "web", SignalStatus::Firing), 20, || "inc-2".into());
        assert_eq!(unrelated, Placement::Opened { incident_id: "inc-2".into() }, "a new alert gets its own diagnosis");
        let next = incidents.place(&signal("BigAlert", "web", SignalStatus::Firing), 30, || "inc-x".into());
        assert_eq!(next, Placement::Joined { incident_id: "inc-2".into(), duplicate: false });
        // Once escalated, the same alert from another replica still joins it.
        incidents.by_id.get_mut("inc-2").unwrap().state = IncidentState::Escalated;
        let mut replica = signal("HighMemoryLoad", "web", SignalStatus::Firing);
        replica.labels.insert("pod".into(), "web-7".into());
        replica.fingerprint = replica.compute_fingerprint();
        let joined = incidents.place(&replica, 40, || "inc-x".into());
        assert_eq!(joined, Placement::Joined { incident_id: "inc-2".into(), duplicate: false }, "the same alert from another replica");
    }

    #[test]
    fn an_incident_past_its_snapshot_takes_only_its_own_alerts() {
        for state in [IncidentState::Diagnosing, IncidentState::Proposed] {
            let mut incidents = Incidents::new(60_000);
            incidents.place(&signal("HighErrorRate", "web", SignalStatus::Firing), 0, || "inc-1".into());
            incidents.by_id.get_mut("inc-1").unwrap().state = state;
            let repeat = incidents.place(&signal("HighErrorRate", "web", SignalStatus::Firing), 10, || "inc-x".into());
            assert_eq!(repeat, Placement::Joined { incident_id: "inc-1".into(), duplicate: true }, "{state:?}");
            let unrelated = incidents.place(&signal("HighMemoryLoad", "web", SignalStatus::Firing), 20, || "inc-2".into());
            assert_eq!(unrelated, Placement::Opened { incident_id: "inc-2".into() }, "{state:?}: its diagnosis would never see it");
            // Each alert keeps going to the incident that holds it, whichever is newer.
            let old = incidents.place(&signal("HighErrorRate", "web", SignalStatus::Firing), 30, || "inc-x".into());
            assert_eq!(old.incident_id(), "inc-1", "{state:?}");
            let new = incidents.place(&signal("HighMemoryLoad", "web", SignalStatus::Firing), 40, || "inc-x".into());
            assert_eq!(new.incident_id(), "inc-2", "{state:?}");
            // The first resolves; the second still groups its own alerts.
            incidents.place(&signal("HighErrorRate", "web", SignalStatus::Resolved), 50, || "inc-x".into());
            assert_eq!(incidents.by_id["inc-1"].state, IncidentState::Resolved);
            let again = incidents.place(&signal("HighMemoryLoad", "web", SignalStatus::Firing), 60, || "inc-x".into());
            assert_eq!(again.incident_id(), "inc-2", "{state:?}");
        }
    }

    #[test]
    fn one_batch_opens_one_incident_for_the_alerts_it_brings() {
        let mut incidents = Incidents::new(60_000);
        let batch = [signal("HighErrorRate", "web", SignalStatus::Firing), signal("HighLatency", "web", SignalStatus::Firing), signal("Down", "api", SignalStatus::Firing)];
        let mut n = 0;
        let placed = incidents.place_batch(&batch, 0, || { n += 1; format!("inc-{n}") });
        assert_eq!(placed[0], Placement::Opened { incident_id: "inc-1".into() });
        assert_eq!(placed[1], Placement::Joined { incident_id: "inc-1".into(), duplicate: false });
        assert_eq!(placed[2], Placement::Opened { incident_id: "inc-2".into() });
    }

    #[test]
    fn a_plan_holds_the_incidents_it_joins_until_released() {
        let mut incidents = Incidents::new(60_000);
        incidents.place(&signal("HighErrorRate", "web", SignalStatus::Firing), 0, || "inc-1".into());
        let planned = incidents.plan(&[signal("HighLatency", "web", SignalStatus::Firing)], 10, || "inc-x".into());
        assert_eq!(planned[0].placement, Placement::Joined { incident_id: "inc-1".into(), duplicate: false }, "the snapshot is not taken yet");
        incidents.hold(&planned, true);
        assert_eq!(incidents.by_id["inc-1"].in_flight, 1, "a diagnosis waits for it");
        incidents.hold(&planned, false);
        assert_eq!(incidents.by_id["inc-1"].in_flight, 0);
    }

    #[test]
    fn done_incidents_leave_memory_and_incident_memory_keeps_a_summary() {
        let mut incidents = Incidents::new(1_000);
        incidents.place(&signal("Down", "web", SignalStatus::Firing), 0, || "inc-1".into());
        incidents.place(&signal("Down", "web", SignalStatus::Resolved), 10, || "inc-x".into());
        incidents.place(&signal("Slow", "api", SignalStatus::Firing), 20, || "inc-2".into());
        let escalated = incidents.by_id.get_mut("inc-2").unwrap();
        escalated.state = IncidentState::Escalated;
        escalated.pipeline_done = true;
        incidents.place(&signal("Busy", "db", SignalStatus::Firing), 30, || "inc-3".into());
        incidents.by_id.get_mut("inc-3").unwrap().state = IncidentState::Diagnosing;
        assert_eq!(incidents.evict(500, 100), 1, "the resolved one leaves once untouched for the retention");
        assert!(!incidents.by_id.contains_key("inc-1"));
        assert_eq!(incidents.past.back().map(|s| s.id.as_str()), Some("inc-1"));
        // The escalated one stays while its alerts may still join it (the window).
        let again = incidents.place(&signal("Slow", "api", SignalStatus::Firing), 600, || "inc-x".into());
        assert_eq!(again.incident_id(), "inc-2");
        assert_eq!(incidents.evict(1_100, 100), 1, "past the window and the retention, it leaves");
        assert!(incidents.by_id.contains_key("inc-3"), "an incident being diagnosed never leaves");
        let later = incidents.place(&signal("Slow", "api", SignalStatus::Firing), 1_200, || "inc-4".into());
        assert_eq!(later, Placement::Opened { incident_id: "inc-4".into() });
    }

    #[test]
    fn an_incident_follows_its_decision_and_outcome_forward_only() {
        use arf_audit_client::RecordKind;
        let mut incidents = Incidents::new(60_000);
        incidents.place(&signal("Down", "web", SignalStatus::Firing), 0, || "inc-1".into());
        incidents.by_id.get_mut("inc-1").unwrap().state = IncidentState::Proposed;
        let record = |seq: u64, writer: &str, kind: RecordKind, payload: serde_json::Value| arf_audit_client::Record {
            seq,
            time_ms: i64::try_from(seq).unwrap(),
            writer: writer.into(),
            incident_id: "inc-1".into(),
            kind,
            payload,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let mut body = arf_core::fixtures::body();
        body.incident_id = "inc-1".into();
        let decided = arf_core::records::encode(&arf_core::fixtures::decided(&body, arf_core::decision::Route::Approval, 1, &[]));
        let state = |incidents: &Incidents| incidents.by_id["inc-1"].state;
        // From another writer, nothing moves.
        incidents.follow(&record(1, "agent", RecordKind::Decision, decided.clone()));
        assert_eq!(state(&incidents), IncidentState::Proposed);
        incidents.follow(&record(2, "governor", RecordKind::Decision, decided));
        assert_eq!(state(&incidents), IncidentState::Waiting);
        assert_eq!(incidents.by_id["inc-1"].decision_ids, ["dec-1"]);
        let outcome = |outcome: &str| outcome_payload("dec-1", outcome);
        incidents.follow(&record(3, "executor", RecordKind::Outcome, outcome("verified")));
        assert_eq!(state(&incidents), IncidentState::Verified);
        // Never backwards: a late `proposed` from the pipeline, or another outcome.
        assert!(!incidents.by_id.get_mut("inc-1").unwrap().advance(IncidentState::Proposed));
        incidents.follow(&record(4, "executor", RecordKind::Outcome, outcome("failed")));
        assert_eq!(state(&incidents), IncidentState::Verified);
        // A resolution wins from anywhere.
        assert!(incidents.by_id.get_mut("inc-1").unwrap().advance(IncidentState::Resolved));
    }

    /// An executor's `outcome` record of `decision` on `restart_service`.
    fn outcome_payload(decision: &str, outcome: &str) -> serde_json::Value {
        arf_core::records::encode(&arf_core::records::OutcomeRecord {
            decision_id: decision.into(),
            pathway: "restart_service".into(),
            target: "api".into(),
            outcome: outcome.into(),
            detail: String::new(),
            recovered: false,
            interrupted_in: None,
            leftovers: Vec::new(),
            precheck: None,
        })
    }

    /// A person's rejection of the incident's decision escalates it (it stayed
    /// `waiting` before: the follower read only the governor's decision records).
    #[test]
    fn a_rejected_decision_escalates_its_incident() {
        use arf_audit_client::RecordKind;
        let mut incidents = Incidents::new(60_000);
        incidents.place(&signal("Down", "web", SignalStatus::Firing), 0, || "inc-1".into());
        let incident = incidents.by_id.get_mut("inc-1").unwrap();
        (incident.state, incident.decision_ids) = (IncidentState::Waiting, vec!["dec-1".into()]);
        let rejection = |writer: &str| arf_audit_client::Record {
            seq: 1,
            time_ms: 1,
            writer: writer.into(),
            incident_id: "inc-1".into(),
            kind: RecordKind::Approval,
            payload: arf_core::records::encode(&arf_core::records::ApprovalRecord {
                decision_id: "dec-1".into(),
                identity: "alice".into(),
                role: "oncall".into(),
                verdict: arf_core::decision::Verdict::Reject,
                at_ms: 1,
                comment: None,
                reason: Some("wrong service".into()),
                approvals_given: None,
                approvals_required: None,
                state: Some("rejected".into()),
            }),
            prev_hash: String::new(),
            hash: String::new(),
        };
        incidents.follow(&rejection("agent"));
        assert_eq!(incidents.by_id["inc-1"].state, IncidentState::Waiting, "only the governor's word counts");
        incidents.follow(&rejection("governor"));
        assert_eq!(incidents.by_id["inc-1"].state, IncidentState::Escalated);
        assert!(incidents.by_id["inc-1"].reason.contains("rejected by `alice`: wrong service"), "{}", incidents.by_id["inc-1"].reason);
    }

    /// A rolled-back action of the latest decision sends the incident back to
    /// diagnosing while it has attempts left, and only then; a refused one (nothing
    /// ran) does whatever the attempts, the bound on diagnoses being the agent's.
    #[test]
    fn a_rollback_asks_for_the_next_attempt_within_the_bound() {
        use arf_audit_client::RecordKind;
        let outcome = |decision: &str, outcome: &str| arf_audit_client::Record {
            seq: 1,
            time_ms: 1,
            writer: "executor".into(),
            incident_id: "inc-1".into(),
            kind: RecordKind::Outcome,
            payload: outcome_payload(decision, outcome),
            prev_hash: String::new(),
            hash: String::new(),
        };
        let mut incidents = Incidents::new(60_000).with_max_attempts(2);
        incidents.place(&signal("Down", "web", SignalStatus::Firing), 0, || "inc-1".into());
        let incident = incidents.by_id.get_mut("inc-1").unwrap();
        (incident.state, incident.decision_ids) = (IncidentState::Acting, vec!["dec-1".into()]);
        assert_eq!(incidents.follow(&outcome("dec-0", "rolled_back")), None, "not the latest decision");
        assert_eq!(incidents.follow(&outcome("dec-1", "failed")), None, "a failed action (no verified rollback) is not retried");
        incidents.by_id.get_mut("inc-1").unwrap().state = IncidentState::Acting;
        assert_eq!(incidents.follow(&outcome("dec-1", "rolled_back")).as_deref(), Some("dec-1"));
        assert_eq!(incidents.by_id["inc-1"].state, IncidentState::Diagnosing);
        assert!(incidents.by_id["inc-1"].reason.contains("trying the next hypothesis, or diagnosing again with that in view (attempt 2)"), "{}", incidents.by_id["inc-1"].reason);
        // The second attempt is the last.
        let incident = incidents.by_id.get_mut("inc-1").unwrap();
        (incident.state, incident.decision_ids) = (IncidentState::Acting, vec!["dec-1".into(), "dec-2".into()]);
        assert_eq!(incidents.follow(&outcome("dec-2", "rolled_back")), None);
        assert_eq!(incidents.by_id["inc-1"].state, IncidentState::RolledBack);

        // A start the executor never ran (its answer was lost): nothing changed,
        // nothing is retried on its own, and a person is told why.
        let incident = incidents.by_id.get_mut("inc-1").unwrap();
        incident.state = IncidentState::Acting;
        assert_eq!(incidents.follow(&outcome("dec-2", "not_run")), None);
        assert_eq!(incidents.by_id["inc-1"].state, IncidentState::Escalated);
        assert!(incidents.by_id["inc-1"].reason.contains("was logged as started but never ran, so nothing changed"), "{}", incidents.by_id["inc-1"].reason);

        // A precheck's refusal: nothing ran, so it spends no attempt; the agent
        // tries again even with one attempt allowed.
        let mut incidents = Incidents::new(60_000).with_max_attempts(1);
        incidents.place(&signal("Down", "web", SignalStatus::Firing), 0, || "inc-1".into());
        let incident = incidents.by_id.get_mut("inc-1").unwrap();
        (incident.state, incident.decision_ids) = (IncidentState::Acting, vec!["dec-1".into(), "dec-2".into()]);
        assert_eq!(incidents.follow(&outcome("dec-2", "refused")).as_deref(), Some("dec-2"));
        assert!(incidents.by_id["inc-1"].reason.contains("was refused by its precheck; trying the next hypothesis"), "{}", incidents.by_id["inc-1"].reason);
        assert_eq!(incidents.by_id["inc-1"].retry_after.as_deref(), Some("dec-2"));
        // Due until followed up, even once the proposal's answer is logged (a restart
        // resumes it); an escalation settles it.
        incidents.by_id.get_mut("inc-1").unwrap().pipeline_done = true;
        assert_eq!(incidents.unfinished(), ["inc-1"]);
        let escalated = arf_audit_client::Record {
            seq: 2,
            time_ms: 2,
            writer: "agent".into(),
            incident_id: "inc-1".into(),
            kind: RecordKind::Incident,
            payload: arf_core::records::encode(&IncidentRecord::escalated("a person has it")),
            prev_hash: String::new(),
            hash: String::new(),
        };
        incidents.restore_one(&escalated).unwrap();
        assert_eq!(incidents.by_id["inc-1"].retry_after, None);
        assert!(incidents.unfinished().is_empty());
        // A resolved incident is not tried again.
        let incident = incidents.by_id.get_mut("inc-1").unwrap();
        (incident.state, incident.retry_after) = (IncidentState::Resolved, None);
        assert_eq!(incidents.follow(&outcome("dec-2", "refused")), None);
    }

    #[test]
    fn alerts_and_findings_of_one_service_are_separate_incidents() {
        let mut incidents = Incidents::new(60_000);
        let mut finding = signal("CVE-2019-1549", "web", SignalStatus::Firing);
        finding.kind = SignalKind::Finding;
        finding.fingerprint = finding.compute_fingerprint();
        incidents.place(&finding, 0, || "inc-1".into());
        let alert = incidents.place(&signal("HighErrorRate", "web", SignalStatus::Firing), 10, || "inc-2".into());
        assert_eq!(alert, Placement::Opened { incident_id: "inc-2".into() });
    }

    #[test]
    fn the_window_bounds_an_incident() {
        let mut incidents = Incidents::new(100);
        incidents.place(&signal("Down", "web", SignalStatus::Firing), 0, || "inc-1".into());
        let later = incidents.place(&signal("Down", "web", SignalStatus::Firing), 101, || "inc-2".into());
        assert_eq!(later, Placement::Opened { incident_id: "inc-2".into() });
    }
}

/// An incident as a state snapshot keeps it: every field, the derived ones
/// (signal counts, alert identities) left to be computed again on load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredIncident {
    pub id: String,
    pub title: String,
    pub service: String,
    pub environment: String,
    pub state: IncidentState,
    pub signals: Vec<Signal>,
    pub signal_count: u32,
    pub opened_at_ms: i64,
    pub updated_at_ms: i64,
    pub snapshot_hash: String,
    pub decision_ids: Vec<String>,
    pub reason: String,
    pub diagnoses: u32,
    pub model_calls: u32,
    pub family: String,
    pub pipeline_done: bool,
    pub retry_after: Option<String>,
}

/// [`Incidents`] as a state snapshot keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredIncidents {
    pub incidents: Vec<StoredIncident>,
    pub open_by_key: Vec<(Key, Vec<String>)>,
    pub changes: Vec<Signal>,
    pub past: Vec<Summary>,
}

impl Incidents {
    /// The state as a snapshot keeps it; in-flight work (none while folding the log) is not kept.
    pub fn to_stored(&self) -> StoredIncidents {
        let mut open_by_key: Vec<(Key, Vec<String>)> = self.open_by_key.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        open_by_key.sort();
        StoredIncidents {
            incidents: self
                .by_id
                .values()
                .map(|i| StoredIncident {
                    id: i.id.clone(),
                    title: i.title.clone(),
                    service: i.service.clone(),
                    environment: i.environment.clone(),
                    state: i.state,
                    signals: i.signals.values().cloned().collect(),
                    signal_count: i.signal_count,
                    opened_at_ms: i.opened_at_ms,
                    updated_at_ms: i.updated_at_ms,
                    snapshot_hash: i.snapshot_hash.clone(),
                    decision_ids: i.decision_ids.clone(),
                    reason: i.reason.clone(),
                    diagnoses: i.diagnoses,
                    model_calls: i.model_calls,
                    family: i.family.clone(),
                    pipeline_done: i.pipeline_done,
                    retry_after: i.retry_after.clone(),
                })
                .collect(),
            open_by_key,
            changes: self.changes.iter().cloned().collect(),
            past: self.past.iter().cloned().collect(),
        }
    }

    /// Replaces the state with a snapshot's, keeping this value's settings.
    pub fn load_stored(&mut self, stored: StoredIncidents) {
        self.by_id = stored
            .incidents
            .into_iter()
            .map(|i| {
                let mut signals = Held::default();
                for signal in i.signals {
                    signals.keep(signal);
                }
                let incident = Incident {
                    id: i.id.clone(),
                    title: i.title,
                    service: i.service,
                    environment: i.environment,
                    state: i.state,
                    signals,
                    signal_count: i.signal_count,
                    opened_at_ms: i.opened_at_ms,
                    updated_at_ms: i.updated_at_ms,
                    snapshot_hash: i.snapshot_hash,
                    decision_ids: i.decision_ids,
                    reason: i.reason,
                    diagnoses: i.diagnoses,
                    model_calls: i.model_calls,
                    family: i.family,
                    in_flight: 0,
                    pipeline_done: i.pipeline_done,
                    retry_after: i.retry_after,
                };
                (i.id, incident)
            })
            .collect();
        self.open_by_key = stored.open_by_key.into_iter().collect();
        self.changes = stored.changes.into_iter().collect();
        self.past = stored.past.into_iter().collect();
    }
}
