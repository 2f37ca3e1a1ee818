//! `arf db`: the PostgreSQL store's schema (issue 16). `migrate` applies what the
//! database lacks; `check` says whether a service would accept it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::exit;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Applies the migrations the database lacks, each once even when run twice at once, then checks it as `check` does.
    Migrate(Target),
    /// Checks the database as every service does at start: each of this build's migrations applied and unchanged, none from a newer build, and commits durable (`fsync`, `synchronous_commit`, `full_page_writes` on); exit 1 naming the problem.
    Check(Target),
}

#[derive(Debug, Args)]
pub struct Target {
    /// The database, `postgres://USER@HOST:PORT/DATABASE`, without a password (default: `audit.postgres` in the deployment file).
    #[arg(long)]
    url: Option<String>,
    /// A file holding the database's password, with `--url`.
    #[arg(long, requires = "url")]
    password_file: Option<PathBuf>,
    /// Reach the database over TLS, its certificate checked against this CA (PEM) and its name against the URL's host, with `--url`.
    #[arg(long, requires = "url")]
    ca_file: Option<PathBuf>,
    /// The deployment file (default: `ARF_CONFIG`, else `.arf/arf.toml`).
    #[arg(long, conflicts_with = "url")]
    config: Option<PathBuf>,
}

impl Target {
    /// The database named on the command line, else the deployment's.
    pub fn settings(&self) -> Result<arf_pg::Settings> {
        if let Some(url) = &self.url {
            let tls = self.ca_file.clone().map(|ca_file| arf_pg::TlsSettings { ca_file, cert_file: None, key_file: None });
            return Ok(arf_pg::Settings { url: url.clone(), password_file: self.password_file.clone(), tls });
        }
        let file = self.config.clone().or_else(|| std::env::var_os("ARF_CONFIG").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(".arf/arf.toml"));
        let audit: arf_audit::Config = arf_core::deployment::load_section(&file, "audit").map_err(anyhow::Error::msg)?;
        audit.postgres.with_context(|| format!("`{}` keeps the log in files (`audit.postgres` is not set); name a database with `--url`", file.display()))
    }
}

pub async fn run(command: DbCommand) -> Result<ExitCode> {
    let (target, migrating) = match &command {
        DbCommand::Migrate(target) => (target, true),
        DbCommand::Check(target) => (target, false),
    };
    let settings = target.settings()?;
    let mut client = settings.connect().await?;
    if migrating {
        let applied = arf_pg::migrate(&mut client).await?;
        if applied.is_empty() {
            say!("{}: every migration was already applied", settings.describe());
        }
        for version in applied {
            let name = arf_pg::MIGRATIONS.iter().find(|m| m.version == version).map_or("", |m| m.name);
            say!("applied  {version:04} {name}");
        }
    }
    match arf_pg::check(&client).await {
        Ok(()) => {
            say!("{}: schema at migration {} of {}, commits durable", settings.describe(), arf_pg::MIGRATIONS.len(), arf_pg::MIGRATIONS.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            warn_user!("{}: {error}", settings.describe());
            Ok(ExitCode::from(exit::FAILURE))
        }
    }
}
