//! The client every other process uses to write ahead and to read the trail.
//!
//! Appends fail closed: any error (the log down, a refused token, a timeout) is
//! returned, and callers must not act on what they failed to log.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

use arf_proto::v1 as pb;
use arf_proto::v1::audit_log_client::AuditLogClient;

use crate::merkle::Hash;
use crate::record::{Entry, Record, RecordKind};

#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("audit log address `{0}` is invalid")]
    Address(String),
    #[error("audit log is unavailable: {0}")]
    Unavailable(String),
    #[error("audit log refused the request: {0}")]
    Refused(String),
    #[error("audit log sent a record that cannot be read: {0}")]
    Malformed(String),
    /// The log did not take an append because this replica's lease does not hold
    /// ([`AuditClient::fenced`]): nothing of it is in the log, and the replica must
    /// stop acting, since another may be taking its work over.
    #[error("audit log refused the append, since this replica's lease does not hold: {0}")]
    Fenced(String),
    /// The log did not take an append made on a condition ([`Quiet`]): the other
    /// writer appended under the incident since. Nothing of it is in the log; read
    /// the trail again and decide again.
    #[error("audit log refused the append, since another writer spoke since: {0}")]
    Spoken(String),
}

/// The condition of [`AuditClient::append_if_quiet`]: `writer` appended nothing
/// under `incident_id` after record `after_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quiet {
    pub incident_id: String,
    pub writer: String,
    pub after_seq: u64,
}

impl Quiet {
    /// `writer` silent in `incident_id` since the last record of `trail` (the
    /// incident's trail as read), or since the start when it is empty.
    pub fn since(incident_id: &str, writer: &str, trail: &[Record]) -> Self {
        Self { incident_id: incident_id.to_owned(), writer: writer.to_owned(), after_seq: trail.iter().map(|r| r.seq).max().unwrap_or(0) }
    }
}

impl From<tonic::Status> for AuditError {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            // What may have been taken or not: the log down, a timeout, and what
            // tonic reports for an HTTP/2 stream or connection reset (`Internal`),
            // which can come after the log took the request.
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Internal => {
                Self::Unavailable(status.message().to_owned())
            }
            tonic::Code::FailedPrecondition => Self::Fenced(status.message().to_owned()),
            tonic::Code::Aborted => Self::Spoken(status.message().to_owned()),
            _ => Self::Refused(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

/// Calls `$method` on the front-end in use; when it does not answer, later calls
/// go to the next address (this call still fails: the caller decides to retry).
macro_rules! call {
    ($self:ident, $method:ident, $request:expr) => {{
        let (i, mut client) = $self.pick();
        let result = client.$method($request).await;
        $self.note(i, &result);
        result
    }};
}

/// A cheap-to-clone handle on the audit service. Its `Debug` leaves the token out.
/// It takes several addresses, separated by commas, for audit front-ends that
/// serve one log (`audit.postgres`).
#[derive(Clone)]
pub struct AuditClient {
    clients: arf_core::net::Rotation<AuditLogClient<Channel>>,
    token: Option<String>,
    /// The highest sequence number the log has acknowledged to this client (and its
    /// clones): a checkpoint that does not reach it does not cover what we wrote.
    acknowledged: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The appends of this client (and its clones), when asked to tell them ([`AuditClient::telling_own`]).
    own: Option<std::sync::Arc<crate::own::Own>>,
    /// The lease this replica appends under, when it is one ([`AuditClient::fenced`]).
    fence: Option<pb::Fence>,
}

impl std::fmt::Debug for AuditClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditClient").field("acknowledged", &self.acknowledged).finish_non_exhaustive()
    }
}

impl AuditClient {
    /// Connects lazily, in plain text: the first call fails with `Unavailable` if the log is down.
    pub fn connect(address: &str, token: Option<String>) -> Result<Self, AuditError> {
        Self::connect_dial(address, token, &arf_proto::tls::Dial::Plain)
    }

    /// Connects lazily as `dial` says (mutual TLS to the `audit` service, or plain
    /// text), to `addresses`: one, or several separated by commas.
    pub fn connect_dial(addresses: &str, token: Option<String>, dial: &arf_proto::tls::Dial) -> Result<Self, AuditError> {
        let clients = arf_core::net::addresses(addresses)
            .map(|address| {
                let uri = if address.starts_with("http") { address.to_owned() } else { format!("http://{address}") };
                let endpoint = Endpoint::from_shared(uri)
                    .map_err(|_| AuditError::Address(address.to_owned()))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(10));
                Ok(AuditLogClient::new(dial.channel(endpoint)))
            })
            .collect::<Result<Vec<_>, AuditError>>()?;
        let clients = arf_core::net::Rotation::new(clients).ok_or_else(|| AuditError::Address(addresses.to_owned()))?;
        Ok(Self { clients, token, acknowledged: Default::default(), own: None, fence: None })
    }

    /// This client, and its clones, keeping which records their appends wrote, for
    /// a follower that must tell them from those a peer under the same writer
    /// identity wrote ([`crate::own::Own`]).
    #[must_use]
    pub fn telling_own(mut self) -> Self {
        self.own = Some(std::sync::Arc::default());
        self
    }

    /// This client, and its clones, appending under a replica's lease: `member`
    /// (for a governor, `leader`) under `incarnation` in its role's table of
    /// members. The log takes each append only while that lease holds by the
    /// database's clock, in the append's own transaction (issue 16), and refuses
    /// it otherwise ([`AuditError::Fenced`]), so a replica that was paused past its
    /// lease writes nothing after a peer took its work over.
    #[must_use]
    pub fn fenced(mut self, member: &str, incarnation: &str) -> Self {
        self.fence = Some(pb::Fence { member: member.to_owned(), incarnation: incarnation.to_owned(), keys: Vec::new() });
        self
    }

    /// A client of a fenced agent replica whose appends are also made under these
    /// grouping keys, each with the token the replica drew when it took the key's
    /// lock: the log takes them only while every key still holds its token
    /// (`AppendRequest.fence.keys`). Without a lease ([`AuditClient::fenced`]) there
    /// are no replicas, and the keys are not sent.
    #[must_use]
    pub fn under_keys(&self, keys: &[(String, i64)]) -> Self {
        let mut client = self.clone();
        if let Some(fence) = &mut client.fence {
            fence.keys = keys.iter().map(|(key, token)| pb::KeyToken { key: key.clone(), token: *token }).collect();
        }
        client
    }

    /// Which records this client's appends wrote, when it keeps them.
    pub fn own(&self) -> Option<&crate::own::Own> {
        self.own.as_deref()
    }

    fn pick(&self) -> (usize, AuditLogClient<Channel>) {
        self.clients.pick()
    }

    /// After a call to front-end `i`: one that did not answer is passed over from now on.
    fn note<T>(&self, i: usize, result: &Result<T, tonic::Status>) {
        if let Err(status) = result
            && matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown)
            && self.clients.len() > 1
        {
            self.clients.failed(i);
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let request = tonic::Request::new(message);
        match &self.token {
            Some(token) => arf_proto::server::with_bearer(request, token),
            None => request,
        }
    }

    /// Appends entries in one durable batch and returns the sealed records.
    pub async fn append(&self, entries: Vec<Entry>) -> Result<Vec<Record>, AuditError> {
        self.append_on(entries, None).await
    }

    /// Appends one entry only if `quiet` holds when the log takes it, judged in the
    /// log's own order; [`AuditError::Spoken`] otherwise, and nothing is logged.
    pub async fn append_if_quiet(&self, entry: Entry, quiet: Quiet) -> Result<Record, AuditError> {
        let mut records = self.append_on(vec![entry], Some(quiet)).await?;
        records.pop().ok_or_else(|| AuditError::Malformed("append returned no record".to_owned()))
    }

    async fn append_on(&self, entries: Vec<Entry>, quiet: Option<Quiet>) -> Result<Vec<Record>, AuditError> {
        let entries = entries
            .into_iter()
            .map(|e| pb::AppendEntry {
                incident_id: e.incident_id,
                kind: e.kind.as_str().to_owned(),
                payload_json: serde_json::to_string(&e.payload).unwrap_or_else(|_| "null".to_owned()),
            })
            .collect();
        let ticket = self.own.as_deref().map(crate::own::Own::start);
        let quiet = quiet.map(|q| pb::Quiet { incident_id: q.incident_id, writer: q.writer, after_seq: q.after_seq });
        let request = self.request(pb::AppendRequest { entries, fence: self.fence.clone(), quiet });
        let response = if request.get_ref().fence.is_none() && request.get_ref().quiet.is_none() {
            call!(self, append, request)?
        } else {
            // An append on conditions (a lease, grouping keys, silence) goes by
            // AppendIf: an audit service older than it logs nothing and says so,
            // where its Append would ignore what it does not know and append.
            call!(self, append_if, request).map_err(|status| match status.code() {
                tonic::Code::Unimplemented => AuditError::Refused(format!(
                    "the audit log does not take appends on conditions (AppendIf: {}): it is older than this client, so nothing was logged; upgrade the audit service first",
                    status.message()
                )),
                _ => status.into(),
            })?
        };
        let records: Vec<Record> = response
            .into_inner()
            .records
            .into_iter()
            .map(|r| from_pb(r).map_err(AuditError::Malformed))
            .collect::<Result<_, _>>()?;
        if let Some(ticket) = ticket {
            ticket.answered(records.iter().map(|r| r.seq));
        }
        if let Some(last) = records.iter().map(|r| r.seq).max() {
            self.acknowledged.fetch_max(last, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(records)
    }

    /// The highest sequence number the log has acknowledged to this client.
    pub fn acknowledged_seq(&self) -> u64 {
        self.acknowledged.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Appends one entry.
    pub async fn append_one(&self, incident_id: &str, kind: RecordKind, payload: Value) -> Result<Record, AuditError> {
        let mut records = self.append(vec![Entry::new(incident_id, kind, payload)]).await?;
        records.pop().ok_or_else(|| AuditError::Malformed("append returned no record".to_owned()))
    }

    pub async fn get(&self, seq: u64) -> Result<Option<Record>, AuditError> {
        match call!(self, get, self.request(pb::GetRecordRequest { seq })) {
            Ok(response) => from_pb(response.into_inner()).map(Some).map_err(AuditError::Malformed),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    pub async fn read_incident(&self, incident_id: &str) -> Result<Vec<Record>, AuditError> {
        let request = self.request(pb::ReadIncidentRequest { incident_id: incident_id.to_owned() });
        let stream = call!(self, read_incident, request)?.into_inner();
        collect(stream).await
    }

    /// Records with `from <= seq < to` (`to = 0`: to the end).
    pub async fn read_range(&self, from: u64, to: u64) -> Result<Vec<Record>, AuditError> {
        let request = self.request(pb::ReadRangeRequest { from_seq: from, to_seq: to });
        let stream = call!(self, read_range, request)?.into_inner();
        collect(stream).await
    }

    /// Records with `from <= seq < to` (`to = 0`: to the end), as they arrive: a
    /// reader that folds them one at a time never holds the whole range.
    pub async fn stream_range(&self, from: u64, to: u64) -> Result<impl futures::Stream<Item = Result<Record, AuditError>>, AuditError> {
        let request = self.request(pb::ReadRangeRequest { from_seq: from, to_seq: to });
        let stream = call!(self, read_range, request)?.into_inner();
        Ok(stream.map(|item| match item {
            Ok(record) => from_pb(record).map_err(AuditError::Malformed),
            Err(status) => Err(status.into()),
        }))
    }

    /// The writer identity this client's token stands for, and the kinds it may
    /// append (empty: any).
    pub async fn who_am_i(&self) -> Result<(String, Vec<String>), AuditError> {
        let answer = call!(self, who_am_i, self.request(pb::WhoAmIRequest {}))?.into_inner();
        Ok((answer.writer, answer.kinds))
    }

    pub async fn head(&self) -> Result<(u64, String), AuditError> {
        let head = call!(self, head, self.request(pb::HeadRequest {}))?.into_inner();
        Ok((head.seq, head.hash))
    }

    /// The latest signed checkpoint as the log sends it (`None` before the first).
    /// It proves nothing until checked against a pinned key ([`crate::witness`]).
    pub async fn checkpoint(&self) -> Result<Option<String>, AuditError> {
        match call!(self, get_checkpoint, self.request(pb::GetCheckpointRequest {})) {
            Ok(response) => Ok(Some(response.into_inner().note)),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// Asks the log to sign a checkpoint of itself now (writers only).
    pub async fn sign_checkpoint(&self) -> Result<Option<String>, AuditError> {
        Ok(self.sign_checkpoint_from(0).await?.map(|(note, _)| note))
    }

    /// [`AuditClient::sign_checkpoint`], with the consistency proof from the tree of
    /// `from` records to the checkpoint returned, when the log gives one (`from` at
    /// most its size; a service older than this asks gives none): then the proof,
    /// still to be verified, and the size it starts from.
    pub async fn sign_checkpoint_from(&self, from: u64) -> Result<Option<(String, Option<(u64, Vec<Hash>)>)>, AuditError> {
        match call!(self, sign_checkpoint, self.request(pb::SignCheckpointRequest { consistency_from: from })) {
            Ok(response) => {
                let response = response.into_inner();
                let proof = if from > 0 && response.consistency_from == from {
                    Some((from, hashes(pb::ProofResponse { hashes: response.consistency_proof })?))
                } else {
                    None
                };
                Ok(Some((response.note, proof)))
            }
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    pub async fn inclusion_proof(&self, seq: u64, tree_size: u64) -> Result<Vec<Hash>, AuditError> {
        let request = self.request(pb::InclusionProofRequest { seq, tree_size });
        hashes(call!(self, inclusion_proof, request)?.into_inner())
    }

    pub async fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, AuditError> {
        let request = self.request(pb::ConsistencyProofRequest { old_size, new_size });
        hashes(call!(self, consistency_proof, request)?.into_inner())
    }

    /// Follows the log from `from`, forever.
    pub async fn tail(&self, from: u64) -> Result<impl futures::Stream<Item = Result<Record, AuditError>>, AuditError> {
        self.tail_of(from, &[], &[]).await
    }

    /// [`AuditClient::tail`], only the records written by one of `writers` and of
    /// one of `kinds` (either empty: any); the log leaves the others out.
    pub async fn tail_of(
        &self,
        from: u64,
        writers: &[&str],
        kinds: &[RecordKind],
    ) -> Result<impl futures::Stream<Item = Result<Record, AuditError>>, AuditError> {
        let request = pb::TailRequest {
            from_seq: from,
            writers: writers.iter().map(|w| (*w).to_owned()).collect(),
            kinds: kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        };
        let stream = call!(self, tail, self.request(request))?.into_inner();
        Ok(stream.map(|item| match item {
            Ok(record) => from_pb(record).map_err(AuditError::Malformed),
            Err(status) => Err(status.into()),
        }))
    }
}

fn hashes(proof: pb::ProofResponse) -> Result<Vec<Hash>, AuditError> {
    proof
        .hashes
        .into_iter()
        .map(|h| Hash::try_from(h.as_slice()).map_err(|_| AuditError::Malformed("a proof hash is not 32 bytes".to_owned())))
        .collect()
}

async fn collect(mut stream: tonic::Streaming<pb::AuditRecord>) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(from_pb(item?).map_err(AuditError::Malformed)?);
    }
    Ok(out)
}

/// A record as the service sent it, for clients that verify what they read.
pub fn from_pb(record: pb::AuditRecord) -> Result<Record, String> {
    let kind = RecordKind::parse(&record.kind).ok_or_else(|| format!("unknown record kind `{}`", record.kind))?;
    let payload = serde_json::from_str(&record.payload_json).map_err(|e| format!("record {} payload: {e}", record.seq))?;
    Ok(Record {
        seq: record.seq,
        time_ms: record.time_ms,
        writer: record.writer,
        incident_id: record.incident_id,
        kind,
        payload,
        prev_hash: record.prev_hash,
        hash: record.hash,
    })
}
