//! The agent's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use arf_core::target::Inventory;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonerKind {
    Scripted,
    Rules,
    Openai,
    /// A seeded synthetic model over the scripted answers, for evaluations.
    Noisy,
}

/// The `noisy` reasoner's parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoisyConfig {
    #[serde(default)]
    pub seed: u64,
    /// The chance the answer is the scripted (right) one, in [0, 1].
    pub accuracy: f64,
    /// Added to the confidence the model reports; positive is overconfident.
    #[serde(default)]
    pub overconfidence: f64,
}

/// Which API dialect the endpoint speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI and every server that copies its API: vLLM, Ollama, llama.cpp's server, LiteLLM.
    #[default]
    Openai,
    /// Azure OpenAI: `base_url` is the deployment URL, with `api_version`.
    Azure,
}

/// How to ask for structured output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredOutput {
    /// `response_format: json_schema` (strict), falling back to `json_object` when the server rejects it.
    #[default]
    JsonSchema,
    /// `response_format: json_object`, with the schema in the prompt.
    JsonObject,
}

/// What to do when the model cannot be reached (after retries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Escalate the incident to a human with the reason.
    #[default]
    Escalate,
    /// Diagnose with the `rules` reasoner (needs `runbooks_dir`).
    Rules,
}

/// An OpenAI-compatible chat-completions endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// For example `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1` (Ollama), `http://127.0.0.1:8000/v1` (vLLM).
    pub base_url: String,
    pub model: String,
    /// The name of the environment variable that holds the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub provider: Provider,
    /// Azure only.
    #[serde(default)]
    pub api_version: Option<String>,
    /// A bound on one model call, retries included.
    #[serde(default = "default_openai_timeout")]
    pub timeout_secs: u64,
    /// Retries on 429, 5xx and connection errors, honouring `Retry-After`.
    #[serde(default = "default_openai_retries")]
    pub max_retries: usize,
    #[serde(default)]
    pub temperature: f32,
    #[serde(default = "default_openai_max_tokens")]
    pub max_tokens: u32,
    /// How many times a refused answer is sent back with its errors for repair.
    #[serde(default = "default_openai_repairs")]
    pub max_repairs: u32,
    #[serde(default)]
    pub structured_output: StructuredOutput,
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

fn default_openai_timeout() -> u64 {
    60
}

fn default_openai_retries() -> usize {
    3
}

fn default_openai_max_tokens() -> u32 {
    2048
}

fn default_openai_repairs() -> u32 {
    2
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Webhook ingest over HTTP.
    #[serde(default = "default_webhook_listen")]
    pub webhook_listen: SocketAddr,
    /// The audit log's address; several, separated by commas, for audit front-ends
    /// that serve one log (`audit.postgres`): calls go to the next when one does not answer.
    #[serde(default = "default_audit_addr")]
    pub audit_addr: String,
    pub audit_token_file: PathBuf,
    #[serde(default = "default_governor_addr")]
    pub governor_addr: String,
    pub governor_token_file: PathBuf,
    /// How long a proposal is offered again while the governor is unreachable or
    /// still rebuilding (it answers a repeated proposal with its decision), before
    /// the incident is escalated.
    #[serde(default = "default_governor_retry_secs")]
    pub governor_retry_secs: u64,
    pub catalog_dir: PathBuf,
    pub reasoner: ReasonerKind,
    /// Scripted responses, for `reasoner = "scripted"`.
    #[serde(default)]
    pub scripted_dir: Option<PathBuf>,
    /// Runbook rules, for `reasoner = "rules"` (and the fallback of `openai`).
    #[serde(default)]
    pub runbooks_dir: Option<PathBuf>,
    /// The model endpoint, for `reasoner = "openai"`.
    #[serde(default)]
    pub openai: Option<OpenAiConfig>,
    /// The synthetic model, for `reasoner = "noisy"` (which also needs `scripted_dir`).
    #[serde(default)]
    pub noisy: Option<NoisyConfig>,
    /// Signals about one service join its open incident for this long.
    #[serde(default = "default_group_window")]
    pub group_window_secs: u64,
    /// How long a new incident gathers signals before its diagnosis takes the
    /// snapshot (Alertmanager's `group_wait`). 0, the default, diagnoses at once:
    /// what arrived in the same request or ingest batch is gathered all the same,
    /// and Alertmanager has already waited its own `group_wait`.
    #[serde(default)]
    pub group_wait_secs: u64,
    /// How long an incident that is done (resolved, escalated, or proposed and past
    /// the grouping window) stays in memory after its last change. It is then read
    /// from the log when asked for; incident memory keeps a summary of it.
    #[serde(default = "default_retain_incidents")]
    pub retain_incidents_secs: u64,
    /// Unfinished work that a restart or a takeover finds (a diagnosis, a logged
    /// proposal, the next attempt after a refusal or a rollback) is resumed only if
    /// its incident changed within this long; older work goes to a person, since
    /// its signals may no longer hold.
    #[serde(default = "default_resume_within")]
    pub resume_within_secs: u64,
    /// Changes this long before an incident opened are context for it.
    #[serde(default = "default_change_lookback")]
    pub change_lookback_secs: u64,
    #[serde(default = "default_max_snapshot_items")]
    pub max_snapshot_items: usize,
    /// The snapshot's share of the prompt, in estimated tokens.
    #[serde(default = "default_max_snapshot_tokens")]
    pub max_snapshot_tokens: usize,
    /// A bound on diagnoses per incident.
    #[serde(default = "default_max_diagnoses")]
    pub max_diagnoses_per_incident: u32,
    /// A bound on model calls per incident, repairs included.
    #[serde(default = "default_max_model_calls")]
    pub max_model_calls_per_incident: u32,
    /// Actions tried per incident. Above 1, after an action fails verification and
    /// is rolled back, the agent proposes the diagnosis's next grounded hypothesis
    /// (a different action) as a new decision; policy sees it as a later attempt.
    #[serde(default = "default_max_attempts")]
    pub max_attempts_per_incident: u32,
    /// Read-only investigation tools the model may call before it answers.
    #[serde(default)]
    pub investigation: crate::investigate::Config,
    /// Where the agent keeps its state snapshot for restarts (`agent/src/snapshot.rs`);
    /// without it, a restart folds the whole log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Run as one of several agent replicas that arbitrate grouping and diagnoses
    /// through this PostgreSQL database (migrated with `arf db migrate`); every
    /// replica appends to one log (`audit.postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<arf_pg::Settings>,
    /// This replica's name in that database; each replica needs its own (default `agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// How long a replica's lease on the incidents it diagnoses lasts without
    /// renewal; after it lapses, another replica takes them over (default 10).
    #[serde(default = "arf_pg::lease::default_lease_secs")]
    pub lease_secs: u64,
    /// A new state snapshot is folded once the log has grown this many records past the last.
    #[serde(default = "default_snapshot_every_records")]
    pub snapshot_every_records: u64,
    /// How often (seconds) the agent looks whether a new snapshot is due.
    #[serde(default = "default_snapshot_check_secs")]
    pub snapshot_check_secs: u64,
    /// Extra redaction patterns (regular expressions).
    #[serde(default)]
    pub redact_patterns: Vec<String>,
    /// More redaction rules, in the format of `agent/src/redact/rules.toml` (a
    /// subset of gitleaks': a gitleaks configuration's rules load as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact_rules_file: Option<PathBuf>,
    #[serde(default)]
    pub targets: Inventory,
    /// Who may call the agent, over gRPC and on the webhook endpoint, and as what:
    /// signal sources (`source`), tooling and people send signals; tooling, people
    /// and auditors read incidents. With none, every call is refused.
    #[serde(default)]
    pub identities: Vec<arf_core::identity::Identity>,
    /// Webhook senders that sign each body with a shared secret instead of sending a token.
    #[serde(default)]
    pub webhook_hmac: Vec<HmacSource>,
    /// Mutual TLS: the CA of every peer, and this service's certificate and key. The
    /// webhook port serves HTTPS with the same certificate (senders need not present one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<arf_core::tls::TlsFiles>,
    /// Plain text instead, confined to loopback addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_loopback_only: bool,
    /// The HTTP endpoint for Prometheus (`/metrics`, with a reader's token) and
    /// probes (`/healthz`, `/readyz`); off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

/// What a limited sender may send signals about; an empty set limits nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderScope {
    pub services: std::collections::BTreeSet<String>,
    pub environments: std::collections::BTreeSet<String>,
}

impl SenderScope {
    /// The first of `signals` outside this scope: its index, what it is about, and
    /// what is allowed instead, each written for an error message.
    pub fn first_outside(&self, signals: &[arf_core::signal::Signal]) -> Option<(usize, String, String)> {
        let names = |set: &std::collections::BTreeSet<String>| set.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
        signals.iter().enumerate().find_map(|(index, signal)| {
            if !self.services.is_empty() && !self.services.contains(&signal.service) {
                Some((index, format!("`{}`", signal.service), names(&self.services)))
            } else if !self.environments.is_empty() && !self.environments.contains(&signal.environment) {
                Some((index, format!("the environment `{}`", signal.environment), format!("the environments {}", names(&self.environments))))
            } else {
                None
            }
        })
    }
}

/// A signing sender, with its secret.
pub type Signer = (arf_core::identity::Caller, Vec<u8>);

/// A webhook sender that signs: `X-Hub-Signature-256: sha256=HEX`, the HMAC-SHA256
/// under the secret of `TIMESTAMP.BODY`, with `X-ARF-Timestamp: TIMESTAMP` (Unix
/// seconds). A signature is accepted once, within five minutes of its timestamp.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacSource {
    /// The identity signals from it are accepted as (role `source`).
    pub name: String,
    /// The file holding the shared secret (at least 32 characters).
    pub secret_file: PathBuf,
    /// The services whose signals it may send (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// The environments its signals may be about (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
}

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7401))
}

pub fn default_webhook_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7480))
}

fn default_audit_addr() -> String {
    "127.0.0.1:7400".to_owned()
}

fn default_governor_retry_secs() -> u64 {
    30
}

fn default_governor_addr() -> String {
    "127.0.0.1:7402".to_owned()
}

fn default_group_window() -> u64 {
    1800
}

fn default_retain_incidents() -> u64 {
    3600
}

fn default_resume_within() -> u64 {
    3600
}

fn default_change_lookback() -> u64 {
    7200
}

fn default_snapshot_every_records() -> u64 {
    50_000
}

fn default_snapshot_check_secs() -> u64 {
    60
}

fn default_max_snapshot_items() -> usize {
    50
}

fn default_max_snapshot_tokens() -> usize {
    6000
}

fn default_max_diagnoses() -> u32 {
    3
}

fn default_max_attempts() -> u32 {
    1
}

fn default_max_model_calls() -> u32 {
    6
}


impl Config {
    pub fn validate(&self) -> Result<(), String> {
        arf_core::target::check_inventory(&self.targets)?;
        self.investigation.validate()?;
        if self.snapshot_every_records == 0 || self.snapshot_check_secs == 0 {
            return Err("`agent.snapshot_every_records` and `agent.snapshot_check_secs` must be at least 1".to_owned());
        }
        if self.lease_secs == 0 {
            return Err("`agent.lease_secs` must be at least 1".to_owned());
        }
        if let Some(postgres) = &self.postgres {
            postgres.validate().map_err(|e| format!("`agent.postgres`: {e}"))?;
        }
        if let Some(dir) = &self.investigation.tools_dir {
            crate::investigate::Tools::load_dir(dir).map_err(|e| format!("`agent.investigation.tools_dir`: {e}"))?;
        }
        match self.reasoner {
            ReasonerKind::Scripted if self.scripted_dir.is_none() => {
                return Err("`agent.scripted_dir` is required when `agent.reasoner = \"scripted\"`".to_owned());
            }
            ReasonerKind::Noisy if self.scripted_dir.is_none() || self.noisy.is_none() => {
                return Err("`agent.reasoner = \"noisy\"` needs `agent.scripted_dir` and `[agent.noisy]`".to_owned());
            }
            ReasonerKind::Rules if self.runbooks_dir.is_none() => {
                return Err("`agent.runbooks_dir` is required when `agent.reasoner = \"rules\"`".to_owned());
            }
            ReasonerKind::Openai => {
                let Some(openai) = &self.openai else {
                    return Err("`agent.openai` is required when `agent.reasoner = \"openai\"`".to_owned());
                };
                if openai.on_unavailable == OnUnavailable::Rules && self.runbooks_dir.is_none() {
                    return Err("`agent.openai.on_unavailable = \"rules\"` needs `agent.runbooks_dir`".to_owned());
                }
                if openai.model.trim().is_empty() {
                    return Err("`agent.openai.model` must not be empty".to_owned());
                }
                if !(openai.base_url.starts_with("http://") || openai.base_url.starts_with("https://")) {
                    return Err(format!("`agent.openai.base_url` must be an http(s) URL, got `{}`", openai.base_url));
                }
                if let Some(name) = &openai.api_key_env
                    && std::env::var(name).map(|v| v.is_empty()).unwrap_or(true)
                {
                    return Err(format!("`agent.openai.api_key_env` names `{name}`, which is not set"));
                }
                if openai.provider == Provider::Azure && openai.api_version.is_none() {
                    return Err("`agent.openai.api_version` is required for Azure".to_owned());
                }
                if openai.timeout_secs == 0 {
                    return Err("`agent.openai.timeout_secs` must be positive".to_owned());
                }
            }
            _ => {}
        }
        if self.max_model_calls_per_incident == 0 {
            return Err("`agent.max_model_calls_per_incident` must be positive".to_owned());
        }
        if self.max_snapshot_items == 0 {
            return Err("`agent.max_snapshot_items` must be positive".to_owned());
        }
        if self.max_diagnoses_per_incident == 0 {
            return Err("`agent.max_diagnoses_per_incident` must be positive".to_owned());
        }
        if !(1..=5).contains(&self.max_attempts_per_incident) {
            return Err("`agent.max_attempts_per_incident` must be between 1 and 5".to_owned());
        }
        arf_core::keys::load_token(&self.audit_token_file).map_err(|e| format!("`agent.audit_token_file`: {e}"))?;
        arf_core::keys::load_token(&self.governor_token_file).map_err(|e| format!("`agent.governor_token_file`: {e}"))?;
        self.callers()?;
        self.transport()?;
        Ok(())
    }

    /// The senders limited to some services or environments: identity name → what it may send signals about.
    pub fn sender_scopes(&self) -> std::collections::BTreeMap<String, SenderScope> {
        let identities = self.identities.iter().map(|i| (&i.name, &i.services, &i.environments));
        let signers = self.webhook_hmac.iter().map(|s| (&s.name, &s.services, &s.environments));
        identities
            .chain(signers)
            .filter(|(_, services, environments)| !services.is_empty() || !environments.is_empty())
            .map(|(name, services, environments)| {
                (name.clone(), SenderScope { services: services.iter().cloned().collect(), environments: environments.iter().cloned().collect() })
            })
            .collect()
    }

    /// Mutual TLS, or plain text on loopback when the configuration asks for it.
    pub fn transport(&self) -> Result<arf_core::tls::Transport, String> {
        let peers: Vec<&str> = arf_core::net::addresses(&self.audit_addr).chain(arf_core::net::addresses(&self.governor_addr)).collect();
        let listening: Vec<SocketAddr> = [self.listen, self.webhook_listen].into_iter().chain(self.metrics_listen).collect();
        arf_core::tls::transport("agent", self.mtls.as_ref(), self.insecure_loopback_only, &listening, &peers)
    }

    /// Who may call the agent: the configured identities, and each HMAC sender as a `source`.
    pub fn callers(&self) -> Result<(arf_core::identity::Identities, Vec<Signer>), String> {
        let identities = arf_core::identity::Identities::load(&self.identities, "agent.identities").map_err(|e| e.to_string())?;
        let mut signers = Vec::new();
        for (i, source) in self.webhook_hmac.iter().enumerate() {
            if source.name.trim().is_empty() || identities.callers().any(|c| c.name == source.name) {
                return Err(format!("`agent.webhook_hmac[{i}].name`: must be a name no other identity has"));
            }
            let secret = arf_core::keys::load_token(&source.secret_file)
                .map_err(|e| format!("`agent.webhook_hmac[{i}].secret_file`: {e}"))?;
            let caller = arf_core::identity::Caller { name: source.name.clone(), role: arf_core::identity::Role::Source };
            signers.push((caller, secret.into_bytes()));
        }
        Ok((identities, signers))
    }
}

/// Every `*.toml` file in `dir` (`what` names them in errors), in name order, parsed as `T`.
pub fn toml_files<T: serde::de::DeserializeOwned>(dir: &std::path::Path, what: &str) -> Result<Vec<(PathBuf, T)>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {what} in `{}`: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("`{}`: {e}", file.display()))?;
            let parsed = toml::from_str(&text).map_err(|e| format!("`{}`: {e}", file.display()))?;
            Ok((file, parsed))
        })
        .collect()
}
