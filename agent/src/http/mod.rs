//! Webhook ingest over HTTP: `POST /v1/webhooks/{format}`.
//!
//! Every request is authenticated first (`auth`): 401 without credentials the
//! agent knows, 403 for an identity that may not send signals (or not about a
//! service it is limited away from). Then it answers 200 with what was accepted, 400 with the field that is wrong, 404 for
//! an unknown format, 413 for an oversized body, and 503 when the signals could
//! not be logged (retry: nothing was accepted).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use serde_json::json;

use crate::ingest::{self, InvalidSignal};
use crate::service::Agent;

pub mod auth;

pub fn router(agent: Arc<Agent>, auth: Arc<auth::WebhookAuth>) -> Router {
    Router::new()
        .route("/v1/webhooks/{format}", post(webhook))
        .layer(DefaultBodyLimit::max(ingest::MAX_BODY_BYTES))
        .with_state(agent)
        // Outermost, so that every path (unknown ones too) needs credentials.
        .layer(axum::middleware::from_fn_with_state(auth, auth::authenticate))
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// `?service=NAME&environment=NAME` attribute signals whose payload does not say.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Attribution {
    #[serde(default)]
    service: String,
    #[serde(default)]
    environment: String,
}

async fn webhook(
    State(agent): State<Arc<Agent>>,
    axum::Extension(caller): axum::Extension<arf_core::identity::Caller>,
    Path(format): Path<String>,
    Query(attribution): Query<Attribution>,
    body: Bytes,
) -> Response {
    let defaults = ingest::Defaults { now_ms: arf_core::time::now_ms(), service: attribution.service, environment: attribution.environment };
    let signals = match ingest::parse(&format, &body, &defaults) {
        Ok(signals) => signals,
        Err(e @ InvalidSignal::UnknownFormat(_)) => return error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ InvalidSignal::TooLarge { .. }) => return error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if signals.is_empty() {
        return (StatusCode::OK, Json(json!({"accepted": []}))).into_response();
    }
    match agent.ingest(signals, &caller.name).await {
        Ok(accepted) => {
            let accepted: Vec<_> = accepted
                .into_iter()
                .map(|a| json!({"signal_id": a.signal_id, "fingerprint": a.fingerprint, "incident_id": a.incident_id,
                                "duplicate": a.duplicate, "audit_seq": a.audit_seq}))
                .collect();
            (StatusCode::OK, Json(json!({"accepted": accepted}))).into_response()
        }
        Err(e @ crate::service::IngestError::OutOfScope { .. }) => error(StatusCode::FORBIDDEN, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
