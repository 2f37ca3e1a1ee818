//! Authentication: one tower layer per server that names the caller of every
//! request before any handler runs.
//!
//! The layer reads the caller's credentials, resolves them to an
//! [`arf_core::identity::Caller`] and puts it in the request's extensions;
//! handlers read it with [`caller`] and decide what its role may do there. A
//! request without credentials, or with credentials nobody configured, is answered
//! `UNAUTHENTICATED` by the layer itself, so no handler can forget to check.
//!
//! Only health and reflection are open: they carry no data, and health probes
//! (Kubernetes' gRPC probe, load balancers) cannot send a token.

use std::sync::Arc;
use std::task::{Context, Poll};

use arf_core::identity::{Caller, Identities};
use tonic::Status;
use tonic::codegen::http;

/// Paths (prefixes) served without credentials.
pub const OPEN_PATHS: [&str; 3] =
    ["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

/// Whether `path` is served without credentials.
pub fn is_open(path: &str) -> bool {
    OPEN_PATHS.iter().any(|open| path.starts_with(open))
}

/// Resolves credentials to a caller, for one service.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// The service's name in error messages: `the agent`.
    service: &'static str,
    identities: Arc<Identities>,
    /// Calls arrive over mutual TLS: services are named by their certificates.
    tls: bool,
}

impl Authenticator {
    /// `tls`: the server accepts only mutual-TLS connections ([`crate::tls`]).
    pub fn new(service: &'static str, identities: Identities, tls: bool) -> Self {
        Self { service, identities: Arc::new(identities), tls }
    }

    /// The caller a request names: under mutual TLS, a service by its certificate,
    /// and anyone else (people, tooling, sources, on a client certificate of the
    /// deployment) by a token; a token that names a service is refused there, so a
    /// stolen service token is worth nothing without that service's key.
    pub fn identify(&self, headers: &http::HeaderMap, extensions: &http::Extensions) -> Result<Caller, Status> {
        if !self.tls {
            return self.by_token(headers);
        }
        type Info = tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>;
        let certificates = extensions.get::<Info>().and_then(Info::peer_certs).filter(|c| !c.is_empty()).ok_or_else(|| {
            Status::unauthenticated(format!("{} takes calls over mutual TLS only, and this one has no client certificate", self.service))
        })?;
        if let Some(role) = crate::tls::peer_role(&certificates) {
            return Ok(Caller { name: role.as_str().to_owned(), role });
        }
        let caller = self.by_token(headers)?;
        if caller.role.is_service() {
            return Err(Status::unauthenticated(format!(
                "{caller} is a service: under mutual TLS a service is named by its certificate, never by a token"
            )));
        }
        Ok(caller)
    }

    fn by_token(&self, headers: &http::HeaderMap) -> Result<Caller, Status> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(format!(
                "{} needs credentials: send `authorization: Bearer TOKEN` (`arf token create` makes one)",
                self.service
            )));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("the `authorization` header is not `Bearer TOKEN`"))?;
        self.identities
            .by_token(token)
            .cloned()
            .ok_or_else(|| Status::unauthenticated(format!("the token presented belongs to no identity {} knows", self.service)))
    }

    /// The tower layer that authenticates every request with this authenticator.
    pub fn layer(self) -> AuthLayer {
        AuthLayer { authenticator: self }
    }
}

/// See [`Authenticator::layer`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, authenticator: self.authenticator.clone() }
    }
}

/// The service [`AuthLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    authenticator: Authenticator,
}

impl<S, B> tower::Service<http::Request<B>> for Authenticate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<tracing::instrument::Instrumented<S::Future>, std::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        use futures::future::Either;
        use tracing::Instrument;
        // A span for the call, continuing the caller's trace (none unless traces are exported).
        let span = crate::telemetry::server_span(request.headers(), request.uri().path());
        if is_open(request.uri().path()) {
            return Either::Left(self.inner.call(request).instrument(span));
        }
        match self.authenticator.identify(request.headers(), request.extensions()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request).instrument(span))
            }
            Err(status) => {
                crate::metrics::inc("arf_requests_refused_total", "Calls refused before any handler ran: no credentials, or none this service knows.", &[("service", self.authenticator.service.trim_start_matches("the "))]);
                Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The caller the layer authenticated. `INTERNAL` when the server has no layer:
/// that is a bug, and it must refuse rather than serve anonymously.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::internal("this server authenticates no caller; refusing the call"))
}

/// Refuses `caller` unless `allowed` holds for its role, naming what it tried.
pub fn require(caller: &Caller, allowed: bool, what: &str) -> Result<(), Status> {
    if allowed {
        Ok(())
    } else {
        Err(Status::permission_denied(format!("{caller} may not {what}")))
    }
}
