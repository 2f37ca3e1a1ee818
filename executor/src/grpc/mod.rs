//! The `Executor` gRPC service, with health and reflection beside it.

mod convert;
mod status;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

use arf_proto::v1 as pb;
use arf_proto::v1::executor_server::{Executor as ExecutorService, ExecutorServer};

use crate::config::Config;
use crate::engine::{Executor, Parts};
use crate::store::Store;

pub struct Service {
    executor: Arc<Executor>,
}

#[tonic::async_trait]
impl ExecutorService for Service {
    async fn execute(&self, request: Request<pb::SignedDecision>) -> Result<Response<pb::Execution>, Status> {
        // The governor's signature is the authority to act; this check only keeps
        // everyone else from making the executor verify their bytes.
        let caller = arf_proto::auth::caller(&request)?;
        arf_proto::auth::require(caller, caller.role == arf_core::identity::Role::Governor, "ask the executor to act")?;
        let signed = convert::signed_decision(request.into_inner());
        let executed = self.executor.execute(signed, arf_core::time::now_ms()).await.map_err(status::execute)?;
        Ok(Response::new(convert::execution(&executed.state, executed.replayed)))
    }

    async fn get_execution(
        &self,
        request: Request<pb::GetExecutionRequest>,
    ) -> Result<Response<pb::Execution>, Status> {
        let caller = arf_proto::auth::caller(&request)?;
        arf_proto::auth::require(caller, caller.role.may_read(), "look up executions")?;
        let decision_id = request.into_inner().decision_id;
        if decision_id.is_empty() {
            return Err(Status::invalid_argument("`decision_id` must not be empty"));
        }
        match self.executor.execution(&decision_id).await.map_err(status::store)? {
            Some(state) => Ok(Response::new(convert::execution(&state, false))),
            None => Err(Status::not_found(format!("no execution of decision `{decision_id}`"))),
        }
    }
}

/// The gauge that says the execution store stopped (1) or works (0).
pub const STORE_STOPPED: &str = "arf_executor_store_stopped";
const STORE_STOPPED_HELP: &str = "1 once the execution store stopped after a failed sync; every execution is refused until a restart.";

/// Runs the executor on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let loaded = config.load().context("invalid executor configuration")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory `{}`", config.data_dir.display()))?;
    let mut store = Store::open(&config.data_dir.join("executions.sled"))?;
    let processes = store.processes()?;
    let processes_for_lapse = store.processes()?;
    let lease = std::time::Duration::from_secs(config.lease_secs);
    let mut renewal = None;
    let mut lease_lost = None;
    let mut fence = None;
    if let Some(settings) = &config.postgres {
        let member = config.replica.clone().unwrap_or_else(|| "executor".to_owned());
        let shared = crate::shared::Shared::join(settings, &member, lease)
            .await
            .with_context(|| format!("the executors' database `{}`", settings.describe()))?;
        let (lost, lapsed) = tokio::sync::oneshot::channel();
        renewal = Some(shared.spawn_renewal(lost));
        lease_lost = Some(lapsed);
        fence = Some((member.clone(), shared.incarnation().to_owned()));
        info!(%member, at = %settings.describe(), "executions and target locks are shared with other replicas in PostgreSQL");
        store = store.with_shared(shared);
    }
    let tls = arf_proto::tls::Loaded::load(&loaded.transport)?;
    let audit = arf_audit_client::AuditClient::connect_dial(&config.audit_addr, Some(loaded.audit_token), &tls.dial(arf_core::identity::Role::Audit))?;
    // A replica appends only while its lease holds (the log checks it).
    let audit = match &fence {
        Some((member, incarnation)) => audit.fenced(member, incarnation),
        None => audit,
    };
    let witness = match &config.audit_checkpoint_key {
        Some(key) => {
            let key = arf_core::keys::load_trusted(key).with_context(|| format!("`executor.audit_checkpoint_key` `{}`", key.display()))?.key;
            let verifier = arf_audit_client::checkpoint::NoteVerifier::new(config.audit_checkpoint_origin.clone(), key);
            let path = config.data_dir.join("witness").join("checkpoint");
            Some(arf_audit_client::witness::Witness::open(&path, verifier).with_context(|| "the executor's witness state")?)
        }
        None => {
            warn!("`executor.audit_checkpoint_key` is not set: this executor does not witness the log's checkpoints");
            None
        }
    };
    if loaded.identities.is_empty() {
        warn!("`executor.identities` is empty: every call to the executor is refused, the governor's too");
    }
    // Not ready once the execution store stopped after a failed sync.
    let stopped = store.stop_watch();
    let endpoint = arf_proto::metrics::Endpoint { service: "executor", identities: Arc::new(loaded.identities.clone()), ready: arf_proto::metrics::ready_with_tls(tls.server.clone(), move || !stopped()) };
    let metrics = arf_proto::metrics::spawn(config.metrics_listen, config.mtls.as_ref(), endpoint).await.map_err(|e| anyhow::anyhow!(e))?;
    let authenticator = arf_proto::auth::Authenticator::new("the executor", loaded.identities.clone(), tls.server.is_some());
    let n_pathways = loaded.catalog.len();
    let n_targets = config.targets.len();
    let executor = Arc::new(Executor::new(Parts {
        catalog: loaded.catalog,
        inventory: config.targets,
        trusted_keys: loaded.trusted_keys,
        audit,
        store,
        max_concurrent: config.max_concurrent,
        secrets: crate::secrets::SecretSource { dir: config.secrets_dir.clone() },
        processes,
        http: loaded.http,
        witness,
    }));
    // A misnamed writer is refused before anything else: recovery depends on it.
    // With the log down, the check waits for the first decision (which needs the log anyway).
    match executor.check_writer().await {
        Err(error @ crate::engine::ExecuteError::WrongWriter { .. }) => return Err(anyhow::anyhow!(error)),
        Err(error) => warn!(%error, "cannot ask the audit log who this executor is yet; checking before the first action"),
        Ok(()) => {}
    }
    // Executions cut off by a crash are settled (verified again, rolled back when
    // the target is unhealthy) while the server answers; their targets stay locked
    // until then, and none is run again.
    let n_unfinished = executor.unfinished().await?.len();
    if n_unfinished > 0 {
        warn!(n_unfinished, "executions never reached an outcome; settling them");
    }
    executor.recover().await?;
    // And those an audit outage cuts off while it runs are settled once the log is back.
    let settler = executor.spawn_settler(std::time::Duration::from_secs(2));
    let witnessing = executor.spawn_witness(std::time::Duration::from_secs(config.witness_every_secs));
    // With replicas: what a replica whose lease lapsed left unfinished is taken over.
    let takeover = executor.spawn_takeover(lease / 2);
    // And this replica, should its own lease lapse, stops acting at once: what its
    // steps still run is killed, and the process exits, to be restarted (it then
    // rejoins and settles what is still its own, as after any restart).
    if let Some(lapsed) = lease_lost {
        let processes = processes_for_lapse;
        tokio::spawn(async move {
            if let Ok(reason) = lapsed.await {
                for leftover in crate::runner::processes::sweep(&processes).await {
                    warn!(decision_id = %leftover.owner, program = %leftover.program, "stopped a step of an execution this replica no longer owns");
                }
                error!(%reason, "exiting: this executor replica lost its lease");
                std::process::exit(75);
            }
        });
    }
    // A store that stopped after a failed sync refuses every execution until a
    // restart: health says so, for supervisors and for the governor's failover.
    let (health_reporter, health) = arf_proto::server::health_reporting::<ExecutorServer<Service>>(true).await;
    arf_proto::metrics::set(STORE_STOPPED, STORE_STOPPED_HELP, &[], 0.0);
    let store_watch = {
        let executor = Arc::clone(&executor);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                if executor.store_stopped() {
                    arf_proto::metrics::set(STORE_STOPPED, STORE_STOPPED_HELP, &[], 1.0);
                    health_reporter.set_not_serving::<ExecutorServer<Service>>().await;
                    health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                    return;
                }
            }
        })
    };
    let addr = listener.local_addr()?;
    info!(%addr, pathways = n_pathways, targets = n_targets, max_concurrent = config.max_concurrent, "executor listening");
    let router = arf_proto::server::builder(authenticator)
        .add_service(health)
        .add_service(arf_proto::server::reflection::<ExecutorServer<Service>>()?)
        .add_service(arf_proto::server::reflection_v1alpha::<ExecutorServer<Service>>()?)
        .add_service(ExecutorServer::new(Service { executor }));
    let served = arf_proto::server::serve(router, listener, tls.server, shutdown)
        .await
        .context("executor server failed");
    // The settler holds the executor (and its store): stop it so the store closes.
    settler.abort();
    if let Some(witnessing) = &witnessing {
        witnessing.abort();
    }
    store_watch.abort();
    for task in [takeover, renewal].into_iter().flatten() {
        task.abort();
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    let _ = settler.await;
    if let Some(witnessing) = witnessing {
        let _ = witnessing.await;
    }
    served
}
