//! The governor's state saved for restarts: its decisions, what each authorization
//! signed, and what the guard rails read from the log (the kill switch, trips,
//! graduations, the hour's autonomous runs), folded from the log up to a record,
//! so that a restart reads only the log after it.
//!
//! The state is folded from the log by a background task (never copied from the
//! live state), with the same fold a restart uses ([`crate::decision::Restored`]),
//! and kept as [`arf_audit_client::state`] keeps a state: its SHA-256 is logged (a
//! `decision` record, [`arf_core::records::GovernanceEvent::StateSnapshot`], under
//! the incident id [`arf_core::records::GOVERNOR_STATE_SNAPSHOT`]) before the file
//! is put in place, and a restart starts from the file only when the log vouches
//! for it; otherwise it says so, loudly, and folds the whole log.

use serde::{Deserialize, Serialize};

use crate::decision::Restored;

/// The file, in `governor.data_dir`.
pub const FILE: &str = "state-snapshot.json";
/// The format of [`Saved`]; a file of another format is not used.
pub const FORMAT: u32 = 1;
/// The version of the fold ([`Restored::add`], eviction): bumped when what a fold
/// makes of the log changes, so an older snapshot is not used. 2: withdrawals.
/// 3: the state `not_run`.
pub const FOLD_RULES: u32 = 3;
/// A fold lets settled decisions go at every record whose sequence number is a
/// multiple of this (and a restart once more at its end), wherever it started, so
/// a fold from a snapshot lets go exactly where a whole fold does.
pub const EVICT_EVERY: u64 = 4096;

/// What a fold's result depends on besides the log: a snapshot folded under other
/// settings or rules is not the state a whole fold would give now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldSettings {
    pub rules: u32,
    /// `governor.retain_decisions_secs`, in milliseconds.
    pub retain_ms: i64,
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
    pub state: Restored,
}

arf_audit_client::state_file!(Saved, FoldSettings, FILE, FORMAT);
