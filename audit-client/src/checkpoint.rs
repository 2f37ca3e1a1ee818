//! Signed checkpoints: the C2SP `tlog-checkpoint` body in a C2SP `signed-note`,
//! signed with the audit service's ed25519 key.
//!
//! ```text
//! arf-audit-log
//! 1042
//! 3Yk9...base64 root...=
//!
//! — arf-audit-log Az3k...base64(key id || signature)...
//! ```
//!
//! The key id is the first four bytes of SHA-256(name || "\n" || 0x01 || public key),
//! and the signature covers the body (the first three lines with their newlines).
//! A verifier key is written `name+keyid_hex+base64(0x01 || public key)`, as Go's
//! `golang.org/x/mod/sumdb/note` does, so the same text works with its tools.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::merkle::Hash;

/// The log's default origin (the first line of its checkpoints).
pub fn default_origin() -> String {
    "arf-audit-log".to_owned()
}

const ALG_ED25519: u8 = 0x01;
/// The key type of a C2SP `tlog-cosignature/v1` witness key.
const ALG_COSIGNATURE_V1: u8 = 0x04;
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// What a checkpoint says: the log, how many records, and the root over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("the checkpoint is malformed: {0}")]
    Malformed(String),
    #[error("the checkpoint carries no signature by `{0}` that verifies")]
    NotSigned(String),
    #[error("the verifier key is malformed: {0}")]
    BadKey(String),
    #[error("the checkpoint is for origin `{found}`, expected `{expected}`")]
    WrongOrigin { expected: String, found: String },
}

impl Checkpoint {
    /// The note body: origin, size, base64 root, each ending in a newline.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root))
    }

    /// The signed note.
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = self.body();
        let signature = key.sign(body.as_bytes());
        let mut blob = key_id(&self.origin, &key.verifying_key()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{body}\n{SIGNATURE_PREFIX}{} {}\n", self.origin, STANDARD.encode(blob))
    }

    pub fn root_hex(&self) -> String {
        hex::encode(self.root)
    }

    /// The checkpoint a note states, without checking who signed it: for a size
    /// check where no key is at hand. Never a reason to trust the note.
    pub fn parse_unverified(note: &str) -> Result<Self, CheckpointError> {
        let (body, _) = note
            .split_once("\n\n")
            .ok_or_else(|| CheckpointError::Malformed("no blank line between body and signatures".to_owned()))?;
        parse_body(&format!("{body}\n"))
    }
}

/// What a head seal signs: where a log's chain ends, under the log's origin. Its
/// first line is no origin and its second no size, so no checkpoint body reads
/// as one, and no head seal passes for a checkpoint's signature.
fn head_seal_message(origin: &str, seq: u64, hash: &str) -> String {
    format!("arf-audit-head/v1\n{origin}\n{seq}\n{hash}\n")
}

/// A head seal: the log key's signature (base64) over where the chain ends,
/// `(seq, hash)`. The log on PostgreSQL keeps one with its head row, renewed in
/// every append's transaction, so a database client that is not an audit
/// front-end (and so lacks the key) cannot extend the chain: rows it inserts
/// leave a head no seal matches.
pub fn seal_head(key: &SigningKey, origin: &str, seq: u64, hash: &str) -> String {
    STANDARD.encode(key.sign(head_seal_message(origin, seq, hash).as_bytes()).to_bytes())
}

impl NoteVerifier {
    /// Whether `seal` is this key's seal of the chain ending at `(seq, hash)`.
    pub fn verify_head_seal(&self, seq: u64, hash: &str, seal: &str) -> bool {
        let Ok(bytes) = STANDARD.decode(seal) else { return false };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else { return false };
        self.key.verify(head_seal_message(&self.name, seq, hash).as_bytes(), &signature).is_ok()
    }
}

/// The four-byte key id of an ed25519 note key.
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ALG_ED25519]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A key that checkpoints are checked against: the log's name and its public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    pub name: String,
    pub key: VerifyingKey,
}

impl NoteVerifier {
    pub fn new(name: impl Into<String>, key: VerifyingKey) -> Self {
        Self { name: name.into(), key }
    }

    /// Parses `name+keyid_hex+base64(0x01 || public key)`.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let text = text.trim();
        let mut parts = text.rsplitn(3, '+');
        let (Some(blob), Some(id), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CheckpointError::BadKey("expected `name+keyid+key`".to_owned()));
        };
        let bytes = STANDARD.decode(blob).map_err(|e| CheckpointError::BadKey(format!("key is not base64: {e}")))?;
        let Some((&ALG_ED25519, key)) = bytes.split_first() else {
            return Err(CheckpointError::BadKey("only ed25519 keys (algorithm 1) are supported".to_owned()));
        };
        let key: [u8; 32] = key.try_into().map_err(|_| CheckpointError::BadKey("an ed25519 key is 32 bytes".to_owned()))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|e| CheckpointError::BadKey(e.to_string()))?;
        let verifier = Self::new(name, key);
        if hex::encode(key_id(name, &key)) != id.to_ascii_lowercase() {
            return Err(CheckpointError::BadKey("the key id does not match the name and key".to_owned()));
        }
        Ok(verifier)
    }

    /// The text form [`NoteVerifier::parse`] reads.
    pub fn encode(&self) -> String {
        let mut blob = vec![ALG_ED25519];
        blob.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, hex::encode(key_id(&self.name, &self.key)), STANDARD.encode(blob))
    }

    /// Parses a signed checkpoint and checks that this key signed it for this origin.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let (body, signatures) = note
            .split_once("\n\n")
            .ok_or_else(|| CheckpointError::Malformed("no blank line between body and signatures".to_owned()))?;
        let body = format!("{body}\n");
        let checkpoint = parse_body(&body)?;
        if checkpoint.origin != self.name {
            return Err(CheckpointError::WrongOrigin { expected: self.name.clone(), found: checkpoint.origin });
        }
        let wanted_id = key_id(&self.name, &self.key);
        for line in signatures.lines() {
            let Some(rest) = line.strip_prefix(SIGNATURE_PREFIX) else {
                return Err(CheckpointError::Malformed(format!("signature line does not start with `{SIGNATURE_PREFIX}`")));
            };
            let Some((name, blob)) = rest.split_once(' ') else {
                return Err(CheckpointError::Malformed("signature line has no key name".to_owned()));
            };
            let Ok(blob) = STANDARD.decode(blob) else { continue };
            if name != self.name || blob.len() != 4 + 64 || blob[..4] != wanted_id {
                continue;
            }
            let Ok(signature) = ed25519_dalek::Signature::from_slice(&blob[4..]) else { continue };
            if self.key.verify(body.as_bytes(), &signature).is_ok() {
                return Ok(checkpoint);
            }
        }
        Err(CheckpointError::NotSigned(self.name.clone()))
    }
}

/// The four-byte key id of a witness's cosignature key.
pub fn cosignature_key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ALG_COSIGNATURE_V1]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn cosigned_message(checkpoint: &Checkpoint, time_secs: u64) -> String {
    format!("cosignature/v1\ntime {time_secs}\n{}", checkpoint.body())
}

/// Adds a witness's cosignature (C2SP `tlog-cosignature/v1`: the witness signs
/// `cosignature/v1`, the time, and the checkpoint body) to a signed note.
pub fn cosign(note: &str, checkpoint: &Checkpoint, name: &str, key: &SigningKey, time_secs: u64) -> String {
    let signature = key.sign(cosigned_message(checkpoint, time_secs).as_bytes());
    let mut blob = cosignature_key_id(name, &key.verifying_key()).to_vec();
    blob.extend_from_slice(&time_secs.to_be_bytes());
    blob.extend_from_slice(&signature.to_bytes());
    format!("{}{SIGNATURE_PREFIX}{name} {}\n", note, STANDARD.encode(blob))
}

/// Finds and checks a witness's cosignature on a note whose checkpoint is
/// `checkpoint`; returns the time the witness signed it.
pub fn verify_cosignature(note: &str, checkpoint: &Checkpoint, name: &str, key: &VerifyingKey) -> Result<u64, CheckpointError> {
    let wanted = cosignature_key_id(name, key);
    let signatures = note.split_once("\n\n").map_or("", |(_, s)| s);
    for line in signatures.lines() {
        let Some((line_name, blob)) = line.strip_prefix(SIGNATURE_PREFIX).and_then(|rest| rest.split_once(' ')) else { continue };
        let Ok(blob) = STANDARD.decode(blob) else { continue };
        if line_name != name || blob.len() != 4 + 8 + 64 || blob[..4] != wanted {
            continue;
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(&blob[4..12]);
        let time_secs = u64::from_be_bytes(time);
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&blob[12..]) else { continue };
        if key.verify(cosigned_message(checkpoint, time_secs).as_bytes(), &signature).is_ok() {
            return Ok(time_secs);
        }
    }
    Err(CheckpointError::NotSigned(name.to_owned()))
}

fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
    let lines: Vec<&str> = body.split_terminator('\n').collect();
    let [origin, size, root, ..] = lines.as_slice() else {
        return Err(CheckpointError::Malformed("a checkpoint body has origin, size and root lines".to_owned()));
    };
    if origin.is_empty() {
        return Err(CheckpointError::Malformed("empty origin".to_owned()));
    }
    // Strictly decimal, as the format says: no sign, no leading zeros.
    let size = size
        .parse::<u64>()
        .ok()
        .filter(|n| n.to_string() == *size)
        .ok_or_else(|| CheckpointError::Malformed(format!("size `{size}` is not a decimal number")))?;
    let root = STANDARD
        .decode(root)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| CheckpointError::Malformed("root is not 32 bytes of base64".to_owned()))?;
    Ok(Checkpoint { origin: (*origin).to_owned(), size, root })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_does_not() {
        let checkpoint = Checkpoint { origin: "arf-audit-log".into(), size: 42, root: [7; 32] };
        let note = checkpoint.sign(&key(1));
        let verifier = NoteVerifier::new("arf-audit-log", key(1).verifying_key());
        assert_eq!(verifier.verify(&note).unwrap(), checkpoint);
        assert!(note.contains("\n\n\u{2014} arf-audit-log "), "{note}");

        let bumped = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(verifier.verify(&bumped), Err(CheckpointError::NotSigned("arf-audit-log".into())));
        let other_key = NoteVerifier::new("arf-audit-log", key(2).verifying_key());
        assert!(other_key.verify(&note).is_err());
        let other_origin = NoteVerifier::new("elsewhere", key(1).verifying_key());
        assert!(matches!(other_origin.verify(&note), Err(CheckpointError::WrongOrigin { .. })));
    }

    #[test]
    fn a_cosignature_verifies_and_the_log_signature_still_does() {
        let checkpoint = Checkpoint { origin: "arf-audit-log".into(), size: 7, root: [3; 32] };
        let note = checkpoint.sign(&key(1));
        let cosigned = cosign(&note, &checkpoint, "offsite", &key(9), 1_764_000_000);
        assert_eq!(verify_cosignature(&cosigned, &checkpoint, "offsite", &key(9).verifying_key()), Ok(1_764_000_000));
        let log = NoteVerifier::new("arf-audit-log", key(1).verifying_key());
        assert_eq!(log.verify(&cosigned).unwrap(), checkpoint, "an added cosignature leaves the log's signature valid");
        let other = Checkpoint { size: 8, ..checkpoint.clone() };
        assert!(verify_cosignature(&cosigned, &other, "offsite", &key(9).verifying_key()).is_err());
        assert!(verify_cosignature(&note, &checkpoint, "offsite", &key(9).verifying_key()).is_err());
    }

    #[test]
    fn verifier_keys_round_trip_and_refuse_a_wrong_id() {
        let verifier = NoteVerifier::new("arf-audit-log", key(3).verifying_key());
        let text = verifier.encode();
        assert_eq!(NoteVerifier::parse(&text).unwrap(), verifier);
        let (head, tail) = text.split_once('+').unwrap();
        let wrong = format!("{head}+00000000+{}", tail.split_once('+').unwrap().1);
        assert!(NoteVerifier::parse(&wrong).is_err());
    }
}
