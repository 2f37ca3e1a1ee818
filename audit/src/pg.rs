//! The log on PostgreSQL: the same records, chain, tree and checkpoints as the file
//! store (`store.rs`), for deployments that run several audit front-ends or keep
//! their state in a database they already operate (issue 16).
//!
//! Tables (`pg/migrations/0001_audit_log.sql`): `audit_records` (each record's JSON
//! exactly as hashed, by sequence number), `audit_head` (one row: the last sequence
//! number and hash) and `audit_checkpoint` (the latest signed checkpoint).
//!
//! **One chain, whatever the number of front-ends.** An append runs in one
//! transaction that first locks the head row (`SELECT ... FOR UPDATE`), so appends
//! through any front-end take turns; the front-end then reads what others appended
//! since it last looked, checks each record against its own copy of the chain and
//! tree, seals the new records after the head, inserts them, moves the head and
//! commits. Concurrent appends to one front-end share that transaction (group
//! commit), and are answered only after `COMMIT` returned, which PostgreSQL makes
//! durable (`arf_pg::check` refuses a server with `fsync` or `synchronous_commit`
//! off). A commit whose answer was lost is reported as indeterminate, as the file
//! store reports a failed sync.
//!
//! **Nothing unverified is served.** At open the whole table is read in one
//! snapshot, in pages, and checked like the file (numbering, links, hashes,
//! checkpoint records, the head row and the checkpoint row); damage stops the open.
//! Every record read later is checked against the tree built then, so a row changed
//! under a running front-end is an error naming its sequence number. Records other
//! front-ends append reach this one's followers through `LISTEN/NOTIFY` (and a poll
//! every second, in case a notification was missed), checked the same way.
//!
//! Any front-end may sign a checkpoint: it does so under the head lock, for exactly
//! the records before it, so two front-ends never sign different roots for one size.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info, warn};

use arf_pg::tokio_postgres;
use arf_pg::{Client, Settings, ToSql};

use crate::checkpoint::{Checkpoint, NoteVerifier};
use crate::frame;
use crate::merkle::{Hash, Tree};
use crate::record::{Entry, Record, RecordKind};
use crate::store::{Chain, Fence, LOG_WRITER, Pending, Quiet, Request, SignedCheckpoint, Signer, StoreError, Verified, seal_records, take_group};

/// Rows read per page when reading the table whole.
const PAGE: i32 = 10_000;
/// The channel front-ends tell each other of appends on.
const CHANNEL: &str = "arf_audit_appended";

struct Index {
    chain: Chain,
    /// The chain's last record is the log's own `checkpoint` record (what a
    /// head written before head seals may be).
    head_is_checkpoint: bool,
    checkpoint: Option<SignedCheckpoint>,
    /// Incident → its records' sequence numbers, built from verified records only
    /// (the `incident_id` column is an index for tools, never trusted here).
    incidents: std::collections::HashMap<String, Vec<u64>>,
}

/// Whether the head row's `seal` vouches for the chain ending at `(seq, hash)`:
/// the log key's signature of it, which every append renews in its transaction
/// (`checkpoint::seal_head`). So rows a database client inserted that is not an
/// audit front-end (it lacks the key) are refused, however well they chain. With
/// no key at hand nothing can be checked. A head with no seal is taken only when
/// it is a `checkpoint` record, whose signed note vouches for everything before
/// it (a log written before head seals, stopped cleanly).
fn check_head_seal(verifier: Option<&NoteVerifier>, (seq, hash): (u64, &str), seal: Option<&str>, head_is_checkpoint: bool) -> Result<(), String> {
    let Some(verifier) = verifier else { return Ok(()) };
    match seal {
        _ if seq == 0 => Ok(()),
        Some(seal) if verifier.verify_head_seal(seq, hash, seal) => Ok(()),
        None if head_is_checkpoint => Ok(()),
        Some(_) => Err(format!("the head row's seal does not match record {seq}: the chain's end was moved by a database client that is not an audit front-end")),
        None => Err(format!("the head (record {seq}) carries no seal of the log's key: the chain's end was moved by a database client that is not an audit front-end")),
    }
}

impl Index {
    fn note_incident(&mut self, record: &Record) {
        if !record.incident_id.is_empty() {
            self.incidents.entry(record.incident_id.clone()).or_default().push(record.seq);
        }
    }
}

struct Shared {
    at: String,
    index: RwLock<Index>,
    /// Held while the index moves forward, so records are taken in order, once.
    advance: tokio::sync::Mutex<()>,
    failed: RwLock<Option<String>>,
    appended: broadcast::Sender<Record>,
    verifier: Option<NoteVerifier>,
}


/// The audit log in a PostgreSQL database.
pub struct PgStore {
    shared: Arc<Shared>,
    reads: Arc<Reads>,
    requests: mpsc::UnboundedSender<Request>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    records_at_open: u64,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn damaged(at: &str, seq: u64, reason: impl Into<String>) -> StoreError {
    StoreError::DamagedDb { at: at.to_owned(), seq, reason: reason.into() }
}

fn decode_row(at: &str, seq: i64, body: &[u8]) -> Result<Record, StoreError> {
    let record = frame::decode(body).map_err(|reason| damaged(at, seq as u64, reason))?;
    if record.seq != seq as u64 {
        return Err(damaged(at, seq as u64, format!("the row numbered {seq} holds record {}", record.seq)));
    }
    Ok(record)
}

/// What reading the whole table found.
struct Scan {
    chain: Chain,
    head_is_checkpoint: bool,
    incidents: std::collections::HashMap<String, Vec<u64>>,
    checkpoints: u64,
    latest_logged: Option<Checkpoint>,
    checkpoint: Option<SignedCheckpoint>,
}

/// Reads every record in one snapshot, page by page, checking each as the file
/// store's scan does, then the head row and the checkpoint row against them.
async fn scan(client: &mut Client, at: &str, verifier: Option<&NoteVerifier>) -> Result<Scan, StoreError> {
    let tx = client.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).read_only(true).start().await.map_err(arf_pg::PgError::from)?;
    let head = tx.query_one("SELECT seq, hash, seal FROM audit_head", &[]).await.map_err(arf_pg::PgError::from)?;
    let (head_seq, head_hash, head_seal): (i64, String, Option<String>) = (head.get(0), head.get(1), head.get(2));
    let note: Option<String> =
        tx.query_opt("SELECT note FROM audit_checkpoint", &[]).await.map_err(arf_pg::PgError::from)?.map(|r| r.get(0));
    let statement = tx.prepare("SELECT seq, body, incident_id, writer, kind FROM audit_records ORDER BY seq").await.map_err(arf_pg::PgError::from)?;
    let portal = tx.bind(&statement, &[]).await.map_err(arf_pg::PgError::from)?;
    let mut out = Scan { chain: Chain::new(), head_is_checkpoint: false, incidents: std::collections::HashMap::new(), checkpoints: 0, latest_logged: None, checkpoint: None };
    loop {
        let rows = tx.query_portal(&portal, PAGE).await.map_err(arf_pg::PgError::from)?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let (seq, body): (i64, Vec<u8>) = (row.get(0), row.get(1));
            let next = out.chain.size() + 1;
            let record = frame::decode(&body).map_err(|reason| damaged(at, next, reason))?;
            out.chain.check(&record, verifier).map_err(|reason| damaged(at, next, reason))?;
            if seq as u64 != record.seq {
                return Err(damaged(at, next, format!("the row numbered {seq} holds record {}", record.seq)));
            }
            // The columns only index the record (an incident's records are found by
            // them); they must say what the hashed body says.
            let (incident, writer, kind): (&str, &str, &str) = (row.get(2), row.get(3), row.get(4));
            if incident != record.incident_id || writer != record.writer || kind != record.kind.as_str() {
                return Err(damaged(at, next, "its row's incident, writer or kind column differs from the record it holds"));
            }
            if record.kind == RecordKind::Checkpoint {
                out.checkpoints += 1;
                if let Some(v) = verifier {
                    let note = record.payload.get("note").and_then(|n| n.as_str()).unwrap_or_default();
                    out.latest_logged = v.verify(note).ok();
                }
            }
            out.chain.push(&record).map_err(|reason| damaged(at, next, reason))?;
            out.head_is_checkpoint = record.kind == RecordKind::Checkpoint;
            if !record.incident_id.is_empty() {
                out.incidents.entry(record.incident_id).or_default().push(record.seq);
            }
        }
    }
    tx.commit().await.map_err(arf_pg::PgError::from)?;
    let size = out.chain.size();
    if head_seq as u64 != size || head_hash != out.chain.head_hash {
        return Err(damaged(
            at,
            size + 1,
            format!(
                "the head row names record {head_seq} but the table's chain ends at record {size}: records were removed, or the head was changed"
            ),
        ));
    }
    check_head_seal(verifier, (size, &head_hash), head_seal.as_deref(), out.head_is_checkpoint).map_err(|reason| damaged(at, size, reason))?;
    out.checkpoint = crate::store::check_checkpoint_file_note(note, std::path::Path::new(at), verifier, &out.chain.tree)?;
    Ok(out)
}

/// Verifies the log in a database offline: every record, link, hash and checkpoint
/// record, the head row and the checkpoint row. Works while front-ends run (it
/// reads one snapshot).
pub async fn verify(settings: &Settings, verifier: Option<&NoteVerifier>) -> Result<Verified, StoreError> {
    let mut client = settings.connect().await?;
    arf_pg::check(&client).await?;
    let scan = scan(&mut client, &settings.describe(), verifier).await?;
    let mut latest = scan.latest_logged;
    if let Some(row) = scan.checkpoint.filter(|c| latest.as_ref().is_none_or(|l| l.size < c.checkpoint.size)) {
        latest = Some(row.checkpoint);
    }
    Ok(Verified {
        records: scan.chain.size(),
        head_hash: scan.chain.head_hash,
        root: scan.chain.tree.root(scan.chain.tree.size())?,
        checkpoints: scan.checkpoints,
        latest_checkpoint: latest,
        torn: None,
        tree: scan.chain.tree,
    })
}

impl Shared {
    fn failure(&self) -> Option<String> {
        self.failed.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn fail(&self, reason: &str) {
        error!(%reason, at = %self.at, "the audit log stops accepting appends: its records in the database do not check out");
        self.failed.write().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert_with(|| reason.to_owned());
    }

    fn size(&self) -> u64 {
        self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).chain.size()
    }

    /// Takes records in order, checking each against the chain; records already
    /// taken must be the same ones. Anything else is damage: the log stops.
    fn take(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut taken = Vec::new();
        {
            let mut index = self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for record in records {
                let size = index.chain.size();
                if record.seq <= size {
                    let leaf = crate::store::leaf_of(record).ok();
                    if leaf.is_none() || index.chain.tree.leaf(record.seq - 1) != leaf {
                        drop(index);
                        let reason = format!("record {} in the database differs from the one this front-end took before", record.seq);
                        self.fail(&reason);
                        return Err(damaged(&self.at, record.seq, reason));
                    }
                    continue;
                }
                let checked = index.chain.check(record, self.verifier.as_ref()).and_then(|()| index.chain.push(record));
                if let Err(reason) = checked {
                    drop(index);
                    self.fail(&reason);
                    return Err(damaged(&self.at, record.seq, reason));
                }
                index.head_is_checkpoint = record.kind == RecordKind::Checkpoint;
                index.note_incident(record);
                taken.push(record.clone());
            }
        }
        for record in taken {
            let _ = self.appended.send(record);
        }
        Ok(())
    }

    /// Checks that the head row, `(seq, hash)` with `seal`, is where this
    /// front-end's chain ends and that the log's key sealed it; stops the log if not.
    fn check_head(&self, seq: u64, hash: &str, seal: Option<&str>) -> Result<(), StoreError> {
        let checked = {
            let index = self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if index.chain.size() != seq || index.chain.head_hash != hash {
                Err(format!("the head row (record {seq}) does not match the records before it (the chain ends at record {})", index.chain.size()))
            } else {
                check_head_seal(self.verifier.as_ref(), (seq, hash), seal, index.head_is_checkpoint)
            }
        };
        checked.map_err(|reason| {
            self.fail(&reason);
            damaged(&self.at, seq, reason)
        })
    }

    /// Reads and takes what the database holds beyond this front-end's index, up
    /// to `head` (the head row as read: `seq`, `hash`, `seal`; read now when
    /// `None`). The head's seal is checked before anything is taken, so records a
    /// database client that is not an audit front-end inserted are never indexed,
    /// served or sent to followers; once caught up, the chain must end at the head.
    async fn catch_up(&self, client: &Client, head: Option<(u64, String, Option<String>)>) -> Result<(), StoreError> {
        let _turn = self.advance.lock().await;
        let (upto, hash, seal) = match head {
            Some(head) => head,
            None => {
                let row = client.query_one("SELECT seq, hash, seal FROM audit_head", &[]).await.map_err(arf_pg::PgError::from)?;
                (row.get::<_, i64>(0) as u64, row.get(1), row.get(2))
            }
        };
        if self.size() < upto {
            self.vouch(client, (upto, &hash), seal.as_deref()).await?;
        }
        loop {
            let size = self.size();
            if size >= upto {
                return if size == upto { self.check_head(upto, &hash, seal.as_deref()) } else { Ok(()) };
            }
            let rows = client
                .query(
                    "SELECT seq, body FROM audit_records WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                    &[&(size as i64), &(upto as i64), &i64::from(PAGE)],
                )
                .await
                .map_err(arf_pg::PgError::from)?;
            if rows.is_empty() {
                let reason = format!("the head names record {upto} but the table ends before record {}", size + 1);
                self.fail(&reason);
                return Err(damaged(&self.at, size + 1, reason));
            }
            let records = rows.iter().map(|r| decode_row(&self.at, r.get(0), r.get(1))).collect::<Result<Vec<_>, _>>()?;
            self.take(&records)?;
        }
    }

    /// Before records up to the head `(seq, hash)` are taken: the log's key sealed
    /// that head, or (a head written before seals) the head is a `checkpoint`
    /// record whose note the key signed for the records before it. Else the log
    /// stops, having taken none of them.
    async fn vouch(&self, client: &Client, (seq, hash): (u64, &str), seal: Option<&str>) -> Result<(), StoreError> {
        let Some(verifier) = self.verifier.as_ref() else { return Ok(()) };
        let vouched = match seal {
            Some(seal) => verifier.verify_head_seal(seq, hash, seal),
            None => {
                let row = client.query_opt("SELECT body FROM audit_records WHERE seq = $1", &[&(seq as i64)]).await.map_err(arf_pg::PgError::from)?;
                let record = row.map(|r| decode_row(&self.at, seq as i64, r.get(0))).transpose()?;
                record.is_some_and(|r| {
                    let note = r.payload.get("note").and_then(Value::as_str).unwrap_or_default();
                    r.kind == RecordKind::Checkpoint && r.writer == LOG_WRITER && r.hash == hash && verifier.verify(note).is_ok_and(|c| c.size + 1 == seq)
                })
            }
        };
        if vouched {
            return Ok(());
        }
        let reason = check_head_seal(Some(verifier), (seq, hash), seal, false).err().unwrap_or_else(|| format!("the head (record {seq}) is not vouched for by the log's key"));
        self.fail(&reason);
        Err(damaged(&self.at, seq, reason))
    }
}

impl PgStore {
    /// Opens the log in the database `settings` names (migrated with `arf db
    /// migrate`), reading and checking every record first.
    pub async fn open(settings: &Settings, signer: Option<Signer>) -> Result<Self, StoreError> {
        let at = settings.describe();
        let mut reads = settings.connect().await?;
        arf_pg::check(&reads).await?;
        let verifier = signer.as_ref().map(Signer::verifier);
        let scan = scan(&mut reads, &at, verifier.as_ref()).await?;
        let records_at_open = scan.chain.size();
        let (appended, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            at: at.clone(),
            index: RwLock::new(Index { chain: scan.chain, head_is_checkpoint: scan.head_is_checkpoint, checkpoint: scan.checkpoint, incidents: scan.incidents }),
            advance: tokio::sync::Mutex::new(()),
            failed: RwLock::new(None),
            appended,
            verifier,
        });
        drop(reads);
        let reads = Arc::new(Reads::open(settings).await?);
        let writes = writer_connection(settings).await?;
        let (requests, receiver) = mpsc::unbounded_channel();
        let writer = Writer { shared: Arc::clone(&shared), client: writes, reads: Arc::clone(&reads), signer };
        let tasks = vec![tokio::spawn(writer.run(receiver)), tokio::spawn(follow(Arc::clone(&shared), Arc::clone(&reads)))];
        info!(records = records_at_open, at = %at, "audit log opened on PostgreSQL and verified");
        Ok(Self { shared, reads, requests, tasks, records_at_open })
    }

    pub fn records_at_open(&self) -> u64 {
        self.records_at_open
    }

    pub fn verifier(&self) -> Option<&NoteVerifier> {
        self.shared.verifier.as_ref()
    }

    pub async fn append(&self, writer: &str, entries: Vec<Entry>, now_ms: i64) -> Result<Vec<Record>, StoreError> {
        self.append_fenced(writer, entries, now_ms, None, None).await
    }

    /// Appends `entries` as `writer`, under `fence` when a replica gives its lease:
    /// then only while that lease holds ([`Fence`]).
    pub async fn append_fenced(&self, writer: &str, entries: Vec<Entry>, now_ms: i64, fence: Option<Fence>, quiet: Option<Quiet>) -> Result<Vec<Record>, StoreError> {
        if writer == LOG_WRITER {
            return Err(StoreError::Invalid(format!("`{LOG_WRITER}` is the log's own writer identity")));
        }
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Append(Pending { writer: writer.to_owned(), entries, now_ms, fence, quiet, reply })).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub async fn checkpoint(&self, now_ms: i64) -> Result<Option<SignedCheckpoint>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Checkpoint { now_ms, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).checkpoint.clone()
    }

    /// The records with these sequence numbers that this front-end has taken, in
    /// order, each checked against the tree it built.
    pub async fn records(&self, seqs: &[u64]) -> Result<Vec<Record>, StoreError> {
        // A record another front-end appended may not have reached this one yet:
        // its writer was answered after its commit, so whoever asks for it next,
        // here, must find it. Take what the database holds first.
        if seqs.iter().any(|s| *s > self.shared.size()) {
            self.refresh().await?;
        }
        read_checked(&self.shared, &self.reads, seqs).await
    }

    /// The sequence numbers of an incident's records, from what this front-end
    /// verified, after taking what other front-ends appended: an incident's latest
    /// records may have come through another front-end a moment ago, and a reader
    /// decides on what is missing from its trail (whether an action already started).
    pub async fn incident_seqs(&self, incident_id: &str) -> Result<Vec<u64>, StoreError> {
        self.refresh().await?;
        Ok(self.shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).incidents.get(incident_id).cloned().unwrap_or_default())
    }

    pub fn head(&self) -> (u64, String) {
        let index = self.shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (index.chain.size(), index.chain.head_hash.clone())
    }

    pub fn with_tree<T>(&self, f: impl FnOnce(&Tree) -> T) -> T {
        f(&self.shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).chain.tree)
    }

    pub fn root(&self, size: u64) -> Result<Hash, StoreError> {
        Ok(self.with_tree(|t| t.root(size))?)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.shared.appended.subscribe()
    }

    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Takes what other front-ends appended, now rather than at the next
    /// notification.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        self.shared.catch_up(&*self.reads.get().await.map_err(unavailable)?, None).await
    }
}

/// The connection appends go through, checked as at open (the server may have
/// changed since: a failover, a reload), its transactions bounded: a front-end
/// that stops in the middle of one (a SIGSTOP, a hung host) has its session ended by
/// the server, and with it the head row's lock, so the others go on appending.
async fn writer_connection(settings: &Settings) -> Result<Client, StoreError> {
    let client = settings.connect().await?;
    arf_pg::check(&client).await?;
    client.batch_execute("SET idle_in_transaction_session_timeout = '5s'; SET lock_timeout = '30s'").await.map_err(arf_pg::PgError::from)?;
    Ok(client)
}

fn unavailable(error: arf_pg::PgError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn stopped() -> StoreError {
    StoreError::Failed("the log's writer has stopped".to_owned())
}

/// Follows other front-ends' appends: on each notification, and every second in
/// case one was missed; the listening connection is made again when it ends.
async fn follow(shared: Arc<Shared>, reads: Arc<Reads>) {
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listening: Option<(Client, mpsc::UnboundedReceiver<String>)> = None;
    loop {
        if listening.is_none() {
            listening = match reads.settings().connect_listening().await {
                Ok((client, notes)) => match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => Some((client, notes)),
                    Err(error) => {
                        warn!(%error, "cannot listen for other front-ends' appends; following by polling");
                        None
                    }
                },
                Err(error) => {
                    warn!(%error, "cannot listen for other front-ends' appends; following by polling");
                    None
                }
            };
        }
        let closed = match &mut listening {
            Some((_, notes)) => tokio::select! {
                note = notes.recv() => note.is_none(),
                _ = poll.tick() => false,
            },
            None => {
                poll.tick().await;
                false
            }
        };
        if closed {
            listening = None;
        }
        if shared.failure().is_some() {
            return;
        }
        let caught = match reads.get().await {
            Ok(client) => shared.catch_up(&client, None).await,
            Err(error) => Err(unavailable(error)),
        };
        if let Err(error) = caught {
            warn!(%error, "could not read what other front-ends appended");
        }
    }
}

/// The connection reads go through, made again when it has closed.
type Reads = arf_pg::Connection;

/// Locks the head row in `tx`, takes what other front-ends appended before it,
/// and returns the head, which must be where this front-end's chain ends.
/// The records with these sequence numbers that this front-end has taken, in
/// order, each checked against the tree it built.
async fn read_checked(shared: &Shared, reads: &Reads, seqs: &[u64]) -> Result<Vec<Record>, StoreError> {
    let size = shared.size();
    let wanted: Vec<i64> = seqs.iter().filter(|s| **s >= 1 && **s <= size).map(|s| *s as i64).collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let rows = reads
        .get()
        .await
        .map_err(unavailable)?
        .query("SELECT seq, body FROM audit_records WHERE seq = ANY($1) ORDER BY seq", &[&wanted])
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let seq: i64 = row.get(0);
        let corrupt = |reason: String| {
            error!(seq, %reason, "a record of the log in the database no longer reads as it was verified");
            shared.fail(&format!("record {seq} no longer reads as it was verified at open: {reason}"));
            StoreError::Corrupt { seq: seq as u64, reason }
        };
        let record = frame::decode(row.get(1)).map_err(corrupt)?;
        let leaf = crate::store::leaf_of(&record).map_err(corrupt)?;
        let expected = shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).chain.tree.leaf(seq as u64 - 1);
        if record.seq != seq as u64 || record.compute_hash() != record.hash || Some(leaf) != expected {
            return Err(corrupt("changed in the database after the log opened: it no longer matches the verified tree".to_owned()));
        }
        out.push(record);
    }
    if out.len() != wanted.len() {
        let missing = wanted.iter().find(|s| !out.iter().any(|r| r.seq == **s as u64)).copied().unwrap_or_default();
        shared.fail(&format!("record {missing} was removed from the database after the log opened"));
        return Err(StoreError::Corrupt { seq: missing as u64, reason: "removed from the database after the log opened".to_owned() });
    }
    Ok(out)
}

/// The first record `quiet.writer` appended under `quiet.incident_id` after
/// `quiet.after_seq`: in the log as this front-end took it (under the head's lock,
/// so that is all of it), or earlier in this group (`sealed`).
async fn spoken_since(shared: &Shared, reads: &Reads, quiet: &Quiet, sealed: &[SealedAppend]) -> Result<Option<u64>, StoreError> {
    crate::store::beyond_head(quiet, shared.size())?;
    let seqs: Vec<u64> = {
        let index = shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        index.incidents.get(&quiet.incident_id).map(|seqs| seqs.iter().copied().filter(|seq| *seq > quiet.after_seq).collect()).unwrap_or_default()
    };
    if !seqs.is_empty()
        && let Some(record) = read_checked(shared, reads, &seqs).await?.into_iter().find(|r| r.writer == quiet.writer)
    {
        return Ok(Some(record.seq));
    }
    Ok(sealed
        .iter()
        .flat_map(|(records, _)| records.iter().map(|(r, _)| r))
        .find(|r| r.seq > quiet.after_seq && r.incident_id == quiet.incident_id && r.writer == quiet.writer)
        .map(|r| r.seq))
}

async fn lock_head(shared: &Shared, reads: &Reads, tx: &tokio_postgres::Transaction<'_>) -> Result<(u64, String), TxError> {
    let row = tx.query_one("SELECT seq, hash, seal FROM audit_head FOR UPDATE", &[]).await?;
    let (seq, hash, seal): (i64, String, Option<String>) = (row.get(0), row.get(1), row.get(2));
    let head = (seq as u64, hash, seal);
    let caught = match shared.catch_up(&*reads.get().await.map_err(unavailable)?, Some(head.clone())).await {
        // Under the head's lock the chain must end exactly there (this front-end's
        // index ahead of the head row is a head moved back).
        Ok(()) => shared.check_head(head.0, &head.1, head.2.as_deref()),
        Err(error) => Err(error),
    };
    match caught {
        Ok(()) => Ok((head.0, head.1)),
        Err(error @ StoreError::DamagedDb { .. }) => Err(TxError::NotTaken(StoreError::Failed(error.to_string()))),
        Err(other) => Err(TxError::from(other)),
    }
}

struct Writer {
    shared: Arc<Shared>,
    client: Client,
    reads: Arc<Reads>,
    signer: Option<Signer>,
}

/// An append's records with their stored bytes, and where to answer.
type SealedAppend = (Vec<(Record, Vec<u8>)>, oneshot::Sender<Result<Vec<Record>, StoreError>>);

/// Of the leases `appends` were sent under, those that hold now by the database's
/// clock (`clock_timestamp()`, not the transaction's start: the head lock may have
/// been waited for), each member row locked `FOR SHARE` until `tx` ends. Every
/// takeover of a replica's work, and every change of its lease, writes or locks
/// that row for update (`Lease`, the agents' and executors' takeovers), so it
/// waits for this transaction: a replica's records are in the log before anyone
/// takes its work over, or not at all. Called under the head lock, so the share
/// locks are held no longer than the append's commit, and never across a wait for
/// another front-end.
///
/// An agent's appends are also fenced by the grouping keys they are made under
/// (`agent_keys`): each key's row must still hold the token the agent drew when it
/// took the key's lock, and is locked `FOR SHARE` in the same statement, so a peer
/// that draws the key a new token waits for this transaction.
async fn holding(tx: &tokio_postgres::Transaction<'_>, appends: &[Pending]) -> Result<Held, TxError> {
    let mut held = Held::default();
    let mut tables: Vec<&'static str> = appends.iter().filter_map(|p| p.fence.as_ref().map(|f| f.table)).collect();
    tables.sort_unstable();
    tables.dedup();
    for table in tables {
        let fences = || appends.iter().filter_map(|p| p.fence.as_ref()).filter(|f| f.table == table);
        let (members, incarnations): (Vec<&str>, Vec<&str>) = fences().map(|f| (f.member.as_str(), f.incarnation.as_str())).unzip();
        let members_held = format!(
            "SELECT name, incarnation FROM {table}
             WHERE (name, incarnation) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND lease_until > clock_timestamp()
             ORDER BY name FOR SHARE"
        );
        let (keys, tokens): (Vec<&str>, Vec<i64>) = fences().flat_map(|f| f.keys.iter().map(|(key, token)| (key.as_str(), *token))).unzip();
        let rows = if keys.is_empty() {
            tx.query(&members_held, &[&members as &(dyn ToSql + Sync), &incarnations]).await?
        } else {
            // One round trip for both: the keys' rows are locked as the members' are.
            tx.query(
                &format!(
                    "WITH m AS ({members_held}),
                          k AS (SELECT key, token FROM agent_keys
                                WHERE (key, token) IN (SELECT * FROM unnest($3::text[], $4::bigint[]))
                                ORDER BY key FOR SHARE)
                     SELECT name, incarnation, NULL::bigint FROM m UNION ALL SELECT key, NULL, token FROM k"
                ),
                &[&members as &(dyn ToSql + Sync), &incarnations, &keys, &tokens],
            )
            .await?
        };
        for row in rows {
            // The members' rows alone have two columns; with keys, a third says which is which.
            match row.try_get::<_, Option<i64>>(2).ok().flatten() {
                Some(token) => held.keys.insert((row.get(0), token)),
                None => held.members.insert((table, row.get(0), row.get(1))),
            };
        }
    }
    Ok(held)
}

/// The fences that hold in an append's transaction ([`holding`]).
#[derive(Default)]
struct Held {
    members: std::collections::HashSet<(&'static str, String, String)>,
    keys: std::collections::HashSet<(String, i64)>,
}

impl Held {
    /// Why `fence` does not hold, if it does not.
    fn refuses(&self, fence: &Fence) -> Option<String> {
        if !self.members.contains(&(fence.table, fence.member.clone(), fence.incarnation.clone())) {
            return Some(format!(
                "`{}` does not hold its lease in `{}` under incarnation `{}`: it lapsed (or was given back or taken by a later process), or this replica's database is not the log's",
                fence.member, fence.table, fence.incarnation
            ));
        }
        let lost: Vec<&str> = fence.keys.iter().filter(|k| !self.keys.contains(*k)).map(|(key, _)| key.as_str()).collect();
        (!lost.is_empty()).then(|| {
            format!(
                "`{}` no longer holds grouping key{} {}: another replica took {} since (its lock's session was dropped), so what it placed under {} is not logged",
                fence.member,
                if lost.len() == 1 { "" } else { "s" },
                lost.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
                if lost.len() == 1 { "it" } else { "them" },
                if lost.len() == 1 { "it" } else { "them" },
            )
        })
    }
}

/// Why a transaction failed, and whether its records may be in the log.
enum TxError {
    /// Rolled back, or never begun: none of it is in the log.
    NotTaken(StoreError),
    /// `COMMIT` sent and its answer lost.
    Indeterminate(String),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::from_pg(error)
    }
}

impl TxError {
    fn from_pg(error: tokio_postgres::Error) -> Self {
        Self::NotTaken(StoreError::Unavailable(error.to_string()))
    }
}

impl From<StoreError> for TxError {
    fn from(error: StoreError) -> Self {
        Self::NotTaken(error)
    }
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = receiver.recv().await {
            let (appends, checkpoints) = take_group(first, &mut receiver);
            if !appends.is_empty() {
                self.write(appends).await;
            }
            let due = self.signer.as_ref().is_some_and(|s| {
                let index = self.shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                index.chain.size().saturating_sub(index.checkpoint.as_ref().map_or(0, |c| c.checkpoint.size)) >= s.every_records
            });
            if due || !checkpoints.is_empty() {
                let now_ms = checkpoints.first().map_or_else(arf_core::time::now_ms, |(t, _)| *t);
                let result = self.sign_checkpoint(now_ms).await;
                if let Err(error) = &result {
                    error!(%error, "could not sign a checkpoint of the audit log");
                }
                for (_, reply) in checkpoints {
                    let _ = reply.send(match &result {
                        Ok(latest) => Ok(latest.clone()),
                        Err(e) => Err(StoreError::Failed(e.to_string())),
                    });
                }
            }
        }
    }

    /// A connection that works: the writer's, re-made when it has closed.
    async fn ready(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            warn!(at = %self.shared.at, "the audit log's database connection closed; connecting again");
            self.client = writer_connection(self.reads.settings()).await?;
        }
        Ok(())
    }

    async fn write(&mut self, appends: Vec<Pending>) {
        if let Some(reason) = self.shared.failure() {
            for pending in appends {
                let _ = pending.reply.send(Err(StoreError::Failed(reason.clone())));
            }
            return;
        }
        let mut sealed: Vec<SealedAppend> = Vec::new();
        let result = self.transaction(appends, &mut sealed).await;
        match result {
            Ok(()) => {
                let records: Vec<Record> = sealed.iter().flat_map(|(r, _)| r.iter().map(|(r, _)| r.clone())).collect();
                let taken = {
                    let _turn = self.shared.advance.lock().await;
                    self.shared.take(&records)
                };
                for (records, reply) in sealed {
                    let _ = reply.send(match &taken {
                        Ok(()) => Ok(records.into_iter().map(|(r, _)| r).collect()),
                        Err(e) => Err(StoreError::Indeterminate(e.to_string())),
                    });
                }
            }
            Err(TxError::NotTaken(error)) => {
                let message = error.to_string();
                for (_, reply) in sealed {
                    let _ = reply.send(Err(match &error {
                        StoreError::Failed(m) => StoreError::Failed(m.clone()),
                        StoreError::DamagedDb { .. } => StoreError::Failed(message.clone()),
                        _ => StoreError::Unavailable(message.clone()),
                    }));
                }
            }
            Err(TxError::Indeterminate(reason)) => {
                for (_, reply) in sealed {
                    let _ = reply.send(Err(StoreError::Indeterminate(reason.clone())));
                }
            }
        }
    }

    /// Inserts sealed records and moves the head past them, in `tx`, with the
    /// head's seal by `signer` (none without one).
    async fn insert(tx: &tokio_postgres::Transaction<'_>, records: &[&(Record, Vec<u8>)], signer: Option<&Signer>) -> Result<(), TxError> {
        let Some((last, _)) = records.last() else { return Ok(()) };
        let seal = signer.map(|s| crate::checkpoint::seal_head(&s.key, &s.origin, last.seq, &last.hash));
        let seqs: Vec<i64> = records.iter().map(|(r, _)| r.seq as i64).collect();
        let incidents: Vec<&str> = records.iter().map(|(r, _)| r.incident_id.as_str()).collect();
        let writers: Vec<&str> = records.iter().map(|(r, _)| r.writer.as_str()).collect();
        let kinds: Vec<&str> = records.iter().map(|(r, _)| r.kind.as_str()).collect();
        let bodies: Vec<&[u8]> = records.iter().map(|(_, b)| b.as_slice()).collect();
        // One round trip: the records, the head, and the notification to the others.
        tx.execute(
            "WITH records AS (
                 INSERT INTO audit_records (seq, incident_id, writer, kind, body)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bytea[])
             ), head AS (
                 UPDATE audit_head SET seq = $6, hash = $7, seal = $10
             )
             SELECT pg_notify($8, $9)",
            &[&seqs as &(dyn ToSql + Sync), &incidents, &writers, &kinds, &bodies, &(last.seq as i64), &last.hash, &CHANNEL, &last.seq.to_string(), &seal],
        )
        .await?;
        Ok(())
    }

    async fn transaction(
        &mut self,
        appends: Vec<Pending>,
        sealed: &mut Vec<SealedAppend>,
    ) -> Result<(), TxError> {
        let head = match self.ready().await {
            Ok(()) => Ok(()),
            Err(error) => Err(TxError::NotTaken(StoreError::Unavailable(error.to_string()))),
        };
        let Writer { shared, client, reads, signer } = self;
        let tx = match head {
            Ok(()) => client.transaction().await.map_err(TxError::from_pg),
            Err(error) => Err(error),
        };
        // The leases are checked only once the head's lock is granted, in a round
        // trip of its own: sent alongside the lock's statement, the driver may put
        // it first (each statement is prepared in a round trip before it is sent).
        let head = match tx {
            Ok(tx) => lock_head(shared, reads, &tx).await.map(|head| (tx, head)),
            Err(error) => Err(error),
        };
        let head = match head {
            Ok((tx, head)) => holding(&tx, &appends).await.map(|held| (tx, head, held)),
            Err(error) => Err(error),
        };
        let (tx, (mut seq, mut hash), held) = match head {
            Ok(ok) => ok,
            Err(error) => {
                // Nothing was sealed: every append is answered with the error.
                for pending in appends {
                    sealed.push((Vec::new(), pending.reply));
                }
                return Err(error);
            }
        };
        for Pending { writer, entries, now_ms, fence, quiet, reply } in appends {
            // Its caller gave up (a timeout) and was told it failed: it is not sealed,
            // so that what the caller believes, that nothing was logged, holds.
            if reply.is_closed() {
                continue;
            }
            if let Some(refused) = fence.and_then(|f| held.refuses(&f)) {
                let _ = reply.send(Err(StoreError::Fenced(refused)));
                continue;
            }
            if let Some(quiet) = &quiet {
                match spoken_since(shared, reads, quiet, sealed).await.map(|spoken| crate::store::refusal(quiet, spoken)) {
                    Ok(None) => {}
                    Ok(Some(error)) | Err(error) => {
                        let _ = reply.send(Err(error));
                        continue;
                    }
                }
            }
            match seal_records(&writer, entries, now_ms, seq, &hash) {
                Ok(records) => {
                    if let Some((last, _)) = records.last() {
                        seq = last.seq;
                        hash.clone_from(&last.hash);
                    }
                    sealed.push((records, reply));
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            }
        }
        let all: Vec<&(Record, Vec<u8>)> = sealed.iter().flat_map(|(r, _)| r.iter()).collect();
        if all.is_empty() {
            return Ok(());
        }
        Self::insert(&tx, &all, signer.as_ref()).await?;
        tx.commit().await.map_err(|e| TxError::Indeterminate(format!("the database's answer to COMMIT was lost: {e}")))
    }

    async fn sign_checkpoint(&mut self, now_ms: i64) -> Result<Option<SignedCheckpoint>, StoreError> {
        let Some(signer) = self.signer.clone() else { return Ok(None) };
        if let Some(reason) = self.shared.failure() {
            return Err(StoreError::Failed(reason));
        }
        self.ready().await?;
        let verifier = signer.verifier();
        let (record, signed) = {
            let Writer { shared, client, reads, .. } = &mut *self;
            let tx = client.transaction().await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let (size, head) = match lock_head(shared, reads, &tx).await {
                Ok(head) => head,
                Err(TxError::NotTaken(e)) => return Err(e),
                Err(TxError::Indeterminate(reason)) => return Err(StoreError::Indeterminate(reason)),
            };
            if size == 0 {
                return Ok(None);
            }
            // Another front-end may have signed since: the row is the latest.
            let row = tx.query_opt("SELECT note FROM audit_checkpoint", &[]).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let latest = match row.map(|r| r.get::<_, String>(0)) {
                Some(note) => {
                    let checkpoint = verifier.verify(&note).map_err(|e| damaged(&shared.at, size, format!("the checkpoint row: {e}")))?;
                    Some(SignedCheckpoint { checkpoint, note })
                }
                None => None,
            };
            if let Some(latest) = latest.as_ref().filter(|l| size <= l.checkpoint.size + 1) {
                shared.index.write().unwrap_or_else(std::sync::PoisonError::into_inner).checkpoint = Some(latest.clone());
                return Ok(Some(latest.clone()));
            }
            let root = shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).chain.tree.root(size)?;
            let checkpoint = Checkpoint { origin: signer.origin.clone(), size, root };
            let note = checkpoint.sign(&signer.key);
            let payload = json!({"origin": checkpoint.origin, "size": size, "root_hash": checkpoint.root_hex(), "note": note});
            let mut sealed = seal_records(LOG_WRITER, vec![Entry::new("", RecordKind::Checkpoint, payload)], now_ms, size, &head)?;
            let Some(record) = sealed.pop() else { return Ok(None) };
            match Self::insert(&tx, &[&record], Some(&signer)).await {
                Ok(()) => {}
                Err(TxError::NotTaken(e)) => return Err(e),
                Err(TxError::Indeterminate(reason)) => return Err(StoreError::Indeterminate(reason)),
            }
            tx.execute(
                "INSERT INTO audit_checkpoint (id, size, note) VALUES (true, $1, $2) ON CONFLICT (id) DO UPDATE SET size = $1, note = $2",
                &[&(size as i64), &note],
            )
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            tx.commit().await.map_err(|e| StoreError::Indeterminate(e.to_string()))?;
            (record.0, SignedCheckpoint { checkpoint, note })
        };
        {
            let _turn = self.shared.advance.lock().await;
            self.shared.take(std::slice::from_ref(&record))?;
        }
        self.shared.index.write().unwrap_or_else(std::sync::PoisonError::into_inner).checkpoint = Some(signed.clone());
        info!(size = signed.checkpoint.size, root = %signed.checkpoint.root_hex(), "checkpoint signed");
        Ok(Some(signed))
    }
}

