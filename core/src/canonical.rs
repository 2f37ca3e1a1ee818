//! The one canonical encoding that everything hashed or signed goes through.
//!
//! Canonical JSON here means: object keys sorted bytewise (serde_json's map is a
//! `BTreeMap` without the `preserve_order` feature), no insignificant whitespace,
//! and numbers as serde_json prints them.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Encodes a value as canonical JSON bytes.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    // Going through `Value` sorts the keys of every nested object, whatever the
    // field order of the Rust type.
    let value = serde_json::to_value(value)?;
    serde_json::to_vec(&value)
}

/// Encodes a value as a canonical JSON string.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    serde_json::to_string(&value)
}

/// Re-encodes JSON text in canonical form.
pub fn normalize(json: &str) -> Result<String, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    serde_json::to_string(&value)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The content address of a value: the SHA-256 of its canonical encoding.
pub fn content_hash<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    Ok(sha256_hex(&to_vec(value)?))
}

/// A random identifier with a readable prefix, such as `dec-4f1c...`.
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    // getrandom only fails when the OS has no entropy source at all; an id built
    // from the clock is still unique enough for that unlikely case.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = crate::time::now_ms().to_be_bytes();
        bytes[..8].copy_from_slice(&nanos);
    }
    format!("{prefix}-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_depth() {
        let a = json!({"b": 1, "a": {"d": 2, "c": 3}});
        assert_eq!(to_string(&a).unwrap(), r#"{"a":{"c":3,"d":2},"b":1}"#);
    }

    #[test]
    fn normalize_is_stable() {
        let text = r#"{ "z": [1, 2], "a": "x" }"#;
        let once = normalize(text).unwrap();
        assert_eq!(normalize(&once).unwrap(), once);
    }
}
