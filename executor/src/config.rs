//! The executor's configuration, and loading everything it names before a port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;

use arf_core::catalog::{Catalog, CatalogError};
use arf_core::decision::TrustedKey;
use arf_core::keys::KeyError;
use arf_core::target::Inventory;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the idempotency database lives.
    pub data_dir: PathBuf,
    #[serde(default = "default_audit_addr")]
    pub audit_addr: String,
    /// The file holding the executor's bearer token for the audit log.
    pub audit_token_file: PathBuf,
    /// The directory of pathway TOML files this executor runs.
    pub catalog_dir: PathBuf,
    /// Public key files (hex) of the governor keys whose decisions are accepted;
    /// several are allowed so that a key rotation does not stop execution.
    pub trusted_keys: Vec<PathBuf>,
    /// What pathways may act on, with the facts their templates read.
    #[serde(default)]
    pub targets: Inventory,
    /// How many actions may run at once across all targets; more wait their turn.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// A directory of secret files (`<dir>/<NAME>`, readable by the executor's
    /// user only); `ARF_SECRET_<NAME>` in the environment takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<PathBuf>,
}

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7403))
}

pub fn default_audit_addr() -> String {
    "127.0.0.1:7400".to_owned()
}

pub fn default_max_concurrent() -> usize {
    4
}

/// Why a configuration cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("`executor.max_concurrent` must be at least 1")]
    MaxConcurrent,
    #[error("`executor.trusted_keys` must name at least one governor public key")]
    NoTrustedKeys,
    #[error("`executor.trusted_keys`: {0}")]
    TrustedKey(KeyError),
    #[error("`executor.audit_token_file`: {0}")]
    AuditToken(KeyError),
    #[error("`executor.audit_addr` `{0}` is not a valid address")]
    AuditAddr(String),
    #[error("`executor.catalog_dir`: {0}")]
    Catalog(CatalogError),
    #[error("`executor.targets` has a target with an empty name")]
    EmptyTargetName,
}

/// What the configuration names, loaded and checked.
pub(crate) struct Loaded {
    pub catalog: Catalog,
    pub trusted_keys: Vec<TrustedKey>,
    pub audit_token: String,
}

impl Config {
    /// Checks what can be checked before a port is bound: the keys, the token and
    /// the catalog all load, and the numbers make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.load().map(|_| ())
    }

    pub(crate) fn load(&self) -> Result<Loaded, ConfigError> {
        if self.max_concurrent == 0 {
            return Err(ConfigError::MaxConcurrent);
        }
        if self.trusted_keys.is_empty() {
            return Err(ConfigError::NoTrustedKeys);
        }
        if self.targets.keys().any(String::is_empty) {
            return Err(ConfigError::EmptyTargetName);
        }
        let trusted_keys = self
            .trusted_keys
            .iter()
            .map(|path| arf_core::keys::load_trusted(path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::TrustedKey)?;
        let audit_token = arf_core::keys::load_token(&self.audit_token_file).map_err(ConfigError::AuditToken)?;
        if !audit_addr_ok(&self.audit_addr) {
            return Err(ConfigError::AuditAddr(self.audit_addr.clone()));
        }
        let catalog = Catalog::load_dir(&self.catalog_dir).map_err(ConfigError::Catalog)?;
        Ok(Loaded { catalog, trusted_keys, audit_token })
    }
}

/// Accepts `host:port`, or a `http://` or `https://` URL with a host.
fn audit_addr_ok(address: &str) -> bool {
    let url = if address.starts_with("http://") || address.starts_with("https://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    reqwest::Url::parse(&url)
        .is_ok_and(|url| url.host_str().is_some_and(|h| !h.is_empty()) && url.port_or_known_default().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_addresses() {
        for (address, ok) in [
            ("127.0.0.1:7400", true),
            ("localhost:7400", true),
            ("http://audit.internal:7400", true),
            ("", false),
            ("http://", false),
            ("not an address", false),
        ] {
            assert_eq!(audit_addr_ok(address), ok, "{address}");
        }
    }
}
