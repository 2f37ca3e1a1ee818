//! The agent's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use arf_core::target::Inventory;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonerKind {
    Scripted,
    Rules,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Webhook ingest over HTTP.
    #[serde(default = "default_webhook_listen")]
    pub webhook_listen: SocketAddr,
    #[serde(default = "default_audit_addr")]
    pub audit_addr: String,
    pub audit_token_file: PathBuf,
    #[serde(default = "default_governor_addr")]
    pub governor_addr: String,
    pub governor_token_file: PathBuf,
    pub catalog_dir: PathBuf,
    pub reasoner: ReasonerKind,
    /// Scripted responses, for `reasoner = "scripted"`.
    #[serde(default)]
    pub scripted_dir: Option<PathBuf>,
    /// Runbook rules, for `reasoner = "rules"`.
    #[serde(default)]
    pub runbooks_dir: Option<PathBuf>,
    /// Signals about one service join its open incident for this long.
    #[serde(default = "default_group_window")]
    pub group_window_secs: u64,
    /// Changes this long before an incident opened are context for it.
    #[serde(default = "default_change_lookback")]
    pub change_lookback_secs: u64,
    #[serde(default = "default_max_snapshot_items")]
    pub max_snapshot_items: usize,
    /// A bound on model calls per incident.
    #[serde(default = "default_max_diagnoses")]
    pub max_diagnoses_per_incident: u32,
    /// Extra redaction patterns (regular expressions).
    #[serde(default)]
    pub redact_patterns: Vec<String>,
    #[serde(default)]
    pub targets: Inventory,
}

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7401))
}

pub fn default_webhook_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7480))
}

fn default_audit_addr() -> String {
    "127.0.0.1:7400".to_owned()
}

fn default_governor_addr() -> String {
    "127.0.0.1:7402".to_owned()
}

fn default_group_window() -> u64 {
    1800
}

fn default_change_lookback() -> u64 {
    7200
}

fn default_max_snapshot_items() -> usize {
    50
}

fn default_max_diagnoses() -> u32 {
    3
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        match self.reasoner {
            ReasonerKind::Scripted if self.scripted_dir.is_none() => {
                return Err("`agent.scripted_dir` is required when `agent.reasoner = \"scripted\"`".to_owned());
            }
            ReasonerKind::Rules if self.runbooks_dir.is_none() => {
                return Err("`agent.runbooks_dir` is required when `agent.reasoner = \"rules\"`".to_owned());
            }
            _ => {}
        }
        if self.max_snapshot_items == 0 {
            return Err("`agent.max_snapshot_items` must be positive".to_owned());
        }
        if self.max_diagnoses_per_incident == 0 {
            return Err("`agent.max_diagnoses_per_incident` must be positive".to_owned());
        }
        arf_core::keys::load_token(&self.audit_token_file).map_err(|e| format!("`agent.audit_token_file`: {e}"))?;
        arf_core::keys::load_token(&self.governor_token_file).map_err(|e| format!("`agent.governor_token_file`: {e}"))?;
        Ok(())
    }
}
