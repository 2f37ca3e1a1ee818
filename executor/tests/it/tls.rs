//! The `http` runner and probe over real TLS on loopback. The target's certificate
//! comes from a test CA, which the executor refuses until `tls.ca_files` names it;
//! a target that demands a client certificate is answered only when
//! `tls.client_identity_file` gives one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::{get, post};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use arf_core::catalog::{Probe, Step};
use arf_executor::config::Tls;

use crate::harness::{Harness, Setup, pathway, target};

/// A test CA, the target's certificate and key, and a client identity file.
struct Pki {
    ca_file: PathBuf,
    identity_file: PathBuf,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
}

fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "ARF test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params.distinguished_name.push(DnType::CommonName, "arf-executor");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let identity_file = dir.join("executor-identity.pem");
    std::fs::write(&identity_file, format!("{}{}", client_cert.pem(), client_key.serialize_pem())).unwrap();
    Pki {
        ca_file,
        identity_file,
        ca_der: ca_cert.der().clone(),
        server_chain: vec![server_cert.der().clone()],
        server_key_der: server_key.serialize_der(),
    }
}

impl Pki {
    /// The target's TLS settings, demanding a client certificate from the test CA or not.
    fn server_config(&self, require_client_certificate: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_certificate {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        Arc::new(builder.with_single_cert(self.server_chain.clone(), key).unwrap())
    }
}

/// Accepts TCP connections and completes the TLS handshake; a handshake the
/// client breaks off (it does not trust us) is skipped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Starts an HTTPS target counting the actions it receives; its base URL.
async fn start_target(config: Arc<rustls::ServerConfig>, acted: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new()
        .route(
            "/act",
            post(move || {
                let acted = Arc::clone(&acted);
                async move {
                    acted.fetch_add(1, Ordering::SeqCst);
                    "done"
                }
            }),
        )
        .route("/health", get(|| async { "status: ok" }));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(TlsListener { tcp, acceptor: TlsAcceptor::from(config) }, app).await.unwrap();
    });
    format!("https://127.0.0.1:{}", addr.port())
}

fn https_pathway() -> arf_core::catalog::Pathway {
    let act = Step::Http {
        method: "POST".into(),
        url: "{{target.url}}/act".into(),
        headers: Default::default(),
        body: None,
        expect_status: 200,
        timeout_secs: None,
    };
    let probe = Probe::Http {
        name: "health".into(),
        url: "{{target.url}}/health".into(),
        expect_status: 200,
        body_contains: Some("ok".into()),
        max_latency_ms: None,
    };
    // Irreversible, so that a refused action ends as `failed` with its reason.
    pathway("https_call", vec![act], vec![probe], vec![])
}

/// Runs the pathway once against `url` with `tls`; the outcome and its detail.
async fn run_once(dir: &Path, url: &str, tls: Tls) -> (String, String) {
    let targets = [("api".to_owned(), target(&[("url", url)]))].into();
    let mut setup = Setup::new(vec![https_pathway()], targets);
    setup.tls = tls;
    let h = Harness::start(dir, setup).await;
    let body = h.body("https_call", "api", json!({}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    (execution.outcome, execution.detail)
}

#[tokio::test]
async fn an_https_target_is_trusted_only_through_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let acted = Arc::new(AtomicUsize::new(0));
    let url = start_target(pki.server_config(false), Arc::clone(&acted)).await;

    let untrusting = tempfile::tempdir().unwrap();
    let (outcome, detail) = run_once(untrusting.path(), &url, Tls::default()).await;
    assert_eq!(outcome, "failed", "{detail}");
    assert!(detail.contains("cannot connect to") && detail.contains("UnknownIssuer"), "{detail}");
    assert_eq!(acted.load(Ordering::SeqCst), 0, "the action reached a server the executor does not trust");

    let trusting = tempfile::tempdir().unwrap();
    let tls = Tls { ca_files: vec![pki.ca_file.clone()], only_ca_files: true, client_identity_file: None };
    let (outcome, detail) = run_once(trusting.path(), &url, tls).await;
    assert_eq!(outcome, "verified", "{detail}");
    assert_eq!(acted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_target_demanding_mutual_tls_gets_the_configured_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let acted = Arc::new(AtomicUsize::new(0));
    let url = start_target(pki.server_config(true), Arc::clone(&acted)).await;

    let anonymous = tempfile::tempdir().unwrap();
    let tls = Tls { ca_files: vec![pki.ca_file.clone()], only_ca_files: false, client_identity_file: None };
    let (outcome, detail) = run_once(anonymous.path(), &url, tls.clone()).await;
    assert_eq!(outcome, "failed", "{detail}");
    assert_eq!(acted.load(Ordering::SeqCst), 0, "the target acted for a client without a certificate");

    let identified = tempfile::tempdir().unwrap();
    let tls = Tls { client_identity_file: Some(pki.identity_file.clone()), ..tls };
    let (outcome, detail) = run_once(identified.path(), &url, tls).await;
    assert_eq!(outcome, "verified", "{detail}");
    assert_eq!(acted.load(Ordering::SeqCst), 1);
}

#[test]
fn tls_settings_that_cannot_work_are_refused_naming_the_field_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "just text").unwrap();
    let cases = [
        (Tls { ca_files: vec![missing.clone()], ..Tls::default() }, vec!["executor.tls.ca_files", "missing.pem"]),
        (Tls { ca_files: vec![not_pem.clone()], ..Tls::default() }, vec!["executor.tls.ca_files", "not.pem", "no PEM certificate"]),
        (Tls { only_ca_files: true, ..Tls::default() }, vec!["only_ca_files", "ca_files` is empty"]),
        (
            Tls { client_identity_file: Some(not_pem.clone()), ..Tls::default() },
            vec!["executor.tls.client_identity_file", "not.pem", "private key"],
        ),
    ];
    for (tls, expected) in cases {
        let error = tls.client().unwrap_err().to_string();
        for part in expected {
            assert!(error.contains(part), "`{error}` does not mention `{part}`");
        }
    }
}
