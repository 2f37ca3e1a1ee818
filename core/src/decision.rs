//! Routes, risk, and the signed decision envelope that the executor acts on.
//!
//! The signature covers the canonical JSON of [`DecisionBody`], byte for byte, so
//! every field that affects what runs (pathway, its digest, target, parameters,
//! route, approvals, expiry) is covered.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::canonical;

/// Where the governor routes a proposal. Not `non_exhaustive`: a new route must
/// break every `match` that decides what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Autonomous,
    Acknowledge,
    Approval,
    Deny,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Autonomous => "autonomous",
            Self::Acknowledge => "acknowledge",
            Self::Approval => "approval",
            Self::Deny => "deny",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "autonomous" => Some(Self::Autonomous),
            "acknowledge" => Some(Self::Acknowledge),
            "approval" => Some(Self::Approval),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }

    /// Stricter routes rank higher; combining two routes keeps the stricter.
    pub fn strictness(self) -> u8 {
        match self {
            Self::Autonomous => 0,
            Self::Acknowledge => 1,
            Self::Approval => 2,
            Self::Deny => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskFactor {
    pub name: String,
    pub value: f64,
    pub weight: f64,
    pub contribution: f64,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Risk {
    pub score: f64,
    pub band: String,
    pub factors: Vec<RiskFactor>,
}

/// Who approved, as the governor authenticated them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRef {
    pub identity: String,
    pub role: String,
    pub at_ms: i64,
}

/// `approve` or `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
        }
    }
}

/// One person's verdict on a decision, as the governor authenticated them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub identity: String,
    pub role: String,
    pub at_ms: i64,
    pub verdict: Verdict,
    /// The approver's comment, or the reason for a rejection.
    pub reason: String,
}

/// Everything the executor needs, and everything the signature covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// The envelope format version.
    pub version: u32,
    pub decision_id: String,
    pub incident_id: String,
    pub proposal_id: String,
    pub snapshot_hash: String,
    pub pathway: String,
    /// The content hash of the pathway definition the governor judged; the executor
    /// refuses when its own catalog's definition differs.
    pub pathway_digest: String,
    pub target: String,
    pub parameters: Value,
    pub route: Route,
    pub approvals: Vec<ApprovalRef>,
    pub risk_score: f64,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
}

pub const ENVELOPE_VERSION: u32 = 1;

/// A decision body with its signature, as it travels to the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDecision {
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
    pub key_id: String,
    pub audit_seq: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("decision is signed by unknown key `{0}`")]
    UnknownKey(String),
    #[error("decision signature does not verify")]
    BadSignature,
    #[error("decision body is malformed: {0}")]
    Malformed(String),
    #[error("decision `{decision_id}` expired at {expired_at}")]
    Expired { decision_id: String, expired_at: String },
    #[error("decision `{0}` has route `deny` and can never run")]
    Denied(String),
    #[error("decision `{0}` has an unsupported envelope version")]
    Version(String),
}

/// A key the executor trusts, with its id.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key_id: String,
    pub key: ed25519_dalek::VerifyingKey,
}

/// Names a key: hex of the first 8 bytes of the SHA-256 of the public key.
pub fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    canonical::sha256_hex(key.as_bytes()).chars().take(16).collect()
}

/// Signs a body. The body is encoded canonically so that the bytes signed are the
/// bytes that travel, and the same body always gives the same bytes.
pub fn sign(body: &DecisionBody, key: &ed25519_dalek::SigningKey, audit_seq: u64) -> Result<SignedDecision, serde_json::Error> {
    use ed25519_dalek::Signer;
    let bytes = canonical::to_vec(body)?;
    let signature = key.sign(&bytes);
    Ok(SignedDecision {
        body: bytes,
        signature: signature.to_bytes().to_vec(),
        key_id: key_id(&key.verifying_key()),
        audit_seq,
    })
}

/// Checks signature, format and expiry, and returns the body. Checking the audit
/// record is the caller's job: it needs the log.
pub fn verify(signed: &SignedDecision, trusted: &[TrustedKey], now_ms: i64) -> Result<DecisionBody, EnvelopeError> {
    let key = trusted
        .iter()
        .find(|k| k.key_id == signed.key_id)
        .ok_or_else(|| EnvelopeError::UnknownKey(signed.key_id.clone()))?;
    let signature =
        ed25519_dalek::Signature::from_slice(&signed.signature).map_err(|_| EnvelopeError::BadSignature)?;
    key.key
        .verify_strict(&signed.body, &signature)
        .map_err(|_| EnvelopeError::BadSignature)?;
    let body: DecisionBody =
        serde_json::from_slice(&signed.body).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if body.version != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version(body.decision_id));
    }
    if body.route == Route::Deny {
        return Err(EnvelopeError::Denied(body.decision_id));
    }
    if now_ms >= body.expires_at_ms {
        return Err(EnvelopeError::Expired {
            decision_id: body.decision_id,
            expired_at: crate::time::format_ms(body.expires_at_ms),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(expires_at_ms: i64) -> DecisionBody {
        DecisionBody {
            version: ENVELOPE_VERSION,
            decision_id: "dec-1".into(),
            incident_id: "inc-1".into(),
            proposal_id: "prop-1".into(),
            snapshot_hash: "abc".into(),
            pathway: "restart_service".into(),
            pathway_digest: "d".into(),
            target: "web".into(),
            parameters: serde_json::json!({}),
            route: Route::Autonomous,
            approvals: vec![],
            risk_score: 0.1,
            issued_at_ms: 0,
            expires_at_ms,
        }
    }

    fn keypair(seed: u8) -> (ed25519_dalek::SigningKey, Vec<TrustedKey>) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let trusted = vec![TrustedKey { key_id: key_id(&key.verifying_key()), key: key.verifying_key() }];
        (key, trusted)
    }

    #[test]
    fn a_signed_body_verifies() {
        let (key, trusted) = keypair(1);
        let signed = sign(&body(100), &key, 7).unwrap();
        assert_eq!(verify(&signed, &trusted, 50).unwrap(), body(100));
    }

    #[test]
    fn altered_forged_and_expired_are_refused() {
        let (key, trusted) = keypair(1);
        let mut altered = sign(&body(100), &key, 7).unwrap();
        let text = String::from_utf8(altered.body.clone()).unwrap().replace("restart_service", "delete_everything");
        altered.body = text.into_bytes();
        assert_eq!(verify(&altered, &trusted, 50), Err(EnvelopeError::BadSignature));

        let (forger, _) = keypair(2);
        let mut forged = sign(&body(100), &forger, 7).unwrap();
        assert!(matches!(verify(&forged, &trusted, 50), Err(EnvelopeError::UnknownKey(_))));
        forged.key_id = trusted[0].key_id.clone();
        assert_eq!(verify(&forged, &trusted, 50), Err(EnvelopeError::BadSignature));

        let signed = sign(&body(100), &key, 7).unwrap();
        assert!(matches!(verify(&signed, &trusted, 100), Err(EnvelopeError::Expired { .. })));
    }
}
