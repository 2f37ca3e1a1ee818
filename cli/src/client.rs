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
    let mut files = arf_core::tls::TlsFiles::in_dir(dir, "client");
    // A directory made before revocation lists has none; the CLI then checks none.
    files.crl_file = files.crl_file.filter(|crl| crl.exists());
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

    /// The agent, called with your token (it refuses anonymous calls); of several
    /// addresses (agent replicas, `--agent A,B`), the first that answers its health
    /// check SERVING, else the first.
    pub async fn agent(&self) -> Result<AgentClient<arf_proto::server::Authenticated>> {
        let chosen = self.choose(arf_core::identity::Role::Agent, &self.agent, "").await;
        let bearer = arf_proto::server::Bearer::new(Some(&self.token()?));
        let channel = self.dial(arf_core::identity::Role::Agent, chosen)?.channel(endpoint(chosen)?);
        Ok(AgentClient::with_interceptor(channel, bearer).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// The governor; of several addresses (governor replicas, `--governor A,B`),
    /// the one that leads now (its `arf.v1.Governor` health is SERVING), else the first.
    pub async fn governor(&self) -> Result<GovernorClient<Channel>> {
        let chosen = self.choose(arf_core::identity::Role::Governor, &self.governor, "arf.v1.Governor").await;
        Ok(GovernorClient::new(self.dial(arf_core::identity::Role::Governor, chosen)?.channel(endpoint(chosen)?)))
    }

    /// The audit log, read with your token (the log refuses anonymous reads).
    pub fn audit(&self) -> Result<arf_audit::AuditClient> {
        let dial = self.dial(arf_core::identity::Role::Audit, &self.audit)?;
        Ok(arf_audit::AuditClient::connect_dial(&self.audit, Some(self.token()?), &dial)?)
    }

    /// Whether the service in `role` at `address` answers its health check SERVING.
    /// Of `addresses` (one, or several separated by commas), the first whose
    /// `service` (`""`: the process) answers the health check SERVING; with one,
    /// or none serving, the first.
    async fn choose<'a>(&self, role: arf_core::identity::Role, addresses: &'a str, service: &str) -> &'a str {
        let list: Vec<&str> = arf_core::net::addresses(addresses).collect();
        if list.len() > 1 {
            for address in &list {
                if let Ok(dial) = self.dial(role, address)
                    && crate::supervisor::health_of(address, &dial, service).await
                {
                    return address;
                }
            }
        }
        list.first().copied().unwrap_or(addresses)
    }

    pub async fn serving(&self, role: arf_core::identity::Role, address: &str) -> bool {
        match self.dial(role, address) {
            Ok(dial) => crate::supervisor::health(address, &dial).await,
            Err(_) => false,
        }
    }

    pub fn token(&self) -> Result<String> {
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
    let body = read_signal_file(file)?;
    let format = match format {
        Some(format) => format.to_owned(),
        None => match arf_agent::ingest::detect(&body) {
            Some(format) => format.to_owned(),
            None => bail!("{}", undetected(file, &body)),
        },
    };
    let request = pb::SubmitWebhookRequest { format: format.clone(), body, service: service.unwrap_or_default().to_owned(), environment: environment.unwrap_or_default().to_owned() };
    let response = endpoints.agent().await?.submit_webhook(request).await.map_err(endpoints.agent_failed())?.into_inner();
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

/// Runs `show` once, or with `every` seconds (`--watch`) again and again until
/// Ctrl-C: on a terminal each time on a cleared screen, otherwise after a line
/// naming the time. A failure is shown and the next round tried.
pub async fn watching<F, Fut>(every: Option<u64>, mut show: F) -> Result<ExitCode>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode>>,
{
    use std::io::IsTerminal as _;
    let Some(secs) = every else { return show().await };
    let terminal = std::io::stdout().is_terminal();
    let stop = crate::serve::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let now = arf_core::time::format_ms(arf_core::time::now_ms());
        if terminal {
            // Clear the screen and go home; only on a terminal.
            print!("\x1b[2J\x1b[H");
            say!("every {secs}s, {now} (Ctrl-C to stop)\n");
        } else {
            say!("--- {now}");
        }
        if let Err(error) = show().await {
            warn_user!("error: {error:#}");
        }
        tokio::select! {
            () = &mut stop => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(Duration::from_secs(secs.max(1))) => {}
        }
    }
}

/// The signal file, read whole only when it is within what one submission may
/// carry; an empty file, or one over the limit, is refused before anything is sent.
fn read_signal_file(file: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let limit = arf_agent::ingest::MAX_BODY_BYTES;
    let opened = std::fs::File::open(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let mut body = Vec::new();
    // One byte past the limit is enough to know it is over (a pipe has no size).
    opened.take(limit as u64 + 1).read_to_end(&mut body).with_context(|| format!("cannot read `{}`", file.display()))?;
    if body.len() > limit {
        let size = std::fs::metadata(file).map(|m| m.len()).ok().filter(|&n| n > 0).map_or_else(|| "more than that".to_owned(), |n| format!("{n} bytes"));
        bail!(
            "`{}` is {size}; one submission carries at most {limit} bytes (1 MiB): split it (one report per scan target, or fewer results per file) and send the parts",
            file.display()
        );
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        bail!("`{}` is empty: there is no signal to send", file.display());
    }
    Ok(body)
}

/// Why the format of `body` could not be told, as precisely as the content allows.
fn undetected(file: &Path, body: &[u8]) -> String {
    let formats = arf_agent::ingest::FORMATS.join(", ");
    let starts_as_json = body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| matches!(b, b'{' | b'['));
    match serde_json::from_slice::<Value>(body) {
        Err(error) if starts_as_json && error.is_eof() => format!("`{}` ends before its JSON does ({error}): was it cut off?", file.display()),
        Err(error) if starts_as_json => format!("`{}` is not valid JSON: {error}", file.display()),
        _ => format!("cannot tell the format of `{}`; name it with `--format` (one of {formats})", file.display()),
    }
}

pub fn incident_json(i: &pb::Incident) -> Value {
    json!({"id": i.id, "title": i.title, "service": i.service, "environment": i.environment, "state": i.state,
           "signal_count": i.signal_count, "opened_at": arf_core::time::format_ms(i.opened_at_ms),
           "updated_at": arf_core::time::format_ms(i.updated_at_ms),
           "snapshot_hash": i.snapshot_hash, "decision_ids": i.decision_ids, "reason": i.reason})
}

/// Which incidents `arf incident list` shows.
#[derive(Debug, Default)]
pub struct IncidentFilter {
    pub state: Option<String>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub limit: Option<usize>,
}

impl IncidentFilter {
    /// The incidents that pass, newest first (ties by id), at most `limit`.
    pub fn apply(&self, mut incidents: Vec<pb::Incident>) -> Vec<pb::Incident> {
        let passes = |wanted: &Option<String>, value: &str| wanted.as_deref().is_none_or(|w| w == value);
        incidents.retain(|i| passes(&self.state, &i.state) && passes(&self.service, &i.service) && passes(&self.environment, &i.environment));
        incidents.sort_by(|a, b| b.opened_at_ms.cmp(&a.opened_at_ms).then_with(|| a.id.cmp(&b.id)));
        incidents.truncate(self.limit.unwrap_or(usize::MAX));
        incidents
    }
}

/// Rows under a header, each column as wide as its widest cell (the last column,
/// free text, is not padded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let width = |column: usize| {
        rows.iter().map(|row| row.get(column).map_or(0, |cell| cell.chars().count())).chain([header[column].chars().count()]).max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(column, cell)| if column + 1 == cells.len() { (*cell).to_owned() } else { format!("{cell:<width$}", width = widths[column]) })
            .collect::<Vec<_>>()
            .join("  ")
    };
    std::iter::once(line(header.to_vec())).chain(rows.iter().map(|row| line(row.iter().map(String::as_str).collect()))).collect()
}

pub async fn list_incidents(endpoints: &Endpoints, filter: &IncidentFilter, as_json: bool) -> Result<ExitCode> {
    let incidents = endpoints.agent().await?.list_incidents(pb::ListIncidentsRequest {}).await.map_err(endpoints.agent_failed())?.into_inner().incidents;
    let incidents = filter.apply(incidents);
    if as_json {
        say!("{}", serde_json::to_string_pretty(&incidents.iter().map(incident_json).collect::<Vec<_>>())?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| vec![arf_core::time::format_ms_column(i.opened_at_ms), i.id.clone(), i.state.clone(), i.service.clone(), i.environment.clone(), i.signal_count.to_string(), i.title.clone()])
        .collect();
    for line in table(&["OPENED", "ID", "STATE", "SERVICE", "ENVIRONMENT", "SIGNALS", "TITLE"], &rows) {
        say!("{line}");
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
        arf_audit::RecordKind::Snapshot => match p.get("extends").and_then(Value::as_str) {
            Some(extends) => format!("hash {} (with the investigation's results, extends {extends})", s("hash")),
            None => format!("hash {}", s("hash")),
        },
        arf_audit::RecordKind::Investigation => {
            let mut text = format!("call {} `{}`: {}", p.get("call").and_then(Value::as_u64).unwrap_or(0), s("tool"), s("status"));
            if let Some(detail) = p.get("detail").and_then(Value::as_str) {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(id) = p.get("item").and_then(|i| i.get("id")).and_then(Value::as_str) {
                text.push_str(&format!(" → item `{id}`"));
            }
            text
        }
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
        .agent().await?
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
    let decisions = endpoints.governor().await?.list_pending(request).await.map_err(endpoints.governor_failed())?.into_inner().decisions;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&decisions.iter().map(decision_json).collect::<Vec<_>>())?);
        return Ok(ExitCode::SUCCESS);
    }
    if decisions.is_empty() {
        say!("nothing is waiting for you");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = decisions
        .iter()
        .map(|d| {
            let remediation = d.remediation.clone().unwrap_or_default();
            let risk = d.risk.as_ref().map(|r| format!("{:.2}", r.score)).unwrap_or_default();
            let needed = d.policy.as_ref().map_or(0, |p| p.approvals_required.max(1));
            // Approvers, each counted once, as the governor counts them.
            let have = d.approvals.iter().filter(|a| a.verdict == "approve").map(|a| a.identity.as_str()).collect::<std::collections::BTreeSet<_>>().len();
            vec![
                d.decision_id.clone(),
                route_name(d.route).to_owned(),
                remediation.pathway,
                remediation.target,
                risk,
                format!("{have}/{needed}"),
                arf_core::time::format_ms_column(d.expires_at_ms),
            ]
        })
        .collect();
    for line in table(&["DECISION", "ROUTE", "PATHWAY", "TARGET", "RISK", "APPROVALS", "EXPIRES"], &rows) {
        say!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn explain(endpoints: &Endpoints, decision: &str, as_json: bool) -> Result<ExitCode> {
    let request = endpoints.authed(pb::GetDecisionRequest { decision_id: decision.to_owned() })?;
    let explanation = endpoints.governor().await?.explain(request).await.map_err(endpoints.governor_failed())?.into_inner();
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
    match endpoints.governor().await?.approve(request).await {
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
    let d = endpoints.governor().await?.reject(request).await.map_err(endpoints.governor_failed())?.into_inner();
    say!("decision {} is now {}", d.decision_id, d.state);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(id: &str, state: &str, environment: &str, opened_at_ms: i64) -> pb::Incident {
        pb::Incident { id: id.into(), state: state.into(), service: "web".into(), environment: environment.into(), opened_at_ms, ..Default::default() }
    }

    #[test]
    fn the_list_is_newest_first_and_filtered() {
        let all = vec![incident("inc-a", "resolved", "staging", 1), incident("inc-b", "escalated", "production", 3), incident("inc-c", "escalated", "staging", 2)];
        let ids = |filter: IncidentFilter| filter.apply(all.clone()).into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(IncidentFilter::default()), ["inc-b", "inc-c", "inc-a"]);
        assert_eq!(ids(IncidentFilter { state: Some("escalated".into()), ..Default::default() }), ["inc-b", "inc-c"]);
        assert_eq!(ids(IncidentFilter { environment: Some("staging".into()), limit: Some(1), ..Default::default() }), ["inc-c"]);
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![vec!["a-very-long-service-name".to_owned(), "x".to_owned()], vec!["b".to_owned(), "y".to_owned()]];
        let lines = table(&["SERVICE", "TITLE"], &rows);
        let at = |line: &str| line.rfind("  ").unwrap() + 2;
        assert_eq!(at(&lines[0]), at(&lines[1]));
        assert_eq!(at(&lines[1]), at(&lines[2]));
    }
}
