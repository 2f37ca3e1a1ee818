//! A witness of the log: a process that keeps the latest checkpoint it has seen,
//! durably, and accepts a newer one only with a consistency proof that it extends
//! the old. A log that was rolled back, truncated or rewritten under a checkpoint a
//! witness holds cannot show it a history that verifies.
//!
//! The governor and the executor each run one before they act; `arf audit witness`
//! keeps one in a folder an operator can copy elsewhere.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;
use tokio::sync::Mutex;

use crate::checkpoint::{Checkpoint, CheckpointError, NoteVerifier};
use crate::client::{AuditClient, AuditError};
use crate::merkle::{self, ProofError};

/// How often a process that witnesses the log checks it between actions
/// ([`Witness::keep_up`]): the log's own default checkpoint interval.
pub fn default_keep_up_secs() -> u64 {
    10
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WitnessError {
    #[error("cannot reach the audit log to check its checkpoint: {0}")]
    Unavailable(AuditError),
    #[error("the audit log answered the witness with an error: {0}")]
    LogRefused(AuditError),
    #[error("the log's newest checkpoint covers {size} records, not the {needed} this process relies on: it does not vouch for them")]
    Uncovered { size: u64, needed: u64 },
    #[error("the log's checkpoint does not verify against the pinned key: {0}")]
    BadCheckpoint(#[from] CheckpointError),
    #[error("the log's checkpoint covers {theirs} records, fewer than the {ours} this witness already saw: the log was rolled back or truncated")]
    RolledBack { ours: u64, theirs: u64 },
    #[error("the log's checkpoint at size {size} has another root than the one this witness saw at that size: the log shows two histories")]
    Forked { size: u64 },
    #[error("the log cannot prove its checkpoint at size {new} extends the one at size {old} this witness saw: {source}")]
    Inconsistent { old: u64, new: u64, source: ProofError },
    #[error("the log has no signed checkpoint, but this witness saw one at size {0}")]
    Missing(u64),
    #[error("cannot keep the witness state in `{path}`: {source}")]
    State { path: PathBuf, source: std::io::Error },
}

impl From<AuditError> for WitnessError {
    /// Only a log that cannot be reached is `Unavailable` (retry); a log that answers
    /// with a refusal or garbage fails the witness check like a bad checkpoint.
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::Unavailable(_) => Self::Unavailable(error),
            other => Self::LogRefused(other),
        }
    }
}

/// The latest checkpoint a witness has accepted.
#[derive(Debug, Clone)]
pub struct Seen {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// Checks `new_note` against what a witness saw (`old`), fetching a consistency
/// proof from `prove` when the log grew. Returns the checkpoint to keep.
pub async fn advance<F, Fut>(verifier: &NoteVerifier, old: Option<&Seen>, new_note: &str, prove: F) -> Result<Seen, WitnessError>
where
    F: FnOnce(u64, u64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<merkle::Hash>, AuditError>>,
{
    let new = verifier.verify(new_note)?;
    let Some(old) = old else { return Ok(Seen { checkpoint: new, note: new_note.to_owned() }) };
    let (ours, theirs) = (&old.checkpoint, &new);
    if theirs.size < ours.size {
        return Err(WitnessError::RolledBack { ours: ours.size, theirs: theirs.size });
    }
    if theirs.size == ours.size {
        if theirs.root != ours.root {
            return Err(WitnessError::Forked { size: ours.size });
        }
        return Ok(old.clone());
    }
    let proof = prove(ours.size, theirs.size).await?;
    merkle::verify_consistency(ours.size, theirs.size, &ours.root, &theirs.root, &proof)
        .map_err(|source| WitnessError::Inconsistent { old: ours.size, new: theirs.size, source })?;
    Ok(Seen { checkpoint: new, note: new_note.to_owned() })
}

/// A witness that keeps its state in one file (fsynced before it is relied on).
pub struct Witness {
    path: PathBuf,
    verifier: NoteVerifier,
    held: Mutex<Held>,
    /// How many checkpoints this witness has asked the log to sign; each request's
    /// number is its ticket.
    asked: AtomicU64,
}

/// What a witness holds: the checkpoint it accepted, and the ticket of the signing
/// request that brought it (0: none, such as one read at start or by [`Witness::check`]).
struct Held {
    seen: Option<Seen>,
    ticket: u64,
}

impl Witness {
    /// Opens the state in `path`, refusing a stored checkpoint the key did not sign.
    pub fn open(path: &Path, verifier: NoteVerifier) -> Result<Self, WitnessError> {
        let seen = match fs::read_to_string(path) {
            Ok(note) => {
                let checkpoint = verifier.verify(&note)?;
                Some(Seen { checkpoint, note })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Trust on first use: said aloud, since a state file removed behind a
                // process's back looks the same, and a rollback before now then goes unseen.
                tracing::warn!(
                    path = %path.display(),
                    "no witness state: this witness trusts the first checkpoint the log shows; if this process witnessed the log before, its state was lost"
                );
                None
            }
            Err(source) => return Err(WitnessError::State { path: path.to_owned(), source }),
        };
        Ok(Self { path: path.to_owned(), verifier, held: Mutex::new(Held { seen, ticket: 0 }), asked: AtomicU64::new(0) })
    }

    pub async fn seen(&self) -> Option<Seen> {
        self.held.lock().await.seen.clone()
    }

    /// How many checkpoints this witness has asked the log to sign.
    pub fn signings_asked(&self) -> u64 {
        self.asked.load(Ordering::SeqCst)
    }

    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// Has the log sign a checkpoint of everything it holds now (one record and one
    /// sync), and accepts it only if it extends the one this witness holds and
    /// covers at least `needed` records and everything the log acknowledged to `log`.
    /// Call it before acting on what was read from the log: the new checkpoint
    /// covers it, so any later rollback of it is caught too. Needs a writer's token.
    ///
    /// Calls at once share signings, as appends share a sync: a call that waited
    /// while another's request was answered is answered by that checkpoint when the
    /// request was sent after this call began (so after everything it relies on was
    /// acknowledged, which the log orders before the signing) and covers `needed`;
    /// as though it had asked the log itself at that moment. A checkpoint asked for
    /// before this call began is never taken for fresh: it may predate a rollback.
    pub async fn check_fresh(&self, log: &AuditClient, needed: u64) -> Result<Seen, WitnessError> {
        let needed = needed.max(log.acknowledged_seq());
        let began = self.asked.load(Ordering::SeqCst);
        let mut held = self.held.lock().await;
        if held.ticket > began
            && let Some(seen) = held.seen.as_ref().filter(|seen| seen.checkpoint.size >= needed)
        {
            return Ok(seen.clone());
        }
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let from = held.seen.as_ref().map_or(0, |old| old.checkpoint.size);
        let (note, proof) = match log.sign_checkpoint_from(from).await? {
            Some(answer) => answer,
            None => match held.seen.as_ref() {
                Some(old) => return Err(WitnessError::Missing(old.checkpoint.size)),
                None => return Err(WitnessError::Missing(0)),
            },
        };
        let next = self.accept(&mut held.seen, log, &note, proof).await?;
        held.ticket = ticket;
        if next.checkpoint.size < needed {
            return Err(WitnessError::Uncovered { size: next.checkpoint.size, needed });
        }
        Ok(next)
    }

    /// Keeps this witness up with the log: every `every` (the first after one
    /// `every`) it checks as [`Self::check_fresh`] does, so that what was logged
    /// since the last action (that action's own start and outcome, and every other
    /// writer's records) is under a checkpoint this witness holds within `every`,
    /// and cutting it off later is caught; not only what came before the next
    /// action. An idle log signs nothing new for it. A log that cannot be reached
    /// (or that has no checkpoint yet, and this witness none either) is asked again
    /// at the next tick; every other answer goes to `checked`, refusals included,
    /// and checking goes on. Runs until dropped.
    pub async fn keep_up(&self, log: &AuditClient, every: std::time::Duration, checked: impl Fn(Result<&Seen, &WitnessError>)) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.check_fresh(log, 0).await {
                Ok(seen) => checked(Ok(&seen)),
                Err(WitnessError::Unavailable(_) | WitnessError::Missing(0)) => {}
                Err(error) => checked(Err(&error)),
            }
        }
    }

    /// Accepts `note` if it extends what this witness saw, by `proof` when it is the
    /// proof from the size this witness holds (given with the checkpoint, verified
    /// here like any other), else by one the log is asked for.
    async fn accept(&self, seen: &mut Option<Seen>, log: &AuditClient, note: &str, proof: Option<(u64, Vec<merkle::Hash>)>) -> Result<Seen, WitnessError> {
        let next = advance(&self.verifier, seen.as_ref(), note, |old, new| async move {
            match proof {
                Some((from, proof)) if from == old => Ok(proof),
                _ => log.consistency_proof(old, new).await,
            }
        })
        .await?;
        if seen.as_ref().is_none_or(|old| old.checkpoint.size != next.checkpoint.size) {
            // Two syncs (the file, its folder): off the async workers, which the
            // other calls of this process share.
            let (path, note) = (self.path.clone(), next.note.clone());
            tokio::task::spawn_blocking(move || write_state(&path, &note))
                .await
                .map_err(|e| WitnessError::State { path: self.path.clone(), source: std::io::Error::other(e.to_string()) })??;
        }
        *seen = Some(next.clone());
        Ok(next)
    }

    /// Fetches the log's latest checkpoint and accepts it only if it extends the one
    /// this witness holds.
    pub async fn check(&self, log: &AuditClient) -> Result<Seen, WitnessError> {
        let mut held = self.held.lock().await;
        // Whatever it holds next was not signed for anyone's call: not fresh.
        held.ticket = 0;
        let seen = &mut held.seen;
        let note = match log.checkpoint().await? {
            Some(note) => note,
            None => match seen.as_ref() {
                Some(old) => return Err(WitnessError::Missing(old.checkpoint.size)),
                // A log that has not yet signed anything: ask it to, so there is something to hold.
                None => match log.sign_checkpoint().await? {
                    Some(note) => note,
                    None => return Err(WitnessError::Missing(0)),
                },
            },
        };
        self.accept(seen, log, &note, None).await
    }
}

/// Writes a witness's state file durably: a temporary file, fsync, rename, fsync of the folder.
pub fn write_state(path: &Path, note: &str) -> Result<(), WitnessError> {
    write_durably(path, note.as_bytes()).map_err(|source| WitnessError::State { path: path.to_owned(), source })
}

/// Writes `bytes` to `path` atomically and durably, mode 0600: a temporary file,
/// fsync, rename, fsync of the directory (creating the directory if needed).
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}


