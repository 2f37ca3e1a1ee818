//! Renders a pathway for one decision into the concrete steps and probes to run.
//!
//! Rendering happens before anything is claimed or run, so a missing target fact,
//! an empty argv or a malformed URL refuses the decision instead of failing halfway.
//! Templates read `params.NAME` (each top-level parameter; strings as they are,
//! other JSON values as compact JSON), `target.NAME` (the target's facts) and
//! `decision.id`. Parameter values are percent-encoded in URLs; target facts are
//! reviewed configuration and go in as they are.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use arf_core::catalog::{Comparison, EditFormat, Pathway, Probe, Step, Verification};
use arf_core::decision::DecisionBody;
use arf_core::target::Target;
use arf_core::template::{self, TemplateError, Values};

use crate::runner::git::{GitChange, GitSpec, RenderedEdit};

/// A step with every template filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RenderedStep {
    Command {
        argv: Vec<String>,
        env_allow: Vec<String>,
        /// Set for the command; may hold secrets, which the records redact.
        env: Vec<(String, String)>,
        cwd: Option<String>,
        timeout_secs: u64,
    },
    Git {
        #[serde(flatten)]
        git: GitSpec,
        timeout_secs: u64,
    },
    Http {
        method: String,
        url: String,
        headers: BTreeMap<String, String>,
        body: Option<Value>,
        expect_status: u16,
        timeout_secs: u64,
    },
}

/// A probe with every template filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RenderedProbe {
    Http { name: String, url: String, expect_status: u16, body_contains: Option<String>, max_latency_ms: Option<u64> },
    Command { name: String, argv: Vec<String>, expect_exit: i32, output_contains: Option<String> },
    Prometheus { name: String, url: String, query: String, comparison: Comparison, threshold: f64, pass_if_empty: bool },
}

impl RenderedProbe {
    pub fn name(&self) -> &str {
        match self {
            Self::Http { name, .. } | Self::Command { name, .. } | Self::Prometheus { name, .. } => name,
        }
    }
}

/// A verification with its probes rendered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedVerification {
    pub delay_ms: u64,
    pub window_ms: u64,
    pub interval_ms: u64,
    pub max_failures: u32,
    pub probes: Vec<RenderedProbe>,
}

/// Everything one execution will do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Steps that must succeed, changing nothing, before the action runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub precheck: Vec<RenderedStep>,
    pub action: Vec<RenderedStep>,
    pub verify: RenderedVerification,
    pub rollback: Vec<RenderedStep>,
    pub rollback_verify: Option<RenderedVerification>,
    /// The bound on the action, and separately on the rollback.
    pub timeout_secs: u64,
    pub irreversible: bool,
    /// The values of the secrets the pathway names, to scrub from every record.
    #[serde(skip)]
    pub secret_values: Vec<String>,
}

impl Plan {
    /// A plan that does nothing, for records about an execution whose plan is lost.
    pub fn empty() -> Self {
        Self {
            precheck: Vec::new(),
            action: Vec::new(),
            verify: RenderedVerification { delay_ms: 0, window_ms: 0, interval_ms: 1, max_failures: 1, probes: Vec::new() },
            rollback: Vec::new(),
            rollback_verify: None,
            timeout_secs: 0,
            irreversible: false,
            secret_values: Vec::new(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    #[error("pathway `{pathway}`: `{field}`: {source}")]
    Template { pathway: String, field: String, source: TemplateError },
    #[error("pathway `{pathway}`: `{field}`: {message}")]
    Invalid { pathway: String, field: String, message: String },
}

/// Renders `pathway` for the decision `body` against `target`, with the values of
/// the secrets the pathway names.
pub fn plan(
    pathway: &Pathway,
    target_name: &str,
    target: &Target,
    body: &DecisionBody,
    secrets: &BTreeMap<String, String>,
) -> Result<Plan, PlanError> {
    let mut renderer = Renderer::new(pathway, target_name, target, body);
    renderer.decision_id = body.decision_id.clone();
    renderer.with_secrets = renderer.plain.clone();
    for name in &pathway.secrets {
        let Some(value) = secrets.get(name) else {
            return Err(renderer.invalid("secrets", format!("secret `{name}` is not available")));
        };
        renderer.with_secrets.insert(format!("secret.{name}"), value.as_str());
    }
    if pathway.timeout_secs == 0 {
        return Err(renderer.invalid("timeout_secs", "must be positive"));
    }
    let precheck = renderer.steps("precheck", &pathway.precheck)?;
    // A precheck is trusted to change nothing, so a parameter may not turn into one
    // of its options (`--dry-run=none` after the reviewed `--dry-run=server`).
    for (i, (step, rendered)) in pathway.precheck.iter().zip(&precheck).enumerate() {
        if let (Step::Command { argv, .. }, RenderedStep::Command { argv: values, .. }) = (step, rendered) {
            for (template, value) in argv.iter().zip(values) {
                if template.contains("{{") && template.contains("params.") && value.starts_with('-') {
                    return Err(renderer.invalid(&format!("precheck[{i}].argv"), format!(
                        "`{value}` comes from a parameter and starts with `-`: in a precheck it could become an option that makes the step change something"
                    )));
                }
            }
        }
    }
    let action = renderer.steps("action", &pathway.action)?;
    let rollback = renderer.steps("rollback", &pathway.rollback)?;
    let verify = renderer.verification("verify", &pathway.verify)?;
    let rollback_verify =
        pathway.rollback_verify.as_ref().map(|v| renderer.verification("rollback_verify", v)).transpose()?;
    // Besides the pathway's secrets, what its requests send as credentials (a
    // target's token in an `authorization` header): a server that echoes one back
    // must not put it in a record, a detail or a page.
    let mut secret_values: Vec<String> = pathway.secrets.iter().filter_map(|name| secrets.get(name).cloned()).collect();
    for step in precheck.iter().chain(&action).chain(&rollback) {
        if let RenderedStep::Http { headers, .. } = step {
            for value in headers.iter().filter(|(name, _)| crate::records::is_secret_header(name)).map(|(_, value)| value) {
                let bare = value.split_once(' ').map_or(value.as_str(), |(_, token)| token.trim());
                for text in [value.as_str(), bare] {
                    if text.len() >= 8 && !secret_values.iter().any(|known| known == text) {
                        secret_values.push(text.to_owned());
                    }
                }
            }
        }
    }
    Ok(Plan { precheck, action, verify, rollback, rollback_verify, timeout_secs: pathway.timeout_secs, irreversible: pathway.irreversible, secret_values })
}

/// The template values for a decision: plain, and with parameters percent-encoded for URLs.
pub fn values(target_name: &str, target: &Target, body: &DecisionBody) -> (Values, Values) {
    let mut plain = Values::default();
    let mut url = Values::default();
    // Facts win over these conveniences, since the inventory is what reviewers read.
    for (name, value) in [
        ("name", target_name),
        ("kind", target.kind.as_str()),
        ("service", target.service.as_str()),
        ("environment", target.environment.as_str()),
    ] {
        plain.insert(format!("target.{name}"), value);
        url.insert(format!("target.{name}"), value);
    }
    for (name, value) in &target.facts {
        plain.insert(format!("target.{name}"), value.as_str());
        url.insert(format!("target.{name}"), value.as_str());
    }
    if let Some(parameters) = body.parameters.as_object() {
        for (name, value) in parameters {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            url.insert(format!("params.{name}"), template::percent_encode(&text));
            plain.insert(format!("params.{name}"), text);
        }
    }
    plain.insert("decision.id", body.decision_id.as_str());
    url.insert("decision.id", template::percent_encode(&body.decision_id));
    (plain, url)
}

/// The parameter a template names when it is nothing but `{{params.NAME}}`.
fn whole_parameter(template: &str) -> Option<&str> {
    let inner = template.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let name = inner.strip_prefix("params.")?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(name)
}

struct Renderer<'a> {
    pathway: &'a Pathway,
    plain: Values,
    url: Values,
    /// `plain` and the pathway's secrets: for HTTP headers and command `env` only.
    with_secrets: Values,
    decision_id: String,
    /// The decision's parameters as JSON, for a body value that is one placeholder.
    params: serde_json::Map<String, Value>,
}

impl<'a> Renderer<'a> {
    fn new(pathway: &'a Pathway, target_name: &str, target: &Target, body: &DecisionBody) -> Self {
        let (plain, url) = values(target_name, target, body);
        let params = body.parameters.as_object().cloned().unwrap_or_default();
        Self { pathway, plain, url, with_secrets: Values::default(), decision_id: String::new(), params }
    }

    fn template_error(&self, field: &str, source: TemplateError) -> PlanError {
        PlanError::Template { pathway: self.pathway.name.clone(), field: field.to_owned(), source }
    }

    fn invalid(&self, field: &str, message: impl Into<String>) -> PlanError {
        PlanError::Invalid { pathway: self.pathway.name.clone(), field: field.to_owned(), message: message.into() }
    }

    fn text(&self, field: &str, template: &str) -> Result<String, PlanError> {
        template::render(template, &self.plain, str::to_owned).map_err(|e| self.template_error(field, e))
    }

    fn secret_text(&self, field: &str, template: &str) -> Result<String, PlanError> {
        template::render(template, &self.with_secrets, str::to_owned).map_err(|e| self.template_error(field, e))
    }

    fn url(&self, field: &str, template: &str) -> Result<String, PlanError> {
        let url = template::render(template, &self.url, str::to_owned).map_err(|e| self.template_error(field, e))?;
        match reqwest::Url::parse(&url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some() => Ok(url),
            Ok(_) => Err(self.invalid(field, format!("`{url}` is not an http or https URL with a host"))),
            Err(e) => Err(self.invalid(field, format!("`{url}` is not a valid URL: {e}"))),
        }
    }

    fn argv(&self, field: &str, argv: &[String]) -> Result<Vec<String>, PlanError> {
        let argv = argv.iter().map(|a| self.text(field, a)).collect::<Result<Vec<_>, _>>()?;
        match argv.first() {
            Some(program) if !program.is_empty() => Ok(argv),
            _ => Err(self.invalid(field, "`argv` must name a program")),
        }
    }

    fn steps(&self, field: &str, steps: &[Step]) -> Result<Vec<RenderedStep>, PlanError> {
        steps.iter().enumerate().map(|(i, step)| self.step(&format!("{field}[{i}]"), step)).collect()
    }

    fn step(&self, field: &str, step: &Step) -> Result<RenderedStep, PlanError> {
        let default_timeout = self.pathway.timeout_secs;
        let (Step::Command { timeout_secs, .. } | Step::Http { timeout_secs, .. } | Step::Git { timeout_secs, .. }) =
            step;
        if *timeout_secs == Some(0) {
            return Err(self.invalid(field, "`timeout_secs` must be positive"));
        }
        match step {
            Step::Command { argv, env_allow, env, cwd, timeout_secs } => Ok(RenderedStep::Command {
                argv: self.argv(field, argv)?,
                env_allow: env_allow.clone(),
                env: env
                    .iter()
                    .map(|(name, value)| Ok((name.clone(), self.secret_text(field, value)?)))
                    .collect::<Result<_, PlanError>>()?,
                cwd: cwd.as_deref().map(|c| self.text(field, c)).transpose()?,
                timeout_secs: timeout_secs.unwrap_or(default_timeout),
            }),
            Step::Http { method, url, headers, body, expect_status, timeout_secs } => {
                let method = method.to_ascii_uppercase();
                if reqwest::Method::from_bytes(method.as_bytes()).is_err() {
                    return Err(self.invalid(field, format!("`{method}` is not an HTTP method")));
                }
                let mut rendered_headers = BTreeMap::new();
                for (name, value) in headers {
                    let value = self.secret_text(field, value)?;
                    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(self.invalid(field, format!("`{name}` is not a valid header name")));
                    }
                    if reqwest::header::HeaderValue::from_str(&value).is_err() {
                        return Err(self.invalid(field, format!("header `{name}` renders to an invalid value")));
                    }
                    rendered_headers.insert(name.clone(), value);
                }
                Ok(RenderedStep::Http {
                    method,
                    url: self.url(field, url)?,
                    headers: rendered_headers,
                    body: body.as_ref().map(|b| self.json(field, b)).transpose()?,
                    expect_status: *expect_status,
                    timeout_secs: timeout_secs.unwrap_or(default_timeout),
                })
            }
            Step::Git { repo, branch, edits, patch, revert, revert_decision, message, push, timeout_secs } => {
                let change = match (edits.as_slice(), patch, revert, revert_decision) {
                    ([], None, Some(commit), false) => GitChange::Revert { commit: self.text(field, commit)? },
                    ([], None, None, true) => GitChange::RevertDecision,
                    ([], Some(patch), None, false) => GitChange::Patch { patch: self.patch(&format!("{field}.patch"), patch)? },
                    (edits, None, None, false) if !edits.is_empty() => GitChange::Edits {
                        edits: edits
                            .iter()
                            .enumerate()
                            .map(|(i, edit)| {
                                let field = format!("{field}.edits[{i}]");
                                let format = edit
                                    .format
                                    .or_else(|| EditFormat::from_file(&edit.file))
                                    .ok_or_else(|| self.invalid(&field, "the file's format is unknown"))?;
                                let path_segments = arf_core::catalog::parse_key_path(&edit.path)
                                    .map_err(|m| self.invalid(&field, m))?;
                                let text = self.text(&field, &edit.value)?;
                                let value = edit.value_type.parse(&text).map_err(|m| self.invalid(&field, m))?;
                                Ok(RenderedEdit { file: edit.file.clone(), format, path_segments, path: edit.path.clone(), value })
                            })
                            .collect::<Result<_, PlanError>>()?,
                    },
                    _ => {
                        return Err(self.invalid(field, "needs exactly one of `edits`, `patch`, `revert` and `revert_decision`"));
                    }
                };
                let repo = self.text(field, repo)?;
                if repo.is_empty() {
                    return Err(self.invalid(field, "`repo` renders to nothing"));
                }
                let message = match message {
                    Some(message) => self.text(field, message)?,
                    None => format!("{}: {}", self.pathway.name, self.decision_id),
                };
                Ok(RenderedStep::Git {
                    git: GitSpec {
                        repo,
                        branch: branch.as_deref().map(|b| self.text(field, b)).transpose()?,
                        change,
                        message: message.lines().next().unwrap_or_default().to_owned(),
                        push: push.as_deref().map(|p| self.text(field, p)).transpose()?,
                        decision_id: self.decision_id.clone(),
                        pathway: self.pathway.name.clone(),
                    },
                    timeout_secs: timeout_secs.unwrap_or(default_timeout),
                })
            }
        }
    }

    /// Renders a patch template. A substituted value must be one line, so that it
    /// can change what a hunk's line says but never add a line, a hunk or a file.
    fn patch(&self, field: &str, template: &str) -> Result<String, PlanError> {
        let multi_line = std::cell::Cell::new(false);
        let text = template::render(template, &self.plain, |value| {
            if value.contains(['\n', '\r']) {
                multi_line.set(true);
            }
            value.to_owned()
        })
        .map_err(|e| self.template_error(field, e))?;
        if multi_line.get() {
            return Err(self.invalid(field, "a value substituted into a patch must be one line"));
        }
        Ok(text)
    }

    /// Renders every string inside a JSON value; keys stay as written. A string that
    /// is exactly one parameter placeholder takes the parameter's JSON value, so
    /// `replicas = "{{params.replicas}}"` sends the number the schema validated.
    fn json(&self, field: &str, value: &Value) -> Result<Value, PlanError> {
        Ok(match value {
            Value::String(text) => match whole_parameter(text).and_then(|name| self.params.get(name)) {
                Some(typed) => typed.clone(),
                None => Value::String(self.text(field, text)?),
            },
            Value::Array(items) => Value::Array(items.iter().map(|v| self.json(field, v)).collect::<Result<_, _>>()?),
            Value::Object(map) => Value::Object(
                map.iter().map(|(k, v)| Ok((k.clone(), self.json(field, v)?))).collect::<Result<_, PlanError>>()?,
            ),
            other => other.clone(),
        })
    }

    fn verification(&self, field: &str, verification: &Verification) -> Result<RenderedVerification, PlanError> {
        let probes = verification
            .probes
            .iter()
            .enumerate()
            .map(|(i, probe)| self.probe(&format!("{field}.probes[{i}]"), probe))
            .collect::<Result<_, _>>()?;
        // The catalog checks `verify` but not `rollback_verify`; a verification
        // without probes would pass by checking nothing.
        if verification.probes.is_empty() {
            return Err(self.invalid(field, "needs at least one probe"));
        }
        if verification.window_ms == 0 || verification.interval_ms == 0 {
            return Err(self.invalid(field, "`window_ms` and `interval_ms` must be positive"));
        }
        Ok(RenderedVerification {
            delay_ms: verification.delay_ms,
            window_ms: verification.window_ms,
            interval_ms: verification.interval_ms,
            max_failures: verification.max_failures.max(1),
            probes,
        })
    }

    fn probe(&self, field: &str, probe: &Probe) -> Result<RenderedProbe, PlanError> {
        match probe {
            Probe::Http { name, url, expect_status, body_contains, max_latency_ms } => Ok(RenderedProbe::Http {
                name: name.clone(),
                url: self.url(field, url)?,
                expect_status: *expect_status,
                body_contains: body_contains.clone(),
                max_latency_ms: *max_latency_ms,
            }),
            Probe::Command { name, argv, expect_exit, output_contains } => Ok(RenderedProbe::Command {
                name: name.clone(),
                argv: self.argv(field, argv)?,
                expect_exit: *expect_exit,
                output_contains: output_contains.clone(),
            }),
            Probe::Prometheus { name, url, query, comparison, threshold, pass_if_empty } => {
                Ok(RenderedProbe::Prometheus {
                    name: name.clone(),
                    url: self.url(field, url)?,
                    query: self.text(field, query)?,
                    comparison: *comparison,
                    threshold: *threshold,
                    pass_if_empty: *pass_if_empty,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PATHWAY: &str = r#"
name = "scale"
description = "Scale a deployment."
target_kind = "service"
base_risk = 0.2
blast_radius = 0.5
timeout_secs = 30
parameters = { type = "object", properties = { name = { type = "string" }, replicas = { type = "integer" } } }
action = [
  { kind = "command", argv = ["kubectl", "scale", "{{params.name}}", "--replicas={{params.replicas}}", "--context={{target.context}}"], timeout_secs = 5 },
  { kind = "http", method = "put", url = "{{target.url}}/scale/{{params.name}}?by={{decision.id}}", headers = { x-reason = "{{params.name}}" }, body = { replicas = "{{params.replicas}}", nested = ["{{target.service}}", 3] } },
]
rollback = [{ kind = "command", argv = ["kubectl", "rollout", "undo", "{{params.name}}"] }]
[verify]
window_ms = 1000
probes = [{ kind = "http", name = "health", url = "{{target.url}}/health/{{params.name}}" }]
"#;

    fn pathway(text: &str) -> Pathway {
        toml::from_str(text).unwrap()
    }

    fn target() -> Target {
        Target {
            kind: "service".into(),
            service: "web".into(),
            environment: "prod".into(),
            tier: "standard".into(),
            security_sensitive: false,
            facts: [
                ("url".to_owned(), "http://127.0.0.1:9/api".to_owned()),
                ("context".to_owned(), "prod-1".to_owned()),
            ]
            .into(),
            depends_on: Vec::new(),
        }
    }

    fn body(parameters: Value) -> DecisionBody {
        DecisionBody {
            version: 1,
            decision_id: "dec-1".into(),
            incident_id: "inc-1".into(),
            proposal_id: "prop-1".into(),
            snapshot_hash: "s".into(),
            pathway: "scale".into(),
            pathway_digest: "d".into(),
            target: "web-prod".into(),
            parameters,
            route: arf_core::decision::Route::Autonomous,
            approvals: vec![],
            risk_score: 0.1,
            issued_at_ms: 0,
            expires_at_ms: 1,
        }
    }

    /// A parameter may not become an option of a precheck's command (it could turn a
    /// dry run into a change); in an action's argv it may, as reviewed.
    #[test]
    fn a_precheck_argv_takes_no_option_from_a_parameter() {
        let checked = PATHWAY.replace(
            "action = [",
            "precheck = [{ kind = \"command\", argv = [\"kubectl\", \"scale\", \"{{params.name}}\", \"--dry-run=server\"] }]\naction = [",
        );
        let pathway = pathway(&checked);
        let fine = plan(&pathway, "web-prod", &target(), &body(json!({"name": "deployment/web", "replicas": 3})), &BTreeMap::new()).unwrap();
        assert_eq!(fine.precheck.len(), 1);
        let err = plan(&pathway, "web-prod", &target(), &body(json!({"name": "--dry-run=none", "replicas": 3})), &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("`precheck[0].argv`: `--dry-run=none` comes from a parameter and starts with `-`"), "{err}");
    }

    #[test]
    fn renders_argv_urls_headers_and_bodies() {
        let plan =
            plan(&pathway(PATHWAY), "web-prod", &target(), &body(json!({"name": "a b/c", "replicas": 3})), &BTreeMap::new()).unwrap();
        assert_eq!(
            plan.action[0],
            RenderedStep::Command {
                argv: vec![
                    "kubectl".into(),
                    "scale".into(),
                    "a b/c".into(),
                    "--replicas=3".into(),
                    "--context=prod-1".into()
                ],
                env_allow: vec![],
                env: vec![],
                cwd: None,
                timeout_secs: 5,
            }
        );
        assert_eq!(
            plan.action[1],
            RenderedStep::Http {
                method: "PUT".into(),
                url: "http://127.0.0.1:9/api/scale/a%20b%2Fc?by=dec-1".into(),
                headers: [("x-reason".to_owned(), "a b/c".to_owned())].into(),
                body: Some(json!({"replicas": 3, "nested": ["web", 3]})),
                expect_status: 200,
                timeout_secs: 30,
            }
        );
        let RenderedProbe::Http { url, .. } = &plan.verify.probes[0] else { panic!("not an http probe") };
        assert_eq!(url, "http://127.0.0.1:9/api/health/a%20b%2Fc");
    }

    #[test]
    fn refuses_what_cannot_run() {
        // (change to the pathway text, parameters, expected error fragment)
        let cases = [
            ("{{target.context}}", "{{target.region}}", json!({"name": "x", "replicas": 1}), "target.region"),
            (
                "{{target.url}}/health",
                "ftp://host/health",
                json!({"name": "x", "replicas": 1}),
                "not an http or https URL",
            ),
            ("method = \"put\"", "method = \"P U T\"", json!({"name": "x", "replicas": 1}), "not an HTTP method"),
            (
                "\"kubectl\", \"rollout\"",
                "\"{{params.name}}\", \"rollout\"",
                json!({"name": "", "replicas": 1}),
                "must name a program",
            ),
            (
                "timeout_secs = 30",
                "timeout_secs = 0",
                json!({"name": "x", "replicas": 1}),
                "`timeout_secs`: must be positive",
            ),
            (
                "timeout_secs = 5",
                "timeout_secs = 0",
                json!({"name": "x", "replicas": 1}),
                "`timeout_secs` must be positive",
            ),
            (
                "[verify]",
                "rollback_verify = { window_ms = 10, probes = [] }\n[verify]",
                json!({"name": "x", "replicas": 1}),
                "`rollback_verify`: needs at least one probe",
            ),
            // A parameter the decision does not carry cannot be rendered.
            ("{{target.context}}", "{{target.context}}", json!({"name": "x"}), "params.replicas"),
        ];
        for (from, to, parameters, expected) in cases {
            let text = PATHWAY.replace(from, to);
            let err = plan(&pathway(&text), "web-prod", &target(), &body(parameters), &BTreeMap::new()).unwrap_err().to_string();
            assert!(err.contains(expected), "{from} -> {to}: {err}");
            assert!(err.starts_with("pathway `scale`"), "{err}");
        }
    }

    #[test]
    fn a_patch_takes_one_line_values_only() {
        let text = PATHWAY.replace(
            "rollback = [{ kind = \"command\", argv = [\"kubectl\", \"rollout\", \"undo\", \"{{params.name}}\"] }]",
            "rollback = [{ kind = \"git\", repo = \"/r\", patch = \"--- a/x\\n+++ b/x\\n@@ -1 +1 @@\\n-a\\n+{{params.note}}\\n\" }]",
        );
        let render = |note: &str| {
            plan(&pathway(&text), "web-prod", &target(), &body(json!({"name": "x", "replicas": 1, "note": note})), &BTreeMap::new())
        };
        let rendered = render("b").unwrap();
        let RenderedStep::Git { git, .. } = &rendered.rollback[0] else { panic!("not a git step") };
        assert_eq!(git.change, GitChange::Patch { patch: "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n".into() });
        for note in ["b\n+++ b/y", "b\r"] {
            let err = render(note).unwrap_err().to_string();
            assert!(err.contains("`rollback[0].patch`: a value substituted into a patch must be one line"), "{err}");
        }
    }

    #[test]
    fn facts_override_conveniences() {
        let mut target = target();
        target.facts.insert("service".into(), "web-canary".into());
        let (plain, _) = values("web-prod", &target, &body(json!({})));
        assert_eq!(plain.get("target.service"), Some("web-canary"));
        assert_eq!(plain.get("target.name"), Some("web-prod"));
        assert_eq!(plain.get("decision.id"), Some("dec-1"));
    }
}
