//! The target inventory: what a pathway may act on, and the facts the executor needs.
//!
//! A model names a target only by name. The environment, tier and facts (URLs,
//! repository paths) come from this reviewed inventory, never from the model or
//! the signal.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The kind of target, matched against a pathway's `target_kind`.
    #[serde(default = "default_kind")]
    pub kind: String,
    pub service: String,
    pub environment: String,
    /// The service tier: `critical`, `standard`, `best_effort`.
    #[serde(default = "default_tier")]
    pub tier: String,
    /// Touches identity, secrets or network exposure.
    #[serde(default)]
    pub security_sensitive: bool,
    /// Facts that pathway templates read as `{{target.NAME}}`.
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    /// Targets this one depends on (by name), such as the database behind an API:
    /// an incident of this target's service may propose actions on them too, which
    /// the default policy then sends to a person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

fn default_kind() -> String {
    "service".to_owned()
}

fn default_tier() -> String {
    "standard".to_owned()
}

/// Target name to target.
pub type Inventory = BTreeMap<String, Target>;

/// Checks what serde cannot: every `depends_on` names another target of the inventory.
pub fn check_inventory(inventory: &Inventory) -> Result<(), String> {
    for (name, target) in inventory {
        for dependency in &target.depends_on {
            if dependency == name {
                return Err(format!("`targets.{name}.depends_on` names the target itself"));
            }
            let Some(depended) = inventory.get(dependency) else {
                return Err(format!("`targets.{name}.depends_on` names `{dependency}`, which is not in the inventory"));
            };
            // An incident in one environment never reaches into another through a dependency.
            if depended.environment != target.environment {
                return Err(format!(
                    "`targets.{name}.depends_on` names `{dependency}` in environment `{}`, but `{name}` is in `{}`: a dependency is in the same environment",
                    depended.environment, target.environment
                ));
            }
        }
    }
    Ok(())
}

/// How a target relates to an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// One of the incident's own services, in one of its environments.
    IncidentService,
    /// A declared dependency (`depends_on`) of a target of the incident's services.
    Dependency { of: Vec<String> },
    /// Neither: the incident gives no authority to act on it.
    OutOfScope,
}

impl Relation {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::IncidentService => "incident_service",
            Self::Dependency { .. } => "dependency",
            Self::OutOfScope => "out_of_scope",
        }
    }

    pub fn in_scope(&self) -> bool {
        !matches!(self, Self::OutOfScope)
    }
}

/// The relation of target `name` to an incident whose signals came from `services`
/// in `environments`. A target is the incident's own when both its service and its
/// environment are the incident's; the same service in another environment is out of
/// scope (a staging alert gives no authority over production).
pub fn relation(inventory: &Inventory, services: &BTreeSet<String>, environments: &BTreeSet<String>, name: &str) -> Relation {
    let own = |t: &Target| services.contains(&t.service) && environments.contains(&t.environment);
    let Some(target) = inventory.get(name) else { return Relation::OutOfScope };
    if own(target) {
        return Relation::IncidentService;
    }
    let of: Vec<String> = inventory
        .iter()
        .filter(|(_, t)| own(t) && t.environment == target.environment && t.depends_on.iter().any(|d| d == name))
        .map(|(n, _)| n.clone())
        .collect();
    if of.is_empty() { Relation::OutOfScope } else { Relation::Dependency { of } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(service: &str, environment: &str, depends_on: &[&str]) -> Target {
        Target {
            kind: default_kind(),
            service: service.into(),
            environment: environment.into(),
            tier: default_tier(),
            security_sensitive: false,
            facts: BTreeMap::new(),
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    #[test]
    fn scope_is_the_incidents_services_and_their_declared_dependencies() {
        let inventory: Inventory = [
            ("orders-api-prod".to_owned(), target("orders-api", "production", &["orders-db-prod"])),
            ("orders-db-prod".to_owned(), target("orders-db", "production", &[])),
            ("orders-api-stag".to_owned(), target("orders-api", "staging", &[])),
            ("payments-prod".to_owned(), target("payments", "production", &[])),
        ]
        .into();
        assert_eq!(check_inventory(&inventory), Ok(()));
        let services = BTreeSet::from(["orders-api".to_owned()]);
        let production = BTreeSet::from(["production".to_owned()]);
        let check = |name: &str| relation(&inventory, &services, &production, name);
        assert_eq!(check("orders-api-prod"), Relation::IncidentService);
        assert_eq!(check("orders-db-prod"), Relation::Dependency { of: vec!["orders-api-prod".into()] });
        assert_eq!(check("orders-api-stag"), Relation::OutOfScope, "same service, other environment");
        assert_eq!(check("payments-prod"), Relation::OutOfScope);
        assert_eq!(check("nowhere"), Relation::OutOfScope);
        // Dependencies do not chain backwards: the database's incident may not act on the API.
        let db = BTreeSet::from(["orders-db".to_owned()]);
        assert_eq!(relation(&inventory, &db, &production, "orders-api-prod"), Relation::OutOfScope);

        let mut broken = inventory.clone();
        broken.insert("x".into(), target("x", "production", &["missing"]));
        assert!(check_inventory(&broken).unwrap_err().contains("`missing`"));
        // A dependency in another environment is refused, and gives no scope even if declared.
        let mut across = inventory.clone();
        across.insert("api-stag".into(), target("orders-api", "staging", &["orders-db-prod"]));
        assert!(check_inventory(&across).unwrap_err().contains("same environment"));
        let staging = BTreeSet::from(["staging".to_owned()]);
        assert_eq!(relation(&across, &services, &staging, "orders-db-prod"), Relation::OutOfScope);
    }
}
