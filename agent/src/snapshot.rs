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
pub const FORMAT: u32 = 1;

/// The state, as folded from records `1..=through_seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub format: u32,
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
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read `{}`: {e}", file.display())),
    };
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

/// Writes the file durably: a temporary file, synced, renamed over the old one.
pub fn write(dir: &Path, snapshot: &SnapshotFile) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!("{FILE}.tmp"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&temporary)?);
    serde_json::to_writer(&mut file, &Header { hash: snapshot.hash.clone(), recorded_seq: snapshot.recorded_seq }).map_err(std::io::Error::other)?;
    file.write_all(b"\n")?;
    serde_json::to_writer(&mut file, &snapshot.saved).map_err(std::io::Error::other)?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path(dir))?;
    std::fs::File::open(dir)?.sync_all()
}
