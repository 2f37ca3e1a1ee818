//! Mutual TLS over real sockets: a rotated certificate takes effect on the next
//! connection without a restart, and a file that does not load keeps the last good one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arf_core::identity::Role;
use arf_core::tls::TlsFiles;
use arf_proto::tls::{ClientTls, Dial, ServerTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

struct Ca(Issuer<'static, KeyPair>, String);

fn new_ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "test CA");
    let pem = params.self_signed(&key).unwrap().pem();
    Ca(Issuer::new(params, key), pem)
}

/// Writes `name`'s certificate for `role` (and the CA) into `dir`.
fn issue(ca: &Ca, dir: &Path, name: &str, role: Role) -> TlsFiles {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![arf_core::tls::service_name(role)]).unwrap();
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
    files
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
