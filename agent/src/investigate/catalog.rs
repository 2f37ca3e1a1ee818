//! The investigation catalog: read-only tools the model may call while it
//! diagnoses, reviewed like pathways.
//!
//! A catalog file holds `[[tool]]` entries. Each has a name and a description
//! the model sees, a JSON Schema of the parameters the model gives (beside the
//! target, which every target-scoped tool takes and which must be in the
//! incident's scope), a timeout and an output limit, and what it runs:
//!
//! - `promql`: a PromQL query template against a declared Prometheus, instant or
//!   over the last `range_minutes`;
//! - `http_get`: a GET of a URL template (from the reviewed inventory's facts);
//! - `command`: a read-only command, such as `kubectl get` or `git log`: the
//!   program must be one ARF knows the read-only verbs of, and the verb (the first
//!   argument) one of them, written in the catalog, never chosen by the model;
//! - `incident_memory`: past incidents of the target's service and how they ended.
//!
//! Nothing the model writes is free text: every parameter is an enum, a pattern,
//! a number or a boolean, so a value cannot carry a query, a path or a flag of
//! its own. Whatever the loader cannot prove read-only, it refuses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

/// What a tool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    Promql,
    HttpGet,
    Command,
    IncidentMemory,
}

/// What a tool looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One target of the incident's scope, named by the model in `target`.
    #[default]
    Target,
    /// The incident's service and environment: no target.
    Incident,
}

/// Programs ARF knows the read-only verbs of. A `command` tool's verb must be one
/// of its program's; anything else (`kubectl delete`, `git push`) is refused at
/// load. Verbs that show secrets or environments (`docker inspect`, `helm get`,
/// `systemctl show`) are left out.
pub const READ_ONLY_VERBS: &[(&str, &[&str])] = &[
    ("kubectl", &["get", "describe", "logs", "top", "events", "explain", "api-resources", "version"]),
    ("git", &["log", "show", "ls-files", "rev-parse", "shortlog"]),
    ("systemctl", &["status", "list-units", "is-active", "is-failed"]),
    ("docker", &["ps", "logs", "images", "top"]),
    ("helm", &["list", "history"]),
];

/// Flags that would make a read-only verb write, run something, read a local
/// file, show secrets, or talk to another server with other credentials; refused
/// in the catalog and in every argument as rendered, however they are spelled
/// (`--flag=value`, a short flag in a cluster such as `-As`, kubectl's `_` for `-`).
pub const DANGEROUS_FLAGS: &[(&str, &[&str])] = &[
    (
        "git",
        &["--output", "-c", "--exec-path", "--ext-diff", "--textconv", "--git-dir", "--work-tree", "--upload-pack", "--config-env", "--show-signature", "-m", "--modified"],
    ),
    (
        "kubectl",
        &[
            "--server", "-s", "--token", "--as", "--as-group", "--as-uid", "--kubeconfig", "--raw", "--template", "-f", "--filename", "-k", "--kustomize", "--user",
            "--cluster", "--context", "--certificate-authority", "--client-key", "--client-certificate", "--profile-output", "--cache-dir", "--insecure-skip-tls-verify",
        ],
    ),
    ("systemctl", &["-H", "--host", "-M", "--machine"]),
    ("docker", &["-H", "--host", "--config", "--context"]),
    (
        "helm",
        &["--kubeconfig", "--kube-token", "--kube-apiserver", "--kube-as-user", "--post-renderer", "--kube-context", "--kube-ca-file", "--kube-insecure-skip-tls-verify", "--registry-config", "--repository-config", "--debug"],
    ),
];

/// Output formats that read a template from a local file.
const FILE_FORMATS: &[&str] = &["go-template-file", "jsonpath-file", "templatefile", "custom-columns-file"];

/// Resources no tool may read: secrets come back base64-encoded, past any redaction.
const SECRET_RESOURCES: &[&str] = &["secret", "secrets"];

/// Environment variables a command tool may not pass through: they change what
/// runs (`LD_PRELOAD`, `GIT_*` configuration) or where.
const UNSAFE_VARIABLES: &[&str] = &["LD_", "DYLD_", "GIT_", "BASH_ENV", "ENV", "PATH", "HOME", "SHELL", "IFS"];

/// Why `arg` (as written, or as rendered) may not be passed to `program`.
pub fn dangerous_argument(program: &str, arg: &str) -> Option<String> {
    let flags = DANGEROUS_FLAGS.iter().find(|(p, _)| *p == program).map_or(&[][..], |(_, f)| *f);
    let refuse = |flag: &str| Some(format!("`{flag}` would make `{program}` write, run something, show secrets, or act with other credentials"));
    if let Some(long) = arg.strip_prefix("--") {
        // kubectl reads `_` in a flag's name as `-`.
        let name = long.split('=').next().unwrap_or(long);
        let name = if program == "kubectl" { name.replace('_', "-") } else { name.to_owned() };
        if let Some(flag) = flags.iter().find(|f| f.strip_prefix("--") == Some(name.as_str())) {
            return refuse(flag);
        }
    } else if let Some(short) = arg.strip_prefix('-') {
        // Every letter of a cluster of short flags (`-As` is `-A -s`).
        let cluster = short.split('=').next().unwrap_or(short);
        if let Some(flag) = cluster.chars().map(|c| format!("-{c}")).find(|f| flags.contains(&f.as_str())) {
            return refuse(&flag);
        }
    }
    if FILE_FORMATS.iter().any(|f| arg.contains(f)) {
        return Some(format!("`{arg}` reads a template from a local file"));
    }
    if program == "git" && arg.contains("%G") {
        return Some("a format with `%G` checks signatures, which runs the signing program".to_owned());
    }
    if program == "kubectl" {
        // `secrets`, `secret.v1.`, `secrets/name`, `pods,secrets`: the resource before any group or name.
        let resources = arg.split('/').next().unwrap_or(arg).split(',');
        if resources.map(|r| r.trim().split('.').next().unwrap_or_default().to_ascii_lowercase()).any(|r| SECRET_RESOURCES.contains(&r.as_str())) {
            return Some("secrets are never read: their values come back encoded, past redaction".to_owned());
        }
    }
    None
}

/// One tool, as written in a catalog file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// Letters, digits and `_`: the function name the model calls.
    pub name: String,
    pub kind: ToolKind,
    /// What the model is told the tool shows, and when to use it.
    pub description: String,
    #[serde(default)]
    pub scope: Scope,
    /// A JSON Schema (`type = "object"`) of the model's parameters, besides `target`.
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Output beyond this is cut, and the cut is logged.
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
    /// `promql`: the Prometheus base URL, e.g. `http://127.0.0.1:9090`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `promql`: the query, a template over `target`, `incident` and `parameters`.
    #[serde(default)]
    pub query: Option<String>,
    /// `promql`: a range query over this many minutes up to now (instant when unset).
    #[serde(default)]
    pub range_minutes: Option<u32>,
    /// `promql`: the range query's step.
    #[serde(default)]
    pub step_secs: Option<u32>,
    /// `http_get`: the URL, a template (parameters are percent-encoded into it).
    #[serde(default)]
    pub url: Option<String>,
    /// `promql` and `http_get`: a file holding a bearer token (the agent's own, read-only).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// `command`: the program (a name on `PATH` or a path).
    #[serde(default)]
    pub program: Option<String>,
    /// `command`: the arguments, each a template; the first is the verb, written here.
    #[serde(default)]
    pub args: Vec<String>,
    /// `command`: the working directory, a template (a repository the target's facts declare, for `git`).
    #[serde(default)]
    pub dir: Option<String>,
    /// `command`: environment variables passed through from the agent (its
    /// read-only credentials, such as `KUBECONFIG`); nothing else is passed but `PATH`.
    #[serde(default)]
    pub env: Vec<String>,
}

fn default_timeout() -> u64 {
    10
}

fn default_max_output() -> usize {
    8192
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tool: Vec<Tool>,
}

/// A loaded tool, with its compiled parameter schema.
pub struct Entry {
    pub tool: Tool,
    pub file: PathBuf,
    pub validator: jsonschema::Validator,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("tool", &self.tool.name).field("file", &self.file).finish()
    }
}

/// Every tool, by name.
#[derive(Debug, Default)]
pub struct Tools {
    entries: BTreeMap<String, Entry>,
}

impl Tools {
    /// Loads every `*.toml` in `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<Self, String> {
        Self::from_files(crate::config::toml_files::<File>(dir, "investigation tools")?)
    }

    /// Loads tools from catalog files given as text.
    pub fn from_sources(sources: Vec<(PathBuf, String)>) -> Result<Self, String> {
        let files = sources
            .into_iter()
            .map(|(file, text)| toml::from_str::<File>(&text).map(|parsed| (file.clone(), parsed)).map_err(|e| format!("`{}`: {e}", file.display())))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_files(files)
    }

    fn from_files(files: Vec<(PathBuf, File)>) -> Result<Self, String> {
        let mut entries = BTreeMap::new();
        for (file, parsed) in files {
            for tool in parsed.tool {
                let validator = check(&tool).map_err(|e| format!("`{}`: tool `{}`: {e}", file.display(), tool.name))?;
                if let Some(other) = entries.get(&tool.name).map(|e: &Entry| e.file.clone()) {
                    return Err(format!("`{}`: tool `{}` is already defined in `{}`", file.display(), tool.name, other.display()));
                }
                entries.insert(tool.name.clone(), Entry { tool, file: file.clone(), validator });
            }
        }
        Ok(Self { entries })
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }
}

impl Tool {
    /// The parameters the model gives, as one JSON Schema: `target` (one of
    /// `targets`) for target-scoped tools, then the catalog's own.
    pub fn schema(&self, targets: &[String]) -> Value {
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        if self.scope == Scope::Target {
            properties.insert("target".to_owned(), json!({"type": "string", "enum": targets, "description": "The target to look at: one of the offered targets."}));
            required.push(Value::String("target".to_owned()));
        }
        if let Some(own) = &self.parameters {
            if let Some(props) = own.get("properties").and_then(Value::as_object) {
                properties.extend(props.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            if let Some(names) = own.get("required").and_then(Value::as_array) {
                required.extend(names.iter().cloned());
            }
        }
        json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
    }

    /// The OpenAI `tools` entry.
    pub fn function(&self, targets: &[String]) -> Value {
        json!({"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.schema(targets)}})
    }
}

/// The program a `command` tool runs, by file name.
pub fn program_name(program: &str) -> &str {
    Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or(program)
}

fn check(tool: &Tool) -> Result<jsonschema::Validator, String> {
    if tool.name.is_empty() || tool.name.len() > 64 || !tool.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err("`name` must be 1 to 64 lowercase letters, digits and `_`".to_owned());
    }
    if tool.description.trim().is_empty() || tool.description.len() > 1024 {
        return Err("`description` must say what the tool shows, in at most 1024 bytes".to_owned());
    }
    if !(1..=120).contains(&tool.timeout_secs) {
        return Err("`timeout_secs` must be 1 to 120".to_owned());
    }
    if !(1..=1_048_576).contains(&tool.max_output_bytes) {
        return Err("`max_output_bytes` must be 1 to 1048576".to_owned());
    }
    let parameters = tool.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    check_parameters(&parameters)?;
    let unused = |field: &str, set: bool| {
        if set { Err(format!("`{field}` is not a field of a `{:?}` tool", tool.kind).to_lowercase()) } else { Ok(()) }
    };
    match tool.kind {
        ToolKind::Promql => {
            let endpoint = tool.endpoint.as_deref().ok_or("a `promql` tool needs `endpoint`")?;
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(format!("`endpoint` must be an http or https URL, got `{endpoint}`"));
            }
            check_template("query", tool.query.as_deref().ok_or("a `promql` tool needs `query`")?)?;
            // A string outside quotes could be PromQL of its own (`1/up`, `5m:1m`): only enums and numbers.
            let free = parameters.get("properties").and_then(Value::as_object).and_then(|p| p.iter().find(|(_, p)| p.get("enum").is_none() && p.get("type").and_then(Value::as_str) == Some("string")));
            if let Some((name, _)) = free {
                return Err(format!("`parameters.properties.{name}`: a PromQL tool's parameters are enums or numbers"));
            }
            if tool.range_minutes == Some(0) || tool.step_secs == Some(0) {
                return Err("`range_minutes` and `step_secs` must be at least 1".to_owned());
            }
            unused("url", tool.url.is_some())?;
            unused("program", tool.program.is_some() || !tool.args.is_empty() || tool.dir.is_some() || !tool.env.is_empty())?;
        }
        ToolKind::HttpGet => {
            let url = tool.url.as_deref().ok_or("an `http_get` tool needs `url`")?;
            check_template("url", url)?;
            if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("{{ target.facts.") || url.starts_with("{{target.facts.")) {
                return Err("`url` must start with `http://`, `https://` or a fact of the target (`{{ target.facts.url }}`): the model never chooses the host".to_owned());
            }
            let authority = url.split_once("://").map_or("", |(_, rest)| rest.split('/').next().unwrap_or(rest));
            if authority.contains("parameters") {
                return Err("`url`: the server is written out or a fact of the target, never the model's parameters".to_owned());
            }
            unused("query", tool.query.is_some() || tool.endpoint.is_some())?;
            unused("program", tool.program.is_some() || !tool.args.is_empty() || tool.dir.is_some() || !tool.env.is_empty())?;
        }
        ToolKind::Command => {
            let program = tool.program.as_deref().ok_or("a `command` tool needs `program`")?;
            let name = program_name(program);
            let Some((_, verbs)) = READ_ONLY_VERBS.iter().find(|(known, _)| *known == name) else {
                let known: Vec<&str> = READ_ONLY_VERBS.iter().map(|(p, _)| *p).collect();
                return Err(format!("ARF knows no read-only verbs of `{name}`; a command tool runs one of {}", known.join(", ")));
            };
            let verb = tool.args.first().ok_or("`args` must start with the verb")?;
            if !verbs.contains(&verb.as_str()) {
                return Err(format!("`{verb}` is not a read-only verb of `{name}` (one of {})", verbs.join(", ")));
            }
            if program.contains("{{") {
                return Err("`program` is written out, never a template".to_owned());
            }
            for (i, arg) in tool.args.iter().enumerate() {
                check_template(&format!("args[{i}]"), arg)?;
                if let Some(why) = dangerous_argument(name, arg) {
                    return Err(format!("`args[{i}]`: {why}"));
                }
                if arg.starts_with('-') && arg.contains("{{") {
                    return Err(format!("`args[{i}]`: a flag is written out; only a flag's value may be a template (a separate argument)"));
                }
            }
            if let Some(dir) = &tool.dir {
                check_template("dir", dir)?;
                if dir.contains("parameters") {
                    return Err("`dir` may use the target's facts, never the model's parameters".to_owned());
                }
            }
            for variable in &tool.env {
                if variable.is_empty() || !variable.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                    return Err(format!("`env`: `{variable}` is not a variable name (uppercase letters, digits and `_`)"));
                }
                if UNSAFE_VARIABLES.iter().any(|u| if u.ends_with('_') { variable.starts_with(u) } else { variable == u }) {
                    return Err(format!("`env`: `{variable}` would change what runs; it is never passed through"));
                }
            }
            unused("url", tool.url.is_some() || tool.endpoint.is_some() || tool.query.is_some() || tool.bearer_token_file.is_some())?;
        }
        ToolKind::IncidentMemory => {
            unused("url", tool.url.is_some() || tool.endpoint.is_some() || tool.query.is_some() || tool.bearer_token_file.is_some())?;
            unused("program", tool.program.is_some() || !tool.args.is_empty() || tool.dir.is_some() || !tool.env.is_empty())?;
        }
    }
    jsonschema::validator_for(&parameters).map_err(|e| format!("`parameters` is not a valid JSON Schema: {e}"))
}

/// Every parameter is bounded: an enum, a pattern (anchored), a number or a boolean.
fn check_parameters(schema: &Value) -> Result<(), String> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("`parameters` must be a JSON Schema with `type = \"object\"`".to_owned());
    }
    if schema.get("additionalProperties").is_some_and(|a| a != &Value::Bool(false)) {
        return Err("`parameters.additionalProperties` may only be false".to_owned());
    }
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (name, property) in properties {
        if name == "target" {
            return Err("`parameters.properties.target` is ARF's: every target-scoped tool takes `target`, checked against the incident's scope".to_owned());
        }
        if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(format!("`parameters.properties.{name}`: names are lowercase letters, digits and `_`"));
        }
        let kind = property.get("type").and_then(Value::as_str);
        let bounded = property.get("enum").and_then(Value::as_array).is_some_and(|values| !values.is_empty() && values.iter().all(|v| !v.is_object() && !v.is_array()))
            || (kind == Some("string") && property.get("pattern").and_then(Value::as_str).is_some_and(|p| p.starts_with('^') && p.ends_with('$') && !p.ends_with("\\$")))
            || matches!(kind, Some("integer" | "number" | "boolean"));
        if !bounded {
            return Err(format!("`parameters.properties.{name}` must be an `enum`, a string with an anchored `pattern` (`^...$`), a number or a boolean: free text never reaches a tool"));
        }
    }
    Ok(())
}

fn check_template(field: &str, template: &str) -> Result<(), String> {
    // Templates see the target (from the reviewed inventory) and the checked
    // parameters; a signal's text (the incident's labels) never reaches a tool.
    if template.contains("incident") {
        return Err(format!("`{field}` uses `incident`: templates see `target` and `parameters` only, never a signal's text"));
    }
    let env = minijinja::Environment::new();
    env.template_from_str(template).map(drop).map_err(|e| format!("`{field}` is not a valid template: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn load(text: &str) -> Result<Tools, String> {
        Tools::from_sources(vec![(PathBuf::from("tools.toml"), text.to_owned())])
    }

    #[test]
    fn the_example_tools_load() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/tools");
        let tools = Tools::load_dir(&dir).unwrap();
        assert!(tools.names().count() >= 4, "{:?}", tools.names().collect::<Vec<_>>());
    }

    #[test]
    fn a_write_verb_is_refused_at_load() {
        for (program, verb) in [("kubectl", "delete"), ("kubectl", "apply"), ("git", "push"), ("/usr/bin/git", "commit"), ("helm", "upgrade"), ("docker", "rm")] {
            let text = format!("[[tool]]\nname = \"t\"\nkind = \"command\"\ndescription = \"d\"\nprogram = \"{program}\"\nargs = [\"{verb}\"]\n");
            let error = load(&text).unwrap_err();
            assert!(error.contains("is not a read-only verb"), "{program} {verb}: {error}");
        }
        let error = load("[[tool]]\nname = \"t\"\nkind = \"command\"\ndescription = \"d\"\nprogram = \"bash\"\nargs = [\"-c\", \"rm -rf /\"]\n").unwrap_err();
        assert!(error.contains("knows no read-only verbs of `bash`"), "{error}");
        // A verb from the model (a template) is not a verb ARF can check.
        let error = load("[[tool]]\nname = \"t\"\nkind = \"command\"\ndescription = \"d\"\nprogram = \"kubectl\"\nargs = [\"{{ parameters.verb }}\"]\n").unwrap_err();
        assert!(error.contains("is not a read-only verb"), "{error}");
        for (program, args) in [
            ("git", r#""log", "--output=/etc/passwd""#),
            ("git", r#""log", "-c", "core.pager=sh""#),
            ("kubectl", r#""get", "pods", "--server=https://elsewhere""#),
            ("kubectl", r#""get", "pods", "-o", "go-template-file=/etc/shadow""#),
            ("kubectl", r#""get", "secrets""#),
            ("kubectl", r#""get", "secrets.v1.""#),
            ("kubectl", r#""get", "pods,secret/db""#),
            ("kubectl", r#""get", "pods", "-As", "https://elsewhere""#),
            ("kubectl", r#""get", "pods", "--client_key=/k""#),
            ("git", r#""log", "--format=%G?""#),
            ("git", r#""ls-files", "-m""#),
            ("helm", r#""list", "--debug""#),
            ("kubectl", r#""get", "pods", "--{{ parameters.flag }}""#),
            ("systemctl", r#""status", "-H", "root@elsewhere""#),
        ] {
            let text = format!("[[tool]]\nname = \"t\"\nkind = \"command\"\ndescription = \"d\"\nprogram = \"{program}\"\nargs = [{args}]\n");
            let error = load(&text).unwrap_err();
            assert!(
                error.contains("would make") || error.contains("local file") || error.contains("secrets are never read") || error.contains("a flag is written out") || error.contains("%G"),
                "{program} {args}: {error}"
            );
        }
        for (env, dir) in [("LD_PRELOAD", "/srv"), ("GIT_CONFIG_COUNT", "/srv"), ("KUBECONFIG", "{{ parameters.dir }}")] {
            let text = format!("[[tool]]\nname = \"t\"\nkind = \"command\"\ndescription = \"d\"\nprogram = \"git\"\nargs = [\"log\"]\nenv = [\"{env}\"]\ndir = \"{dir}\"\n");
            assert!(load(&text).is_err(), "{env} {dir}");
        }
    }

    #[test]
    fn free_text_parameters_are_refused_at_load() {
        let text = r#"
[[tool]]
name = "q"
kind = "promql"
description = "d"
endpoint = "http://127.0.0.1:9090"
query = "{{ parameters.expr }}"
parameters = { type = "object", properties = { expr = { type = "string" } } }
"#;
        let error = load(text).unwrap_err();
        assert!(error.contains("free text never reaches a tool"), "{error}");
        let unanchored = text.replace("type = \"string\" }", "type = \"string\", pattern = \"[a-z]+\" }");
        assert!(load(&unanchored).unwrap_err().contains("free text"));
        let bounded = text.replace("type = \"string\" }", "type = \"string\", pattern = \"^[a-z_]+$\" }");
        // In PromQL, a string outside quotes could be a query of its own: enums and numbers only.
        assert!(load(&bounded).unwrap_err().contains("enums or numbers"));
        let enumerated = text.replace("type = \"string\" }", "type = \"string\", enum = [\"up\"] }");
        load(&enumerated).unwrap();
        let http = bounded.replace("kind = \"promql\"", "kind = \"http_get\"").replace("endpoint = \"http://127.0.0.1:9090\"\nquery = \"{{ parameters.expr }}\"", "url = \"http://127.0.0.1:9090/{{ parameters.expr }}\"");
        load(&http).unwrap();
        // A pattern on a value that may not be a string bounds nothing.
        let untyped = text.replace("type = \"string\" }", "pattern = \"^[a-z_]+$\" }");
        assert!(load(&untyped).unwrap_err().contains("free text"));
        let target = text.replace("expr = { type = \"string\" }", "target = { type = \"string\", enum = [\"x\"] }");
        assert!(load(&target).unwrap_err().contains("is ARF's"));
    }

    #[test]
    fn an_http_tool_never_lets_the_model_choose_the_host() {
        let text = "[[tool]]\nname = \"t\"\nkind = \"http_get\"\ndescription = \"d\"\nurl = \"{{ parameters.host }}/x\"\nparameters = { type = \"object\", properties = { host = { type = \"string\", pattern = \"^.*$\" } } }\n";
        assert!(load(text).unwrap_err().contains("never chooses the host"));
        let number = "[[tool]]\nname = \"t\"\nkind = \"http_get\"\ndescription = \"d\"\nurl = \"http://10.0.0.{{ parameters.n }}/x\"\nparameters = { type = \"object\", properties = { n = { type = \"integer\" } } }\n";
        assert!(load(number).unwrap_err().contains("never the model's parameters"));
        load("[[tool]]\nname = \"t\"\nkind = \"http_get\"\ndescription = \"d\"\nurl = \"{{ target.facts.url }}/state\"\n").unwrap();
    }

    #[test]
    fn the_schema_offers_only_the_scoped_targets() {
        let tools = load("[[tool]]\nname = \"t\"\nkind = \"incident_memory\"\ndescription = \"d\"\n").unwrap();
        let schema = tools.get("t").unwrap().tool.schema(&["a".to_owned()]);
        assert_eq!(schema["properties"]["target"]["enum"], json!(["a"]));
        assert_eq!(schema["required"], json!(["target"]));
        assert_eq!(schema["additionalProperties"], false);
    }
}
