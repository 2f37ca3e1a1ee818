//! The audit service's configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
        Ok(())
    }
}
