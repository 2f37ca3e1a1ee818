//! One incident is one trace across the four services: a real OTLP/HTTP
//! receiver on loopback (the wire format an OpenTelemetry Collector takes)
//! gets the spans every process exports when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set, and the agent's diagnosis, the governor's decision, the executor's run
//! and the audit appends they make share one trace id, carried in gRPC metadata.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// `(service.name, trace id, span name)` of every span received.
type Received = Arc<Mutex<Vec<(String, Vec<u8>, String)>>>;

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export in protobuf");
                let mut sink = sink.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref())
                        .and_then(|v| match &v.value {
                            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                        sink.push((service.clone(), span.trace_id, span.name));
                    }
                }
                // An empty ExportTraceServiceResponse.
                ([(axum::http::header::CONTENT_TYPE, "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_incident_is_one_trace_across_the_four_services() {
    let (endpoint, received) = receiver().await;
    let (target, _restarts) = support::counting_target("127.0.0.1").await;
    let mut plane = support::Plane::prepare(&target).await;
    plane.env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint));
    plane.env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
    for role in ["audit", "governor", "executor", "agent"] {
        plane.start(role, None).await;
    }
    let incident = plane.fire().await;
    plane
        .trail_until(&incident, Duration::from_secs(60), "the action's outcome", |trail| trail.iter().any(|r| r.kind == arf_audit::RecordKind::Outcome))
        .await;

    // The diagnosis's trace holds spans of every service.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans = received.lock().unwrap().clone();
        let traces: BTreeMap<&Vec<u8>, BTreeSet<&str>> = spans.iter().fold(BTreeMap::new(), |mut by, (service, trace, _)| {
            by.entry(trace).or_default().insert(service.as_str());
            by
        });
        let diagnosis = spans.iter().find(|(service, _, name)| service == "arf-agent" && name == "diagnose");
        if let Some((_, trace, _)) = diagnosis {
            let services = &traces[trace];
            if ["arf-agent", "arf-governor", "arf-executor", "arf-audit"].iter().all(|s| services.contains(s)) {
                let names: BTreeSet<&str> = spans.iter().filter(|(_, t, _)| t == trace).map(|(_, _, n)| n.as_str()).collect();
                assert!(names.iter().any(|n| n.contains("Evaluate")), "the governor's Evaluate is in the trace: {names:?}");
                assert!(names.iter().any(|n| n.contains("Execute")), "the executor's Execute is in the trace: {names:?}");
                assert!(names.iter().any(|n| n.contains("Append")), "the audit appends are in the trace: {names:?}");
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no trace spans all four services; traces: {traces:?}\nagent log:\n{}",
            plane.log("agent")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
