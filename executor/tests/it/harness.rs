//! A real audit log and a real executor on loopback, a governor key and writer
//! token, and helpers to sign, log and send decisions the way the governor does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use arf_audit::{AuditClient, Record, RecordKind};
use arf_core::catalog::{Catalog, Pathway, Probe, Step, Verification};
use arf_core::decision::{DecisionBody, ENVELOPE_VERSION, Route, SignedDecision};
use arf_core::target::{Inventory, Target};
use arf_proto::v1 as pb;
use arf_proto::server::Authenticated;
use arf_proto::v1::executor_client::ExecutorClient;

/// How the executor reaches the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audit {
    /// Running, and the executor's token may append.
    Running,
    /// Nothing listens at the address the executor is given.
    Unreachable,
}

pub struct Setup {
    pub pathways: Vec<Pathway>,
    pub targets: Inventory,
    pub max_concurrent: usize,
    pub audit: Audit,
    pub secrets_dir: Option<PathBuf>,
    pub tls: arf_executor::config::Tls,
    /// Executions in this database, shared with other replicas.
    pub postgres: Option<arf_pg::Settings>,
    /// How often the executor witnesses the log between actions.
    pub witness_every_secs: u64,
}

impl Setup {
    pub fn new(pathways: Vec<Pathway>, targets: Inventory) -> Self {
        Self { pathways, targets, max_concurrent: 4, audit: Audit::Running, secrets_dir: None, tls: Default::default(), postgres: None, witness_every_secs: 10 }
    }
}

struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    fn spawn<F>(serve: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Self { stop, task: tokio::spawn(serve(stopped)) }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// An executor replica the harness started (`Harness::replica`).
pub struct Replica {
    server: Option<Server>,
    pub client: ExecutorClient<Authenticated>,
}

impl Replica {
    pub async fn execute(&self, signed: pb::SignedDecision) -> Result<pb::Execution, tonic::Status> {
        self.client.clone().execute(signed).await.map(tonic::Response::into_inner)
    }

    pub async fn get_execution(&self, decision_id: &str) -> Result<pb::Execution, tonic::Status> {
        let request = pb::GetExecutionRequest { decision_id: decision_id.to_owned() };
        self.client.clone().get_execution(request).await.map(tonic::Response::into_inner)
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

pub struct Harness {
    pub dir: PathBuf,
    pub catalog: Catalog,
    pub key: ed25519_dalek::SigningKey,
    /// Appends as the governor.
    pub governor: AuditClient,
    /// Appends as the executor (with the executor's own token).
    pub as_executor: AuditClient,
    pub executor: ExecutorClient<Authenticated>,
    pub executor_addr: SocketAddr,
    pub audit_addr: SocketAddr,
    audit_config: arf_audit::Config,
    executor_config: arf_executor::Config,
    audit: Option<Server>,
    executor_server: Option<Server>,
}

/// A target of kind `service` with the given facts.
pub fn target(facts: &[(&str, &str)]) -> Target {
    Target {
        kind: "service".into(),
        service: "web".into(),
        environment: "test".into(),
        tier: "standard".into(),
        security_sensitive: false,
        facts: facts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        depends_on: Vec::new(),
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

impl Harness {
    /// Starts the audit log (unless unreachable) and the executor, in `dir`.
    pub async fn start(dir: &Path, setup: Setup) -> Self {
        let dir = dir.to_owned();
        let token = |name: &str| {
            let path = dir.join(format!("{name}.token"));
            arf_core::keys::load_or_generate_token(&path).unwrap();
            path
        };
        let governor_token = token("governor");
        let executor_token = token("executor");
        let key = arf_core::keys::load_or_generate(&dir.join("governor.key")).unwrap();

        // Bound where it is picked: no moment for another process to take the port.
        let audit_listener = arf_core::net::loopback_listener().unwrap();
        audit_listener.set_nonblocking(true).unwrap();
        let audit_listener = TcpListener::from_std(audit_listener).unwrap();
        let audit_addr = audit_listener.local_addr().unwrap();
        let checkpoint_key = dir.join("audit-checkpoint.key");
        arf_core::keys::load_or_generate(&checkpoint_key).unwrap();
        let writers = BTreeMap::from([
            ("governor".to_owned(), governor_token.clone()),
            ("executor".to_owned(), executor_token.clone()),
        ]);
        // Replicas keep the log in their database, where the log checks their leases.
        let audit_config = arf_audit::Config {
            checkpoint_key: Some(checkpoint_key.clone()),
            postgres: setup.postgres.clone(),
            ..arf_audit::Config::new(audit_addr, dir.join("audit"), writers)
        };
        let audit = match setup.audit {
            Audit::Unreachable => {
                // The port was ours a moment ago and nothing listens on it now.
                drop(audit_listener);
                None
            }
            Audit::Running => Some(spawn_audit(audit_config.clone(), audit_listener)),
        };

        let catalog_dir = dir.join("catalog");
        std::fs::create_dir_all(&catalog_dir).unwrap();
        for pathway in &setup.pathways {
            let text = toml::to_string(pathway).unwrap();
            std::fs::write(catalog_dir.join(format!("{}.toml", pathway.name)), text).unwrap();
        }
        let catalog = Catalog::load_dir(&catalog_dir).unwrap();
        let executor_config = arf_executor::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.join("executor"),
            audit_addr: audit_addr.to_string(),
            audit_token_file: executor_token.clone(),
            catalog_dir,
            trusted_keys: vec![arf_core::keys::public_path(&dir.join("governor.key"))],
            targets: setup.targets,
            max_concurrent: setup.max_concurrent,
            secrets_dir: setup.secrets_dir.clone(),
            tls: setup.tls.clone(),
            // Every test runs the executor as a witness of the log.
            audit_checkpoint_key: Some(arf_core::keys::public_path(&checkpoint_key)),
            audit_checkpoint_origin: arf_audit::config::default_origin(),
            witness_every_secs: setup.witness_every_secs,
            // The governor calls with its token; the tests call as the governor.
            identities: vec![arf_core::identity::Identity {
                name: "governor".into(),
                role: "governor".into(),
                token_file: Some(governor_token.clone()),
                token_sha256: None,
                services: Vec::new(),
                environments: Vec::new(),
            }],
            mtls: None,
            insecure_loopback_only: true,
            metrics_listen: None,
            postgres: setup.postgres.clone(),
            replica: None,
            lease_secs: 4,
        };
        executor_config.validate().unwrap();
        let (executor_server, executor, executor_addr) = spawn_executor(executor_config.clone()).await;

        let read_token = |path: &Path| Some(arf_core::keys::load_token(path).unwrap());
        Self {
            catalog,
            key,
            governor: AuditClient::connect(&audit_addr.to_string(), read_token(&governor_token)).unwrap(),
            as_executor: AuditClient::connect(&audit_addr.to_string(), read_token(&executor_token)).unwrap(),
            executor,
            executor_addr,
            audit_addr,
            audit_config,
            executor_config,
            audit,
            executor_server: Some(executor_server),
            dir,
        }
    }

    /// Stops the executor and starts it again on the same data directory.
    pub async fn restart_executor(&mut self) {
        if let Some(server) = self.executor_server.take() {
            server.stop().await;
        }
        let (server, client, addr) = spawn_executor(self.executor_config.clone()).await;
        self.executor_server = Some(server);
        self.executor = client;
        self.executor_addr = addr;
    }

    /// Restarts the executor, giving it `audit_addr` as the audit log's address
    /// (a [`Lossy`] proxy in front of the log, say).
    #[allow(dead_code, reason = "for the write_ahead tests")]
    pub async fn reach_audit_via(&mut self, audit_addr: SocketAddr) {
        self.executor_config.audit_addr = audit_addr.to_string();
        self.restart_executor().await;
    }

    /// Stops the in-process executor, for a test that runs it as its own process.
    pub async fn stop_executor(&mut self) {
        if let Some(server) = self.executor_server.take() {
            server.stop().await;
        }
    }

    pub fn executor_config(&self) -> &arf_executor::Config {
        &self.executor_config
    }

    /// Another executor in this process, sharing the harness executor's database
    /// (`Setup::postgres`) as the replica `name`, with a data directory of its own.
    pub async fn replica(&self, name: &str) -> Replica {
        let config = arf_executor::Config {
            data_dir: self.dir.join(name),
            replica: Some(name.to_owned()),
            ..self.executor_config.clone()
        };
        let (server, client, _) = spawn_executor(config).await;
        Replica { server: Some(server), client }
    }

    /// Stops the audit log; the executor keeps its address.
    pub async fn stop_audit(&mut self) {
        if let Some(server) = self.audit.take() {
            server.stop().await;
        }
    }

    /// Starts the audit log again, on the same address and data.
    pub async fn start_audit(&mut self) {
        let listener = TcpListener::bind(self.audit_addr).await.unwrap();
        self.audit = Some(spawn_audit(self.audit_config.clone(), listener));
    }

    /// A decision body for `pathway` on `target`, valid for a minute, with the
    /// digest of the pathway as this executor's catalog has it.
    pub fn body(&self, pathway: &str, target: &str, parameters: Value) -> DecisionBody {
        let now = arf_core::time::now_ms();
        DecisionBody {
            version: ENVELOPE_VERSION,
            decision_id: arf_core::canonical::random_id("dec"),
            incident_id: arf_core::canonical::random_id("inc"),
            proposal_id: arf_core::canonical::random_id("prop"),
            snapshot_hash: "0".repeat(64),
            pathway: pathway.to_owned(),
            pathway_digest: self.catalog.digest(pathway).unwrap_or_default().to_owned(),
            target: target.to_owned(),
            parameters,
            route: Route::Autonomous,
            approvals: vec![],
            risk_score: 0.1,
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
        }
    }

    /// Appends the governor's `decision` record for `body` and returns its sequence number.
    pub async fn log_decision(&self, body: &DecisionBody) -> u64 {
        self.governor.append_one(&body.incident_id, RecordKind::Decision, decision_record(body)).await.unwrap().seq
    }

    /// Logs and signs `body` as the governor does.
    pub async fn decide(&self, body: &DecisionBody) -> pb::SignedDecision {
        let seq = self.log_decision(body).await;
        to_pb(arf_core::decision::sign(body, &self.key, seq).unwrap())
    }

    pub async fn execute(&self, signed: pb::SignedDecision) -> Result<pb::Execution, tonic::Status> {
        self.executor.clone().execute(signed).await.map(tonic::Response::into_inner)
    }

    pub async fn get_execution(&self, decision_id: &str) -> Result<pb::Execution, tonic::Status> {
        let request = pb::GetExecutionRequest { decision_id: decision_id.to_owned() };
        self.executor.clone().get_execution(request).await.map(tonic::Response::into_inner)
    }

    /// The incident's records, oldest first.
    pub async fn trail(&self, incident_id: &str) -> Vec<Record> {
        self.governor.read_incident(incident_id).await.unwrap()
    }

    /// Follows the log until the incident has a record of `kind`, and returns it.
    pub async fn wait_for_kind(&self, incident_id: &str, kind: &str) -> Record {
        use futures::StreamExt;
        let mut tail = self.governor.tail(1).await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let record = tokio::time::timeout_at(deadline, tail.next()).await.expect("timed out following the log").unwrap().unwrap();
            if record.incident_id == incident_id && record.kind.as_str() == kind {
                return record;
            }
        }
    }

    /// The kinds of the incident's records, oldest first.
    pub async fn kinds(&self, incident_id: &str) -> Vec<&'static str> {
        self.trail(incident_id).await.iter().map(|r| r.kind.as_str()).collect()
    }
}

/// What the governor logs for a decision: at least its id and the hash of the exact envelope bytes.
pub fn decision_record(body: &DecisionBody) -> Value {
    let bytes = arf_core::canonical::to_vec(body).unwrap();
    arf_core::records::encode(&arf_core::records::AuthorizedRecord {
        decision_id: body.decision_id.clone(),
        state: "authorized".to_owned(),
        envelope_sha256: arf_core::canonical::sha256_hex(&bytes),
        body: body.clone(),
        route: body.route.as_str().to_owned(),
        approvals: Vec::new(),
    })
}

pub fn to_pb(signed: SignedDecision) -> pb::SignedDecision {
    pb::SignedDecision {
        body: signed.body,
        signature: signed.signature,
        key_id: signed.key_id,
        audit_seq: signed.audit_seq,
    }
}

fn spawn_audit(config: arf_audit::Config, listener: TcpListener) -> Server {
    Server::spawn(|stopped| async move {
        arf_audit::serve(config, listener, async move {
            let _ = stopped.await;
        })
        .await
    })
}

/// Starts the executor on a fresh port and connects to it. The listener is bound
/// before the server starts, so connecting is the readiness check.
async fn spawn_executor(config: arf_executor::Config) -> (Server, ExecutorClient<Authenticated>, SocketAddr) {
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = config_token(&config);
    let server = Server::spawn(|stopped| async move {
        arf_executor::serve(config, listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    let client = executor_client(&addr.to_string(), &token).await;
    (server, client, addr)
}

/// The governor's token, as the executor's configuration names it.
pub fn config_token(config: &arf_executor::Config) -> String {
    let file = config.identities[0].token_file.as_ref().unwrap();
    arf_core::keys::load_token(file).unwrap()
}

/// A client of the executor at `addr` that calls as the governor (with `token`).
pub async fn executor_client(addr: &str, token: &str) -> ExecutorClient<Authenticated> {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    ExecutorClient::with_interceptor(channel, arf_proto::server::Bearer::new(Some(token)))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A command step.
pub fn command(argv: &[&str]) -> Step {
    Step::Command { argv: strings(argv), env_allow: vec![], env: BTreeMap::new(), cwd: None, timeout_secs: None }
}

/// A command probe.
pub fn command_probe(name: &str, argv: &[&str]) -> Probe {
    Probe::Command { name: name.to_owned(), argv: strings(argv), expect_exit: 0, output_contains: None }
}

/// A short verification window: samples at 0 and 1 ms, failing at the first failure.
/// Appends the decision id to the target's `file`, and checks it is there. The file
/// path and the decision id are positional arguments to a fixed script, never
/// spliced into it.
pub fn append_line_pathway() -> Pathway {
    pathway(
        "append_line",
        vec![command(&["sh", "-c", "echo \"$2\" >> \"$1\"", "sh", "{{target.file}}", "{{decision.id}}"])],
        vec![command_probe("written", &["grep", "-q", "{{decision.id}}", "{{target.file}}"])],
        vec![command(&["true"])],
    )
}

pub fn verification(probes: Vec<Probe>) -> Verification {
    Verification { delay_ms: 0, window_ms: 1, interval_ms: 1, max_failures: 1, probes }
}

/// A pathway on `service` targets taking any parameters; irreversible when `rollback` is empty.
pub fn pathway(name: &str, action: Vec<Step>, probes: Vec<Probe>, rollback: Vec<Step>) -> Pathway {
    Pathway {
        name: name.to_owned(),
        description: format!("The `{name}` test pathway."),
        target_kind: "service".into(),
        parameters: json!({ "type": "object" }),
        base_risk: 0.1,
        blast_radius: 0.1,
        irreversible: rollback.is_empty(),
        security_sensitive: false,
        timeout_secs: 30,
        precheck: vec![],
        action,
        verify: verification(probes),
        rollback,
        rollback_verify: None,
        secrets: vec![],
    }
}

/// An HTTP endpoint that tells the test when it is called, then waits to be released.
#[derive(Default)]
pub struct Gate {
    pub calls: AtomicUsize,
    pub release: Notify,
}

pub async fn start_gate(entered: mpsc::Sender<()>) -> (Arc<Gate>, String) {
    let gate = Arc::new(Gate::default());
    let state = Arc::clone(&gate);
    let app = axum::Router::new().route(
        "/act",
        axum::routing::post(move || {
            let gate = Arc::clone(&state);
            let entered = entered.clone();
            async move {
                gate.calls.fetch_add(1, Ordering::SeqCst);
                let _ = entered.send(()).await;
                gate.release.notified().await;
                "done"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (gate, url)
}

/// A pathway whose action is one POST to the gate at `{{target.url}}/act`.
pub fn gated_pathway() -> Pathway {
    let act = Step::Http {
        method: "POST".into(),
        url: "{{target.url}}/act".into(),
        headers: BTreeMap::new(),
        body: None,
        expect_status: 200,
        timeout_secs: None,
    };
    pathway("gated", vec![act], vec![command_probe("ok", &["true"])], vec![command(&["true"])])
}

/// A TCP proxy on loopback that loses what passes through it on demand: while
/// requests (or replies) are lost, the bytes the client (or the server) sends are
/// read and dropped, and [`Lossy::cut`] closes every connection open through it,
/// as a network partition would. New connections then pass everything again.
#[allow(dead_code, reason = "for the write_ahead tests")]
pub struct Lossy {
    pub addr: SocketAddr,
    lose_requests: Arc<std::sync::atomic::AtomicBool>,
    lose_replies: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes dropped so far, either way.
    lost: Arc<std::sync::atomic::AtomicUsize>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

#[allow(dead_code, reason = "for the write_ahead tests")]
impl Lossy {
    pub async fn start(upstream: SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let this = Self {
            addr: listener.local_addr().unwrap(),
            lose_requests: Arc::new(AtomicBool::new(false)),
            lose_replies: Arc::new(AtomicBool::new(false)),
            lost: Arc::new(AtomicUsize::new(0)),
            connections: Arc::default(),
        };
        let (lose_requests, lose_replies, lost, connections) =
            (Arc::clone(&this.lose_requests), Arc::clone(&this.lose_replies), Arc::clone(&this.lost), Arc::clone(&this.connections));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (lose_requests, lose_replies, lost) = (Arc::clone(&lose_requests), Arc::clone(&lose_replies), Arc::clone(&lost));
                let task = tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (_, _) = (client.set_nodelay(true), server.set_nodelay(true));
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    let pass = |from: &'static str| {
                        let (lose, lost) = if from == "client" { (Arc::clone(&lose_requests), Arc::clone(&lost)) } else { (Arc::clone(&lose_replies), Arc::clone(&lost)) };
                        move |n: usize| {
                            let dropped = lose.load(Ordering::SeqCst);
                            if dropped {
                                lost.fetch_add(n, Ordering::SeqCst);
                            }
                            !dropped
                        }
                    };
                    let (up, down) = (pass("client"), pass("server"));
                    let requests = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                            if up(n) && server_tx.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let replies = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
                            if down(n) && client_tx.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! { () = requests => {}, () = replies => {} }
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        });
        this
    }

    /// From now on, drops what the client sends.
    pub fn lose_requests(&self) {
        self.lose_requests.store(true, Ordering::SeqCst);
    }

    /// From now on, drops what the server answers.
    pub fn lose_replies(&self) {
        self.lose_replies.store(true, Ordering::SeqCst);
    }

    /// Bytes dropped so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }

    /// Closes every connection open through the proxy; new ones pass everything.
    pub fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
        self.lose_requests.store(false, Ordering::SeqCst);
        self.lose_replies.store(false, Ordering::SeqCst);
    }
}
