//! `arf certs init`: a CA and one certificate per service identity, for mutual TLS.
//!
//! Each service's certificate names its role (`agent.arf.internal`, …;
//! `arf_core::tls`), which is how its peers know it; `client.arf.internal` is for
//! people's tools (the CLI), whose calls a token then names. Keys are ECDSA P-256,
//! written 0600; certificates are valid for a year, the CA for ten. Existing files
//! are kept, so running it again only adds what is missing.

use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use arf_core::identity::Role;

/// The certificates `init` makes, besides the CA: one per service, and `client`.
pub fn names() -> Vec<String> {
    Role::ALL.iter().filter(|r| r.is_service()).map(|r| r.as_str().to_owned()).chain(["client".to_owned()]).collect()
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn ca(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let (cert_file, key_file) = (dir.join("ca.pem"), dir.join("ca.key"));
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, "ARF deployment CA");
    if key_file.exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_file).with_context(|| format!("cannot read `{}`", key_file.display()))?)
            .with_context(|| format!("`{}` is not a PEM private key", key_file.display()))?;
        // The CA this command made: the same name and key issue the same way. (A CA of
        // the operator's own issues its certificates with the operator's tools.)
        return Ok(Issuer::new(params, key));
    }
    let key = KeyPair::generate()?;
    validity(&mut params, 3650);
    let cert = params.self_signed(&key)?;
    arf_core::keys::write_private(&key_file, &key.serialize_pem())?;
    std::fs::write(&cert_file, cert.pem()).with_context(|| format!("cannot write `{}`", cert_file.display()))?;
    Ok(Issuer::new(params, key))
}

/// Writes `name`'s certificate and a new key, signed by `issuer`: the key and then
/// the certificate each written beside and renamed into place, so a service that
/// reloads them (`arf_proto::tls`) never reads half a file.
fn issue(dir: &Path, issuer: &Issuer<'static, KeyPair>, name: &str, extra_names: &[String]) -> Result<()> {
    let (cert_file, key_file) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let dns = if name == "client" { arf_core::tls::CLIENT_NAME.to_owned() } else { format!("{name}.{}", arf_core::tls::DOMAIN) };
    // Services are also reached by people's tools on this machine (the webhook
    // port over HTTPS): their certificates name loopback too. Only the
    // `*.arf.internal` name says which service a certificate is.
    let mut names = vec![dns.clone()];
    if name != "client" {
        names.extend(["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()]);
        names.extend(extra_names.iter().cloned());
    }
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, dns);
    // Services both serve and call; the client only calls.
    params.extended_key_usages = if name == "client" {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
    };
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 365);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let staged_key = dir.join(format!(".{name}.key.new"));
    let _ = std::fs::remove_file(&staged_key);
    arf_core::keys::write_private(&staged_key, &key.serialize_pem())?;
    std::fs::rename(&staged_key, &key_file).with_context(|| format!("cannot write `{}`", key_file.display()))?;
    let staged_cert = dir.join(format!(".{name}.pem.new"));
    std::fs::write(&staged_cert, cert.pem()).with_context(|| format!("cannot write `{}`", staged_cert.display()))?;
    std::fs::rename(&staged_cert, &cert_file).with_context(|| format!("cannot write `{}`", cert_file.display()))?;
    Ok(())
}

/// Issues `names` again (every certificate when empty) with new keys, from the CA
/// in `dir`: renewal, or replacing a key that may have leaked. The services read
/// the new files without a restart. `extra_names` are the host names the services
/// are reached at, as given to `init`. Needs the CA's key, which belongs on the
/// machine that issues certificates, not on the service hosts.
pub fn renew(dir: &Path, names: &[String], extra_names: &[String]) -> Result<Vec<String>> {
    check_hosts(extra_names)?;
    let known = self::names();
    if let Some(unknown) = names.iter().find(|n| !known.contains(n)) {
        anyhow::bail!("no certificate `{unknown}`: one of {}", known.join(", "));
    }
    if !dir.join("ca.key").exists() {
        anyhow::bail!("`{}` holds no `ca.key`: renew on the machine that keeps the CA's key, then copy each service its files", dir.display());
    }
    let issuer = ca(dir)?;
    let names = if names.is_empty() { known } else { names.to_vec() };
    for name in &names {
        issue(dir, &issuer, name, extra_names)?;
    }
    Ok(names.iter().map(|n| format!("{n}.pem")).collect())
}

fn check_hosts(extra_names: &[String]) -> Result<()> {
    for name in extra_names {
        let lower = name.to_ascii_lowercase();
        if name.contains('*') || lower == arf_core::tls::DOMAIN || lower.ends_with(&format!(".{}", arf_core::tls::DOMAIN)) || name.trim().is_empty() {
            anyhow::bail!("`--host {name}`: a host name or address, without wildcards and not under `{}`, which names the services", arf_core::tls::DOMAIN);
        }
    }
    Ok(())
}

/// Makes what is missing in `dir`; returns the files written. `extra_names` (host
/// names and addresses the services are reached at) go into every service's certificate.
pub fn init(dir: &Path, extra_names: &[String]) -> Result<Vec<String>> {
    check_hosts(extra_names)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut written = Vec::new();
    if !dir.join("ca.pem").exists() {
        written.push("ca.pem".to_owned());
    }
    let issuer = ca(dir)?;
    for name in names() {
        let (cert_file, key_file) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        if cert_file.exists() && key_file.exists() {
            continue;
        }
        issue(dir, &issuer, &name, extra_names)?;
        written.push(format!("{name}.pem"));
    }
    Ok(written)
}
