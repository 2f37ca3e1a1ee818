//! Mutual TLS between the services: what the configuration says, and how a
//! certificate names a service.
//!
//! Each service has a certificate whose subject alternative name is
//! `ROLE.arf.internal` (`agent.arf.internal`, …), issued by the deployment's CA.
//! A server requires a client certificate from that CA on every connection and
//! takes the caller's role from its name; a client connects to a service by the
//! name of the role it expects, whatever the address, so a certificate of another
//! role (or of another CA) is refused at the handshake. The network code is in
//! `arf_proto::tls`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::identity::Role;

/// The DNS suffix of service names in certificates.
pub const DOMAIN: &str = "arf.internal";

/// The name a service's certificate carries: `governor.arf.internal`.
pub fn service_name(role: Role) -> String {
    format!("{role}.{DOMAIN}")
}

/// The name of a certificate for people's tools (the CLI, a console): a client of
/// the deployment that is no service; its calls are authenticated by a token.
pub const CLIENT_NAME: &str = "client.arf.internal";

/// PEM files: the CA that issues every peer's certificate, this process's own
/// certificate chain and private key, and the CA's certificate revocation list.
/// The files are read again when they change, so rotated certificates and a new
/// revocation list take effect without a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA's revocation list (`arf certs revoke`): a peer whose certificate it
    /// lists is refused, and its open connections are closed. Once set, the file
    /// must load and be current (before its next update), or no peer is trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_file: Option<PathBuf>,
}

/// The name of the revocation list `arf certs init` writes beside the CA.
pub const CRL_FILE: &str = "crl.pem";

impl TlsFiles {
    /// The files `arf certs init` writes for `name` (a role, or `client`) in `dir`,
    /// the revocation list included.
    pub fn in_dir(dir: &std::path::Path, name: &str) -> Self {
        Self {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join(format!("{name}.pem")),
            key_file: dir.join(format!("{name}.key")),
            crl_file: Some(dir.join(CRL_FILE)),
        }
    }
}

/// How a service talks: mutual TLS, or plain text that the operator asked for and
/// that is confined to loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tls(TlsFiles),
    /// `insecure_loopback_only = true`: plain text, on loopback addresses only.
    PlainLoopback,
}

/// Chooses the transport from a section's `tls` and `insecure_loopback_only`, and
/// refuses plain text on anything but loopback: `listen` (and every address in
/// `peers`) must then be a loopback address. `section` names the section in errors.
pub fn transport(section: &str, tls: Option<&TlsFiles>, insecure_loopback_only: bool, listen: &[SocketAddr], peers: &[&str]) -> Result<Transport, String> {
    match (tls, insecure_loopback_only) {
        (Some(_), true) => Err(format!("`{section}.mtls` and `{section}.insecure_loopback_only` are both set: choose one")),
        (Some(files), false) => Ok(Transport::Tls(files.clone())),
        (None, false) => Err(format!(
            "`{section}.mtls` is not set: services talk over mutual TLS (`arf certs init` makes a CA and certificates); \
             plain text needs `{section}.insecure_loopback_only = true`, and then only on loopback"
        )),
        (None, true) => {
            if let Some(addr) = listen.iter().find(|a| !a.ip().is_loopback()) {
                return Err(format!("`{section}.insecure_loopback_only` is set but `{addr}` is not a loopback address: plain text stays on this machine"));
            }
            if let Some(peer) = peers.iter().find(|p| !is_loopback_address(p)) {
                return Err(format!(
                    "`{section}.insecure_loopback_only` is set but `{peer}` is not a loopback address: tokens would cross the network in clear text"
                ));
            }
            Ok(Transport::PlainLoopback)
        }
    }
}

/// Whether `address` (`host:port`, optionally with an `http://` scheme) names this
/// machine: a loopback IP literal, or exactly `localhost`, with a port and nothing
/// else (no user info: `localhost:7400@elsewhere` names `elsewhere`).
pub fn is_loopback_address(address: &str) -> bool {
    let rest = address.strip_prefix("http://").or_else(|| address.strip_prefix("https://")).unwrap_or(address);
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    if host_port.contains(['@', '/', '?', '#']) {
        return false;
    }
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return addr.ip().is_loopback();
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => host.eq_ignore_ascii_case("localhost") && port.parse::<u16>().is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_needs_the_flag_and_stays_on_loopback() {
        let local: SocketAddr = "127.0.0.1:7401".parse().unwrap();
        let public: SocketAddr = "10.0.0.5:7401".parse().unwrap();
        let files = TlsFiles::in_dir(std::path::Path::new("/c"), "agent");
        assert_eq!(transport("agent", Some(&files), false, &[public], &["10.0.0.6:7400"]), Ok(Transport::Tls(files.clone())));
        let missing = transport("agent", None, false, &[local], &[]).unwrap_err();
        assert!(missing.contains("`agent.mtls` is not set") && missing.contains("insecure_loopback_only = true"), "{missing}");
        assert!(transport("agent", Some(&files), true, &[local], &[]).unwrap_err().contains("choose one"));
        assert!(transport("agent", None, true, &[public], &[]).unwrap_err().contains("`10.0.0.5:7401` is not a loopback address"));
        assert!(transport("agent", None, true, &[local], &["db.example:7400"]).unwrap_err().contains("clear text"));
        assert_eq!(transport("agent", None, true, &[local], &["127.0.0.1:7400", "http://[::1]:7402", "localhost:7403"]), Ok(Transport::PlainLoopback));
        for elsewhere in ["localhost:7400@evil.example", "localhost.evil.example:7400", "127.0.0.1.nip.io:7400", "0.0.0.0:7400", "[::ffff:127.0.0.1]:7400", "http://127.0.0.1:7400/x@evil.example", "localhost"] {
            assert!(!is_loopback_address(elsewhere), "{elsewhere}");
        }
    }

    #[test]
    fn service_names_are_per_role() {
        assert_eq!(service_name(Role::Governor), "governor.arf.internal");
    }
}
