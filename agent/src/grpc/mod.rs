//! The `Agent` gRPC service.

pub mod convert;
pub mod governor;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use arf_proto::v1 as pb;
use arf_proto::v1::agent_server::Agent as AgentRpc;

use crate::ingest::{self, InvalidSignal};
use crate::service::Agent;

pub use arf_proto::v1::agent_server::AgentServer;

pub struct Service {
    agent: Arc<Agent>,
}

impl Service {
    pub fn new(agent: Arc<Agent>) -> Self {
        Self { agent }
    }

    /// Until the state is rebuilt from the log, "no such incident" would be a lie.
    fn ready(&self) -> Result<(), Status> {
        if self.agent.is_ready() {
            Ok(())
        } else {
            Err(Status::unavailable("the agent is still rebuilding its state from the audit log; retry shortly"))
        }
    }
}

pub fn invalid(error: &InvalidSignal) -> Status {
    Status::invalid_argument(error.to_string())
}

pub fn not_accepted(error: &crate::service::IngestError) -> Status {
    match error {
        crate::service::IngestError::OutOfScope { .. } => Status::permission_denied(error.to_string()),
        _ => Status::unavailable(error.to_string()),
    }
}

async fn accept(agent: &Arc<Agent>, signals: Vec<arf_core::signal::Signal>, sender: &str) -> Result<Response<pb::SubmitSignalsResponse>, Status> {
    let accepted = agent.ingest(signals, sender).await.map_err(|e| not_accepted(&e))?;
    Ok(Response::new(pb::SubmitSignalsResponse { accepted: accepted.into_iter().map(convert::accepted).collect() }))
}

/// The caller's name, when its role may send signals.
fn sender<T>(request: &Request<T>) -> Result<String, Status> {
    let caller = arf_proto::auth::caller(request)?;
    arf_proto::auth::require(caller, caller.role.may_submit_signals(), "send signals")?;
    Ok(caller.name.clone())
}

/// The caller, when its role may read incidents.
fn reader<T>(request: &Request<T>) -> Result<(), Status> {
    let caller = arf_proto::auth::caller(request)?;
    arf_proto::auth::require(caller, caller.role.may_read(), "read incidents")
}

#[tonic::async_trait]
impl AgentRpc for Service {
    async fn submit_signals(&self, request: Request<pb::SubmitSignalsRequest>) -> Result<Response<pb::SubmitSignalsResponse>, Status> {
        let sender = sender(&request)?;
        let signals = request.into_inner().signals;
        if signals.is_empty() {
            return Err(Status::invalid_argument("`signals` must not be empty"));
        }
        if signals.len() > ingest::MAX_SIGNALS_PER_REQUEST {
            return Err(Status::invalid_argument(format!(
                "`signals`: at most {} per request, got {}",
                ingest::MAX_SIGNALS_PER_REQUEST,
                signals.len()
            )));
        }
        let now = arf_core::time::now_ms();
        let signals = signals
            .into_iter()
            .enumerate()
            .map(|(i, s)| ingest::generic::build(convert::generic_signal(s), &format!("signals[{i}]"), now))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        accept(&self.agent, signals, &sender).await
    }

    async fn submit_webhook(&self, request: Request<pb::SubmitWebhookRequest>) -> Result<Response<pb::SubmitSignalsResponse>, Status> {
        let sender = sender(&request)?;
        let request = request.into_inner();
        let defaults = ingest::Defaults { now_ms: arf_core::time::now_ms(), service: request.service, environment: request.environment };
        let signals = ingest::parse(&request.format, &request.body, &defaults).map_err(|e| invalid(&e))?;
        if signals.is_empty() {
            return Ok(Response::new(pb::SubmitSignalsResponse { accepted: vec![] }));
        }
        accept(&self.agent, signals, &sender).await
    }

    async fn list_incidents(&self, request: Request<pb::ListIncidentsRequest>) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        reader(&request)?;
        self.ready()?;
        let incidents = self.agent.incidents().await;
        Ok(Response::new(pb::ListIncidentsResponse { incidents: incidents.iter().map(convert::incident).collect() }))
    }

    async fn get_incident(&self, request: Request<pb::GetIncidentRequest>) -> Result<Response<pb::Incident>, Status> {
        reader(&request)?;
        self.ready()?;
        let id = request.into_inner().incident_id;
        match self.agent.incident(&id).await {
            Ok(Some(incident)) => Ok(Response::new(convert::incident(&incident))),
            Ok(None) => Err(Status::not_found(format!("no incident `{id}`"))),
            Err(error) => Err(Status::unavailable(format!("incident `{id}` is not in memory and the audit log cannot be read for it: {error}"))),
        }
    }
}
