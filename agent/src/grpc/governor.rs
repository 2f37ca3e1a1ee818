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

/// Its `Debug` leaves the token out. It takes several addresses, separated by
/// commas, for governor replicas (`governor.postgres`): a call that finds no
/// governor, or a replica standing by, is offered to the next.
#[derive(Clone)]
pub struct GovernorLink {
    clients: arf_core::net::Rotation<GovernorClient<Channel>>,
    token: String,
    retry_for: Duration,
}

impl std::fmt::Debug for GovernorLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GovernorLink").field("retry_for", &self.retry_for).finish_non_exhaustive()
    }
}

impl GovernorLink {
    pub fn connect(addresses: &str, token: String, retry_for: Duration, dial: &arf_proto::tls::Dial) -> Result<Self, String> {
        let clients = arf_core::net::addresses(addresses)
            .map(|address| {
                let uri = if address.starts_with("http") { address.to_owned() } else { format!("http://{address}") };
                let endpoint = Endpoint::from_shared(uri)
                    .map_err(|_| format!("governor address `{address}` is invalid"))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(15));
                Ok(GovernorClient::new(dial.channel(endpoint)))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let clients = arf_core::net::Rotation::new(clients).ok_or_else(|| format!("governor address list `{addresses}` names no address"))?;
        Ok(Self { clients, token, retry_for })
    }

    /// Offers the proposal, again while the governor is unreachable or rebuilding,
    /// for up to the configured time: it answers a proposal it already decided with
    /// that decision, so offering it twice never decides it twice.
    pub async fn evaluate(&self, proposal: &Proposal) -> Result<Evaluated, String> {
        let deadline = std::time::Instant::now() + self.retry_for;
        let mut backoff = Duration::from_millis(200);
        let decision = loop {
            let request = pb::EvaluateRequest { proposal: Some(super::convert::proposal_to_pb(proposal)) };
            let request = arf_proto::server::with_bearer(tonic::Request::new(request), &self.token);
            let (i, mut client) = self.clients.pick();
            match client.evaluate(request).await {
                Ok(response) => break response.into_inner(),
                Err(status)
                    if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown)
                        && std::time::Instant::now() + backoff < deadline =>
                {
                    // Another replica may be the one that decides.
                    if self.clients.len() > 1 {
                        self.clients.failed(i);
                    }
                    tracing::warn!(code = ?status.code(), error = status.message(), "the governor cannot take the proposal yet; offering it again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(status) => return Err(format!("{:?}: {}", status.code(), status.message())),
            }
        };
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
