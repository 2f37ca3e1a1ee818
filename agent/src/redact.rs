//! Redaction: secrets are replaced with a marker before anything reaches a prompt.
//!
//! The patterns cover cloud access keys, common tokens (GitHub, Slack, bearer,
//! JWT), private key blocks, credentials in URLs and connection strings, and
//! long high-entropy strings. It errs on the side of removing too much: a
//! redacted hash costs the model little, a leaked key costs a rotation.

use regex::Regex;
use serde_json::Value;

/// What replaces a secret.
pub const MARKER: &str = "[REDACTED]";

pub struct Redactor {
    patterns: Vec<(&'static str, Regex)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("patterns", &self.patterns.len()).finish()
    }
}

const BUILTIN: &[(&str, &str)] = &[
    ("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY( BLOCK)?-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY( BLOCK)?-----|$)"),
    ("aws_access_key", r"\b(AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    ("aws_secret", r"(?i)aws_?secret_?access_?key\s*[:=]\s*\S+"),
    ("github_token", r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}\b"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
    ("slack_webhook", r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\b"),
    ("bearer", r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    ("basic_auth", r"(?i)authorization:\s*basic\s+[A-Za-z0-9+/]{8,}={0,2}"),
    ("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}\b"),
    ("npm_token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("sendgrid_key", r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\b"),
    ("twilio_key", r"\bSK[0-9a-fA-F]{32}\b"),
    ("url_credentials", r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]*:[^/\s@]+@"),
    // A secret-named key and its value: `password=...`, `"password": "..."`,
    // `x-api-key: ...`, an Azure SAS `sig=...`. The key (with its quote and
    // separator) stays; the value goes, up to the next `&name=` of a query string.
    ("password_assignment", r#"(?i)(\b(?:password|passwd|pwd|secret|token|x-api-key|api[_-]?key|apikey|access[_-]?key|client[_-]?secret|account[_-]?key|shared[_-]?access[_-]?key|private[_-]?key|sig|signature)["']?\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s,;"']+)"#),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("stripe_key", r"\b(sk|rk)_(live|test)_[0-9A-Za-z]{16,}\b"),
];

impl Redactor {
    /// The built-in patterns plus `extra` (regular expressions from config).
    pub fn new(extra: &[String]) -> Result<Self, String> {
        let mut patterns = Vec::with_capacity(BUILTIN.len() + extra.len());
        for (name, pattern) in BUILTIN {
            patterns.push((*name, Regex::new(pattern).map_err(|e| format!("built-in pattern `{name}`: {e}"))?));
        }
        for pattern in extra {
            patterns.push(("config", Regex::new(pattern).map_err(|e| format!("redaction pattern `{pattern}`: {e}"))?));
        }
        Ok(Self { patterns })
    }

    /// Redacts one string.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (name, pattern) in &self.patterns {
            if !pattern.is_match(&out) {
                continue;
            }
            out = match *name {
                // Keep the scheme so the URL still reads as a URL.
                "url_credentials" => pattern.replace_all(&out, format!("${{1}}{MARKER}@")).into_owned(),
                "password_assignment" => redact_assignments(pattern, &out),
                _ => pattern.replace_all(&out, MARKER).into_owned(),
            };
        }
        redact_high_entropy(&out)
    }

    /// Redacts every field of a signal that came from outside: free text, labels
    /// and annotations with their keys, service, environment, severity, source,
    /// id and fingerprint. Names that hold no secret are left as they are, so
    /// grouping and scope are unchanged for them.
    pub fn signal(&self, mut signal: arf_core::signal::Signal) -> arf_core::signal::Signal {
        for field in [
            &mut signal.title,
            &mut signal.description,
            &mut signal.service,
            &mut signal.environment,
            &mut signal.severity,
            &mut signal.source,
            &mut signal.id,
            &mut signal.fingerprint,
        ] {
            *field = self.text(field);
        }
        for map in [&mut signal.labels, &mut signal.annotations] {
            *map = std::mem::take(map).into_iter().map(|(k, v)| (self.text(&k), self.text(&v))).collect();
        }
        signal
    }

    /// Redacts every string (and object key) in a JSON value.
    pub fn value(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (self.text(k), self.value(v))).collect()),
            other => other.clone(),
        }
    }
}

/// Replaces the value of every secret-named key, keeping the key, its quote and
/// separator, and (in a query string) the parameters after it: in
/// `password=Tr0ub&dor&user=app` the value is `Tr0ub&dor`, up to `&user=`.
fn redact_assignments(pattern: &Regex, text: &str) -> String {
    let next_parameter = |value: &str| {
        value.match_indices('&').map(|(i, _)| i).find(|&i| {
            let rest = &value[i + 1..];
            let name_len = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        })
    };
    pattern
        .replace_all(text, |caps: &regex::Captures<'_>| {
            let (key, value) = (&caps[1], &caps[2]);
            match value.chars().next() {
                Some(quote @ ('"' | '\'')) => format!("{key}{quote}{MARKER}{quote}"),
                _ => match next_parameter(value) {
                    // The parameters after it go through the whole redactor again.
                    Some(at) => format!("{key}{MARKER}{}", redact_assignments(pattern, &value[at..])),
                    None => format!("{key}{MARKER}"),
                },
            }
        })
        .into_owned()
}

/// Replaces long tokens whose characters look random (Shannon entropy per
/// character above a threshold, with both letters and digits), such as API keys
/// without a known prefix. Git commit hashes are hex and low enough in entropy per
/// character to stay, which matters: they are evidence.
fn redact_high_entropy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if looks_random(token) {
            out.push_str(MARKER);
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-') {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn looks_random(token: &str) -> bool {
    if token.len() < 24 {
        return false;
    }
    // Kubernetes object and package names (`payments-api-7d9f8c6b5d-x2k9q`) are
    // lowercase words, digits and dashes: evidence an engineer needs, not keys.
    if token.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | '+')) && token.contains(['-', '_']) {
        return false;
    }
    let is_hex = token.chars().all(|c| c.is_ascii_hexdigit());
    if is_hex && token.len() <= 64 {
        // Commit hashes and content hashes: evidence, not secrets.
        return false;
    }
    let has_digit = token.chars().any(|c| c.is_ascii_digit());
    let has_upper = token.chars().any(|c| c.is_ascii_uppercase());
    let has_lower = token.chars().any(|c| c.is_ascii_lowercase());
    if !(has_digit && has_lower && (has_upper || token.len() >= 32)) {
        return false;
    }
    entropy(token) >= 4.0
}

fn entropy(token: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in token.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = token.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_known_secret_forms() {
        let r = Redactor::new(&[]).unwrap();
        let secrets = [
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "xoxb-123456789012-abcdefghijkl",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "hunter2hunter2",
        ];
        let text = format!(
            "key {} token {} slack {} jwt {} url postgres://admin:{}@db:5432/x -----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
            secrets[0], secrets[1], secrets[2], secrets[3], secrets[4]
        );
        let out = r.text(&text);
        for secret in secrets {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(!out.contains("MIIB"));
    }

    /// The forms that got through before, each kept from the model.
    #[test]
    fn removes_the_forms_that_leaked() {
        let r = Redactor::new(&[]).unwrap();
        let cases = [
            (r#"{"password": "Hx7-quoted-pw"}"#, "Hx7-quoted-pw", r#"{"password": "[REDACTED]"}"#),
            ("x-api-key: 9f86d081884c7d659a2feaa0c55ad015", "9f86d081884c7d659a2feaa0c55ad015", "x-api-key: [REDACTED]"),
            ("password=Tr0ub&dorUniq3", "dorUniq3", "password=[REDACTED]"),
            ("jdbc:x?password=Jd-s3cr3t&user=app", "Jd-s3cr3t", "jdbc:x?password=[REDACTED]&user=app"),
            ("https://acct.blob.core.windows.net/c?sv=2022-11-02&se=2026-12-01&sig=Qm7Xk2Wz9%2BLv4Np8Tb3Rc%3D", "Qm7Xk2Wz9", "https://acct.blob.core.windows.net/c?sv=2022-11-02&se=2026-12-01&sig=[REDACTED]"),
        ];
        for (text, secret, expected) in cases {
            let out = r.text(text);
            assert!(!out.contains(secret), "{secret} leaked in {out}");
            assert_eq!(out, expected);
        }
    }

    /// What an on-call engineer needs survives.
    #[test]
    fn keeps_what_looks_like_a_secret_but_is_evidence() {
        let r = Redactor::new(&[]).unwrap();
        for text in [
            "BackOff: Back-off restarting failed container payments-api-deployment-7d9f8c6b5d-x2k9q",
            "CVE-2019-1549 in openssl-1.1.1c.tar.gz (libssl1.1_1.1.1d-0+deb10u2)",
            "image registry.example/checkout@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "config commit 3f2a9c1d4e5b6a7980123456789abcdef0123456 broke checkout",
            "signal_count=12 token_budget exceeded in pod checkout-7d9f8c6b5d-x2k9q",
        ] {
            assert_eq!(r.text(text), text);
        }
    }

    #[test]
    fn every_field_of_a_signal_is_redacted() {
        let r = Redactor::new(&[]).unwrap();
        let key = "AKIAZ7QK3MW9XR2TLPVB";
        let mut signal = arf_core::signal::Signal {
            id: format!("sig-{key}"),
            kind: arf_core::signal::SignalKind::Alert,
            source: format!("https://user:{key}@example"),
            status: arf_core::signal::SignalStatus::Firing,
            title: key.into(),
            description: key.into(),
            severity: key.into(),
            service: key.into(),
            environment: key.into(),
            labels: [(key.to_owned(), key.to_owned())].into(),
            annotations: [(key.to_owned(), key.to_owned())].into(),
            observed_at_ms: 0,
            fingerprint: key.into(),
        };
        signal = r.signal(signal);
        let all = serde_json::to_string(&signal).unwrap();
        assert!(!all.contains(key), "{all}");
    }

    #[test]
    fn keeps_commit_hashes_and_plain_words() {
        let r = Redactor::new(&[]).unwrap();
        let text = "config commit 3f2a9c1d4e5b6a7980123456789abcdef0123456 broke checkout";
        assert_eq!(r.text(text), text);
    }
}
