//! Mutual TLS for ARF's servers and clients (rustls with ring).
//!
//! Servers accept only clients with a certificate from the deployment's CA
//! ([`ServerTls`], [`accept`]); the authentication layer then takes the caller's
//! role from the certificate's name ([`peer_role`]). Clients present their own
//! certificate and check that the server's names the role they meant to reach
//! ([`Dial`]). Certificate, key and CA files are read again when they change, so
//! rotated certificates take effect on the next connection without a restart.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arf_core::identity::Role;
use arf_core::tls::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint};

/// Why TLS material could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`{path}`: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), message: message.to_string() }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, format!("no usable PEM private key ({e})")))
}

fn roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The revocation lists in `path` (PEM `X509 CRL` blocks); none when no file is configured.
fn revocation_lists(path: Option<&Path>) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let Some(path) = path else { return Ok(Vec::new()) };
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if crls.is_empty() {
        return Err(file_error(path, "holds no PEM certificate revocation list (`-----BEGIN X509 CRL-----`)"));
    }
    Ok(crls)
}

/// What says a file changed: its modification time, inode and length. The inode
/// matters: file times are as coarse as the kernel's tick, so a file replaced twice
/// within a few milliseconds (written beside and renamed, as certificate managers
/// do) can keep its time, but not its inode.
type Stamp = Option<(SystemTime, u64, u64)>;

/// The files' stamps: a change in any of them means reloading.
fn stamps(files: &TlsFiles) -> [Stamp; 4] {
    let stamp = |path: &Path| {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Some((metadata.modified().ok()?, inode, metadata.len()))
    };
    [stamp(&files.ca_file), stamp(&files.cert_file), stamp(&files.key_file), files.crl_file.as_deref().and_then(stamp)]
}

/// A configuration built from files, rebuilt when they change.
struct Reloading<C> {
    files: TlsFiles,
    build: fn(&TlsFiles) -> Result<C, TlsError>,
    current: Mutex<(Arc<C>, [Stamp; 4])>,
}

impl<C> Reloading<C> {
    fn load(files: &TlsFiles, build: fn(&TlsFiles) -> Result<C, TlsError>) -> Result<Self, TlsError> {
        let stamped = stamps(files);
        let config = build(files)?;
        Ok(Self { files: files.clone(), build, current: Mutex::new((Arc::new(config), stamped)) })
    }

    /// The configuration, rebuilt first if a file changed. A change that does not
    /// load (a half-written file) keeps the last good one and says so.
    fn current(&self) -> Arc<C> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamps(&self.files);
        if now != current.1 {
            match (self.build)(&self.files) {
                Ok(config) => {
                    tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate files changed; using the new ones");
                    *current = (Arc::new(config), now);
                }
                Err(error) => tracing::error!(%error, "TLS certificate files changed but do not load; keeping the previous ones"),
            }
        }
        Arc::clone(&current.0)
    }

    /// Whether the files on disk are the ones in use (reloading them first if they
    /// changed): false while a change does not load and the last good ones serve.
    fn in_step(&self) -> bool {
        let _ = self.current();
        let current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stamps(&self.files) == current.1
    }
}

/// A server's configuration, and the verifier of its clients' certificates (none
/// where clients present none), kept to check open connections again.
struct ServerSide {
    config: Arc<rustls::ServerConfig>,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

fn server_config(files: &TlsFiles, client_auth: bool, alpn: &[u8]) -> Result<ServerSide, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let (builder, clients) = if client_auth {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&files.ca_file)?, provider())
            .with_crls(revocation_lists(files.crl_file.as_deref())?)
            .enforce_revocation_expiration()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        (builder.with_client_cert_verifier(Arc::clone(&verifier)), Some(verifier))
    } else {
        (builder.with_no_client_auth(), None)
    };
    let mut config = builder
        .with_single_cert(certificates(&files.cert_file)?, private_key(&files.key_file)?)
        .map_err(|e| file_error(&files.key_file, format!("does not match `{}`: {e}", files.cert_file.display())))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(ServerSide { config: Arc::new(config), clients })
}

/// A server's TLS: its certificate, (for gRPC) the CA its clients' certificates
/// must come from and the CA's revocation list, and the connections it has open,
/// which are checked again whenever the files change.
pub struct ServerTls {
    files: Reloading<ServerSide>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next: u64,
    connections: std::collections::HashMap<u64, OpenConnection>,
    /// The configuration the open connections were last checked against.
    checked: Option<Arc<rustls::ServerConfig>>,
}

struct OpenConnection {
    peer: SocketAddr,
    certificates: Vec<CertificateDer<'static>>,
    cut: Arc<Cut>,
}

impl ServerTls {
    fn new(files: &TlsFiles, build: fn(&TlsFiles) -> Result<ServerSide, TlsError>) -> Result<Self, TlsError> {
        let files = Reloading::load(files, build)?;
        let checked = Some(Arc::clone(&files.current().config));
        Ok(Self { files, open: Mutex::new(Open { checked, ..Open::default() }) })
    }

    /// For a gRPC server: HTTP/2, and a client certificate from the CA required.
    pub fn grpc(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::new(files, |f| server_config(f, true, b"h2"))
    }

    /// Whether the certificate files on disk are the ones served: a rotation that
    /// does not load makes the service not ready (`/readyz`), not silently stale.
    pub fn in_step(&self) -> bool {
        self.files.in_step()
    }

    /// For the webhook port: HTTP/1.1, server certificate only (senders authenticate
    /// with tokens or signatures, and many cannot present a certificate).
    pub fn webhook(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::new(files, |f| server_config(f, false, b"http/1.1"))
    }

    /// How many connections are open (past their handshake, not yet closed).
    pub fn open_connections(&self) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).connections.len()
    }

    fn register(self: &Arc<Self>, peer: SocketAddr, certificates: Vec<CertificateDer<'static>>) -> Registration {
        let cut = Arc::new(Cut::default());
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.next += 1;
        let id = open.next;
        open.connections.insert(id, OpenConnection { peer, certificates, cut: Arc::clone(&cut) });
        Registration { tls: Arc::downgrade(self), id, cut }
    }

    /// Reloads the files if they changed, and then checks every open connection's
    /// client certificate against them: a peer whose certificate was revoked (or
    /// whose CA is no longer trusted) loses its connection now, not when the
    /// connection reaches its age ([`crate::server::MAX_CONNECTION_AGE`]).
    pub fn check_open_connections(&self) {
        let side = self.files.current();
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.checked.replace(Arc::clone(&side.config)).is_some_and(|checked| Arc::ptr_eq(&checked, &side.config)) {
            return;
        }
        let Some(verifier) = &side.clients else { return };
        let now = UnixTime::now();
        for connection in open.connections.values() {
            let Some((end_entity, intermediates)) = connection.certificates.split_first() else { continue };
            if let Err(error) = verifier.verify_client_cert(end_entity, intermediates, now) {
                tracing::warn!(peer = %connection.peer, %error, "an open connection's client certificate is no longer trusted; connection closed");
                connection.cut.cut();
            }
        }
    }
}

/// How often a server looks for changed certificate files, to check its open
/// connections against them ([`ServerTls::check_open_connections`]).
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// The signal that closes one connection.
#[derive(Default)]
struct Cut {
    cut: std::sync::atomic::AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl Cut {
    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Release);
        self.waker.wake();
    }

    fn is_cut(&self) -> bool {
        self.cut.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A connection's place among a server's open connections, given up when it closes.
struct Registration {
    tls: std::sync::Weak<ServerTls>,
    id: u64,
    cut: Arc<Cut>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(tls) = self.tls.upgrade() {
            tls.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).connections.remove(&self.id);
        }
    }
}

/// A server's TLS connection that the server can close when its peer's certificate
/// stops being trusted: reads and writes fail from then on, which ends every call
/// on it, streams included.
pub struct Connection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    registration: Registration,
}

impl Connection {
    fn closed() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, "the peer's certificate is no longer trusted (revoked, or its CA replaced)")
    }
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<io::Result<()>> {
        // The reader is always waiting on an open connection: it is the task to wake.
        self.registration.cut.waker.register(cx.waker());
        if self.registration.cut.is_cut() {
            return std::task::Poll::Ready(Err(Self::closed()));
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<io::Result<usize>> {
        if self.registration.cut.is_cut() {
            return std::task::Poll::Ready(Err(Self::closed()));
        }
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, bufs: &[io::IoSlice<'_>]) -> std::task::Poll<io::Result<usize>> {
        if self.registration.cut.is_cut() {
            return std::task::Poll::Ready(Err(Self::closed()));
        }
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = <tokio_rustls::server::TlsStream<TcpStream> as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// How many TLS handshakes a server runs at once.
pub const MAX_HANDSHAKES: usize = 256;

/// A connection that finished its TLS handshake, and where it came from.
pub type Accepted = (Connection, SocketAddr);

/// Accepts connections on `listener` and completes their handshakes (each within
/// 10 s, off the accept loop); a handshake that fails is logged with the peer and
/// the reason (no certificate, unknown CA, revoked, …) and dropped. Every
/// [`RECHECK_EVERY`] it looks for changed certificate files and closes open
/// connections whose peers they no longer trust. Stops when the receiver is
/// dropped, which releases the port.
pub fn accept(listener: TcpListener, tls: Arc<ServerTls>) -> tokio::sync::mpsc::Receiver<Accepted> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    // At most this many handshakes at once: idle connections that never finish one
    // wait in the kernel's backlog instead of taking every file descriptor.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        let mut recheck = tokio::time::interval(RECHECK_EVERY);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Ok(slot) = Arc::clone(&handshakes).acquire_owned().await else { return };
            let accepted = loop {
                tokio::select! {
                    () = tx.closed() => return,
                    _ = recheck.tick() => tls.check_open_connections(),
                    accepted = listener.accept() => break accepted,
                }
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.files.current().config));
            let (tx, tls) = (tx.clone(), Arc::clone(&tls));
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let certificates = stream.get_ref().1.peer_certificates().map(|c| c.iter().map(|c| c.clone().into_owned()).collect()).unwrap_or_default();
                        let registration = tls.register(peer, certificates);
                        let _ = tx.send((Connection { stream, registration }, peer)).await;
                    }
                    Ok(Err(error)) => tracing::warn!(%peer, %error, "TLS handshake refused"),
                    Err(_) => tracing::warn!(%peer, "TLS handshake took longer than 10 s; dropped"),
                }
            });
        }
    });
    rx
}

/// An HTTP port over TLS for axum (the webhook and metrics ports): connections whose
/// handshake completed ([`accept`]).
pub struct Listener {
    accepted: tokio::sync::mpsc::Receiver<Accepted>,
    addr: SocketAddr,
}

impl Listener {
    pub fn new(listener: TcpListener, tls: Arc<ServerTls>) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        Ok(Self { accepted: accept(listener, tls), addr })
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ends only with the listener; nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// [`accept`] as the stream of connections a tonic server takes.
pub fn incoming(listener: TcpListener, tls: Arc<ServerTls>) -> impl tokio_stream::Stream<Item = io::Result<Connection>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::ReceiverStream::new(accept(listener, tls)).map(|(stream, _)| Ok(stream))
}

/// The service a peer's certificate names (`agent.arf.internal` → agent), if it
/// names exactly one: a certificate valid for two services' names (two SANs, or a
/// wildcard such as `*.arf.internal`) names none. The certificate has already been
/// verified against the CA by the handshake.
pub fn peer_role(certificates: &[CertificateDer<'_>]) -> Option<Role> {
    let parsed = rustls::server::ParsedCertificate::try_from(certificates.first()?).ok()?;
    let mut named = Role::ALL.into_iter().filter(|r| r.is_service()).filter(|role| {
        ServerName::try_from(arf_core::tls::service_name(*role))
            .is_ok_and(|name| rustls::client::verify_server_name(&parsed, &name).is_ok())
    });
    match (named.next(), named.next()) {
        (Some(role), None) => Some(role),
        _ => None,
    }
}

fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let servers = rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&files.ca_file)?, provider())
        .with_crls(revocation_lists(files.crl_file.as_deref())?)
        .enforce_revocation_expiration()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_webpki_verifier(servers)
        .with_client_auth_cert(certificates(&files.cert_file)?, private_key(&files.key_file)?)
        .map_err(|e| file_error(&files.key_file, format!("does not match `{}`: {e}", files.cert_file.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A client's TLS: the CA it trusts and the certificate it presents.
pub struct ClientTls(Reloading<rustls::ClientConfig>);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("cert_file", &self.0.files.cert_file).finish()
    }
}

impl ClientTls {
    pub fn load(files: &TlsFiles) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self(Reloading::load(files, client_config)?)))
    }
}

/// How a client reaches one service.
#[derive(Clone)]
pub enum Dial {
    /// Plain text (configured with `insecure_loopback_only`).
    Plain,
    /// Mutual TLS, with the server's certificate required to name `role`.
    Tls { tls: Arc<ClientTls>, role: Role },
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain => f.write_str("Plain"),
            Self::Tls { role, .. } => write!(f, "Tls({role})"),
        }
    }
}

impl Dial {
    /// Mutual TLS to `role`, or plain text without `tls`.
    pub fn to(tls: Option<&Arc<ClientTls>>, role: Role) -> Self {
        match tls {
            Some(tls) => Self::Tls { tls: Arc::clone(tls), role },
            None => Self::Plain,
        }
    }

    /// A lazily connecting channel to `endpoint` (whose URI is `http://HOST:PORT`).
    pub fn channel(&self, endpoint: Endpoint) -> Channel {
        match self {
            Self::Plain => endpoint.connect_lazy(),
            Self::Tls { tls, role } => {
                let (tls, name) = (Arc::clone(tls), arf_core::tls::service_name(*role));
                let connector = tower::service_fn(move |uri: tonic::codegen::http::Uri| {
                    let (tls, name) = (Arc::clone(&tls), name.clone());
                    async move {
                        let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in the address"))?;
                        let host = host.trim_start_matches('[').trim_end_matches(']');
                        let port = uri.port_u16().unwrap_or(443);
                        let tcp = TcpStream::connect((host, port)).await?;
                        let _ = tcp.set_nodelay(true);
                        let server_name = ServerName::try_from(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                        let stream = tokio_rustls::TlsConnector::from(tls.0.current()).connect(server_name, tcp).await?;
                        Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                });
                endpoint.connect_with_connector_lazy(connector)
            }
        }
    }
}

/// A service's TLS, loaded from its configured transport: the server side and the
/// client side share the service's certificate. Both `None` for plain text.
#[derive(Default, Clone)]
pub struct Loaded {
    pub server: Option<Arc<ServerTls>>,
    pub client: Option<Arc<ClientTls>>,
}

impl Loaded {
    pub fn load(transport: &arf_core::tls::Transport) -> Result<Self, TlsError> {
        match transport {
            arf_core::tls::Transport::Tls(files) => {
                Ok(Self { server: Some(Arc::new(ServerTls::grpc(files)?)), client: Some(ClientTls::load(files)?) })
            }
            arf_core::tls::Transport::PlainLoopback => Ok(Self::default()),
        }
    }

    /// How this service reaches `role`.
    pub fn dial(&self, role: Role) -> Dial {
        Dial::to(self.client.as_ref(), role)
    }
}
