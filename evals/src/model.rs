//! A model on loopback that speaks the OpenAI chat-completions protocol and
//! answers from the corpus's scripted responses, with faults on a schedule.
//!
//! `--chaos` points the real `openai` reasoner at it: some calls hang past the
//! client's timeout, some answer text that is not JSON, some fail with a 500.
//! Tests use it as the live endpoint of `arf eval run --reasoner openai`, so no
//! test ever needs the internet. It reads the prompt it is sent the way a model
//! would: the context items between the untrusted-data delimiters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Serialize;
use serde_json::{Value, json};

use crate::corpus::Incident;

/// Which calls fail, by their 1-based call number (`0` is never).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Faults {
    /// Every n-th call hangs for `hang_ms` before answering.
    pub hang_every: u64,
    pub hang_ms: u64,
    /// Every n-th call answers prose that is not the JSON asked for.
    pub garbage_every: u64,
    /// Every n-th call fails with HTTP 500.
    pub error_every: u64,
}

/// What the model server did, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelStats {
    pub calls: u64,
    pub hangs: u64,
    pub garbage: u64,
    pub errors: u64,
    /// Calls no scripted response matched (answered with no hypothesis).
    pub unmatched: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    hangs: AtomicU64,
    garbage: AtomicU64,
    errors: AtomicU64,
    unmatched: AtomicU64,
}

/// One answer the server can give: the labels it matches and its completion template.
#[derive(Debug, Clone)]
pub struct Script {
    pub match_labels: BTreeMap<String, String>,
    pub completion: String,
}

#[derive(Debug)]
struct Model {
    scripts: Vec<Script>,
    faults: Faults,
    counters: Counters,
}

/// A running model server; the handle keeps it serving.
#[derive(Debug)]
pub struct ModelServer {
    pub addr: SocketAddr,
    model: Arc<Model>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ModelServer {
    /// `http://addr/v1`, what the `openai` reasoner's `base_url` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stats(&self) -> ModelStats {
        let c = &self.model.counters;
        ModelStats {
            calls: c.calls.load(Ordering::SeqCst),
            hangs: c.hangs.load(Ordering::SeqCst),
            garbage: c.garbage.load(Ordering::SeqCst),
            errors: c.errors.load(Ordering::SeqCst),
            unmatched: c.unmatched.load(Ordering::SeqCst),
        }
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The scripted answers of a corpus.
pub fn scripts(incidents: &[Incident]) -> Vec<Script> {
    incidents
        .iter()
        .flat_map(|i| i.scripted.iter().map(|s| Script { match_labels: s.match_labels.clone(), completion: s.completion.clone() }))
        .collect()
}

/// Serves the model on an ephemeral loopback port.
pub async fn spawn(scripts: Vec<Script>, faults: Faults) -> std::io::Result<ModelServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let model = Arc::new(Model { scripts, faults, counters: Counters::default() });
    let app = axum::Router::new().route("/v1/chat/completions", post(completions)).with_state(Arc::clone(&model));
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(ModelServer { addr, model, task })
}

/// The context items between the untrusted-data delimiters, one JSON object per line.
fn items(prompt: &str) -> Vec<Value> {
    let start = prompt.find("<untrusted-data>").map_or(0, |i| i + "<untrusted-data>".len());
    let end = prompt.find("</untrusted-data>").unwrap_or(prompt.len());
    prompt.get(start..end).unwrap_or_default().lines().filter_map(|line| serde_json::from_str(line.trim()).ok()).collect()
}

/// `{{ signals[N].id }}` and `{{ changes[N].id }}`, the only template forms the corpus uses.
fn template_id() -> Option<&'static regex::Regex> {
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\{\{\s*(signals|changes)\[(\d+)\]\.id\s*\}\}").ok()).as_ref()
}

/// The answer a model that had learned the corpus would give to `prompt`, in the
/// wire format the `openai` reasoner asks for (parameters as a JSON string), or
/// `None` when no scripted response matches its signals.
pub fn answer(scripts: &[Script], prompt: &str) -> Option<String> {
    let items = items(prompt);
    let of_kind = |kind: &str| items.iter().filter(|i| i["kind"] == kind).cloned().collect::<Vec<_>>();
    let (signals, changes) = (of_kind("signal"), of_kind("change"));
    let script = scripts.iter().find(|script| {
        signals.iter().any(|s| script.match_labels.iter().all(|(k, v)| s["data"]["labels"][k].as_str() == Some(v.as_str())))
    })?;
    let text = template_id()?.replace_all(&script.completion, |caps: &regex::Captures<'_>| {
        let list = if &caps[1] == "signals" { &signals } else { &changes };
        let n: usize = caps[2].parse().unwrap_or(0);
        list.get(n).and_then(|i| i["id"].as_str()).unwrap_or_default().to_owned()
    });
    let scripted: Value = serde_json::from_str(&text).ok()?;
    let string = |v: &Value, key: &str| Value::String(v[key].as_str().unwrap_or_default().to_owned());
    let hypotheses: Vec<Value> = scripted["hypotheses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let remediations: Vec<Value> = h["remediations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    json!({"pathway": string(r, "pathway"), "target": string(r, "target"),
                           "parameters_json": r.get("parameters").cloned().unwrap_or(json!({})).to_string(), "rationale": string(r, "rationale")})
                })
                .collect();
            json!({"root_cause": string(h, "root_cause"), "evidence": h["evidence"].as_array().cloned().unwrap_or_default(),
                   "confidence": h["confidence"].as_f64().unwrap_or(0.5), "uncertainty": string(h, "uncertainty"),
                   "expected_impact": string(h, "expected_impact"), "remediations": remediations})
        })
        .collect();
    Some(json!({"hypotheses": hypotheses}).to_string())
}

async fn completions(State(model): State<Arc<Model>>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let c = &model.counters;
    let n = c.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let every = |k: u64| k > 0 && n % k == 0;
    let faults = model.faults;
    if every(faults.error_every) {
        c.errors.fetch_add(1, Ordering::SeqCst);
        let error = json!({"error": {"message": "chaos: the model server is overloaded", "type": "server_error", "param": null, "code": null}});
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(error));
    }
    if every(faults.hang_every) {
        c.hangs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(faults.hang_ms)).await;
    }
    // The first user message is the diagnosis prompt; later ones ask for repairs.
    let prompt = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    let content = if every(faults.garbage_every) {
        c.garbage.fetch_add(1, Ordering::SeqCst);
        "Sure! The root cause is probably the deployment. {hypotheses: [root_cause => rollback".to_owned()
    } else {
        answer(&model.scripts, prompt).unwrap_or_else(|| {
            c.unmatched.fetch_add(1, Ordering::SeqCst);
            json!({"hypotheses": []}).to_string()
        })
    };
    let usage = json!({"prompt_tokens": prompt.len() / 4, "completion_tokens": content.len() / 4, "total_tokens": (prompt.len() + content.len()) / 4});
    (
        StatusCode::OK,
        Json(json!({
            "id": format!("chatcmpl-eval-{n}"), "object": "chat.completion", "created": 1_760_000_000, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_the_script_whose_labels_match_with_this_runs_ids() {
        let scripts = vec![Script {
            match_labels: BTreeMap::from([("alertname".to_owned(), "HighErrorRate".to_owned())]),
            completion: r#"{"hypotheses":[{"root_cause":"bad commit","evidence":["{{ signals[0].id }}","{{ changes[0].id }}"],"confidence":0.8,
                "remediations":[{"pathway":"revert_config_commit","target":"cart","parameters":{"commit":"abc"}}]}]}"#
                .to_owned(),
        }];
        let prompt = "x\n<untrusted-data>\n{\"id\":\"chg-1\",\"kind\":\"change\",\"data\":{}}\n{\"id\":\"sig-9\",\"kind\":\"signal\",\"data\":{\"labels\":{\"alertname\":\"HighErrorRate\"}}}\n</untrusted-data>\n";
        let answer: Value = serde_json::from_str(&answer(&scripts, prompt).unwrap()).unwrap();
        let top = &answer["hypotheses"][0];
        assert_eq!(top["evidence"], json!(["sig-9", "chg-1"]));
        assert_eq!(top["remediations"][0]["parameters_json"], "{\"commit\":\"abc\"}");
        assert_eq!(top["uncertainty"], "");
        assert!(super::answer(&scripts, "<untrusted-data>\n</untrusted-data>").is_none());
    }
}
