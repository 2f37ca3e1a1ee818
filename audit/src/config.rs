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
    /// Where the log's files live (`records.log`, `checkpoint`, the checkpoint key); made 0700.
    pub data_dir: PathBuf,
    /// Keep the log in this PostgreSQL database instead of `data_dir/records.log`
    /// (migrated with `arf db migrate`); any number of audit services may serve one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<arf_pg::Settings>,
    /// Writer identity → file holding its bearer token. Only these may append, and
    /// the identity recorded is the one whose token was presented.
    pub writers: BTreeMap<String, PathBuf>,
    /// Reader identity → file holding its bearer token. Readers (people, an
    /// `auditor`) may read the log but not append; writers may read too. Nobody
    /// else may read it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub readers: BTreeMap<String, PathBuf>,
    /// The deployment's identities (`[[identities]]`): those whose role may read
    /// (people, tooling, auditors, the services) read the log too. A signal source does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<arf_core::identity::Identity>,
    /// Mutual TLS: the CA of every peer, and this service's certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<arf_core::tls::TlsFiles>,
    /// Plain text instead, confined to loopback addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_loopback_only: bool,
    /// The HTTP endpoint for Prometheus (`/metrics`, with a reader's token) and
    /// probes (`/healthz`, `/readyz`); off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Writer identity → the record kinds it may append (`"signal"`, `"outcome"`, ...).
    /// A writer listed here appends nothing else, so a compromised agent cannot
    /// forge a decision or an outcome; a writer not listed may append any kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub writer_kinds: BTreeMap<String, Vec<String>>,
    /// The ed25519 key checkpoints are signed with (hex, mode 0600, public key
    /// beside it as `.pub`); generated at first start. Default `data_dir/checkpoint.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_key: Option<PathBuf>,
    /// The log's name in its checkpoints; witnesses check it.
    #[serde(default = "default_origin")]
    pub checkpoint_origin: String,
    /// Sign a checkpoint at least once this many records have been appended.
    #[serde(default = "default_every_records")]
    pub checkpoint_every_records: u64,
    /// ... and at least this often while the log grows, and at shutdown.
    #[serde(default = "default_every_secs")]
    pub checkpoint_every_secs: u64,
}

pub use arf_audit_client::checkpoint::default_origin;

fn default_every_records() -> u64 {
    1000
}

fn default_every_secs() -> u64 {
    10
}

/// The addresses a service listens on: its port, and its metrics port if any.
pub fn listening(listen: SocketAddr, metrics: Option<SocketAddr>) -> Vec<SocketAddr> {
    std::iter::once(listen).chain(metrics).collect()
}

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}

impl Config {
    /// Mutual TLS, or plain text on loopback when the configuration asks for it.
    pub fn transport(&self) -> Result<arf_core::tls::Transport, String> {
        arf_core::tls::transport("audit", self.mtls.as_ref(), self.insecure_loopback_only, &listening(self.listen, self.metrics_listen), &[])
    }

    /// A log in `data_dir` for these writers, with no kind limits and default checkpointing.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, writers: BTreeMap<String, PathBuf>) -> Self {
        Self {
            listen,
            data_dir,
            postgres: None,
            writers,
            readers: BTreeMap::new(),
            identities: Vec::new(),
            mtls: None,
            // For tests and embedding on one machine; `arf init` writes mutual TLS.
            insecure_loopback_only: true,
            metrics_listen: None,
            writer_kinds: BTreeMap::new(),
            checkpoint_key: None,
            checkpoint_origin: default_origin(),
            checkpoint_every_records: default_every_records(),
            checkpoint_every_secs: default_every_secs(),
        }
    }

    /// Checks what can be checked before a port is bound.
    pub fn validate(&self) -> Result<(), String> {
        self.transport()?;
        if self.writers.is_empty() {
            return Err("`audit.writers` must name at least one writer".to_owned());
        }
        if let Some(postgres) = &self.postgres {
            postgres.config().and_then(|_| postgres.connector()).map_err(|e| format!("`audit.postgres`: {e}"))?;
        }
        if self.checkpoint_origin.is_empty() || self.checkpoint_origin.contains(['\n', ' ', '+']) {
            return Err("`audit.checkpoint_origin` must be one word without spaces or `+`".to_owned());
        }
        if self.checkpoint_every_records == 0 || self.checkpoint_every_secs == 0 {
            return Err("`audit.checkpoint_every_records` and `audit.checkpoint_every_secs` must be at least 1".to_owned());
        }
        for (identity, path) in &self.writers {
            if identity.is_empty() {
                return Err("`audit.writers` has an empty identity".to_owned());
            }
            if identity == crate::store::LOG_WRITER {
                return Err(format!("`audit.writers.{identity}`: `{identity}` is the log's own identity, for its checkpoints"));
            }
            arf_core::keys::load_token(path).map_err(|e| format!("`audit.writers.{identity}`: {e}"))?;
        }
        for (identity, path) in &self.readers {
            if identity.is_empty() || identity == crate::store::LOG_WRITER {
                return Err(format!("`audit.readers` has an invalid identity `{identity}`"));
            }
            arf_core::keys::load_token(path).map_err(|e| format!("`audit.readers.{identity}`: {e}"))?;
        }
        self.kinds_by_writer().map(|_| ())
    }

    pub fn checkpoint_key_path(&self) -> PathBuf {
        self.checkpoint_key.clone().unwrap_or_else(|| self.data_dir.join("checkpoint.key"))
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
