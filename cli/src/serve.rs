//! `arf serve ROLE`: one service in this process.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::setup::{self, Layout, Ports};
use crate::{Role, exit};

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub use arf_proto::service::shutdown_signal;

fn init_tracing(role: Role) {
    arf_proto::service::init_tracing(role.as_str());
}

/// The configuration file to use: the one given, or the data directory's (written at first start).
pub fn config_file(config: Option<PathBuf>, data_dir: &Path) -> anyhow::Result<PathBuf> {
    match config {
        Some(file) => Ok(file),
        None => {
            let layout = Layout::new(data_dir)?;
            setup::prepare(&layout, Ports::default(), &setup::no_targets(), &setup::Reasoning::Rules)
        }
    }
}

pub async fn run(role: Role, config: Option<PathBuf>, data_dir: &Path) -> anyhow::Result<ExitCode> {
    init_tracing(role);
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
