//! Normalized signals and their fingerprints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::canonical;

/// What a signal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    Alert,
    Finding,
    Detection,
    Change,
    Event,
}

impl SignalKind {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "alert" => Some(Self::Alert),
            "finding" => Some(Self::Finding),
            "detection" => Some(Self::Detection),
            "change" => Some(Self::Change),
            "event" => Some(Self::Event),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Finding => "finding",
            Self::Detection => "detection",
            Self::Change => "change",
            Self::Event => "event",
        }
    }
}

/// Whether the condition a signal reports still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalStatus {
    Firing,
    Resolved,
}

/// A signal in ARF's own shape, whatever format it arrived in.
///
/// Everything in it is untrusted data: it is shown to the model as data and
/// never widens what the governor allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// The content hash of the signal as received (see [`Signal::content_id`]).
    pub id: String,
    pub source: String,
    pub kind: SignalKind,
    pub status: SignalStatus,
    pub title: String,
    pub description: String,
    pub severity: String,
    pub service: String,
    pub environment: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub observed_at_ms: i64,
    pub fingerprint: String,
}

/// The largest signal the agent accepts, in bytes of canonical JSON.
pub const MAX_SIGNAL_BYTES: usize = 64 * 1024;
/// The most labels or annotations one signal may carry.
pub const MAX_LABELS: usize = 128;

impl Signal {
    /// The identity of the condition the signal reports: the same alert firing again
    /// has the same fingerprint, so repeats deduplicate.
    ///
    /// It covers the source, the kind, the service, the environment and the labels,
    /// and deliberately not the status, the time or the free text.
    pub fn compute_fingerprint(&self) -> String {
        let identity = serde_json::json!({
            "source": self.source,
            "kind": self.kind,
            "service": self.service,
            "environment": self.environment,
            "labels": self.labels,
        });
        let hash = canonical::to_vec(&identity)
            .map(|bytes| canonical::sha256_hex(&bytes))
            .unwrap_or_default();
        hash.chars().take(16).collect()
    }

    /// The content address of this signal as received, with its `id` left empty.
    pub fn content_id(&self) -> String {
        let mut copy = self.clone();
        copy.id = String::new();
        let hash = canonical::content_hash(&copy).unwrap_or_default();
        format!("sig-{}", &hash[..hash.len().min(16)])
    }
}
