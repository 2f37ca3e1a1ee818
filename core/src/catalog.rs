//! The pathway catalog: named, reviewed, parameterized remediations.
//!
//! A pathway is one TOML file in the catalog directory. The agent offers pathways
//! to the model, the governor reads their risk metadata, and the executor runs
//! them; each loads the catalog itself, and the governor signs the digest of the
//! definition it judged so the executor can refuse a definition that changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::canonical;

/// One step of an action or a rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Runs a program with an argv template; never a shell string.
    Command {
        argv: Vec<String>,
        /// Environment variables passed through from the executor's own environment;
        /// everything else is cleared.
        #[serde(default)]
        env_allow: Vec<String>,
        /// Environment variables set for the command; values are templates and may
        /// name the pathway's secrets (`{{secret.NAME}}`), the only place besides
        /// HTTP headers where a secret may go.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        #[serde(default)]
        cwd: Option<String>,
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
    /// Sends one HTTP request and expects a status.
    Http {
        #[serde(default = "default_method")]
        method: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: Option<Value>,
        #[serde(default = "default_status")]
        expect_status: u16,
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
    /// A GitOps change to a repository, committed with the decision id as an
    /// `ARF-Decision` trailer: structured edits, a templated patch, a revert of a
    /// named commit, or a revert of the commit this decision made (the usual rollback).
    /// Exactly one of `edits`, `patch`, `revert` and `revert_decision` is given.
    Git {
        /// The working tree (a path template, usually `{{target.repo}}`).
        repo: String,
        /// The branch that must be checked out; the step refuses to act on any other.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        edits: Vec<Edit>,
        /// A unified diff to apply with `git apply --index` (a template). Placeholders
        /// may go only on a hunk's context, added or removed lines, and a value
        /// substituted into it must be one line, so the files it touches and the
        /// shape of its hunks are fixed when the pathway is reviewed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        patch: Option<String>,
        /// A commit to revert (a template, usually `{{params.commit}}`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revert: Option<String>,
        /// Revert the commit whose `ARF-Decision` trailer names this decision.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        revert_decision: bool,
        /// The commit's subject line (a template); a default names the pathway.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// A remote to push to; the step refuses to act when the remote branch has
        /// moved away from the local one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        push: Option<String>,
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
}

/// One structured edit of a YAML, TOML or JSON file in a repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// The file, relative to the repository root; it must stay inside it.
    pub file: String,
    /// The file's format; by default it follows the extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<EditFormat>,
    /// Where the value goes: keys separated by `.`, list indices as `[N]`
    /// (`spec.template.spec.containers[0].image`).
    pub path: String,
    /// The new value, a template.
    pub value: String,
    /// How the rendered value is typed in the file.
    #[serde(default, rename = "type")]
    pub value_type: ValueType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EditFormat {
    Yaml,
    Toml,
    Json,
}

impl EditFormat {
    /// The format a file name implies.
    pub fn from_file(file: &str) -> Option<Self> {
        let ext = file.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase())?;
        match ext.as_str() {
            "yaml" | "yml" => Some(Self::Yaml),
            "toml" => Some(Self::Toml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// The type of an edited value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
}

impl ValueType {
    /// Parses a rendered value into a JSON value of this type.
    pub fn parse(self, text: &str) -> Result<Value, String> {
        let fail = || format!("`{text}` is not a {}", self.as_str());
        match self {
            Self::String => Ok(Value::String(text.to_owned())),
            Self::Integer => text.trim().parse::<i64>().map(Value::from).map_err(|_| fail()),
            Self::Number => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(fail),
            Self::Boolean => text.trim().parse::<bool>().map(Value::Bool).map_err(|_| fail()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
        }
    }
}

/// How a Prometheus probe compares each sample with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Comparison {
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    LessOrEqual,
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = ">=")]
    GreaterOrEqual,
    #[serde(rename = "==")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
}

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Less => value < threshold,
            Self::LessOrEqual => value <= threshold,
            Self::Greater => value > threshold,
            Self::GreaterOrEqual => value >= threshold,
            #[expect(clippy::float_cmp, reason = "an exact comparison is what `==` asks for")]
            Self::Equal => value == threshold,
            #[expect(clippy::float_cmp, reason = "an exact comparison is what `!=` asks for")]
            Self::NotEqual => value != threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
            Self::Equal => "==",
            Self::NotEqual => "!=",
        }
    }
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_status() -> u16 {
    200
}

/// A check of the target's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Probe {
    Http {
        name: String,
        url: String,
        #[serde(default = "default_status")]
        expect_status: u16,
        #[serde(default)]
        body_contains: Option<String>,
        #[serde(default)]
        max_latency_ms: Option<u64>,
    },
    Command {
        name: String,
        argv: Vec<String>,
        #[serde(default)]
        expect_exit: i32,
        #[serde(default)]
        output_contains: Option<String>,
    },
    /// A PromQL instant query through Prometheus' HTTP API; every sample of the
    /// answer must satisfy `value <comparison> threshold`.
    Prometheus {
        name: String,
        /// The Prometheus base URL (a template, usually `{{target.prometheus}}`).
        url: String,
        /// The PromQL expression (a template; parameters go in as they are, so
        /// constrain them in the parameter schema).
        query: String,
        comparison: Comparison,
        threshold: f64,
        /// Whether an empty answer passes; by default it fails, since a query that
        /// matches nothing proves nothing.
        #[serde(default)]
        pass_if_empty: bool,
    },
}

impl Probe {
    pub fn name(&self) -> &str {
        match self {
            Self::Http { name, .. } | Self::Command { name, .. } | Self::Prometheus { name, .. } => name,
        }
    }
}

/// How a pathway proves it worked: probes sampled over a window, like canary analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// Wait this long after the action before the first sample.
    #[serde(default)]
    pub delay_ms: u64,
    /// Keep sampling for this long.
    pub window_ms: u64,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Stop early and fail once this many samples have failed. Fewer are
    /// tolerated, unless the last sample is one of them.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    pub probes: Vec<Probe>,
}

fn default_interval() -> u64 {
    500
}

fn default_max_failures() -> u32 {
    1
}

/// A reviewed remediation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pathway {
    pub name: String,
    /// What the model reads when choosing a pathway.
    pub description: String,
    pub target_kind: String,
    /// A JSON Schema for the parameters (an object schema).
    pub parameters: Value,
    /// Inherent risk in [0, 1].
    pub base_risk: f64,
    /// Share of the target's replicas or resources touched, in [0, 1].
    pub blast_radius: f64,
    /// Set when there is no rollback; policy treats such pathways as high risk.
    #[serde(default)]
    pub irreversible: bool,
    #[serde(default)]
    pub security_sensitive: bool,
    /// A bound on the whole action.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Steps that must succeed, changing nothing, before the action may run: a dry
    /// run of the action (`kubectl ... --dry-run=server`, an API's validation
    /// endpoint) or a read of the target's state. When one fails, the action does
    /// not run and the execution ends `refused`, with what the check answered.
    /// Reviewed like the action: ARF cannot tell a read from a write, so a step
    /// here must be one that changes nothing. `git` steps, which commit, are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub precheck: Vec<Step>,
    pub action: Vec<Step>,
    pub verify: Verification,
    #[serde(default)]
    pub rollback: Vec<Step>,
    /// How to tell the rollback worked; when absent, the rollback's own steps succeeding is the check.
    #[serde(default)]
    pub rollback_verify: Option<Verification>,
    /// The secrets this pathway's steps may read as `{{secret.NAME}}`, in HTTP
    /// headers and command `env` only. The executor reads each from its own
    /// environment (`ARF_SECRET_NAME`) or its secrets directory; a runner never
    /// sees a secret its pathway does not name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

fn default_timeout() -> u64 {
    60
}

impl Pathway {
    pub fn reversible(&self) -> bool {
        !self.irreversible
    }

    /// The content hash of the definition, which the governor signs.
    pub fn digest(&self) -> String {
        canonical::content_hash(self).unwrap_or_default()
    }

    /// What the model is offered: the name, description, target kind and parameter schema.
    pub fn offer(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "target_kind": self.target_kind,
            "parameters": self.parameters,
            "reversible": self.reversible(),
        })
    }
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error("cannot read catalog directory `{path}`: {source}")]
    ReadDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read pathway file `{path}`: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("`{file}`: {}{message}", pathway.as_ref().map(|p| format!("pathway `{p}`: ")).unwrap_or_default())]
    Parse { file: PathBuf, pathway: Option<String>, message: String },
    #[error("`{file}`: pathway `{pathway}`: field `{field}`: {message}")]
    Invalid { file: PathBuf, pathway: String, field: String, message: String },
    #[error("pathway `{pathway}` is defined twice, in `{first}` and `{second}`")]
    Duplicate { pathway: String, first: PathBuf, second: PathBuf },
    #[error("catalog directory `{0}` holds no pathways")]
    Empty(PathBuf),
}

/// Why a set of parameters was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParameterError {
    #[error("unknown pathway `{0}`")]
    UnknownPathway(String),
    #[error("parameters for `{pathway}` do not match its schema: {}", errors.join("; "))]
    Schema { pathway: String, errors: Vec<String> },
}

struct Entry {
    pathway: Pathway,
    file: PathBuf,
    digest: String,
    validator: jsonschema::Validator,
}

/// The JSON Schema of a pathway file (TOML maps onto it one to one), generated
/// from these types; `docs/pathways.md` publishes it.
pub fn pathway_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Pathway)).unwrap_or(Value::Null)
}

/// Parses one pathway file. The error names the line and the field; the
/// pathway's name, when the file has one, says which entry of the catalog is wrong.
fn parse(file: &Path, text: &str) -> Result<Pathway, CatalogError> {
    let yaml = file.extension().is_some_and(|ext| ext == "yaml" || ext == "yml");
    let parsed = if yaml {
        serde_norway::from_str::<Pathway>(text).map_err(|e| e.to_string())
    } else {
        toml::from_str::<Pathway>(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|message| {
        let name = if yaml {
            serde_norway::from_str::<serde_json::Value>(text).ok().and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
        } else {
            toml::from_str::<toml::Table>(text).ok().and_then(|t| t.get("name").and_then(toml::Value::as_str).map(str::to_owned))
        };
        CatalogError::Parse { file: file.to_owned(), pathway: name, message: message.trim().to_owned() }
    })
}

/// A loaded, validated catalog.
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("pathways", &self.entries.keys().collect::<Vec<_>>()).finish()
    }
}

impl Catalog {
    /// Loads every `*.toml` in `dir`, validating each, and fails on the first bad file.
    pub fn load_dir(dir: &Path) -> Result<Self, CatalogError> {
        let read = std::fs::read_dir(dir).map_err(|source| CatalogError::ReadDir { path: dir.to_owned(), source })?;
        let mut files: Vec<PathBuf> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "toml" || ext == "yaml" || ext == "yml"))
            .collect();
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|source| CatalogError::ReadFile { path: file.clone(), source })?;
            sources.push((file, text));
        }
        if sources.is_empty() {
            return Err(CatalogError::Empty(dir.to_owned()));
        }
        Self::from_sources(sources)
    }

    /// Builds a catalog from `(file name, text)` pairs: YAML for a `.yaml` or `.yml`
    /// file, TOML otherwise. Both map onto the same types and the same schema.
    pub fn from_sources(sources: Vec<(PathBuf, String)>) -> Result<Self, CatalogError> {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for (file, text) in sources {
            let pathway = parse(&file, &text)?;
            let validator = validate(&file, &pathway)?;
            if let Some(existing) = entries.get(&pathway.name) {
                return Err(CatalogError::Duplicate {
                    pathway: pathway.name.clone(),
                    first: existing.file.clone(),
                    second: file,
                });
            }
            let digest = pathway.digest();
            entries.insert(pathway.name.clone(), Entry { pathway, file, digest, validator });
        }
        Ok(Self { entries })
    }

    /// `remediation` as an action: its parameters only those its pathway acts with
    /// ([`Pathway::acting_parameters`]), so that two proposals differing in a note
    /// no step reads (a free-text `reason`) are the same action, and a repeat
    /// cannot pass for an untried one by rewording it. A pathway not in the catalog
    /// leaves it as it is.
    pub fn acting(&self, remediation: &crate::diagnosis::Remediation) -> crate::diagnosis::Remediation {
        let mut acting = remediation.clone();
        if let Some(pathway) = self.get(&remediation.pathway) {
            acting.parameters = pathway.acting_of(&remediation.parameters);
        }
        acting
    }

    pub fn get(&self, name: &str) -> Option<&Pathway> {
        self.entries.get(name).map(|e| &e.pathway)
    }

    pub fn digest(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(|e| e.digest.as_str())
    }

    pub fn pathways(&self) -> impl Iterator<Item = &Pathway> {
        self.entries.values().map(|e| &e.pathway)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Validates parameters against the pathway's schema, naming every violation.
    pub fn validate_parameters(&self, pathway: &str, parameters: &Value) -> Result<(), ParameterError> {
        let entry = self.entries.get(pathway).ok_or_else(|| ParameterError::UnknownPathway(pathway.to_owned()))?;
        let errors: Vec<String> = entry
            .validator
            .iter_errors(parameters)
            .map(|error| {
                let path = error.instance_path().to_string();
                if path.is_empty() { error.to_string() } else { format!("at `{path}`: {error}") }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ParameterError::Schema { pathway: pathway.to_owned(), errors })
        }
    }
}

fn invalid(file: &Path, pathway: &Pathway, field: &str, message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        file: file.to_owned(),
        pathway: pathway.name.clone(),
        field: field.to_owned(),
        message: message.into(),
    }
}

fn validate(file: &Path, p: &Pathway) -> Result<jsonschema::Validator, CatalogError> {
    let name_ok = !p.name.is_empty()
        && p.name.len() <= 64
        && p.name.starts_with(|c: char| c.is_ascii_lowercase())
        && p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name_ok {
        return Err(invalid(file, p, "name", "must be lowercase letters, digits and `_`, starting with a letter"));
    }
    if p.description.trim().is_empty() {
        return Err(invalid(file, p, "description", "must not be empty"));
    }
    for (field, value) in [("base_risk", p.base_risk), ("blast_radius", p.blast_radius)] {
        if !(0.0..=1.0).contains(&value) {
            return Err(invalid(file, p, field, format!("must lie in [0, 1], got {value}")));
        }
    }
    if p.action.is_empty() {
        return Err(invalid(file, p, "action", "needs at least one step"));
    }
    if p.verify.probes.is_empty() {
        return Err(invalid(file, p, "verify.probes", "needs at least one probe: every pathway proves its result"));
    }
    check_verification(file, p, "verify", &p.verify)?;
    if let Some(rollback_verify) = &p.rollback_verify {
        if p.rollback.is_empty() {
            return Err(invalid(file, p, "rollback_verify", "verifies a rollback, but the pathway declares none"));
        }
        if rollback_verify.probes.is_empty() {
            return Err(invalid(file, p, "rollback_verify.probes", "needs at least one probe"));
        }
        check_verification(file, p, "rollback_verify", rollback_verify)?;
    }
    if p.timeout_secs == 0 {
        return Err(invalid(file, p, "timeout_secs", "must be positive"));
    }
    if p.rollback.is_empty() && !p.irreversible {
        return Err(invalid(file, p, "rollback", "declare a rollback, or set `irreversible = true`"));
    }
    if !p.rollback.is_empty() && p.irreversible {
        return Err(invalid(file, p, "irreversible", "an irreversible pathway cannot declare a rollback"));
    }
    if p.parameters.get("type").and_then(Value::as_str) != Some("object") {
        return Err(invalid(file, p, "parameters", "must be a JSON Schema with `type = \"object\"`"));
    }
    let validator = jsonschema::validator_for(&p.parameters)
        .map_err(|e| invalid(file, p, "parameters", format!("is not a valid JSON Schema: {e}")))?;
    let declared: Vec<String> = p
        .parameters
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| props.keys().cloned().collect())
        .unwrap_or_default();
    for (i, secret) in p.secrets.iter().enumerate() {
        let ok = !secret.is_empty()
            && secret.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !p.secrets[..i].contains(secret);
        if !ok {
            return Err(invalid(file, p, "secrets", format!("`{secret}` must be a unique name of uppercase letters, digits and `_`")));
        }
    }
    if let Some(i) = p.precheck.iter().position(|step| matches!(step, Step::Git { .. })) {
        return Err(invalid(file, p, &format!("precheck[{i}]"), "a `git` step commits, and a precheck must change nothing; read the repository with a `command` step instead"));
    }
    check_steps(file, p, "precheck", &p.precheck)?;
    check_steps(file, p, "action", &p.action)?;
    check_steps(file, p, "rollback", &p.rollback)?;
    let mut templates: Vec<Template<'_>> = Vec::new();
    collect_templates("precheck", &p.precheck, &mut templates);
    collect_templates("action", &p.action, &mut templates);
    collect_templates("rollback", &p.rollback, &mut templates);
    for (field, verification) in
        std::iter::once(("verify", &p.verify)).chain(p.rollback_verify.iter().map(|v| ("rollback_verify", v)))
    {
        for (i, probe) in verification.probes.iter().enumerate() {
            for t in probe_templates(probe) {
                templates.push(Template { field: format!("{field}.probes[{i}]"), text: t, secret_allowed: false });
            }
        }
    }
    for template in templates {
        for placeholder in placeholders(template.text) {
            let known = match placeholder.split_once('.') {
                Some(("params", name)) => declared.iter().any(|d| d == name),
                Some(("target", _)) => true,
                Some(("decision", "id")) => true,
                Some(("secret", name)) => {
                    if !template.secret_allowed {
                        return Err(invalid(file, p, &template.field, format!(
                            "placeholder `{{{{{placeholder}}}}}`: a secret may go only into an HTTP header or a command's `env`"
                        )));
                    }
                    p.secrets.iter().any(|s| s == name)
                }
                _ => false,
            };
            if !known {
                return Err(invalid(file, p, &template.field, format!("placeholder `{{{{{placeholder}}}}}` names nothing the pathway declares")));
            }
        }
    }
    Ok(validator)
}

impl Pathway {
    /// `parameters` (an object) with only those this pathway acts with
    /// ([`Self::acting_parameters`]); anything else as it is.
    pub fn acting_of(&self, parameters: &Value) -> Value {
        match parameters {
            Value::Object(parameters) => {
                let used = self.acting_parameters();
                Value::Object(parameters.iter().filter(|(name, _)| used.contains(*name)).map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            other => other.clone(),
        }
    }

    /// The parameters some template of this pathway reads (`{{params.NAME}}` in a
    /// precheck, action or rollback step, or a probe): what the action does with.
    /// A declared parameter no template reads changes nothing the action does.
    pub fn acting_parameters(&self) -> std::collections::BTreeSet<String> {
        let mut templates: Vec<Template<'_>> = Vec::new();
        collect_templates("precheck", &self.precheck, &mut templates);
        collect_templates("action", &self.action, &mut templates);
        collect_templates("rollback", &self.rollback, &mut templates);
        let probes = std::iter::once(&self.verify).chain(self.rollback_verify.as_ref()).flat_map(|v| v.probes.iter()).flat_map(probe_templates);
        templates
            .iter()
            .map(|t| t.text)
            .chain(probes)
            .flat_map(placeholders)
            .filter_map(|placeholder| placeholder.strip_prefix("params.").map(str::to_owned))
            .collect()
    }
}

/// The methods an `http` step may use.
const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Where the executor's own secrets live in its environment; `env_allow` may not reach them.
const SECRET_ENV_PREFIX: &str = "ARF_SECRET_";

fn check_verification(file: &Path, p: &Pathway, field: &str, v: &Verification) -> Result<(), CatalogError> {
    if v.window_ms == 0 || v.interval_ms == 0 {
        return Err(invalid(file, p, field, "`window_ms` and `interval_ms` must be positive"));
    }
    if v.max_failures == 0 {
        return Err(invalid(file, p, &format!("{field}.max_failures"), "must be at least 1"));
    }
    for (i, probe) in v.probes.iter().enumerate() {
        if let Probe::Http { url, .. } | Probe::Prometheus { url, .. } = probe {
            check_url(file, p, &format!("{field}.probes[{i}].url"), url)?;
        }
    }
    Ok(())
}

/// A URL template must be http(s): literally, or through a placeholder at its start
/// (a target's `url` fact), whose value is checked when the step is rendered.
fn check_url(file: &Path, p: &Pathway, field: &str, url: &str) -> Result<(), CatalogError> {
    let url = url.trim_start();
    if url.starts_with("{{") || url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(invalid(file, p, field, format!("`{url}` must be an http:// or https:// URL, or start with a placeholder such as `{{{{target.url}}}}`")))
    }
}

/// Checks what serde cannot: timeouts, methods, URLs and environments of steps,
/// and the shape of `git` steps, their edits and patches.
fn check_steps(file: &Path, p: &Pathway, field: &str, steps: &[Step]) -> Result<(), CatalogError> {
    let mut git_repos: Vec<(&str, String)> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let field = format!("{field}[{i}]");
        // A decision's commit is found by its trailer, one per repository: a second
        // git step on the same repository would find the first one's commit and do
        // nothing, and a rollback would revert only one of them.
        if let Step::Git { repo, .. } = step {
            if let Some((_, first)) = git_repos.iter().find(|(r, _)| r.trim() == repo.trim()) {
                return Err(invalid(file, p, &field, format!(
                    "a second `git` step on `{repo}` (the first is `{first}`): put all of a pathway's changes to one repository in one step"
                )));
            }
            git_repos.push((repo.as_str(), field.clone()));
        }
        let (Step::Command { timeout_secs, .. } | Step::Http { timeout_secs, .. } | Step::Git { timeout_secs, .. }) = step;
        if *timeout_secs == Some(0) {
            return Err(invalid(file, p, &format!("{field}.timeout_secs"), "must be positive"));
        }
        if let Step::Http { method, url, .. } = step {
            if !HTTP_METHODS.contains(&method.to_ascii_uppercase().as_str()) {
                return Err(invalid(file, p, &format!("{field}.method"), format!("`{method}` is not one of {}", HTTP_METHODS.join(", "))));
            }
            check_url(file, p, &format!("{field}.url"), url)?;
        }
        if let Step::Command { argv, env_allow, .. } = step {
            if argv.is_empty() || argv[0].trim().is_empty() {
                return Err(invalid(file, p, &format!("{field}.argv"), "must name a program"));
            }
            for name in env_allow {
                let well_formed = !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !well_formed {
                    return Err(invalid(file, p, &format!("{field}.env_allow"), format!("`{name}` is not an environment variable name")));
                }
                if name.starts_with(SECRET_ENV_PREFIX) {
                    return Err(invalid(file, p, &format!("{field}.env_allow"), format!(
                        "`{name}` is one of the executor's secrets; name it in `secrets` and pass it with `env = {{ NAME = \"{{{{secret.NAME}}}}\" }}` instead"
                    )));
                }
            }
        }
        let Step::Git { repo, edits, patch, revert, revert_decision, .. } = step else { continue };
        if repo.trim().is_empty() {
            return Err(invalid(file, p, &format!("{field}.repo"), "must name a repository"));
        }
        let n_changes = usize::from(!edits.is_empty())
            + usize::from(patch.is_some())
            + usize::from(revert.is_some())
            + usize::from(*revert_decision);
        if n_changes != 1 {
            return Err(invalid(file, p, &field, "a `git` step needs exactly one of `edits`, `patch`, `revert` and `revert_decision = true`"));
        }
        if let Some(patch) = patch
            && let Err(message) = check_patch(patch)
        {
            return Err(invalid(file, p, &format!("{field}.patch"), message));
        }
        for (j, edit) in edits.iter().enumerate() {
            let field = format!("{field}.edits[{j}]");
            let escapes = edit.file.starts_with('/')
                || edit.file.split(['/', '\\']).any(|part| part == "..")
                || edit.file.contains("{{");
            if edit.file.is_empty() || escapes {
                return Err(invalid(file, p, &format!("{field}.file"), format!(
                    "`{}` must be a fixed path inside the repository, without `..`", edit.file
                )));
            }
            if edit.format.is_none() && EditFormat::from_file(&edit.file).is_none() {
                return Err(invalid(file, p, &format!("{field}.format"), format!(
                    "cannot tell the format of `{}` from its extension; set `format` to `yaml`, `toml` or `json`", edit.file
                )));
            }
            if let Err(message) = parse_key_path(&edit.path) {
                return Err(invalid(file, p, &format!("{field}.path"), message));
            }
        }
    }
    Ok(())
}

/// Checks a patch template: a unified diff whose file names are fixed, inside the
/// repository, and free of placeholders, which may go only on a hunk's lines.
fn check_patch(patch: &str) -> Result<(), String> {
    if patch.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if !patch.lines().any(|l| l.starts_with("--- ") || l.starts_with("diff --git ")) {
        return Err("is not a unified diff: it has no `--- ` or `diff --git ` line".to_owned());
    }
    // Lines left in the current hunk, old side and new side: a removed line `-- x`
    // reads `--- x`, so only the counts tell it from a file header.
    let (mut old, mut new) = (0_u64, 0_u64);
    for (n, line) in patch.lines().enumerate() {
        let at = |message: String| format!("line {}: {message}", n + 1);
        if old > 0 || new > 0 {
            match line.chars().next() {
                Some(' ') | None => (old, new) = (old.saturating_sub(1), new.saturating_sub(1)),
                Some('-') => old = old.saturating_sub(1),
                Some('+') => new = new.saturating_sub(1),
                Some('\\') => {}
                Some(_) => return Err(at("the hunk ends before its header's line counts say".to_owned())),
            }
            continue;
        }
        if line.contains("{{") {
            return Err(at("a placeholder may go only on a hunk's context, added or removed lines, so that the files a patch touches are fixed when it is reviewed".to_owned()));
        }
        if line.starts_with("@@") {
            (old, new) = line
                .strip_prefix("@@ -")
                .and_then(hunk_counts)
                .ok_or_else(|| at(format!("`{line}` is not a hunk header")))?;
        } else if let Some(name) = line.strip_prefix("--- ").or_else(|| line.strip_prefix("+++ ")) {
            let name = name.split('\t').next().unwrap_or("").trim();
            let relative = name.strip_prefix("a/").or_else(|| name.strip_prefix("b/")).unwrap_or(name);
            if name != "/dev/null" && (relative.starts_with('/') || relative.split(['/', '\\']).any(|part| part == "..")) {
                return Err(at(format!("`{name}` must be a path inside the repository, without `..`")));
            }
        }
    }
    if old > 0 || new > 0 {
        return Err("the last hunk is shorter than its header's line counts say".to_owned());
    }
    Ok(())
}

/// The old and new line counts of a hunk header after its `@@ -`: `1,3 +1,4 @@`.
fn hunk_counts(rest: &str) -> Option<(u64, u64)> {
    let (ranges, _) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let count = |range: &str| -> Option<u64> {
        match range.split_once(',') {
            Some((start, count)) => start.parse::<u64>().ok().and(count.parse().ok()),
            None => range.parse::<u64>().ok().map(|_| 1),
        }
    };
    Some((count(old)?, count(new)?))
}

/// One segment of an edit's key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySegment {
    Key(String),
    Index(usize),
}

/// Parses `a.b[0].c` into its segments.
pub fn parse_key_path(path: &str) -> Result<Vec<KeySegment>, String> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if key.is_empty() && (segments.is_empty() || rest.is_empty()) {
            return Err(format!("`{path}` has an empty key"));
        }
        if !key.is_empty() {
            segments.push(KeySegment::Key(key.to_owned()));
        }
        while !rest.is_empty() {
            let Some(close) = rest.find(']') else { return Err(format!("`{path}` has an unclosed `[`")) };
            let index = rest[1..close].parse::<usize>().map_err(|_| format!("`{path}` has a bad index `{}`", &rest[1..close]))?;
            segments.push(KeySegment::Index(index));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("`{path}` has text after `]`; separate keys with `.`"));
            }
        }
    }
    if segments.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(segments)
}

struct Template<'a> {
    field: String,
    text: &'a str,
    secret_allowed: bool,
}

fn collect_templates<'a>(field: &str, steps: &'a [Step], out: &mut Vec<Template<'a>>) {
    for (i, step) in steps.iter().enumerate() {
        let name = format!("{field}[{i}]");
        let mut push = |text: &'a str, secret_allowed: bool| out.push(Template { field: name.clone(), text, secret_allowed });
        match step {
            Step::Command { argv, env, cwd, .. } => {
                argv.iter().for_each(|a| push(a, false));
                cwd.iter().for_each(|c| push(c, false));
                env.values().for_each(|v| push(v, true));
            }
            Step::Http { url, headers, body, .. } => {
                push(url, false);
                headers.values().for_each(|h| push(h, true));
                if let Some(body) = body {
                    json_strings(body, &mut |text| push(text, false));
                }
            }
            Step::Git { repo, branch, edits, patch, revert, message, push: remote, .. } => {
                push(repo, false);
                for text in [branch, patch, revert, message, remote].into_iter().flatten() {
                    push(text, false);
                }
                for edit in edits {
                    push(&edit.value, false);
                }
            }
        }
    }
}

fn json_strings<'a>(value: &'a Value, f: &mut impl FnMut(&'a str)) {
    match value {
        Value::String(text) => f(text),
        Value::Array(items) => items.iter().for_each(|v| json_strings(v, f)),
        Value::Object(map) => map.values().for_each(|v| json_strings(v, f)),
        _ => {}
    }
}

fn probe_templates(probe: &Probe) -> Vec<&str> {
    match probe {
        Probe::Http { url, .. } => vec![url.as_str()],
        Probe::Command { argv, .. } => argv.iter().map(String::as_str).collect(),
        Probe::Prometheus { url, query, .. } => vec![url.as_str(), query.as_str()],
    }
}

fn placeholders(template: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                found.push(after[..end].trim().to_owned());
                rest = &after[end + 2..];
            }
            None => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "restart_service"
description = "Restart the service."
target_kind = "service"
base_risk = 0.2
blast_radius = 0.5
parameters = { type = "object", additionalProperties = false, properties = { reason = { type = "string", maxLength = 200 } } }
action = [{ kind = "http", url = "{{target.url}}/restart" }]
rollback = [{ kind = "http", url = "{{target.url}}/start" }]
[verify]
window_ms = 1000
probes = [{ kind = "http", name = "health", url = "{{target.url}}/health" }]
"#;

    #[test]
    fn the_example_catalog_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pathways");
        let catalog = Catalog::load_dir(&dir).unwrap();
        for name in [
            "revert_config_commit",
            "restart_service",
            "rollback_deployment",
            "scale_deployment",
            "pin_dependency",
            "block_public_bucket",
            "rotate_credential",
            "isolate_workload",
        ] {
            assert!(catalog.get(name).is_some(), "{name} is missing from {catalog:?}");
        }
    }

    /// An action is what its steps act with: the bundled `restart_service` reads no
    /// parameter (its `reason` is a note for the trail), `revert_config_commit` reads
    /// its `commit`, and reworded notes make no other action.
    #[test]
    fn an_action_is_what_its_steps_act_with() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pathways");
        let catalog = Catalog::load_dir(&dir).unwrap();
        assert!(catalog.get("restart_service").unwrap().acting_parameters().is_empty());
        assert_eq!(catalog.get("revert_config_commit").unwrap().acting_parameters().into_iter().collect::<Vec<_>>(), ["commit"]);
        let remediation = |pathway: &str, parameters: Value| crate::diagnosis::Remediation { pathway: pathway.into(), target: "web".into(), parameters, rationale: String::new() };
        let first = catalog.acting(&remediation("restart_service", serde_json::json!({"reason": "wedged worker"})));
        let reworded = catalog.acting(&remediation("restart_service", serde_json::json!({"reason": "second try"})));
        assert_eq!(first, reworded);
        let one = catalog.acting(&remediation("revert_config_commit", serde_json::json!({"commit": "abc1234", "reason": "x"})));
        let other = catalog.acting(&remediation("revert_config_commit", serde_json::json!({"commit": "def5678", "reason": "x"})));
        assert_ne!(one, other);
        assert_eq!(one.parameters, serde_json::json!({"commit": "abc1234"}));
        // A pathway the catalog does not hold is left as it is.
        let unknown = remediation("no_such", serde_json::json!({"reason": "x"}));
        assert_eq!(catalog.acting(&unknown), unknown);
    }

    #[test]
    fn secrets_and_git_steps_are_checked() {
        let leaky = GOOD.replace("{{target.url}}/restart\" }]", "{{target.url}}/restart?t={{secret.TOKEN}}\" }]\nsecrets = [\"TOKEN\"]");
        let err = load(&leaky).unwrap_err().to_string();
        assert!(err.contains("a secret may go only into"), "{err}");
        let undeclared = GOOD.replace("url = \"{{target.url}}/restart\"", "url = \"{{target.url}}/restart\", headers = { authorization = \"{{secret.TOKEN}}\" }");
        let err = load(&undeclared).unwrap_err().to_string();
        assert!(err.contains("secret.TOKEN"), "{err}");
        let two_changes = GOOD.replace(
            "rollback = [{ kind = \"http\", url = \"{{target.url}}/start\" }]",
            "rollback = [{ kind = \"git\", repo = \"{{target.repo}}\", revert_decision = true, revert = \"abc\" }]",
        );
        let err = load(&two_changes).unwrap_err().to_string();
        assert!(err.contains("`rollback[0]`") && err.contains("exactly one of"), "{err}");
        let escaping = GOOD.replace(
            "rollback = [{ kind = \"http\", url = \"{{target.url}}/start\" }]",
            "rollback = [{ kind = \"git\", repo = \"r\", edits = [{ file = \"../x.yaml\", path = \"a\", value = \"1\" }] }]",
        );
        let err = load(&escaping).unwrap_err().to_string();
        assert!(err.contains("`rollback[0].edits[0].file`"), "{err}");
    }

    #[test]
    fn patches_are_checked() {
        // (the patch, the error it gets at load, if any)
        let cases = [
            ("--- a/app.yaml\n+++ b/app.yaml\n@@ -1 +1 @@\n-mode: bad\n+mode: {{params.mode}}\n", None),
            ("--- a/q.sql\n+++ b/q.sql\n@@ -1,2 +1,1 @@\n--- {{params.mode}}\n select 1;\n", None),
            ("", Some("`rollback[0].patch`: must not be empty")),
            ("mode: good\n", Some("is not a unified diff")),
            ("--- a/app.yaml\n+++ b/{{params.mode}}\n@@ -1 +1 @@\n-a\n+b\n", Some("line 2: a placeholder may go only on a hunk's")),
            ("--- a/app.yaml\n+++ b/app.yaml\n@@ -1 +1 @@ {{params.mode}}\n-a\n+b\n", Some("line 3: a placeholder")),
            ("--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", Some("line 1: `a/../etc/passwd` must be a path inside")),
            ("--- /dev/null\n+++ /etc/cron.d/x\n@@ -0,0 +1 @@\n+b\n", Some("line 2: `/etc/cron.d/x` must be a path inside")),
            ("--- a/app.yaml\n+++ b/app.yaml\n@@ -1,2 +1,2 @@\n-a\n+b\n", Some("the last hunk is shorter")),
            ("--- a/app.yaml\n+++ b/app.yaml\n@@ one @@\n-a\n+b\n", Some("line 3: `@@ one @@` is not a hunk header")),
        ];
        for (patch, expected) in cases {
            let step = format!("rollback = [{{ kind = \"git\", repo = \"{{{{target.repo}}}}\", patch = {} }}]", toml::Value::from(patch));
            let text = GOOD
                .replace("rollback = [{ kind = \"http\", url = \"{{target.url}}/start\" }]", &step)
                .replace("reason = { type = \"string\", maxLength = 200 }", "mode = { type = \"string\" }");
            match (load(&text), expected) {
                (Ok(_), None) => {}
                (Err(err), Some(expected)) => assert!(err.to_string().contains(expected), "{patch:?}: {err}"),
                (result, expected) => panic!("{patch:?}: expected {expected:?}, got {result:?}"),
            }
        }
        let both = GOOD.replace(
            "rollback = [{ kind = \"http\", url = \"{{target.url}}/start\" }]",
            "rollback = [{ kind = \"git\", repo = \"r\", revert_decision = true, patch = \"--- a/x\" }]",
        );
        let err = load(&both).unwrap_err().to_string();
        assert!(err.contains("exactly one of `edits`, `patch`, `revert`"), "{err}");
    }

    fn load(text: &str) -> Result<Catalog, CatalogError> {
        Catalog::from_sources(vec![(PathBuf::from("p.toml"), text.to_owned())])
    }

    #[test]
    fn loads_and_validates_parameters() {
        let catalog = load(GOOD).unwrap();
        assert!(catalog.validate_parameters("restart_service", &serde_json::json!({"reason": "x"})).is_ok());
        let err = catalog.validate_parameters("restart_service", &serde_json::json!({"cmd": "rm -rf /"})).unwrap_err();
        assert!(err.to_string().contains("restart_service"), "{err}");
        assert_eq!(
            catalog.validate_parameters("run_shell", &serde_json::json!({})),
            Err(ParameterError::UnknownPathway("run_shell".into()))
        );
    }

    #[test]
    fn errors_name_file_pathway_and_field() {
        let no_rollback = GOOD.replace("rollback = [{ kind = \"http\", url = \"{{target.url}}/start\" }]", "");
        let err = load(&no_rollback).unwrap_err().to_string();
        assert!(err.contains("`p.toml`") && err.contains("`restart_service`") && err.contains("`rollback`"), "{err}");

        let bad_placeholder = GOOD.replace("{{target.url}}/restart", "{{params.command}}");
        let err = load(&bad_placeholder).unwrap_err().to_string();
        assert!(err.contains("params.command"), "{err}");

        let bad_risk = GOOD.replace("base_risk = 0.2", "base_risk = 2.0");
        assert!(load(&bad_risk).unwrap_err().to_string().contains("base_risk"));
    }

    /// What used to be found only when a decision arrived is refused at load, with
    /// the file, the pathway and the field named.
    #[test]
    fn steps_probes_and_timeouts_are_checked_at_load() {
        let action = "action = [{ kind = \"http\", url = \"{{target.url}}/restart\" }]";
        let rollback = "rollback = [{ kind = \"http\", url = \"{{target.url}}/start\" }]";
        let cases = [
            (GOOD.replace("blast_radius = 0.5", "blast_radius = 0.5\ntimeout_secs = 0"), "field `timeout_secs`: must be positive"),
            (GOOD.replace(action, "action = [{ kind = \"http\", method = \"FETCH\", url = \"{{target.url}}/restart\" }]"), "field `action[0].method`: `FETCH` is not one of GET"),
            (GOOD.replace(action, "action = [{ kind = \"http\", url = \"ftp://host/{{target.url}}\" }]"), "field `action[0].url`: `ftp://host/{{target.url}}` must be an http:// or https:// URL"),
            (GOOD.replace(action, "action = [{ kind = \"http\", url = \"{{target.url}}/restart\", timeout_secs = 0 }]"), "field `action[0].timeout_secs`: must be positive"),
            (GOOD.replace(action, "action = [{ kind = \"command\", argv = [] }]"), "field `action[0].argv`: must name a program"),
            (GOOD.replace(action, "action = [{ kind = \"command\", argv = [\"true\"], env_allow = [\"ARF_SECRET_DB\"] }]"), "field `action[0].env_allow`: `ARF_SECRET_DB` is one of the executor's secrets"),
            (GOOD.replace(action, "action = [{ kind = \"command\", argv = [\"true\"], env_allow = [\"A-B\"] }]"), "`A-B` is not an environment variable name"),
            (GOOD.replace("window_ms = 1000", "window_ms = 1000\nmax_failures = 0"), "field `verify.max_failures`: must be at least 1"),
            (
                GOOD.replace(action, "action = [{ kind = \"git\", repo = \"{{target.repo}}\", revert = \"abc1234\" }, { kind = \"git\", repo = \"{{target.repo}}\", revert = \"def5678\" }]"),
                "field `action[1]`: a second `git` step on `{{target.repo}}` (the first is `action[0]`)",
            ),
            (GOOD.replace("url = \"{{target.url}}/health\"", "url = \"health\""), "field `verify.probes[0].url`"),
            (
                GOOD.replace(action, &format!("precheck = [{{ kind = \"git\", repo = \"{{{{target.repo}}}}\", revert = \"abc1234\" }}]\n{action}")),
                "field `precheck[0]`: a `git` step commits, and a precheck must change nothing",
            ),
            (GOOD.replace(action, &format!("precheck = [{{ kind = \"http\", url = \"{{{{params.revision}}}}\" }}]\n{action}")), "field `precheck[0]`: placeholder `{{params.revision}}` names nothing"),
            (GOOD.replace(action, &format!("precheck = [{{ kind = \"http\", method = \"FETCH\", url = \"{{{{target.url}}}}/dry-run\" }}]\n{action}")), "field `precheck[0].method`"),
            (format!("{GOOD}[rollback_verify]\nwindow_ms = 0\nprobes = [{{ kind = \"http\", name = \"up\", url = \"{{{{target.url}}}}/up\" }}]\n"), "field `rollback_verify`: `window_ms` and `interval_ms` must be positive"),
            (format!("{GOOD}[rollback_verify]\nwindow_ms = 10\nprobes = []\n"), "field `rollback_verify.probes`: needs at least one probe"),
            (
                format!("{}irreversible = true\n[rollback_verify]\nwindow_ms = 10\nprobes = [{{ kind = \"http\", name = \"up\", url = \"{{{{target.url}}}}/up\" }}]\n", GOOD.replace(rollback, "").replace("[verify]", "").replace("window_ms = 1000\nprobes", "verify = { window_ms = 1000, probes").replace("/health\" }]", "/health\" }] }")),
                "field `rollback_verify`: verifies a rollback, but the pathway declares none",
            ),
        ];
        for (text, expected) in cases {
            let err = load(&text).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("`p.toml`") && err.contains("pathway `restart_service`"), "{err}");
            assert!(err.contains(expected), "expected `{expected}` in: {err}");
        }
    }

    /// A precheck is part of the reviewed pathway, so it changes the digest the
    /// governor signs; a pathway without one keeps the digest it had before
    /// prechecks existed, so decisions already logged still match their catalog.
    #[test]
    fn a_precheck_is_part_of_the_digest_and_absent_ones_change_nothing() {
        let plain = load(GOOD).unwrap();
        let digest = plain.get("restart_service").unwrap().digest();
        let action = "action = [{ kind = \"http\", url = \"{{target.url}}/restart\" }]";
        let checked = load(&GOOD.replace(action, &format!("precheck = [{{ kind = \"http\", method = \"POST\", url = \"{{{{target.url}}}}/dry-run\" }}]\n{action}"))).unwrap();
        let pathway = checked.get("restart_service").unwrap();
        assert_eq!(pathway.precheck.len(), 1);
        assert_ne!(pathway.digest(), digest, "a precheck is reviewed like the action");
        let encoded = serde_json::to_value(plain.get("restart_service").unwrap()).unwrap();
        assert!(encoded.get("precheck").is_none(), "a pathway without a precheck encodes as it did before: {encoded}");
    }

    /// A pathway may be written in YAML as well as TOML: the same types, the same
    /// checks, the same digest.
    #[test]
    fn a_yaml_pathway_loads_like_its_toml_twin() {
        let toml_pathway = load(GOOD).unwrap().get("restart_service").unwrap().clone();
        let yaml = serde_norway::to_string(&toml_pathway).unwrap();
        let catalog = Catalog::from_sources(vec![(PathBuf::from("p.yaml"), yaml.clone())]).unwrap();
        assert_eq!(catalog.get("restart_service"), Some(&toml_pathway));
        assert_eq!(catalog.digest("restart_service"), Some(toml_pathway.digest().as_str()));

        let err = Catalog::from_sources(vec![(PathBuf::from("p.yml"), yaml.replace("target_kind:", "target_kinds:"))]).unwrap_err().to_string();
        assert!(err.starts_with("`p.yml`: pathway `restart_service`:") && err.contains("target_kinds"), "{err}");
        let err = Catalog::from_sources(vec![(PathBuf::from("p.yaml"), yaml.replace("base_risk: 0.2", "base_risk: 2.0"))]).unwrap_err().to_string();
        assert!(err.contains("field `base_risk`"), "{err}");
    }

    #[test]
    fn a_file_serde_refuses_still_names_its_pathway() {
        let err = load(&GOOD.replace("target_kind = \"service\"", "target_kind = \"service\"\nblast = 1")).unwrap_err().to_string();
        assert!(err.contains("`p.toml`: pathway `restart_service`:") && err.contains("unknown field `blast`"), "{err}");
        let err = load("name = [").unwrap_err().to_string();
        assert!(err.starts_with("`p.toml`: ") && !err.contains("pathway `"), "{err}");
    }
}
