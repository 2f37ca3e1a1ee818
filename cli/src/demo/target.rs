//! The demo's target: a small HTTP service whose behaviour comes from
//! `service.toml` in a local git repository, read at start and on reload.
//!
//! It is healthy while `upstream_timeout_ms` is at least 100; a lower timeout
//! makes every request to its (imaginary) payment upstream fail, and it answers
//! 500, which is the bad change the demo makes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::RwLock;

#[derive(Debug, Clone, Deserialize)]
struct ServiceConfig {
    upstream_timeout_ms: u64,
    #[serde(default)]
    max_connections: u64,
}

struct Target {
    file: PathBuf,
    config: RwLock<ServiceConfig>,
    restarts: RwLock<u64>,
}

fn read(file: &Path) -> Result<ServiceConfig> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    toml::from_str(&text).with_context(|| format!("`{}` is not a valid service configuration", file.display()))
}

pub async fn run(repo: &Path, listen: SocketAddr) -> Result<()> {
    let file = repo.join("service.toml");
    let target = Arc::new(Target { config: RwLock::new(read(&file)?), file, restarts: RwLock::new(0) });
    let app = axum::Router::new()
        .route("/health", get(health))
        .route("/-/reload", post(reload))
        .route("/-/restart", post(restart))
        .with_state(target);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on `{listen}`"))?;
    axum::serve(listener, app).with_graceful_shutdown(crate::serve::shutdown_signal()).await?;
    Ok(())
}

async fn health(State(target): State<Arc<Target>>) -> (StatusCode, Json<Value>) {
    let config = target.config.read().await.clone();
    if config.upstream_timeout_ms >= 100 {
        (StatusCode::OK, Json(json!({"status": "ok", "upstream_timeout_ms": config.upstream_timeout_ms})))
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"status": "failing", "error": format!("upstream_timeout_ms = {}: every payment call times out", config.upstream_timeout_ms)})),
        )
    }
}

async fn reload(State(target): State<Arc<Target>>) -> (StatusCode, Json<Value>) {
    match read(&target.file) {
        Ok(config) => {
            let body = json!({"reloaded": true, "upstream_timeout_ms": config.upstream_timeout_ms, "max_connections": config.max_connections});
            *target.config.write().await = config;
            (StatusCode::OK, Json(body))
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"reloaded": false, "error": format!("{error:#}")}))),
    }
}

async fn restart(State(target): State<Arc<Target>>) -> (StatusCode, Json<Value>) {
    let mut restarts = target.restarts.write().await;
    *restarts += 1;
    (StatusCode::OK, Json(json!({"restarted": true, "restarts": *restarts})))
}
