//! The `AuditLog` gRPC service.

pub(crate) mod convert;

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::Stream;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

use arf_proto::v1 as pb;
use arf_proto::v1::audit_log_server::{AuditLog, AuditLogServer};

use crate::config::Config;
use crate::record::RecordKind;
use crate::log::Log;
use crate::store::{Signer, SignedCheckpoint, Store, StoreError};

type RecordStream = Pin<Box<dyn Stream<Item = Result<pb::AuditRecord, Status>> + Send>>;

/// The service: the store, who may append, and what.
pub struct Service {
    store: Arc<Log>,
    /// The writer identities; the authentication layer names every caller.
    writers: BTreeSet<String>,
    /// The kinds a writer may append, for writers that are restricted.
    kinds: BTreeMap<String, BTreeSet<RecordKind>>,
}

impl Service {
    pub fn new(store: Arc<Log>, writers: BTreeSet<String>, kinds: BTreeMap<String, BTreeSet<RecordKind>>) -> Self {
        Self { store, writers, kinds }
    }

    /// Every read needs the token of a writer or a reader (the layer refuses
    /// anyone else): the log holds what every process did and why, which is not
    /// for whoever can reach the port.
    fn reader<T>(&self, request: &Request<T>) -> Result<String, Status> {
        Ok(arf_proto::auth::caller(request)?.name.clone())
    }

    /// Refuses a batch holding a kind its writer may not append; nothing of it is kept.
    fn check_kinds(&self, writer: &str, entries: &[crate::record::Entry]) -> Result<(), Status> {
        let Some(allowed) = self.kinds.get(writer) else { return Ok(()) };
        match entries.iter().enumerate().find(|(_, e)| !allowed.contains(&e.kind)) {
            None => Ok(()),
            Some((i, entry)) => Err(Status::permission_denied(format!(
                "`entries[{i}]`: writer `{writer}` may not append `{}` records (it may append {})",
                entry.kind.as_str(),
                allowed.iter().map(|k| format!("`{}`", k.as_str())).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    fn writer<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let caller = arf_proto::auth::caller(request)?;
        if self.writers.contains(&caller.name) {
            Ok(caller.name.clone())
        } else {
            Err(Status::permission_denied(format!("{caller} is not a writer of the log: the token presented is not a writer's")))
        }
    }

    /// An append, on its conditions when the request carries any (`AppendIf`).
    async fn append_on(&self, request: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        let writer = self.writer(&request)?;
        let role = arf_proto::auth::caller(&request)?.role;
        let mut request = request.into_inner();
        let fence = request.fence.take().map(|fence| convert::fence(role, &writer, fence)).transpose()?;
        let quiet = request.quiet.take().map(convert::quiet).transpose()?;
        let entries = convert::entries(request)?;
        self.check_kinds(&writer, &entries)?;
        let started = std::time::Instant::now();
        let records = self
            .store
            .append(&writer, entries, arf_core::time::now_ms(), (fence, quiet))
            .await
            .map_err(store_status)?;
        arf_proto::metrics::observe("arf_audit_append_seconds", "Time from an append's arrival to its records being synced to disk.", &[], started.elapsed().as_secs_f64());
        arf_proto::metrics::add("arf_audit_records_appended_total", "Records appended, by writer.", &[("writer", &writer)], records.len() as u64);
        if let Some(last) = records.last() {
            arf_proto::metrics::set("arf_audit_log_records", "Records in the log.", &[], last.seq as f64);
        }
        Ok(Response::new(pb::AppendResponse { records: records.iter().map(convert::record).collect() }))
    }
}

/// Who may call the log: each writer (its role is the service it names, when it
/// names one) and each reader (an `auditor`, whatever their role elsewhere).
fn identities(config: &Config) -> anyhow::Result<arf_core::identity::Identities> {
    use arf_core::identity::{Caller, Role};
    let mut identities = arf_core::identity::Identities::load(&config.identities, "audit.identities").map_err(anyhow::Error::msg)?;
    // The services read with their writer tokens; of the rest, whoever may read.
    identities.retain(|caller| caller.role.may_read() && !caller.role.is_service());
    // Appending is granted by name: no reader may carry a writer's name.
    let readers = identities.callers().map(|c| &c.name).chain(config.readers.keys());
    if let Some(name) = readers.into_iter().find(|name| config.writers.contains_key(*name)) {
        anyhow::bail!("`{name}` is both a writer of the audit log and a reader: give the reader another name");
    }
    for (names, is_writer) in [(&config.readers, false), (&config.writers, true)] {
        for (name, path) in names {
            let token = arf_core::keys::load_token(path)?;
            let role = if is_writer { Role::parse(name).filter(|r| r.is_service()).unwrap_or(Role::Tooling) } else { Role::Auditor };
            identities.insert(arf_core::keys::token_hash(&token), Caller { name: name.clone(), role });
        }
    }
    Ok(identities)
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::Invalid(message) => Status::invalid_argument(message),
        error @ StoreError::Fenced(_) => Status::failed_precondition(error.to_string()),
        error @ StoreError::Spoken(_) => Status::aborted(error.to_string()),
        StoreError::Proof(error) => Status::out_of_range(error.to_string()),
        StoreError::Failed(message) | StoreError::Unavailable(message) => Status::unavailable(message),
        // The database did not answer: another front-end may.
        error @ StoreError::Database(_) => Status::unavailable(error.to_string()),
        // Callers treat `Unknown` as the log being unavailable: they do not act.
        error @ StoreError::Indeterminate(_) => Status::unknown(error.to_string()),
        StoreError::Corrupt { .. } => Status::data_loss(error.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn checkpoint_response(signed: Option<SignedCheckpoint>) -> Result<Response<pb::CheckpointResponse>, Status> {
    let signed = signed.ok_or_else(|| Status::not_found("the log has signed no checkpoint yet"))?;
    Ok(Response::new(pb::CheckpointResponse {
        size: signed.checkpoint.size,
        root_hash: signed.checkpoint.root_hex(),
        note: signed.note,
        ..Default::default()
    }))
}

fn proof_response(hashes: Vec<crate::merkle::Hash>) -> Response<pb::ProofResponse> {
    Response::new(pb::ProofResponse { hashes: hashes.into_iter().map(|h| h.to_vec()).collect() })
}

#[tonic::async_trait]
impl AuditLog for Service {
    async fn append(&self, request: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        // Conditions sent here are honoured as by AppendIf: clients older than
        // AppendIf send them here, and this service knows them.
        self.append_on(request).await
    }

    async fn append_if(&self, request: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        if request.get_ref().fence.is_none() && request.get_ref().quiet.is_none() {
            return Err(Status::invalid_argument("`fence`, `quiet`: AppendIf needs a condition; an append without one is made with Append"));
        }
        self.append_on(request).await
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let writer = self.writer(&request)?;
        let kinds = self.kinds.get(&writer).map(|k| k.iter().map(|k| k.as_str().to_owned()).collect()).unwrap_or_default();
        Ok(Response::new(pb::WhoAmIResponse { writer, kinds }))
    }

    async fn get(&self, request: Request<pb::GetRecordRequest>) -> Result<Response<pb::AuditRecord>, Status> {
        self.reader(&request)?;
        let seq = request.into_inner().seq;
        match self.store.records(&[seq]).await.map_err(store_status)?.pop() {
            Some(record) => Ok(Response::new(convert::record(&record))),
            None => Err(Status::not_found(format!("no record `{seq}`"))),
        }
    }

    type ReadRangeStream = RecordStream;

    async fn read_range(&self, request: Request<pb::ReadRangeRequest>) -> Result<Response<RecordStream>, Status> {
        self.reader(&request)?;
        let request = request.into_inner();
        let (from, head) = (request.from_seq.max(1), self.store.head().await.map_err(store_status)?.0);
        let to = if request.to_seq == 0 { head + 1 } else { request.to_seq.min(head + 1) };
        Ok(Response::new(stream_records(Arc::clone(&self.store), SeqRange::Range(from..to.max(from)), None, Only::default())))
    }

    type ReadIncidentStream = RecordStream;

    async fn read_incident(&self, request: Request<pb::ReadIncidentRequest>) -> Result<Response<RecordStream>, Status> {
        self.reader(&request)?;
        let incident_id = request.into_inner().incident_id;
        if incident_id.is_empty() {
            return Err(Status::invalid_argument("`incident_id` must not be empty"));
        }
        let seqs = self.store.incident_seqs(&incident_id).await.map_err(store_status)?;
        Ok(Response::new(stream_records(Arc::clone(&self.store), SeqRange::List(seqs), None, Only::default())))
    }

    type TailStream = RecordStream;

    async fn tail(&self, request: Request<pb::TailRequest>) -> Result<Response<RecordStream>, Status> {
        self.reader(&request)?;
        let request = request.into_inner();
        let from = request.from_seq.max(1);
        let only = Only::new(request.writers, &request.kinds)?;
        // Subscribe before reading the backlog so nothing appended in between is missed;
        // duplicates from the overlap are dropped by sequence number.
        let live = self.store.subscribe();
        let head = self.store.head().await.map_err(store_status)?.0;
        Ok(Response::new(stream_records(Arc::clone(&self.store), SeqRange::Range(from..(head + 1).max(from)), Some(live), only)))
    }

    async fn head(&self, request: Request<pb::HeadRequest>) -> Result<Response<pb::HeadResponse>, Status> {
        self.reader(&request)?;
        let (seq, hash) = self.store.head().await.map_err(store_status)?;
        Ok(Response::new(pb::HeadResponse { seq, hash }))
    }

    async fn get_checkpoint(&self, request: Request<pb::GetCheckpointRequest>) -> Result<Response<pb::CheckpointResponse>, Status> {
        self.reader(&request)?;
        checkpoint_response(self.store.latest_checkpoint())
    }

    async fn sign_checkpoint(&self, request: Request<pb::SignCheckpointRequest>) -> Result<Response<pb::CheckpointResponse>, Status> {
        // Signing costs a record and a sync, so only writers may ask for one.
        self.writer(&request)?;
        let from = request.get_ref().consistency_from;
        let mut response = checkpoint_response(self.store.checkpoint(arf_core::time::now_ms()).await.map_err(store_status)?)?;
        let answer = response.get_mut();
        // No proof from beyond the checkpoint (a caller ahead of a log that lost its
        // tail: it finds that out itself, and says so), nor if the tree cannot make
        // one (a PostgreSQL front-end catches its tree up before it signs, so this
        // is a precaution): the caller then asks with ConsistencyProof.
        if from > 0 && from <= answer.size
            && let Ok(proof) = self.store.consistency_proof(from, answer.size)
        {
            answer.consistency_from = from;
            answer.consistency_proof = proof.into_iter().map(|h| h.to_vec()).collect();
        }
        Ok(response)
    }

    async fn inclusion_proof(&self, request: Request<pb::InclusionProofRequest>) -> Result<Response<pb::ProofResponse>, Status> {
        self.reader(&request)?;
        let request = request.into_inner();
        Ok(proof_response(self.store.inclusion_proof(request.seq, request.tree_size).map_err(store_status)?))
    }

    async fn consistency_proof(
        &self,
        request: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ProofResponse>, Status> {
        self.reader(&request)?;
        let request = request.into_inner();
        Ok(proof_response(self.store.consistency_proof(request.old_size, request.new_size).map_err(store_status)?))
    }
}

/// Which records a stream sends: a range, or a list of sequence numbers.
enum SeqRange {
    Range(std::ops::Range<u64>),
    List(Vec<u64>),
}

impl SeqRange {
    fn into_iter(self) -> Box<dyn Iterator<Item = u64> + Send> {
        match self {
            Self::Range(range) => Box::new(range),
            Self::List(list) => Box::new(list.into_iter()),
        }
    }
}

/// Streams records one at a time through a bounded channel, so a reader asking for
/// the whole log holds at most the channel's worth in memory; then, for a tail,
/// follows new records as they are appended.
/// Which records a stream carries: by the writers and of the kinds named (all when
/// none are). A follower that reads a few kinds is not sent, and does not decode,
/// every signal of a storm.
#[derive(Debug, Default)]
struct Only {
    writers: Vec<String>,
    kinds: Vec<crate::record::RecordKind>,
}

impl Only {
    fn new(writers: Vec<String>, kinds: &[String]) -> Result<Self, Status> {
        let kinds = kinds
            .iter()
            .map(|k| crate::record::RecordKind::parse(k).ok_or_else(|| Status::invalid_argument(format!("`kinds`: no record kind `{k}`"))))
            .collect::<Result<_, _>>()?;
        Ok(Self { writers, kinds })
    }

    fn admits(&self, record: &crate::record::Record) -> bool {
        (self.writers.is_empty() || self.writers.contains(&record.writer)) && (self.kinds.is_empty() || self.kinds.contains(&record.kind))
    }
}

/// Records are read this many at a time.
const CHUNK: usize = 256;

fn stream_records(store: Arc<Log>, seqs: SeqRange, live: Option<tokio::sync::broadcast::Receiver<crate::record::Record>>, only: Only) -> RecordStream {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let mut next = match &seqs {
            SeqRange::Range(range) => range.start,
            SeqRange::List(_) => 1,
        };
        let mut seqs = seqs.into_iter().peekable();
        while seqs.peek().is_some() {
            let chunk: Vec<u64> = seqs.by_ref().take(CHUNK).collect();
            let records = match store.records(&chunk).await {
                Ok(records) if records.len() == chunk.len() => records,
                Ok(records) => {
                    let missing = chunk.iter().find(|s| !records.iter().any(|r| r.seq == **s)).copied().unwrap_or_default();
                    let _ = tx.send(Err(Status::data_loss(format!("record `{missing}` is missing from the log")))).await;
                    return;
                }
                Err(error) => {
                    let _ = tx.send(Err(store_status(error))).await;
                    return;
                }
            };
            for record in records {
                next = record.seq + 1;
                if only.admits(&record) && tx.send(Ok(convert::record(&record))).await.is_err() {
                    return;
                }
            }
        }
        let Some(mut live) = live else { return };
        loop {
            match live.recv().await {
                Ok(record) if record.seq >= next => {
                    next = record.seq + 1;
                    if only.admits(&record) && tx.send(Ok(convert::record(&record))).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let _ = tx.send(Err(Status::data_loss(format!("tail fell {n} records behind; resume from `{next}`")))).await;
                    return;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Turns the gRPC health to NOT_SERVING (for the service and the server) once the
/// log has stopped taking appends; it never turns back, as the log does not.
async fn report_failure(store: Arc<Log>, reporter: tonic_health::server::HealthReporter) {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        if let Some(reason) = store.failure() {
            warn!(%reason, "the audit log reports NOT_SERVING: it stopped taking appends");
            reporter.set_not_serving::<AuditLogServer<Service>>().await;
            reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            return;
        }
    }
}

/// Runs the audit service on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let kinds = config.kinds_by_writer().map_err(anyhow::Error::msg)?;
    let key_path = config.checkpoint_key_path();
    let key = arf_core::keys::load_or_generate(&key_path)
        .with_context(|| format!("the checkpoint key `{}`", key_path.display()))?;
    let signer = Signer { origin: config.checkpoint_origin.clone(), key, every_records: config.checkpoint_every_records };
    // A damaged log does not serve: the error names the file (or database), where, and the record.
    let store = Arc::new(match &config.postgres {
        Some(settings) => Log::Postgres(crate::pg::PgStore::open(settings, Some(signer)).await?),
        None => {
            let store = Store::open(&config.data_dir, Some(signer))?;
            if let Some((len, aside)) = &store.open_report().torn {
                warn!(len, kept = %aside.display(), "an incomplete final write was set aside at open");
            }
            Log::File(store)
        }
    });
    let tls = arf_proto::tls::Loaded::load(&config.transport().map_err(anyhow::Error::msg)?)?;
    let callers = identities(&config)?;
    // A log that stopped (damage found, a failed write or sync) is not ready, and
    // its gRPC health says NOT_SERVING: it answers reads, but takes nothing.
    let healthy = {
        let store = Arc::clone(&store);
        move || store.failure().is_none()
    };
    let endpoint = arf_proto::metrics::Endpoint { service: "audit", identities: Arc::new(callers.clone()), ready: arf_proto::metrics::ready_with_tls(tls.server.clone(), healthy) };
    let metrics = arf_proto::metrics::spawn(config.metrics_listen, config.mtls.as_ref(), endpoint).await.map_err(|e| anyhow::anyhow!(e))?;
    let authenticator = arf_proto::auth::Authenticator::new("the audit log", callers, tls.server.is_some());
    let writers = config.writers.keys().cloned().collect();
    let addr = listener.local_addr()?;
    info!(%addr, records = store.records_at_open(), "audit log listening");
    let ticker = tokio::spawn(checkpoint_periodically(Arc::clone(&store), Duration::from_secs(config.checkpoint_every_secs)));
    let (reporter, health) = arf_proto::server::health_reporting::<AuditLogServer<Service>>(true).await;
    let watcher = tokio::spawn(report_failure(Arc::clone(&store), reporter));
    let router = arf_proto::server::builder(authenticator)
        .add_service(health)
        .add_service(arf_proto::server::reflection::<AuditLogServer<Service>>()?)
        .add_service(arf_proto::server::reflection_v1alpha::<AuditLogServer<Service>>()?)
        .add_service(AuditLogServer::new(Service::new(Arc::clone(&store), writers, kinds)));
    let served = arf_proto::server::serve(router, listener, tls.server, shutdown)
        .await
        .context("audit server failed");
    ticker.abort();
    watcher.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    // The last checkpoint covers everything appended before the service stopped.
    match store.checkpoint(arf_core::time::now_ms()).await {
        Ok(Some(latest)) => info!(size = latest.checkpoint.size, root = %latest.checkpoint.root_hex(), "checkpoint at shutdown"),
        Ok(None) => {}
        Err(error) => error!(%error, "could not sign a checkpoint at shutdown"),
    }
    served
}

/// Signs a checkpoint every `period` while the log grows (the store skips it when nothing changed).
async fn checkpoint_periodically(store: Arc<Log>, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        if let Err(error) = store.checkpoint(arf_core::time::now_ms()).await {
            error!(%error, "could not sign a checkpoint of the audit log");
        }
    }
}
