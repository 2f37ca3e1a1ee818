//! The log on disk: an append-only file of checksummed frames (`frame.rs`), written
//! by one thread that seals and writes appends in groups while a second syncs them,
//! and answered only once fdatasync has returned.
//!
//! Files in the store's directory (0700; files 0600):
//! - `records.log`: the source of truth, every record in order.
//! - `checkpoint`: the latest signed checkpoint, also logged as a `checkpoint` record;
//!   a log found shorter than it, or disagreeing with it, does not open.
//! - `torn-<offset>.bin`: the bytes of an incomplete final write set aside at open.
//!
//! The index (sequence → offset, incident → sequences) and the Merkle tree are
//! rebuilt in memory at open by a scan that checks every frame's checksum, every
//! link and hash of the chain, and every checkpoint record against the tree. Damage
//! anywhere stops the open with its offset and record; nothing is ever discarded
//! except an incomplete final frame, which is kept aside and reported.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use arf_audit_client::witness::write_durably;

use ed25519_dalek::SigningKey;
use serde_json::json;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info, warn};

use crate::checkpoint::{Checkpoint, NoteVerifier};
use crate::frame::{self, Next};
use crate::merkle::{self, Hash, Tree};
use crate::record::{Entry, GENESIS_HASH, Record, RecordKind};

/// The most entries one append may carry.
pub const MAX_BATCH: usize = 10_000;
/// The longest incident id a record may carry.
pub const MAX_INCIDENT_ID_BYTES: usize = 256;
/// The largest payload one record may carry, in bytes of canonical JSON.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// The writer identity of records the log writes itself (checkpoints).
pub const LOG_WRITER: &str = "audit";
pub const LOG_FILE: &str = "records.log";
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// How many appends one group commit takes at most.
const MAX_GROUP: usize = 1024;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the log at `{path}`: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error(
        "the audit log `{path}` is damaged at byte {offset} (record {seq}): {reason}; nothing was discarded and the log will not open until an operator has looked (docs/audit.md)"
    )]
    Damaged { path: PathBuf, offset: u64, seq: u64, reason: String },
    #[error("the audit log `{path}` does not agree with its last checkpoint: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("`{0}` holds a log in the old sled format, which this version does not read; move it away to start a new log")]
    OldFormat(PathBuf),
    #[error("the audit log in the database at `{at}` is damaged at record {seq}: {reason}; nothing was discarded and the log will not open until an operator has looked (docs/audit.md)")]
    DamagedDb { at: String, seq: u64, reason: String },
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    /// The database did not take the append (it was rolled back): none of it is in the log.
    #[error("the log's database did not take the append, so none of it is in the log: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Database(#[from] arf_pg::PgError),
    #[error("the log stopped accepting appends after a failed write or sync: {0}")]
    Failed(String),
    /// The write or sync of this append failed part way: its records may or may not
    /// be found in the log after a restart, so the caller must not assume either.
    #[error("the append's write or sync failed, so it may or may not be in the log: {0}")]
    Indeterminate(String),
    #[error("record {seq} cannot be read: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The writer's lease does not hold ([`Fence`]): none of the append is in the log.
    #[error("the log did not take the append, so none of it is in the log: {0}")]
    Fenced(String),
    /// Another writer spoke since the caller read ([`Quiet`]): none of the append is in the log.
    #[error("the log did not take the append, so none of it is in the log: {0}")]
    Spoken(String),
    #[error("{0}")]
    Proof(#[from] merkle::ProofError),
}

/// How the log signs its checkpoints.
#[derive(Clone)]
pub struct Signer {
    pub origin: String,
    pub key: SigningKey,
    /// Sign a checkpoint once this many records have been appended since the last.
    pub every_records: u64,
}

impl Signer {
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier::new(self.origin.clone(), self.key.verifying_key())
    }
}

/// The latest signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// What the scan at open found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub records: u64,
    /// Bytes of an incomplete final write, set aside in the file named here.
    pub torn: Option<(u64, PathBuf)>,
}

#[derive(Default)]
struct Index {
    offsets: Vec<u64>,
    incidents: HashMap<String, Vec<u64>>,
    head_hash: String,
    tree: Tree,
    checkpoint: Option<SignedCheckpoint>,
}

impl Index {
    fn size(&self) -> u64 {
        self.offsets.len() as u64
    }

    fn add(&mut self, offset: u64, record: &Record) -> Result<(), String> {
        let leaf = leaf_of(record)?;
        self.offsets.push(offset);
        if !record.incident_id.is_empty() {
            self.incidents.entry(record.incident_id.clone()).or_default().push(record.seq);
        }
        self.head_hash.clone_from(&record.hash);
        self.tree.push(leaf);
        Ok(())
    }
}

/// The Merkle leaf of a record: its 32-byte hash, leaf-hashed.
pub fn leaf_of(record: &Record) -> Result<Hash, String> {
    let bytes = hex::decode(&record.hash).map_err(|_| "its hash is not hex".to_owned())?;
    Ok(merkle::leaf_hash(&bytes))
}

pub(crate) enum Request {
    Append(Pending),
    Checkpoint { now_ms: i64, reply: oneshot::Sender<Result<Option<SignedCheckpoint>, StoreError>> },
}

struct Shared {
    path: PathBuf,
    reader: File,
    index: RwLock<Index>,
    /// Records known to be on stable storage.
    durable: AtomicU64,
    /// Completed fsyncs of the log file.
    syncs: AtomicU64,
    failed: RwLock<Option<String>>,
    appended: broadcast::Sender<Record>,
}

/// The audit log.
pub struct Store {
    shared: Arc<Shared>,
    /// `None` only while dropping, so that the writer sees the channel close.
    requests: Option<mpsc::UnboundedSender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
    syncer: Option<std::thread::JoinHandle<()>>,
    report: OpenReport,
    verifier: Option<NoteVerifier>,
}

impl Drop for Store {
    /// Waits for the writer to finish what it was given and release the file's lock,
    /// so the log can be opened again at once.
    fn drop(&mut self) {
        self.requests.take();
        // The writer drains what it was given, then hangs up on the syncer, which
        // syncs and answers the rest; the file (and its lock) closes with the last.
        for thread in [self.writer.take(), self.syncer.take()].into_iter().flatten() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Failed("the log's writer has stopped".to_owned())
}

fn create_dir(path: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    tighten(path, 0o700)
}

/// Narrows a path's mode to `mode` when it is looser (an older version made 0755/0644).
fn tighten(path: &Path, mode: u32) -> Result<(), StoreError> {
    let meta = fs::metadata(path).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    }
    Ok(())
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|source| StoreError::Open { path: path.to_owned(), source })
}

/// An incomplete final frame: its offset, its length, and what was incomplete.
pub type Torn = (u64, u64, String);

/// An append waiting for the writer: who, what, when, under which lease, and
/// where to answer.
pub(crate) struct Pending {
    pub writer: String,
    pub entries: Vec<Entry>,
    pub now_ms: i64,
    /// Only on PostgreSQL, where the leases are ([`Fence`]).
    pub fence: Option<Fence>,
    pub quiet: Option<Quiet>,
    pub reply: oneshot::Sender<Result<Vec<Record>, StoreError>>,
}

/// The lease a replica appends under (issue 16): its append is taken only if, in
/// the append's own transaction, `table` shows `member` under `incarnation` with
/// the lease unexpired by the database's clock (`pg.rs`). The table comes from
/// the caller's role, never from the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// `agent_members`, `governor_members` or `executor_members`.
    pub table: &'static str,
    pub member: String,
    pub incarnation: String,
    /// An agent's grouping keys and the tokens it drew for them (`agent_keys`):
    /// each row must still hold its token.
    pub keys: Vec<(String, i64)>,
}
/// The condition an append may be made on ([`Quiet`]): taken only if `writer`
/// appended nothing under `incident_id` after record `after_seq`, judged in the
/// log's own order. A writer that decided on an incident's trail as read up to
/// `after_seq` (the executor before it starts an action, the governor before it
/// settles a decision as never run) writes only if that trail is still all the
/// other said: a withdrawal and a start, or a start and a "nothing ran", cannot
/// both land believing the other absent. Refused with [`StoreError::Spoken`].
pub use arf_audit_client::Quiet;

/// A condition on records the log does not hold yet was not read from this log (a
/// log restored from an older copy, say, whose numbers are being used again).
pub(crate) fn beyond_head(quiet: &Quiet, head: u64) -> Result<(), StoreError> {
    if quiet.after_seq > head {
        return Err(StoreError::Invalid(format!("`quiet.after_seq` is {}, beyond the log's last record {head}: it was not read from this log", quiet.after_seq)));
    }
    Ok(())
}

/// Why an append on `quiet` is refused, given the first record its writer
/// appended under the incident after `after_seq`, if there is one.
pub(crate) fn refusal(quiet: &Quiet, spoken: Option<u64>) -> Option<StoreError> {
    spoken.map(|seq| {
        StoreError::Spoken(format!(
            "`{}` appended record {seq} under incident `{}` after record {}, which the append was conditioned on: read the trail again",
            quiet.writer, quiet.incident_id, quiet.after_seq
        ))
    })
}

/// A checkpoint asked for: when, and where to answer.
pub(crate) type CheckpointAsk = (i64, oneshot::Sender<Result<Option<SignedCheckpoint>, StoreError>>);

/// `first` and whatever else is waiting (up to `MAX_GROUP`), split into appends and
/// checkpoint requests: what one group commit takes, in either store.
pub(crate) fn take_group(first: Request, receiver: &mut mpsc::UnboundedReceiver<Request>) -> (Vec<Pending>, Vec<CheckpointAsk>) {
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(request) => group.push(request),
            Err(_) => break,
        }
    }
    let mut appends = Vec::new();
    let mut checkpoints = Vec::new();
    for request in group {
        match request {
            Request::Append(pending) => appends.push(pending),
            Request::Checkpoint { now_ms, reply } => checkpoints.push((now_ms, reply)),
        }
    }
    (appends, checkpoints)
}

/// One record as the scan met it.
pub struct Scanned {
    pub offset: u64,
    pub record: Record,
}

/// Reads `records.log` from the start, checking frames, numbering, links, hashes and
/// (when `verifier` is given) every checkpoint record's signature and root.
/// `visit` sees each record once it has checked out. A torn final frame ends the
/// scan and is returned with its offset and length.
pub fn scan(
    path: &Path,
    verifier: Option<&NoteVerifier>,
    mut visit: impl FnMut(&Scanned, &Tree) -> Result<(), String>,
) -> Result<(Tree, Option<Torn>), StoreError> {
    let damaged = |offset: u64, seq: u64, reason: String| StoreError::Damaged { path: path.to_owned(), offset, seq, reason };
    let file = File::open(path).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; frame::MAGIC.len()];
    let got = frame::fill(&mut reader, &mut magic)?;
    let tree = Tree::new();
    if got == 0 {
        return Ok((tree, None));
    }
    if &magic != frame::MAGIC {
        return Err(damaged(0, 1, "the file does not start with the log's magic line".to_owned()));
    }
    let mut offset = frame::MAGIC.len() as u64;
    let mut chain = Chain::new();
    loop {
        let seq = chain.tree.size() + 1;
        match frame::next(&mut reader)? {
            Next::End => return Ok((chain.tree, None)),
            Next::Torn { len, reason } => return Ok((chain.tree, Some((offset, len, reason)))),
            Next::Damaged(reason) => return Err(damaged(offset, seq, reason)),
            Next::Frame { body, len } => {
                let record = frame::decode(&body).map_err(|reason| damaged(offset, seq, reason))?;
                chain.check(&record, verifier).map_err(|reason| damaged(offset, seq, reason))?;
                let scanned = Scanned { offset, record };
                visit(&scanned, &chain.tree).map_err(|reason| damaged(offset, seq, reason))?;
                chain.push(&scanned.record).map_err(|reason| damaged(offset, seq, reason))?;
                offset += len;
            }
        }
    }
}

/// The running check of a log read from its first record: each record must be the
/// next number, link to the one before, hash to its own hash, and (for a
/// `checkpoint` record) be the log's own, signed, naming the root of exactly the
/// records before it. Both stores (the file and PostgreSQL) read through it.
#[derive(Debug, Clone)]
pub struct Chain {
    pub tree: Tree,
    pub head_hash: String,
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    pub fn new() -> Self {
        Self { tree: Tree::new(), head_hash: GENESIS_HASH.to_owned() }
    }

    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Checks `record` as the next one, without taking it.
    pub fn check(&self, record: &Record, verifier: Option<&NoteVerifier>) -> Result<(), String> {
        let seq = self.tree.size() + 1;
        if record.seq != seq {
            return Err(format!("expected record {seq} here, found record {}", record.seq));
        }
        if record.prev_hash != self.head_hash {
            return Err("its link to the previous record does not match that record's hash".to_owned());
        }
        if record.compute_hash() != record.hash {
            return Err("its contents do not match its hash (changed after it was written)".to_owned());
        }
        if record.kind == RecordKind::Checkpoint {
            check_checkpoint_record(record, &self.tree, verifier)?;
        }
        Ok(())
    }

    /// Takes `record` (checked) as the next one.
    pub fn push(&mut self, record: &Record) -> Result<(), String> {
        self.tree.push(leaf_of(record)?);
        self.head_hash.clone_from(&record.hash);
        Ok(())
    }
}

/// A `checkpoint` record must be the log's own, signed, and name the root of
/// exactly the records before it. Without a key its signature cannot be checked,
/// but the size and root it states still are.
fn check_checkpoint_record(record: &Record, tree: &Tree, verifier: Option<&NoteVerifier>) -> Result<(), String> {
    if record.writer != LOG_WRITER {
        return Err(format!("a checkpoint record written by `{}`, not by the log", record.writer));
    }
    let note = record.payload.get("note").and_then(|n| n.as_str()).ok_or("a checkpoint record without its note")?;
    let checkpoint = match verifier {
        Some(verifier) => verifier.verify(note),
        None => Checkpoint::parse_unverified(note),
    }
    .map_err(|e| format!("checkpoint record: {e}"))?;
    if checkpoint.size != tree.size() {
        return Err(format!("checkpoint for size {} logged after record {}", checkpoint.size, tree.size()));
    }
    let root = tree.root(checkpoint.size).map_err(|e| e.to_string())?;
    if root != checkpoint.root {
        return Err(format!(
            "the records before it no longer hash to the root its signed checkpoint names (size {}): history was rewritten",
            checkpoint.size
        ));
    }
    Ok(())
}

impl Store {
    /// Opens (or creates) the log in `dir`; see the module docs for what is checked.
    pub fn open(dir: &Path, signer: Option<Signer>) -> Result<Self, StoreError> {
        if dir.join("db").exists() && dir.join("conf").exists() && !dir.join(LOG_FILE).exists() {
            return Err(StoreError::OldFormat(dir.to_owned()));
        }
        create_dir(dir)?;
        let path = dir.join(LOG_FILE);
        let new_file = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        tighten(&path, 0o600)?;
        file.try_lock().map_err(|e| StoreError::Open {
            path: path.clone(),
            source: std::io::Error::other(format!("another process holds the log open ({e})")),
        })?;
        if file.metadata()?.len() == 0 {
            file.write_all(frame::MAGIC)?;
            file.sync_all()?;
            if new_file {
                sync_dir(dir)?;
            }
        }
        let verifier = signer.as_ref().map(Signer::verifier);
        let note = read_checkpoint_file(dir)?;
        let mut index = Index { head_hash: GENESIS_HASH.to_owned(), ..Index::default() };
        let (tree, torn) = scan(&path, verifier.as_ref(), |scanned, _| {
            index.offsets.push(scanned.offset);
            if !scanned.record.incident_id.is_empty() {
                index.incidents.entry(scanned.record.incident_id.clone()).or_default().push(scanned.record.seq);
            }
            index.head_hash.clone_from(&scanned.record.hash);
            Ok(())
        })?;
        index.tree = tree;
        let mut report = OpenReport { records: index.size(), torn: None };
        // Checked before anything on disk changes: a log that will not open is left as found.
        index.checkpoint = check_checkpoint_file_note(note, &path, verifier.as_ref(), &index.tree)?;
        if let Some((offset, len, reason)) = torn {
            let aside = set_aside(dir, &file, offset, len)?;
            file.set_len(offset)?;
            file.sync_all()?;
            error!(
                offset,
                len,
                %reason,
                kept = %aside.display(),
                "the log ended in an incomplete write, which was never acknowledged; its bytes were set aside and the log continues before them"
            );
            report.torn = Some((len, aside));
        }
        let (appended, _) = broadcast::channel(4096);
        let reader = File::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        let size = index.size();
        let shared = Arc::new(Shared {
            path: path.clone(),
            reader,
            index: RwLock::new(index),
            durable: AtomicU64::new(size),
            syncs: AtomicU64::new(0),
            failed: RwLock::new(None),
            appended,
        });
        let (requests, receiver) = mpsc::unbounded_channel();
        let (writer, syncer) = Writer::new(Arc::clone(&shared), file, dir.to_owned(), signer)?;
        let syncer = std::thread::Builder::new().name("audit-log-syncer".to_owned()).spawn(move || syncer.run())?;
        let writer = std::thread::Builder::new().name("audit-log-writer".to_owned()).spawn(move || writer.run(receiver))?;
        info!(records = size, path = %path.display(), "audit log opened and verified");
        Ok(Self { shared, requests: Some(requests), writer: Some(writer), syncer: Some(syncer), report, verifier })
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The key checkpoints are checked against, when the log signs them.
    pub fn verifier(&self) -> Option<&NoteVerifier> {
        self.verifier.as_ref()
    }

    /// Appends entries atomically and in order, and answers once they are on stable
    /// storage. Appends that arrive while a sync is in flight share the next one.
    pub async fn append(&self, writer: &str, entries: Vec<Entry>, now_ms: i64) -> Result<Vec<Record>, StoreError> {
        self.append_if(writer, entries, now_ms, None).await
    }

    /// [`Store::append`], taken only while `quiet` holds ([`Quiet`]).
    pub async fn append_if(&self, writer: &str, entries: Vec<Entry>, now_ms: i64, quiet: Option<Quiet>) -> Result<Vec<Record>, StoreError> {
        if writer == LOG_WRITER {
            return Err(StoreError::Invalid(format!("`{LOG_WRITER}` is the log's own writer identity")));
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Append(Pending { writer: writer.to_owned(), entries, now_ms, fence: None, quiet, reply }))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Signs a checkpoint of the log as it is now and logs it, unless nothing but
    /// the last checkpoint was appended since. Returns the latest checkpoint.
    pub async fn checkpoint(&self, now_ms: i64) -> Result<Option<SignedCheckpoint>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Checkpoint { now_ms, reply })?;
        answer.await.map_err(|_| stopped())?
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.requests.as_ref().ok_or_else(stopped)?.send(request).map_err(|_| stopped())
    }

    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.index().checkpoint.clone()
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated: the
        // writer updates it only with operations that do not panic.
        self.shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        let offset = {
            let index = self.index();
            match seq.checked_sub(1).and_then(|i| index.offsets.get(i as usize)) {
                Some(offset) => *offset,
                None => return Ok(None),
            }
        };
        self.read_at(seq, offset).map(Some)
    }

    fn read_at(&self, seq: u64, offset: u64) -> Result<Record, StoreError> {
        read_at(&self.shared, seq, offset)
    }

    /// Records with `from <= seq < to`, read one at a time.
    pub fn range(&self, from: u64, to: Option<u64>) -> impl Iterator<Item = Result<Record, StoreError>> + '_ {
        let end = to.unwrap_or(u64::MAX).min(self.head_seq().saturating_add(1));
        (from.max(1)..end.max(from.max(1))).map(move |seq| {
            self.get(seq)?.ok_or_else(|| StoreError::Corrupt { seq, reason: "missing from the index".to_owned() })
        })
    }

    pub fn by_incident(&self, incident_id: &str) -> Result<Vec<Record>, StoreError> {
        self.incident_seqs(incident_id).into_iter().filter_map(|seq| self.get(seq).transpose()).collect()
    }

    /// The sequence numbers of an incident's records, in order.
    pub fn incident_seqs(&self, incident_id: &str) -> Vec<u64> {
        self.index().incidents.get(incident_id).cloned().unwrap_or_default()
    }

    fn head_seq(&self) -> u64 {
        self.index().size()
    }

    pub async fn head(&self) -> (u64, String) {
        let index = self.index();
        (index.size(), index.head_hash.clone())
    }

    /// The Merkle root over the first `size` records.
    pub fn root(&self, size: u64) -> Result<Hash, StoreError> {
        Ok(self.index().tree.root(size)?)
    }

    /// Proof that record `seq` is in the tree of the first `size` records.
    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        if seq == 0 {
            return Err(StoreError::Invalid("records are numbered from 1".to_owned()));
        }
        Ok(self.index().tree.inclusion_proof(seq - 1, size)?)
    }

    /// Proof that the tree of the first `old` records is a prefix of the tree of the first `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        Ok(self.index().tree.consistency_proof(old, new)?)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.shared.appended.subscribe()
    }

    /// The highest sequence number known to be on stable storage.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// How many fsyncs of the log file appends have cost since it opened.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Acquire)
    }

    /// Why the log stopped accepting appends, if it has.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Re-reads the whole file from disk and checks it as at open.
    pub fn verify(&self) -> Result<u64, StoreError> {
        let (tree, _) = scan(&self.shared.path, self.verifier.as_ref(), |_, _| Ok(()))?;
        Ok(tree.size())
    }
}

/// The `checkpoint` file's note, if there is one. Read it before the log: a running
/// service may sign a newer one while the log is being read.
/// Record `seq` at `offset`, checked against the tree verified at open. A record
/// that no longer reads as verified is damage: the log stops taking appends (and
/// signing checkpoints) at once, rather than build on a file it knows is damaged.
fn read_at(shared: &Shared, seq: u64, offset: u64) -> Result<Record, StoreError> {
    let corrupt = |reason: String| {
        error!(seq, offset, %reason, "a record of the log no longer reads as it was verified");
        fail(shared, &format!("record {seq} no longer reads as it was verified at open: {reason}"));
        StoreError::Corrupt { seq, reason }
    };
    let mut header = [0u8; frame::HEADER_LEN];
    shared.reader.read_exact_at(&mut header, offset).map_err(|e| corrupt(e.to_string()))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut bytes = header.to_vec();
    bytes.resize(frame::HEADER_LEN + len.min(frame::MAX_BODY) as usize, 0);
    shared.reader.read_exact_at(&mut bytes[frame::HEADER_LEN..], offset + frame::HEADER_LEN as u64).map_err(|e| corrupt(e.to_string()))?;
    let record = match frame::next(&mut bytes.as_slice()).map_err(|e| corrupt(e.to_string()))? {
        Next::Frame { body, .. } => frame::decode(&body).map_err(corrupt)?,
        other => return Err(corrupt(format!("changed on disk after the log opened: {other:?}"))),
    };
    if record.seq != seq {
        return Err(corrupt(format!("the frame holds record {}", record.seq)));
    }
    // A frame's checksum anyone can recompute; the tree built at open is the check.
    let leaf = leaf_of(&record).map_err(&corrupt)?;
    let expected = shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).tree.leaf(seq - 1);
    if record.compute_hash() != record.hash || Some(leaf) != expected {
        return Err(corrupt("changed on disk after the log opened: it no longer matches the verified tree".to_owned()));
    }
    Ok(record)
}

fn read_checkpoint_file(dir: &Path) -> Result<Option<String>, StoreError> {
    let path = dir.join(CHECKPOINT_FILE);
    match fs::read_to_string(&path) {
        Ok(note) => Ok(Some(note)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Open { path, source }),
    }
}

/// Refuses a log that is shorter than the `checkpoint` file says, or whose tree
/// disagrees with it. Without a key the note's signature cannot be checked, but
/// its size and root still are.
pub(crate) fn check_checkpoint_file_note(
    note: Option<String>,
    log: &Path,
    verifier: Option<&NoteVerifier>,
    tree: &Tree,
) -> Result<Option<SignedCheckpoint>, StoreError> {
    let Some(note) = note else { return Ok(None) };
    let bad = |reason: String| StoreError::Checkpoint { path: log.to_owned(), reason };
    let checkpoint = match verifier {
        Some(verifier) => verifier.verify(&note),
        None => Checkpoint::parse_unverified(&note),
    }
    .map_err(|e| bad(format!("the `{CHECKPOINT_FILE}` file: {e}")))?;
    if checkpoint.size > tree.size() {
        return Err(bad(format!(
            "the last checkpoint covers {} records but the log holds {}: records were lost or removed",
            checkpoint.size,
            tree.size()
        )));
    }
    if tree.root(checkpoint.size)? != checkpoint.root {
        return Err(bad(format!("the first {} records no longer hash to the checkpoint's root: history was rewritten", checkpoint.size)));
    }
    Ok(verifier.map(|_| SignedCheckpoint { checkpoint, note }))
}

/// Moves the `len` bytes at `offset` of the log into a new `torn-OFFSET[-N].bin`
/// (never over an earlier one), durably, streaming rather than reading them whole.
fn set_aside(dir: &Path, log: &File, offset: u64, len: u64) -> Result<PathBuf, StoreError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut n = 0;
    let (path, mut out) = loop {
        let name = if n == 0 { format!("torn-{offset}.bin") } else { format!("torn-{offset}-{n}.bin") };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(file) => break (path, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(source) => return Err(StoreError::Open { path, source }),
        }
    };
    let mut source = log.try_clone()?;
    source.seek(SeekFrom::Start(offset))?;
    std::io::copy(&mut source.take(len), &mut out)?;
    out.sync_all()?;
    sync_dir(dir)?;
    Ok(path)
}

/// The thread that seals and writes the log. It never waits for a sync: it hands
/// each written group to the [`Syncer`] and goes on sealing the next, so the CPU
/// work of a group overlaps the previous group's fdatasync (pipelined group commit).
struct Writer {
    shared: Arc<Shared>,
    file: Arc<File>,
    dir: PathBuf,
    signer: Option<Signer>,
    /// The head as sealed, ahead of the index until the syncer publishes.
    seq: u64,
    hash: String,
    /// Where the next write lands.
    end: u64,
    to_syncer: std::sync::mpsc::Sender<ToSyncer>,
    /// Records written and not yet published (seq, incident, writer), which the
    /// index does not show yet: what a [`Quiet`] append is judged against besides it.
    unpublished: Vec<(u64, String, String)>,
}

/// An append sealed against the running head, waiting for the group's sync.
struct Sealed {
    records: Vec<Record>,
    /// Each record's frame length in the file.
    lens: Vec<u64>,
    reply: oneshot::Sender<Result<Vec<Record>, StoreError>>,
}

enum ToSyncer {
    /// Written at `start`, to be synced, published and answered.
    Written { start: u64, sealed: Vec<Sealed> },
    /// Answered once everything sent before it is published.
    Barrier(std::sync::mpsc::Sender<()>),
}

fn fail(shared: &Shared, reason: &str) {
    error!(%reason, "the audit log stops accepting appends; restart it once the disk is healthy");
    let mut failed = shared.failed.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    failed.get_or_insert_with(|| reason.to_owned());
}

fn failure(shared: &Shared) -> Option<String> {
    shared.failed.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

impl Writer {
    fn new(shared: Arc<Shared>, file: File, dir: PathBuf, signer: Option<Signer>) -> std::io::Result<(Self, Syncer)> {
        let file = Arc::new(file);
        let end = file.metadata()?.len();
        let (seq, hash) = {
            let index = shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            (index.size(), index.head_hash.clone())
        };
        let (to_syncer, from_writer) = std::sync::mpsc::channel();
        let syncer = Syncer { shared: Arc::clone(&shared), file: Arc::clone(&file), from_writer };
        Ok((Self { shared, file, dir, signer, seq, hash, end, to_syncer, unpublished: Vec::new() }, syncer))
    }

    fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = receiver.blocking_recv() {
            let (appends, checkpoints) = take_group(first, &mut receiver);
            if !appends.is_empty() {
                self.write(appends);
            }
            let due = self.signer.as_ref().is_some_and(|s| {
                let index = self.shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                let since = self.seq - index.checkpoint.as_ref().map_or(0, |c| c.checkpoint.size);
                since >= s.every_records
            });
            if due || !checkpoints.is_empty() {
                let now_ms = checkpoints.first().map_or_else(arf_core::time::now_ms, |(t, _)| *t);
                let result = self.sign_checkpoint(now_ms);
                if let Err(error) = &result {
                    error!(%error, "could not sign a checkpoint of the audit log");
                }
                for (_, reply) in checkpoints {
                    let answer = match &result {
                        Ok(latest) => Ok(latest.clone()),
                        Err(e) => Err(StoreError::Failed(e.to_string())),
                    };
                    let _ = reply.send(answer);
                }
            }
        }
        // Everything handed over is synced and answered before the file is closed.
        self.barrier();
    }

    /// Seals every append of the group against the running head and writes them
    /// with one write; the syncer syncs, publishes and answers.
    fn write(&mut self, appends: Vec<Pending>) {
        if let Some(reason) = failure(&self.shared) {
            for pending in appends {
                let _ = pending.reply.send(Err(StoreError::Failed(reason.clone())));
            }
            return;
        }
        let (mut seq, mut hash) = (self.seq, self.hash.clone());
        let mut buffer = Vec::new();
        let mut sealed: Vec<Sealed> = Vec::new();
        let durable = self.shared.durable.load(Ordering::Acquire);
        self.unpublished.retain(|(seq, ..)| *seq > durable);
        for Pending { writer, entries, now_ms, quiet, reply, .. } in appends {
            // Its caller gave up (a timeout) and was told it failed: it is not sealed,
            // so that what the caller believes, that nothing was logged, holds.
            if reply.is_closed() {
                continue;
            }
            if let Some(quiet) = &quiet {
                match self.spoken_since(quiet).map(|spoken| refusal(quiet, spoken)) {
                    Ok(None) => {}
                    Ok(Some(error)) | Err(error) => {
                        let _ = reply.send(Err(error));
                        continue;
                    }
                }
            }
            let mut local = Vec::new();
            match seal(&writer, entries, now_ms, seq, &hash, &mut local) {
                Ok((records, lens)) => {
                    buffer.extend_from_slice(&local);
                    if let Some(last) = records.last() {
                        seq = last.seq;
                        hash.clone_from(&last.hash);
                    }
                    self.unpublished.extend(records.iter().map(|r| (r.seq, r.incident_id.clone(), r.writer.clone())));
                    sealed.push(Sealed { records, lens, reply });
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            }
        }
        if sealed.is_empty() {
            return;
        }
        match (&*self.file).write_all(&buffer) {
            Ok(()) => {
                let start = self.end;
                self.end += buffer.len() as u64;
                (self.seq, self.hash) = (seq, hash);
                if let Err(std::sync::mpsc::SendError(ToSyncer::Written { sealed, .. })) =
                    self.to_syncer.send(ToSyncer::Written { start, sealed })
                {
                    fail(&self.shared, "the log's syncer has stopped");
                    for s in sealed {
                        let _ = s.reply.send(Err(StoreError::Failed("the log's syncer has stopped".to_owned())));
                    }
                }
            }
            Err(error) => {
                let reason = format!("writing `{}` failed: {error}", self.shared.path.display());
                fail(&self.shared, &reason);
                for s in sealed {
                    let _ = s.reply.send(Err(StoreError::Indeterminate(reason.clone())));
                }
            }
        }
    }

    /// The first record `quiet.writer` wrote under `quiet.incident_id` after
    /// `quiet.after_seq`: among those published (read back and checked against
    /// the tree), then among those written since. This thread is the only one
    /// that seals, so nothing else can land in between.
    fn spoken_since(&self, quiet: &Quiet) -> Result<Option<u64>, StoreError> {
        beyond_head(quiet, self.seq)?;
        let published: Vec<(u64, u64)> = {
            let index = self.shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let seqs = index.incidents.get(&quiet.incident_id).map(Vec::as_slice).unwrap_or_default();
            let after = seqs.partition_point(|seq| *seq <= quiet.after_seq);
            seqs[after..].iter().filter_map(|seq| index.offsets.get((*seq - 1) as usize).map(|offset| (*seq, *offset))).collect()
        };
        for (seq, offset) in published {
            if read_at(&self.shared, seq, offset)?.writer == quiet.writer {
                return Ok(Some(seq));
            }
        }
        Ok(self
            .unpublished
            .iter()
            .find(|(seq, incident, writer)| *seq > quiet.after_seq && *incident == quiet.incident_id && *writer == quiet.writer)
            .map(|(seq, ..)| *seq))
    }

    /// Waits until everything written so far is synced and published.
    fn barrier(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.to_syncer.send(ToSyncer::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    fn sign_checkpoint(&mut self, now_ms: i64) -> Result<Option<SignedCheckpoint>, StoreError> {
        let Some(signer) = self.signer.clone() else { return Ok(None) };
        // A checkpoint covers only what is durable: let the syncer catch up first.
        self.barrier();
        if let Some(reason) = failure(&self.shared) {
            return Err(StoreError::Failed(reason));
        }
        let (size, root, latest) = {
            let index = self.shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            (index.size(), index.tree.root(index.size())?, index.checkpoint.clone())
        };
        if size == 0 {
            return Ok(None);
        }
        // A checkpoint record grows the log by one; checkpointing only that would never end.
        if let Some(latest) = latest.as_ref().filter(|l| size <= l.checkpoint.size + 1) {
            return Ok(Some(latest.clone()));
        }
        let checkpoint = Checkpoint { origin: signer.origin.clone(), size, root };
        let note = checkpoint.sign(&signer.key);
        let payload = json!({"origin": checkpoint.origin, "size": size, "root_hash": checkpoint.root_hex(), "note": note});
        let (tx, _rx) = oneshot::channel();
        let entry = Entry::new("", RecordKind::Checkpoint, payload);
        self.write(vec![Pending { writer: LOG_WRITER.to_owned(), entries: vec![entry], now_ms, fence: None, quiet: None, reply: tx }]);
        self.barrier();
        if let Some(reason) = failure(&self.shared) {
            return Err(StoreError::Failed(reason));
        }
        write_durably(&self.dir.join(CHECKPOINT_FILE), note.as_bytes())?;
        let signed = SignedCheckpoint { checkpoint, note };
        self.shared.index.write().unwrap_or_else(std::sync::PoisonError::into_inner).checkpoint = Some(signed.clone());
        info!(size, root = %signed.checkpoint.root_hex(), "checkpoint signed");
        Ok(Some(signed))
    }
}

/// The thread that makes written groups durable: it takes every group written
/// since its last sync, fdatasyncs once, and only then publishes and answers them.
struct Syncer {
    shared: Arc<Shared>,
    file: Arc<File>,
    from_writer: std::sync::mpsc::Receiver<ToSyncer>,
}

impl Syncer {
    fn run(self) {
        while let Ok(first) = self.from_writer.recv() {
            let mut batch = vec![first];
            batch.extend(self.from_writer.try_iter());
            let synced = if batch.iter().any(|m| matches!(m, ToSyncer::Written { .. })) {
                // Test builds: holds records written but not yet durable, so unread.
                if let Some(pause) = arf_core::crash::pause("audit.before_sync") {
                    std::thread::sleep(pause);
                }
                match failure(&self.shared) {
                    Some(reason) => Err(reason),
                    None => self.file.sync_data().map_err(|e| format!("syncing `{}` failed: {e}", self.shared.path.display())),
                }
            } else {
                Ok(())
            };
            match &synced {
                Ok(()) => {
                    self.shared.syncs.fetch_add(1, Ordering::AcqRel);
                }
                Err(reason) => fail(&self.shared, reason),
            }
            for message in batch {
                match (message, &synced) {
                    (ToSyncer::Written { start, sealed }, Ok(())) => self.publish(start, sealed),
                    (ToSyncer::Written { sealed, .. }, Err(reason)) => {
                        for s in sealed {
                            let _ = s.reply.send(Err(StoreError::Indeterminate(reason.clone())));
                        }
                    }
                    (ToSyncer::Barrier(done), _) => {
                        let _ = done.send(());
                    }
                }
            }
        }
    }

    fn publish(&self, start: u64, sealed: Vec<Sealed>) {
        let mut offset = start;
        {
            let mut index = self.shared.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for s in &sealed {
                for (record, len) in s.records.iter().zip(&s.lens) {
                    // Sealed records always carry a hex hash, so `add` cannot fail here.
                    if let Err(reason) = index.add(offset, record) {
                        error!(seq = record.seq, %reason, "record sealed with a bad hash");
                    }
                    offset += len;
                }
            }
            self.shared.durable.store(index.size(), Ordering::Release);
        }
        for s in sealed {
            for record in &s.records {
                let _ = self.shared.appended.send(record.clone());
            }
            let _ = s.reply.send(Ok(s.records));
        }
    }
}

/// Seals one append's entries after `(seq, hash)`, encoding their frames into `out`.
fn seal(
    writer: &str,
    entries: Vec<Entry>,
    now_ms: i64,
    seq: u64,
    hash: &str,
    out: &mut Vec<u8>,
) -> Result<(Vec<Record>, Vec<u64>), StoreError> {
    let sealed = seal_records(writer, entries, now_ms, seq, hash)?;
    let mut records = Vec::with_capacity(sealed.len());
    let mut lens = Vec::with_capacity(sealed.len());
    for (record, bytes) in sealed {
        frame::encode(&bytes, out);
        lens.push((frame::HEADER_LEN + bytes.len()) as u64);
        records.push(record);
    }
    Ok((records, lens))
}

/// Seals one append's entries after `(seq, hash)`: each record with the bytes that
/// are stored for it (its JSON), checked to read back as the record it hashes to.
pub(crate) fn seal_records(
    writer: &str,
    entries: Vec<Entry>,
    now_ms: i64,
    seq: u64,
    hash: &str,
) -> Result<Vec<(Record, Vec<u8>)>, StoreError> {
    if entries.is_empty() {
        return Err(StoreError::Invalid("an append needs at least one entry".to_owned()));
    }
    if entries.len() > MAX_BATCH {
        return Err(StoreError::Invalid(format!("an append carries at most {MAX_BATCH} entries, got {}", entries.len())));
    }
    let (mut seq, mut hash) = (seq, hash.to_owned());
    let mut sealed = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        // An incident id is a name, not text: bounded, and without control
        // characters (a NUL would fail a PostgreSQL group commit for every append in it).
        if entry.incident_id.len() > MAX_INCIDENT_ID_BYTES || entry.incident_id.chars().any(char::is_control) {
            return Err(StoreError::Invalid(format!(
                "`entries[{i}].incident_id` must be at most {MAX_INCIDENT_ID_BYTES} bytes without control characters"
            )));
        }
        if entry.kind == RecordKind::Checkpoint && writer != LOG_WRITER {
            return Err(StoreError::Invalid("`checkpoint` records are written by the log itself".to_owned()));
        }
        let record = Record::seal(seq, &hash, now_ms, writer, entry);
        let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(StoreError::Invalid(format!(
                "record of kind `{}` is {} bytes, over the limit of {MAX_PAYLOAD_BYTES}",
                record.kind.as_str(),
                bytes.len()
            )));
        }
        // What is written must read back as the record it hashes to, or the log would
        // refuse to open on it later: a payload nested too deeply to decode, or a
        // value that does not survive a round trip, is refused now, not discovered then.
        match frame::decode(&bytes) {
            Ok(back) if back == record && back.compute_hash() == record.hash => {}
            Ok(_) => {
                return Err(StoreError::Invalid(format!(
                    "a `{}` record's payload does not read back as written (a number that does not round-trip?)",
                    record.kind.as_str()
                )));
            }
            Err(reason) => {
                return Err(StoreError::Invalid(format!("a `{}` record cannot be read back: {reason}", record.kind.as_str())));
            }
        }
        seq = record.seq;
        hash.clone_from(&record.hash);
        sealed.push((record, bytes));
    }
    Ok(sealed)
}

/// What `verify_dir` found: the records, the tree's root, and the latest checkpoint.
#[derive(Debug, Clone)]
pub struct Verified {
    pub records: u64,
    pub head_hash: String,
    pub root: Hash,
    pub checkpoints: u64,
    pub latest_checkpoint: Option<Checkpoint>,
    /// An incomplete final write (never acknowledged), left for the service to set aside.
    pub torn: Option<(u64, u64)>,
    /// The tree over every record, to check witnesses' checkpoints against.
    pub tree: Tree,
}

/// Verifies a log directory offline: every frame, link, hash and checkpoint record,
/// and the `checkpoint` file. Works while the service runs (it only reads).
pub fn verify_dir(dir: &Path, verifier: Option<&NoteVerifier>) -> Result<Verified, StoreError> {
    let path = dir.join(LOG_FILE);
    if !path.exists() {
        if dir.join("db").exists() {
            return Err(StoreError::OldFormat(dir.to_owned()));
        }
        return Err(StoreError::Open { path, source: std::io::Error::from(std::io::ErrorKind::NotFound) });
    }
    let note = read_checkpoint_file(dir)?;
    let mut head_hash = GENESIS_HASH.to_owned();
    let mut checkpoints = 0;
    let mut latest = None;
    let (tree, torn) = scan(&path, verifier, |scanned, _| {
        head_hash.clone_from(&scanned.record.hash);
        if scanned.record.kind == RecordKind::Checkpoint {
            checkpoints += 1;
            if let Some(v) = verifier {
                let note = scanned.record.payload.get("note").and_then(|n| n.as_str()).unwrap_or_default();
                latest = v.verify(note).ok();
            }
        }
        Ok(())
    })?;
    let file_checkpoint = check_checkpoint_file_note(note, &path, verifier, &tree)?;
    if let Some(file) = file_checkpoint.filter(|f| latest.as_ref().is_none_or(|l| l.size < f.checkpoint.size)) {
        latest = Some(file.checkpoint);
    }
    if torn.is_some() {
        warn!("the log ends in an incomplete write that was never acknowledged");
    }
    Ok(Verified {
        records: tree.size(),
        head_hash,
        root: tree.root(tree.size())?,
        checkpoints,
        latest_checkpoint: latest,
        torn: torn.map(|(offset, len, _)| (offset, len)),
        tree,
    })
}
