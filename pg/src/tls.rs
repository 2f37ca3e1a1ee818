//! TLS to PostgreSQL with rustls (ring), the server's certificate verified
//! against the CA the settings name and its name against the URL's host
//! (libpq's `sslmode=verify-full`), and optionally a client certificate.
//!
//! SCRAM channel binding is not offered: the connection is authenticated by the
//! verified server certificate, and the password (if any) by SCRAM over it.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::PgError;

/// How to reach PostgreSQL over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The CA (PEM) the server's certificate must chain to; its name must match the URL's host.
    pub ca_file: PathBuf,
    /// A client certificate (PEM chain), for servers that ask for one (`clientcert=verify-full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM, mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

fn file_error(field: &str, path: &Path, error: impl std::fmt::Display) -> PgError {
    PgError::Settings(format!("`tls.{field}` `{}`: {error}", path.display()))
}

impl TlsSettings {
    pub(crate) fn connector(&self) -> Result<Connector, PgError> {
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&self.ca_file)
            .map_err(|e| file_error("ca_file", &self.ca_file, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error("ca_file", &self.ca_file, e))?;
        if cas.is_empty() {
            return Err(file_error("ca_file", &self.ca_file, "holds no PEM certificate"));
        }
        for ca in cas {
            roots.add(ca).map_err(|e| file_error("ca_file", &self.ca_file, e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Settings(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| file_error("cert_file", cert, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_error("cert_file", cert, e))?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("key_file", key, e))?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| file_error("cert_file", cert, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(PgError::Settings("`tls.cert_file` and `tls.key_file` go together".to_owned())),
        };
        Ok(Connector(Arc::new(config)))
    }
}

/// Makes one TLS connection per PostgreSQL connection.
#[derive(Clone)]
pub struct Connector(Arc<rustls::ClientConfig>);

impl<S> MakeTlsConnect<S> for Connector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, io::Error> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Connect { name, connector: tokio_rustls::TlsConnector::from(Arc::clone(&self.0)) })
    }
}

pub struct Connect {
    name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move { self.connector.connect(self.name, stream).await.map(Stream) })
    }
}

pub struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
