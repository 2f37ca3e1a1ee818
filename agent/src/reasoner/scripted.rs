//! The `scripted` reasoner: answers written down in advance, per kind of incident.
//!
//! A script file holds `[[response]]` entries, each with the labels it `match`es
//! and a `completion`: the JSON text a model would have answered, as a minijinja
//! template over the snapshot (so it can cite the ids and commits of this run).
//! These answers are scripted, not recorded: no model produced them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Completion, DiagnosisRequest, Reasoner, ReasonerError, matches_labels, template_context};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedResponse {
    pub name: String,
    #[serde(rename = "match")]
    pub match_labels: BTreeMap<String, String>,
    pub completion: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    response: Vec<ScriptedResponse>,
}

#[derive(Debug)]
pub struct Scripted {
    responses: Vec<ScriptedResponse>,
}

impl Scripted {
    pub fn new(responses: Vec<ScriptedResponse>) -> Self {
        Self { responses }
    }

    /// Loads every `*.toml` in `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<Self, String> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read scripted responses in `{}`: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut responses = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("`{}`: {e}", file.display()))?;
            let parsed: ScriptFile = toml::from_str(&text).map_err(|e| format!("`{}`: {e}", file.display()))?;
            responses.extend(parsed.response);
        }
        Ok(Self { responses })
    }
}

impl Reasoner for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn diagnose<'a>(&'a self, request: &'a DiagnosisRequest<'a>) -> BoxFuture<'a, Result<Completion, ReasonerError>> {
        Box::pin(async move {
            let started = Instant::now();
            let response = self
                .responses
                .iter()
                .find(|r| matches_labels(request.snapshot, &r.match_labels))
                .ok_or(ReasonerError::NoScript)?;
            let env = minijinja::Environment::new();
            let text = env
                .render_str(&response.completion, template_context(request))
                .map_err(|e| ReasonerError::Template(format!("scripted response `{}`: {e}", response.name)))?;
            Ok(Completion {
                text,
                model: format!("scripted:{}", response.name),
                prompt_tokens: 0,
                completion_tokens: 0,
                latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                problems: Vec::new(),
                json_mode: false,
                injected_mistake: None,
            })
        })
    }
}
