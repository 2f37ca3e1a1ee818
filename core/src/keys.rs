//! The governor's ed25519 signing key on disk, and the public keys the executor trusts.
//!
//! The secret key file holds 64 hex characters and is created with mode 0600; the
//! public key sits beside it as `<file>.pub`, also hex.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::decision::{TrustedKey, key_id};

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read key file `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write key file `{path}`: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("key file `{0}` does not hold a 32-byte hex key")]
    Format(PathBuf),
    #[error("key file `{path}` is readable by others (mode {mode:o}); it must be 0600")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("no entropy to generate a key")]
    Entropy,
}

/// The public key file that goes with a secret key file.
pub fn public_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Loads the signing key, generating it (and its `.pub`) at first start.
pub fn load_or_generate(path: &Path) -> Result<ed25519_dalek::SigningKey, KeyError> {
    if path.exists() {
        return load_signing(path);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|_| KeyError::Entropy)?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| KeyError::Write { path: parent.to_owned(), source })?;
    }
    write_private(path, &hex::encode(seed))?;
    let public = public_path(path);
    fs::write(&public, hex::encode(key.verifying_key().as_bytes()))
        .map_err(|source| KeyError::Write { path: public, source })?;
    Ok(key)
}

/// Writes a new file readable by its owner only (0600), synced; refuses to overwrite.
pub fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| KeyError::Write { path: path.to_owned(), source })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Write { path: path.to_owned(), source })
}

/// Loads a secret key, refusing one that others can read.
pub fn load_signing(path: &Path) -> Result<ed25519_dalek::SigningKey, KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: path.to_owned(), mode });
        }
    }
    let bytes = read_hex32(path)?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&bytes))
}

/// Loads a public key the executor trusts.
pub fn load_trusted(path: &Path) -> Result<TrustedKey, KeyError> {
    let bytes = read_hex32(path)?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Format(path.to_owned()))?;
    Ok(TrustedKey { key_id: key_id(&key), key })
}

fn read_hex32(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
    let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Format(path.to_owned()))?;
    bytes.try_into().map_err(|_| KeyError::Format(path.to_owned()))
}

/// Loads a bearer token from `path`, generating a random one (mode 0600) at first use.
/// Tokens authenticate processes to the audit log and people to the governor.
pub fn load_or_generate_token(path: &Path) -> Result<String, KeyError> {
    if path.exists() {
        return load_token(path);
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| KeyError::Entropy)?;
    let token = hex::encode(bytes);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| KeyError::Write { path: parent.to_owned(), source })?;
    }
    write_private(path, &token)?;
    Ok(token)
}

/// Loads a bearer token, refusing one too short to be a secret.
pub fn load_token(path: &Path) -> Result<String, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
    let token = text.trim().to_owned();
    if token.len() < 32 {
        return Err(KeyError::Format(path.to_owned()));
    }
    Ok(token)
}

/// The SHA-256 of a token, which is what configuration stores instead of the token.
pub fn token_hash(token: &str) -> String {
    crate::canonical::sha256_hex(token.as_bytes())
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// Compares two byte strings in time that depends on their length only, so a
/// signature check does not leak how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/governor.key");
        let key = load_or_generate(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(load_or_generate(&path).unwrap().to_bytes(), key.to_bytes());
        let trusted = load_trusted(&public_path(&path)).unwrap();
        assert_eq!(trusted.key, key.verifying_key());
    }

    /// RFC 4231 test cases 1, 2 and 6 (a key longer than the block).
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let cases: [(&[u8], &[u8], &str); 3] = [
            (&[0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, message, expected) in cases {
            assert_eq!(hex::encode(hmac_sha256(key, message)), expected);
        }
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
