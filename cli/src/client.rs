//! The commands people and tooling run against live services.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};

use arf_proto::v1 as pb;
use arf_proto::v1::agent_client::AgentClient;
use arf_proto::v1::governor_client::GovernorClient;


/// Where the services are, and who the caller is. Its `Debug` leaves the token out.
#[derive(Clone)]
pub struct Endpoints {
    pub agent: String,
    pub governor: String,
    pub audit: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Your client certificate, for a deployment on mutual TLS.
    pub tls: Option<std::sync::Arc<arf_proto::tls::ClientTls>>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("agent", &self.agent)
            .field("governor", &self.governor)
            .field("audit", &self.audit)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

/// The client certificate in `dir` (`ca.pem`, `client.pem`, `client.key`); without
/// `dir`, the one in `.arf/certs` if there is one, else none (plain text).
pub fn client_tls(dir: Option<&Path>) -> Result<Option<std::sync::Arc<arf_proto::tls::ClientTls>>> {
    let default = Path::new(".arf/certs");
    let dir = match dir {
        Some(dir) => dir,
        None if default.join("client.pem").exists() => default,
        None => return Ok(None),
    };
    let files = arf_core::tls::TlsFiles::in_dir(dir, "client");
    Ok(Some(arf_proto::tls::ClientTls::load(&files).with_context(|| format!("the client certificate in `{}` (`--tls-dir`)", dir.display()))?))
}

fn endpoint(address: &str) -> Result<Endpoint> {
    let uri = if address.starts_with("http") { address.to_owned() } else { format!("http://{address}") };
    Ok(Endpoint::from_shared(uri)
        .with_context(|| format!("`{address}` is not a valid address"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30)))
}

impl Endpoints {
    /// Mutual TLS to `role` at `address` with your client certificate; plain text
    /// only to this machine, so a token never crosses a network in clear text.
    fn dial(&self, role: arf_core::identity::Role, address: &str) -> Result<arf_proto::tls::Dial> {
        if self.tls.is_none() && !arf_core::tls::is_loopback_address(address) {
            bail!(
                "refusing to send your token to the {role} at `{address}` in clear text: give the deployment's certificates with `--tls-dir DIR` (or `ARF_TLS_DIR`)"
            );
        }
        Ok(arf_proto::tls::Dial::to(self.tls.as_ref(), role))
    }

    /// The agent, called with your token (it refuses anonymous calls).
    pub fn agent(&self) -> Result<AgentClient<arf_proto::server::Authenticated>> {
        let bearer = arf_proto::server::Bearer::new(Some(&self.token()?));
        let channel = self.dial(arf_core::identity::Role::Agent, &self.agent)?.channel(endpoint(&self.agent)?);
        Ok(AgentClient::with_interceptor(channel, bearer).max_decoding_message_size(64 * 1024 * 1024))
    }

    pub fn governor(&self) -> Result<GovernorClient<Channel>> {
        Ok(GovernorClient::new(self.dial(arf_core::identity::Role::Governor, &self.governor)?.channel(endpoint(&self.governor)?)))
    }

    /// The audit log, read with your token (the log refuses anonymous reads).
    pub fn audit(&self) -> Result<arf_audit::AuditClient> {
        let dial = self.dial(arf_core::identity::Role::Audit, &self.audit)?;
        Ok(arf_audit::AuditClient::connect_dial(&self.audit, Some(self.token()?), &dial)?)
    }

    fn token(&self) -> Result<String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        if let Some(file) = &self.token_file {
            return Ok(arf_core::keys::load_token(file)?);
        }
        bail!("ARF needs to know who you are: set `ARF_TOKEN`, or `--token-file FILE` (a local `arf up` writes tokens under `.arf/secrets/`)")
    }

    /// A request carrying the caller's token.
    pub fn authed<T>(&self, message: T) -> Result<tonic::Request<T>> {
        Ok(arf_proto::server::with_bearer(tonic::Request::new(message), &self.token()?))
    }
}

fn status(error: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", error.message(), error.code())
}

/// A service refused the call: its answer names why (the caller's role, policy, an
/// approval that does not count). `arf` exits 2 for it, whatever the command.
#[derive(Debug, thiserror::Error)]
#[error("refused by the {service}: {message}")]
pub struct Refused {
    pub service: String,
    pub message: String,
}

/// Whether `error` is a refusal (not a failure to reach or to do).
pub fn is_refusal(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::PermissionDenied | tonic::Code::FailedPrecondition | tonic::Code::Unauthenticated)
}

/// A failed call to a service: a refusal is [`Refused`]; when the service could not
/// be reached, the error names where it was looked for and how to point the CLI elsewhere.
fn failed(error: tonic::Status, service: &str, address: &str, option: &str) -> anyhow::Error {
    if is_refusal(error.code()) {
        return anyhow::Error::new(Refused { service: service.to_owned(), message: error.message().to_owned() });
    }
    if error.code() == tonic::Code::Unavailable && error.message().to_lowercase().contains("connect") {
        return anyhow::anyhow!(
            "cannot reach the {service} at {address} ({}): is it running? Point `{option}` at it",
            error.message()
        );
    }
    status(error)
}

impl Endpoints {
    /// Maps a failed call to the agent ([`failed`]).
    pub fn agent_failed(&self) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
        |error| failed(error, "agent", &self.agent, "--agent` or `ARF_AGENT")
    }

    /// Maps a failed call to the governor ([`failed`]).
    pub fn governor_failed(&self) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
        |error| failed(error, "governor", &self.governor, "--governor` or `ARF_GOVERNOR")
    }

    /// Names the audit log's address in a failed read.
    pub fn audit_failed(&self) -> impl Fn(arf_audit::AuditError) -> anyhow::Error + '_ {
        |error| match &error {
            // The log refused who is asking: a refusal, like any service's.
            arf_audit::AuditError::Refused(message) if message.starts_with("Unauthenticated") || message.starts_with("PermissionDenied") => {
                anyhow::Error::new(Refused { service: "audit log".to_owned(), message: message.clone() })
            }
            _ => anyhow::anyhow!("the audit log at {} (`--audit` or `ARF_AUDIT`): {error}", self.audit),
        }
    }
}

pub async fn send_signal(endpoints: &Endpoints, file: &Path, format: Option<&str>, service: Option<&str>, environment: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let body = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let format = match format {
        Some(format) => format.to_owned(),
        None => arf_agent::ingest::detect(&body)
            .with_context(|| format!("cannot tell the format of `{}`; name it with `--format`", file.display()))?
            .to_owned(),
    };
    let request = pb::SubmitWebhookRequest { format: format.clone(), body, service: service.unwrap_or_default().to_owned(), environment: environment.unwrap_or_default().to_owned() };
    let response = endpoints.agent()?.submit_webhook(request).await.map_err(endpoints.agent_failed())?.into_inner();
    if as_json {
        let accepted: Vec<Value> = response
            .accepted
            .iter()
            .map(|a| json!({"signal_id": a.signal_id, "fingerprint": a.fingerprint, "incident_id": a.incident_id, "duplicate": a.duplicate, "audit_seq": a.audit_seq}))
            .collect();
        say!("{}", serde_json::to_string_pretty(&json!({"format": format, "accepted": accepted}))?);
    } else {
        say!("{} signal(s) accepted as `{format}`", response.accepted.len());
        for a in &response.accepted {
            let incident = if a.incident_id.is_empty() { "(change: context only)".to_owned() } else { a.incident_id.clone() };
            say!("  {}  incident {}  audit #{}{}", a.signal_id, incident, a.audit_seq, if a.duplicate { "  (duplicate)" } else { "" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn incident_json(i: &pb::Incident) -> Value {
    json!({"id": i.id, "title": i.title, "service": i.service, "environment": i.environment, "state": i.state,
           "signal_count": i.signal_count, "opened_at": arf_core::time::format_ms(i.opened_at_ms),
           "snapshot_hash": i.snapshot_hash, "decision_ids": i.decision_ids, "reason": i.reason})
}

pub async fn list_incidents(endpoints: &Endpoints, as_json: bool) -> Result<ExitCode> {
    let incidents = endpoints.agent()?.list_incidents(pb::ListIncidentsRequest {}).await.map_err(endpoints.agent_failed())?.into_inner().incidents;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&incidents.iter().map(incident_json).collect::<Vec<_>>())?);
        return Ok(ExitCode::SUCCESS);
    }
    say!("{:<30} {:<10} {:<12} {:<12} {:>7}  TITLE", "ID", "STATE", "SERVICE", "ENVIRONMENT", "SIGNALS");
    for i in &incidents {
        say!("{:<30} {:<10} {:<12} {:<12} {:>7}  {}", i.id, i.state, i.service, i.environment, i.signal_count, i.title);
    }
    Ok(ExitCode::SUCCESS)
}

/// One line describing an audit record, for trails.
pub fn describe(record: &arf_audit::Record) -> String {
    format!(
        "#{:<5} {}  {:<9} {:<18} {}",
        record.seq,
        arf_core::time::format_ms(record.time_ms),
        record.writer,
        record.kind.as_str(),
        detail(record)
    )
}

/// What a record says, in one line (without its sequence, time, writer and kind).
pub fn detail(record: &arf_audit::Record) -> String {
    let p = &record.payload;
    let s = |key: &str| p.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    match record.kind {
        arf_audit::RecordKind::Signal => {
            let signal = &p["signal"];
            format!(
                "{} {} `{}`{}",
                signal["status"].as_str().unwrap_or_default(),
                signal["kind"].as_str().unwrap_or_default(),
                signal["title"].as_str().unwrap_or_default(),
                if p["duplicate"].as_bool() == Some(true) { " (duplicate)" } else { "" }
            )
        }
        arf_audit::RecordKind::Incident => {
            let mut text = s("event");
            for key in ["reason", "decision_id", "route"] {
                if let Some(value) = p.get(key).and_then(Value::as_str) {
                    text.push_str(&format!(" {key}={value}"));
                }
            }
            text
        }
        arf_audit::RecordKind::Snapshot => format!("hash {}", s("hash")),
        arf_audit::RecordKind::Diagnosis => {
            let mut text = format!("{} by {} ({})", s("status"), s("reasoner"), s("model"));
            if let Some(reasons) = p.get("reasons").and_then(Value::as_array) {
                let reasons: Vec<&str> = reasons.iter().filter_map(Value::as_str).collect();
                text.push_str(&format!(": {}", reasons.join("; ")));
            }
            if let Some(proposal) = p.get("proposal") {
                text.push_str(&format!(
                    " → propose `{}` on `{}`",
                    proposal["remediation"]["pathway"].as_str().unwrap_or_default(),
                    proposal["remediation"]["target"].as_str().unwrap_or_default()
                ));
            }
            text
        }
        _ => {
            let mut parts = Vec::new();
            for key in ["decision_id", "state", "route", "verdict", "identity", "outcome", "passed", "detail", "error"] {
                match p.get(key) {
                    Some(Value::String(v)) if !v.is_empty() => parts.push(format!("{key}={v}")),
                    Some(Value::Bool(v)) => parts.push(format!("{key}={v}")),
                    _ => {}
                }
            }
            parts.join(" ")
        }
    }
}

pub async fn show_incident(endpoints: &Endpoints, id: &str, as_json: bool) -> Result<ExitCode> {
    let incident = endpoints
        .agent()?
        .get_incident(pb::GetIncidentRequest { incident_id: id.to_owned() })
        .await
        .map(|r| r.into_inner())
        .ok();
    let trail = endpoints.audit()?.read_incident(id).await.map_err(endpoints.audit_failed())?;
    if incident.is_none() && trail.is_empty() {
        bail!("no incident `{id}`");
    }
    if as_json {
        let trail: Vec<Value> = trail.iter().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect();
        say!("{}", serde_json::to_string_pretty(&json!({"incident": incident.as_ref().map(incident_json), "trail": trail}))?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(i) = &incident {
        say!("incident {}: {} ({}/{}) is {}", i.id, i.title, i.service, i.environment, i.state);
        if !i.reason.is_empty() {
            say!("  {}", i.reason);
        }
    }
    say!("trail ({} records):", trail.len());
    for record in &trail {
        say!("  {}", describe(record));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn route_name(route: i32) -> &'static str {
    match pb::Route::try_from(route) {
        Ok(pb::Route::Autonomous) => "autonomous",
        Ok(pb::Route::Acknowledge) => "acknowledge",
        Ok(pb::Route::Approval) => "approval",
        Ok(pb::Route::Deny) => "deny",
        _ => "unspecified",
    }
}

pub fn decision_json(d: &pb::Decision) -> Value {
    let remediation = d.remediation.clone().unwrap_or_default();
    json!({
        "decision_id": d.decision_id, "incident_id": d.incident_id, "route": route_name(d.route), "state": d.state,
        "pathway": remediation.pathway, "target": remediation.target, "parameters": serde_json::from_str::<Value>(&remediation.parameters_json).unwrap_or(Value::Null),
        "environment": d.environment, "risk": d.risk.as_ref().map(|r| json!({"score": r.score, "band": r.band})),
        "approvals_required": d.policy.as_ref().map(|p| p.approvals_required), "approvals": d.approvals.iter().map(|a| json!({"identity": a.identity, "role": a.role, "verdict": a.verdict})).collect::<Vec<_>>(),
        "expires_at": arf_core::time::format_ms(d.expires_at_ms), "confidence": d.confidence, "root_cause": d.root_cause,
    })
}

pub async fn pending(endpoints: &Endpoints, as_json: bool) -> Result<ExitCode> {
    let request = endpoints.authed(pb::ListPendingRequest {})?;
    let decisions = endpoints.governor()?.list_pending(request).await.map_err(endpoints.governor_failed())?.into_inner().decisions;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&decisions.iter().map(decision_json).collect::<Vec<_>>())?);
        return Ok(ExitCode::SUCCESS);
    }
    if decisions.is_empty() {
        say!("nothing is waiting for you");
        return Ok(ExitCode::SUCCESS);
    }
    say!("{:<30} {:<12} {:<22} {:<18} {:<7} {:<9} EXPIRES", "DECISION", "ROUTE", "PATHWAY", "TARGET", "RISK", "APPROVALS");
    for d in &decisions {
        let remediation = d.remediation.clone().unwrap_or_default();
        let risk = d.risk.as_ref().map(|r| format!("{:.2}", r.score)).unwrap_or_default();
        let needed = d.policy.as_ref().map_or(0, |p| p.approvals_required);
        let have = d.approvals.iter().filter(|a| a.verdict == "approve").count();
        say!(
            "{:<30} {:<12} {:<22} {:<18} {:<7} {:<9} {}",
            d.decision_id,
            route_name(d.route),
            remediation.pathway,
            remediation.target,
            risk,
            format!("{have}/{needed}"),
            arf_core::time::format_ms(d.expires_at_ms)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn explain(endpoints: &Endpoints, decision: &str, as_json: bool) -> Result<ExitCode> {
    let request = endpoints.authed(pb::GetDecisionRequest { decision_id: decision.to_owned() })?;
    let explanation = endpoints.governor()?.explain(request).await.map_err(endpoints.governor_failed())?.into_inner();
    if as_json {
        let decision = explanation.decision.as_ref().map(decision_json);
        say!("{}", serde_json::to_string_pretty(&json!({"decision": decision, "text": explanation.text}))?);
    } else {
        say!("{}", explanation.text);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn approve(endpoints: &Endpoints, decision: &str, comment: &str) -> Result<ExitCode> {
    let request = endpoints.authed(pb::ApproveRequest { decision_id: decision.to_owned(), comment: comment.to_owned() })?;
    match endpoints.governor()?.approve(request).await {
        Ok(response) => {
            let d = response.into_inner();
            say!("decision {} is now {}", d.decision_id, d.state);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => Err(endpoints.governor_failed()(error)),
    }
}

pub async fn reject(endpoints: &Endpoints, decision: &str, reason: &str) -> Result<ExitCode> {
    let request = endpoints.authed(pb::RejectRequest { decision_id: decision.to_owned(), reason: reason.to_owned() })?;
    let d = endpoints.governor()?.reject(request).await.map_err(endpoints.governor_failed())?.into_inner();
    say!("decision {} is now {}", d.decision_id, d.state);
    Ok(ExitCode::SUCCESS)
}
