//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, and W3C trace context (`traceparent`) carried in gRPC metadata, so one
//! incident is one trace across the four services: the agent's diagnosis, the
//! governor's decision, the executor's run and every audit append they make.
//!
//! Off by default: then no span is exported, none is made per request, and
//! nothing is added to any call.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Set once a tracer is installed: spans are then worth making.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The OTLP endpoint from the environment, when set.
pub fn endpoint() -> Option<String> {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// Holds the tracer provider: dropping it exports what is left.
pub struct Telemetry(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            // Off the async runtime: the exporter's HTTP client blocks.
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

impl Telemetry {
    pub fn off() -> Self {
        Self(None)
    }
}

/// The tracing layer that exports spans as `arf-{role}`, when an endpoint is set.
pub fn layer<S>(role: &str) -> Result<(Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>, Telemetry), String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if endpoint().is_none() {
        return Ok((None, Telemetry::off()));
    }
    // reqwest is built without a default TLS provider (for an https endpoint).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let service = format!("arf-{role}");
    // Built off any async runtime: the exporter's HTTP client is a blocking one, which
    // spans are exported with from the batch processor's own thread.
    let provider = std::thread::spawn(move || {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build().map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
        Ok::<_, String>(opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
    })
    .join()
    .map_err(|_| "the OTLP exporter could not be built".to_owned())??;
    let tracer = provider.tracer("arf");
    ENABLED.store(true, Ordering::Relaxed);
    Ok((Some(tracing_opentelemetry::layer().with_tracer(tracer)), Telemetry(Some(provider))))
}

struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), value.parse()) {
            self.0.insert(key, value);
        }
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Puts the current span's trace context on an outgoing call.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    if enabled() {
        let context = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&context, &mut Metadata(metadata));
    }
}

/// A span for one incoming call, a child of the caller's span when the call
/// carries one; `Span::none()` when traces are off.
pub fn server_span(headers: &http::HeaderMap, path: &str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("rpc", otel.name = %path, rpc.system = "grpc");
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
    span
}

/// The current span's context as a `traceparent` value, to keep with work that
/// continues later (a decision dispatched after its approval).
pub fn traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// A span that continues the trace `traceparent` names (or a new root).
pub fn continue_span(name: &'static str, traceparent: Option<&str>) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("continue", otel.name = name);
    if let Some(value) = traceparent {
        let carrier = std::collections::HashMap::from([("traceparent".to_owned(), value.to_owned())]);
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
    span
}
