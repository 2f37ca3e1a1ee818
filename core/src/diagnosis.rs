//! Context snapshots, hypotheses and proposals: what the agent produces.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical;

/// One item of context the model sees, addressable as evidence by its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotItem {
    pub id: String,
    /// `signal`, `change`, `service_fact` or `past_outcome`.
    pub kind: String,
    pub summary: String,
    pub data: Value,
}

/// The bounded, redacted context of one diagnosis. Immutable: its hash is its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub incident_id: String,
    pub service: String,
    pub environment: String,
    pub items: Vec<SnapshotItem>,
    /// Ids of items left out to stay within budget, so nobody mistakes the snapshot for everything.
    pub dropped: Vec<String>,
}

impl Snapshot {
    pub fn hash(&self) -> String {
        canonical::content_hash(self).unwrap_or_default()
    }

    pub fn has_item(&self, id: &str) -> bool {
        self.items.iter().any(|item| item.id == id)
    }
}

/// A remediation the model proposes: a catalog pathway, a target and parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remediation {
    pub pathway: String,
    pub target: String,
    #[serde(default)]
    pub parameters: Value,
    #[serde(default)]
    pub rationale: String,
}

/// A root-cause hypothesis, as the model must answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hypothesis {
    #[serde(default)]
    pub id: String,
    pub root_cause: String,
    pub evidence: Vec<String>,
    pub confidence: f64,
    #[serde(default)]
    pub uncertainty: String,
    #[serde(default)]
    pub expected_impact: String,
    #[serde(default)]
    pub remediations: Vec<Remediation>,
}

/// The whole answer of a reasoner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diagnosis {
    pub hypotheses: Vec<Hypothesis>,
}

/// What the agent asks the governor to allow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    pub id: String,
    pub incident_id: String,
    pub snapshot_hash: String,
    pub hypothesis: Hypothesis,
    pub remediation: Remediation,
    pub service: String,
    pub environment: String,
    pub reasoner: String,
}
