//! ARF on PostgreSQL: how a service finds its database, the schema's migrations,
//! and what is checked before a service trusts the database with its state.
//!
//! The migrations are SQL files in `pg/migrations/`, compiled in, applied in order
//! by `arf db migrate` (each in its own transaction, under an advisory lock, so two
//! operators running it at once apply each migration once) and recorded with their
//! SHA-256 in `arf_migrations`. A service refuses a database whose migrations are
//! missing, differ from its own, or come from a newer ARF (`check`), and one that
//! does not make a commit durable (`fsync`, `synchronous_commit` or
//! `full_page_writes` off): an acknowledged append must survive a crash of the
//! database's host too.

pub mod lease;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;

pub use tls::{Connector, TlsSettings};

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio_postgres::config::Host;
use tracing::{error, info};

pub use tokio_postgres::{self, Client, Row};
pub use tokio_postgres::types::ToSql;

/// Where a service's database is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `postgres://USER@HOST:PORT/DATABASE` (or `host=... user=... dbname=...`),
    /// without a password.
    pub url: String,
    /// A file holding the password, when the server asks for one (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// TLS to the server, its certificate verified against this CA and its name
    /// against the URL's host; required for a server on another host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PgError {
    #[error("the database setting `url`: {0}")]
    Settings(String),
    /// `detail` holds the driver's error and its causes (a TLS refusal names the certificate's fault).
    #[error("cannot reach PostgreSQL at {at}: {detail}")]
    Connect { at: String, detail: String },
    #[error("{0}")]
    Schema(String),
    #[error("the database does not make commits durable: {0}; ARF will not keep its log or state there")]
    NotDurable(String),
    /// What the server said (its message and SQLSTATE), not only the driver's "db error".
    #[error("PostgreSQL: {}", said(.0))]
    Query(#[from] tokio_postgres::Error),
    /// A replica's lease on its name lapsed, or another process holds it.
    #[error("{0}")]
    LeaseLost(String),
}

/// A driver error as a person needs it: the server's message, detail and SQLSTATE
/// when the server answered, else the driver's error and its causes.
fn said(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail}; SQLSTATE {})", db.message(), db.code().code()),
            None => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        },
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

impl Settings {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), password_file: None, tls: None }
    }

    /// The driver's configuration, checked: no password in the URL (it would be in
    /// the configuration file, logs and `ps`), and, without `tls`, a server on this
    /// host only (loopback or a Unix socket), as plain text.
    pub fn config(&self) -> Result<tokio_postgres::Config, PgError> {
        let mut config = tokio_postgres::Config::from_str(&self.url).map_err(|e| PgError::Settings(e.to_string()))?;
        if config.get_password().is_some() {
            return Err(PgError::Settings("holds a password; put it in `password_file` instead".to_owned()));
        }
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(PgError::Settings("names no host".to_owned()));
        }
        if self.tls.is_some() {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        } else if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(PgError::Settings("asks for TLS (`sslmode=require`): name the server's CA in `tls.ca_file`".to_owned()));
        }
        let remote = config.get_hosts().iter().find_map(|host| match host {
            Host::Tcp(name) if !is_loopback(name) => Some(name.clone()),
            _ => None,
        });
        let remote = remote.or_else(|| config.get_hostaddrs().iter().find(|a| !a.is_loopback()).map(|a| a.to_string()));
        if let Some(host) = remote.filter(|_| self.tls.is_none()) {
            return Err(PgError::Settings(format!(
                "names `{host}`, which is not on this host: without `tls` (the server's CA in `tls.ca_file`), ARF speaks to PostgreSQL only over loopback or a Unix socket"
            )));
        }
        if let Some(path) = &self.password_file {
            let password = std::fs::read_to_string(path)
                .map_err(|e| PgError::Settings(format!("`password_file` `{}`: {e}", path.display())))?;
            config.password(password.trim_end_matches(['\n', '\r']));
        }
        if config.get_application_name().is_none() {
            config.application_name("arf");
        }
        // A server that stops answering is noticed: connecting is bounded, and an
        // idle connection is probed, so a call does not hang on a dead peer.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.keepalives(true).keepalives_idle(std::time::Duration::from_secs(10));
        Ok(config)
    }

    /// Where the database is, for messages: the URL has no password in it.
    pub fn describe(&self) -> String {
        self.url.clone()
    }

    /// Checks the settings without connecting: the URL (no password; plain text
    /// only on this host) and the TLS files, as a service's configuration check does.
    pub fn validate(&self) -> Result<(), PgError> {
        self.config().and_then(|_| self.connector()).map(|_| ())
    }

    /// The TLS connector the settings ask for, if any: its files load.
    pub fn connector(&self) -> Result<Option<Connector>, PgError> {
        self.tls.as_ref().map(TlsSettings::connector).transpose()
    }

    /// Connects; the connection runs on its own task until the client is dropped.
    pub async fn connect(&self) -> Result<Client, PgError> {
        let config = self.config()?;
        let at = || self.describe();
        match self.connector()? {
            Some(tls) => {
                let (client, connection) = config.connect(tls).await.map_err(|source| PgError::Connect { at: at(), detail: chain(&source) })?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
            None => {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|source| PgError::Connect { at: at(), detail: chain(&source) })?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
        }
    }

    /// Connects and hands back the connection's notifications (`LISTEN`) as they
    /// arrive; the receiver closes when the connection ends.
    pub async fn connect_listening(&self) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>), PgError> {
        let config = self.config()?;
        let at = || self.describe();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = match self.connector()? {
            Some(tls) => {
                let (client, connection) = config.connect(tls).await.map_err(|source| PgError::Connect { at: at(), detail: chain(&source) })?;
                tokio::spawn(listen(connection, tx));
                client
            }
            None => {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|source| PgError::Connect { at: at(), detail: chain(&source) })?;
                tokio::spawn(listen(connection, tx));
                client
            }
        };
        Ok((client, rx))
    }
}

/// An error and its causes, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(&format!(": {next}"));
        cause = next.source();
    }
    text
}

/// Runs a connection until it ends.
async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(error) = connection.await {
        error!(%error, "the connection to PostgreSQL ended");
    }
}

/// Runs a connection until it ends, sending its notifications' payloads to `tx`.
async fn listen<S, T>(mut connection: tokio_postgres::Connection<S, T>, tx: tokio::sync::mpsc::UnboundedSender<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                if tx.send(n.payload().to_owned()).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                error!(%error, "the listening connection to PostgreSQL ended");
                return;
            }
        }
    }
}

/// A connection that is made again when it has closed: what a service holds for
/// its queries (tokio-postgres pipelines concurrent queries on one connection).
pub struct Connection {
    settings: Settings,
    client: tokio::sync::Mutex<std::sync::Arc<Client>>,
}

impl Connection {
    pub async fn open(settings: &Settings) -> Result<Self, PgError> {
        let client = settings.connect().await?;
        Ok(Self { settings: settings.clone(), client: tokio::sync::Mutex::new(std::sync::Arc::new(client)) })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub async fn get(&self) -> Result<std::sync::Arc<Client>, PgError> {
        let mut client = self.client.lock().await;
        if client.is_closed() {
            tracing::warn!(at = %self.settings.describe(), "a connection to PostgreSQL closed; connecting again");
            let fresh = self.settings.connect().await?;
            // The server may have changed since (a failover, a reload): checked as at start.
            check(&fresh).await?;
            *client = std::sync::Arc::new(fresh);
        }
        Ok(std::sync::Arc::clone(&client))
    }
}

fn is_loopback(name: &str) -> bool {
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// One step of the schema.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Every migration, in order. Never edit one that has shipped: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "audit_log", sql: include_str!("../migrations/0001_audit_log.sql") },
    Migration { version: 2, name: "executor", sql: include_str!("../migrations/0002_executor.sql") },
    Migration { version: 3, name: "executor_fences", sql: include_str!("../migrations/0003_executor_fences.sql") },
    Migration { version: 4, name: "agent", sql: include_str!("../migrations/0004_agent.sql") },
    Migration { version: 5, name: "governor", sql: include_str!("../migrations/0005_governor.sql") },
    Migration { version: 6, name: "governor_state", sql: include_str!("../migrations/0006_governor_state.sql") },
    Migration { version: 7, name: "agent_key_tokens", sql: include_str!("../migrations/0007_agent_key_tokens.sql") },
    Migration { version: 8, name: "audit_head_seal", sql: include_str!("../migrations/0008_audit_head_seal.sql") },
];

/// A key for `pg_advisory_xact_lock`, so concurrent `migrate` calls take turns.
const MIGRATE_LOCK: i64 = 0x4152_465f_4d49_4752; // "ARF_MIGR"

const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS arf_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Applies the migrations the database lacks; returns the versions applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, PgError> {
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK]).await?;
        tx.batch_execute(CREATE_MIGRATIONS).await?;
        let row = tx.query_opt("SELECT sha256 FROM arf_migrations WHERE version = $1", &[&migration.version]).await?;
        match row {
            Some(row) => {
                let sha: String = row.get(0);
                if sha != migration.checksum() {
                    return Err(changed(migration));
                }
            }
            None => {
                tx.batch_execute(migration.sql).await?;
                tx.execute(
                    "INSERT INTO arf_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                    &[&migration.version, &migration.name, &migration.checksum()],
                )
                .await?;
                info!(version = migration.version, name = migration.name, "migration applied");
                applied.push(migration.version);
            }
        }
        tx.commit().await?;
    }
    check_versions(client).await?;
    Ok(applied)
}

fn changed(migration: &Migration) -> PgError {
    PgError::Schema(format!(
        "migration {} (`{}`) in the database differs from this ARF's: the schema was changed by hand or by another build",
        migration.version, migration.name
    ))
}

/// What a service checks before it uses the database: its schema is exactly the
/// migrations this build has, and commits are durable.
pub async fn check(client: &Client) -> Result<(), PgError> {
    check_versions(client).await?;
    check_durability(client).await
}

async fn check_versions(client: &Client) -> Result<(), PgError> {
    let exists: bool = client.query_one("SELECT to_regclass('arf_migrations') IS NOT NULL", &[]).await?.get(0);
    let rows = if exists { client.query("SELECT version, sha256 FROM arf_migrations ORDER BY version", &[]).await? } else { Vec::new() };
    let found: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if let Some((version, _)) = found.iter().find(|(v, _)| !MIGRATIONS.iter().any(|m| m.version == *v)) {
        return Err(PgError::Schema(format!(
            "the database has migration {version}, which this ARF does not know: it was migrated by a newer version"
        )));
    }
    for migration in MIGRATIONS {
        match found.iter().find(|(v, _)| *v == migration.version) {
            None => {
                return Err(PgError::Schema(format!(
                    "the database lacks migration {} (`{}`): run `arf db migrate`",
                    migration.version, migration.name
                )));
            }
            Some((_, sha)) if *sha != migration.checksum() => return Err(changed(migration)),
            Some(_) => {}
        }
    }
    Ok(())
}

async fn check_durability(client: &Client) -> Result<(), PgError> {
    // A table made UNLOGGED (by hand) loses what was committed to it in a crash.
    let unlogged = client
        .query(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relpersistence <> 'p' AND (relname LIKE 'audit\\_%' OR relname LIKE 'executor\\_%' OR relname = 'arf_migrations')",
            &[],
        )
        .await?;
    if let Some(row) = unlogged.first() {
        return Err(PgError::NotDurable(format!("the table `{}` is not logged", row.get::<_, String>(0))));
    }
    for (setting, refused) in [("fsync", &["off"][..]), ("synchronous_commit", &["off"][..]), ("full_page_writes", &["off"][..])] {
        let value: String = client.query_one(&format!("SHOW {setting}"), &[]).await?.get(0);
        if refused.contains(&value.as_str()) {
            return Err(PgError::NotDurable(format!("`{setting}` is `{value}`")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused() {
        let error = Settings::new("postgres://arf:hunter2@127.0.0.1:5432/arf").config().err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("password_file") && !e.contains("hunter2")));
    }

    #[test]
    fn only_a_server_on_this_host_is_accepted_without_tls() {
        for url in ["postgres://arf@db.example.com/arf", "host=10.0.0.5 user=arf", "postgres://arf@127.0.0.1,db.example.com/arf"] {
            let error = Settings::new(url).config().err().map(|e| e.to_string());
            assert!(error.as_deref().is_some_and(|e| e.contains("not on this host")), "{url}: {error:?}");
        }
        for url in ["postgres://arf@127.0.0.1:5432/arf", "postgres://arf@localhost/arf", "host=/run/postgresql user=arf", "postgres://arf@[::1]:5432/arf"] {
            assert!(Settings::new(url).config().is_ok(), "{url}");
        }
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
        }
    }
}
