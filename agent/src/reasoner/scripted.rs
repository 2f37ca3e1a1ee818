//! The `scripted` reasoner: answers written down in advance, per kind of incident.
//!
//! A script file holds `[[response]]` entries, each with the labels it `match`es
//! and a `completion`: the JSON text a model would have answered, as a minijinja
//! template over the snapshot (so it can cite the ids and commits of this run).
//! These answers are scripted, not recorded: no model produced them.
//!
//! A response may `investigate` first: each step calls a tool of the
//! investigation catalog with arguments (templates too), through the same checks,
//! bounds and log as a model's calls. The completion then sees each answer as
//! `tools.NAME` (`id`, `output`, or `error`; the last answered call of each tool), and may branch on what it says, as a
//! model reading the result would. Without investigation configured, `tools` is empty.

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
    /// Tool calls to make before answering, in order.
    #[serde(default)]
    pub investigate: Vec<Step>,
    /// Answers only a snapshot holding exactly this many `attempt` items: the
    /// diagnosis after that many earlier actions of the incident (a recorded
    /// cassette sets it, so a diagnosis after a refusal replays its own answer).
    #[serde(default)]
    pub attempts: Option<usize>,
}

/// One scripted tool call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub tool: String,
    /// The call's arguments; strings are templates over the snapshot (`{{ target }}`).
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
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
        let mut responses = Vec::new();
        for (_, parsed) in crate::config::toml_files::<ScriptFile>(dir, "scripted responses")? {
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
                .find(|r| {
                    matches_labels(request.snapshot, &r.match_labels)
                        && r.attempts.is_none_or(|n| request.snapshot.items.iter().filter(|i| i.kind == "attempt").count() == n)
                })
                .ok_or(ReasonerError::NoScript)?;
            let env = minijinja::Environment::new();
            let mut tools = serde_json::Map::new();
            if let Some(session) = request.investigation {
                for step in &response.investigate {
                    let mut arguments = serde_json::Map::new();
                    for (name, value) in &step.arguments {
                        let value = match value {
                            serde_json::Value::String(template) => serde_json::Value::String(
                                env.render_str(template, template_context(request))
                                    .map_err(|e| ReasonerError::Template(format!("scripted response `{}`, tool `{}`: {e}", response.name, step.tool)))?,
                            ),
                            other => other.clone(),
                        };
                        arguments.insert(name.clone(), value);
                    }
                    let answer = session.call(&step.tool, &serde_json::Value::Object(arguments)).await;
                    let answer: serde_json::Value = serde_json::from_str(&answer.content).unwrap_or(serde_json::Value::String(answer.content));
                    // `tools.NAME` is the tool's last answered call, else its last call.
                    if answer.get("id").is_some() || !tools.contains_key(&step.tool) {
                        tools.insert(step.tool.clone(), answer);
                    }
                }
            }
            let context = minijinja::context! { tools => tools, ..template_context(request) };
            let text = env
                .render_str(&response.completion, context)
                .map_err(|e| ReasonerError::Template(format!("scripted response `{}`: {e}", response.name)))?;
            Ok(Completion {
                text,
                model: format!("scripted:{}", response.name),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::Prompt;
    use arf_core::diagnosis::{Snapshot, SnapshotItem};

    fn item(id: &str, kind: &str) -> SnapshotItem {
        SnapshotItem { id: id.into(), kind: kind.into(), summary: String::new(), data: serde_json::json!({"labels": {"alertname": "A"}}) }
    }

    fn response(name: &str, attempts: Option<usize>) -> ScriptedResponse {
        ScriptedResponse {
            name: name.into(),
            match_labels: [("alertname".to_owned(), "A".to_owned())].into(),
            completion: format!("answer {name}"),
            investigate: Vec::new(),
            attempts,
        }
    }

    /// A response bound to a number of earlier attempts answers only a snapshot
    /// holding that many `attempt` items; one without the bound answers any.
    #[tokio::test]
    async fn a_response_bound_to_attempts_answers_only_that_diagnosis() {
        async fn answer(scripted: Scripted, items: Vec<SnapshotItem>) -> Result<String, ReasonerError> {
            let prompt = Prompt { id: String::new(), hash: String::new(), system: String::new(), user: String::new() };
            let snapshot = Snapshot { incident_id: "inc-1".into(), service: "web".into(), environment: "prod".into(), items, dropped: vec![] };
            let request = DiagnosisRequest { snapshot: &snapshot, prompt: &prompt, targets: &[], pathways: &[], repairs: &[], investigation: None, model_calls_left: 1 };
            scripted.diagnose(&request).await.map(|c| c.text)
        }
        let bound = || Scripted::new(vec![response("first", Some(0)), response("after", Some(1))]);
        assert_eq!(answer(bound(), vec![item("sig-1", "signal")]).await.unwrap(), "answer first");
        assert_eq!(answer(bound(), vec![item("attempt-1", "attempt"), item("sig-1", "signal")]).await.unwrap(), "answer after");
        let two = vec![item("attempt-1", "attempt"), item("attempt-2", "attempt"), item("sig-1", "signal")];
        assert!(matches!(answer(bound(), two.clone()).await, Err(ReasonerError::NoScript)));
        assert_eq!(answer(Scripted::new(vec![response("any", None)]), two).await.unwrap(), "answer any");
    }
}
