//! Who is calling: identities, their roles, and how a bearer token names one.
//!
//! Every ARF service authenticates every call (except health and reflection, which
//! carry no data) to a [`Caller`]: a name and a [`Role`]. Each service then decides
//! what that role may do there. The identities come from configuration, where a
//! token is stored only as its SHA-256 (`token_sha256`, what `arf token create`
//! writes) or read from a file at start and hashed (`token_file`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A caller's role. Not `non_exhaustive`: a new role must be placed in every
/// `match` that grants something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The agent process: it proposes and nothing else.
    Agent,
    /// The governor process: it authorizes and dispatches.
    Governor,
    /// The executor process: it acts on authorized decisions.
    Executor,
    /// The audit log process.
    Audit,
    /// The engineer on call.
    Oncall,
    /// The security team.
    Security,
    /// Platform administrators.
    Admin,
    /// Incident tooling and dashboards: reads, and sends signals.
    Tooling,
    /// Reads the audit log and nothing else.
    Auditor,
    /// A sender of signals (an Alertmanager, a scanner in CI): sends signals and nothing else.
    Source,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Self::Agent,
        Self::Governor,
        Self::Executor,
        Self::Audit,
        Self::Oncall,
        Self::Security,
        Self::Admin,
        Self::Tooling,
        Self::Auditor,
        Self::Source,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Governor => "governor",
            Self::Executor => "executor",
            Self::Audit => "audit",
            Self::Oncall => "oncall",
            Self::Security => "security",
            Self::Admin => "admin",
            Self::Tooling => "tooling",
            Self::Auditor => "auditor",
            Self::Source => "source",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// `` `agent`, `governor`, … `` for error messages.
    pub fn expected() -> String {
        Self::ALL.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
    }

    /// People, who may approve or reject; processes never may.
    pub fn is_human(self) -> bool {
        match self {
            Self::Oncall | Self::Security | Self::Admin => true,
            Self::Agent | Self::Governor | Self::Executor | Self::Audit | Self::Tooling | Self::Auditor | Self::Source => false,
        }
    }

    /// One of ARF's own processes. Under mutual TLS these authenticate by their
    /// certificate, never by a token.
    pub fn is_service(self) -> bool {
        match self {
            Self::Agent | Self::Governor | Self::Executor | Self::Audit => true,
            Self::Oncall | Self::Security | Self::Admin | Self::Tooling | Self::Auditor | Self::Source => false,
        }
    }

    /// Only the agent may ask for a decision.
    pub fn may_propose(self) -> bool {
        match self {
            Self::Agent => true,
            Self::Governor
            | Self::Executor
            | Self::Audit
            | Self::Oncall
            | Self::Security
            | Self::Admin
            | Self::Tooling
            | Self::Auditor
            | Self::Source => false,
        }
    }

    /// Who may send signals to the agent: sources, tooling and people.
    pub fn may_submit_signals(self) -> bool {
        match self {
            Self::Source | Self::Tooling | Self::Oncall | Self::Security | Self::Admin => true,
            Self::Agent | Self::Governor | Self::Executor | Self::Audit | Self::Auditor => false,
        }
    }

    /// Who may read incidents, decisions and executions: people, tooling, auditors
    /// and the services that need to. A source only sends.
    pub fn may_read(self) -> bool {
        match self {
            Self::Agent
            | Self::Governor
            | Self::Executor
            | Self::Audit
            | Self::Oncall
            | Self::Security
            | Self::Admin
            | Self::Tooling
            | Self::Auditor => true,
            Self::Source => false,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller, as the authentication layer hands it to handlers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` ({})", self.name, self.role)
    }
}

/// One configured identity: a name, a role, and its token, stored hashed
/// (`token_sha256`) or read from a file at start (`token_file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub name: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The hex SHA-256 of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// For a sender of signals: the services whose signals it may send (any when
    /// empty). The agent refuses a signal about another service, so a stolen
    /// source token cannot reach beyond what that source reports on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// For a sender of signals: the environments its signals may be about (any
    /// when empty). A staging Alertmanager's token then cannot open a production
    /// incident by labelling its alert `env="production"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
}

/// Why a list of identities was refused; `field` names the entry (`identities[2].role`).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("`{field}`: {message}")]
pub struct IdentityError {
    pub field: String,
    pub message: String,
}

/// Token hash → caller.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    by_token: BTreeMap<String, Caller>,
}

impl Identities {
    /// Checks and loads `list`: names unique and non-empty, roles known, exactly one
    /// token source each, tokens long enough and not shared. `field` prefixes errors.
    pub fn load(list: &[Identity], field: &str) -> Result<Self, IdentityError> {
        let mut names = BTreeSet::new();
        let mut by_token = BTreeMap::new();
        for (i, identity) in list.iter().enumerate() {
            let invalid = |what: &str, message: String| IdentityError { field: format!("{field}[{i}].{what}"), message };
            if identity.name.trim().is_empty() || identity.name.chars().any(char::is_control) {
                return Err(invalid("name", "must be a non-empty name without control characters".to_owned()));
            }
            if !names.insert(identity.name.as_str()) {
                return Err(invalid("name", format!("identity `{}` is listed twice", identity.name)));
            }
            let role = Role::parse(&identity.role)
                .ok_or_else(|| invalid("role", format!("unknown role `{}`; expected one of {}", identity.role, Role::expected())))?;
            // A service's name is the name its certificate gives it: nobody else may carry it.
            if let Some(service) = Role::parse(&identity.name).filter(|r| r.is_service() && *r != role) {
                return Err(invalid("name", format!("`{}` is the name of the {service} service; only an identity of role `{service}` may carry it", identity.name)));
            }
            let source = if identity.token_file.is_some() { "token_file" } else { "token_sha256" };
            let hash = match (&identity.token_file, &identity.token_sha256) {
                (Some(file), None) => {
                    crate::keys::token_hash(&crate::keys::load_token(file).map_err(|e| invalid("token_file", e.to_string()))?)
                }
                (None, Some(hash)) => {
                    let hash = hash.trim().to_ascii_lowercase();
                    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(invalid("token_sha256", "must be 64 hex digits (the SHA-256 of the token)".to_owned()));
                    }
                    hash
                }
                _ => return Err(invalid("token_file", "give exactly one of `token_file` and `token_sha256`".to_owned())),
            };
            let caller = Caller { name: identity.name.clone(), role };
            if let Some(other) = by_token.insert(hash, caller) {
                return Err(invalid(source, format!("identities `{}` and `{}` share a token", other.name, identity.name)));
            }
        }
        Ok(Self { by_token })
    }

    /// Adds one caller by its token hash (for services that keep their own token lists).
    pub fn insert(&mut self, token_hash: String, caller: Caller) {
        self.by_token.insert(token_hash, caller);
    }

    /// Keeps only the callers for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&Caller) -> bool) {
        self.by_token.retain(|_, caller| keep(caller));
    }

    /// The caller a bearer token names, if any.
    pub fn by_token(&self, token: &str) -> Option<&Caller> {
        self.by_token.get(&crate::keys::token_hash(token))
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// Every caller, in no particular order.
    pub fn callers(&self) -> impl Iterator<Item = &Caller> {
        self.by_token.values()
    }
}

/// A new random token (64 hex digits) and its hash.
pub fn new_token() -> Result<(String, String), crate::keys::KeyError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| crate::keys::KeyError::Entropy)?;
    let token = hex::encode(bytes);
    let hash = crate::keys::token_hash(&token);
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, role: &str, hash: &str) -> Identity {
        Identity { name: name.into(), role: role.into(), token_file: None, token_sha256: Some(hash.into()), services: Vec::new(), environments: Vec::new() }
    }

    #[test]
    fn a_hashed_token_names_its_caller_and_nothing_else_does() {
        let (token, hash) = new_token().unwrap();
        let identities = Identities::load(&[identity("alice", "oncall", &hash)], "identities").unwrap();
        assert_eq!(identities.by_token(&token), Some(&Caller { name: "alice".into(), role: Role::Oncall }));
        assert_eq!(identities.by_token(&hash), None, "the stored hash is not itself a token");
        assert_eq!(identities.by_token(""), None);
    }

    #[test]
    fn refuses_what_would_make_an_identity_ambiguous() {
        let (_, hash) = new_token().unwrap();
        let cases = [
            (vec![identity("a", "wizard", &hash)], "identities[0].role"),
            (vec![identity("", "oncall", &hash)], "identities[0].name"),
            (vec![identity("a\x1b[2K", "oncall", &hash)], "identities[0].name"),
            (vec![identity("executor", "oncall", &hash)], "identities[0].name"),
            (vec![identity("a", "oncall", "abc")], "identities[0].token_sha256"),
            (vec![identity("a", "oncall", &hash), identity("a", "admin", &new_token().unwrap().1)], "identities[1].name"),
            (vec![identity("a", "oncall", &hash), identity("b", "admin", &hash)], "identities[1].token_sha256"),
            (
                vec![Identity { name: "a".into(), role: "oncall".into(), token_file: None, token_sha256: None, services: Vec::new(), environments: Vec::new() }],
                "identities[0].token_file",
            ),
        ];
        for (list, field) in cases {
            assert_eq!(Identities::load(&list, "identities").unwrap_err().field, field);
        }
    }

    #[test]
    fn roles_round_trip_and_grant_as_documented() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert!(!Role::Source.may_read());
        assert!(Role::Source.may_submit_signals());
        assert!(!Role::Agent.may_submit_signals());
        assert!(Role::Agent.may_propose() && !Role::Admin.may_propose());
        assert!(Role::Oncall.is_human() && !Role::Tooling.is_human());
    }
}
