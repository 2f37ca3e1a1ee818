//! The log the service serves, on either store: the file (`store.rs`, the default
//! for one machine) or PostgreSQL (`pg.rs`, `audit.postgres`), behind one
//! interface. Both hold the same records, chain, tree and checkpoints.

use tokio::sync::broadcast;

use crate::merkle::Hash;
use crate::pg::PgStore;
use crate::record::{Entry, Record};
use crate::store::{Fence, Quiet, SignedCheckpoint, Store, StoreError};

#[allow(clippy::large_enum_variant, reason = "one per process, behind an Arc")]
pub enum Log {
    File(Store),
    Postgres(PgStore),
}

impl Log {
    /// Why the log stopped taking appends (damage found, a failed write or sync), if it has.
    pub fn failure(&self) -> Option<String> {
        match self {
            Self::File(store) => store.failure(),
            Self::Postgres(store) => store.failure(),
        }
    }

    /// How many records the log held, all verified, when it opened.
    pub fn records_at_open(&self) -> u64 {
        match self {
            Self::File(store) => store.open_report().records,
            Self::Postgres(store) => store.records_at_open(),
        }
    }

    /// Appends `entries` as `writer`; under `fence`, only while the replica's
    /// lease holds, which only the log on PostgreSQL can tell ([`Fence`]); with
    /// `quiet`, only while its writer has said nothing since ([`Quiet`]).
    pub async fn append(&self, writer: &str, entries: Vec<Entry>, now_ms: i64, (fence, quiet): (Option<Fence>, Option<Quiet>)) -> Result<Vec<Record>, StoreError> {
        match (self, fence) {
            (Self::File(_), Some(fence)) => Err(StoreError::Fenced(format!(
                "`{}` appends under its lease in `{}`, and this log is kept in files, which cannot check it: put the log in the replicas' database (`audit.postgres`)",
                fence.member, fence.table
            ))),
            (Self::File(store), None) => store.append_if(writer, entries, now_ms, quiet).await,
            (Self::Postgres(store), fence) => store.append_fenced(writer, entries, now_ms, fence, quiet).await,
        }
    }

    pub async fn checkpoint(&self, now_ms: i64) -> Result<Option<SignedCheckpoint>, StoreError> {
        match self {
            Self::File(store) => store.checkpoint(now_ms).await,
            Self::Postgres(store) => store.checkpoint(now_ms).await,
        }
    }

    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        match self {
            Self::File(store) => store.latest_checkpoint(),
            Self::Postgres(store) => store.latest_checkpoint(),
        }
    }

    /// These records, in order, each checked against the verified tree; a number
    /// beyond the head is left out.
    pub async fn records(&self, seqs: &[u64]) -> Result<Vec<Record>, StoreError> {
        match self {
            Self::File(store) => seqs.iter().filter_map(|seq| store.get(*seq).transpose()).collect(),
            Self::Postgres(store) => store.records(seqs).await,
        }
    }

    pub async fn incident_seqs(&self, incident_id: &str) -> Result<Vec<u64>, StoreError> {
        match self {
            Self::File(store) => Ok(store.incident_seqs(incident_id)),
            Self::Postgres(store) => store.incident_seqs(incident_id).await,
        }
    }

    /// The head; on PostgreSQL, after taking what other front-ends appended, so
    /// that a read of the whole log holds them (an error if the database does not
    /// answer: a log shorter than what was acknowledged elsewhere is not served).
    pub async fn head(&self) -> Result<(u64, String), StoreError> {
        match self {
            Self::File(store) => Ok(store.head().await),
            Self::Postgres(store) => {
                store.refresh().await?;
                Ok(store.head())
            }
        }
    }

    pub fn root(&self, size: u64) -> Result<Hash, StoreError> {
        match self {
            Self::File(store) => store.root(size),
            Self::Postgres(store) => store.root(size),
        }
    }

    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        if seq == 0 {
            return Err(StoreError::Invalid("records are numbered from 1".to_owned()));
        }
        match self {
            Self::File(store) => store.inclusion_proof(seq, size),
            Self::Postgres(store) => Ok(store.with_tree(|t| t.inclusion_proof(seq - 1, size))?),
        }
    }

    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        match self {
            Self::File(store) => store.consistency_proof(old, new),
            Self::Postgres(store) => Ok(store.with_tree(|t| t.consistency_proof(old, new))?),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Record> {
        match self {
            Self::File(store) => store.subscribe(),
            Self::Postgres(store) => store.subscribe(),
        }
    }
}
