//! Who is calling: roles, and what each role may do.

use serde::{Deserialize, Serialize};

/// A caller's role, as configured. Not `non_exhaustive`: a new role must be placed
/// in every `match` that grants something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The agent process: it proposes and nothing else.
    Agent,
    /// The engineer on call.
    Oncall,
    /// The security team.
    Security,
    /// Platform administrators.
    Admin,
    /// Incident tooling and dashboards: reads only.
    Tooling,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Oncall => "oncall",
            Self::Security => "security",
            Self::Admin => "admin",
            Self::Tooling => "tooling",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "agent" => Some(Self::Agent),
            "oncall" => Some(Self::Oncall),
            "security" => Some(Self::Security),
            "admin" => Some(Self::Admin),
            "tooling" => Some(Self::Tooling),
            _ => None,
        }
    }

    /// People, who may approve or reject; processes never may.
    pub fn is_human(self) -> bool {
        match self {
            Self::Oncall | Self::Security | Self::Admin => true,
            Self::Agent | Self::Tooling => false,
        }
    }

    /// Only the agent may ask for a decision.
    pub fn may_propose(self) -> bool {
        match self {
            Self::Agent => true,
            Self::Oncall | Self::Security | Self::Admin | Self::Tooling => false,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}
