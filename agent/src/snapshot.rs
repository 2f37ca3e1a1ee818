//! The agent's state saved for restarts: incidents and logged proposals, folded
//! from the log up to a record, so that a restart reads only the log after it.
//!
//! The state is folded from the log by a background task (never copied from the
//! live state, which ingest changes concurrently), with the same fold a restart
//! uses (`Incidents::restore_one`). Its SHA-256 is logged (an `incident` record,
//! [`arf_core::records::IncidentRecord::StateSnapshot`], under the incident id
//! [`arf_core::records::STATE_SNAPSHOT`]) before the file is written. A restart
//! starts from the file only when the file matches its hash, the log holds the
//! agent's record of that hash, and the log's record at `through_seq` is the one
//! the state was folded from; otherwise it says so, loudly, and folds the whole log.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use arf_core::diagnosis::Proposal;

use crate::incident::StoredIncidents;

/// The file, in `agent.state_dir`.
pub const FILE: &str = "state-snapshot.json";
/// The format of [`Saved`]; a file of another format is not used.
pub const FORMAT: u32 = 2;
/// The version of the fold (`Incidents::restore_one`, eviction, pruning): bumped
/// when what a fold makes of the log changes, so an older snapshot is not used.
pub const FOLD_RULES: u32 = 3;
/// The largest file read at a restart.
const MAX_BYTES: u64 = 1 << 30;

/// What a fold's result depends on besides the log: a snapshot folded under other
/// settings or rules is not the state a whole fold would give now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldSettings {
    pub rules: u32,
    pub group_window_ms: i64,
    pub retain_ms: i64,
    pub max_attempts: u32,
}

/// The state, as folded from records `1..=through_seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub format: u32,
    pub fold: FoldSettings,
    pub through_seq: u64,
    /// The hash of record `through_seq`: the log it was folded from.
    pub through_hash: String,
    pub incidents: StoredIncidents,
    /// The last proposal logged for each incident held, and whether the governor's answer is logged.
    pub proposals: Vec<(String, Proposal, bool)>,
}

impl Saved {
    /// SHA-256 of its JSON, as the file holds it (fields in declaration order, every
    /// collection ordered): hashed as bytes, never through a JSON tree.
    pub fn hash(&self) -> String {
        arf_core::canonical::sha256_hex(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The state, its hash, and where the log vouches for it.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub hash: String,
    /// The sequence number of the agent's record of `hash`.
    pub recorded_seq: u64,
    pub saved: Saved,
}

/// The file's first line; the state's JSON follows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    hash: String,
    recorded_seq: u64,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads the file, if there is one, and checks the state's bytes against its hash.
pub fn read(dir: &Path) -> Result<Option<SnapshotFile>, String> {
    let file = path(dir);
    match std::fs::metadata(&file) {
        Ok(meta) if meta.len() > MAX_BYTES => return Err(format!("`{}` is larger than {MAX_BYTES} bytes", file.display())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read `{}`: {e}", file.display())),
    }
    let bytes = std::fs::read(&file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let not_one = |why: String| format!("`{}` is not a state snapshot: {why}", file.display());
    let split = bytes.iter().position(|b| *b == b'\n').ok_or_else(|| not_one("no header line".to_owned()))?;
    let (header, body) = (&bytes[..split], &bytes[split + 1..]);
    let header: Header = serde_json::from_slice(header).map_err(|e| not_one(e.to_string()))?;
    if arf_core::canonical::sha256_hex(body) != header.hash {
        return Err(format!("`{}` does not match its hash: it was changed after it was written", file.display()));
    }
    let saved: Saved = serde_json::from_slice(body).map_err(|e| not_one(e.to_string()))?;
    if saved.format != FORMAT {
        return Err(format!("`{}` is of format {}, not {FORMAT}", file.display(), saved.format));
    }
    Ok(Some(SnapshotFile { hash: header.hash, recorded_seq: header.recorded_seq, saved }))
}

/// A snapshot written and synced beside the file, not yet in place.
pub struct Pending {
    pub hash: String,
    dir: PathBuf,
    body: PathBuf,
}

/// Writes `saved` (mode 0600, in a 0700 directory) and syncs it, once: its bytes
/// are both hashed and written.
pub fn prepare(dir: &Path, saved: &Saved) -> std::io::Result<Pending> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let bytes = serde_json::to_vec(saved).map_err(std::io::Error::other)?;
    let hash = arf_core::canonical::sha256_hex(&bytes);
    let body = dir.join(format!("{FILE}.body"));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&body)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    Ok(Pending { hash, dir: dir.to_owned(), body })
}

impl Pending {
    /// Puts the snapshot in place, with the sequence number of the log's record of it.
    pub fn commit(self, recorded_seq: u64) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let temporary = self.dir.join(format!("{FILE}.tmp"));
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        serde_json::to_writer(&mut file, &Header { hash: self.hash.clone(), recorded_seq }).map_err(std::io::Error::other)?;
        file.write_all(b"\n")?;
        std::io::copy(&mut std::fs::File::open(&self.body)?, &mut file)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path(&self.dir))?;
        std::fs::remove_file(&self.body)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

/// Writes a whole file at once (tests, tools): [`prepare`] then [`Pending::commit`].
pub fn write(dir: &Path, snapshot: &SnapshotFile) -> std::io::Result<()> {
    prepare(dir, &snapshot.saved)?.commit(snapshot.recorded_seq)
}
