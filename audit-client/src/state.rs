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
