//! The audit service's configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::record::RecordKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the sled database lives.
    pub data_dir: PathBuf,
    /// Writer identity → file holding its bearer token. Only these may append, and
    /// the identity recorded is the one whose token was presented.
    pub writers: BTreeMap<String, PathBuf>,
    /// Writer identity → the record kinds it may append (`"signal"`, `"outcome"`, ...).
    /// A writer listed here appends nothing else, so a compromised agent cannot
    /// forge a decision or an outcome; a writer not listed may append any kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub writer_kinds: BTreeMap<String, Vec<String>>,
}

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}

impl Config {
    /// Checks what can be checked before a port is bound.
    pub fn validate(&self) -> Result<(), String> {
        if self.writers.is_empty() {
            return Err("`audit.writers` must name at least one writer".to_owned());
        }
        for (identity, path) in &self.writers {
            if identity.is_empty() {
                return Err("`audit.writers` has an empty identity".to_owned());
            }
            arf_core::keys::load_token(path).map_err(|e| format!("`audit.writers.{identity}`: {e}"))?;
        }
        self.kinds_by_writer().map(|_| ())
    }

    /// `writer_kinds`, checked: every writer named is configured, every kind exists.
    pub fn kinds_by_writer(&self) -> Result<BTreeMap<String, BTreeSet<RecordKind>>, String> {
        let mut out = BTreeMap::new();
        for (identity, kinds) in &self.writer_kinds {
            if !self.writers.contains_key(identity) {
                return Err(format!("`audit.writer_kinds.{identity}` names a writer that `audit.writers` does not have"));
            }
            if kinds.is_empty() {
                return Err(format!(
                    "`audit.writer_kinds.{identity}` is empty, which would let it append nothing; remove the entry to let it append any kind"
                ));
            }
            let parsed = kinds
                .iter()
                .map(|k| {
                    RecordKind::parse(k).ok_or_else(|| {
                        let known: Vec<&str> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
                        format!("`audit.writer_kinds.{identity}`: unknown record kind `{k}` (one of {})", known.join(", "))
                    })
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            out.insert(identity.clone(), parsed);
        }
        Ok(out)
    }
}
