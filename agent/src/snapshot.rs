//! The agent's state saved for restarts: incidents and logged proposals, folded
//! from the log up to a record, so that a restart reads only the log after it.
//!
//! The state is folded from the log by a background task (never copied from the
//! live state, which ingest changes concurrently), with the same fold a restart
//! uses (`Incidents::restore_one`), and kept as [`arf_audit_client::state`]
//! keeps a state: its SHA-256 is logged (an `incident` record,
//! [`arf_core::records::IncidentRecord::StateSnapshot`], under the incident id
//! [`arf_core::records::STATE_SNAPSHOT`]) before the file is put in place, and a
//! restart starts from the file only when the log vouches for it; otherwise it
//! says so, loudly, and folds the whole log.

use serde::{Deserialize, Serialize};

use arf_core::diagnosis::Proposal;

use crate::incident::StoredIncidents;

/// The file, in `agent.state_dir`.
pub const FILE: &str = "state-snapshot.json";
/// The format of [`Saved`]; a file of another format is not used.
pub const FORMAT: u32 = 3;
/// The version of the fold (`Incidents::restore_one`, eviction, pruning): bumped
/// when what a fold makes of the log changes, so an older snapshot is not used.
/// 5: the outcome `not_run` escalates.
pub const FOLD_RULES: u32 = 5;

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

arf_audit_client::state_file!(Saved, FoldSettings, FILE, FORMAT);
