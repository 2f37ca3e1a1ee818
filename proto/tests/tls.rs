//! Mutual TLS over real sockets: a rotated certificate takes effect on the next
//! connection without a restart, a file that does not load keeps the last good one,
//! and a revoked certificate is refused and loses the connections it has open.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arf_core::identity::Role;
use arf_core::tls::TlsFiles;
use arf_proto::tls::{ClientTls, Dial, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};

struct Ca(Issuer<'static, KeyPair>, String);

fn new_ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, "test CA");
    let pem = params.self_signed(&key).unwrap().pem();
    Ca(Issuer::new(params, key), pem)
}

static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Writes `name`'s certificate for `role` (and the CA) into `dir`; returns its
/// files and serial. The CA's revocation list is written first if `dir` has none.
fn issue_serial(ca: &Ca, dir: &Path, name: &str, role: Role) -> (TlsFiles, u64) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![arf_core::tls::service_name(role)]).unwrap();
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.0).unwrap();
    let files = TlsFiles::in_dir(dir, name);
    std::fs::write(&files.ca_file, &ca.1).unwrap();
    // Written beside and renamed into place, as a certificate manager does.
    let staged = dir.join(format!("{name}.staged"));
    std::fs::write(&staged, cert.pem()).unwrap();
    std::fs::rename(&staged, &files.cert_file).unwrap();
    std::fs::write(&staged, key.serialize_pem()).unwrap();
    std::fs::rename(&staged, &files.key_file).unwrap();
    if !dir.join(arf_core::tls::CRL_FILE).exists() {
        revoke(ca, dir, &[], 1);
    }
    (files, serial)
}

fn issue(ca: &Ca, dir: &Path, name: &str, role: Role) -> TlsFiles {
    issue_serial(ca, dir, name, role).0
}

/// Writes the CA's revocation list into `dir`, listing `serials`, current for
/// `days` (in the past when negative).
fn revoke(ca: &Ca, dir: &Path, serials: &[u64], days: i64) {
    let now = time::OffsetDateTime::now_utc();
    let this_update = if days > 0 { now - time::Duration::minutes(1) } else { now + time::Duration::days(days - 1) };
    let params = CertificateRevocationListParams {
        this_update,
        next_update: now + time::Duration::days(days),
        crl_number: SerialNumber::from(SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| RevokedCertParams { serial_number: SerialNumber::from(*serial), revocation_time: this_update, reason_code: None, invalidity_date: None })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let staged = dir.join("crl.staged");
    std::fs::write(&staged, params.signed_by(&ca.0).unwrap().pem().unwrap()).unwrap();
    std::fs::rename(&staged, dir.join(arf_core::tls::CRL_FILE)).unwrap();
}

/// A health service over mutual TLS with `files`, its connections living `age`.
async fn serve_health(files: &TlsFiles, age: Duration) -> (std::net::SocketAddr, Arc<ServerTls>) {
    let server_tls = Arc::new(ServerTls::grpc(files).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let authenticator = arf_proto::auth::Authenticator::new("the test server", arf_core::identity::Identities::default(), true);
    let router = arf_proto::server::builder_aged(authenticator, age).add_service(health);
    tokio::spawn(arf_proto::server::serve(router, listener, Some(Arc::clone(&server_tls)), std::future::pending()));
    (addr, server_tls)
}

async fn healthy(addr: std::net::SocketAddr, dial: &Dial) -> bool {
    use tonic_health::pb::health_client::HealthClient;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().timeout(Duration::from_secs(5));
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    HealthClient::new(dial.channel(endpoint)).check(request).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca();
    let server_files = issue(&ca, dir.path(), "server", Role::Governor);
    let client_files = issue(&ca, dir.path(), "client", Role::Agent);
    let (addr, server_tls) = serve_health(&server_files, arf_proto::server::MAX_CONNECTION_AGE).await;
    assert!(server_tls.in_step());

    let client = ClientTls::load(&client_files).unwrap();
    let to_governor = Dial::to(Some(&client), Role::Governor);
    assert!(healthy(addr, &to_governor).await, "the governor's certificate is served");

    // The server's certificate is replaced by one that names another role: the
    // next connection gets it, so a client that wants the governor refuses it.
    issue(&ca, dir.path(), "server", Role::Executor);
    assert!(!healthy(addr, &to_governor).await, "the new certificate is served at once");
    assert!(healthy(addr, &Dial::to(Some(&client), Role::Executor)).await, "and it is the executor's");

    assert!(server_tls.in_step());

    // A half-written key keeps the last good certificate in service, and says so:
    // the files are not in step (the service reports not ready) until they load.
    std::fs::write(&server_files.key_file, "-----BEGIN PRIVATE KEY-----\ntruncated").unwrap();
    assert!(healthy(addr, &Dial::to(Some(&client), Role::Executor)).await, "the last good certificate stays");
    assert!(!server_tls.in_step(), "a change that does not load is visible");
    issue(&ca, dir.path(), "server", Role::Executor);
    assert!(server_tls.in_step(), "and in step again once the files load");

    // The client side reloads too: its certificate replaced by one from another CA is refused.
    let other = new_ca();
    let other_dir = tempfile::tempdir().unwrap();
    let foreign = issue(&other, other_dir.path(), "client", Role::Agent);
    std::fs::copy(&foreign.cert_file, &client_files.cert_file).unwrap();
    std::fs::copy(&foreign.key_file, &client_files.key_file).unwrap();
    assert!(!healthy(addr, &Dial::to(Some(&client), Role::Executor)).await, "the client now presents the foreign certificate");
}

/// A connection does not outlive trust: once the server stops trusting the
/// client's CA, a client holding an open connection is cut off when the
/// connection reaches its age and must handshake again, which fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_connection_is_handshaken_again_after_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca();
    let server_files = issue(&ca, dir.path(), "server", Role::Governor);
    let client_files = issue(&ca, dir.path(), "client", Role::Agent);
    let (addr, _server_tls) = serve_health(&server_files, Duration::from_secs(1)).await;

    use tonic_health::pb::health_client::HealthClient;
    let client = ClientTls::load(&client_files).unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().timeout(Duration::from_secs(5));
    let mut held = HealthClient::new(Dial::to(Some(&client), Role::Governor).channel(endpoint));
    let request = || tonic_health::pb::HealthCheckRequest { service: String::new() };
    assert!(held.check(request()).await.is_ok(), "the connection is open");

    // The server now trusts another CA only: the held connection's next
    // handshake is refused. (With connections that never age, as before, the
    // held one went on working: the check below failed that way.)
    std::fs::write(&server_files.ca_file, new_ca().1).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(held.check(request()).await.is_err(), "past its age, the connection had to handshake again, and was refused");
}

/// A certificate that two services' names fit (two SANs, or a wildcard) names no service.
#[test]
fn a_certificate_valid_for_two_services_names_none() {
    let ca = new_ca();
    let cert = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names).unwrap();
        params.signed_by(&key, &ca.0).unwrap().der().clone()
    };
    let name = |role| arf_core::tls::service_name(role);
    assert_eq!(arf_proto::tls::peer_role(&[cert(vec![name(Role::Agent)])]), Some(Role::Agent));
    assert_eq!(arf_proto::tls::peer_role(&[cert(vec![name(Role::Agent), name(Role::Governor)])]), None);
    assert_eq!(arf_proto::tls::peer_role(&[cert(vec!["*.arf.internal".to_owned()])]), None);
    assert_eq!(arf_proto::tls::peer_role(&[cert(vec!["client.arf.internal".to_owned(), "localhost".to_owned()])]), None);
}

/// Waits up to 10 s for `done`.
async fn within_10_s(mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Revocation, both ways: a revoked client is refused at the handshake and loses
/// the connection it holds, a stream included, within a few seconds of the new
/// list (not when the connection reaches its hour); a client refuses a server whose
/// certificate the list names; a list past its next update trusts no one; and a
/// list that does not load keeps the last good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_and_its_open_connections_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca();
    let (server_files, server_serial) = issue_serial(&ca, dir.path(), "server", Role::Governor);
    let (stolen_files, stolen) = issue_serial(&ca, dir.path(), "stolen", Role::Agent);
    let (kept_files, _) = issue_serial(&ca, dir.path(), "kept", Role::Agent);
    let (addr, server_tls) = serve_health(&server_files, arf_proto::server::MAX_CONNECTION_AGE).await;
    let stolen_client = ClientTls::load(&stolen_files).unwrap();
    let kept_client = ClientTls::load(&kept_files).unwrap();
    let to_governor = |client: &std::sync::Arc<ClientTls>| Dial::to(Some(client), Role::Governor);

    // The stolen certificate's holder watches the server's health: a stream that stays open.
    use tonic_health::pb::health_client::HealthClient;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let mut watcher = HealthClient::new(to_governor(&stolen_client).channel(endpoint));
    let mut watch = watcher.watch(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert!(watch.message().await.unwrap().is_some(), "the stream is open");
    assert!(healthy(addr, &to_governor(&kept_client)).await);
    assert!(server_tls.open_connections() >= 1);

    revoke(&ca, dir.path(), &[stolen], 30);
    let cut = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
    assert!(matches!(cut, Ok(Err(_) | Ok(None))), "the open stream of the revoked certificate ends: {cut:?}");
    assert!(!healthy(addr, &to_governor(&stolen_client)).await, "and it cannot connect again");
    assert!(healthy(addr, &to_governor(&kept_client)).await, "another client's certificate still works");
    assert!(server_tls.in_step());

    // A client refuses a server whose certificate is revoked, whatever the server thinks.
    revoke(&ca, dir.path(), &[stolen, server_serial], 30);
    assert!(within_10_s(async || !healthy(addr, &to_governor(&kept_client)).await).await, "the client refuses the revoked server");
    revoke(&ca, dir.path(), &[stolen], 30);
    assert!(within_10_s(async || healthy(addr, &to_governor(&kept_client)).await).await);

    // A list past its next update trusts no one: fail closed, not open.
    revoke(&ca, dir.path(), &[], -1);
    let plain = ClientTls::load(&TlsFiles { crl_file: None, ..kept_files.clone() }).unwrap();
    assert!(within_10_s(async || !healthy(addr, &to_governor(&plain)).await).await, "the server refuses every client once its list is stale");
    assert!(server_tls.in_step(), "the stale list loaded; it just vouches for nobody");

    // A list that does not load keeps the last good one, and says so.
    revoke(&ca, dir.path(), &[stolen], 30);
    assert!(within_10_s(async || healthy(addr, &to_governor(&kept_client)).await).await);
    std::fs::write(dir.path().join(arf_core::tls::CRL_FILE), "-----BEGIN X509 CRL-----\ntruncated").unwrap();
    assert!(healthy(addr, &to_governor(&plain)).await, "the last good list stays in force");
    assert!(!healthy(addr, &to_governor(&ClientTls::load(&TlsFiles { crl_file: None, ..stolen_files.clone() }).unwrap())).await, "revocations included");
    assert!(!server_tls.in_step(), "a list that does not load is visible");

    // A configured list that is missing is an error naming it, not a silent no-revocation.
    let missing = TlsFiles { crl_file: Some(dir.path().join("absent.pem")), ..server_files.clone() };
    let error = ServerTls::grpc(&missing).err().unwrap().to_string();
    assert!(error.contains("absent.pem"), "{error}");
}
