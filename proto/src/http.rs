//! Serving an HTTP port (the agent's webhooks, every service's metrics) with the
//! limits a port open to other hosts needs: a client has [`Limits::header_timeout`]
//! to send its request's headers (a slow-loris connection is closed, not kept),
//! and at most [`Limits::max_connections`] connections are served at once (the
//! rest wait in the kernel's backlog).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

/// How long a client has to send its headers, and how many connections are served at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), max_connections: 1024 }
    }
}

/// Where connections come from.
pub enum Incoming {
    Plain(TcpListener),
    Tls(crate::tls::Listener),
}

impl Incoming {
    async fn next(&mut self) -> std::io::Result<Box<dyn Io>> {
        use axum::serve::Listener as _;
        match self {
            Self::Plain(listener) => {
                let (tcp, _) = TcpListener::accept(listener).await?;
                let _ = tcp.set_nodelay(true);
                Ok(Box::new(tcp))
            }
            Self::Tls(listener) => Ok(Box::new(listener.accept().await.0)),
        }
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Serves `router` on `incoming` until `shutdown`; connections already open finish
/// on their own.
pub async fn serve(mut incoming: Incoming, router: axum::Router, limits: Limits, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return Ok(()) };
        let io = tokio::select! {
            () = &mut shutdown => return Ok(()),
            io = incoming.next() => match io {
                Ok(io) => io,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_timeout);
            if let Err(error) = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service).await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}
