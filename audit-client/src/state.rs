//! A process's state folded from the log and saved for restarts, so that a
//! restart folds only the log after it: the file, and the log's word for it.
//!
//! A state is folded by a background task with the same fold a restart uses
//! (never copied from live state), written and synced beside its place
//! ([`prepare`]), its SHA-256 logged by the process under its own writer
//! identity, and only then put in place with that record's sequence number
//! ([`Pending::commit`]). A restart starts from the file only when the file
//! matches its hash and the log vouches for it ([`vouch`]): the record at the
//! file's `recorded_seq` is the process's record of that hash, and the log's
//! record at the state's last folded sequence number is the one it was folded
//! from. The agent (`arf_agent::snapshot`) and the governor
//! (`arf_governor::snapshot`) keep their state this way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{AuditClient, AuditError, Record};

/// The largest file read at a restart.
const MAX_BYTES: u64 = 1 << 30;

/// A state read from its file, with its hash and where the log vouches for it.
#[derive(Debug, Clone)]
pub struct StateFile<T> {
    pub hash: String,
    /// The sequence number of the process's record of `hash`.
    pub recorded_seq: u64,
    pub saved: T,
}

/// The file's first line; the state's JSON follows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    hash: String,
    recorded_seq: u64,
}

/// Reads `file`, if there is one, and checks the state's bytes against its hash.
pub fn read<T: DeserializeOwned>(file: &Path) -> Result<Option<StateFile<T>>, String> {
    match std::fs::metadata(file) {
        Ok(meta) if meta.len() > MAX_BYTES => return Err(format!("`{}` is larger than {MAX_BYTES} bytes", file.display())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read `{}`: {e}", file.display())),
    }
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let not_one = |why: String| format!("`{}` is not a state snapshot: {why}", file.display());
    let split = bytes.iter().position(|b| *b == b'\n').ok_or_else(|| not_one("no header line".to_owned()))?;
    let (header, body) = (&bytes[..split], &bytes[split + 1..]);
    let header: Header = serde_json::from_slice(header).map_err(|e| not_one(e.to_string()))?;
    if arf_core::canonical::sha256_hex(body) != header.hash {
        return Err(format!("`{}` does not match its hash: it was changed after it was written", file.display()));
    }
    let saved = serde_json::from_slice(body).map_err(|e| not_one(e.to_string()))?;
    Ok(Some(StateFile { hash: header.hash, recorded_seq: header.recorded_seq, saved }))
}

/// A state written and synced beside its file, not yet in place.
pub struct Pending {
    pub hash: String,
    file: PathBuf,
    body: PathBuf,
}

/// Writes `saved` beside `file` (mode 0600, in a 0700 directory) and syncs it,
/// once: its bytes are both hashed and written.
pub fn prepare<T: Serialize>(file: &Path, saved: &T) -> std::io::Result<Pending> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = file.parent().ok_or_else(|| std::io::Error::other(format!("`{}` has no directory", file.display())))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let bytes = serde_json::to_vec(saved).map_err(std::io::Error::other)?;
    let hash = arf_core::canonical::sha256_hex(&bytes);
    let body = beside(file, "body");
    let mut out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&body)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    Ok(Pending { hash, file: file.to_owned(), body })
}

impl Pending {
    /// Puts the state in place, with the sequence number of the log's record of it.
    pub fn commit(self, recorded_seq: u64) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let temporary = beside(&self.file, "tmp");
        let mut out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        serde_json::to_writer(&mut out, &Header { hash: self.hash.clone(), recorded_seq }).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        std::io::copy(&mut std::fs::File::open(&self.body)?, &mut out)?;
        out.sync_all()?;
        std::fs::rename(&temporary, &self.file)?;
        std::fs::remove_file(&self.body)?;
        match self.file.parent() {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }
}

impl Pending {
    /// Removes the written state: it is not to be put in place.
    pub fn discard(self) -> std::io::Result<()> {
        std::fs::remove_file(&self.body)
    }
}

/// Writes a whole file at once (tests, tools): [`prepare`] then [`Pending::commit`].
pub fn write<T: Serialize>(file: &Path, state: &StateFile<T>) -> std::io::Result<()> {
    prepare(file, &state.saved)?.commit(state.recorded_seq)
}

fn beside(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// A state a process saves for restarts ([`read_in`], [`prepare_in`], [`verified`]).
pub trait Saved: Serialize + DeserializeOwned + Send + 'static {
    /// The file's name in the process's state directory.
    const FILE: &'static str;
    /// The format written now; a file of another format is not used.
    const FORMAT: u32;
    /// What the fold depended on besides the log (settings, the fold's rules): a
    /// state folded under others is not the state a whole fold would give now.
    type Fold: PartialEq + std::fmt::Debug;
    fn format(&self) -> u32;
    fn fold(&self) -> &Self::Fold;
    /// The last record folded, and its hash.
    fn through(&self) -> (u64, &str);
}

/// Makes `$saved` (a struct with `format`, `fold: $fold`, `through_seq` and
/// `through_hash`) a [`Saved`] state kept in `$file` at format `$format`, and
/// defines beside it `SnapshotFile`, `path(dir)`, `read(dir)` and `write(dir, file)`.
#[macro_export]
macro_rules! state_file {
    ($saved:ty, $fold:ty, $file:expr, $format:expr) => {
        impl $crate::state::Saved for $saved {
            const FILE: &'static str = $file;
            const FORMAT: u32 = $format;
            type Fold = $fold;

            fn format(&self) -> u32 {
                self.format
            }

            fn fold(&self) -> &$fold {
                &self.fold
            }

            fn through(&self) -> (u64, &str) {
                (self.through_seq, &self.through_hash)
            }
        }

        /// The state, its hash, and where the log vouches for it.
        pub type SnapshotFile = $crate::state::StateFile<$saved>;

        /// The state's file in `dir`.
        pub fn path(dir: &std::path::Path) -> std::path::PathBuf {
            $crate::state::path::<$saved>(dir)
        }

        /// Reads the file in `dir`, if there is one, and checks the state's bytes
        /// against its hash and its format.
        pub fn read(dir: &std::path::Path) -> Result<Option<SnapshotFile>, String> {
            $crate::state::read_in(dir)
        }

        /// Writes a whole file at once (tests, tools).
        pub fn write(dir: &std::path::Path, snapshot: &SnapshotFile) -> std::io::Result<()> {
            $crate::state::write_in(dir, snapshot)
        }
    };
}

/// The file a state of type `T` is kept in, in `dir`.
pub fn path<T: Saved>(dir: &Path) -> PathBuf {
    dir.join(T::FILE)
}

/// Reads the state in `dir`, if there is one, and checks its bytes against its
/// hash and its format.
pub fn read_in<T: Saved>(dir: &Path) -> Result<Option<StateFile<T>>, String> {
    let file = path::<T>(dir);
    let Some(read) = read::<T>(&file)? else { return Ok(None) };
    if read.saved.format() != T::FORMAT {
        return Err(format!("`{}` is of format {}, not {}", file.display(), read.saved.format(), T::FORMAT));
    }
    Ok(Some(read))
}

/// [`prepare`] for the state's own file in `dir`.
pub fn prepare_in<T: Saved>(dir: &Path, saved: &T) -> std::io::Result<Pending> {
    prepare(&path::<T>(dir), saved)
}

/// [`write`] for the state's own file in `dir` (tests, tools).
pub fn write_in<T: Saved>(dir: &Path, state: &StateFile<T>) -> std::io::Result<()> {
    write(&path::<T>(dir), state)
}

/// The state in `dir`, if there is one, it was folded under `fold` and the log
/// vouches for it ([`vouch`]): `records_it(record, hash, through_seq)` says whether
/// a record is `writer`'s own record of a state of that hash folded through that
/// record. The file is read off the async workers.
pub async fn verified<T: Saved>(
    audit: &AuditClient,
    dir: &Path,
    fold: &T::Fold,
    writer: &str,
    records_it: impl FnOnce(&Record, &str, u64) -> bool,
) -> Result<Option<T>, Unvouched> {
    let owned = dir.to_owned();
    let read = tokio::task::spawn_blocking(move || read_in::<T>(&owned)).await.map_err(|e| Unvouched::Refused(format!("the read stopped: {e}")))?;
    let Some(file) = read.map_err(Unvouched::Refused)? else { return Ok(None) };
    if file.saved.fold() != fold {
        return Err(Unvouched::Refused(format!(
            "it was folded with other settings or fold rules ({:?}, now {fold:?}); it would not be the state a whole fold gives",
            file.saved.fold()
        )));
    }
    let (through_seq, through_hash) = file.saved.through();
    vouch(audit, writer, &file.hash, file.recorded_seq, (through_seq, through_hash), |r| records_it(r, &file.hash, through_seq)).await?;
    Ok(Some(file.saved))
}

/// Saves `saved` in `dir` as the module says: written and synced beside its file,
/// its hash logged (`record(hash)` makes the record: incident id, kind and payload),
/// then put in place with the record's sequence number. File work runs off the
/// async workers. Returns that sequence number.
pub async fn save<T: Saved>(audit: &AuditClient, dir: &Path, saved: T, record: impl FnOnce(&str) -> crate::Entry) -> Result<u64, String> {
    let owned = dir.to_owned();
    let pending = tokio::task::spawn_blocking(move || prepare_in(&owned, &saved))
        .await
        .map_err(|e| format!("the write stopped: {e}"))?
        .map_err(|e| format!("cannot write the state snapshot in `{}`: {e}", dir.display()))?;
    let entry = record(&pending.hash);
    let recorded = audit.append_one(&entry.incident_id, entry.kind, entry.payload).await.map_err(|e| format!("cannot log the snapshot's hash: {e}"))?.seq;
    tokio::task::spawn_blocking(move || pending.commit(recorded))
        .await
        .map_err(|e| format!("the write stopped: {e}"))?
        .map_err(|e| format!("cannot put the state snapshot in place in `{}`: {e}", dir.display()))?;
    Ok(recorded)
}

/// Keeps `saved` in `dir` as the state the log already records at `recorded_seq`
/// with hash `logged` (another process of the same writer logged it: a leader, for
/// its standby): written and synced beside its file, then put in place only if its
/// bytes hash to `logged`; otherwise removed, and `false`. File work runs off the
/// async workers.
pub async fn keep_if_logged<T: Saved>(dir: &Path, saved: T, logged: &str, recorded_seq: u64) -> Result<bool, String> {
    let owned = dir.to_owned();
    let logged = logged.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        let pending = prepare_in(&owned, &saved)?;
        if pending.hash == logged {
            pending.commit(recorded_seq)?;
            Ok(true)
        } else {
            pending.discard()?;
            Ok(false)
        }
    })
    .await
    .map_err(|e| format!("the write stopped: {e}"))?
    .map_err(|e| format!("cannot keep the state snapshot in `{}`: {e}", dir.display()))
}

/// Why a state was not started from.
#[derive(Debug)]
pub enum Unvouched {
    /// The log did not answer; worth retrying.
    Audit(AuditError),
    /// The file, or the log, says it is not the state a whole fold gives.
    Refused(String),
}

/// Whether the log vouches for a state `hash` folded through `through_seq`
/// (whose record's hash was `through_hash`) and recorded at `recorded_seq`:
/// `records_it` says whether a record is `writer`'s own record of this hash.
pub async fn vouch(
    audit: &AuditClient,
    writer: &str,
    hash: &str,
    recorded_seq: u64,
    (through_seq, through_hash): (u64, &str),
    records_it: impl FnOnce(&Record) -> bool,
) -> Result<(), Unvouched> {
    let record = audit.get(recorded_seq).await.map_err(Unvouched::Audit)?;
    if !record.as_ref().is_some_and(records_it) {
        return Err(Unvouched::Refused(format!("the log's record {recorded_seq} is not the {writer}'s record of snapshot `{hash}`")));
    }
    let folded_from = audit.get(through_seq).await.map_err(Unvouched::Audit)?;
    if folded_from.as_ref().map(|r| r.hash.as_str()) != Some(through_hash) {
        return Err(Unvouched::Refused(format!("the log's record {through_seq} is not the one the snapshot was folded from")));
    }
    Ok(())
}
