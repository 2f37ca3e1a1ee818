//! The simulated world: services whose state changes when pathways act on them.
//!
//! Each target of the eval inventory is one simulated resource (a service, a
//! bucket, an IAM role) with the causes that currently break it. The eval
//! pathways are ordinary `http` pathways that `POST {{target.url}}/act` with an
//! action name and their parameters, and verify with `GET {{target.url}}/health`.
//! An action removes a cause only when it is the remedy for that cause *and* its
//! parameters name the right thing (the bad commit, the leaked credential), so a
//! wrong remediation really fails verification and a right one really passes.
//!
//! Time is simulated: every action costs the minutes in [`action_minutes`], and
//! the human constants in [`human`] price what people do, so MTTR is in simulated
//! minutes and does not depend on how fast this machine is.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Documented constants for what people cost, in simulated minutes.
pub mod human {
    /// From a page to an on-call engineer reading the explanation and approving (first approver).
    pub const APPROVAL_RESPONSE_MIN: f64 = 15.0;
    /// Each further distinct approver.
    pub const EXTRA_APPROVER_MIN: f64 = 10.0;
    /// From an escalation (nothing proposed, denied, rejected, rolled back) to an engineer starting to work on it.
    pub const ESCALATION_RESPONSE_MIN: f64 = 20.0;
    /// Triage that concludes an alert was a false alarm.
    pub const FALSE_ALARM_TRIAGE_MIN: f64 = 10.0;
    /// Cleaning up after a harmful action (restore, forensics, customer comms).
    pub const HARM_RECOVERY_MIN: f64 = 60.0;
    /// The agent's context assembly and model call.
    pub const DIAGNOSIS_MIN: f64 = 1.0;
    /// A pathway's verification window.
    pub const VERIFY_WINDOW_MIN: f64 = 5.0;
}

/// Why a simulated resource is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    BadRelease,
    BadConfig,
    ConfigDrift,
    MissingEnv,
    MemoryLeak,
    DiskFull,
    CertExpired,
    UpstreamOutage,
    PublicBucket,
    OverPermissiveIam,
    VulnerableDependency,
    LeakedSecret,
    ShellInContainer,
}

impl Cause {
    /// The action that removes this cause, and the fact its parameter must match
    /// (`(parameter, fact)`), if any.
    pub fn remedy(self) -> (&'static str, &'static [(&'static str, &'static str)]) {
        match self {
            Self::BadRelease | Self::MissingEnv => ("rollback_deployment", &[("revision", "good_revision")]),
            Self::BadConfig => ("revert_config_commit", &[("commit", "bad_commit")]),
            Self::ConfigDrift => ("reconcile_drift", &[]),
            Self::MemoryLeak => ("restart_service", &[]),
            Self::DiskFull => ("free_disk_space", &[]),
            Self::CertExpired => ("renew_certificate", &[]),
            Self::UpstreamOutage => ("failover_upstream", &[]),
            Self::PublicBucket => ("block_public_bucket", &[]),
            Self::OverPermissiveIam => ("restrict_iam_policy", &[("policy", "policy")]),
            Self::VulnerableDependency => ("pin_dependency", &[("package", "package"), ("version", "fixed_version")]),
            Self::LeakedSecret => ("rotate_credential", &[("credential", "credential")]),
            Self::ShellInContainer => ("isolate_workload", &[("pod", "pod")]),
        }
    }
}

/// Simulated minutes an action takes, from the request to the change having landed.
pub fn action_minutes(action: &str) -> f64 {
    match action {
        "restart_service" => 3.0,
        "rollback_deployment" => 6.0,
        "revert_config_commit" => 4.0,
        "reconcile_drift" => 4.0,
        "free_disk_space" => 5.0,
        "renew_certificate" => 5.0,
        "failover_upstream" => 2.0,
        "block_public_bucket" | "restrict_iam_policy" | "isolate_workload" => 2.0,
        "pin_dependency" => 12.0,
        "rotate_credential" => 8.0,
        "scale_out" => 4.0,
        _ => 5.0,
    }
}

/// How one simulated resource starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    #[serde(default)]
    pub causes: BTreeSet<Cause>,
    /// Facts that decide whether parameters are right: `good_revision`, `bad_commit`, ...
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    /// Other targets this one needs healthy to be healthy itself.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Actions that make things worse here (the ground truth's harmful remediations).
    #[serde(default)]
    pub harmful: BTreeSet<String>,
    /// Lines the read-only views show beside what the causes show, by view
    /// (`changes`, `logs`, `state`): the red herrings of the incident, such as a
    /// release that rolled out but broke nothing.
    #[serde(default)]
    pub observations: BTreeMap<String, Vec<String>>,
}

/// The read-only views of a resource that investigation tools look at.
pub const VIEWS: [&str; 3] = ["changes", "logs", "state"];

impl Cause {
    /// What each read-only view shows of this cause, from the resource's facts: the
    /// world's own evidence, the same for every incident with this cause.
    pub fn observed(self, view: &str, facts: &BTreeMap<String, String>) -> Vec<String> {
        let fact = |name: &str, otherwise: &str| facts.get(name).cloned().unwrap_or_else(|| otherwise.to_owned());
        let good = fact("good_revision", "the previous revision");
        let lines: Vec<String> = match (self, view) {
            (Self::BadRelease, "changes") => vec![format!("-40m rollout of a new revision (previous: {good}); the error rate rose within 2 minutes of it")],
            (Self::BadRelease, "logs") => vec!["ERROR unhandled exception in the request handler introduced by the new revision (stack trace points at new code)".into()],
            (Self::BadRelease, "state") => vec!["error rate 30% since the last rollout, 0.1% before; memory and disk flat".into()],
            (Self::MissingEnv, "changes") => vec![format!("-30m rollout of a new revision (previous: {good}) whose manifest drops an environment variable")],
            (Self::MissingEnv, "logs") => vec!["FATAL required environment variable is not set; exiting".into()],
            (Self::MissingEnv, "state") => vec!["new pods crash at start; pods of the previous revision are healthy".into()],
            (Self::BadConfig, "changes") => vec![format!("-25m config commit {} merged; errors began at its sync", fact("bad_commit", "(unknown)"))],
            (Self::BadConfig, "logs") => vec!["ERROR invalid configuration value after the last config sync; falling back fails".into()],
            (Self::BadConfig, "state") => vec!["error rate high since the last config sync; the running revision is unchanged".into()],
            (Self::ConfigDrift, "changes") => vec!["no commit in the configuration repository for 3 days; the live object differs from it (edited by hand)".into()],
            (Self::ConfigDrift, "state") => vec!["live configuration differs from the repository".into()],
            (Self::MemoryLeak, "state") => vec!["memory working set climbing linearly at constant request rate for 14 h, since before the last rollout; it drops to baseline after each restart".into()],
            (Self::MemoryLeak, "logs") => vec!["WARN GC pause 2.1 s; heap near limit".into()],
            (Self::DiskFull, "state") => vec!["volume /var/lib/data 99.7% used; growth from log files".into()],
            (Self::DiskFull, "logs") => vec!["ERROR write failed: no space left on device".into()],
            (Self::CertExpired, "state") => vec!["serving certificate expired (not_after in the past); TLS handshakes fail".into()],
            (Self::CertExpired, "logs") => vec!["ERROR tls: certificate has expired".into()],
            (Self::UpstreamOutage, "state") => vec!["local process healthy, CPU and memory normal; calls to the upstream dependency time out".into()],
            (Self::UpstreamOutage, "logs") => vec!["ERROR upstream request failed: connect timeout after 5000 ms (the upstream's status page reports an outage)".into()],
            (Self::PublicBucket, "state") => vec!["bucket policy allows public read".into()],
            (Self::OverPermissiveIam, "state") => vec![format!("IAM policy {} grants `*` actions", fact("policy", "(unknown)"))],
            (Self::VulnerableDependency, "state") => vec![format!("package {} at a vulnerable version; fixed in {}", fact("package", "(unknown)"), fact("fixed_version", "(unknown)"))],
            (Self::LeakedSecret, "state") => vec![format!("credential {} appears in a public commit", fact("credential", "(unknown)"))],
            (Self::ShellInContainer, "logs") => vec![format!("audit: interactive shell spawned in pod {}", fact("pod", "(unknown)"))],
            _ => Vec::new(),
        };
        lines
    }
}

/// One action the world saw.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub target: String,
    pub action: String,
    pub decision: String,
    pub parameters: Value,
    /// Causes it removed.
    pub fixed: Vec<Cause>,
    pub harmful: bool,
    pub undone: bool,
    pub minutes: f64,
}

#[derive(Debug, Clone)]
struct Resource {
    spec: ResourceSpec,
    causes: BTreeSet<Cause>,
    harmed: Vec<String>,
    /// Chaos: health answers alternate between healthy and failing.
    flapping: bool,
    probes: u64,
    /// Chaos: real milliseconds an action's answer is held back after it has landed.
    slow_ms: u64,
}

/// The whole world: every resource and the actions applied to it.
#[derive(Debug, Default)]
pub struct World {
    resources: BTreeMap<String, Resource>,
    applied: Vec<Applied>,
}

/// What the harness reads back about one resource.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceState {
    pub healthy: bool,
    pub causes: Vec<Cause>,
    pub harmed: Vec<String>,
}

impl World {
    pub fn add(&mut self, target: &str, spec: ResourceSpec) {
        let causes = spec.causes.clone();
        self.resources.insert(target.to_owned(), Resource { spec, causes, harmed: Vec::new(), flapping: false, probes: 0, slow_ms: 0 });
    }

    pub fn set_flapping(&mut self, target: &str, flapping: bool) {
        if let Some(resource) = self.resources.get_mut(target) {
            resource.flapping = flapping;
        }
    }

    /// Chaos: actions on `target` land at once but answer only after `ms` real
    /// milliseconds, so a process can be killed while one is in flight.
    pub fn set_slow(&mut self, target: &str, ms: u64) {
        if let Some(resource) = self.resources.get_mut(target) {
            resource.slow_ms = ms;
        }
    }

    fn slow_ms(&self, target: &str) -> u64 {
        self.resources.get(target).map_or(0, |r| r.slow_ms)
    }

    /// Whether a resource (and everything it depends on) is healthy, ignoring flapping.
    pub fn healthy(&self, target: &str) -> bool {
        self.healthy_at(target, 0)
    }

    fn healthy_at(&self, target: &str, depth: usize) -> bool {
        let Some(resource) = self.resources.get(target) else { return false };
        if depth > 8 {
            return false;
        }
        resource.causes.is_empty()
            && resource.harmed.is_empty()
            && resource.spec.depends_on.iter().all(|d| self.healthy_at(d, depth + 1))
    }

    pub fn state(&self, target: &str) -> Option<ResourceState> {
        let resource = self.resources.get(target)?;
        Some(ResourceState {
            healthy: self.healthy(target),
            causes: resource.causes.iter().copied().collect(),
            harmed: resource.harmed.clone(),
        })
    }

    pub fn applied(&self) -> &[Applied] {
        &self.applied
    }

    /// What a dry run of `action` with `parameters` on `target` answers (`None` for
    /// an unknown target): what the resource's own API would say before a change,
    /// from its state alone (`running_revision`, the attached `policy`, the shipped
    /// `package` at `installed_version`; facts every resource of that kind has,
    /// whatever breaks it): a rollback to the revision it already runs, a policy it
    /// does not have, a pin to the version it already ships. It never says whether
    /// the action would fix anything; verification finds that out.
    pub fn dry_run(&self, target: &str, action: &str, parameters: &Value) -> Option<Result<String, String>> {
        let resource = self.resources.get(target)?;
        let facts = &resource.spec.facts;
        let given = |name: &str| parameters.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        // The value an earlier action that still stands set, else the resource's own.
        let current = |parameter: &str, fact: &str| {
            self.applied
                .iter()
                .rev()
                .find(|a| a.target == target && a.action == action && !a.undone)
                .and_then(|a| a.parameters.get(parameter).and_then(Value::as_str).map(str::to_owned))
                .or_else(|| facts.get(fact).cloned())
        };
        let refusal = match action {
            "rollback_deployment" => {
                let revision = given("revision");
                (current("revision", "running_revision").as_deref() == Some(revision.as_str()))
                    .then(|| format!("the deployment already runs revision {revision}: rolling back to it changes nothing"))
            }
            "restrict_iam_policy" => {
                let policy = given("policy");
                facts.get("policy").filter(|attached| **attached != policy).map(|_| format!("NoSuchEntity: policy {policy} is not attached to {target}"))
            }
            "pin_dependency" => {
                let (package, version) = (given("package"), given("version"));
                match facts.get("package") {
                    Some(shipped) if *shipped != package => Some(format!("package {package} is not in {target}'s image")),
                    _ => (current("version", "installed_version").as_deref() == Some(version.as_str()))
                        .then(|| format!("{package} is already at version {version}: pinning it changes nothing")),
                }
            }
            _ => None,
        };
        Some(refusal.map_or_else(|| Ok(format!("`{action}` would apply to {target}")), Err))
    }

    /// A read-only view of `target` (`changes`, `logs` or `state`), as an
    /// investigation tool would read it: what its causes show now, and its red herrings.
    pub fn observe(&self, target: &str, view: &str) -> Option<String> {
        let resource = self.resources.get(target)?;
        if !VIEWS.contains(&view) {
            return None;
        }
        let mut lines: Vec<String> = resource.causes.iter().flat_map(|c| c.observed(view, &resource.spec.facts)).collect();
        lines.extend(resource.spec.observations.get(view).into_iter().flatten().cloned());
        for dependency in &resource.spec.depends_on {
            if view == "state" && !self.healthy(dependency) {
                lines.push(format!("dependency `{dependency}` is failing"));
            }
        }
        if lines.is_empty() {
            lines.push(match view {
                "changes" => "no rollout and no config commit in the last 24 h".to_owned(),
                "logs" => "no errors logged in the last hour".to_owned(),
                _ => "all checks pass; resource use normal".to_owned(),
            });
        }
        Some(lines.join("\n"))
    }

    /// Applies `action` with `parameters` for `decision`: removes the causes it
    /// remedies when its parameters are right, and records harm.
    pub fn act(&mut self, target: &str, action: &str, decision: &str, parameters: Value) -> Option<Applied> {
        let resource = self.resources.get_mut(target)?;
        let mut fixed = Vec::new();
        for cause in resource.causes.clone() {
            let (remedy, checks) = cause.remedy();
            let right = checks.iter().all(|(parameter, fact)| {
                let given = parameters.get(*parameter).and_then(Value::as_str).unwrap_or_default();
                let want = resource.spec.facts.get(*fact).map(String::as_str).unwrap_or_default();
                !given.is_empty() && (given == want || (*fact == "bad_commit" && given.len() >= 7 && want.starts_with(given)))
            });
            if remedy == action && right {
                resource.causes.remove(&cause);
                fixed.push(cause);
            }
        }
        let harmful = resource.spec.harmful.contains(action);
        if harmful {
            resource.harmed.push(action.to_owned());
        }
        let applied = Applied {
            target: target.to_owned(),
            action: action.to_owned(),
            decision: decision.to_owned(),
            parameters,
            fixed,
            harmful,
            undone: false,
            minutes: action_minutes(action),
        };
        self.applied.push(applied.clone());
        Some(applied)
    }

    /// Undoes what `decision` did to `target` (a pathway's rollback). Harm done is
    /// not undone: a restart that corrupted data stays in the record.
    pub fn undo(&mut self, target: &str, decision: &str) -> bool {
        let Some(resource) = self.resources.get_mut(target) else { return false };
        let mut undone = false;
        for applied in self.applied.iter_mut().rev().filter(|a| a.target == target && a.decision == decision && !a.undone) {
            resource.causes.extend(applied.fixed.iter().copied());
            applied.undone = true;
            undone = true;
        }
        undone
    }

    /// A health probe: counts samples so flapping alternates.
    fn probe(&mut self, target: &str) -> Option<(bool, Value)> {
        let healthy = self.healthy(target);
        let resource = self.resources.get_mut(target)?;
        resource.probes += 1;
        let flap_down = resource.flapping && resource.probes % 2 == 0;
        let body = json!({
            "target": target,
            "healthy": healthy && !flap_down,
            "causes": resource.causes,
            "harmed": resource.harmed,
            "flapping": resource.flapping,
        });
        Some((healthy && !flap_down, body))
    }
}

/// A world shared between the HTTP server and the harness.
pub type SharedWorld = Arc<Mutex<World>>;

/// The simulator's HTTP API, one path prefix per target:
/// `GET /t/{target}/health`, `POST /t/{target}/act`, `POST /t/{target}/undo`,
/// `GET /t/{target}/observe/{view}` (read-only, for investigation tools), and `GET /state`.
pub fn router(world: SharedWorld) -> axum::Router {
    axum::Router::new()
        .route("/t/{target}/health", get(health))
        .route("/t/{target}/act", post(act))
        .route("/t/{target}/undo", post(undo))
        .route("/t/{target}/dry-run", post(dry_run))
        .route("/t/{target}/observe/{view}", get(observe))
        .route("/state", get(state))
        .with_state(world)
}

/// Serves the simulator on `listener` until the task is dropped.
pub async fn serve(world: SharedWorld, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(world)).await
}

/// Binds loopback on an ephemeral port and serves the world in the background.
pub async fn spawn(world: SharedWorld) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((addr, tokio::spawn(serve(world, listener))))
}

fn lock(world: &SharedWorld) -> std::sync::MutexGuard<'_, World> {
    world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn health(State(world): State<SharedWorld>, Path(target): Path<String>) -> (StatusCode, Json<Value>) {
    match lock(&world).probe(&target) {
        Some((true, body)) => (StatusCode::OK, Json(body)),
        Some((false, body)) => (StatusCode::SERVICE_UNAVAILABLE, Json(body)),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("unknown target `{target}`")}))),
    }
}

async fn observe(State(world): State<SharedWorld>, Path((target, view)): Path<(String, String)>) -> (StatusCode, String) {
    match lock(&world).observe(&target, &view) {
        Some(text) => (StatusCode::OK, text),
        None => (StatusCode::NOT_FOUND, format!("no view `{view}` of `{target}`")),
    }
}

#[derive(Debug, Deserialize)]
struct ActRequest {
    action: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    parameters: Value,
}

async fn act(State(world): State<SharedWorld>, Path(target): Path<String>, Json(request): Json<ActRequest>) -> (StatusCode, Json<Value>) {
    let (applied, slow_ms) = {
        let mut world = lock(&world);
        (world.act(&target, &request.action, &request.decision, request.parameters), world.slow_ms(&target))
    };
    if slow_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(slow_ms)).await;
    }
    match applied {
        Some(applied) => (StatusCode::OK, Json(json!({"applied": applied.action, "fixed": applied.fixed}))),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("unknown target `{target}`")}))),
    }
}

/// A dry run of an action: `200` when it would apply, `409` with the reason when
/// the resource's state says it would not; nothing changes either way.
async fn dry_run(State(world): State<SharedWorld>, Path(target): Path<String>, Json(request): Json<ActRequest>) -> (StatusCode, Json<Value>) {
    match lock(&world).dry_run(&target, &request.action, &request.parameters) {
        Some(Ok(message)) => (StatusCode::OK, Json(json!({"dry_run": message}))),
        Some(Err(error)) => (StatusCode::CONFLICT, Json(json!({"error": error}))),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("unknown target `{target}`")}))),
    }
}

#[derive(Debug, Deserialize)]
struct UndoRequest {
    #[serde(default)]
    decision: String,
}

async fn undo(State(world): State<SharedWorld>, Path(target): Path<String>, Json(request): Json<UndoRequest>) -> (StatusCode, Json<Value>) {
    let mut world = lock(&world);
    if world.state(&target).is_none() {
        return (StatusCode::NOT_FOUND, Json(json!({"error": format!("unknown target `{target}`")})));
    }
    let undone = world.undo(&target, &request.decision);
    (StatusCode::OK, Json(json!({"undone": undone})))
}

async fn state(State(world): State<SharedWorld>) -> Json<Value> {
    let world = lock(&world);
    let resources: BTreeMap<&String, Option<ResourceState>> = world.resources.keys().map(|t| (t, world.state(t))).collect();
    Json(json!({"resources": resources, "applied": world.applied}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(causes: &[Cause], facts: &[(&str, &str)], harmful: &[&str]) -> World {
        let mut world = World::default();
        world.add(
            "api",
            ResourceSpec {
                causes: causes.iter().copied().collect(),
                facts: facts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                depends_on: vec![],
                harmful: harmful.iter().map(|s| (*s).to_owned()).collect(),
                observations: BTreeMap::new(),
            },
        );
        world
    }

    #[test]
    fn the_right_remedy_with_the_right_parameters_fixes() {
        let mut w = world(&[Cause::BadRelease], &[("good_revision", "41")], &[]);
        w.act("api", "rollback_deployment", "d1", json!({"revision": "40"}));
        assert!(!w.healthy("api"), "a rollback to the wrong revision must not fix");
        w.act("api", "restart_service", "d2", json!({}));
        assert!(!w.healthy("api"), "a restart does not fix a bad release");
        w.act("api", "rollback_deployment", "d3", json!({"revision": "41"}));
        assert!(w.healthy("api"));
        assert!(w.undo("api", "d3"));
        assert!(!w.healthy("api"), "undo restores the cause");
    }

    #[test]
    fn harm_sticks_and_dependencies_propagate() {
        let mut w = world(&[Cause::DiskFull], &[], &["restart_service"]);
        w.add("web", ResourceSpec { causes: BTreeSet::new(), facts: BTreeMap::new(), depends_on: vec!["api".into()], harmful: BTreeSet::new(), observations: BTreeMap::new() });
        assert!(!w.healthy("web"));
        w.act("api", "restart_service", "d1", json!({}));
        w.act("api", "free_disk_space", "d2", json!({}));
        assert!(!w.healthy("api"), "the harmful restart left damage");
        assert!(w.applied().iter().any(|a| a.harmful));
    }

    #[test]
    fn views_show_the_causes_present_now_and_the_red_herrings() {
        let mut w = world(&[Cause::MemoryLeak], &[], &[]);
        if let Some(resource) = w.resources.get_mut("api") {
            resource.spec.observations.insert("changes".into(), vec!["-9h rollout of v2.14.0".into()]);
        }
        assert!(w.observe("api", "state").unwrap().contains("since before the last rollout"));
        assert!(w.observe("api", "changes").unwrap().contains("v2.14.0"), "the red herring is there too");
        w.act("api", "restart_service", "d1", json!({}));
        assert_eq!(w.observe("api", "state").unwrap(), "all checks pass; resource use normal");
        assert!(w.observe("api", "secrets").is_none() && w.observe("nope", "state").is_none());
    }

    /// A dry run answers from the resource's state, never from the truth: a wrong
    /// but plausible revision passes it (verification is what catches that), a
    /// no-op is refused, and nothing it answers changes the world.
    #[test]
    fn a_dry_run_refuses_what_the_state_says_changes_nothing_and_applies_nothing() {
        let mut w = world(&[Cause::BadRelease], &[("good_revision", "41"), ("bad_revision", "42"), ("running_revision", "42")], &[]);
        let refused = w.dry_run("api", "rollback_deployment", &json!({"revision": "42"})).unwrap().unwrap_err();
        assert!(refused.contains("already runs revision 42"), "{refused}");
        assert!(w.dry_run("api", "rollback_deployment", &json!({"revision": "40"})).unwrap().is_ok(), "an older revision is a plausible rollback: only verification can say it is wrong");
        assert!(w.dry_run("api", "rollback_deployment", &json!({"revision": "41"})).unwrap().is_ok());
        assert!(w.applied().is_empty() && !w.healthy("api"), "a dry run changes nothing");
        w.act("api", "rollback_deployment", "d1", json!({"revision": "41"}));
        assert!(w.dry_run("api", "rollback_deployment", &json!({"revision": "41"})).unwrap().is_err(), "after the rollback, 41 is what runs");
        assert!(w.dry_run("api", "rollback_deployment", &json!({"revision": "42"})).unwrap().is_ok());
        assert!(w.undo("api", "d1"));
        assert!(w.dry_run("api", "rollback_deployment", &json!({"revision": "42"})).unwrap().is_err(), "undone: 42 runs again");

        let w = world(&[Cause::OverPermissiveIam], &[("policy", "arn:aws:iam::1:policy/etl")], &[]);
        assert!(w.dry_run("api", "restrict_iam_policy", &json!({"policy": "arn:aws:iam::1:policy/etl-v2"})).unwrap().unwrap_err().starts_with("NoSuchEntity"));
        assert!(w.dry_run("api", "restrict_iam_policy", &json!({"policy": "arn:aws:iam::1:policy/etl"})).unwrap().is_ok());

        let w = world(&[Cause::VulnerableDependency], &[("package", "liblzma5"), ("fixed_version", "5.4.5"), ("installed_version", "5.6.0")], &[]);
        assert!(w.dry_run("api", "pin_dependency", &json!({"package": "liblzma5", "version": "5.6.0"})).unwrap().unwrap_err().contains("already at version 5.6.0"));
        assert!(w.dry_run("api", "pin_dependency", &json!({"package": "xz-utils", "version": "5.4.5"})).unwrap().unwrap_err().contains("not in api's image"));
        assert!(w.dry_run("api", "pin_dependency", &json!({"package": "liblzma5", "version": "5.4.4"})).unwrap().is_ok(), "another version is plausible");
        assert!(w.dry_run("nope", "pin_dependency", &json!({})).is_none());
    }

    #[test]
    fn abbreviated_commits_match() {
        let mut w = world(&[Cause::BadConfig], &[("bad_commit", "9f1c2ab44e0d")], &[]);
        w.act("api", "revert_config_commit", "d1", json!({"commit": "9f1c2ab"}));
        assert!(w.healthy("api"));
    }
}
