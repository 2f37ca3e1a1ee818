//! What every ARF gRPC server shares: health, reflection and bearer-token reading.

use tonic::server::NamedService;

/// The standard health service, reporting `S` (and the server as a whole) as serving.
pub async fn health<S: NamedService>() -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    health_reporting::<S>(true).await.1
}

/// [`health`], with the reporter to change `S`'s status later; `S` starts SERVING
/// or not as `serving` says (the process itself, `""`, is SERVING either way).
pub async fn health_reporting<S: NamedService>(
    serving: bool,
) -> (tonic_health::server::HealthReporter, tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    if serving {
        reporter.set_serving::<S>().await;
    } else {
        reporter.set_not_serving::<S>().await;
    }
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    (reporter, service)
}

fn reflection_builder<S: NamedService>() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(S::NAME)
        .with_service_name("grpc.health.v1.Health")
}

/// Server reflection (v1), listing what this port serves: `S`, health and reflection.
pub fn reflection<S: NamedService>() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::Error,
> {
    reflection_builder::<S>().with_service_name("grpc.reflection.v1.ServerReflection").build_v1()
}

/// Server reflection v1alpha, which grpcurl before 1.8.8 and Python's
/// `grpc_reflection.v1alpha` client ask for; the same listing as [`reflection`].
pub fn reflection_v1alpha<S: NamedService>() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
    tonic_reflection::server::Error,
> {
    reflection_builder::<S>().with_service_name("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()
}

/// The connections a server accepts on `listener`, each with `TCP_NODELAY` set.
///
/// tonic applies its own nodelay setting only to listeners it binds itself; on a
/// listener handed in, Nagle's algorithm stays on, and a response larger than one
/// segment waits for the client's delayed ACK (about 40 ms on Linux) before its
/// last bytes leave. Every ARF server accepts through this.
pub fn incoming(listener: tokio::net::TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            // A socket that refuses the option still works, only slower; serving it
            // beats ending the server's accept loop with an error.
            let _ = stream.set_nodelay(true);
        })
    })
}

/// The bearer token of a request, if it sent one.
pub fn bearer<T>(request: &tonic::Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The metadata key a service marks a refusal with when the caller must act on
/// its kind, not only report it.
pub const REFUSAL: &str = "arf-refusal";

/// [`REFUSAL`]: the executor's witness refused the audit log (rolled back,
/// truncated or rewritten), so the governor pages someone.
pub const LOG_NOT_WITNESSED: &str = "log-not-witnessed";

/// Adds `authorization: Bearer TOKEN` to a request.
pub fn with_bearer<T>(mut request: tonic::Request<T>, token: &str) -> tonic::Request<T> {
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    crate::telemetry::inject(request.metadata_mut());
    request
}

/// A client interceptor that sends `authorization: Bearer TOKEN` on every call.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl Bearer {
    /// `None` sends no credentials (the server then refuses the call, naming why).
    pub fn new(token: Option<&str>) -> Self {
        Self(token.and_then(|t| format!("Bearer {t}").parse().ok()))
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Bearer([token])" } else { "Bearer(none)" })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        crate::telemetry::inject(request.metadata_mut());
        Ok(request)
    }
}

/// A channel that sends a bearer token on every call.
pub type Authenticated = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// A server's routes behind the authentication layer.
pub type Router = tonic::transport::server::Router<tower::layer::util::Stack<crate::auth::AuthLayer, tower::layer::util::Identity>>;

/// A server builder whose every request goes through `authenticator` first.
pub fn builder(authenticator: crate::auth::Authenticator) -> tonic::transport::Server<tower::layer::util::Stack<crate::auth::AuthLayer, tower::layer::util::Identity>> {
    builder_aged(authenticator, MAX_CONNECTION_AGE)
}

/// How long a connection lives before the server asks the client to reconnect
/// (HTTP/2 GOAWAY; calls under way get [`MAX_CONNECTION_AGE_GRACE`] to finish).
/// A reconnection is a new TLS handshake: a peer whose certificate is no longer
/// trusted (a CA rotated away, a key replaced) is cut off within this time, not
/// only when it happens to reconnect.
pub const MAX_CONNECTION_AGE: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long calls under way on a connection past its age may take to finish.
pub const MAX_CONNECTION_AGE_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

/// [`builder`] with connections living `age` (and `age` again as grace, at most
/// [`MAX_CONNECTION_AGE_GRACE`]).
pub fn builder_aged(
    authenticator: crate::auth::Authenticator,
    age: std::time::Duration,
) -> tonic::transport::Server<tower::layer::util::Stack<crate::auth::AuthLayer, tower::layer::util::Identity>> {
    tonic::transport::Server::builder()
        .max_connection_age(age)
        .max_connection_age_grace(age.min(MAX_CONNECTION_AGE_GRACE))
        .layer(authenticator.layer())
}

/// Serves `router` on `listener` until `shutdown`: over mutual TLS with `tls`,
/// plain text (loopback only, checked by the configuration) without.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<crate::tls::ServerTls>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    match tls {
        Some(tls) => router.serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), shutdown).await,
        None => router.serve_with_incoming_shutdown(incoming(listener), shutdown).await,
    }
}
