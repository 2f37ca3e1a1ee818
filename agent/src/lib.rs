//! The agent: signal ingest, incidents, context snapshots, reasoners and
//! hypothesis validation. It proposes to the governor and has no path to the
//! executor or to any target.

pub mod config;
pub mod context;
pub mod ground;
pub mod grpc;
pub mod http;
pub mod incident;
pub mod ingest;
pub mod investigate;
pub mod prompt;
pub mod reasoner;
pub mod redact;
pub mod replicas;
pub mod service;
pub mod snapshot;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::info;

pub use config::Config;

use crate::config::ReasonerKind;
use crate::reasoner::Reasoner;

/// Runs the agent's gRPC service on `listener` and its webhook endpoint on
/// `webhook_listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    webhook_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let catalog = arf_core::catalog::Catalog::load_dir(&config.catalog_dir)?;
    let rules = || -> anyhow::Result<Arc<dyn Reasoner>> {
        let dir = config.runbooks_dir.as_deref().context("`agent.runbooks_dir` is required")?;
        Ok(Arc::new(reasoner::rules::Rules::load_dir(dir).map_err(anyhow::Error::msg)?))
    };
    let (reasoner, fallback): (Arc<dyn Reasoner>, Option<Arc<dyn Reasoner>>) = match config.reasoner {
        ReasonerKind::Scripted => {
            let dir = config.scripted_dir.as_deref().context("`agent.scripted_dir` is required")?;
            (Arc::new(reasoner::scripted::Scripted::load_dir(dir).map_err(anyhow::Error::msg)?), None)
        }
        ReasonerKind::Rules => (rules()?, None),
        ReasonerKind::Noisy => {
            let dir = config.scripted_dir.as_deref().context("`agent.scripted_dir` is required")?;
            let noisy = config.noisy.clone().context("`[agent.noisy]` is required")?;
            let scripted = reasoner::scripted::Scripted::load_dir(dir).map_err(anyhow::Error::msg)?;
            let reasoner = reasoner::noisy::Noisy::new(scripted, noisy.seed, noisy.accuracy, noisy.overconfidence).map_err(anyhow::Error::msg)?;
            (Arc::new(reasoner), None)
        }
        ReasonerKind::Openai => {
            let openai = config.openai.clone().context("`agent.openai` is required")?;
            let fallback = match openai.on_unavailable {
                config::OnUnavailable::Rules => Some(rules()?),
                config::OnUnavailable::Escalate => None,
            };
            (Arc::new(reasoner::openai::OpenAi::new(openai).map_err(anyhow::Error::msg)?), fallback)
        }
    };
    let (identities, signers) = config.callers().map_err(anyhow::Error::msg)?;
    if identities.is_empty() && signers.is_empty() {
        tracing::warn!("`agent.identities` is empty: every call to the agent and every webhook is refused");
    }
    let webhook_auth = Arc::new(http::auth::WebhookAuth::new(identities.clone(), signers));
    let scrapers = Arc::new(identities.clone());
    let redactor = redact::Redactor::with_rules(&config.redact_patterns, config.redact_rules_file.as_deref()).map_err(anyhow::Error::msg)?;
    let audit_token = arf_core::keys::load_token(&config.audit_token_file)?;
    let transport = config.transport().map_err(anyhow::Error::msg)?;
    let tls = arf_proto::tls::Loaded::load(&transport)?;
    let audit = arf_audit_client::AuditClient::connect_dial(&config.audit_addr, Some(audit_token), &tls.dial(arf_core::identity::Role::Audit))?;
    let governor_token = arf_core::keys::load_token(&config.governor_token_file)?;
    let governor = grpc::governor::GovernorLink::connect(&config.governor_addr, governor_token, std::time::Duration::from_secs(config.governor_retry_secs), &tls.dial(arf_core::identity::Role::Governor)).map_err(anyhow::Error::msg)?;
    let budget = context::Budget {
        max_items: config.max_snapshot_items,
        max_tokens: config.max_snapshot_tokens,
        change_lookback_ms: i64::try_from(config.change_lookback_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
    };
    let mut settings = service::Settings {
        reasoner,
        fallback,
        redactor,
        scopes: config.sender_scopes(),
        budget,
        group_window_ms: i64::try_from(config.group_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        group_wait: std::time::Duration::from_secs(config.group_wait_secs),
        retain_ms: i64::try_from(config.retain_incidents_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        resume_within_ms: i64::try_from(config.resume_within_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        max_diagnoses: config.max_diagnoses_per_incident,
        max_model_calls: config.max_model_calls_per_incident,
        max_attempts: config.max_attempts_per_incident,
        investigator: investigate::Investigator::new(config.investigation.clone()).map_err(anyhow::Error::msg)?.map(Arc::new),
        snapshots: config.state_dir.clone().map(|dir| service::Snapshots {
            dir,
            every_records: config.snapshot_every_records,
            check_every: std::time::Duration::from_secs(config.snapshot_check_secs),
        }),
        replicas: None,
    };
    // One of several replicas: grouping and diagnoses are arbitrated in the database,
    // and a replica whose lease lapsed exits (75), to be restarted, rather than keep
    // diagnosing what another replica may be taking over.
    if let Some(postgres) = &config.postgres {
        let member = config.replica.clone().unwrap_or_else(|| "agent".to_owned());
        let lease = std::time::Duration::from_secs(config.lease_secs);
        let replicas = replicas::Replicas::join(postgres, &member, lease).await.with_context(|| format!("the agents' database `{}`", postgres.describe()))?;
        replicas.renew_or_exit();
        info!(%member, at = %postgres.describe(), "grouping and diagnoses are shared with other agent replicas in PostgreSQL");
        settings.replicas = Some(replicas);
    }
    if settings.investigator.is_some() {
        // Loudly, once the log answers: calls that cannot be logged are withheld.
        let audit = audit.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                match audit.who_am_i().await {
                    Ok((writer, kinds)) => {
                        if !kinds.iter().any(|k| k == "investigation") {
                            tracing::error!(%writer, "investigation tools are configured, but the audit log does not let the agent append `investigation` records (`audit.writer_kinds`): every call's result is withheld until it does");
                        }
                        return;
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
                }
            }
        });
    }
    let agent = Arc::new(service::Agent::new(audit, governor, catalog, config.targets.clone(), settings));
    // The log is the agent's memory: rebuild incidents from it before taking
    // signals. Until then the agent answers, but refuses signals as unavailable.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_not_serving::<grpc::AgentServer<grpc::Service>>().await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    let recovering = Arc::clone(&agent);
    tokio::spawn(async move {
        let mut attempt = 0u32;
        loop {
            match recovering.recover().await {
                Ok(count) => {
                    info!(incidents = count, "state rebuilt from the audit log");
                    recovering.evict_periodically();
                    recovering.snapshot_periodically();
                    recovering.take_over_periodically();
                    health.set_serving::<grpc::AgentServer<grpc::Service>>().await;
                    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
                    return;
                }
                Err(service::RecoverError::Malformed(error)) => {
                    tracing::error!(%error, "THE AGENT CANNOT REBUILD ITS STATE: one of its own audit records is malformed; it accepts nothing until an operator has checked the log (`arf audit verify`)");
                    return;
                }
                Err(error) => {
                    attempt += 1;
                    tracing::warn!(%error, attempt, "cannot read the audit log to rebuild state; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    });

    let ready = Arc::clone(&agent);
    let endpoint = arf_proto::metrics::Endpoint { service: "agent", identities: scrapers, ready: arf_proto::metrics::ready_with_tls(tls.server.clone(), move || ready.is_ready()) };
    let metrics = arf_proto::metrics::spawn(config.metrics_listen, config.mtls.as_ref(), endpoint).await.map_err(|e| anyhow::anyhow!(e))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut http_stop = stop_rx.clone();
    let mut grpc_stop = stop_rx;
    let webhook_addr = webhook_listener.local_addr()?;
    let router = http::router(Arc::clone(&agent), webhook_auth);
    let http_stopped = async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    };
    let webhook_tls = match &transport {
        arf_core::tls::Transport::Tls(files) => Some(Arc::new(arf_proto::tls::ServerTls::webhook(files)?)),
        arf_core::tls::Transport::PlainLoopback => None,
    };
    let http = async move {
        // Over TLS with the agent's certificate, or plain text on loopback; either way
        // with a deadline for headers and a bound on connections (`arf_proto::http`).
        let incoming = match webhook_tls {
            Some(tls) => arf_proto::http::Incoming::Tls(arf_proto::tls::Listener::new(webhook_listener, tls)?),
            None => arf_proto::http::Incoming::Plain(webhook_listener),
        };
        arf_proto::http::serve(incoming, router, arf_proto::http::Limits::default(), http_stopped).await
    };
    let addr = listener.local_addr()?;
    info!(%addr, %webhook_addr, reasoner = config.reasoner_name(), tls = tls.server.is_some(), "agent listening");
    let router = arf_proto::server::builder(arf_proto::auth::Authenticator::new("the agent", identities, tls.server.is_some()))
        .add_service(health_service)
        .add_service(arf_proto::server::reflection::<grpc::AgentServer<grpc::Service>>()?)
        .add_service(arf_proto::server::reflection_v1alpha::<grpc::AgentServer<grpc::Service>>()?)
        .add_service(grpc::AgentServer::new(grpc::Service::new(agent)));
    let grpc = arf_proto::server::serve(router, listener, tls.server, async move {
        let _ = grpc_stop.wait_for(|stop| *stop).await;
    });
    let (http, grpc) = tokio::join!(http, grpc);
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    http.context("agent webhook server failed")?;
    grpc.context("agent gRPC server failed")?;
    Ok(())
}

impl Config {
    fn reasoner_name(&self) -> &'static str {
        match self.reasoner {
            ReasonerKind::Scripted => "scripted",
            ReasonerKind::Rules => "rules",
            ReasonerKind::Openai => "openai",
            ReasonerKind::Noisy => "noisy",
        }
    }
}
