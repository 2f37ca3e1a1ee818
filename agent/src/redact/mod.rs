//! Redaction: secrets are replaced with a marker before anything is logged,
//! reaches a prompt or is shown.
//!
//! The rules are data: ARF's own (`rules.toml`, in a subset of gitleaks' format),
//! then the maintained rule set of the `nosecrets-rules` crate, extended from
//! configuration with more rules (`agent.redact_rules_file`) or bare patterns
//! (`agent.redact_patterns`): provider token formats, secret-named keys and their
//! values, credentials in URLs and headers, private key blocks, and, for tokens of
//! no known format, long strings that look random (letters and digits, high
//! entropy). What an engineer needs survives: CVE and GHSA ids, image digests and
//! commit hashes, package and pod names, Kubernetes reasons.

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;

use aho_corasick::AhoCorasick;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// What replaces a secret.
pub const MARKER: &str = "[REDACTED]";

/// The built-in rules.
const BUILTIN: &str = include_str!("rules.toml");

/// A rules file: `[[rules]]`, and optionally `[entropy]` and `[allowlist]`. Fields
/// of gitleaks' format that ARF does not use are ignored, so its files load.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RulesFile {
    #[serde(default)]
    entropy: Option<EntropySettings>,
    #[serde(default)]
    allowlist: Option<Allowlist>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EntropySettings {
    min_length: usize,
    min_bits_per_char: f64,
}

#[derive(Debug, Default, Deserialize)]
struct Allowlist {
    #[serde(default)]
    regexes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleSpec {
    id: String,
    /// Rules without a regex (gitleaks' path-only rules) match nothing here.
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    secret_group: usize,
    #[serde(default)]
    keywords: Vec<String>,
    /// The least Shannon entropy (bits per character) the secret must have.
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    until_next_parameter: bool,
    /// Values this rule leaves alone, as regular expressions (`true`, `env:NAME`).
    #[serde(default)]
    allow: Vec<String>,
}

struct Rule {
    id: String,
    regex: Regex,
    secret_group: usize,
    keywords: Vec<String>,
    entropy: Option<f64>,
    until_next_parameter: bool,
    /// Secrets this rule leaves alone (placeholders such as `changeme`, `your-key-here`).
    allow: Vec<Regex>,
}

pub struct Redactor {
    rules: Vec<Rule>,
    allowlist: Vec<Regex>,
    entropy: EntropySettings,
    /// Every rule's keywords, found in one pass over a field.
    keywords: Keywords,
}

/// Which rules may match a text, by their keywords (gitleaks' prefilter: a rule
/// with keywords runs only on a text holding one of them, in any case). One
/// automaton over all the keywords of a few hundred rules, where looking for each
/// keyword of each rule in turn took most of the ingest path's time.
struct Keywords {
    automaton: AhoCorasick,
    /// For each keyword (the automaton's pattern id), the rules that have it.
    rules_of: Vec<Vec<usize>>,
    /// The rules that run on every text: those without keywords.
    always: Vec<bool>,
}

impl Keywords {
    fn new(rules: &[Rule]) -> Result<Self, String> {
        let mut index: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, rule) in rules.iter().enumerate() {
            for keyword in &rule.keywords {
                index.entry(keyword.as_str()).or_default().push(i);
            }
        }
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(index.keys())
            .map_err(|e| format!("the redaction rules' keywords: {e}"))?;
        Ok(Self { automaton, rules_of: index.into_values().collect(), always: rules.iter().map(|r| r.keywords.is_empty()).collect() })
    }

    /// For each rule, whether it may match `text`. Keywords are lowercase; ASCII
    /// text is matched ignoring ASCII case, other text is lowercased first
    /// (Unicode lowercasing can turn a non-ASCII letter into an ASCII one).
    fn gate(&self, text: &str) -> Vec<bool> {
        let mut open = self.always.clone();
        let lowered;
        let haystack = if text.is_ascii() {
            text
        } else {
            lowered = text.to_lowercase();
            lowered.as_str()
        };
        for found in self.automaton.find_overlapping_iter(haystack) {
            for &rule in &self.rules_of[found.pattern().as_usize()] {
                open[rule] = true;
            }
        }
        open
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("rules", &self.rules.len()).finish()
    }
}

impl Redactor {
    /// The built-in rules plus `extra` (bare regular expressions from config).
    pub fn new(extra: &[String]) -> Result<Self, String> {
        Self::with_rules(extra, None)
    }

    /// The built-in rules, the rules of `rules_file` (gitleaks' format), and `extra`.
    pub fn with_rules(extra: &[String], rules_file: Option<&Path>) -> Result<Self, String> {
        let builtin: RulesFile = toml::from_str(BUILTIN).map_err(|e| format!("the built-in redaction rules: {e}"))?;
        let mut redactor = Self {
            rules: Vec::new(),
            allowlist: Vec::new(),
            entropy: builtin.entropy.unwrap_or(EntropySettings { min_length: 24, min_bits_per_char: 4.0 }),
            keywords: Keywords::new(&[])?,
        };
        redactor.add(builtin, "the built-in redaction rules")?;
        redactor.add_registry_rules()?;
        if let Some(path) = rules_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("`agent.redact_rules_file` `{}`: {e}", path.display()))?;
            let file: RulesFile = toml::from_str(&text).map_err(|e| format!("`agent.redact_rules_file` `{}`: {e}", path.display()))?;
            redactor.add(file, &format!("`{}`", path.display()))?;
        }
        for (i, pattern) in extra.iter().enumerate() {
            let regex = Regex::new(pattern).map_err(|e| format!("`agent.redact_patterns[{i}]` `{pattern}`: {e}"))?;
            redactor.rules.push(Rule {
                id: format!("config-{i}"),
                regex,
                secret_group: 0,
                keywords: Vec::new(),
                entropy: None,
                until_next_parameter: false,
                allow: Vec::new(),
            });
        }
        redactor.keywords = Keywords::new(&redactor.rules)?;
        Ok(redactor)
    }

    fn add(&mut self, file: RulesFile, from: &str) -> Result<(), String> {
        if let Some(entropy) = file.entropy {
            self.entropy = entropy;
        }
        for pattern in file.allowlist.unwrap_or_default().regexes {
            self.allowlist.push(Regex::new(&pattern).map_err(|e| format!("{from}: allowlist `{pattern}`: {e}"))?);
        }
        for spec in file.rules {
            let Some(pattern) = spec.regex else { continue };
            let regex = Regex::new(&pattern).map_err(|e| format!("{from}: rule `{}`: {e}", spec.id))?;
            if spec.secret_group > regex.captures_len() - 1 {
                return Err(format!("{from}: rule `{}`: `secretGroup = {}` but the regex has {} groups", spec.id, spec.secret_group, regex.captures_len() - 1));
            }
            let keywords = spec.keywords.iter().map(|k| k.to_lowercase()).collect();
            let allow = spec
                .allow
                .iter()
                .map(|a| Regex::new(a).map_err(|e| format!("{from}: rule `{}`: allow `{a}`: {e}", spec.id)))
                .collect::<Result<Vec<_>, _>>()?;
            self.rules.push(Rule {
                id: spec.id,
                regex,
                secret_group: spec.secret_group,
                keywords,
                entropy: spec.entropy,
                until_next_parameter: spec.until_next_parameter,
                allow,
            });
        }
        Ok(())
    }

    /// The rule set of the `nosecrets-rules` crate, a maintained secret scanner's,
    /// after ARF's own: ARF's rules see whole contexts first (a private key block, a
    /// URL's user info), and these add the provider formats ARF's file lacks. Each
    /// keeps its own allow list of placeholders.
    fn add_registry_rules(&mut self) -> Result<(), String> {
        let rules = nosecrets_rules::load_builtin_rules().map_err(|e| format!("the `nosecrets-rules` rule set: {e}"))?;
        for rule in rules {
            let regex = Regex::new(&rule.pattern).map_err(|e| format!("`nosecrets-rules` rule `{}`: {e}", rule.id))?;
            // Their default group is 1; a pattern without groups means the whole match.
            let secret_group = if rule.capture < regex.captures_len() { rule.capture } else { 0 };
            let allow = rule
                .allow
                .map(|a| {
                    // `patterns` are regular expressions; `values` are exact placeholders.
                    let exact = a.values.iter().map(|v| format!("^{}$", regex::escape(v)));
                    a.patterns.iter().cloned().chain(exact).map(|p| Regex::new(&p)).collect::<Result<Vec<_>, _>>()
                })
                .transpose()
                .map_err(|e| format!("`nosecrets-rules` rule `{}`: allow pattern: {e}", rule.id))?
                .unwrap_or_default();
            self.rules.push(Rule {
                id: format!("nosecrets:{}", rule.id),
                regex,
                secret_group,
                keywords: rule.keywords.iter().map(|k| k.to_lowercase()).collect(),
                entropy: None,
                until_next_parameter: false,
                allow,
            });
        }
        Ok(())
    }

    /// The ids of the rules, in the order they run.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// Redacts one string.
    pub fn text(&self, text: &str) -> String {
        self.redact(text).into_owned()
    }

    /// Redacts one string, borrowing it back when it holds nothing to redact (as
    /// almost every field does).
    fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        let mut open = self.keywords.gate(text);
        for (i, rule) in self.rules.iter().enumerate() {
            if open[i] && rule.regex.is_match(&out) {
                let applied = rule.apply(&out);
                if applied != *out {
                    // The next rules see the text as this one left it.
                    open = self.keywords.gate(&applied);
                    out = Cow::Owned(applied);
                }
            }
        }
        match self.redact_high_entropy(&out) {
            Some(changed) => Cow::Owned(changed),
            None => out,
        }
    }

    /// Redacts one field in place, leaving it untouched when it holds no secret.
    fn redact_field(&self, field: &mut String) {
        if let Cow::Owned(changed) = self.redact(field) {
            *field = changed;
        }
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
            self.redact_field(field);
        }
        for map in [&mut signal.labels, &mut signal.annotations] {
            // Values in place; the map is rebuilt only when a key itself held a secret.
            for (key, value) in map.iter_mut() {
                if holds_secret(key, value) {
                    MARKER.clone_into(value);
                } else {
                    self.redact_field(value);
                }
            }
            if map.keys().any(|k| matches!(self.redact(k), Cow::Owned(_))) {
                *map = std::mem::take(map).into_iter().map(|(k, v)| (self.text(&k), v)).collect();
            }
        }
        signal
    }

    /// Redacts every string (and object key) in a JSON value; and the whole value
    /// of a secret-named key (`\"db_password\": \"...\"`), or of a name/value pair
    /// that names a secret (`{\"name\": \"DB_PASSWORD\", \"value\": \"...\"}`, a
    /// Kubernetes env entry or a tag), where no text rule sees name and value together.
    pub fn value(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => {
                // The secret name of a name/value pair, whose `value` is then the secret.
                let pair_name = ["name", "Name", "key", "Key"].iter().find_map(|k| map.get(*k).and_then(Value::as_str).filter(|n| is_secret_name(n)));
                Value::Object(
                    map.iter()
                        .map(|(k, v)| {
                            let paired = pair_name.filter(|_| k.eq_ignore_ascii_case("value"));
                            let v = match v {
                                Value::String(s) if holds_secret(k, s) || paired.is_some_and(|name| holds_secret(name, s)) => Value::String(MARKER.to_owned()),
                                Value::Number(_) if is_secret_name(k) || paired.is_some() => Value::String(MARKER.to_owned()),
                                Value::Array(_) | Value::Object(_) if is_secret_name(k) || paired.is_some() => redact_all(v),
                                other => self.value(other),
                            };
                            (self.text(k), v)
                        })
                        .collect(),
                )
            }
            other => other.clone(),
        }
    }

    /// Replaces long tokens whose characters look random, outside the allowlisted
    /// spans. Hex up to 64 digits (commit and content hashes) and lowercase names
    /// with dashes (pods, packages) are evidence and stay. `None` when nothing is
    /// replaced.
    fn redact_high_entropy(&self, text: &str) -> Option<String> {
        // `=` ends a token: `name=value` is two, and base64 padding stays behind a redacted key.
        let is_token_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '_' | '-');
        if !text.split(|c: char| !is_token_char(c)).any(|token| looks_random(token, self.entropy)) {
            return None;
        }
        let allowed: Vec<Range<usize>> = self.allowlist.iter().flat_map(|r| r.find_iter(text).map(|m| m.range())).collect();
        let mut out = String::with_capacity(text.len());
        let mut start = 0;
        let flush = |range: Range<usize>, out: &mut String| {
            let token = &text[range.clone()];
            let inside_allowed = allowed.iter().any(|a| a.start <= range.start && range.end <= a.end);
            if !inside_allowed && looks_random(token, self.entropy) {
                out.push_str(MARKER);
            } else {
                out.push_str(token);
            }
        };
        for (i, c) in text.char_indices() {
            if !is_token_char(c) {
                flush(start..i, &mut out);
                out.push(c);
                start = i + c.len_utf8();
            }
        }
        flush(start..text.len(), &mut out);
        (out != text).then_some(out)
    }
}

impl Rule {
    /// Replaces the secret group of every match, keeping the rest of the match. A
    /// value cut at the next `&name=` of a query string is followed by a search
    /// from the cut, so the parameters after it are judged too.
    fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut at = 0;
        while at <= text.len() {
            let Some(caps) = self.regex.captures_at(text, at) else { break };
            let Some(whole) = caps.get(0) else { break };
            // Past this match, or past its first character when it is empty.
            at = if whole.end() > whole.start() { whole.end() } else { whole.end() + text[whole.end()..].chars().next().map_or(1, char::len_utf8) };
            let Some(secret) = caps.get(self.secret_group) else { continue };
            let mut end = secret.end();
            let mut value = secret.as_str();
            if self.until_next_parameter
                && !value.starts_with(['"', '\''])
                && let Some(next) = next_parameter(value).filter(|next| *next > 0)
            {
                value = &value[..next];
                end = secret.start() + next;
                // The next search starts at the cut, past where this one began.
                at = end;
            }
            if self.entropy.is_some_and(|min| entropy(value.trim_matches(['"', '\''])) < min) {
                continue;
            }
            if self.allow.iter().any(|a| a.is_match(value)) {
                continue;
            }
            if secret.start() < last {
                continue;
            }
            out.push_str(&text[last..secret.start()]);
            // A quoted value keeps its quotes: `"password": "[REDACTED]"`, and
            // `\"[REDACTED]\"` inside JSON text.
            match ["\\\"", "\"", "'"].into_iter().find(|q| value.len() >= 2 * q.len() && value.starts_with(q) && value.ends_with(q)) {
                Some(quote) => {
                    out.push_str(quote);
                    out.push_str(MARKER);
                    out.push_str(quote);
                }
                None => out.push_str(MARKER),
            }
            last = end;
        }
        out.push_str(&text[last..]);
        out
    }
}

/// The words of a key: split at separators and at camel humps (`clientSecret`,
/// `DB_PASSWORD`, `db.password`, `X-Api-Key`), lowercase.
fn key_words(key: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous: Option<char> = None;
    for c in key.chars() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        } else {
            if c.is_ascii_uppercase() && previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit()) && !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            current.push(c.to_ascii_lowercase());
        }
        previous = Some(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Whether a key names a secret, so that its whole value is one. The key's last
/// word says what it holds: `db_password`, `api_token`, `clientSecret`, `SMTP_PASS`,
/// `PGPASSWORD`, `RAILS_MASTER_KEY`, `X-Api-Key`, `SECRET_KEY_BASE`, `secret_id`;
/// a whole key `pass`, `auth`, `authorization` or `cookie`. A key whose last word
/// says something about a secret is evidence: `secret_name`, `token_ttl`,
/// `password_expiry_days`, `max_tokens`, `token_bucket`, `SecretArn`.
pub fn is_secret_name(key: &str) -> bool {
    const LAST: [&str; 9] = ["password", "passwd", "passphrase", "pwd", "secret", "token", "credential", "credentials", "pass"];
    const KEYED: [&str; 10] = ["api", "access", "private", "master", "encryption", "signing", "secret", "auth", "session", "account"];
    const ALONE: [&str; 5] = ["pass", "auth", "authorization", "cookie", "apikey"];
    let words = key_words(key);
    let Some(last) = words.last() else { return false };
    let before = words.len().checked_sub(2).and_then(|i| words.get(i)).map(String::as_str);
    if words.len() == 1 {
        // One word: a whole name, or a run-on one (`PGPASSWORD`, `MYSQLPASSWORD`).
        return ALONE.contains(&last.as_str()) || LAST.iter().filter(|w| **w != "pass").any(|w| last.ends_with(w));
    }
    LAST.contains(&last.as_str())
        || (last == "key" && before.is_some_and(|b| KEYED.contains(&b)))
        || (last == "apikey")
        || (last == "base" && words.ends_with(&["secret".to_owned(), "key".to_owned(), "base".to_owned()]))
        || (last == "id" && before == Some("secret"))
}

/// Whether `value`, under `key`, is a secret: a key that names one, and a value
/// that is not empty or a plain switch (`true`). A Kubernetes Secret's name under
/// a key whose last word is `secret` (`secret="partner-api-tls"`, Prometheus'
/// convention and cert-manager's alerts; `tlsSecret: ingress-tls`) is evidence:
/// lowercase, with a dash or a dot, at most one namespace before a `/`, not hex.
fn holds_secret(key: &str, value: &str) -> bool {
    if !is_secret_name(key) || value.is_empty() || ["true", "false", "null", "none"].iter().any(|w| value.eq_ignore_ascii_case(w)) {
        return false;
    }
    let object_name = |name: &str| {
        !name.is_empty()
            && name.len() <= 253
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    };
    let names_a_secret_object = key_words(key).last().is_some_and(|w| w == "secret")
        && value.contains(['-', '.'])
        && !value.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && match value.split_once('/') {
            Some((namespace, name)) => object_name(namespace) && object_name(name),
            None => object_name(value),
        };
    !names_a_secret_object
}

/// Every string and number in `value` replaced by the marker: what sits under a
/// secret-named key, however it is nested (`{"password": ["x"]}`,
/// `{"credentials": {"user": "a", "pass": "b"}}`).
fn redact_all(value: &Value) -> Value {
    match value {
        Value::String(s) if s.is_empty() => Value::String(String::new()),
        Value::String(_) | Value::Number(_) => Value::String(MARKER.to_owned()),
        Value::Array(items) => Value::Array(items.iter().map(redact_all).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), redact_all(v))).collect()),
        other => other.clone(),
    }
}

/// Where a query-string value ends: before the next `&name=`.
fn next_parameter(value: &str) -> Option<usize> {
    value.match_indices('&').map(|(i, _)| i).find(|&i| {
        let rest = &value[i + 1..];
        let name_len = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

fn looks_random(token: &str, settings: EntropySettings) -> bool {
    if token.len() < settings.min_length {
        return false;
    }
    // Kubernetes object and package names (`payments-api-7d9f8c6b5d-x2k9q`) and
    // paths are lowercase words, digits and separators: evidence, not keys.
    if token.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | '+' | '/')) && token.contains(['-', '_', '/']) {
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
    entropy(token) >= settings.min_bits_per_char
}

fn entropy(token: &str) -> f64 {
    if token.is_empty() {
        return 0.0;
    }
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
    fn secret_names_are_told_from_names_about_secrets() {
        for name in [
            "db_password", "PGPASSWORD", "api_token", "accessToken", "SMTP_PASS", "RABBITMQ_DEFAULT_PASS", "clientSecret", "RAILS_MASTER_KEY",
            "ENCRYPTION_KEY", "SECRET_KEY_BASE", "x-api-key", "X-Api-Key", "aws_secret_access_key", "credentials", "secret_id", "pass", "auth",
            "Authorization", "cookie", "/prod/orders/db_password",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "secret_name", "secretName", "token_ttl", "password_file", "max_tokens", "alertname", "service", "bypass", "namespace",
            "password_policy", "tls_secret_ref", "kms_key_id", "token_bucket", "tokenizer", "password_expiry_days", "auth_token_ttl_seconds",
            "secret_namespace", "token_endpoint", "credentials_provider", "SecretArn", "SecretStatus", "keyspace", "passed",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn values_under_secret_names_and_in_name_value_pairs_are_redacted() {
        let r = Redactor::new(&[]).unwrap();
        let out = r.value(&serde_json::json!({
            "db_password": "Summer2024!",
            "pin_token": 123_456,
            "secretName": "db-credentials",
            "secret": "partner-api-tls",
            "Secret": "s3cr3t!",
            "tlsSecret": "payments/ingress-tls",
            "automountServiceAccountToken": "true",
            "password": ["x-1", {"old": "x-2"}],
            "credentials": {"user": "alice", "pass": "x-3"},
            "token_bucket": 42,
            "matchers": [{"name": "secret", "value": "partner-api-tls"}],
            "env": [{"name": "DB_PASSWORD", "value": "Hunter2!"}, {"name": "LOG_LEVEL", "value": "debug"}],
            "Tags": [{"Key": "api_key", "Value": "k-77!"}],
            "empty_password": "",
        }));
        assert_eq!(out["db_password"], MARKER);
        assert_eq!(out["pin_token"], MARKER);
        assert_eq!(out["secretName"], "db-credentials", "a reference to a secret is evidence");
        assert_eq!(out["secret"], "partner-api-tls", "a label `secret` names a Kubernetes Secret");
        assert_eq!(out["Secret"], MARKER);
        assert_eq!(out["tlsSecret"], "payments/ingress-tls", "a Secret's name, with its namespace");
        assert_eq!(out["automountServiceAccountToken"], "true", "a switch, not a secret");
        assert_eq!(out["password"], serde_json::json!([MARKER, {"old": MARKER}]), "everything under a secret-named key");
        assert_eq!(out["credentials"]["pass"], MARKER);
        assert_eq!(out["token_bucket"], 42);
        assert_eq!(out["matchers"][0]["value"], "partner-api-tls", "a silence's matcher on the label `secret`");
        assert_eq!(out["env"][0]["value"], MARKER);
        assert_eq!(out["env"][0]["name"], "DB_PASSWORD");
        assert_eq!(out["env"][1]["value"], "debug");
        assert_eq!(out["Tags"][0]["Value"], MARKER);
        assert_eq!(out["empty_password"], "", "nothing to hide, and the emptiness is evidence");
        let signal = arf_core::signal::Signal {
            id: "sig-1".into(),
            kind: arf_core::signal::SignalKind::Alert,
            source: "alertmanager".into(),
            status: arf_core::signal::SignalStatus::Firing,
            title: "OrdersDown".into(),
            description: String::new(),
            severity: "critical".into(),
            service: "orders".into(),
            environment: "production".into(),
            labels: [("db_password".to_owned(), "Summer2024!".to_owned()), ("service".to_owned(), "orders".to_owned())].into(),
            annotations: [("SMTP_PASS".to_owned(), "mailP4ss".to_owned())].into(),
            observed_at_ms: 0,
            fingerprint: "f".into(),
        };
        let redacted = r.signal(signal);
        assert_eq!(redacted.labels["db_password"], MARKER);
        assert_eq!(redacted.labels["service"], "orders");
        assert_eq!(redacted.annotations["SMTP_PASS"], MARKER);
    }

    #[test]
    fn a_value_as_long_as_the_marker_does_not_hide_the_next_parameter() {
        let r = Redactor::new(&[]).unwrap();
        let token = "0123456789abcdef0123456789abcdef01234567";
        let out = r.text(&format!("?user=ci&password=Summer2024&access_token={token}"));
        assert!(!out.contains("Summer2024") && !out.contains(token), "{out}");
    }

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

    /// A gitleaks-format rules file adds rules; fields ARF does not use are ignored.
    #[test]
    fn a_gitleaks_rules_file_adds_its_rules() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gitleaks.toml");
        let rules = "title = \"in-house rules\"\n\
            [[rules]]\nid = \"acme-token\"\ndescription = \"ACME internal token\"\n\
            regex = '''acme_(?:live|test)_([a-z0-9]{12})'''\nsecretGroup = 1\nkeywords = [\"acme_\"]\ntags = [\"internal\"]\n\
            [[rules]]\nid = \"path-only\"\npath = '''\\.pem$'''\n";
        std::fs::write(&file, rules).unwrap();
        let r = Redactor::with_rules(&[], Some(&file)).unwrap();
        assert!(r.rule_ids().any(|id| id == "acme-token"));
        assert_eq!(r.text("got acme_live_abcdef123456 back"), "got acme_live_[REDACTED] back");
        std::fs::write(&file, "[[rules]]\nid = \"bad\"\nregex = '''(unclosed'''\n").unwrap();
        assert!(Redactor::with_rules(&[], Some(&file)).unwrap_err().contains("rule `bad`"));
    }
}
