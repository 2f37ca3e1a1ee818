//! Read-only investigation: tools the model may call before it answers.
//!
//! A diagnosis gets a [`Session`]: the tools allowed in the incident's
//! environment, the targets in its scope, and bounds on calls, time and bytes.
//! Each call is checked (a tool of the catalog, allowed here, a target in scope,
//! parameters in the tool's schema), run with the agent's own read-only
//! credentials (never the executor's), its output redacted and cut to its limit,
//! and logged as an `investigation` record before the model sees it. An answered
//! call becomes a context item (`inv-N`) that hypotheses may cite as evidence; the
//! snapshot extended with these items is logged too, and the proposal cites it.

pub mod catalog;
mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use arf_audit_client::{AuditClient, RecordKind};
use arf_core::diagnosis::{Snapshot, SnapshotItem};
use arf_core::records::{self, InvestigationRecord, InvestigationStatus};
use arf_core::target::Inventory;

use crate::incident::Incidents;
use crate::redact::Redactor;
pub use catalog::{Scope, Tool, ToolKind, Tools};

/// The most a call's arguments may be, as JSON.
const MAX_ARGUMENT_BYTES: usize = 4096;

/// `[agent.investigation]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The directory of tool catalogs (`*.toml`); without it the model investigates nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_dir: Option<PathBuf>,
    /// Tool calls per diagnosis.
    #[serde(default = "default_max_calls")]
    pub max_calls: u32,
    /// Seconds of tool time per diagnosis.
    #[serde(default = "default_max_seconds")]
    pub max_seconds: u64,
    /// Bytes of tool output per diagnosis, all calls together.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Environment → the tools allowed there (`*` for every tool); the entry `*`
    /// covers environments without their own. An environment with neither gets none.
    #[serde(default = "default_allow")]
    pub allow: BTreeMap<String, Vec<String>>,
}

fn default_max_calls() -> u32 {
    6
}

fn default_max_seconds() -> u64 {
    60
}

fn default_max_bytes() -> usize {
    32_768
}

fn default_allow() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([("*".to_owned(), vec!["*".to_owned()])])
}

impl Default for Config {
    fn default() -> Self {
        Self { tools_dir: None, max_calls: default_max_calls(), max_seconds: default_max_seconds(), max_bytes: default_max_bytes(), allow: default_allow() }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_calls > 64 || self.max_seconds == 0 || self.max_seconds > 600 || self.max_bytes == 0 || self.max_bytes > 4 << 20 {
            return Err("`agent.investigation`: `max_calls` is at most 64, `max_seconds` 1 to 600, `max_bytes` 1 to 4194304".to_owned());
        }
        Ok(())
    }
}

/// The loaded catalog and its bounds, shared by every diagnosis.
#[derive(Debug)]
pub struct Investigator {
    pub tools: Tools,
    config: Config,
    http: reqwest13::Client,
}

impl Investigator {
    pub fn new(config: Config) -> Result<Option<Self>, String> {
        config.validate()?;
        let Some(dir) = &config.tools_dir else {
            return Ok(None);
        };
        let tools = Tools::load_dir(dir)?;
        for (environment, names) in &config.allow {
            if let Some(unknown) = names.iter().find(|n| *n != "*" && tools.get(n).is_none()) {
                return Err(format!("`agent.investigation.allow.{environment}` names `{unknown}`, which no tool in `{}` is", dir.display()));
            }
        }
        // reqwest is built without a default TLS provider; install ring's once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No redirects: a redirect could leave the declared host.
        let http = reqwest13::Client::builder()
            .redirect(reqwest13::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the investigation HTTP client: {e}"))?;
        Ok(Some(Self { tools, config, http }))
    }

    /// Whether `tool` may run in `environment`.
    pub fn allowed(&self, environment: &str, tool: &str) -> bool {
        let names = self.config.allow.get(environment).or_else(|| self.config.allow.get("*"));
        names.is_some_and(|names| names.iter().any(|n| n == "*" || n == tool))
    }
}

/// A refusal's or failure's reason as logged and shown: control characters out,
/// at most 300 characters.
fn bounded_detail(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    run::cut(&clean, 300, false).0
}

/// What a diagnosis's investigation may touch.
pub struct Reach<'a> {
    pub incident_id: &'a str,
    pub service: &'a str,
    pub environment: &'a str,
    /// The snapshot the diagnosis started from.
    pub snapshot_hash: &'a str,
    /// The targets offered for the incident: the only ones a tool may look at.
    pub targets: &'a [String],
}

/// The answer a reasoner gets for one call.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The item's id when the call was answered.
    pub id: Option<String>,
    /// What to tell the model: the result as JSON, or why there is none.
    pub content: String,
}

#[derive(Debug, Default)]
struct Spent {
    calls: u32,
    bytes: usize,
    items: Vec<SnapshotItem>,
}

/// One diagnosis's investigation.
pub struct Session<'a> {
    investigator: &'a Investigator,
    reach: Reach<'a>,
    inventory: &'a Inventory,
    redactor: &'a Redactor,
    audit: &'a AuditClient,
    incidents: &'a tokio::sync::Mutex<Incidents>,
    started: Instant,
    spent: tokio::sync::Mutex<Spent>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("incident", &self.reach.incident_id).finish()
    }
}

/// How a call ended before it became a record.
enum Ended {
    Answered { output: String, output_bytes: u64, truncated: bool, target: String, summary: String },
    Refused(String),
    Failed(String),
}

impl<'a> Session<'a> {
    pub fn new(investigator: &'a Investigator, reach: Reach<'a>, inventory: &'a Inventory, redactor: &'a Redactor, audit: &'a AuditClient, incidents: &'a tokio::sync::Mutex<Incidents>) -> Self {
        Self { investigator, reach, inventory, redactor, audit, incidents, started: Instant::now(), spent: tokio::sync::Mutex::default() }
    }

    fn allowed(&self) -> impl Iterator<Item = &Tool> {
        self.investigator.tools.entries().map(|e| &e.tool).filter(|t| self.investigator.allowed(self.reach.environment, &t.name))
    }

    /// The tools this diagnosis may call, as OpenAI `tools` entries.
    pub fn functions(&self) -> Vec<Value> {
        self.allowed().map(|tool| tool.function(self.reach.targets)).collect()
    }

    /// Names, descriptions and parameters of the tools, for the prompt.
    pub fn offers(&self) -> Vec<Value> {
        self.allowed().map(|tool| json!({"name": tool.name, "description": tool.description, "parameters": tool.schema(self.reach.targets)})).collect()
    }

    /// Whether another call could still be answered.
    pub async fn can_call(&self) -> bool {
        let spent = self.spent.lock().await;
        spent.calls < self.investigator.config.max_calls && spent.bytes < self.investigator.config.max_bytes && self.started.elapsed() < Duration::from_secs(self.investigator.config.max_seconds)
    }

    /// The answered calls' items, in call order.
    pub async fn items(&self) -> Vec<SnapshotItem> {
        self.spent.lock().await.items.clone()
    }

    /// `snapshot` with the answered calls' items added, or `None` when there are none.
    pub async fn extend(&self, snapshot: &Snapshot) -> Option<Snapshot> {
        let items = self.items().await;
        if items.is_empty() {
            return None;
        }
        let mut extended = snapshot.clone();
        extended.items.extend(items);
        Some(extended)
    }

    /// Calls this diagnosis may still make.
    pub async fn calls_left(&self) -> usize {
        let spent = self.spent.lock().await;
        usize::try_from(self.investigator.config.max_calls.saturating_sub(spent.calls)).unwrap_or(0)
    }

    /// Logs, as one record, `count` calls of one answer beyond the budget, which
    /// are not run; the answer for each of them.
    pub async fn refuse_beyond_budget(&self, count: usize) -> Answer {
        let detail = format!("{count} further calls in one answer were not run: the investigation budget is spent");
        let call = {
            let mut spent = self.spent.lock().await;
            spent.calls = spent.calls.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
            spent.calls
        };
        let record = InvestigationRecord {
            snapshot_hash: self.reach.snapshot_hash.to_owned(),
            call,
            tool: String::new(),
            arguments: json!({"calls": count}),
            status: InvestigationStatus::Refused,
            detail: detail.clone(),
            item: None,
            output_bytes: 0,
            truncated: false,
            duration_ms: 0,
        };
        if let Err(error) = self.audit.append_one(self.reach.incident_id, RecordKind::Investigation, records::encode(&record)).await {
            tracing::warn!(incident_id = %self.reach.incident_id, %error, "cannot log refused investigation calls");
        }
        Answer { id: None, content: crate::prompt::escaped_json(&json!({"error": format!("refused: {detail}")})) }
    }

    /// Checks, runs and logs one call of `tool` with `arguments`.
    pub async fn call(&self, tool: &str, arguments: &Value) -> Answer {
        // Arguments are a few names and numbers: anything large is refused unread.
        let size = serde_json::to_string(arguments).map_or(usize::MAX, |t| t.len());
        let oversized = json!({"bytes": size});
        let arguments = if size > MAX_ARGUMENT_BYTES { &oversized } else { arguments };
        let started = Instant::now();
        // The call's number and the bytes left are taken under the lock, so calls at
        // once cannot overspend the budget together.
        let (call, bytes_left) = {
            let mut spent = self.spent.lock().await;
            spent.calls += 1;
            (spent.calls, self.investigator.config.max_bytes.saturating_sub(spent.bytes))
        };
        let ended = if size > MAX_ARGUMENT_BYTES {
            Ended::Refused(format!("the arguments are {size} bytes, more than {MAX_ARGUMENT_BYTES}"))
        } else {
            self.check_and_run(tool, arguments, call, bytes_left).await
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let arguments = self.redactor.value(arguments);
        let (status, detail, item, output_bytes, truncated) = match &ended {
            Ended::Answered { output, output_bytes, truncated, target, summary } => {
                let item = SnapshotItem {
                    id: format!("inv-{call}"),
                    kind: "investigation".to_owned(),
                    summary: summary.clone(),
                    data: json!({"tool": tool, "target": target, "arguments": arguments, "output": output, "truncated": truncated}),
                };
                (InvestigationStatus::Answered, String::new(), Some(item), *output_bytes, *truncated)
            }
            Ended::Refused(why) => (InvestigationStatus::Refused, bounded_detail(&self.redactor.text(why)), None, 0, false),
            Ended::Failed(why) => (InvestigationStatus::Failed, bounded_detail(&self.redactor.text(why)), None, 0, false),
        };
        let record = InvestigationRecord {
            snapshot_hash: self.reach.snapshot_hash.to_owned(),
            call,
            tool: tool.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect(),
            arguments,
            status,
            detail: detail.clone(),
            item: item.clone(),
            output_bytes,
            truncated,
            duration_ms,
        };
        let label = match status {
            InvestigationStatus::Answered => "answered",
            InvestigationStatus::Refused => "refused",
            InvestigationStatus::Failed => "failed",
        };
        arf_proto::metrics::inc("arf_agent_investigation_calls_total", "Investigation tool calls, by how they ended.", &[("status", label)]);
        // Logged before the model sees it; a result that cannot be logged is withheld.
        if let Err(error) = self.audit.append_one(self.reach.incident_id, RecordKind::Investigation, records::encode(&record)).await {
            tracing::warn!(incident_id = %self.reach.incident_id, tool = %record.tool, %error, "cannot log an investigation call; its result is withheld");
            return Answer { id: None, content: json!({"error": "the call could not be logged, so its result is withheld"}).to_string() };
        }
        match item {
            Some(item) => {
                // Escaped as the prompt escapes data: a log line cannot pass for markup or a delimiter.
                let content = crate::prompt::escaped_json(&json!({"id": item.id, "tool": tool, "target": item.data["target"], "output": item.data["output"], "truncated": truncated}));
                let id = item.id.clone();
                let mut spent = self.spent.lock().await;
                spent.bytes += item.data["output"].as_str().map_or(0, str::len);
                spent.items.push(item);
                Answer { id: Some(id), content }
            }
            None => {
                tracing::info!(incident_id = %self.reach.incident_id, tool = %record.tool, status = label, %detail, "investigation call not answered");
                Answer { id: None, content: crate::prompt::escaped_json(&json!({"error": format!("{label}: {detail}")})) }
            }
        }
    }

    async fn check_and_run(&self, tool: &str, arguments: &Value, call: u32, bytes_left: usize) -> Ended {
        let config = &self.investigator.config;
        if call > config.max_calls {
            return Ended::Refused(format!("the investigation budget is spent: at most {} calls per diagnosis", config.max_calls));
        }
        let elapsed = self.started.elapsed();
        let limit = Duration::from_secs(config.max_seconds);
        if elapsed >= limit || bytes_left == 0 {
            return Ended::Refused(format!("the investigation budget is spent: at most {} s and {} bytes per diagnosis", config.max_seconds, config.max_bytes));
        }
        let Some(entry) = self.investigator.tools.get(tool) else {
            let known: Vec<&str> = self.investigator.tools.names().filter(|n| self.investigator.allowed(self.reach.environment, n)).collect();
            let shown: String = tool.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
            return Ended::Refused(format!("no investigation tool `{shown}` (the tools are: {})", known.join(", ")));
        };
        if !self.investigator.allowed(self.reach.environment, tool) {
            return Ended::Refused(format!("tool `{tool}` is not allowed in environment `{}`", self.reach.environment));
        }
        let Some(arguments) = arguments.as_object() else {
            return Ended::Refused("the arguments must be a JSON object".to_owned());
        };
        let target_name = match entry.tool.scope {
            Scope::Target => match arguments.get("target").and_then(Value::as_str) {
                Some(name) if self.reach.targets.iter().any(|t| t == name) => Some(name.to_owned()),
                Some(_) => {
                    return Ended::Refused(format!("the target is not in this incident's scope (one of: {})", self.reach.targets.join(", ")));
                }
                None => {
                    return Ended::Refused("`target` is required: one of the offered targets".to_owned());
                }
            },
            Scope::Incident => None,
        };
        let mut parameters = arguments.clone();
        parameters.remove("target");
        let parameters = Value::Object(parameters);
        // Refusals name where, never the value: it is the model's, and may be hostile.
        if let Some(bad) = run::hostile_value(&parameters) {
            return Ended::Refused(bad);
        }
        let declared = |name: &str| entry.tool.parameters.as_ref().and_then(|s| s["properties"].get(name)).is_some();
        if let Some(unknown) = parameters.as_object().and_then(|p| p.keys().find(|k| !declared(k))) {
            let shown: String = unknown.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
            return Ended::Refused(format!("`{shown}` is not a parameter of `{tool}`"));
        }
        let problems: Vec<String> = entry
            .validator
            .iter_errors(&parameters)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("`{}` does not match the tool's schema", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect();
        if !problems.is_empty() {
            return Ended::Refused(format!("the parameters do not match the tool's schema: {}", problems.join("; ")));
        }
        let target = target_name.as_deref().and_then(|n| self.inventory.get(n).map(|t| (n, t)));
        let context = run::Context { target: target.map(|(name, t)| json!({"name": name, "service": t.service, "environment": t.environment, "kind": t.kind, "facts": t.facts})), parameters };
        let service = target.map_or(self.reach.service, |(_, t)| t.service.as_str());
        let timeout = Duration::from_secs(entry.tool.timeout_secs).min(limit.saturating_sub(elapsed));
        let limit_bytes = entry.tool.max_output_bytes.min(bytes_left);
        let ran = tokio::time::timeout(timeout, async {
            match entry.tool.kind {
                ToolKind::IncidentMemory => Ok(self.memory(service).await),
                _ => run::run(&entry.tool, &context, &self.investigator.http, limit_bytes).await,
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs_f32())));
        let output = match ran {
            Ok(output) => output,
            Err(why) => return Ended::Failed(why),
        };
        // Redacted before anything else sees it, then cut to the limit.
        let text = self.redactor.text(&String::from_utf8_lossy(&output));
        let output_bytes = u64::try_from(output.len()).unwrap_or(u64::MAX);
        let (text, truncated) = run::cut(&text, limit_bytes, output.len() > limit_bytes);
        let on = target_name.clone().unwrap_or_else(|| format!("{}/{}", self.reach.service, self.reach.environment));
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("(no output)");
        let summary = format!("`{tool}` on `{on}`: {}", run::cut(first, 200, false).0);
        Ended::Answered { output: text, output_bytes, truncated, target: on, summary }
    }

    /// `incident_memory`: past incidents of `service` in this environment and how they ended.
    async fn memory(&self, service: &str) -> Vec<u8> {
        let past: Vec<crate::incident::Summary> = {
            let incidents = self.incidents.lock().await;
            // Only incidents opened before this one: what was known when it began.
            let opened = incidents.by_id.get(self.reach.incident_id).map_or(i64::MAX, |i| i.opened_at_ms);
            let held = incidents.by_id.values().map(crate::incident::Summary::from);
            let mut past: Vec<_> = held.chain(incidents.past.iter().cloned()).filter(|s| s.id != self.reach.incident_id && s.service == service && s.environment == self.reach.environment && s.opened_at_ms <= opened).collect();
            past.sort_by_key(|s| std::cmp::Reverse(s.opened_at_ms));
            past.truncate(5);
            past
        };
        let mut lines = Vec::with_capacity(past.len());
        for summary in &past {
            match self.audit.read_incident(&summary.id).await {
                Ok(trail) => lines.push(crate::context::past_outcome(summary, &trail).summary),
                Err(error) => lines.push(format!("past incident `{}`: its trail cannot be read ({error})", summary.id)),
            }
        }
        if lines.is_empty() {
            lines.push(format!("no past incident of `{service}` in `{}` is remembered", self.reach.environment));
        }
        lines.join("\n").into_bytes()
    }
}
