//! Notifications: the governor follows the audit log and tells people what needs
//! them, through Slack incoming webhooks, PagerDuty's Events API v2 and signed
//! generic webhooks (`[notify]` in `arf.toml`).
//!
//! The log is the source: every event is made from a record ([`event::events`]),
//! so whatever wrote it (the agent escalating, the executor rolling back, the
//! governor waiting for approval), it is told the same way, and nothing on the
//! path of a decision waits for a receiver. Delivery is durable and at least once
//! ([`outbox`]): an event is queued on disk before the log is read further, sent
//! with retries and backoff, and recorded as sent; reading the log again queues
//! nothing twice. A receiver that refuses an event for good (a 4xx other than
//! 408 and 429) has it set aside, loudly.

pub mod event;
pub mod outbox;
pub mod render;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use arf_audit_client::{AuditClient, Record};
use event::{Event, EventKind, IncidentContext, Severity, Writers};

/// How long the log may be unreadable before `audit_unavailable` is sent.
const AUDIT_GRACE: Duration = Duration::from_secs(30);
/// The longest wait between two tries of one notification.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The incidents whose context is remembered (older ones are read from the log).
const CONTEXTS: usize = 10_000;

/// `[notify]`: where events go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The console's address, for the link in each message (`…/decisions/ID`,
    /// `…/incidents/ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
}

/// One receiver of notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Unique; names its queue on disk.
    pub name: String,
    pub kind: ReceiverKind,
    /// The endpoint: a generic webhook's URL, or PagerDuty's (default
    /// `https://events.pagerduty.com/v2/enqueue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file holding the endpoint, for Slack, whose webhook URL is its secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// A file holding PagerDuty's routing key, or a generic webhook's HMAC secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The event kinds it takes; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventKind>,
    /// Only events of these environments (events about no environment, such as
    /// the kill switch, always pass); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
    /// Only events of these services (as with environments); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// Only events at least this severe (`info`, `warning`, `error`, `critical`).
    /// A PagerDuty receiver pages: without it, it takes `warning` and up; and it
    /// always takes `resolved`, which resolves the page rather than raising one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
}

impl ReceiverConfig {
    /// A receiver of every event, with no endpoint or secret set yet.
    pub fn new(name: &str, kind: ReceiverKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            url: None,
            url_file: None,
            secret_file: None,
            events: Vec::new(),
            environments: Vec::new(),
            services: Vec::new(),
            min_severity: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    Slack,
    Pagerduty,
    Webhook,
}

const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// A receiver, loaded: its endpoint and secret read, its filters checked.
#[derive(Clone)]
struct Receiver {
    config: ReceiverConfig,
    url: String,
    secret: Option<String>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The endpoint and the secret are secrets (a Slack webhook URL is one).
        f.debug_struct("Receiver").field("name", &self.config.name).field("kind", &self.config.kind).finish_non_exhaustive()
    }
}

impl Receiver {
    fn wants(&self, event: &Event) -> bool {
        let c = &self.config;
        (c.events.is_empty() || c.events.contains(&event.kind))
            && (c.environments.is_empty() || event.environment.is_empty() || c.environments.contains(&event.environment))
            && (c.services.is_empty() || event.service.is_empty() || c.services.contains(&event.service))
            && match c.kind {
                ReceiverKind::Pagerduty if event.kind == EventKind::Resolved => true,
                ReceiverKind::Pagerduty => event.severity >= c.min_severity.unwrap_or(Severity::Warning),
                ReceiverKind::Slack | ReceiverKind::Webhook => c.min_severity.is_none_or(|min| event.severity >= min),
            }
    }
}

fn read_secret(path: &Path, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{what}: cannot read `{}`: {e}", path.display()))?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(format!("{what}: `{}` is empty", path.display()));
    }
    Ok(text)
}

/// An endpoint must be `https`, or `http` to a loopback address: messages name
/// services and incidents, and carry routing keys.
fn check_url(url: &str, what: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{what}: not a URL: {e}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost" || host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!("{what}: plain `http` is refused off loopback; use `https`")),
        other => Err(format!("{what}: scheme `{other}` is not http(s)")),
    }
}

fn load(config: &NotifyConfig) -> Result<Vec<Receiver>, String> {
    let mut names = std::collections::BTreeSet::new();
    let mut receivers = Vec::new();
    if let Some(console) = &config.console_url {
        check_url(console, "`notify.console_url`")?;
    }
    for (i, receiver) in config.receivers.iter().enumerate() {
        let at = format!("`notify.receivers[{i}]`");
        let valid_name = !receiver.name.is_empty() && receiver.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !valid_name {
            return Err(format!("{at}.name `{}` must be letters, digits, `-` and `_`", receiver.name));
        }
        if !names.insert(receiver.name.clone()) {
            return Err(format!("{at}.name `{}` is used twice", receiver.name));
        }
        let at = format!("`notify.receivers.{}`", receiver.name);
        let (url, secret) = match receiver.kind {
            ReceiverKind::Slack => {
                if receiver.url.is_some() {
                    return Err(format!("{at}: a Slack webhook URL is a secret: put it in a file named by `url_file`, not in `url`"));
                }
                let file = receiver.url_file.as_ref().ok_or_else(|| format!("{at}: `url_file` is required (the Slack incoming-webhook URL)"))?;
                (read_secret(file, &format!("{at}.url_file"))?, None)
            }
            ReceiverKind::Pagerduty => {
                let file = receiver.secret_file.as_ref().ok_or_else(|| format!("{at}: `secret_file` is required (the integration's routing key)"))?;
                (receiver.url.clone().unwrap_or_else(|| PAGERDUTY_URL.to_owned()), Some(read_secret(file, &format!("{at}.secret_file"))?))
            }
            ReceiverKind::Webhook => {
                let url = receiver.url.clone().ok_or_else(|| format!("{at}: `url` is required"))?;
                let file = receiver.secret_file.as_ref().ok_or_else(|| format!("{at}: `secret_file` is required (the HMAC-SHA256 key receivers check signatures with)"))?;
                (url, Some(read_secret(file, &format!("{at}.secret_file"))?))
            }
        };
        check_url(&url, &at)?;
        receivers.push(Receiver { config: receiver.clone(), url, secret });
    }
    Ok(receivers)
}

/// Checks `[notify]` without starting anything (at configuration load).
pub fn check(config: &NotifyConfig) -> Result<(), String> {
    load(config).map(drop)
}

/// How many raised events may wait for the queue to open.
const ALARMS: usize = 64;

/// Raises events that do not come from the log: a witness refusing it, when its
/// records are not to be believed. Each is queued for the receivers that want it,
/// like the events read from the log.
#[derive(Debug, Clone)]
pub struct Alarm {
    queue: tokio::sync::mpsc::Sender<Event>,
    /// The witnesses refusing the log now: each refusal is told once, until the
    /// witness accepts the log again.
    refusing: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

/// The other end of an [`Alarm`], handed to [`spawn`].
pub struct Alarms(tokio::sync::mpsc::Receiver<Event>);

/// A new alarm and its receiving end.
pub fn alarm() -> (Alarm, Alarms) {
    let (tx, rx) = tokio::sync::mpsc::channel(ALARMS);
    (Alarm { queue: tx, refusing: Arc::default() }, Alarms(rx))
}

impl Alarm {
    /// `witness` (`governor` or `executor`) refused the log while `decision_id`
    /// was being authorized or run: told once, until [`Alarm::witness_accepted`].
    pub fn witness_refused(&self, witness: &str, error: &str, decision_id: &str, now_ms: i64) {
        if self.refusing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(witness.to_owned()) {
            self.raise(event::witness_refused(witness, error, decision_id, now_ms));
        }
    }

    /// `witness` accepted the log: a later refusal is told again.
    pub fn witness_accepted(&self, witness: &str) {
        self.refusing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(witness);
    }

    /// Queues `event`, without waiting; with no receiver configured, does nothing.
    fn raise(&self, event: Event) {
        match self.queue.try_send(event) {
            Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(event)) => {
                error!(event = %event.id, "cannot raise the notification: too many are waiting for the queue");
            }
        }
    }
}

/// Where the leading governor replica's notifications stand, in PostgreSQL
/// (`governor_notify`): the last record every event of which was delivered.
pub struct SharedCursor(pub Arc<arf_pg::Connection>);

impl SharedCursor {
    async fn load(&self) -> Result<Option<u64>, String> {
        let row = self.0.get().await.map_err(|e| e.to_string())?.query_opt("SELECT delivered_through FROM governor_notify WHERE id = 1", &[]).await.map_err(|e| e.to_string())?;
        Ok(row.map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }

    async fn save(&self, seq: u64) -> Result<(), String> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.0
            .get()
            .await
            .map_err(|e| e.to_string())?
            .execute("INSERT INTO governor_notify (id, delivered_through) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET delivered_through = GREATEST(governor_notify.delivered_through, EXCLUDED.delivered_through)", &[&seq])
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Starts following the log and delivering, when any receiver is configured, and
/// queues what `alarms` raises. `dir` holds the cursor and the queues; with
/// governor replicas, `shared` is where the leader's delivery stands (a new leader
/// starts there). The tasks run until they are aborted (the governor does so when it stops).
pub fn spawn(
    config: &NotifyConfig,
    dir: &Path,
    audit: AuditClient,
    writers: Writers,
    alarms: Alarms,
    shared: Option<SharedCursor>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let receivers = load(config)?;
    let mut tasks = Vec::new();
    if receivers.is_empty() {
        return Ok(tasks);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("arf-governor/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the notification client: {e}"))?;
    let (dir, console_url) = (dir.to_owned(), config.console_url.clone());
    tasks.push(tokio::spawn(async move {
        let names: Vec<&str> = receivers.iter().map(|r| r.config.name.as_str()).collect();
        // A governor that is stopping may hold the queue a moment longer.
        let outbox = loop {
            match outbox::Outbox::open(&dir, &names) {
                Ok(outbox) => break Arc::new(outbox),
                Err(outbox::OpenError::Locked(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(error) => {
                    error!(%error, dir = %dir.display(), "NOTIFICATIONS STOPPED: cannot open the notification queue; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        // The set's tasks end with this one (aborting it aborts them).
        let mut running = tokio::task::JoinSet::new();
        let mut wakers = HashMap::new();
        for receiver in &receivers {
            let wake = Arc::new(tokio::sync::Notify::new());
            wakers.insert(receiver.config.name.clone(), Arc::clone(&wake));
            running.spawn(deliver(receiver.clone(), Arc::clone(&outbox), client.clone(), console_url.clone(), wake));
        }
        info!(receivers = receivers.len(), "notifications: following the audit log");
        let shared = shared.map(Arc::new);
        if let Some(shared) = &shared {
            running.spawn(save_delivered(Arc::clone(shared), Arc::clone(&outbox), names.iter().map(|n| (*n).to_owned()).collect()));
        }
        running.spawn(raised(alarms, receivers.clone(), Arc::clone(&outbox), wakers.clone()));
        running.spawn(follow(audit, receivers.clone(), outbox, wakers, writers, shared));
        while running.join_next().await.is_some() {}
    }));
    Ok(tasks)
}

/// Queues `event` for every receiver that wants it, and wakes their senders.
fn route(event: &Event, receivers: &[Receiver], outbox: &outbox::Outbox, wakers: &HashMap<String, Arc<tokio::sync::Notify>>) -> std::io::Result<()> {
    for receiver in receivers.iter().filter(|r| r.wants(event)) {
        if outbox.enqueue(&receiver.config.name, event)?
            && let Some(wake) = wakers.get(&receiver.config.name)
        {
            wake.notify_one();
        }
    }
    Ok(())
}

/// With replicas: every 2 s, when every queue is empty, saves the cursor as where
/// delivery stands (read before the queues are looked at, so every event up to it
/// was queued, and is now delivered).
async fn save_delivered(shared: Arc<SharedCursor>, outbox: Arc<outbox::Outbox>, receivers: Vec<String>) {
    let mut saved = None;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Ok(Some(cursor)) = outbox.cursor() else { continue };
        let empty = receivers.iter().all(|r| outbox.pending(r).is_ok_and(|p| p.is_empty()));
        if empty && saved != Some(cursor) {
            match shared.save(cursor).await {
                Ok(()) => saved = Some(cursor),
                Err(error) => warn!(%error, "cannot save where notifications stand in the governors' database"),
            }
        }
    }
}

/// Queues each event raised, for as long as the governor runs.
async fn raised(mut alarms: Alarms, receivers: Vec<Receiver>, outbox: Arc<outbox::Outbox>, wakers: HashMap<String, Arc<tokio::sync::Notify>>) {
    while let Some(event) = alarms.0.recv().await {
        if let Err(io) = route(&event, &receivers, &outbox, &wakers) {
            error!(error = %io, event = %event.id, "cannot queue a raised notification");
        }
    }
}

/// Follows the log from the cursor for ever, turning records into queued events.
async fn follow(
    audit: AuditClient,
    receivers: Vec<Receiver>,
    outbox: Arc<outbox::Outbox>,
    wakers: HashMap<String, Arc<tokio::sync::Notify>>,
    writers: Writers,
    shared: Option<Arc<SharedCursor>>,
) {
    let mut contexts: HashMap<String, IncidentContext> = HashMap::new();
    let mut unreadable_since: Option<(std::time::Instant, i64)> = None;
    let mut told_unreadable = false;
    let mut backoff = Duration::from_millis(500);
    loop {
        let error = match follow_once(&audit, (&receivers, &outbox, &wakers), &writers, &mut contexts, &mut unreadable_since, shared.as_deref()).await {
            Ok(()) => "the log's stream ended".to_owned(),
            Err(error) => error,
        };
        let (since, since_ms) = *unreadable_since.get_or_insert_with(|| (std::time::Instant::now(), arf_core::time::now_ms()));
        warn!(%error, "notifications: cannot follow the audit log; retrying");
        if since.elapsed() >= AUDIT_GRACE && !told_unreadable {
            error!(%error, "AUDIT LOG UNREADABLE for {} s: telling the notification receivers", since.elapsed().as_secs());
            if let Err(io) = route(&event::audit_unavailable(since_ms, &error), &receivers, &outbox, &wakers) {
                error!(error = %io, "cannot queue the notification that the audit log is unreadable");
            } else {
                told_unreadable = true;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if unreadable_since.is_none() {
            told_unreadable = false;
            backoff = Duration::from_millis(500);
        }
    }
}

/// Where events go: the receivers, their queues and their senders' wakers.
type Routes<'a> = (&'a [Receiver], &'a outbox::Outbox, &'a HashMap<String, Arc<tokio::sync::Notify>>);

async fn follow_once(
    audit: &AuditClient,
    (receivers, outbox, wakers): Routes<'_>,
    writers: &Writers,
    contexts: &mut HashMap<String, IncidentContext>,
    unreadable_since: &mut Option<(std::time::Instant, i64)>,
    shared: Option<&SharedCursor>,
) -> Result<(), String> {
    // With replicas, from where the last leader's delivery stood, when that is
    // further on than this replica's own cursor (what lies between, the last
    // leader delivered).
    let delivered = match shared {
        Some(shared) => shared.load().await?,
        None => None,
    };
    let own = outbox.cursor().map_err(|e| format!("the notification cursor: {e}"))?;
    let start = match (own, delivered) {
        (Some(own), Some(delivered)) => Some(own.max(delivered)),
        (own, delivered) => own.or(delivered),
    };
    if start != own
        && let Some(start) = start
    {
        outbox.set_cursor(start).map_err(|e| format!("the notification cursor: {e}"))?;
    }
    let cursor = match start {
        Some(cursor) => cursor,
        // A new deployment tells of what happens from now on, not of its history.
        None => {
            let (head, _) = audit.head().await.map_err(|e| e.to_string())?;
            outbox.set_cursor(head).map_err(|e| format!("the notification cursor: {e}"))?;
            head
        }
    };
    // With replicas, where this leader starts is where the next one would: saved at
    // once, so a leader that dies before its first delivery loses nothing after it.
    if let Some(shared) = shared
        && delivered.is_none()
    {
        shared.save(cursor).await?;
    }
    let mut stream = std::pin::pin!(audit.tail_of(cursor + 1, &[], &event::KINDS).await.map_err(|e| e.to_string())?);
    *unreadable_since = None;
    let mut since_saved = 0u32;
    while let Some(record) = stream.next().await {
        let record: Record = record.map_err(|e| e.to_string())?;
        if let Some(opened) = IncidentContext::opened(&record, &writers.agent) {
            if contexts.len() >= CONTEXTS {
                contexts.clear();
            }
            contexts.insert(record.incident_id.clone(), opened);
        }
        let context = if event::needs_context(&record, writers) && !record.incident_id.is_empty() {
            match contexts.get(&record.incident_id) {
                Some(context) => Some(context.clone()),
                None => {
                    let trail = audit.read_incident(&record.incident_id).await.map_err(|e| e.to_string())?;
                    let context = IncidentContext::from_trail(&trail, &writers.agent).unwrap_or_default();
                    contexts.insert(record.incident_id.clone(), context.clone());
                    Some(context)
                }
            }
        } else {
            None
        };
        let events = event::events(&record, writers, context.as_ref());
        for event in &events {
            route(event, receivers, outbox, wakers).map_err(|e| format!("cannot queue notification `{}`: {e}", event.id))?;
        }
        since_saved += 1;
        // Saved after what a record made is queued; reading a record again queues nothing twice.
        if !events.is_empty() || since_saved >= 256 {
            outbox.set_cursor(record.seq).map_err(|e| format!("the notification cursor: {e}"))?;
            since_saved = 0;
        }
    }
    Ok(())
}

/// Why one try failed.
enum Failure {
    /// Try again, after this long if the receiver said.
    Retry(String, Option<Duration>),
    /// The receiver refused the event for good.
    Refused(String),
}

async fn send(client: &reqwest::Client, receiver: &Receiver, event: &Event, console_url: Option<&str>) -> Result<u16, Failure> {
    let request = match receiver.config.kind {
        ReceiverKind::Slack => client.post(&receiver.url).json(&render::slack(event, console_url)),
        ReceiverKind::Pagerduty => client.post(&receiver.url).json(&render::pagerduty(event, receiver.secret.as_deref().unwrap_or_default(), console_url)),
        ReceiverKind::Webhook => {
            let body = serde_json::to_vec(&render::webhook(event, console_url)).map_err(|e| Failure::Refused(e.to_string()))?;
            let timestamp = arf_core::time::now_ms() / 1000;
            let signature = render::signature(receiver.secret.as_deref().unwrap_or_default().as_bytes(), timestamp, &body);
            client
                .post(&receiver.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-ARF-Event-Id", &event.id)
                .header("X-ARF-Timestamp", timestamp.to_string())
                .header("X-ARF-Signature-256", signature)
                .body(body)
        }
    };
    // Errors are named without the URL: a Slack webhook URL is a secret.
    let response = request.send().await.map_err(|e| Failure::Retry(format!("cannot reach the receiver: {}", e.without_url()), None))?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(MAX_BACKOFF.as_secs())));
    let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
    let said = format!("{status}: {}", arf_core::text::printable(&body, false));
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS || status == reqwest::StatusCode::REQUEST_TIMEOUT {
        Err(Failure::Retry(said, retry_after))
    } else {
        Err(Failure::Refused(said))
    }
}

/// Sends what waits for one receiver, oldest first, for ever; one at a time, so a
/// receiver sees events in log order.
async fn deliver(receiver: Receiver, outbox: Arc<outbox::Outbox>, client: reqwest::Client, console_url: Option<String>, wake: Arc<tokio::sync::Notify>) {
    let name = receiver.config.name.clone();
    loop {
        let pending = match outbox.pending(&name) {
            Ok(pending) => pending,
            Err(error) => {
                error!(receiver = %name, %error, "cannot read the notification queue");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if pending.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
            continue;
        }
        for (path, event) in pending {
            let mut backoff = Duration::from_secs(1);
            loop {
                match send(&client, &receiver, &event, console_url.as_deref()).await {
                    Ok(status) => {
                        arf_proto::metrics::inc("arf_governor_notifications_total", "Notifications, by receiver and result.", &[("receiver", &name), ("result", "sent")]);
                        if let Err(error) = outbox.mark_sent(&name, &path, &event, status) {
                            error!(receiver = %name, event_id = %event.id, %error, "sent, but cannot record it: it may be sent again");
                        }
                        info!(receiver = %name, event_id = %event.id, kind = event.kind.as_str(), status, "notification sent");
                        break;
                    }
                    Err(Failure::Refused(said)) => {
                        arf_proto::metrics::inc("arf_governor_notifications_total", "Notifications, by receiver and result.", &[("receiver", &name), ("result", "refused")]);
                        error!(receiver = %name, event_id = %event.id, kind = event.kind.as_str(), %said, "NOTIFICATION REFUSED by its receiver for good; set aside under notify/dead");
                        if let Err(error) = outbox.dead(&name, &path) {
                            error!(receiver = %name, %error, "cannot set the refused notification aside");
                        }
                        break;
                    }
                    Err(Failure::Retry(said, after)) => {
                        arf_proto::metrics::inc("arf_governor_notifications_total", "Notifications, by receiver and result.", &[("receiver", &name), ("result", "retried")]);
                        let wait = after.unwrap_or(backoff);
                        warn!(receiver = %name, event_id = %event.id, %said, retry_in_ms = wait.as_millis() as u64, "notification not delivered; retrying");
                        tokio::time::sleep(wait).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(kind: ReceiverKind) -> ReceiverConfig {
        ReceiverConfig::new("r", kind)
    }

    fn refused(receivers: Vec<ReceiverConfig>) -> String {
        check(&NotifyConfig { console_url: None, receivers }).unwrap_err()
    }

    #[test]
    fn a_receiver_is_refused_at_load_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let url_file = dir.path().join("slack.url");
        std::fs::write(&url_file, "http://hooks.slack.example/services/T/B/X").unwrap();
        let slack_inline = ReceiverConfig { url: Some("https://hooks.slack.com/services/T/B/X".into()), ..receiver(ReceiverKind::Slack) };
        assert!(refused(vec![slack_inline]).contains("is a secret"));
        let slack_plain = ReceiverConfig { url_file: Some(url_file), ..receiver(ReceiverKind::Slack) };
        assert!(refused(vec![slack_plain]).contains("plain `http` is refused off loopback"));
        assert!(refused(vec![receiver(ReceiverKind::Pagerduty)]).contains("`secret_file` is required"));
        let hook = ReceiverConfig { url: Some("http://127.0.0.1:9/hook".into()), secret_file: Some(secret.clone()), ..receiver(ReceiverKind::Webhook) };
        assert!(check(&NotifyConfig { console_url: None, receivers: vec![hook.clone()] }).is_ok());
        assert!(refused(vec![hook.clone(), hook.clone()]).contains("used twice"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(refused(vec![ReceiverConfig { secret_file: Some(empty), ..hook.clone() }]).contains("is empty"));
        let odd = ReceiverConfig { url: Some("ftp://127.0.0.1/hook".into()), ..hook };
        assert!(refused(vec![odd]).contains("scheme `ftp`"));
    }

    #[test]
    fn filters_pass_what_they_name_and_what_names_no_service() {
        let event = event::audit_unavailable(0, "down");
        let loaded = |config: ReceiverConfig| Receiver { config, url: String::new(), secret: None };
        let base = receiver(ReceiverKind::Webhook);
        assert!(loaded(base.clone()).wants(&event));
        assert!(loaded(ReceiverConfig { environments: vec!["production".into()], ..base.clone() }).wants(&event), "about no environment: passes");
        assert!(!loaded(ReceiverConfig { events: vec![EventKind::Escalated], ..base.clone() }).wants(&event));
        assert!(loaded(ReceiverConfig { min_severity: Some(Severity::Critical), ..base.clone() }).wants(&event));
        let staging = Event { service: "web".into(), environment: "staging".into(), severity: Severity::Warning, ..event };
        assert!(!loaded(ReceiverConfig { environments: vec!["production".into()], ..base.clone() }).wants(&staging));
        assert!(!loaded(ReceiverConfig { services: vec!["api".into()], ..base.clone() }).wants(&staging));
        assert!(!loaded(ReceiverConfig { min_severity: Some(Severity::Error), ..base }).wants(&staging));
        // PagerDuty pages: informational events (a precheck's refusal, the kill
        // switch moved) stay off it unless asked for, and its resolves always pass.
        let pagerduty = receiver(ReceiverKind::Pagerduty);
        let info = Event { severity: Severity::Info, kind: EventKind::ActionFailed, ..staging.clone() };
        assert!(!loaded(pagerduty.clone()).wants(&info));
        assert!(loaded(ReceiverConfig { min_severity: Some(Severity::Info), ..pagerduty.clone() }).wants(&info));
        assert!(loaded(pagerduty.clone()).wants(&staging));
        let resolved = Event { severity: Severity::Info, kind: EventKind::Resolved, ..staging };
        assert!(loaded(ReceiverConfig { min_severity: Some(Severity::Critical), ..pagerduty }).wants(&resolved));
    }
}
