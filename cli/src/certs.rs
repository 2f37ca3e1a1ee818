//! `arf certs`: a CA and one certificate per service identity, for mutual TLS, and
//! the CA's revocation list.
//!
//! Each service's certificate names its role (`agent.arf.internal`, …;
//! `arf_core::tls`), which is how its peers know it; `client.arf.internal` is for
//! people's tools (the CLI), whose calls a token then names. Keys are ECDSA P-256,
//! written 0600; certificates are valid for a year, the CA for ten. `init` keeps
//! existing files, so running it again only adds what is missing.
//!
//! The revocation list (`crl.pem`) is signed again by every command here, each time
//! current for a year, so it never goes stale before the certificates it covers;
//! services refuse every peer once it is past its next update.

use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};

use arf_core::identity::Role;

/// The certificates `init` makes, besides the CA: one per service, `client` for
/// people's tools, and `console` for the web console's HTTPS (`arf console --tls`).
pub fn names() -> Vec<String> {
    Role::ALL.iter().filter(|r| r.is_service()).map(|r| r.as_str().to_owned()).chain(["client".to_owned(), "console".to_owned()]).collect()
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
    // port over HTTPS, the console): their certificates name loopback too. Only the
    // `*.arf.internal` name says which service a certificate is.
    let mut names = vec![dns.clone()];
    if name != "client" {
        names.extend(["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()]);
        names.extend(extra_names.iter().cloned());
    }
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, dns);
    // Services both serve and call; the client only calls; the console only serves
    // (browsers), so its certificate cannot pass for a client of the services.
    params.extended_key_usages = match name {
        "client" => vec![ExtendedKeyUsagePurpose::ClientAuth],
        "console" => vec![ExtendedKeyUsagePurpose::ServerAuth],
        _ => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
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
///
/// With `revoke_old`, the certificates replaced go on the revocation list (reason
/// `superseded`), so a leaked key stops working as soon as the services read the list.
pub fn renew(dir: &Path, names: &[String], extra_names: &[String], revoke_old: bool) -> Result<Vec<String>> {
    check_hosts(extra_names)?;
    let names = known_names(names)?;
    let issuer = issuer_here(dir, "renew")?;
    let mut old = Vec::new();
    for name in &names {
        if revoke_old {
            old.push(serial_of(&dir.join(format!("{name}.pem")))?);
        }
        issue(dir, &issuer, name, extra_names)?;
    }
    let mut written: Vec<String> = names.iter().map(|n| format!("{n}.pem")).collect();
    write_crl(dir, &issuer, &old, Reason::Superseded)?;
    written.push(arf_core::tls::CRL_FILE.to_owned());
    Ok(written)
}

/// `names` checked against the certificates `init` makes; all of them when empty.
fn known_names(names: &[String]) -> Result<Vec<String>> {
    let known = self::names();
    if let Some(unknown) = names.iter().find(|n| !known.contains(n)) {
        anyhow::bail!("no certificate `{unknown}`: one of {}", known.join(", "));
    }
    Ok(if names.is_empty() { known } else { names.to_vec() })
}

/// The CA in `dir`, whose key `what` needs.
fn issuer_here(dir: &Path, what: &str) -> Result<Issuer<'static, KeyPair>> {
    if !dir.join("ca.key").exists() {
        anyhow::bail!("`{}` holds no `ca.key`: {what} on the machine that keeps the CA's key, then copy each service its files", dir.display());
    }
    ca(dir)
}

/// Why a certificate is revoked (RFC 5280, 5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reason {
    /// The certificate's private key may be known to someone else.
    KeyCompromise,
    /// A new certificate replaces it.
    Superseded,
    /// The service or tool it names is gone.
    CessationOfOperation,
    /// The holder's role or organisation changed.
    AffiliationChanged,
    /// No reason given.
    Unspecified,
}

impl Reason {
    fn code(self) -> RevocationReason {
        match self {
            Self::KeyCompromise => RevocationReason::KeyCompromise,
            Self::Superseded => RevocationReason::Superseded,
            Self::CessationOfOperation => RevocationReason::CessationOfOperation,
            Self::AffiliationChanged => RevocationReason::AffiliationChanged,
            Self::Unspecified => RevocationReason::Unspecified,
        }
    }
}

/// The serial number of the (first) certificate in the PEM file `path`, as its DER carries it.
fn serial_of(path: &Path) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(path).with_context(|| format!("`{}` holds no PEM certificate", path.display()))?;
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| anyhow::anyhow!("`{}` is not a usable certificate: {e}", path.display()))?;
    Ok(cert.serial().to_vec())
}

/// A serial number given in hexadecimal (`3f:a2…`, `3FA2…`, with or without colons).
pub fn parse_serial(text: &str) -> Result<Vec<u8>> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.is_empty() || hex.len() > 42 || !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        anyhow::bail!("`{text}` is not a serial number: an even number of hexadecimal digits (at most 21 bytes), colons allowed");
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(anyhow::Error::from)).collect()
}

fn colon_hex(serial: &[u8]) -> String {
    serial.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The entries of the revocation list in `dir` (none when there is no list yet).
fn revoked(dir: &Path) -> Result<Vec<RevokedCertParams>> {
    use rustls::pki_types::pem::PemObject;
    let file = dir.join(arf_core::tls::CRL_FILE);
    if !file.exists() {
        return Ok(Vec::new());
    }
    let der = rustls::pki_types::CertificateRevocationListDer::from_pem_file(&file).with_context(|| format!("`{}` holds no PEM revocation list", file.display()))?;
    let list = webpki::BorrowedCertRevocationList::from_der(&der).map_err(|e| anyhow::anyhow!("`{}` is not a usable revocation list: {e}", file.display()))?;
    let mut entries = Vec::new();
    for entry in &list {
        let entry = entry.map_err(|e| anyhow::anyhow!("`{}` has an entry that does not parse: {e}", file.display()))?;
        let at = |t: rustls::pki_types::UnixTime| time::OffsetDateTime::from_unix_timestamp(i64::try_from(t.as_secs()).unwrap_or(i64::MAX)).ok();
        entries.push(RevokedCertParams {
            serial_number: SerialNumber::from(entry.serial_number.to_vec()),
            revocation_time: at(entry.revocation_date).unwrap_or_else(time::OffsetDateTime::now_utc),
            reason_code: entry.reason_code.and_then(|r| rcgen_reason(r as u8)),
            invalidity_date: entry.invalidity_date.and_then(at),
        });
    }
    Ok(entries)
}

fn rcgen_reason(code: u8) -> Option<RevocationReason> {
    use RevocationReason::*;
    [Unspecified, KeyCompromise, CaCompromise, AffiliationChanged, Superseded, CessationOfOperation, CertificateHold, RemoveFromCrl, PrivilegeWithdrawn, AaCompromise]
        .into_iter()
        .find(|r| *r as u8 == code)
}

/// Signs the revocation list in `dir` again: what it listed, and `serials` (with
/// `reason`), current for a year. Written beside and renamed into place, so a
/// service that reloads it never reads half a file.
fn write_crl(dir: &Path, issuer: &Issuer<'static, KeyPair>, serials: &[Vec<u8>], reason: Reason) -> Result<usize> {
    let now = time::OffsetDateTime::now_utc();
    let mut entries = revoked(dir)?;
    for serial in serials {
        if !entries.iter().any(|e| e.serial_number.as_ref() == serial.as_slice()) {
            let reason_code = (reason != Reason::Unspecified).then(|| reason.code());
            entries.push(RevokedCertParams { serial_number: SerialNumber::from(serial.clone()), revocation_time: now, reason_code, invalidity_date: None });
        }
    }
    // The list's number only grows: the time it was signed, in nanoseconds.
    let number = u64::try_from(now.unix_timestamp_nanos()).unwrap_or(u64::MAX);
    let params = CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(5),
        next_update: now + time::Duration::days(365),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: entries,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let count = params.revoked_certs.len();
    let pem = params.signed_by(issuer)?.pem()?;
    let (staged, file) = (dir.join(".crl.pem.new"), dir.join(arf_core::tls::CRL_FILE));
    std::fs::write(&staged, pem).with_context(|| format!("cannot write `{}`", staged.display()))?;
    std::fs::rename(&staged, &file).with_context(|| format!("cannot write `{}`", file.display()))?;
    Ok(count)
}

/// What `revoke` did.
pub struct Revoked {
    /// Each certificate revoked now: its name (or serial) and serial.
    pub certificates: Vec<(String, String)>,
    /// How many certificates the list names in all.
    pub listed: usize,
}

/// Puts the certificates `names` (as `init` wrote them in `dir`) and `serials` on
/// the CA's revocation list. The services read the list when it changes (within
/// seconds), refuse those certificates from then on, and close the connections
/// that present them.
pub fn revoke(dir: &Path, names: &[String], serials: &[String], reason: Reason) -> Result<Revoked> {
    if names.is_empty() && serials.is_empty() {
        anyhow::bail!("name the certificates to revoke (`agent`, `client`, …) or give `--serial HEX`");
    }
    let known = self::names();
    let mut certificates = Vec::new();
    for name in names {
        if !known.contains(name) {
            anyhow::bail!("no certificate `{name}`: one of {} (or give `--serial HEX`)", known.join(", "));
        }
        let serial = serial_of(&dir.join(format!("{name}.pem")))?;
        certificates.push((format!("{name}.pem"), serial));
    }
    for text in serials {
        certificates.push((format!("serial {text}"), parse_serial(text)?));
    }
    let issuer = issuer_here(dir, "revoke")?;
    let listed = write_crl(dir, &issuer, &certificates.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(), reason)?;
    Ok(Revoked { certificates: certificates.into_iter().map(|(name, serial)| (name, colon_hex(&serial))).collect(), listed })
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
    if !written.is_empty() || !dir.join(arf_core::tls::CRL_FILE).exists() {
        write_crl(dir, &issuer, &[], Reason::Unspecified)?;
        written.push(arf_core::tls::CRL_FILE.to_owned());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_hexadecimal_with_or_without_colons() {
        assert_eq!(parse_serial("3f:A2").unwrap(), vec![0x3f, 0xa2]);
        assert_eq!(parse_serial("003fa2").unwrap(), vec![0, 0x3f, 0xa2]);
        for bad in ["", "3", "3g", "xyz", &"ab".repeat(22)] {
            assert!(parse_serial(bad).unwrap_err().to_string().contains("not a serial number"), "{bad}");
        }
    }

    /// The list keeps what it listed when signed again, and names each serial once.
    #[test]
    fn a_revocation_list_grows_and_keeps_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[]).unwrap();
        assert!(revoked(dir.path()).unwrap().is_empty(), "init writes an empty list");
        let agent = serial_of(&dir.path().join("agent.pem")).unwrap();
        let first = revoke(dir.path(), &["agent".to_owned()], &[], Reason::KeyCompromise).unwrap();
        assert_eq!((first.listed, first.certificates[0].1.clone()), (1, colon_hex(&agent)));
        let again = revoke(dir.path(), &["agent".to_owned(), "client".to_owned()], &["0a:0b".to_owned()], Reason::Superseded).unwrap();
        assert_eq!(again.listed, 3, "agent once, client, and the serial given");
        let entries = revoked(dir.path()).unwrap();
        let agent_entry = entries.iter().find(|e| e.serial_number.as_ref() == agent.as_slice()).unwrap();
        assert_eq!(agent_entry.reason_code, Some(RevocationReason::KeyCompromise), "the first reason stays");
        renew(dir.path(), &["governor".to_owned()], &[], false).unwrap();
        assert_eq!(revoked(dir.path()).unwrap().len(), 3, "renewing signs the list again without losing entries");
        assert!(revoke(dir.path(), &[], &[], Reason::Unspecified).is_err());
    }
}
