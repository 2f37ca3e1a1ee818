//! `arf status`: each service's address, health, version and uptime; the log's
//! head and how much of it the latest signed checkpoint covers; the decisions
//! waiting for people and autonomy; the incidents the agent holds. Exits 0 when
//! every service serves, 1 otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::Role;
use crate::client::Endpoints;
use arf_proto::v1 as pb;

/// Where `arf status` looks, beyond what every command knows.
pub struct Where {
    pub executor: String,
    /// Each service's metrics endpoint, where the deployment has one.
    pub metrics: Vec<(Role, String)>,
    /// The deployment's certificate directory (its `ca.pem` checks the metrics endpoints).
    pub tls_dir: Option<PathBuf>,
}

/// One service's line.
struct Line {
    role: Role,
    address: String,
    serving: bool,
    version: Option<String>,
    started_at: Option<f64>,
    detail: Result<Value, String>,
}

pub async fn status(endpoints: &Endpoints, at: &Where, as_json: bool) -> Result<ExitCode> {
    let now = arf_core::time::now_ms() as f64 / 1000.0;
    let scraped = scrape_all(endpoints, at).await;
    let mut lines = Vec::new();
    for role in Role::ALL {
        let address = match role {
            Role::Audit => endpoints.audit.clone(),
            Role::Governor => endpoints.governor.clone(),
            Role::Executor => at.executor.clone(),
            Role::Agent => endpoints.agent.clone(),
        };
        let serving = endpoints.serving(role.identity(), &address).await;
        let detail = if serving { detail(endpoints, role).await } else { Err("not serving".to_owned()) };
        let (version, started_at) = scraped.iter().find(|(r, _)| r.as_str() == role.as_str()).map(|(_, s)| s.clone()).unwrap_or_default();
        lines.push(Line { role, address, serving, version, started_at, detail });
    }
    let all_serving = lines.iter().all(|l| l.serving);
    if as_json {
        let services: Vec<Value> = lines
            .iter()
            .map(|l| {
                json!({
                    "service": l.role.as_str(), "address": l.address, "serving": l.serving,
                    "version": l.version, "started_at": l.started_at.map(|s| arf_core::time::format_ms((s * 1000.0) as i64)),
                    "uptime_secs": l.started_at.map(|s| (now - s).max(0.0).round() as u64),
                    "detail": match &l.detail { Ok(v) => v.clone(), Err(e) => json!({"error": e}) },
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&json!({"serving": all_serving, "services": services}))?);
    } else {
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| {
                vec![
                    l.role.as_str().to_owned(),
                    l.address.clone(),
                    if l.serving { "serving".to_owned() } else { "DOWN".to_owned() },
                    l.version.clone().unwrap_or_else(|| "-".to_owned()),
                    l.started_at.map_or_else(|| "-".to_owned(), |s| uptime((now - s).max(0.0) as u64)),
                    match &l.detail {
                        Ok(v) => summary(l.role, v),
                        Err(e) => e.clone(),
                    },
                ]
            })
            .collect();
        for line in crate::client::table(&["SERVICE", "ADDRESS", "HEALTH", "VERSION", "UP", "STATE"], &rows) {
            say!("{line}");
        }
        if at.metrics.is_empty() {
            say!("(version and uptime come from each service's metrics endpoint: set `metrics_listen` in each section of the deployment)");
        }
    }
    Ok(if all_serving { ExitCode::SUCCESS } else { ExitCode::from(crate::exit::FAILURE) })
}

/// What each service says about its own state, with your token.
async fn detail(endpoints: &Endpoints, role: Role) -> Result<Value, String> {
    let said = async {
        match role {
            Role::Audit => {
                let audit = endpoints.audit()?;
                let (head, _) = audit.head().await?;
                let covered = match audit.checkpoint().await? {
                    Some(note) => Some(arf_audit::checkpoint::Checkpoint::parse_unverified(&note).map_err(|e| anyhow::anyhow!("the log's checkpoint: {e}"))?.size),
                    None => None,
                };
                anyhow::Ok(json!({"head": head, "checkpoint_size": covered}))
            }
            Role::Governor => {
                let mut governor = endpoints.governor().await?;
                let pending = governor.list_pending(endpoints.authed(pb::ListPendingRequest {})?).await?.into_inner().decisions.len();
                let autonomy = governor.get_autonomy(endpoints.authed(pb::GetAutonomyRequest {})?).await?.into_inner();
                Ok(json!({"pending": pending, "autonomy": autonomy.enabled, "trips": autonomy.trips.len()}))
            }
            Role::Agent => {
                let incidents = endpoints.agent().await?.list_incidents(endpoints.authed(pb::ListIncidentsRequest {})?).await?.into_inner().incidents;
                let open = incidents.iter().filter(|i| !matches!(i.state.as_str(), "resolved" | "verified" | "rolled_back" | "failed" | "escalated")).count();
                Ok(json!({"incidents": incidents.len(), "in_progress": open}))
            }
            Role::Executor => Ok(json!({})),
        }
    };
    said.await.map_err(|e| format!("{e:#}"))
}

fn summary(role: Role, detail: &Value) -> String {
    match role {
        Role::Audit => {
            let head = detail["head"].as_u64().unwrap_or(0);
            match detail["checkpoint_size"].as_u64() {
                Some(size) => format!("log head {head}; signed checkpoint covers {size} ({} behind)", head.saturating_sub(size)),
                None => format!("log head {head}; no signed checkpoint yet"),
            }
        }
        Role::Governor => {
            let autonomy = if detail["autonomy"].as_bool() == Some(true) { "on" } else { "OFF" };
            format!("{} pending; autonomy {autonomy}; {} guard rails tripped", detail["pending"], detail["trips"])
        }
        Role::Agent => format!("{} incidents held, {} in progress", detail["incidents"], detail["in_progress"]),
        Role::Executor => String::new(),
    }
}

fn uptime(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// The version and start time each metrics endpoint reports.
async fn scrape_all(endpoints: &Endpoints, at: &Where) -> Vec<(Role, (Option<String>, Option<f64>))> {
    let Ok(client) = metrics_client(at.tls_dir.as_deref(), &at.metrics) else { return Vec::new() };
    let Ok(token) = endpoints.token() else { return Vec::new() };
    let scheme = if at.tls_dir.is_some() { "https" } else { "http" };
    let mut out = Vec::new();
    for (role, address) in &at.metrics {
        // The certificate names the service by role; the address is where it listens.
        let port = address.rsplit(':').next().unwrap_or_default();
        let url = if scheme == "https" { format!("https://{}:{port}/metrics", arf_core::tls::service_name(role.identity())) } else { format!("http://{address}/metrics") };
        let text = match client.get(url).bearer_auth(&token).send().await {
            Ok(response) if response.status().is_success() => response.text().await.unwrap_or_default(),
            _ => continue,
        };
        out.push((*role, parse(&text, role.as_str())));
    }
    out
}

fn metrics_client(tls_dir: Option<&Path>, metrics: &[(Role, String)]) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(5)).no_proxy();
    if let Some(dir) = tls_dir {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem"))?)?).tls_built_in_root_certs(false);
        for (role, address) in metrics {
            if let Ok(addr) = address.parse() {
                builder = builder.resolve(&arf_core::tls::service_name(role.identity()), addr);
            }
        }
    }
    Ok(builder.build()?)
}

/// `arf_build_info`'s version and `arf_started_at_seconds` for `service`.
fn parse(text: &str, service: &str) -> (Option<String>, Option<f64>) {
    let label = format!("service=\"{service}\"");
    let mut version = None;
    let mut started = None;
    for line in text.lines().filter(|l| l.contains(&label)) {
        if line.starts_with("arf_build_info{") {
            version = line.split("version=\"").nth(1).and_then(|rest| rest.split('"').next()).map(str::to_owned);
        } else if line.starts_with("arf_started_at_seconds{") {
            started = line.rsplit(' ').next().and_then(|v| v.parse().ok());
        }
    }
    (version, started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_and_start_from_the_exposition() {
        let text = "# HELP arf_build_info x\narf_build_info{service=\"agent\",version=\"0.1.0\"} 1\narf_started_at_seconds{service=\"agent\"} 1764140000.5\narf_started_at_seconds{service=\"audit\"} 1\n";
        assert_eq!(parse(text, "agent"), (Some("0.1.0".to_owned()), Some(1_764_140_000.5)));
        assert_eq!(parse(text, "governor"), (None, None));
        assert_eq!(uptime(59), "59s");
        assert_eq!(uptime(3_725), "1h02m");
        assert_eq!(uptime(2 * 86_400 + 7_200), "2d02h");
    }
}
