//! The `AuditLog` gRPC service.

pub(crate) mod convert;

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use futures::Stream;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use arf_proto::v1 as pb;
use arf_proto::v1::audit_log_server::{AuditLog, AuditLogServer};

use crate::config::Config;
use crate::record::RecordKind;
use crate::store::{Store, StoreError};

type RecordStream = Pin<Box<dyn Stream<Item = Result<pb::AuditRecord, Status>> + Send>>;

/// The service: the store, and the token hash → writer identity map.
pub struct Service {
    store: Arc<Store>,
    writers: BTreeMap<String, String>,
    /// The kinds a writer may append, for writers that are restricted.
    kinds: BTreeMap<String, BTreeSet<RecordKind>>,
}

impl Service {
    pub fn new(store: Arc<Store>, writers: BTreeMap<String, String>, kinds: BTreeMap<String, BTreeSet<RecordKind>>) -> Self {
        Self { store, writers, kinds }
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
        let token = arf_proto::server::bearer(request)
            .ok_or_else(|| Status::unauthenticated("appending needs a writer token (`authorization: Bearer ...`)"))?;
        self.writers
            .get(&arf_core::keys::token_hash(token))
            .cloned()
            .ok_or_else(|| Status::permission_denied("the token presented is not a writer's"))
    }
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::Invalid(message) => Status::invalid_argument(message),
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl AuditLog for Service {
    async fn append(&self, request: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        let writer = self.writer(&request)?;
        let entries = convert::entries(request.into_inner())?;
        self.check_kinds(&writer, &entries)?;
        let records = self
            .store
            .append(&writer, entries, arf_core::time::now_ms())
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::AppendResponse { records: records.iter().map(convert::record).collect() }))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let writer = self.writer(&request)?;
        let kinds = self.kinds.get(&writer).map(|k| k.iter().map(|k| k.as_str().to_owned()).collect()).unwrap_or_default();
        Ok(Response::new(pb::WhoAmIResponse { writer, kinds }))
    }

    async fn get(&self, request: Request<pb::GetRecordRequest>) -> Result<Response<pb::AuditRecord>, Status> {
        let seq = request.into_inner().seq;
        match self.store.get(seq).map_err(store_status)? {
            Some(record) => Ok(Response::new(convert::record(&record))),
            None => Err(Status::not_found(format!("no record `{seq}`"))),
        }
    }

    type ReadRangeStream = RecordStream;

    async fn read_range(&self, request: Request<pb::ReadRangeRequest>) -> Result<Response<RecordStream>, Status> {
        let request = request.into_inner();
        let to = (request.to_seq != 0).then_some(request.to_seq);
        let records: Vec<Result<pb::AuditRecord, Status>> = self
            .store
            .range(request.from_seq, to)
            .map(|r| r.map(|r| convert::record(&r)).map_err(store_status))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(records))))
    }

    type ReadIncidentStream = RecordStream;

    async fn read_incident(&self, request: Request<pb::ReadIncidentRequest>) -> Result<Response<RecordStream>, Status> {
        let incident_id = request.into_inner().incident_id;
        if incident_id.is_empty() {
            return Err(Status::invalid_argument("`incident_id` must not be empty"));
        }
        let records = self.store.by_incident(&incident_id).map_err(store_status)?;
        let items: Vec<Result<pb::AuditRecord, Status>> = records.iter().map(|r| Ok(convert::record(r))).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    type TailStream = RecordStream;

    async fn tail(&self, request: Request<pb::TailRequest>) -> Result<Response<RecordStream>, Status> {
        let from = request.into_inner().from_seq.max(1);
        // Subscribe before reading the backlog so nothing appended in between is missed;
        // duplicates from the overlap are dropped by sequence number.
        let mut live = self.store.subscribe();
        let backlog: Vec<pb::AuditRecord> = self
            .store
            .range(from, None)
            .map(|r| r.map(|r| convert::record(&r)))
            .collect::<Result<_, _>>()
            .map_err(store_status)?;
        let mut next = backlog.last().map_or(from, |r| r.seq + 1);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            for record in backlog {
                if tx.send(Ok(record)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(record) if record.seq >= next => {
                        next = record.seq + 1;
                        if tx.send(Ok(convert::record(&record))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!("tail fell {n} records behind; resume from `{next}`"))))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn head(&self, _request: Request<pb::HeadRequest>) -> Result<Response<pb::HeadResponse>, Status> {
        let (seq, hash) = self.store.head().await;
        Ok(Response::new(pb::HeadResponse { seq, hash }))
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
    let store = Arc::new(Store::open(&config.data_dir.join("audit.sled"))?);
    let mut writers = BTreeMap::new();
    for (identity, path) in &config.writers {
        let token = arf_core::keys::load_token(path)?;
        writers.insert(arf_core::keys::token_hash(&token), identity.clone());
    }
    match store.verify() {
        Ok(summary) => info!(records = summary.records, head = %summary.head_hash, "audit chain verified at start"),
        // The log still serves, so the break can be inspected and reported, but it says so loudly.
        Err(error) => warn!(%error, "audit chain is broken"),
    }
    let addr = listener.local_addr()?;
    info!(%addr, "audit log listening");
    tonic::transport::Server::builder()
        .add_service(arf_proto::server::health::<AuditLogServer<Service>>().await)
        .add_service(arf_proto::server::reflection()?)
        .add_service(AuditLogServer::new(Service::new(store, writers, kinds)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .context("audit server failed")
}
