//! `arf console`: the web console for the people on call.
//!
//! It holds no state of the plane and no authority of its own: every page is
//! read, and every action taken, through the services' public APIs with the
//! token of the person logged in, so the governor applies the same rules as to
//! the CLI (roles, no self-approval, N-of-M) and the log names that person.
//!
//! - Log in with a personal token; the session is a random cookie (`HttpOnly`,
//!   `SameSite=Strict`, `Path=/`, and `Secure` over HTTPS), kept in memory, ended
//!   by logging out or after [`SESSION_LIFETIME`]. Every change is a `POST`
//!   carrying the session's CSRF token, from a page of this origin: its `Origin`
//!   must be the scheme and `Host` it was sent to, and that host one of the
//!   console's own names ([`Names`]).
//! - Pages are rendered on the server from escaped values: text from outside
//!   (alert titles, model text, reasons) loses its control and escape characters
//!   and is HTML-escaped. No script runs: the `Content-Security-Policy` allows
//!   none, and lists refresh themselves with a `<meta>` refresh.
//! - Plain HTTP on loopback only (the default, `http://127.0.0.1:7490/`); over
//!   HTTPS (`--tls`, with the `console` certificate of `arf certs init`, or
//!   `--tls-cert` and `--tls-key`) on any address.

mod page;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use arf_core::identity::{Identities, Role};
use arf_proto::v1 as pb;

use crate::client::Endpoints;
use page::{esc, page};

/// How long a session lasts without logging in again.
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// The most sessions held at once (the oldest go first).
const MAX_SESSIONS: usize = 1_000;
const COOKIE: &str = "arf_session";

struct Session {
    token: String,
    name: String,
    role: Role,
    csrf: String,
    started: Instant,
}

struct Console {
    /// Where the services are, and the client certificate; no token of its own.
    endpoints: Endpoints,
    identities: Identities,
    sessions: Mutex<HashMap<String, Session>>,
    /// `https` or `http`: what the cookie and the origin check need to know.
    scheme: &'static str,
    /// The names this console answers to: every change must come from one.
    names: Names,
    /// The log's checkpoint key, to prove each record of a trail is in the log.
    verifier: Option<arf_audit::checkpoint::NoteVerifier>,
}

/// Who is logged in, for one request.
struct Person {
    name: String,
    role: Role,
    csrf: String,
    endpoints: Endpoints,
}

/// A random value for a session id or a CSRF token.
fn secret() -> Result<String, String> {
    arf_core::identity::new_token().map(|(token, _)| token).map_err(|e| format!("no randomness: {e}"))
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Constant-time equality, for secrets compared with what a request carries.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Console {
    /// The person whose session the request carries, if it is live.
    fn person(&self, headers: &HeaderMap) -> Option<Person> {
        let id = cookie_value(headers, COOKIE)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let session = sessions.get(id)?;
        if session.started.elapsed() > SESSION_LIFETIME {
            sessions.remove(id);
            return None;
        }
        let endpoints = Endpoints { token: Some(session.token.clone()), token_file: None, ..self.endpoints.clone() };
        Some(Person { name: session.name.clone(), role: session.role, csrf: session.csrf.clone(), endpoints })
    }

    /// The person, for a change: a live session, the session's CSRF token, and
    /// (when the browser says) a request from this origin.
    fn changer(&self, headers: &HeaderMap, csrf: &str) -> Result<Person, Box<Response>> {
        let person = self.person(headers).ok_or_else(|| Box::new(Redirect::to("/login").into_response()))?;
        let foreign = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).is_some_and(|origin| !self.is_own_origin(origin, headers));
        if foreign || !same(csrf, &person.csrf) {
            return Err(Box::new(page::refused(StatusCode::FORBIDDEN, "This form did not come from this console's page (missing or wrong CSRF token, or another origin). Nothing was changed.")));
        }
        Ok(person)
    }
}

impl Console {
    /// Whether a browser's `Origin` is this console: the scheme and host the request
    /// was sent to, that host being one of the console's names (not a name an
    /// attacker pointed at this address).
    fn is_own_origin(&self, origin: &str, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
        self.names.include(host, self.scheme) && origin.eq_ignore_ascii_case(&format!("{}://{host}", self.scheme))
    }
}

/// The names a console answers to: `localhost` and loopback addresses, the address
/// it listens on, and over HTTPS every name and address its certificate is valid
/// for; each with the port it listens on.
pub struct Names {
    listen: SocketAddr,
    certificate: Option<rustls::pki_types::CertificateDer<'static>>,
}

impl Names {
    /// Whether `host` (a `Host` header: `name`, `name:port`, `[v6]:port`) is one of them.
    fn include(&self, host: &str, scheme: &str) -> bool {
        let Ok(authority) = host.parse::<axum::http::uri::Authority>() else { return false };
        let default_port = if scheme == "https" { 443 } else { 80 };
        if authority.port_u16().unwrap_or(default_port) != self.listen.port() {
            return false;
        }
        let name = authority.host().trim_start_matches('[').trim_end_matches(']');
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<std::net::IpAddr>()
            && (ip.is_loopback() || (ip == self.listen.ip() && !ip.is_unspecified()))
        {
            return true;
        }
        let Some(certificate) = &self.certificate else { return false };
        let (Ok(parsed), Ok(name)) = (rustls::server::ParsedCertificate::try_from(certificate), rustls::pki_types::ServerName::try_from(name.to_owned())) else {
            return false;
        };
        rustls::client::verify_server_name(&parsed, &name).is_ok()
    }
}

/// The certificate and key the console serves HTTPS with.
#[derive(Debug, Clone)]
pub struct Https {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Headers every answer carries: no script, no framing, no caching, no sniffing.
async fn hardened(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with every form,
    // and the origin check refuses them all (found by `cli/tests/browser.rs`).
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// How `arf console` serves: plain HTTP, the deployment's `console` certificate
/// (`--tls`), or files of the operator's (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone)]
pub enum Serving {
    Plain,
    DeploymentCertificate,
    Files(Https),
}

/// Runs the console on `listen` for the deployment at `config` (else `ARF_CONFIG`,
/// else `.arf/arf.toml`): plain HTTP on loopback only, HTTPS anywhere.
pub async fn run(listen: SocketAddr, config: Option<PathBuf>, serving: Serving) -> Result<ExitCode> {
    let file = match config {
        Some(file) => file,
        None => match std::env::var_os("ARF_CONFIG") {
            Some(file) => PathBuf::from(file),
            None => PathBuf::from(".arf/arf.toml"),
        },
    };
    let https = match serving {
        Serving::Plain => None,
        Serving::Files(https) => Some(https),
        Serving::DeploymentCertificate => {
            let deployment = crate::setup::load(&file).with_context(|| format!("the deployment `{}`", file.display()))?;
            let Some(dir) = deployment.agent.mtls.as_ref().and_then(|m| m.ca_file.parent().map(std::path::Path::to_owned)) else {
                bail!("`--tls`: the deployment `{}` has no certificates (`[agent.mtls]`); give `--tls-cert` and `--tls-key`", file.display());
            };
            let https = Https { cert_file: dir.join("console.pem"), key_file: dir.join("console.key") };
            if !https.cert_file.exists() {
                bail!("`--tls`: no `{}`; `arf certs init --dir {}` makes it (add `--host NAME` for each name the console is reached at)", https.cert_file.display(), dir.display());
            }
            Some(https)
        }
    };
    if https.is_none() && !listen.ip().is_loopback() {
        bail!("`--listen {listen}`: plain HTTP stays on loopback; serve HTTPS (`--tls`, or `--tls-cert` and `--tls-key`) to listen elsewhere");
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let scheme = if https.is_some() { "https" } else { "http" };
    eprintln!("ARF console on {scheme}://{}/ (log in with your token)", listener.local_addr()?);
    serve(listener, https, &file, std::future::pending()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves the console of the deployment in `file` on `listener` (over HTTPS with
/// `https`) until `shutdown` resolves (`arf console`, and `arf demo` beside its services).
pub async fn serve(
    listener: tokio::net::TcpListener,
    https: Option<Https>,
    file: &std::path::Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let deployment = crate::setup::load(file).with_context(|| format!("the deployment `{}`", file.display()))?;
    let identities = Identities::load(&deployment.governor.identities, "identities").map_err(|e| anyhow::anyhow!("{e}"))?;
    let tls_dir = deployment.agent.mtls.as_ref().and_then(|m| m.ca_file.parent().map(std::path::Path::to_owned));
    let endpoints = Endpoints {
        agent: crate::discover::dial(deployment.agent.listen),
        governor: crate::discover::dial(deployment.governor.listen),
        audit: crate::discover::dial(deployment.audit.listen),
        token: None,
        token_file: None,
        tls: crate::client::client_tls(tls_dir.as_deref())?,
    };
    let verifier = match &deployment.governor.audit_checkpoint_key {
        Some(path) => {
            let key = arf_core::keys::load_trusted(path).map_err(|e| anyhow::anyhow!("the log's checkpoint key `{}`: {e}", path.display()))?.key;
            Some(arf_audit::checkpoint::NoteVerifier::new(deployment.governor.audit_checkpoint_origin.clone(), key))
        }
        None => None,
    };
    let listen = listener.local_addr()?;
    let (incoming, scheme, certificate) = match https {
        None => (arf_proto::http::Incoming::Plain(listener), "http", None),
        Some(https) => {
            use rustls::pki_types::pem::PemObject;
            let certificate = rustls::pki_types::CertificateDer::from_pem_file(&https.cert_file)
                .with_context(|| format!("`{}` holds no PEM certificate", https.cert_file.display()))?;
            // Browsers present no certificate: the CA file is not read.
            let files = arf_core::tls::TlsFiles { ca_file: https.cert_file.clone(), cert_file: https.cert_file, key_file: https.key_file, crl_file: None };
            let tls = std::sync::Arc::new(arf_proto::tls::ServerTls::webhook(&files)?);
            (arf_proto::http::Incoming::Tls(arf_proto::tls::Listener::new(listener, tls)?), "https", Some(certificate))
        }
    };
    let names = Names { listen, certificate };
    let console = Arc::new(Console { endpoints, identities, sessions: Mutex::new(HashMap::new()), scheme, names, verifier });
    let app = axum::Router::new()
        .route("/", get(pending))
        .route("/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], page::STYLE) }))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/decisions/{id}", get(decision))
        .route("/decisions/{id}/approve", post(approve))
        .route("/decisions/{id}/reject", post(reject))
        .route("/incidents", get(incidents))
        .route("/incidents/{id}", get(incident))
        .route("/autonomy", get(autonomy).post(switch_autonomy))
        .route("/shadow", get(shadow))
        .route("/shadow/{id}/judge", post(judge))
        .layer(axum::middleware::from_fn(hardened))
        .with_state(console);
    arf_proto::http::serve(incoming, app, arf_proto::http::Limits::default(), shutdown).await.context("the console stopped")?;
    Ok(())
}

async fn login_form() -> Response {
    page::login(None)
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(console): State<Arc<Console>>, Form(form): Form<Login>) -> Response {
    let Some(caller) = console.identities.by_token(form.token.trim()) else {
        return page::login(Some("That token names no identity of this deployment."));
    };
    if caller.role.is_service() || !caller.role.may_read() {
        return page::login(Some("That identity may not use the console: log in as a person (or a reader)."));
    }
    let (id, csrf) = match (secret(), secret()) {
        (Ok(id), Ok(csrf)) => (id, csrf),
        (Err(error), _) | (_, Err(error)) => return (StatusCode::INTERNAL_SERVER_ERROR, error).into_response(),
    };
    {
        let mut sessions = console.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.retain(|_, s| s.started.elapsed() <= SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.started).map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), Session { token: form.token.trim().to_owned(), name: caller.name.clone(), role: caller.role, csrf, started: Instant::now() });
    }
    let secure = if console.scheme == "https" { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", SESSION_LIFETIME.as_secs());
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

#[derive(Deserialize)]
struct Csrf {
    csrf: String,
}

async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap, Form(form): Form<Csrf>) -> Response {
    if let Err(refused) = console.changer(&headers, &form.csrf) {
        return *refused;
    }
    if let Some(id) = cookie_value(&headers, COOKIE) {
        console.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
    }
    let secure = if console.scheme == "https" { "; Secure" } else { "" };
    ([(header::SET_COOKIE, format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"))], Redirect::to("/login")).into_response()
}

/// What a service said when it refused or failed, for the page.
fn said(status: &tonic::Status) -> String {
    format!("{} ({:?})", status.message(), status.code())
}

fn failed(error: &anyhow::Error) -> String {
    format!("{error:#}")
}

async fn pending(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(person) = console.person(&headers) else { return Redirect::to("/login").into_response() };
    let mut body = String::from("<h1>Waiting for a person</h1>");
    let decisions = match load_pending(&person).await {
        Ok(decisions) => decisions,
        Err(error) => return page(&person, "Pending", &format!("{body}<p class=error>{}</p>", esc(&error)), true),
    };
    if decisions.is_empty() {
        body.push_str("<p>No decision waits for acknowledgment or approval.</p>");
    }
    for (decision, explanation) in &decisions {
        body.push_str(&page::decision_card(decision, explanation, &person.csrf, None));
    }
    page(&person, "Pending", &body, true)
}

async fn load_pending(person: &Person) -> Result<Vec<(pb::Decision, String)>, String> {
    let mut governor = person.endpoints.governor().await.map_err(|e| failed(&e))?;
    let request = person.endpoints.authed(pb::ListPendingRequest {}).map_err(|e| failed(&e))?;
    let decisions = governor.list_pending(request).await.map_err(|s| said(&s))?.into_inner().decisions;
    let mut explained = Vec::with_capacity(decisions.len());
    for decision in decisions {
        let request = person.endpoints.authed(pb::GetDecisionRequest { decision_id: decision.decision_id.clone() }).map_err(|e| failed(&e))?;
        let text = governor.explain(request).await.map(|e| e.into_inner().text).unwrap_or_else(|s| format!("(no explanation: {})", said(&s)));
        explained.push((decision, text));
    }
    Ok(explained)
}

async fn show_decision(person: &Person, id: &str, notice: Option<&str>) -> Response {
    let explained = async {
        let mut governor = person.endpoints.governor().await.map_err(|e| failed(&e))?;
        let request = person.endpoints.authed(pb::GetDecisionRequest { decision_id: id.to_owned() }).map_err(|e| failed(&e))?;
        let explanation = governor.explain(request).await.map_err(|s| said(&s))?.into_inner();
        Ok::<_, String>((explanation.decision.unwrap_or_default(), explanation.text))
    }
    .await;
    match explained {
        Ok((decision, text)) => page(person, "Decision", &page::decision_card(&decision, &text, &person.csrf, notice), false),
        Err(error) => page(person, "Decision", &format!("<p class=error>{}</p>", esc(&error)), false),
    }
}

async fn decision(State(console): State<Arc<Console>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(person) = console.person(&headers) else { return Redirect::to("/login").into_response() };
    show_decision(&person, &id, None).await
}

/// A verdict from a decision's page: `comment` for an approval, `reason` for a rejection.
#[derive(Deserialize)]
struct Verdict {
    csrf: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    reason: String,
}

async fn approve(State(console): State<Arc<Console>>, headers: HeaderMap, Path(id): Path<String>, Form(form): Form<Verdict>) -> Response {
    give_verdict(&console, &headers, &id, form, true).await
}

async fn reject(State(console): State<Arc<Console>>, headers: HeaderMap, Path(id): Path<String>, Form(form): Form<Verdict>) -> Response {
    give_verdict(&console, &headers, &id, form, false).await
}

/// Approves or rejects as the person logged in; the governor applies its rules,
/// and the page says what it answered.
async fn give_verdict(console: &Console, headers: &HeaderMap, id: &str, form: Verdict, approve: bool) -> Response {
    let person = match console.changer(headers, &form.csrf) {
        Ok(person) => person,
        Err(refused) => return *refused,
    };
    let answer = async {
        let mut governor = person.endpoints.governor().await.map_err(|e| failed(&e))?;
        let decided = if approve {
            let request = person.endpoints.authed(pb::ApproveRequest { decision_id: id.to_owned(), comment: form.comment }).map_err(|e| failed(&e))?;
            governor.approve(request).await
        } else {
            let request = person.endpoints.authed(pb::RejectRequest { decision_id: id.to_owned(), reason: form.reason }).map_err(|e| failed(&e))?;
            governor.reject(request).await
        };
        decided.map(|d| d.into_inner().state).map_err(|s| said(&s))
    }
    .await;
    let notice = match (answer, approve) {
        (Ok(state), true) => format!("Your approval is logged; the decision is now `{state}`."),
        (Ok(state), false) => format!("Your rejection is logged; the decision is now `{state}`."),
        (Err(error), true) => format!("Your approval did not count: {error}"),
        (Err(error), false) => format!("The rejection was refused: {error}"),
    };
    show_decision(&person, id, Some(&notice)).await
}

#[derive(Deserialize, Default)]
struct Filters {
    #[serde(default)]
    state: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    q: String,
}

async fn incidents(State(console): State<Arc<Console>>, headers: HeaderMap, Query(filters): Query<Filters>) -> Response {
    let Some(person) = console.person(&headers) else { return Redirect::to("/login").into_response() };
    let listed = async {
        let mut agent = person.endpoints.agent().await.map_err(|e| failed(&e))?;
        let request = person.endpoints.authed(pb::ListIncidentsRequest {}).map_err(|e| failed(&e))?;
        agent.list_incidents(request).await.map(|r| r.into_inner().incidents).map_err(|s| said(&s))
    }
    .await;
    let mut incidents = match listed {
        Ok(incidents) => incidents,
        Err(error) => return page(&person, "Incidents", &format!("<p class=error>{}</p>", esc(&error)), true),
    };
    let q = filters.q.to_lowercase();
    incidents.retain(|i| {
        (filters.state.is_empty() || i.state == filters.state)
            && (filters.service.is_empty() || i.service == filters.service)
            && (filters.environment.is_empty() || i.environment == filters.environment)
            && (q.is_empty() || i.title.to_lowercase().contains(&q) || i.id.contains(&q) || i.service.to_lowercase().contains(&q))
    });
    incidents.sort_by(|a, b| b.opened_at_ms.cmp(&a.opened_at_ms).then_with(|| a.id.cmp(&b.id)));
    let body = page::incident_list(&incidents, &filters.state, &filters.service, &filters.environment, &filters.q);
    page(&person, "Incidents", &body, true)
}

async fn incident(State(console): State<Arc<Console>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(person) = console.person(&headers) else { return Redirect::to("/login").into_response() };
    let loaded = async {
        let mut agent = person.endpoints.agent().await.map_err(|e| failed(&e))?;
        let request = person.endpoints.authed(pb::GetIncidentRequest { incident_id: id.clone() }).map_err(|e| failed(&e))?;
        let incident = agent.get_incident(request).await.map_err(|s| said(&s))?.into_inner();
        let audit = person.endpoints.audit().map_err(|e| failed(&e))?;
        let trail = audit.read_incident(&id).await.map_err(|e| e.to_string());
        let proofs = match (&trail, &console.verifier) {
            (Ok(records), Some(verifier)) => prove(&audit, verifier, records).await,
            _ => HashMap::new(),
        };
        Ok::<_, String>((incident, trail, proofs))
    }
    .await;
    match loaded {
        Ok((incident, trail, proofs)) => {
            let verified = |record: &arf_audit::Record| proofs.get(&record.seq).cloned();
            page(&person, "Incident", &page::incident_page(&incident, trail, &verified), true)
        }
        Err(error) => page(&person, "Incident", &format!("<p class=error>{}</p>", esc(&error)), false),
    }
}

/// For each record, whether the log proves it is in its latest signed checkpoint:
/// the signature checked with the log's key, the record's own hash recomputed,
/// and its inclusion proof checked against the signed root. Records after the
/// checkpoint are left out.
async fn prove(audit: &arf_audit::AuditClient, verifier: &arf_audit::checkpoint::NoteVerifier, records: &[arf_audit::Record]) -> HashMap<u64, Result<(), String>> {
    let mut proofs = HashMap::new();
    let checkpoint = match audit.checkpoint().await {
        Ok(Some(note)) => match verifier.verify(&note) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                for record in records {
                    proofs.insert(record.seq, Err(format!("the log's checkpoint does not verify: {error}")));
                }
                return proofs;
            }
        },
        _ => return proofs,
    };
    for record in records.iter().filter(|r| r.seq >= 1 && r.seq <= checkpoint.size) {
        let proved = async {
            if record.compute_hash() != record.hash {
                return Err("the record does not match its own hash".to_owned());
            }
            let leaf = arf_audit::store::leaf_of(record).map_err(|e| e.to_string())?;
            let proof = audit.inclusion_proof(record.seq, checkpoint.size).await.map_err(|e| e.to_string())?;
            arf_audit::merkle::verify_inclusion(record.seq - 1, checkpoint.size, &leaf, &proof, &checkpoint.root).map_err(|e| format!("its inclusion proof fails: {e}"))
        }
        .await;
        proofs.insert(record.seq, proved);
    }
    proofs
}

async fn shadow(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(person) = console.person(&headers) else { return Redirect::to("/login").into_response() };
    show_shadow(&person, None).await
}

async fn show_shadow(person: &Person, notice: Option<&str>) -> Response {
    let loaded = async {
        let mut governor = person.endpoints.governor().await.map_err(|e| failed(&e))?;
        let request = person.endpoints.authed(pb::ListDecisionsRequest { incident_id: String::new() }).map_err(|e| failed(&e))?;
        let mut decisions: Vec<pb::Decision> =
            governor.list_decisions(request).await.map_err(|s| said(&s))?.into_inner().decisions.into_iter().filter(|d| d.mode == "shadow").collect();
        decisions.sort_by_key(|d| std::cmp::Reverse(d.issued_at_ms));
        let request = person.endpoints.authed(pb::GetAutonomyRequest {}).map_err(|e| failed(&e))?;
        let records = governor.get_autonomy(request).await.map_err(|s| said(&s))?.into_inner().stats;
        Ok::<_, String>((decisions, records))
    }
    .await;
    // What became of each incident, from the agent; the page stands without it.
    let incidents = match person.endpoints.agent().await {
        Ok(mut agent) => match person.endpoints.authed(pb::ListIncidentsRequest {}) {
            Ok(request) => agent.list_incidents(request).await.map(|r| r.into_inner().incidents).unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        Err(_) => Vec::new(),
    };
    match loaded {
        Ok((decisions, records)) => page(person, "Shadow", &page::shadow(&decisions, &incidents, &records, person.role.is_human(), &person.csrf, notice), true),
        Err(error) => page(person, "Shadow", &format!("<p class=error>{}</p>", esc(&error)), true),
    }
}

#[derive(Deserialize)]
struct Judgement {
    csrf: String,
    agrees: String,
    #[serde(default)]
    reason: String,
}

/// Judges a shadow decision as the person logged in; the governor applies its rules
/// (people only, once per decision, a reason to disagree).
async fn judge(State(console): State<Arc<Console>>, headers: HeaderMap, Path(id): Path<String>, Form(form): Form<Judgement>) -> Response {
    let person = match console.changer(&headers, &form.csrf) {
        Ok(person) => person,
        Err(refused) => return *refused,
    };
    let agrees = form.agrees == "yes";
    let answer = async {
        let mut governor = person.endpoints.governor().await.map_err(|e| failed(&e))?;
        let request = person.endpoints.authed(pb::JudgeShadowRequest { decision_id: id.clone(), agrees, reason: form.reason }).map_err(|e| failed(&e))?;
        governor.judge_shadow(request).await.map_err(|s| said(&s))
    }
    .await;
    let notice = match answer {
        Ok(_) => format!("Your judgement of {id} is logged: it {} count toward the pathway's graduation.", if agrees { "does" } else { "demotes it and does not" }),
        Err(error) => format!("Your judgement did not count: {error}"),
    };
    show_shadow(&person, Some(&notice)).await
}

async fn autonomy(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(person) = console.person(&headers) else { return Redirect::to("/login").into_response() };
    show_autonomy(&person, None).await
}

async fn show_autonomy(person: &Person, notice: Option<&str>) -> Response {
    let status = async {
        let mut governor = person.endpoints.governor().await.map_err(|e| failed(&e))?;
        let request = person.endpoints.authed(pb::GetAutonomyRequest {}).map_err(|e| failed(&e))?;
        governor.get_autonomy(request).await.map(tonic::Response::into_inner).map_err(|s| said(&s))
    }
    .await;
    match status {
        Ok(status) => page(person, "Autonomy", &page::autonomy(&status, person.role, &person.csrf, notice), false),
        Err(error) => page(person, "Autonomy", &format!("<p class=error>{}</p>", esc(&error)), false),
    }
}

#[derive(Deserialize)]
struct Switch {
    csrf: String,
    enabled: String,
    #[serde(default)]
    reason: String,
}

async fn switch_autonomy(State(console): State<Arc<Console>>, headers: HeaderMap, Form(form): Form<Switch>) -> Response {
    let person = match console.changer(&headers, &form.csrf) {
        Ok(person) => person,
        Err(refused) => return *refused,
    };
    let enabled = form.enabled == "on";
    let answer = async {
        let mut governor = person.endpoints.governor().await.map_err(|e| failed(&e))?;
        let request = person.endpoints.authed(pb::SetAutonomyRequest { enabled, reason: form.reason.clone() }).map_err(|e| failed(&e))?;
        governor.set_autonomy(request).await.map(drop).map_err(|s| said(&s))
    }
    .await;
    let notice = match answer {
        Ok(()) => format!("Autonomy is now {}; the log names you.", if enabled { "on" } else { "off" }),
        Err(error) => format!("Refused: {error}"),
    };
    show_autonomy(&person, Some(&notice)).await
}
