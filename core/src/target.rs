//! The target inventory: what a pathway may act on, and the facts the executor needs.
//!
//! A model names a target only by name. The environment, tier and facts (URLs,
//! repository paths) come from this reviewed inventory, never from the model or
//! the signal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The kind of target, matched against a pathway's `target_kind`.
    #[serde(default = "default_kind")]
    pub kind: String,
    pub service: String,
    pub environment: String,
    /// The service tier: `critical`, `standard`, `best_effort`.
    #[serde(default = "default_tier")]
    pub tier: String,
    /// Touches identity, secrets or network exposure.
    #[serde(default)]
    pub security_sensitive: bool,
    /// Facts that pathway templates read as `{{target.NAME}}`.
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
}

fn default_kind() -> String {
    "service".to_owned()
}

fn default_tier() -> String {
    "standard".to_owned()
}

/// Target name to target.
pub type Inventory = BTreeMap<String, Target>;
