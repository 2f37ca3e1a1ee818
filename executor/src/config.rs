//! The executor's configuration, and loading everything it names before a port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;

use arf_core::catalog::{Catalog, CatalogError};
use arf_core::decision::TrustedKey;
use arf_core::keys::KeyError;
use arf_core::target::Inventory;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the idempotency database lives.
    pub data_dir: PathBuf,
    /// The audit log's address; several, separated by commas, for audit front-ends
    /// that serve one log (`audit.postgres`): calls go to the next when one does not answer.
    #[serde(default = "default_audit_addr")]
    pub audit_addr: String,
    /// The file holding the executor's bearer token for the audit log.
    pub audit_token_file: PathBuf,
    /// The directory of pathway TOML files this executor runs.
    pub catalog_dir: PathBuf,
    /// Public key files (hex) of the governor keys whose decisions are accepted;
    /// several are allowed so that a key rotation does not stop execution.
    pub trusted_keys: Vec<PathBuf>,
    /// What pathways may act on, with the facts their templates read.
    #[serde(default)]
    pub targets: Inventory,
    /// How many actions may run at once across all targets; more wait their turn.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// A directory of secret files (`<dir>/<NAME>`, readable by the executor's
    /// user only); `ARF_SECRET_<NAME>` in the environment takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<PathBuf>,
    /// TLS for the `http` runner and the `http` and `prometheus` probes.
    #[serde(default, skip_serializing_if = "Tls::is_default")]
    pub tls: Tls,
    /// The audit log's public checkpoint key (hex `.pub`). When set, the executor
    /// is a witness of the log: before each action it has the log sign a checkpoint,
    /// keeps it in `data_dir/witness/checkpoint`, and refuses to act on a log that
    /// does not prove it extends the last one it saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_checkpoint_key: Option<PathBuf>,
    /// The log's origin in its checkpoints.
    #[serde(default = "arf_audit_client::checkpoint::default_origin")]
    pub audit_checkpoint_origin: String,
    /// As a witness, how often (seconds) it also checks the log between actions,
    /// so that an action's own records are under its checkpoint within this time.
    #[serde(default = "arf_audit_client::witness::default_keep_up_secs")]
    pub witness_every_secs: u64,
    /// Who may call the executor: the governor (role `governor`) asks it to act;
    /// people, tooling and auditors may look up executions. With none, every call
    /// is refused.
    #[serde(default)]
    pub identities: Vec<arf_core::identity::Identity>,
    /// Mutual TLS with the other services: the CA of every peer, and this service's
    /// certificate and key. (`tls` is for the targets the pathways call.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<arf_core::tls::TlsFiles>,
    /// Plain text instead, confined to loopback addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_loopback_only: bool,
    /// The HTTP endpoint for Prometheus (`/metrics`, with a reader's token) and
    /// probes (`/healthz`, `/readyz`); off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Keep executions and target locks in this PostgreSQL database (migrated with
    /// `arf db migrate`), shared by every executor replica, instead of `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<arf_pg::Settings>,
    /// This replica's name in that database; each replica needs its own (default `executor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// How long a replica's lease on its executions and target locks lasts without
    /// renewal; after it lapses, another replica takes them over (default 10).
    #[serde(default = "arf_pg::lease::default_lease_secs")]
    pub lease_secs: u64,
}


/// Which servers the executor's HTTP client trusts, and how it proves who it is.
/// Certificates are always verified; there is no setting to turn that off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM files of CA certificates (one or several per file) to trust, for
    /// platform APIs behind an internal CA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_files: Vec<PathBuf>,
    /// Trust only `ca_files`, not the built-in Mozilla (webpki) roots.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub only_ca_files: bool,
    /// A PEM file holding a client certificate chain and its PKCS#8 private key,
    /// for APIs that require mutual TLS. Keep it readable by the executor's user only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity_file: Option<PathBuf>,
}

impl Tls {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The HTTP client every step and probe uses: certificates verified against
    /// these roots, redirects never followed (a step talks to the URL it names).
    pub fn client(&self) -> Result<reqwest::Client, ConfigError> {
        let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        for path in &self.ca_files {
            let pem = read(path, "ca_files")?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ConfigError::Tls { field: "ca_files", path: path.clone(), message: e.to_string() })?;
            if certificates.is_empty() {
                return Err(ConfigError::Tls {
                    field: "ca_files",
                    path: path.clone(),
                    message: "holds no PEM certificate".to_owned(),
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if self.only_ca_files {
            if self.ca_files.is_empty() {
                return Err(ConfigError::NoCaFiles);
            }
            builder = builder.tls_built_in_root_certs(false);
        }
        if let Some(path) = &self.client_identity_file {
            let pem = read(path, "client_identity_file")?;
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| ConfigError::Tls {
                field: "client_identity_file",
                path: path.clone(),
                message: format!("needs a PEM certificate chain and its private key: {e}"),
            })?;
            builder = builder.identity(identity);
        }
        builder.build().map_err(|e| ConfigError::HttpClient(e.to_string()))
    }
}

fn read(path: &std::path::Path, field: &'static str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Tls { field, path: path.to_owned(), message: e.to_string() })
}

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7403))
}

pub fn default_audit_addr() -> String {
    "127.0.0.1:7400".to_owned()
}

/// Actions mostly wait (on a probe, a verification window, a remote), so many run
/// at once; each target still takes one action at a time.
pub fn default_max_concurrent() -> usize {
    32
}

/// Why a configuration cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("`executor.max_concurrent` must be at least 1")]
    MaxConcurrent,
    #[error("`executor.trusted_keys` must name at least one governor public key")]
    NoTrustedKeys,
    #[error("`executor.trusted_keys`: {0}")]
    TrustedKey(KeyError),
    #[error("`executor.audit_token_file`: {0}")]
    AuditToken(KeyError),
    #[error("`executor.audit_addr` `{0}` is not a valid address")]
    AuditAddr(String),
    #[error("`executor.catalog_dir`: {0}")]
    Catalog(CatalogError),
    #[error("`executor.targets` has a target with an empty name")]
    EmptyTargetName,
    #[error("`executor.tls.{field}`: `{}` {message}", path.display())]
    Tls { field: &'static str, path: PathBuf, message: String },
    #[error("`executor.tls.only_ca_files` is set but `executor.tls.ca_files` is empty, so no server could be trusted")]
    NoCaFiles,
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    #[error("{0}")]
    Identities(#[from] arf_core::identity::IdentityError),
    #[error("{0}")]
    Transport(String),
}

/// What the configuration names, loaded and checked.
pub(crate) struct Loaded {
    pub catalog: Catalog,
    pub trusted_keys: Vec<TrustedKey>,
    pub audit_token: String,
    pub http: reqwest::Client,
    pub identities: arf_core::identity::Identities,
    pub transport: arf_core::tls::Transport,
}

impl Config {
    /// Checks what can be checked before a port is bound: the keys, the token and
    /// the catalog all load, and the numbers make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.load().map(|_| ())
    }

    pub(crate) fn load(&self) -> Result<Loaded, ConfigError> {
        if self.max_concurrent == 0 {
            return Err(ConfigError::MaxConcurrent);
        }
        if self.lease_secs == 0 {
            return Err(ConfigError::Transport("`executor.lease_secs` must be at least 1".to_owned()));
        }
        if self.witness_every_secs == 0 {
            return Err(ConfigError::Transport("`executor.witness_every_secs` must be at least 1".to_owned()));
        }
        if let Some(postgres) = &self.postgres {
            postgres.validate().map_err(|e| ConfigError::Transport(format!("`executor.postgres`: {e}")))?;
        }
        if self.trusted_keys.is_empty() {
            return Err(ConfigError::NoTrustedKeys);
        }
        if self.targets.keys().any(String::is_empty) {
            return Err(ConfigError::EmptyTargetName);
        }
        let trusted_keys = self
            .trusted_keys
            .iter()
            .map(|path| arf_core::keys::load_trusted(path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::TrustedKey)?;
        let audit_token = arf_core::keys::load_token(&self.audit_token_file).map_err(ConfigError::AuditToken)?;
        if arf_core::net::addresses(&self.audit_addr).next().is_none() || !arf_core::net::addresses(&self.audit_addr).all(audit_addr_ok) {
            return Err(ConfigError::AuditAddr(self.audit_addr.clone()));
        }
        let catalog = Catalog::load_dir(&self.catalog_dir).map_err(ConfigError::Catalog)?;
        let http = self.tls.client()?;
        let identities = arf_core::identity::Identities::load(&self.identities, "executor.identities")?;
        let transport = arf_core::tls::transport("executor", self.mtls.as_ref(), self.insecure_loopback_only, &std::iter::once(self.listen).chain(self.metrics_listen).collect::<Vec<_>>(), &arf_core::net::addresses(&self.audit_addr).collect::<Vec<_>>())
            .map_err(ConfigError::Transport)?;
        Ok(Loaded { catalog, trusted_keys, audit_token, http, identities, transport })
    }
}

/// Accepts `host:port`, or a `http://` or `https://` URL with a host.
fn audit_addr_ok(address: &str) -> bool {
    let url = if address.starts_with("http://") || address.starts_with("https://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    reqwest::Url::parse(&url)
        .is_ok_and(|url| url.host_str().is_some_and(|h| !h.is_empty()) && url.port_or_known_default().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_addresses() {
        for (address, ok) in [
            ("127.0.0.1:7400", true),
            ("localhost:7400", true),
            ("http://audit.internal:7400", true),
            ("", false),
            ("http://", false),
            ("not an address", false),
        ] {
            assert_eq!(audit_addr_ok(address), ok, "{address}");
        }
    }
}
