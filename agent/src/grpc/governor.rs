//! The agent's one outbound link: proposals to the governor. (The agent has no
//! client for the executor, by design.)

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use arf_core::diagnosis::Proposal;
use arf_proto::v1 as pb;
use arf_proto::v1::governor_client::GovernorClient;

/// The governor's answer, as much as the agent needs of it.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub decision_id: String,
    pub route: String,
}

#[derive(Debug, Clone)]
pub struct GovernorLink {
    client: GovernorClient<Channel>,
    token: String,
}

impl GovernorLink {
    pub fn connect(address: &str, token: String) -> Result<Self, String> {
        let uri = if address.starts_with("http") { address.to_owned() } else { format!("http://{address}") };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|_| format!("governor address `{address}` is invalid"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15));
        Ok(Self { client: GovernorClient::new(endpoint.connect_lazy()), token })
    }

    pub async fn evaluate(&self, proposal: &Proposal) -> Result<Evaluated, String> {
        let request = pb::EvaluateRequest { proposal: Some(super::convert::proposal_to_pb(proposal)) };
        let request = arf_proto::server::with_bearer(tonic::Request::new(request), &self.token);
        let decision = self
            .client
            .clone()
            .evaluate(request)
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
            .into_inner();
        let route = match pb::Route::try_from(decision.route) {
            Ok(pb::Route::Autonomous) => "autonomous",
            Ok(pb::Route::Acknowledge) => "acknowledge",
            Ok(pb::Route::Approval) => "approval",
            Ok(pb::Route::Deny) => "deny",
            _ => "unspecified",
        };
        Ok(Evaluated { decision_id: decision.decision_id, route: route.to_owned() })
    }
}
