//! Secrets for pathway steps: each pathway names the secrets it needs, and only
//! those are read, from the executor's environment (`ARF_SECRET_<NAME>`) or from
//! a file `<secrets_dir>/<NAME>`, and handed to that pathway's runners.
//!
//! The values are kept so that every audit payload and every message can be
//! scrubbed of them before it leaves the process.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// What replaces a secret's value in logs and audit payloads.
pub const REDACTED: &str = "[redacted]";

/// Where secrets come from.
#[derive(Debug, Clone, Default)]
pub struct SecretSource {
    pub dir: Option<PathBuf>,
}

impl SecretSource {
    /// Reads the named secrets; a missing or empty one is an error naming it.
    pub fn resolve(&self, names: &[String]) -> Result<BTreeMap<String, String>, String> {
        let mut values = BTreeMap::new();
        for name in names {
            let from_env = std::env::var(format!("ARF_SECRET_{name}")).ok();
            let from_file = || {
                let dir = self.dir.as_ref()?;
                std::fs::read_to_string(dir.join(name)).ok().map(|v| v.trim_end_matches(['\n', '\r']).to_owned())
            };
            match from_env.or_else(from_file) {
                Some(value) if !value.is_empty() => {
                    values.insert(name.clone(), value);
                }
                _ => {
                    let file = self.dir.as_ref().map(|d| format!(" nor in `{}`", d.join(name).display())).unwrap_or_default();
                    return Err(format!("secret `{name}` is not set: neither `ARF_SECRET_{name}` in the environment{file}"));
                }
            }
        }
        Ok(values)
    }
}

/// Replaces every occurrence of a secret value in `text`.
pub fn redact_text(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// Replaces every occurrence of a secret value in every string of `value`, keys included.
pub fn redact_json(value: Value, secrets: &[String]) -> Value {
    if secrets.is_empty() {
        return value;
    }
    match value {
        Value::String(text) => Value::String(redact_text(&text, secrets)),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| redact_json(v, secrets)).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (redact_text(&k, secrets), redact_json(v, secrets))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_everywhere() {
        let secrets = vec!["s3cr3t".to_owned()];
        let value = json!({"a": "Bearer s3cr3t", "b": ["x s3cr3t y", 1], "s3cr3t": true});
        assert_eq!(
            redact_json(value, &secrets),
            json!({"a": "Bearer [redacted]", "b": ["x [redacted] y", 1], "[redacted]": true})
        );
    }

    #[test]
    fn reads_files_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ARF_TEST_FILE_ONLY"), "v1\n").unwrap();
        let source = SecretSource { dir: Some(dir.path().to_owned()) };
        let values = source.resolve(&["ARF_TEST_FILE_ONLY".to_owned()]).unwrap();
        assert_eq!(values["ARF_TEST_FILE_ONLY"], "v1");
        let err = source.resolve(&["ARF_TEST_NOWHERE".to_owned()]).unwrap_err();
        assert!(err.contains("`ARF_SECRET_ARF_TEST_NOWHERE`"), "{err}");
    }

    const CHILD: &str = "ARF_TEST_SECRETS_CHILD_DIR";

    /// Run as a child process (see below) with secrets in its environment, which a
    /// test cannot safely set in its own, multi-threaded process.
    #[test]
    fn child_reads_the_environment_first() {
        let Some(dir) = std::env::var_os(CHILD) else { return };
        let source = SecretSource { dir: Some(dir.into()) };
        let values = source.resolve(&["BOTH".to_owned(), "FILE".to_owned()]).unwrap();
        assert_eq!(values["BOTH"], "from-env", "the environment takes precedence over the file");
        assert_eq!(values["FILE"], "from-file");
        let err = source.resolve(&["EMPTY".to_owned()]).unwrap_err();
        assert!(err.contains("secret `EMPTY` is not set"), "an empty value counts as missing: {err}");
    }

    #[test]
    fn the_environment_takes_precedence_over_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("BOTH"), "from-file\n").unwrap();
        std::fs::write(dir.path().join("FILE"), "from-file\n").unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["secrets::tests::child_reads_the_environment_first", "--exact", "--test-threads=1"])
            .env(CHILD, dir.path())
            .env("ARF_SECRET_BOTH", "from-env")
            .env("ARF_SECRET_EMPTY", "")
            .status()
            .unwrap();
        assert!(status.success(), "the child's checks failed");
    }
}
