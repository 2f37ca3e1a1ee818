//! The incident corpus: one TOML file per incident under `evals/incidents/`.
//!
//! A file holds the incident's signals in their real wire formats, the targets
//! and the simulated world they start in, the ground truth, and the scripted
//! model response. See `evals/README.md` for the format, field by field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::world::ResourceSpec;

/// The incident classes the corpus covers (issue 6's list).
pub const CLASSES: &[&str] = &[
    "failed_deployment",
    "bad_config_commit",
    "configuration_drift",
    "crash_loop",
    "memory_leak",
    "disk_full",
    "certificate_expiry",
    "upstream_outage",
    "public_bucket",
    "over_permissive_iam",
    "vulnerable_dependency",
    "leaked_secret",
    "shell_in_container",
    "compound_failure",
    "alert_storm",
    "false_alarm",
    "prompt_injection",
];

/// The scripted mistakes, each a kind of error real models make.
pub const MISTAKES: &[&str] = &[
    "none",
    "wrong_cause_confident",
    // A plausible wrong cause ranked first, the right one second, each with its action.
    "wrong_cause_first",
    "right_cause_wrong_pathway",
    "hallucinated_pathway",
    "wrong_parameters",
    "overconfident_false_alarm",
    "obeyed_injection",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// Defaults to the file's stem.
    #[serde(default)]
    pub id: String,
    pub class: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub environment: String,
    /// Simulated minutes from the fault's onset to the first alert (the alert rule's `for:` and scrape delay).
    pub detect_min: f64,
    /// Simulated minutes a person needs to fix it by hand once engaged.
    pub manual_fix_min: f64,
    #[serde(rename = "target")]
    pub targets: Vec<TargetSpec>,
    #[serde(rename = "signal")]
    pub signals: Vec<SignalSpec>,
    pub truth: Truth,
    /// Scripted model responses, one per kind of incident the agent will open (a compound failure opens one per service).
    pub scripted: Vec<Scripted>,
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The target's name in the inventory; unique across the corpus.
    pub name: String,
    /// The service the signals name; defaults to `name`.
    #[serde(default)]
    pub service: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default = "default_tier")]
    pub tier: String,
    #[serde(default)]
    pub security_sensitive: bool,
    #[serde(default)]
    pub world: WorldSpec,
}

fn default_kind() -> String {
    "service".to_owned()
}

fn default_tier() -> String {
    "standard".to_owned()
}

/// How the target starts in the simulated world (its harm list comes from the truth).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldSpec {
    #[serde(default)]
    pub causes: BTreeSet<crate::world::Cause>,
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// What the read-only views show beside the causes (`changes`, `logs`, `state`).
    #[serde(default)]
    pub observations: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalSpec {
    /// The webhook path: `alertmanager`, `sarif`, `trivy`, `asff`, `falco`, `kubernetes`, `kubectl`, `cloudevents`, `cdevents`, `generic`.
    pub format: String,
    /// `?service=` for payloads that do not name the service (scanner findings).
    #[serde(default)]
    pub service: String,
    /// `?environment=` likewise.
    #[serde(default)]
    pub environment: String,
    /// The payload as the tool sends it. `${now}` and `${now-15m}` become RFC 3339 times at replay.
    pub payload: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Truth {
    /// The root-cause label, one of the world's causes, or `none` for a false alarm.
    pub root_cause: String,
    /// Regular expressions (case-insensitive); a hypothesis whose `root_cause` matches any is correct.
    pub root_cause_matches: Vec<String>,
    /// Pathways that fix it.
    #[serde(default)]
    pub fixes: Vec<String>,
    /// Pathways that make it worse.
    #[serde(default)]
    pub harmful: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scripted {
    /// Labels a signal of this incident carries; they select this response.
    #[serde(rename = "match")]
    pub match_labels: BTreeMap<String, String>,
    /// Which mistake the response makes, from [`MISTAKES`].
    #[serde(default = "default_mistake")]
    pub mistake: String,
    /// The model's answer, a minijinja template over the snapshot (and `tools`,
    /// the answers of its `investigate` calls).
    pub completion: String,
    /// Read-only tool calls made before answering (the agent's `[[response.investigate]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub investigate: Vec<toml::Table>,
}

fn default_mistake() -> String {
    "none".to_owned()
}

impl Incident {
    /// The first scripted mistake other than `none`, which names the incident's mistake in reports.
    pub fn mistake(&self) -> &str {
        self.scripted.iter().map(|s| s.mistake.as_str()).find(|m| *m != "none").unwrap_or("none")
    }

    pub fn false_alarm(&self) -> bool {
        self.truth.root_cause == "none"
    }

    /// The world specs of this incident's targets, with the truth's harm list.
    pub fn resources(&self) -> impl Iterator<Item = (&str, ResourceSpec)> {
        self.targets.iter().map(|t| {
            (
                t.name.as_str(),
                ResourceSpec {
                    causes: t.world.causes.clone(),
                    facts: t.world.facts.clone(),
                    depends_on: t.world.depends_on.clone(),
                    harmful: self.truth.harmful.iter().cloned().collect(),
                    observations: t.world.observations.clone(),
                },
            )
        })
    }

    pub fn service_of(&self, target: &TargetSpec) -> String {
        if target.service.is_empty() { target.name.clone() } else { target.service.clone() }
    }
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CorpusError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("`{file}`: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error("corpus `{0}` holds no incidents")]
    Empty(PathBuf),
}

fn invalid(file: &Path, message: impl Into<String>) -> CorpusError {
    CorpusError::Invalid { file: file.to_owned(), message: message.into() }
}

/// Fills `${now}` and `${now-Nm}` (minutes) with RFC 3339 times relative to `now_ms`.
pub fn render_payload(payload: &str, now_ms: i64) -> String {
    let mut out = String::with_capacity(payload.len());
    let mut rest = payload;
    while let Some(start) = rest.find("${now") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 5..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let offset = after[..end].trim();
        let minutes: i64 = offset.strip_prefix('-').and_then(|m| m.trim_end_matches('m').parse().ok()).unwrap_or(0);
        out.push_str(&arf_core::time::format_ms(now_ms - minutes * 60_000));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Parses an incident's signals with the agent's own ingest adapters.
pub fn parse_signals(incident: &Incident, now_ms: i64) -> Result<Vec<arf_core::signal::Signal>, String> {
    let mut all = Vec::new();
    for (i, spec) in incident.signals.iter().enumerate() {
        let defaults = arf_agent::ingest::Defaults { now_ms, service: spec.service.clone(), environment: spec.environment.clone() };
        let body = render_payload(&spec.payload, now_ms);
        let signals = arf_agent::ingest::parse(&spec.format, body.as_bytes(), &defaults).map_err(|e| format!("signal[{i}] ({}): {e}", spec.format))?;
        all.extend(signals);
    }
    Ok(all)
}

/// Change events are context, never what a scripted response is selected by.
fn selectable(signal: &arf_core::signal::Signal) -> bool {
    signal.kind != arf_core::signal::SignalKind::Change
}

fn matches(labels: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Loads and validates every `*.toml` in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Incident>, CorpusError> {
    let read = std::fs::read_dir(dir).map_err(|source| CorpusError::Read { path: dir.to_owned(), source })?;
    let mut files: Vec<PathBuf> =
        read.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    files.sort();
    let mut incidents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| CorpusError::Read { path: file.clone(), source })?;
        let mut incident: Incident = toml::from_str(&text).map_err(|e| invalid(&file, e.to_string()))?;
        if incident.id.is_empty() {
            incident.id = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        }
        incident.file.clone_from(&file);
        validate(&incident)?;
        incidents.push(incident);
    }
    if incidents.is_empty() {
        return Err(CorpusError::Empty(dir.to_owned()));
    }
    validate_corpus(&incidents)?;
    Ok(incidents)
}

fn validate(incident: &Incident) -> Result<(), CorpusError> {
    let file = &incident.file;
    if !CLASSES.contains(&incident.class.as_str()) {
        return Err(invalid(file, format!("`class`: unknown class `{}`; expected one of {}", incident.class, CLASSES.join(", "))));
    }
    if incident.scripted.is_empty() {
        return Err(invalid(file, "needs at least one `[[scripted]]` response"));
    }
    if let Some(bad) = incident.scripted.iter().find(|s| !MISTAKES.contains(&s.mistake.as_str())) {
        return Err(invalid(file, format!("`scripted.mistake`: unknown mistake `{}`; expected one of {}", bad.mistake, MISTAKES.join(", "))));
    }
    if incident.targets.is_empty() || incident.signals.is_empty() {
        return Err(invalid(file, "needs at least one `[[target]]` and one `[[signal]]`"));
    }
    for pattern in &incident.truth.root_cause_matches {
        regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .build()
            .map_err(|e| invalid(file, format!("`truth.root_cause_matches`: `{pattern}`: {e}")))?;
    }
    let names: BTreeSet<&str> = incident.targets.iter().map(|t| t.name.as_str()).collect();
    for target in &incident.targets {
        if let Some(missing) = target.world.depends_on.iter().find(|d| !names.contains(d.as_str())) {
            return Err(invalid(file, format!("target `{}`: `depends_on` names `{missing}`, which is not a target of this incident", target.name)));
        }
        if let Some(view) = target.world.observations.keys().find(|v| !crate::world::VIEWS.contains(&v.as_str())) {
            return Err(invalid(file, format!("target `{}`: `observations.{view}` is not a view (one of {})", target.name, crate::world::VIEWS.join(", "))));
        }
    }
    for (i, step) in incident.scripted.iter().flat_map(|s| &s.investigate).enumerate() {
        if !step.get("tool").is_some_and(toml::Value::is_str) || step.keys().any(|k| k != "tool" && k != "arguments") {
            return Err(invalid(file, format!("`scripted.investigate[{i}]` takes `tool` (a name) and `arguments` (a table)")));
        }
    }
    let has_cause = incident.targets.iter().any(|t| !t.world.causes.is_empty());
    if incident.false_alarm() == has_cause {
        return Err(invalid(file, "`truth.root_cause = \"none\"` (a false alarm) exactly when no target starts broken"));
    }
    let signals = parse_signals(incident, arf_core::time::now_ms()).map_err(|e| invalid(file, e))?;
    for (i, scripted) in incident.scripted.iter().enumerate() {
        if !signals.iter().any(|s| selectable(s) && matches(&s.labels, &scripted.match_labels)) {
            return Err(invalid(file, format!("`scripted[{i}].match`: no alert, finding or detection of this incident carries these labels")));
        }
    }
    Ok(())
}

fn validate_corpus(incidents: &[Incident]) -> Result<(), CorpusError> {
    let mut targets: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut ids: BTreeSet<&str> = BTreeSet::new();
    let now = arf_core::time::now_ms();
    for incident in incidents {
        if !ids.insert(incident.id.as_str()) {
            return Err(invalid(&incident.file, format!("incident id `{}` is used twice", incident.id)));
        }
        for target in &incident.targets {
            if let Some(other) = targets.insert(target.name.as_str(), &incident.file) {
                return Err(invalid(&incident.file, format!("target `{}` is also used by `{}`; targets are unique across the corpus", target.name, other.display())));
            }
        }
    }
    // Scripted responses are selected by labels, and every incident's must select it alone.
    for incident in incidents {
        for other in incidents.iter().filter(|o| o.id != incident.id) {
            let signals = parse_signals(other, now).map_err(|e| invalid(&other.file, e))?;
            for scripted in &incident.scripted {
                if signals.iter().any(|s| selectable(s) && matches(&s.labels, &scripted.match_labels)) {
                    return Err(invalid(&incident.file, format!("`scripted.match` also selects a signal of `{}`; make it specific", other.id)));
                }
            }
        }
    }
    Ok(())
}
