//! The log on disk: one sled tree, appended under a lock, flushed before it answers.
//!
//! Keys: `r` + big-endian seq → the record as JSON; `i` + incident id + `\0` +
//! big-endian seq → empty (the per-incident index). A record and its index entry
//! go in one atomic batch.

use std::path::Path;

use thiserror::Error;
use tokio::sync::{Mutex, broadcast};

use crate::record::{ChainError, ChainSummary, Entry, GENESIS_HASH, Record, verify_chain};

const RECORD_PREFIX: u8 = b'r';
const INDEX_PREFIX: u8 = b'i';
/// The most entries one append may carry.
pub const MAX_BATCH: usize = 10_000;
/// The largest payload one record may carry, in bytes of canonical JSON.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the log at `{path}`: {source}")]
    Open { path: String, source: sled::Error },
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("record {seq} cannot be decoded: {message}")]
    Corrupt { seq: u64, message: String },
    #[error("invalid append: {0}")]
    Invalid(String),
}

struct Head {
    seq: u64,
    hash: String,
}

/// The audit log.
pub struct Store {
    db: sled::Db,
    head: Mutex<Head>,
    appended: broadcast::Sender<Record>,
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = RECORD_PREFIX;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn index_key(incident_id: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(incident_id.len() + 10);
    key.push(INDEX_PREFIX);
    key.extend_from_slice(incident_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn seq_of_key(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

fn decode(seq: u64, bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { seq, message: e.to_string() })
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::open(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let head = match db.scan_prefix([RECORD_PREFIX]).next_back() {
            Some(item) => {
                let (key, value) = item?;
                let seq = seq_of_key(&key).unwrap_or(0);
                let record = decode(seq, &value)?;
                Head { seq: record.seq, hash: record.hash }
            }
            None => Head { seq: 0, hash: GENESIS_HASH.to_owned() },
        };
        let (appended, _) = broadcast::channel(4096);
        Ok(Self { db, head: Mutex::new(head), appended })
    }

    /// Appends entries atomically and in order, and returns once they are on disk.
    pub async fn append(&self, writer: &str, entries: Vec<Entry>, now_ms: i64) -> Result<Vec<Record>, StoreError> {
        if entries.is_empty() {
            return Err(StoreError::Invalid("an append needs at least one entry".to_owned()));
        }
        if entries.len() > MAX_BATCH {
            return Err(StoreError::Invalid(format!("an append carries at most {MAX_BATCH} entries, got {}", entries.len())));
        }
        let mut head = self.head.lock().await;
        let mut batch = sled::Batch::default();
        let mut records = Vec::with_capacity(entries.len());
        let (mut seq, mut hash) = (head.seq, head.hash.clone());
        for entry in entries {
            let record = Record::seal(seq, &hash, now_ms, writer, entry);
            let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
            if bytes.len() > MAX_PAYLOAD_BYTES {
                return Err(StoreError::Invalid(format!(
                    "record of kind `{}` is {} bytes, over the limit of {MAX_PAYLOAD_BYTES}",
                    record.kind.as_str(),
                    bytes.len()
                )));
            }
            batch.insert(&record_key(record.seq), bytes);
            if !record.incident_id.is_empty() {
                batch.insert(index_key(&record.incident_id, record.seq), &[] as &[u8]);
            }
            seq = record.seq;
            hash.clone_from(&record.hash);
            records.push(record);
        }
        self.db.apply_batch(batch)?;
        // Durable before acknowledged: the flush is the group commit of the batch.
        self.db.flush_async().await?;
        head.seq = seq;
        head.hash = hash;
        drop(head);
        for record in &records {
            // Nobody tailing is fine: the send error only means no receivers.
            let _ = self.appended.send(record.clone());
        }
        Ok(records)
    }

    pub fn get(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        self.db.get(record_key(seq))?.map(|bytes| decode(seq, &bytes)).transpose()
    }

    /// Records with `from <= seq < to`.
    pub fn range(&self, from: u64, to: Option<u64>) -> impl Iterator<Item = Result<Record, StoreError>> + '_ {
        let end = to.map_or_else(|| record_key(u64::MAX).to_vec(), |to| record_key(to).to_vec());
        self.db.range(record_key(from.max(1)).to_vec()..end).map(|item| {
            let (key, value) = item?;
            decode(seq_of_key(&key).unwrap_or(0), &value)
        })
    }

    pub fn by_incident(&self, incident_id: &str) -> Result<Vec<Record>, StoreError> {
        let mut prefix = vec![INDEX_PREFIX];
        prefix.extend_from_slice(incident_id.as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.scan_prefix(&prefix) {
            let (key, _) = item?;
            // A longer incident id sharing this prefix cannot match: the `\0` ends it.
            if key.len() != prefix.len() + 8 {
                continue;
            }
            let Some(seq) = seq_of_key(&key) else { continue };
            if let Some(record) = self.get(seq)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    pub async fn head(&self) -> (u64, String) {
        let head = self.head.lock().await;
        (head.seq, head.hash.clone())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.appended.subscribe()
    }

    /// Verifies the whole chain as stored.
    pub fn verify(&self) -> Result<ChainSummary, ChainError> {
        verify_tree(&self.db)
    }

    /// The raw database, for tests that tamper with it.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// Verifies the chain in a sled database, reading raw entries so that nothing the
/// store would normally correct for is hidden.
pub fn verify_tree(db: &sled::Db) -> Result<ChainSummary, ChainError> {
    let items = db.scan_prefix([RECORD_PREFIX]).enumerate().map(|(i, item)| {
        let position = i as u64 + 1;
        let (key, value) = item.map_err(|e| ChainError { seq: position, reason: format!("storage error: {e}") })?;
        let filed_at = seq_of_key(&key).unwrap_or(0);
        let record: Record = serde_json::from_slice(&value)
            .map_err(|e| ChainError { seq: filed_at, reason: format!("cannot be decoded: {e}") })?;
        Ok((filed_at, record))
    });
    verify_chain(items)
}

/// Opens the log at `path` read-only in spirit and verifies it; for `arf audit verify --data-dir`.
pub fn verify_path(path: &Path) -> Result<ChainSummary, VerifyPathError> {
    let db = sled::open(path).map_err(|source| VerifyPathError::Open { path: path.display().to_string(), source })?;
    Ok(verify_tree(&db)?)
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VerifyPathError {
    #[error("cannot open the log at `{path}` (is the audit service still running on it?): {source}")]
    Open { path: String, source: sled::Error },
    #[error(transparent)]
    Chain(#[from] ChainError),
}
