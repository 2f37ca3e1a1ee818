//! The `rules` reasoner: a deterministic runbook matcher, the baseline that
//! evaluations compare against and the fallback when the model is down.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Completion, DiagnosisRequest, Reasoner, ReasonerError, matches_labels, template_context};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Labels some firing signal must carry.
    pub when: BTreeMap<String, String>,
    /// The rule applies only when a change event preceded the incident.
    #[serde(default)]
    pub requires_change: bool,
    pub root_cause: String,
    pub confidence: f64,
    #[serde(default)]
    pub expected_impact: String,
    /// The pathway to propose; none means "escalate to a human".
    #[serde(default)]
    pub pathway: Option<String>,
    /// Parameter values; strings are minijinja templates over the snapshot.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunbookFile {
    rule: Vec<Rule>,
}

#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    pub fn load_dir(dir: &Path) -> Result<Self, String> {
        let mut rules = Vec::new();
        for (_, parsed) in crate::config::toml_files::<RunbookFile>(dir, "runbooks")? {
            rules.extend(parsed.rule);
        }
        Ok(Self { rules })
    }
}

impl Reasoner for Rules {
    fn name(&self) -> &str {
        "rules"
    }

    fn diagnose<'a>(&'a self, request: &'a DiagnosisRequest<'a>) -> BoxFuture<'a, Result<Completion, ReasonerError>> {
        Box::pin(async move {
            let started = Instant::now();
            let snapshot = request.snapshot;
            let has_change = snapshot.items.iter().any(|i| i.kind == "change");
            let rule = self
                .rules
                .iter()
                .find(|r| matches_labels(snapshot, &r.when) && (!r.requires_change || has_change))
                .ok_or(ReasonerError::NoRule)?;
            let evidence: Vec<&str> = snapshot
                .items
                .iter()
                .filter(|i| i.kind == "signal" || (rule.requires_change && i.kind == "change"))
                .map(|i| i.id.as_str())
                .take(5)
                .collect();
            let env = minijinja::Environment::new();
            let context = template_context(request);
            let mut parameters = serde_json::Map::new();
            for (name, template) in &rule.parameters {
                let value = env
                    .render_str(template, context.clone())
                    .map_err(|e| ReasonerError::Template(format!("rule `{}` parameter `{name}`: {e}", rule.name)))?;
                parameters.insert(name.clone(), Value::String(value));
            }
            let remediations = match &rule.pathway {
                Some(pathway) => vec![json!({
                    "pathway": pathway,
                    "target": request.targets.first().cloned().unwrap_or_default(),
                    "parameters": parameters,
                    "rationale": format!("runbook rule `{}`", rule.name),
                })],
                None => vec![],
            };
            let answer = json!({"hypotheses": [{
                "root_cause": rule.root_cause,
                "evidence": evidence,
                "confidence": rule.confidence,
                "uncertainty": "a runbook rule matched on labels; it does not weigh other evidence",
                "expected_impact": rule.expected_impact,
                "remediations": remediations,
            }]});
            Ok(Completion {
                text: answer.to_string(),
                model: format!("rules:{}", rule.name),
                served_by: None,
                prompt_tokens: 0,
                completion_tokens: 0,
                latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                problems: Vec::new(),
                json_mode: false,
                injected_mistake: None,
                tool_rounds: 0,
            })
        })
    }
}
