//! TLS to a real PostgreSQL server that takes TLS only (`hostssl`, plain text
//! rejected): the server's certificate checked against the CA the settings name
//! and its name against the URL's host, a client certificate where the server
//! demands one, and the refusals: another CA, a name the certificate does not
//! carry, plain text, no client certificate. A server on another host is
//! accepted only with TLS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::path::Path;

use arf_pg::testing::{ServerTls, TestCa, TestServer};
use arf_pg::{Settings, TlsSettings};

fn ca(name: &str) -> TestCa {
    TestCa::new(name).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn ssl_in_use(settings: &Settings) -> Result<bool, String> {
    let client = settings.connect().await.map_err(|e| e.to_string())?;
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn the_database_is_reached_over_verified_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ca("ARF test database CA");
    let (cert_pem, key_pem) = ours.server(&["127.0.0.1", "localhost"]).unwrap();
    let server = TestServer::start_tls(ServerTls { cert_pem, key_pem, client_ca_pem: None }).await.unwrap();
    let url = server.database().await.unwrap().url;
    let tls = |ca_file| Some(TlsSettings { ca_file, cert_file: None, key_file: None });
    let ca_file = write(dir.path(), "ca.pem", &ours.pem);

    let good = Settings { url: url.clone(), password_file: None, tls: tls(ca_file.clone()) };
    assert_eq!(ssl_in_use(&good).await, Ok(true));
    // `localhost` is in the certificate too.
    let by_name = Settings { url: url.replace("127.0.0.1", "localhost"), ..good.clone() };
    assert_eq!(ssl_in_use(&by_name).await, Ok(true));

    // Another CA's word is not enough.
    let other = write(dir.path(), "other-ca.pem", &ca("someone else").pem);
    let refused = ssl_in_use(&Settings { tls: tls(other), ..good.clone() }).await.unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
    // Plain text is refused by the server.
    assert!(ssl_in_use(&Settings { tls: None, ..good.clone() }).await.is_err());

    // A certificate that does not name the host the URL names.
    let (cert_pem, key_pem) = ours.server(&["db.internal"]).unwrap();
    let misnamed = TestServer::start_tls(ServerTls { cert_pem, key_pem, client_ca_pem: None }).await.unwrap();
    let url = misnamed.database().await.unwrap().url;
    let refused = ssl_in_use(&Settings { url, password_file: None, tls: tls(ca_file.clone()) }).await.unwrap_err();
    assert!(refused.to_lowercase().contains("not valid for name") || refused.contains("NotValidForName"), "{refused}");
}

#[tokio::test]
async fn a_server_that_demands_a_client_certificate_gets_ours() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ca("ARF test database CA");
    let (cert_pem, key_pem) = ours.server(&["127.0.0.1"]).unwrap();
    let server = TestServer::start_tls(ServerTls { cert_pem, key_pem, client_ca_pem: Some(ours.pem.clone()) }).await.unwrap();
    let url = server.database().await.unwrap().url;
    let ca_file = write(dir.path(), "ca.pem", &ours.pem);
    let (client_pem, client_key) = ours.client().unwrap();
    let (cert_file, key_file) = (write(dir.path(), "client.pem", &client_pem), write(dir.path(), "client.key", &client_key));

    let without = Settings { url: url.clone(), password_file: None, tls: Some(TlsSettings { ca_file: ca_file.clone(), cert_file: None, key_file: None }) };
    assert!(ssl_in_use(&without).await.is_err(), "the server took a client without a certificate");
    let with = Settings { tls: Some(TlsSettings { ca_file, cert_file: Some(cert_file), key_file: Some(key_file) }), ..without };
    assert_eq!(ssl_in_use(&with).await, Ok(true));
}

#[test]
fn a_server_elsewhere_is_accepted_only_over_tls() {
    let remote = "postgres://arf@db.example.com:5432/arf";
    assert!(Settings::new(remote).config().is_err());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca("ARF test database CA").pem);
    let settings = Settings { url: remote.to_owned(), password_file: None, tls: Some(TlsSettings { ca_file, cert_file: None, key_file: None }) };
    assert!(settings.config().is_ok());
    assert!(settings.connector().is_ok());
}
