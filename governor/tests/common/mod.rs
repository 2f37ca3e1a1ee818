//! A real audit log and a real governor on loopback, with temp dirs, token files,
//! pathway files and a clock the test moves.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arf_audit::{AuditClient, Record, RecordKind};
use arf_core::target::{Inventory, Target};
use arf_governor::{Config, Identity};
use arf_proto::v1 as pb;
use arf_proto::v1::governor_client::GovernorClient;
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// A reversible, low-risk pathway.
pub const RESTART: &str = r#"
name = "restart_service"
description = "Restart the service's pods one at a time."
target_kind = "service"
base_risk = 0.2
blast_radius = 0.3
parameters = { type = "object", additionalProperties = false, properties = { reason = { type = "string", maxLength = 200 } } }
action = [{ kind = "http", url = "{{target.url}}/restart" }]
rollback = [{ kind = "http", url = "{{target.url}}/start" }]
[verify]
window_ms = 1000
probes = [{ kind = "http", name = "health", url = "{{target.url}}/health" }]
"#;

/// A pathway that touches nearly everything at once.
pub const DRAIN: &str = r#"
name = "drain_all"
description = "Drain every node of the service at once."
target_kind = "service"
base_risk = 0.3
blast_radius = 0.9
parameters = { type = "object", additionalProperties = false, properties = {} }
action = [{ kind = "http", url = "{{target.url}}/drain" }]
rollback = [{ kind = "http", url = "{{target.url}}/undrain" }]
[verify]
window_ms = 1000
probes = [{ kind = "http", name = "health", url = "{{target.url}}/health" }]
"#;

/// An irreversible pathway.
pub const PURGE: &str = r#"
name = "purge_cache"
description = "Purge the service's cache; it cannot be restored."
target_kind = "service"
base_risk = 0.6
blast_radius = 0.5
irreversible = true
parameters = { type = "object", additionalProperties = false, properties = {} }
action = [{ kind = "http", url = "{{target.url}}/purge" }]
[verify]
window_ms = 1000
probes = [{ kind = "http", name = "health", url = "{{target.url}}/health" }]
"#;

/// Another reversible, low-risk pathway: a second action on the same target.
pub const RECYCLE: &str = r#"
name = "recycle_service"
description = "Recycle the service's worker processes one at a time."
target_kind = "service"
base_risk = 0.2
blast_radius = 0.3
parameters = { type = "object", additionalProperties = false, properties = { reason = { type = "string", maxLength = 200 } } }
action = [{ kind = "http", url = "{{target.url}}/recycle" }]
rollback = [{ kind = "http", url = "{{target.url}}/start" }]
[verify]
window_ms = 1000
probes = [{ kind = "http", name = "health", url = "{{target.url}}/health" }]
"#;

pub const PATHWAYS: &[(&str, &str)] = &[("restart.toml", RESTART), ("drain.toml", DRAIN), ("purge.toml", PURGE), ("recycle.toml", RECYCLE)];

/// Identity, role: the agent, three people and a dashboard.
pub const IDENTITIES: &[(&str, &str)] = &[
    ("agent", "agent"),
    ("alice", "oncall"),
    ("bob", "oncall"),
    ("carol", "security"),
    ("dave", "admin"),
    ("dash", "tooling"),
];

pub fn target(environment: &str, security_sensitive: bool) -> Target {
    Target {
        kind: "service".to_owned(),
        service: "web".to_owned(),
        environment: environment.to_owned(),
        tier: "standard".to_owned(),
        security_sensitive,
        facts: BTreeMap::from([("url".to_owned(), "http://127.0.0.1:9".to_owned())]),
        depends_on: Vec::new(),
    }
}

pub fn inventory() -> Inventory {
    BTreeMap::from([
        // The web service depends on its database; payments is another service.
        ("web-staging".to_owned(), Target { depends_on: vec!["web-db-staging".to_owned()], ..target("staging", false) }),
        ("web-db-staging".to_owned(), Target { service: "web-db".to_owned(), ..target("staging", false) }),
        ("payments-staging".to_owned(), Target { service: "payments".to_owned(), ..target("staging", false) }),
        ("web-prod".to_owned(), target("production", false)),
        ("vault-staging".to_owned(), target("staging", true)),
        ("web-qa".to_owned(), target("qa", false)),
        ("db-prod".to_owned(), Target { kind: "database".to_owned(), ..target("production", false) }),
    ])
}

pub fn default_policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

/// A loopback address nothing listens on.
pub async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

pub fn write_token(path: &Path, name: &str) -> String {
    let token = format!("{name}-token-{}", "0123456789abcdef".repeat(3));
    std::fs::write(path, &token).unwrap();
    token
}

/// What to start.
pub struct Setup {
    pub policies_dir: PathBuf,
    pub decision_ttl_secs: u64,
    /// `None`: a closed port.
    pub executor_addr: Option<String>,
    /// False: the governor's audit address is a closed port.
    pub audit: bool,
    pub guard_rails: arf_governor::guard::GuardRails,
    /// Guard-rail state saved by an earlier governor, found at start.
    pub guard_state: Option<arf_governor::guard::GuardState>,
    /// How long settled decisions stay in memory.
    pub retain_decisions_secs: u64,
    /// `[notify]`.
    pub notify: Option<arf_governor::notify::NotifyConfig>,
    /// `[[governor.modes]]` and `[governor.graduation]`.
    pub modes: Vec<arf_governor::graduation::ModeRule>,
    pub graduation: arf_governor::graduation::Graduation,
    /// The log and the governors' leadership in this (migrated) database: the
    /// governor is replica `governor-a`, with a one-second lease.
    pub postgres: Option<arf_pg::Settings>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            policies_dir: default_policies(),
            decision_ttl_secs: 900,
            executor_addr: None,
            audit: true,
            guard_rails: Default::default(),
            guard_state: None,
            retain_decisions_secs: arf_governor::config::default_retain_decisions_secs(),
            notify: None,
            modes: Vec::new(),
            graduation: Default::default(),
            postgres: None,
        }
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub governor: GovernorClient<Channel>,
    /// Reads the log, with the governor's writer token.
    pub audit: AuditClient,
    pub tokens: BTreeMap<String, String>,
    pub clock: Arc<AtomicI64>,
    audit_server: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>)>,
    /// How the audit log was started, to start it again on the same address and files.
    audit_config: Option<arf_audit::Config>,
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

fn stopper() -> (tokio::sync::oneshot::Sender<()>, impl Future<Output = ()> + Send + 'static) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    (stop, async move {
        let _ = stopped.await;
    })
}

/// Writes tokens, pathways and a config into a temp dir; starts nothing.
pub fn prepare(setup: &Setup, dir: &Path) -> (Config, BTreeMap<String, String>) {
    let catalog_dir = dir.join("pathways");
    std::fs::create_dir_all(&catalog_dir).unwrap();
    for (name, text) in PATHWAYS {
        std::fs::write(catalog_dir.join(name), text).unwrap();
    }
    let mut tokens = BTreeMap::new();
    let mut identities = Vec::new();
    for (name, role) in IDENTITIES {
        let path = dir.join(format!("{name}.token"));
        tokens.insert((*name).to_owned(), write_token(&path, name));
        identities.push(Identity { name: (*name).to_owned(), role: (*role).to_owned(), token_file: Some(path), token_sha256: None, services: Vec::new(), environments: Vec::new() });
    }
    write_token(&dir.join("governor-audit.token"), "governor");
    write_token(&dir.join("agent-audit.token"), "agent");
    write_token(&dir.join("executor-audit.token"), "executor");
    arf_core::keys::load_or_generate(&dir.join("audit-checkpoint.key")).unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("governor"),
        audit_addr: arf_governor::config::default_audit_addr(),
        audit_token_file: dir.join("governor-audit.token"),
        executor_addr: setup.executor_addr.clone().unwrap_or_else(arf_governor::config::default_executor_addr),
        executor_token_file: None,
        mtls: None,
        insecure_loopback_only: true,
        metrics_listen: None,
        postgres: None,
        replica: None,
        lease_secs: 10,
        policies_dir: setup.policies_dir.clone(),
        catalog_dir,
        signing_key_file: dir.join("keys/governor.key"),
        decision_ttl_secs: setup.decision_ttl_secs,
        identities,
        targets: inventory(),
        risk: Default::default(),
        environments: arf_governor::config::default_environments(),
        guard_rails: setup.guard_rails.clone(),
        // Every test runs the governor as a witness of the log.
        audit_checkpoint_key: Some(arf_core::keys::public_path(&dir.join("audit-checkpoint.key"))),
        audit_checkpoint_origin: arf_audit::config::default_origin(),
        witness_every_secs: arf_audit_client::witness::default_keep_up_secs(),
        agent_writer: arf_governor::config::default_agent_writer(),
        settle_secs: arf_governor::config::default_settle_secs(),
        retain_decisions_secs: setup.retain_decisions_secs,
        snapshot_every_records: arf_governor::config::default_snapshot_every_records(),
        snapshot_check_secs: arf_governor::config::default_snapshot_check_secs(),
        notify: setup.notify.clone(),
        calibration: Default::default(),
        modes: setup.modes.clone(),
        graduation: setup.graduation.clone(),
    };
    (config, tokens)
}

impl Harness {
    pub async fn start(setup: Setup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, tokens) = prepare(&setup, dir.path());
        let mut stops = Vec::new();
        let mut audit_server = None;
        let mut audit_started = None;

        // Bound where it is picked: no moment for another process to take the port.
        let audit_listener = arf_core::net::loopback_listener().unwrap();
        audit_listener.set_nonblocking(true).unwrap();
        let audit_listener = TcpListener::from_std(audit_listener).unwrap();
        let audit_addr = audit_listener.local_addr().unwrap().to_string();
        if setup.audit {
            let writers = BTreeMap::from([
                ("governor".to_owned(), config.audit_token_file.clone()),
                ("agent".to_owned(), dir.path().join("agent-audit.token")),
                ("executor".to_owned(), dir.path().join("executor-audit.token")),
            ]);
            let audit_config = arf_audit::Config {
                checkpoint_key: Some(dir.path().join("audit-checkpoint.key")),
                postgres: setup.postgres.clone(),
                ..arf_audit::Config::new(audit_listener.local_addr().unwrap(), dir.path().join("audit"), writers)
            };
            let (stop, stopped) = stopper();
            audit_started = Some(audit_config.clone());
            audit_server = Some((stop, tokio::spawn(arf_audit::serve(audit_config, audit_listener, stopped))));
            config.audit_addr = audit_addr.clone();
        } else {
            drop(audit_listener);
            config.audit_addr = audit_addr.clone();
        }
        if setup.executor_addr.is_none() {
            config.executor_addr = closed_port().await;
        }
        if let Some(postgres) = &setup.postgres {
            config.postgres = Some(postgres.clone());
            config.replica = Some("governor-a".to_owned());
            config.lease_secs = 1;
            // Replicas share a signing key; none is made for them.
            arf_core::keys::load_or_generate(&config.signing_key_file).unwrap();
        }

        if let Some(state) = &setup.guard_state {
            std::fs::create_dir_all(&config.data_dir).unwrap();
            arf_governor::guard::save(&arf_governor::guard::state_path(&config.data_dir), state).unwrap();
        }
        let clock = Arc::new(AtomicI64::new(arf_core::time::now_ms()));
        let reading = Arc::clone(&clock);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = stopper();
        stops.push(stop);
        let served = config.clone();
        tokio::spawn(async move {
            let clock: arf_governor::Clock = Arc::new(move || reading.load(Ordering::SeqCst));
            if let Err(error) = arf_governor::serve_with_clock(served, listener, stopped, clock).await {
                panic!("governor failed: {error:#}");
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        // Ready when the health service answers: the listener is bound already, so
        // the call waits for the server rather than failing.
        wait_leading(&channel).await;

        let audit = AuditClient::connect(&audit_addr, Some(arf_core::keys::load_token(&config.audit_token_file).unwrap())).unwrap();
        Self { dir, config, governor: GovernorClient::new(channel), audit, tokens, clock, audit_server, audit_config: audit_started, _stop: stops }
    }

    /// With `Setup::postgres`: starts replica `name` beside the running governor, on
    /// the same configuration with a data directory of its own; it stands by until
    /// it can take the lead. Its channel, and what stops it.
    pub async fn start_standby(&self, name: &str) -> (Channel, tokio::sync::oneshot::Sender<()>) {
        let mut config = self.config.clone();
        config.replica = Some(name.to_owned());
        config.data_dir = self.dir.path().join(name);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = stopper();
        let reading = Arc::clone(&self.clock);
        tokio::spawn(async move {
            let clock: arf_governor::Clock = Arc::new(move || reading.load(Ordering::SeqCst));
            if let Err(error) = arf_governor::serve_with_clock(config, listener, stopped, clock).await {
                panic!("governor failed: {error:#}");
            }
        });
        (tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy(), stop)
    }

    /// Stops the running governor (a leader gives the lead back), and goes on with
    /// the standby started by [`Harness::start_standby`] once it leads.
    pub async fn hand_over_to(&mut self, (channel, stop): (Channel, tokio::sync::oneshot::Sender<()>)) {
        for stop in self._stop.drain(..) {
            let _ = stop.send(());
        }
        self._stop.push(stop);
        wait_leading(&channel).await;
        self.governor = GovernorClient::new(channel);
    }

    /// Appends to the log as the executor does.
    pub fn as_executor(&self) -> AuditClient {
        let token = arf_core::keys::load_token(&self.dir.path().join("executor-audit.token")).unwrap();
        AuditClient::connect(&self.config.audit_addr, Some(token)).unwrap()
    }

    /// Stops the governor and starts another on the same configuration and log, as a restart would.
    pub async fn restart_governor(&mut self) {
        let channel = self.spawn_governor().await;
        self.governor = GovernorClient::new(channel);
    }

    /// Stops the governor and starts another as `self.config` says; its channel.
    async fn spawn_governor(&mut self) -> Channel {
        for stop in self._stop.drain(..) {
            let _ = stop.send(());
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = stopper();
        self._stop.push(stop);
        let served = self.config.clone();
        let reading = Arc::clone(&self.clock);
        tokio::spawn(async move {
            let clock: arf_governor::Clock = Arc::new(move || reading.load(Ordering::SeqCst));
            if let Err(error) = arf_governor::serve_with_clock(served, listener, stopped, clock).await {
                panic!("governor failed: {error:#}");
            }
        });
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy()
    }

    /// With `Setup::postgres`: stops this governor (it gives the lead back) and
    /// starts replica `name`, with a data directory of its own (its own guard-rail
    /// file, empty), on the same log and database; returns once it leads.
    pub async fn fail_over_to(&mut self, name: &str) {
        self.config.replica = Some(name.to_owned());
        self.config.data_dir = self.dir.path().join(name);
        let channel = self.spawn_governor().await;
        wait_leading(&channel).await;
        self.governor = GovernorClient::new(channel);
    }

    /// Stops the audit log and waits until it has stopped.
    pub async fn stop_audit(&mut self) {
        let (stop, task) = self.audit_server.take().unwrap();
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    /// Starts the audit log again, on the address and files it had.
    pub async fn start_audit(&mut self) {
        let config = self.audit_config.clone().unwrap();
        let listener = TcpListener::bind(&self.config.audit_addr).await.unwrap();
        let (stop, stopped) = stopper();
        self.audit_server = Some((stop, tokio::spawn(arf_audit::serve(config, listener, stopped))));
    }

    pub fn token(&self, name: &str) -> &str {
        &self.tokens[name]
    }

    pub fn advance_ms(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    pub async fn evaluate(&self, proposal: pb::Proposal) -> Result<pb::Decision, tonic::Status> {
        self.evaluate_as("agent", proposal).await
    }

    /// Appends, as the agent, what backs `proposal` in the log: a signal of the
    /// target's own service and environment, the snapshot and the diagnosis.
    pub async fn back(&self, proposal: &pb::Proposal) {
        let target = proposal.remediation.as_ref().map(|r| r.target.clone()).unwrap_or_default();
        let (service, environment) = match self.config.targets.get(&target) {
            Some(t) => (t.service.clone(), t.environment.clone()),
            None => (proposal.service.clone(), proposal.environment.clone()),
        };
        self.back_for(proposal, &service, &environment).await;
    }

    /// [`Harness::back`] for an incident whose signal came from `service` in
    /// `environment`. Each incident's diagnosis names its own model, so no test's
    /// outcomes calibrate another's confidence unless it asks ([`Harness::back_as_model`]).
    pub async fn back_for(&self, proposal: &pb::Proposal, service: &str, environment: &str) {
        self.back_as_model(proposal, service, environment, &format!("model-of-{}", proposal.incident_id)).await;
    }

    /// [`Harness::back_for`], the diagnosis answered by `model`.
    pub async fn back_as_model(&self, proposal: &pb::Proposal, service: &str, environment: &str, model: &str) {
        let agent = AuditClient::connect(&self.config.audit_addr, Some(arf_core::keys::load_token(&self.dir.path().join("agent-audit.token")).unwrap())).unwrap();
        let remediation = |r: &pb::Remediation| {
            let parameters = serde_json::from_str::<serde_json::Value>(&r.parameters_json).unwrap_or(serde_json::json!({}));
            serde_json::json!({"pathway": r.pathway, "target": r.target, "parameters": parameters, "rationale": r.rationale})
        };
        // A malformed proposal is for the governor to refuse, naming its field.
        let (Some(h), Some(proposed)) = (proposal.hypothesis.clone(), proposal.remediation.as_ref()) else { return };
        let logged = serde_json::json!({
            "id": proposal.id, "incident_id": proposal.incident_id, "snapshot_hash": proposal.snapshot_hash,
            "hypothesis": {"id": h.id, "root_cause": h.root_cause, "evidence": h.evidence, "confidence": h.confidence,
                           "uncertainty": h.uncertainty, "expected_impact": h.expected_impact,
                           "remediations": h.remediations.iter().map(remediation).collect::<Vec<_>>()},
            "remediation": remediation(proposed),
            "service": proposal.service, "environment": proposal.environment, "reasoner": proposal.reasoner,
        });
        let incident = &proposal.incident_id;
        // Written in the agent's own formats (`arf_core::records`): the governor reads them by type.
        let signal = serde_json::json!({
            "id": format!("sig-{incident}"), "source": "alertmanager", "kind": "alert", "status": "firing",
            "title": "alert", "description": "", "severity": "critical", "service": service, "environment": environment,
            "labels": {}, "annotations": {}, "observed_at_ms": 0, "fingerprint": format!("fp-{incident}"),
        });
        let snapshot = serde_json::json!({"incident_id": incident, "service": service, "environment": environment, "items": [], "dropped": []});
        let diagnosis = serde_json::json!({
            "prompt_id": "diagnosis@v2", "prompt_hash": "ph", "snapshot_hash": proposal.snapshot_hash, "reasoner": proposal.reasoner,
            "attempt": 1, "status": "grounded", "model": model, "proposal": logged,
        });
        let entries = vec![
            arf_audit::Entry::new(incident, RecordKind::Signal, serde_json::json!({"signal": signal, "duplicate": false})),
            arf_audit::Entry::new(incident, RecordKind::Snapshot, serde_json::json!({"hash": proposal.snapshot_hash, "snapshot": snapshot})),
            arf_audit::Entry::new(incident, RecordKind::Diagnosis, diagnosis),
        ];
        agent.append(entries).await.unwrap();
    }

    /// Evaluates a proposal that nothing in the log backs.
    pub async fn evaluate_unbacked(&self, who: &str, proposal: pb::Proposal) -> Result<pb::Decision, tonic::Status> {
        let request = pb::EvaluateRequest { proposal: Some(proposal) };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), self.token(who));
        self.governor.clone().evaluate(request).await.map(tonic::Response::into_inner)
    }

    /// Backs the proposal in the log as the agent would, then evaluates it.
    pub async fn evaluate_as(&self, who: &str, proposal: pb::Proposal) -> Result<pb::Decision, tonic::Status> {
        if self.audit_server.is_some() {
            self.back(&proposal).await;
        }
        let request = pb::EvaluateRequest { proposal: Some(proposal) };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), self.token(who));
        self.governor.clone().evaluate(request).await.map(tonic::Response::into_inner)
    }

    pub async fn approve(&self, who: &str, decision_id: &str) -> Result<pb::Decision, tonic::Status> {
        let request = pb::ApproveRequest { decision_id: decision_id.to_owned(), comment: format!("ok from {who}") };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), self.token(who));
        self.governor.clone().approve(request).await.map(tonic::Response::into_inner)
    }

    pub async fn reject(&self, who: &str, decision_id: &str, reason: &str) -> Result<pb::Decision, tonic::Status> {
        let request = pb::RejectRequest { decision_id: decision_id.to_owned(), reason: reason.to_owned() };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), self.token(who));
        self.governor.clone().reject(request).await.map(tonic::Response::into_inner)
    }

    pub async fn judge(&self, who: &str, decision_id: &str, agrees: bool, reason: &str) -> Result<pb::Decision, tonic::Status> {
        let request = pb::JudgeShadowRequest { decision_id: decision_id.to_owned(), agrees, reason: reason.to_owned() };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), self.token(who));
        self.governor.clone().judge_shadow(request).await.map(tonic::Response::into_inner)
    }

    pub async fn get(&self, who: &str, decision_id: &str) -> Result<pb::Decision, tonic::Status> {
        let request = pb::GetDecisionRequest { decision_id: decision_id.to_owned() };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), self.token(who));
        self.governor.clone().get_decision(request).await.map(tonic::Response::into_inner)
    }

    pub async fn explain(&self, who: &str, decision_id: &str) -> Result<pb::Explanation, tonic::Status> {
        let request = pb::GetDecisionRequest { decision_id: decision_id.to_owned() };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), self.token(who));
        self.governor.clone().explain(request).await.map(tonic::Response::into_inner)
    }

    pub async fn pending(&self, who: &str) -> Result<Vec<pb::Decision>, tonic::Status> {
        let request = arf_proto::server::with_bearer(tonic::Request::new(pb::ListPendingRequest {}), self.token(who));
        self.governor.clone().list_pending(request).await.map(|r| r.into_inner().decisions)
    }

    pub async fn decisions(&self, who: &str, incident_id: &str) -> Result<Vec<pb::Decision>, tonic::Status> {
        let request = pb::ListDecisionsRequest { incident_id: incident_id.to_owned() };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), self.token(who));
        self.governor.clone().list_decisions(request).await.map(|r| r.into_inner().decisions)
    }

    pub async fn set_autonomy(&self, who: &str, enabled: bool, reason: &str) -> Result<pb::AutonomyStatus, tonic::Status> {
        let request = pb::SetAutonomyRequest { enabled, reason: reason.to_owned() };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), self.token(who));
        self.governor.clone().set_autonomy(request).await.map(tonic::Response::into_inner)
    }

    pub async fn reset_autonomy(&self, who: &str, service: &str, pathway: &str) -> Result<pb::AutonomyStatus, tonic::Status> {
        let request = pb::ResetAutonomyRequest {
            service: service.to_owned(),
            pathway: pathway.to_owned(),
            reason: "checked the pathway by hand".to_owned(),
        };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), self.token(who));
        self.governor.clone().reset_autonomy(request).await.map(tonic::Response::into_inner)
    }

    pub async fn autonomy(&self, who: &str) -> Result<pb::AutonomyStatus, tonic::Status> {
        let request = arf_proto::server::with_bearer(tonic::Request::new(pb::GetAutonomyRequest {}), self.token(who));
        self.governor.clone().get_autonomy(request).await.map(tonic::Response::into_inner)
    }

    pub async fn reload(&self, who: &str) -> Result<Vec<String>, tonic::Status> {
        let request = arf_proto::server::with_bearer(tonic::Request::new(pb::ReloadPoliciesRequest {}), self.token(who));
        self.governor.clone().reload_policies(request).await.map(|r| r.into_inner().files)
    }

    /// The governor-wide events (`decision` records of the `governance` incident) of one kind.
    pub async fn governance_events(&self, event: &str) -> Vec<Record> {
        self.records("governance", RecordKind::Decision).await.into_iter().filter(|r| r.payload["event"] == event).collect()
    }

    /// The incident's records of one kind.
    pub async fn records(&self, incident_id: &str, kind: RecordKind) -> Vec<Record> {
        let records = self.audit.read_incident(incident_id).await.unwrap();
        records.into_iter().filter(|r| r.kind == kind).collect()
    }

    /// The `decision` records of one decision in one state.
    pub async fn decision_records(&self, incident_id: &str, decision_id: &str, state: &str) -> Vec<Record> {
        self.records(incident_id, RecordKind::Decision)
            .await
            .into_iter()
            .filter(|r| r.payload["decision_id"] == decision_id && r.payload["state"] == state)
            .collect()
    }
}

/// A proposal for `pathway` on `target`, with a confident hypothesis.
pub fn proposal(incident_id: &str, pathway: &str, target: &str, confidence: f64) -> pb::Proposal {
    let remediation = pb::Remediation {
        pathway: pathway.to_owned(),
        target: target.to_owned(),
        parameters_json: "{}".to_owned(),
        rationale: "the pool is exhausted since the deploy".to_owned(),
    };
    pb::Proposal {
        id: format!("prop-{incident_id}"),
        incident_id: incident_id.to_owned(),
        snapshot_hash: "5f1c0ffee".to_owned(),
        hypothesis: Some(pb::Hypothesis {
            id: "h1".to_owned(),
            root_cause: "the 03:00 deploy halved the connection pool".to_owned(),
            evidence: vec!["sig-1".to_owned(), "chg-2".to_owned()],
            confidence,
            uncertainty: String::new(),
            remediations: vec![remediation.clone()],
            expected_impact: "errors stop within a minute".to_owned(),
        }),
        remediation: Some(remediation),
        service: "web".to_owned(),
        environment: "staging".to_owned(),
        reasoner: "scripted".to_owned(),
    }
}

pub fn route(decision: &pb::Decision) -> pb::Route {
    pb::Route::try_from(decision.route).unwrap()
}

/// Waits until the governor on `channel` reports `arf.v1.Governor` SERVING (a
/// replica does once it leads and has rebuilt its decisions).
async fn wait_leading(channel: &Channel) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = health.check(tonic_health::pb::HealthCheckRequest { service: "arf.v1.Governor".to_owned() }).await;
        if status.is_ok_and(|s| s.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the governor never led");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A scripted executor's answer for the decision in `body`.
pub fn answer(body: arf_core::decision::DecisionBody, outcome: String, detail: String) -> tonic::Response<arf_proto::v1::Execution> {
    tonic::Response::new(arf_proto::v1::Execution { decision_id: body.decision_id, pathway: body.pathway, target: body.target, outcome, detail, verification: vec![], replayed: false })
}

/// A governor whose executor is `executor` on loopback, and its autonomous decision
/// for `incident_id` (a staging restart), authorized and sent; with what stops the
/// executor when dropped.
pub async fn authorized_with<E: arf_proto::v1::executor_server::Executor>(executor: std::sync::Arc<E>, incident_id: &str) -> (Harness, arf_proto::v1::Decision, tokio::sync::oneshot::Sender<()>) {
    let (address, stop) = serve(arf_proto::v1::executor_server::ExecutorServer::from_arc(executor)).await;
    let h = Harness::start(Setup { executor_addr: Some(address), ..Setup::default() }).await;
    let decided = h.evaluate(proposal(incident_id, "restart_service", "web-staging", 0.9)).await.unwrap();
    assert_eq!((decided.state.as_str(), decided.route), ("authorized", arf_proto::v1::Route::Autonomous as i32), "{decided:?}");
    (h, decided, stop)
}

/// Serves `executor` on a loopback port: its address, and what stops it when dropped.
pub async fn serve<E: arf_proto::v1::executor_server::Executor>(executor: arf_proto::v1::executor_server::ExecutorServer<E>) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tonic::transport::Server::builder().add_service(executor).serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        async move {
            let _ = stopped.await;
        },
    ));
    (address, stop)
}

/// Logs, as the executor would, that the autonomous staging restart `decision_id`
/// of `incident_id` (as [`authorized_with`] makes it) started.
pub async fn log_started(h: &Harness, incident_id: &str, decision_id: &str) -> Record {
    let authorized = h.decision_records(incident_id, decision_id, "authorized").await.remove(0);
    let started = arf_core::records::ExecutionStartedRecord {
        decision_id: decision_id.to_owned(),
        decision_seq: authorized.seq,
        pathway: "restart_service".to_owned(),
        pathway_digest: authorized.payload["body"]["pathway_digest"].as_str().unwrap().to_owned(),
        target: "web-staging".to_owned(),
        parameters: serde_json::json!({}),
        timeout_secs: 60,
        steps: vec![],
        precheck: None,
    };
    h.as_executor().append_one(incident_id, RecordKind::ExecutionStarted, arf_core::records::encode(&started)).await.unwrap()
}
