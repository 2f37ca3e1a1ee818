//! Evidence bundles: one incident's records, an inclusion proof for each, and a
//! signed checkpoint that covers them, in one file an auditor verifies offline with
//! nothing but the log's public key.
//!
//! The file is the canonical JSON of the bundle plus a newline, and verification
//! requires exactly that encoding, so every byte is either covered by a hash or a
//! signature or checked against the canonical form: changing any byte fails.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::{Checkpoint, CheckpointError, NoteVerifier};
use crate::merkle::{self, Hash};
use crate::record::Record;
use crate::store::leaf_of;

pub const FORMAT: &str = "arf-evidence-bundle/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    pub incident_id: String,
    /// The signed checkpoint (C2SP signed note) every proof leads to.
    pub checkpoint: String,
    pub records: Vec<Proven>,
}

/// A record and the hashes that prove it is in the checkpoint's tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proven {
    pub record: Record,
    /// Lowercase hex, in RFC 6962 order.
    pub proof: Vec<String>,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("the bundle is not valid JSON of the bundle format: {0}")]
    Malformed(String),
    #[error("the bundle is not in canonical form (it was edited after export)")]
    NotCanonical,
    #[error("the bundle's format is `{0}`, expected `{FORMAT}`")]
    Format(String),
    #[error("the bundle's checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("record {seq}: {reason}")]
    Record { seq: u64, reason: String },
    #[error("the bundle holds no record")]
    Empty,
}

impl Bundle {
    /// The bundle's file contents: canonical JSON and a newline.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut bytes = arf_core::canonical::to_vec(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

/// What a bundle proved.
#[derive(Debug, Clone)]
pub struct Verified {
    pub bundle: Bundle,
    pub checkpoint: Checkpoint,
}

/// Verifies a bundle's bytes against the log's key, offline.
pub fn verify(bytes: &[u8], verifier: &NoteVerifier) -> Result<Verified, BundleError> {
    let bundle: Bundle = serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
    if bundle.encode().map_err(|e| BundleError::Malformed(e.to_string()))? != bytes {
        return Err(BundleError::NotCanonical);
    }
    if bundle.format != FORMAT {
        return Err(BundleError::Format(bundle.format));
    }
    let checkpoint = verifier.verify(&bundle.checkpoint)?;
    if bundle.records.is_empty() {
        return Err(BundleError::Empty);
    }
    let mut previous = 0;
    for proven in &bundle.records {
        let record = &proven.record;
        let bad = |reason: String| BundleError::Record { seq: record.seq, reason };
        if record.seq <= previous {
            return Err(bad("records are out of order or repeated".to_owned()));
        }
        previous = record.seq;
        if record.incident_id != bundle.incident_id {
            return Err(bad(format!("belongs to incident `{}`, not `{}`", record.incident_id, bundle.incident_id)));
        }
        if record.compute_hash() != record.hash {
            return Err(bad("its contents do not match its hash".to_owned()));
        }
        let proof = proven
            .proof
            .iter()
            // Lowercase only: hex decoding ignores case, and no byte may change unnoticed.
            .map(|h| hex::decode(h).ok().filter(|b| hex::encode(b) == *h).and_then(|b| Hash::try_from(b.as_slice()).ok()))
            .collect::<Option<Vec<Hash>>>()
            .ok_or_else(|| bad("a proof hash is not 32 bytes of hex".to_owned()))?;
        let leaf = leaf_of(record).map_err(&bad)?;
        merkle::verify_inclusion(record.seq - 1, checkpoint.size, &leaf, &proof, &checkpoint.root)
            .map_err(|e| bad(format!("not in the signed tree of {} records: {e}", checkpoint.size)))?;
    }
    Ok(Verified { bundle, checkpoint })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;
    use crate::merkle::Tree;
    use crate::record::{Entry, GENESIS_HASH, RecordKind};
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    /// A bundle of incident `inc-b`'s records out of a 9-record log, and its verifier.
    fn bundle() -> (Vec<u8>, NoteVerifier) {
        let mut records: Vec<Record> = Vec::new();
        let mut tree = Tree::new();
        for i in 0..9u64 {
            let (seq, hash) = records.last().map_or((0, GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
            let incident = if i % 3 == 0 { "inc-b" } else { "inc-a" };
            let record = Record::seal(seq, &hash, i as i64, "agent", Entry::new(incident, RecordKind::Signal, json!({"i": i, "text": "x\u{1b}[2J"})));
            tree.push(leaf_of(&record).unwrap());
            records.push(record);
        }
        let key = SigningKey::from_bytes(&[5; 32]);
        let checkpoint = Checkpoint { origin: "log".into(), size: 9, root: tree.root(9).unwrap() };
        let proven = records
            .iter()
            .filter(|r| r.incident_id == "inc-b")
            .map(|r| Proven {
                record: r.clone(),
                proof: tree.inclusion_proof(r.seq - 1, 9).unwrap().iter().map(hex::encode).collect(),
            })
            .collect();
        let bundle = Bundle { format: FORMAT.into(), incident_id: "inc-b".into(), checkpoint: checkpoint.sign(&key), records: proven };
        (bundle.encode().unwrap(), NoteVerifier::new("log", key.verifying_key()))
    }

    #[test]
    fn a_bundle_verifies_offline() {
        let (bytes, verifier) = bundle();
        let verified = verify(&bytes, &verifier).unwrap();
        assert_eq!(verified.bundle.records.iter().map(|p| p.record.seq).collect::<Vec<_>>(), vec![1, 4, 7]);
        assert_eq!(verified.checkpoint.size, 9);
    }

    #[test]
    fn changing_any_byte_of_a_bundle_fails_it() {
        let (bytes, verifier) = bundle();
        for i in 0..bytes.len() {
            // A low bit, or the case bit on alternate bytes (hex and escapes ignore case).
            let flip = if i % 2 == 0 { 0x01u8 } else { 0x20 };
            let mut copy = bytes.clone();
            copy[i] ^= flip;
            assert!(verify(&copy, &verifier).is_err(), "byte {i} ^ {flip:#x} still verifies");
        }
        let other = NoteVerifier::new("log", SigningKey::from_bytes(&[6; 32]).verifying_key());
        assert!(matches!(verify(&bytes, &other), Err(BundleError::Checkpoint(_))));
    }
}
