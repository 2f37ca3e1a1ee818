//! The governor's configuration, and the checks it passes before any port is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::risk::RiskWeights;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the governor keeps its state on disk.
    pub data_dir: PathBuf,
    /// The audit log's address; several, separated by commas, for audit front-ends
    /// that serve one log (`audit.postgres`): calls go to the next when one does not answer.
    #[serde(default = "default_audit_addr")]
    pub audit_addr: String,
    /// The bearer token the governor presents to the audit log as a writer.
    pub audit_token_file: PathBuf,
    /// The executor's address; several, separated by commas, for executor replicas
    /// that share `executor.postgres` (calls go to the next when one does not answer).
    #[serde(default = "default_executor_addr")]
    pub executor_addr: String,
    /// The bearer token the governor presents to the executor (an identity of role
    /// `governor` in `executor.identities`). Without it the executor refuses to act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_token_file: Option<PathBuf>,
    /// The Rego bundle: every `*.rego` file in this directory.
    pub policies_dir: PathBuf,
    /// The governor's own copy of the pathway catalog; it signs the digest of the
    /// definitions it judged, never the agent's idea of them.
    pub catalog_dir: PathBuf,
    /// The ed25519 signing key, generated at first start (0600, with a `.pub` beside it).
    pub signing_key_file: PathBuf,
    /// How long a decision stays valid, from the moment it is made.
    #[serde(default = "default_decision_ttl_secs")]
    pub decision_ttl_secs: u64,
    /// Who may call the governor, and as what.
    pub identities: Vec<Identity>,
    /// The reviewed target inventory: a target's environment, tier and security
    /// sensitivity come from here, never from the proposal.
    #[serde(default)]
    pub targets: arf_core::target::Inventory,
    #[serde(default)]
    pub risk: RiskWeights,
    /// Environment name to sensitivity in [0, 1]. An environment not listed here is
    /// unknown: it scores as the most sensitive, and policy sees that it is unknown.
    #[serde(default = "default_environments")]
    pub environments: BTreeMap<String, f64>,
    /// Rate limit, error budget, change freezes and rollback pathways.
    #[serde(default)]
    pub guard_rails: crate::guard::GuardRails,
    /// The mode of each service in each environment (`shadow`, `review`,
    /// `autonomous`), first match wins; `autonomous` when none matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modes: Vec<crate::graduation::ModeRule>,
    /// When a pathway graduates on a service (successes in a row, and the window).
    #[serde(default)]
    pub graduation: crate::graduation::Graduation,
    /// The audit log's public checkpoint key (hex `.pub`). When set, the governor is
    /// a witness of the log: before it authorizes a decision it has the log sign a
    /// checkpoint, keeps it in `data_dir/witness/checkpoint`, and authorizes nothing
    /// on a log that does not prove it extends the last one it saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_checkpoint_key: Option<PathBuf>,
    /// The log's origin in its checkpoints.
    #[serde(default = "arf_audit_client::checkpoint::default_origin")]
    pub audit_checkpoint_origin: String,
    /// As a witness, how often (seconds) it also checks the log between decisions,
    /// so that what was logged after the last one is under its checkpoint within
    /// this time.
    #[serde(default = "arf_audit_client::witness::default_keep_up_secs")]
    pub witness_every_secs: u64,
    /// The audit writer identity of the agent: only its records (signals, snapshots,
    /// diagnoses) back a proposal.
    #[serde(default = "default_agent_writer")]
    pub agent_writer: String,
    /// After a crash, an autonomous decision that was approved but never authorized
    /// is authorized when the governor comes back within this many seconds of the
    /// decision, and expires unrun after that: nothing acts alone long after the fact.
    #[serde(default = "default_settle_secs")]
    pub settle_secs: u64,
    /// How long a settled decision (executed, expired, denied, rejected, failed to
    /// dispatch) stays in memory after it expired. It is then read back from the log
    /// when asked for, and still holds its action against a repeat.
    #[serde(default = "default_retain_decisions_secs")]
    pub retain_decisions_secs: u64,
    /// A restart starts from a state snapshot in `data_dir` (decisions, authorizations
    /// and what the guard rails read from the log), folded in the background whenever
    /// the log has grown this many records past the last one, and folds only the log
    /// after it (`crate::snapshot`).
    #[serde(default = "default_snapshot_every_records")]
    pub snapshot_every_records: u64,
    /// How often the log's length is checked against the last snapshot, in seconds.
    #[serde(default = "default_snapshot_check_secs")]
    pub snapshot_check_secs: u64,
    /// Notifications (`[notify]` at the top of `arf.toml`, inherited): who is told
    /// of what (`crate::notify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<crate::notify::NotifyConfig>,
    /// How a model's stated confidence is calibrated by its record (`docs/governance.md`).
    #[serde(default)]
    pub calibration: crate::calibration::Prior,
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
    /// Run as one of several governor replicas on this PostgreSQL database (migrated
    /// with `arf db migrate`; every replica on one log, `audit.postgres`): the one
    /// that holds the leader's lease decides, takes approvals and dispatches; the
    /// others stand by, answering `UNAVAILABLE`, until its lease lapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<arf_pg::Settings>,
    /// This replica's name, as the leader's lease shows it (default `governor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// How long the leader's lease lasts without renewal; a standby takes over one
    /// lease after it lapsed (default 10).
    #[serde(default = "arf_pg::lease::default_lease_secs")]
    pub lease_secs: u64,
}


pub fn default_snapshot_every_records() -> u64 {
    50_000
}

pub fn default_snapshot_check_secs() -> u64 {
    60
}

pub fn default_settle_secs() -> u64 {
    60
}

pub fn default_retain_decisions_secs() -> u64 {
    3600
}

pub fn default_agent_writer() -> String {
    "agent".to_owned()
}

/// One caller of the governor: a name, a role and its token (hashed in the
/// configuration, or read from a file at start and hashed).
pub use arf_core::identity::Identity;

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7402))
}

pub fn default_audit_addr() -> String {
    "127.0.0.1:7400".to_owned()
}

pub use arf_core::net::addresses;

pub fn default_executor_addr() -> String {
    "127.0.0.1:7403".to_owned()
}

pub fn default_decision_ttl_secs() -> u64 {
    900
}

/// Production is as sensitive as it gets; staging and development much less.
pub fn default_environments() -> BTreeMap<String, f64> {
    BTreeMap::from([("production".to_owned(), 1.0), ("staging".to_owned(), 0.3), ("development".to_owned(), 0.1)])
}

/// The longest a decision may stay valid: a week. Approvals older than that
/// describe a world that has moved on.
const MAX_DECISION_TTL_SECS: u64 = 7 * 24 * 3600;

/// Why a configuration was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("`governor.{field}`: {message}")]
    Invalid { field: String, message: String },
    #[error("`governor.catalog_dir`: {0}")]
    Catalog(#[from] arf_core::catalog::CatalogError),
    #[error("`governor.policies_dir`: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{0}")]
    Transport(String),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

impl Config {
    /// Checks everything that can be checked before a port is bound: the fields,
    /// the token files, the signing key if it exists, the catalog and the policy bundle.
    /// Mutual TLS, or plain text on loopback when the configuration asks for it.
    pub fn transport(&self) -> Result<arf_core::tls::Transport, ConfigError> {
        let peers: Vec<&str> = addresses(&self.audit_addr).chain(addresses(&self.executor_addr)).collect();
        let listening: Vec<SocketAddr> = std::iter::once(self.listen).chain(self.metrics_listen).collect();
        arf_core::tls::transport("governor", self.mtls.as_ref(), self.insecure_loopback_only, &listening, &peers)
            .map_err(ConfigError::Transport)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transport()?;
        arf_core::target::check_inventory(&self.targets).map_err(|e| invalid("targets", e))?;
        self.calibration.validate().map_err(|e| invalid("calibration", e))?;
        if let Some(notify) = &self.notify {
            crate::notify::check(notify).map_err(|e| invalid("notify", e))?;
        }
        if self.audit_addr.trim().is_empty() {
            return Err(invalid("audit_addr", "must not be empty"));
        }
        if self.snapshot_every_records == 0 {
            return Err(invalid("snapshot_every_records", "must be at least 1"));
        }
        if self.snapshot_check_secs == 0 {
            return Err(invalid("snapshot_check_secs", "must be at least 1"));
        }
        if self.lease_secs == 0 {
            return Err(invalid("lease_secs", "must be at least 1"));
        }
        if self.witness_every_secs == 0 {
            return Err(invalid("witness_every_secs", "must be at least 1"));
        }
        if let Some(postgres) = &self.postgres {
            postgres.validate().map_err(|e| invalid("postgres", e.to_string()))?;
        }
        if self.executor_addr.trim().is_empty() {
            return Err(invalid("executor_addr", "must not be empty"));
        }
        if self.decision_ttl_secs == 0 || self.decision_ttl_secs > MAX_DECISION_TTL_SECS {
            return Err(invalid(
                "decision_ttl_secs",
                format!("must lie in [1, {MAX_DECISION_TTL_SECS}], got `{}`", self.decision_ttl_secs),
            ));
        }
        arf_core::keys::load_token(&self.audit_token_file).map_err(|e| invalid("audit_token_file", e.to_string()))?;
        if let Some(file) = &self.executor_token_file {
            arf_core::keys::load_token(file).map_err(|e| invalid("executor_token_file", e.to_string()))?;
        }
        if self.signing_key_file.exists() {
            arf_core::keys::load_signing(&self.signing_key_file)
                .map_err(|e| invalid("signing_key_file", e.to_string()))?;
        }
        self.risk.validate().map_err(|message| invalid("risk", message))?;
        for (name, sensitivity) in &self.environments {
            if !(0.0..=1.0).contains(sensitivity) {
                return Err(invalid(
                    format!("environments.{name}"),
                    format!("must lie in [0, 1], got `{sensitivity}`"),
                ));
            }
        }
        for (name, target) in &self.targets {
            if name.trim().is_empty() {
                return Err(invalid("targets", "a target has an empty name"));
            }
            if target.kind.trim().is_empty() {
                return Err(invalid(format!("targets.{name}.kind"), "must not be empty"));
            }
            if target.environment.trim().is_empty() {
                return Err(invalid(format!("targets.{name}.environment"), "must not be empty"));
            }
        }
        self.guard_rails.validate().map_err(|(field, message)| invalid(field, message))?;
        self.graduation.validate().map_err(|(field, message)| invalid(field, message))?;
        for (i, rule) in self.modes.iter().enumerate() {
            if rule.environment.trim().is_empty() || rule.service.trim().is_empty() {
                return Err(invalid(format!("modes[{i}]"), "`environment` and `service` name one, or `*` for any".to_owned()));
            }
        }
        self.load_identities()?;
        arf_core::catalog::Catalog::load_dir(&self.catalog_dir)?;
        crate::policy::Policies::load_dir(&self.policies_dir)?;
        Ok(())
    }

    /// Reads every identity's token: token hash → caller.
    pub(crate) fn load_identities(&self) -> Result<arf_core::identity::Identities, ConfigError> {
        if self.identities.is_empty() {
            return Err(invalid(
                "identities",
                "must name at least one identity (the agent, and the people who approve)",
            ));
        }
        arf_core::identity::Identities::load(&self.identities, "identities").map_err(|e| invalid(e.field, e.message))
    }
}
