//! `arf serve ROLE`: one service in this process.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::setup::{self, Layout, Ports};
use crate::{Role, exit};

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub use arf_proto::service::shutdown_signal;

fn init_tracing(role: Role, format: Option<arf_proto::service::LogFormat>) -> arf_proto::telemetry::Telemetry {
    arf_proto::service::init_tracing(role.as_str(), format)
}

/// The configuration file to use: the one given, or the data directory's (written at first start).
pub fn config_file(config: Option<PathBuf>, data_dir: &Path) -> anyhow::Result<PathBuf> {
    config_file_at(config, data_dir, None)
}

/// [`config_file`], with the services' ports starting at `port_base` when it is
/// given ([`Ports::from_base`]): a new file is written with them, an existing one
/// is moved to them.
pub fn config_file_at(config: Option<PathBuf>, data_dir: &Path, port_base: Option<u16>) -> anyhow::Result<PathBuf> {
    let ports = port_base.map(Ports::from_base).transpose()?;
    let file = match config {
        Some(file) => file,
        None => {
            let layout = Layout::new(data_dir)?;
            setup::prepare(&layout, ports.unwrap_or_default(), &setup::no_targets(), &setup::Reasoning::Rules)?
        }
    };
    if let Some(ports) = &ports {
        setup::set_ports(&file, ports)?;
    }
    Ok(file)
}

pub async fn run(role: Role, config: Option<PathBuf>, data_dir: &Path, format: Option<crate::LogFormat>) -> anyhow::Result<ExitCode> {
    // Kept until the service stops, so its last spans are exported.
    let _telemetry = init_tracing(role, format.map(crate::LogFormat::service));
    let file = config_file(config, data_dir)?;
    let deployment = match setup::load(&file) {
        Ok(deployment) => deployment,
        Err(error) => {
            eprintln!("error: bad configuration: {error:#}");
            return Ok(ExitCode::from(exit::CONFIG));
        }
    };
    let validated = match role {
        Role::Audit => deployment.audit.validate().map_err(|e| e.to_string()),
        Role::Agent => deployment.agent.validate().map_err(|e| e.to_string()),
        Role::Governor => deployment.governor.validate().map_err(|e| e.to_string()),
        Role::Executor => deployment.executor.validate().map_err(|e| e.to_string()),
    };
    if let Err(error) = validated {
        eprintln!("error: bad configuration in `{}`: {error}", file.display());
        return Ok(ExitCode::from(exit::CONFIG));
    }
    match role {
        Role::Audit => {
            let listener = bind(deployment.audit.listen).await?;
            arf_audit::serve(deployment.audit, listener, shutdown_signal()).await?;
        }
        Role::Agent => {
            let listener = bind(deployment.agent.listen).await?;
            let webhook = bind(deployment.agent.webhook_listen).await?;
            arf_agent::serve(deployment.agent, listener, webhook, shutdown_signal()).await?;
        }
        Role::Governor => {
            let listener = bind(deployment.governor.listen).await?;
            arf_governor::serve(deployment.governor, listener, shutdown_signal()).await?;
        }
        Role::Executor => {
            let listener = bind(deployment.executor.listen).await?;
            arf_executor::serve(deployment.executor, listener, shutdown_signal()).await?;
        }
    }
    tracing::info!(role = role.as_str(), "stopped");
    Ok(ExitCode::SUCCESS)
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on `{addr}`"))
}

/// `arf config check`: loads the deployment file and checks each service's section
/// as that service would at start (its own checks, then its mutual TLS files),
/// without binding anything. Every problem is listed; exit 64 when there is one.
/// Investigation calls are logged as `investigation` records: a deployment that
/// configures tools must let the agent append them (files written before this
/// record kind existed do not).
fn investigation_logged(deployment: &setup::Deployment) -> Result<(), String> {
    let kinds = deployment.audit.writer_kinds.get("agent");
    match (&deployment.agent.investigation.tools_dir, kinds) {
        (Some(_), Some(kinds)) if !kinds.iter().any(|k| k == "investigation") => Err(
            "`agent.investigation.tools_dir` is set, but `audit.writer_kinds.agent` lacks `investigation`, so every call's result would be withheld: add it".to_owned(),
        ),
        _ => Ok(()),
    }
}

/// A replica (its role's `postgres` set) appends under its lease, which only a
/// log in the replicas' database can check: a log kept in files would refuse
/// every append of it.
fn fenced_by_the_log(deployment: &setup::Deployment, role: &str, postgres: Option<&arf_pg::Settings>) -> Result<(), String> {
    // Hosts, ports and database name, with PostgreSQL's defaults filled in: the
    // same database however the URL spells the rest.
    let database = |settings: &arf_pg::Settings| {
        settings.url.parse::<arf_pg::tokio_postgres::Config>().ok().map(|c| {
            let hosts: Vec<String> = c.get_hosts().iter().map(|h| format!("{h:?}").to_lowercase().replace("localhost", "127.0.0.1")).collect();
            let ports = if c.get_ports().is_empty() { vec![5432] } else { c.get_ports().to_vec() };
            (hosts, ports, c.get_dbname().or(c.get_user()).map(str::to_owned))
        })
    };
    match (postgres, &deployment.audit.postgres) {
        (Some(_), None) => Err(format!(
            "`{role}.postgres` is set, so this {role} appends under its replica lease, which only a log kept in that database can check, and `audit.postgres` is not set: the log would refuse every append; set it to the same database"
        )),
        (Some(own), Some(log)) if database(own) != database(log) => Err(format!(
            "`{role}.postgres` and `audit.postgres` name different databases, and this {role}'s appends are fenced by its replica lease, which the log checks in its own database: the log would refuse every append; use one database for both"
        )),
        _ => Ok(()),
    }
}

pub fn check(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let file = config.or_else(|| std::env::var_os("ARF_CONFIG").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(".arf/arf.toml"));
    let deployment = match setup::load(&file) {
        Ok(deployment) => deployment,
        Err(error) => {
            eprintln!("error: `{}`: {error:#}", file.display());
            return Ok(ExitCode::from(exit::CONFIG));
        }
    };
    let tls = |transport: Result<arf_core::tls::Transport, String>| transport.and_then(|t| arf_proto::tls::Loaded::load(&t).map(|_| ()).map_err(|e| e.to_string()));
    let checks: [(Role, Result<(), String>); 4] = [
        (Role::Audit, deployment.audit.validate().and_then(|()| tls(deployment.audit.transport()))),
        (
            Role::Governor,
            deployment.governor.validate().map_err(|e| e.to_string()).and_then(|()| tls(deployment.governor.transport().map_err(|e| e.to_string()))).and_then(|()| {
                fenced_by_the_log(&deployment, "governor", deployment.governor.postgres.as_ref())
            }),
        ),
        // The executor's own check loads its TLS files too.
        (Role::Executor, deployment.executor.validate().map_err(|e| e.to_string()).and_then(|()| fenced_by_the_log(&deployment, "executor", deployment.executor.postgres.as_ref()))),
        (
            Role::Agent,
            deployment.agent.validate().and_then(|()| tls(deployment.agent.transport())).and_then(|()| investigation_logged(&deployment)).and_then(|()| {
                fenced_by_the_log(&deployment, "agent", deployment.agent.postgres.as_ref())
            }),
        ),
    ];
    let mut bad = 0;
    for (role, checked) in &checks {
        match checked {
            Ok(()) => println!("ok     [{}]", role.as_str()),
            Err(error) => {
                bad += 1;
                println!("error  [{}]: {error}", role.as_str());
            }
        }
    }
    if bad == 0 {
        println!("`{}` is a deployment every service can start from", file.display());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {bad} of 4 sections of `{}` would keep their service from starting", file.display());
        Ok(ExitCode::from(exit::CONFIG))
    }
}
