//! Which deployment the CLI talks to, so that its commands need no addresses:
//! `ARF_CONFIG` names the deployment file, else `.arf/arf.toml` when there is one.
//! An address given with `--agent`, `--governor`, `--audit` (or their variables)
//! wins; the rest come from the file, and the defaults only without one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// What the CLI takes from a deployment file.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub agent: String,
    pub governor: String,
    pub audit: String,
    /// The directory of the deployment's CA, where `arf certs init` puts the CLI's certificate.
    pub tls_dir: Option<PathBuf>,
    /// The executor's catalog, for `arf pathways`.
    pub catalog: PathBuf,
    pub executor: String,
    /// Each service's metrics endpoint, where it has one: `arf status` reads its
    /// version and start time there.
    pub metrics: Vec<(crate::Role, String)>,
}

/// An address to dial for a service listening on `listen`: the same port on
/// loopback when it listens on every interface.
pub fn dial(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if listen.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        SocketAddr::new(loopback, listen.port()).to_string()
    } else {
        listen.to_string()
    }
}

/// The deployment file `ARF_CONFIG` names, or `.arf/arf.toml` if it exists; none otherwise.
pub fn find() -> Result<Option<Deployment>> {
    let file = match std::env::var_os("ARF_CONFIG") {
        Some(file) => PathBuf::from(file),
        None => {
            let local = Path::new(".arf/arf.toml");
            if !local.exists() {
                return Ok(None);
            }
            local.to_owned()
        }
    };
    let deployment = crate::setup::load(&file).with_context(|| format!("the deployment `{}` (`ARF_CONFIG`, else `.arf/arf.toml`)", file.display()))?;
    let tls_dir = deployment
        .agent
        .mtls
        .as_ref()
        .and_then(|m| m.ca_file.parent().map(Path::to_owned))
        .filter(|dir| dir.join("client.pem").exists());
    Ok(Some(Deployment {
        agent: dial(deployment.agent.listen),
        governor: dial(deployment.governor.listen),
        audit: dial(deployment.audit.listen),
        tls_dir,
        executor: dial(deployment.executor.listen),
        metrics: [
            (crate::Role::Audit, deployment.audit.metrics_listen),
            (crate::Role::Governor, deployment.governor.metrics_listen),
            (crate::Role::Executor, deployment.executor.metrics_listen),
            (crate::Role::Agent, deployment.agent.metrics_listen),
        ]
        .into_iter()
        .filter_map(|(role, listen)| listen.map(|l| (role, dial(l))))
        .collect(),
        catalog: deployment.executor.catalog_dir,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_on_every_interface_is_dialled_on_loopback() {
        assert_eq!(dial("0.0.0.0:7401".parse().unwrap()), "127.0.0.1:7401");
        assert_eq!(dial("[::]:7401".parse().unwrap()), "[::1]:7401");
        assert_eq!(dial("10.0.0.5:7401".parse().unwrap()), "10.0.0.5:7401");
    }
}
