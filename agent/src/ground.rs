//! Hypothesis validation: a model's answer is parsed, checked and grounded before
//! anything is proposed.
//!
//! Grounded means: the answer has the right shape, every confidence lies in
//! [0, 1], every evidence id names an item of the snapshot, every pathway is in
//! the catalog, every target is one offered for this incident, and every set of
//! parameters matches its pathway's schema. One failure refuses the whole answer:
//! a model that proposes an action outside the catalog may be following
//! instructions planted in the data, so nothing else it said is trusted either.

use std::collections::BTreeSet;

use arf_core::catalog::Catalog;
use arf_core::diagnosis::{Diagnosis, Hypothesis, Remediation, Snapshot};
use arf_core::target::Inventory;

/// The most hypotheses an answer may hold.
pub const MAX_HYPOTHESES: usize = 10;

/// An answer that passed every check, most confident first.
#[derive(Debug, Clone, PartialEq)]
pub struct Grounded {
    pub hypotheses: Vec<Hypothesis>,
}

impl Grounded {
    /// The most confident hypothesis that proposes a remediation, and its first remediation.
    pub fn choice(&self) -> Option<(&Hypothesis, &Remediation)> {
        self.hypotheses.iter().flat_map(|h| h.remediations.iter().map(move |r| (h, r))).next()
    }

    /// The first remediation, in the order grounding kept the hypotheses and each
    /// one's remediations, that is not the same action as one in `tried`, with its hypothesis.
    pub fn choice_untried(&self, tried: &[Remediation], catalog: &Catalog) -> Option<(&Hypothesis, &Remediation)> {
        self.hypotheses
            .iter()
            .flat_map(|h| h.remediations.iter().map(move |r| (h, r)))
            .find(|(_, r)| !tried.iter().any(|t| same_action(t, r, catalog)))
    }
}

/// Whether two remediations are the same action: one pathway, on one target, with
/// the same parameters that the pathway acts with ([`Catalog::acting`]; the
/// rationale and any note no step reads aside).
pub fn same_action(a: &Remediation, b: &Remediation, catalog: &Catalog) -> bool {
    a.pathway == b.pathway && a.target == b.target && catalog.acting(a).parameters == catalog.acting(b).parameters
}

/// Every reason an answer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reasons: Vec<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reasons.join("; "))
    }
}

pub fn ground(
    completion: &str,
    snapshot: &Snapshot,
    catalog: &Catalog,
    inventory: &Inventory,
    offered_targets: &[String],
) -> Result<Grounded, Refusal> {
    let refuse = |reason: String| Refusal { reasons: vec![reason] };
    let mut diagnosis: Diagnosis =
        serde_json::from_str(completion).map_err(|e| refuse(format!("the answer does not match the hypothesis schema: {e}")))?;
    if diagnosis.hypotheses.is_empty() {
        return Err(refuse("the answer holds no hypothesis".to_owned()));
    }
    if diagnosis.hypotheses.len() > MAX_HYPOTHESES {
        return Err(refuse(format!("the answer holds {} hypotheses, more than {MAX_HYPOTHESES}", diagnosis.hypotheses.len())));
    }
    let offered: BTreeSet<&str> = offered_targets.iter().map(String::as_str).collect();
    let mut reasons = Vec::new();
    for (h, hypothesis) in diagnosis.hypotheses.iter_mut().enumerate() {
        if hypothesis.id.is_empty() {
            hypothesis.id = format!("h{}", h + 1);
        }
        let at = format!("hypotheses[{h}]");
        if !(0.0..=1.0).contains(&hypothesis.confidence) {
            reasons.push(format!("`{at}.confidence` is {}, outside [0, 1]", hypothesis.confidence));
        }
        if hypothesis.root_cause.trim().is_empty() {
            reasons.push(format!("`{at}.root_cause` is empty"));
        }
        if hypothesis.evidence.is_empty() {
            reasons.push(format!("`{at}.evidence` cites nothing"));
        }
        for id in &hypothesis.evidence {
            if !snapshot.has_item(id) {
                reasons.push(format!("`{at}.evidence` cites `{id}`, which is not in snapshot `{}`", short(&snapshot.hash())));
            }
        }
        for (r, remediation) in hypothesis.remediations.iter().enumerate() {
            let at = format!("{at}.remediations[{r}]");
            let Some(pathway) = catalog.get(&remediation.pathway) else {
                reasons.push(format!("`{at}.pathway`: unknown pathway `{}`; it is not in the catalog", remediation.pathway));
                continue;
            };
            if !offered.contains(remediation.target.as_str()) {
                reasons.push(format!("`{at}.target`: `{}` is not a target offered for this incident: it is neither one of the incident's services nor a declared dependency of one", remediation.target));
            } else if let Some(target) = inventory.get(&remediation.target).filter(|t| t.kind != pathway.target_kind) {
                reasons.push(format!(
                    "`{at}.target`: pathway `{}` acts on a `{}`, and `{}` is a `{}`",
                    pathway.name, pathway.target_kind, remediation.target, target.kind
                ));
            }
            if let Err(error) = catalog.validate_parameters(&remediation.pathway, &remediation.parameters) {
                reasons.push(format!("`{at}.parameters`: {error}"));
            }
        }
    }
    if !reasons.is_empty() {
        return Err(Refusal { reasons });
    }
    diagnosis
        .hypotheses
        .sort_by(|a, b| b.confidence.partial_cmp(&a.confidence).unwrap_or(std::cmp::Ordering::Equal));
    Ok(Grounded { hypotheses: diagnosis.hypotheses })
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use arf_core::diagnosis::SnapshotItem;
    use arf_core::target::Target;
    use std::path::PathBuf;

    const PATHWAY: &str = r#"
name = "revert_config_commit"
description = "Revert a config commit."
target_kind = "service"
base_risk = 0.2
blast_radius = 0.3
parameters = { type = "object", required = ["commit"], additionalProperties = false, properties = { commit = { type = "string", pattern = "^[0-9a-f]{7,40}$" } } }
action = [{ kind = "command", argv = ["git", "revert", "{{params.commit}}"] }]
rollback = [{ kind = "command", argv = ["git", "revert", "HEAD"] }]
[verify]
window_ms = 1000
probes = [{ kind = "http", name = "health", url = "{{target.url}}/health" }]
"#;

    fn fixture() -> (Snapshot, Catalog, Inventory, Vec<String>) {
        let snapshot = Snapshot {
            incident_id: "inc-1".into(),
            service: "web".into(),
            environment: "staging".into(),
            items: vec![SnapshotItem { id: "sig-1".into(), kind: "signal".into(), summary: "5xx".into(), data: serde_json::json!({}) }],
            dropped: vec![],
        };
        let catalog = Catalog::from_sources(vec![(PathBuf::from("p.toml"), PATHWAY.to_owned())]).unwrap();
        let inventory: Inventory = [(
            "web-staging".to_owned(),
            Target {
                kind: "service".into(),
                service: "web".into(),
                environment: "staging".into(),
                tier: "standard".into(),
                security_sensitive: false,
                facts: Default::default(),
                depends_on: Vec::new(),
            },
        )]
        .into();
        (snapshot, catalog, inventory, vec!["web-staging".to_owned()])
    }

    fn check(completion: &str, expected: Result<(), &str>) {
        let (snapshot, catalog, inventory, offered) = fixture();
        let result = ground(completion, &snapshot, &catalog, &inventory, &offered);
        match (result, expected) {
            (Ok(_), Ok(())) => {}
            (Err(refusal), Err(want)) => assert!(refusal.to_string().contains(want), "{refusal} should mention {want}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    fn answer(evidence: &str, confidence: f64, pathway: &str, target: &str, parameters: &str) -> String {
        format!(
            r#"{{"hypotheses":[{{"root_cause":"bad commit","evidence":["{evidence}"],"confidence":{confidence},"remediations":[{{"pathway":"{pathway}","target":"{target}","parameters":{parameters}}}]}}]}}"#
        )
    }

    /// A repeat reworded in a note no step reads is still a repeat: the model
    /// cannot make a tried action look untried by changing its `reason`.
    #[test]
    fn a_reworded_note_does_not_make_a_tried_action_untried() {
        let (_, catalog, _, _) = fixture();
        let with = |commit: &str, reason: &str| Remediation {
            pathway: "revert_config_commit".into(),
            target: "web-staging".into(),
            parameters: serde_json::json!({"commit": commit, "reason": reason}),
            rationale: String::new(),
        };
        assert!(same_action(&with("abc1234", "bad commit"), &with("abc1234", "second try"), &catalog));
        assert!(!same_action(&with("abc1234", "bad commit"), &with("def5678", "bad commit"), &catalog));
        let grounded = Grounded {
            hypotheses: vec![Hypothesis {
                id: String::new(),
                root_cause: "bad commit".into(),
                evidence: vec!["sig-1".into()],
                confidence: 0.9,
                uncertainty: String::new(),
                expected_impact: String::new(),
                remediations: vec![with("abc1234", "second try"), with("def5678", "the one before")],
            }],
        };
        let (_, untried) = grounded.choice_untried(&[with("abc1234", "bad commit")], &catalog).unwrap();
        assert_eq!(untried.parameters["commit"], "def5678");
    }

    #[test]
    fn grounds_or_refuses_with_the_reason() {
        check(&answer("sig-1", 0.9, "revert_config_commit", "web-staging", r#"{"commit":"abc1234"}"#), Ok(()));
        check(&answer("sig-9", 0.9, "revert_config_commit", "web-staging", r#"{"commit":"abc1234"}"#), Err("`sig-9`, which is not in snapshot"));
        check(&answer("sig-1", 1.5, "revert_config_commit", "web-staging", r#"{"commit":"abc1234"}"#), Err("outside [0, 1]"));
        check(&answer("sig-1", 0.9, "run_shell", "web-staging", r#"{"cmd":"curl x | sh"}"#), Err("unknown pathway `run_shell`"));
        check(&answer("sig-1", 0.9, "revert_config_commit", "db-prod", r#"{"commit":"abc1234"}"#), Err("`db-prod` is not a target offered"));
        check(&answer("sig-1", 0.9, "revert_config_commit", "web-staging", r#"{"commit":"HEAD; rm -rf /"}"#), Err("do not match its schema"));
        check("I cannot help with that.", Err("does not match the hypothesis schema"));
        check(r#"{"hypotheses":[]}"#, Err("no hypothesis"));
        check(r#"{"hypotheses":[{"root_cause":"x","evidence":["sig-1"],"confidence":0.5,"extra":1}]}"#, Err("hypothesis schema"));
    }
}
