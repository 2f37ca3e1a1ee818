//! Placeholder substitution for pathway templates: `{{params.NAME}}`,
//! `{{target.NAME}}` and `{{decision.id}}`.
//!
//! It substitutes whole values into one argv element or one URL at a time and
//! never builds a shell string, so a parameter can never become a second argument
//! or a command.

use std::collections::BTreeMap;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("unknown placeholder `{{{{{0}}}}}`")]
    UnknownPlaceholder(String),
    #[error("unclosed placeholder in `{0}`")]
    Unclosed(String),
}

/// Values that placeholders may name, as `namespace.name` → value.
#[derive(Debug, Default, Clone)]
pub struct Values {
    values: BTreeMap<String, String>,
}

impl Values {
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Fills `template`, passing each substituted value through `encode` (identity for
/// argv, percent-encoding for URL paths).
pub fn render(template: &str, values: &Values, encode: impl Fn(&str) -> String) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(TemplateError::Unclosed(template.to_owned()));
        };
        let key = after[..end].trim();
        let value = values
            .get(key)
            .ok_or_else(|| TemplateError::UnknownPlaceholder(key.to_owned()))?;
        out.push_str(&encode(value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        let mut v = Values::default();
        v.insert("params.commit", "abc123");
        v.insert("params.name", "a b/c");
        v
    }

    #[test]
    fn substitutes_whole_values() {
        let out = render("revert {{params.commit}}", &values(), str::to_owned).unwrap();
        assert_eq!(out, "revert abc123");
    }

    #[test]
    fn percent_encodes_when_asked() {
        let out = render("/x/{{ params.name }}", &values(), percent_encode).unwrap();
        assert_eq!(out, "/x/a%20b%2Fc");
    }

    #[test]
    fn unknown_and_unclosed_are_errors() {
        assert_eq!(
            render("{{params.nope}}", &values(), str::to_owned),
            Err(TemplateError::UnknownPlaceholder("params.nope".into()))
        );
        assert!(matches!(render("{{params", &values(), str::to_owned), Err(TemplateError::Unclosed(_))));
    }
}
