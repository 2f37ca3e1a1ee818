//! `arf certs renew`: certificates issued again with new keys are served by the
//! running services without a restart, and only what was named changes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use rustls::pki_types::pem::PemObject;

/// The certificate `role` serves now, from a fresh TLS handshake.
async fn served(plane: &support::Plane, role: &str) -> Vec<u8> {
    let config = support::trusting_ca_only(&plane.certs());
    let tcp = tokio::net::TcpStream::connect(plane.addr(role)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(arf_core::tls::service_name(arf_core::identity::Role::parse(role).unwrap())).unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn on_disk(plane: &support::Plane, name: &str) -> Vec<u8> {
    rustls::pki_types::CertificateDer::from_pem_file(plane.certs().join(format!("{name}.pem"))).unwrap().to_vec()
}

fn arf(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_arf")).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificates_are_served_without_a_restart() {
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    plane.start("audit", None).await;
    let before = served(&plane, "audit").await;
    assert_eq!(before, on_disk(&plane, "audit"));
    let (governor, client) = (on_disk(&plane, "governor"), on_disk(&plane, "client"));

    let data_dir = plane.dir.path().to_str().unwrap().to_owned();
    let renewed = arf(&["certs", "renew", "audit", "client", "--data-dir", &data_dir]);
    assert!(renewed.status.success(), "{}", String::from_utf8_lossy(&renewed.stderr));
    assert!(String::from_utf8_lossy(&renewed.stdout).contains("audit.pem, client.pem"));

    let after = served(&plane, "audit").await;
    assert_ne!(after, before, "the running audit service serves its new certificate");
    assert_eq!(after, on_disk(&plane, "audit"));
    assert_eq!(on_disk(&plane, "governor"), governor, "what was not named is unchanged");
    assert_ne!(on_disk(&plane, "client"), client);
    // The new client certificate is accepted, on a new connection.
    assert!(support::serving_tls(plane.addr("audit"), &plane.dial("audit")).await);

    // Without the CA's key there is nothing to renew with: the error says where it belongs.
    std::fs::remove_file(plane.certs().join("ca.key")).unwrap();
    let refused = arf(&["certs", "renew", "--data-dir", &data_dir]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("holds no `ca.key`"), "{}", String::from_utf8_lossy(&refused.stderr));
    let unknown = arf(&["certs", "renew", "gateway", "--data-dir", &data_dir]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no certificate `gateway`"));
    plane.stop("audit").await;
}
