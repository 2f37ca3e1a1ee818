//! The `Reasoner` trait and its implementations.
//!
//! A reasoner turns a prompt and its snapshot into a completion: JSON text that
//! should hold a [`arf_core::diagnosis::Diagnosis`]. Whatever it returns is
//! untrusted and goes through [`crate::ground`] before anyone acts on it.

pub mod noisy;
pub mod openai;
pub mod rules;
pub mod scripted;

use futures::future::BoxFuture;
use serde_json::Value;
use thiserror::Error;

use arf_core::diagnosis::Snapshot;

use crate::prompt::Prompt;

/// An earlier answer that was refused, and why: sent back to the model for repair.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub completion: String,
    pub reasons: Vec<String>,
}

/// What a reasoner is given.
#[derive(Debug)]
pub struct DiagnosisRequest<'a> {
    pub snapshot: &'a Snapshot,
    pub prompt: &'a Prompt,
    /// Target names offered to the model.
    pub targets: &'a [String],
    pub pathways: &'a [Value],
    /// Earlier refused answers in this diagnosis, oldest first.
    pub repairs: &'a [Attempt],
    /// The read-only tools the reasoner may call before answering, when configured.
    pub investigation: Option<&'a crate::investigate::Session<'a>>,
    /// Model requests the incident may still make beyond this one (for tool calls).
    pub model_calls_left: u32,
}

/// What a reasoner answered, with what the log needs to reproduce it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    /// The model as the deployment configured it, which the governor calibrates the
    /// stated confidence by: never a name the endpoint answers with, which whoever
    /// runs the endpoint (or sits between) could change to shed a poor record.
    pub model: String,
    /// The model name the endpoint answered with, when it differs from [`Self::model`]
    /// (shown to people, never calibrated by).
    pub served_by: Option<String>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub latency_ms: u64,
    /// Problems found before grounding (schema violations); non-empty means refused.
    pub problems: Vec<String>,
    /// The answer was asked for in JSON mode, not with a JSON Schema.
    pub json_mode: bool,
    /// The `noisy` reasoner's ground truth: the mistake it made on purpose, for the
    /// evaluation harness. Kept out of `model`, which the governor calibrates by: a
    /// model name that said which answers were wrong would leak the truth to policy.
    pub injected_mistake: Option<String>,
    /// Model requests beyond the first, made to call investigation tools.
    pub tool_rounds: u32,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReasonerError {
    #[error("no scripted response matches this incident")]
    NoScript,
    #[error("no runbook rule matches this incident")]
    NoRule,
    #[error("the model is unavailable: {0}")]
    Unavailable(String),
    #[error("cannot build the answer: {0}")]
    Template(String),
    #[error("the model refused to answer: {0}")]
    Refused(String),
}

pub trait Reasoner: Send + Sync {
    /// `scripted`, `rules`, `openai`, ...
    fn name(&self) -> &str;
    /// How many refused answers may be sent back for repair; 0 for reasoners that
    /// would answer the same again.
    fn repairs(&self) -> u32 {
        0
    }
    fn diagnose<'a>(&'a self, request: &'a DiagnosisRequest<'a>) -> BoxFuture<'a, Result<Completion, ReasonerError>>;
}

/// The values scripted answers and runbook parameters may use: the snapshot, its
/// signal and change items, and the first offered target.
pub(crate) fn template_context(request: &DiagnosisRequest<'_>) -> minijinja::Value {
    let signals: Vec<_> = request.snapshot.items.iter().filter(|i| i.kind == "signal").collect();
    let changes: Vec<_> = request.snapshot.items.iter().filter(|i| i.kind == "change").collect();
    let attempts: Vec<_> = request.snapshot.items.iter().filter(|i| i.kind == "attempt").collect();
    minijinja::context! {
        snapshot => request.snapshot,
        signals => signals,
        changes => changes,
        attempts => attempts,
        target => request.targets.first().cloned().unwrap_or_default(),
    }
}

/// Whether some firing signal in the snapshot carries every label in `labels`.
pub(crate) fn matches_labels(snapshot: &Snapshot, labels: &std::collections::BTreeMap<String, String>) -> bool {
    snapshot.items.iter().filter(|i| i.kind == "signal").any(|item| {
        labels.iter().all(|(name, want)| {
            item.data.get("labels").and_then(|l| l.get(name)).and_then(Value::as_str) == Some(want.as_str())
        })
    })
}
