//! `arf shadow`: what ARF would have done in shadow mode, set against what
//! happened, and people's judgements of it, which earn a pathway autonomy.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use arf_proto::v1 as pb;

use crate::client::{Endpoints, table};

#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// Judges a shadow decision: would its action have been right? Agreeing judgements count toward the pathway's graduation on the service; a disagreeing one demotes it (people only, once per decision).
    Judge {
        /// The shadow decision's id.
        decision: String,
        /// Its action would have been right.
        #[arg(long, conflicts_with = "disagree", required_unless_present = "disagree")]
        agree: bool,
        /// Its action would have been wrong (give `--reason`: what should have been done).
        #[arg(long)]
        disagree: bool,
        /// Why; required with `--disagree`.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Every shadow decision the governor holds, with what happened to its incident and its judgement, and each pathway's record toward graduation.
    Report {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(endpoints: &Endpoints, command: ShadowCommand) -> Result<ExitCode> {
    match command {
        ShadowCommand::Judge { decision, agree, disagree: _, reason } => {
            let request = endpoints.authed(pb::JudgeShadowRequest { decision_id: decision, agrees: agree, reason })?;
            let judged = endpoints.governor().await?.judge_shadow(request).await.map_err(endpoints.governor_failed())?.into_inner();
            let verdict = if agree { "right" } else { "wrong" };
            let action = judged.remediation.as_ref().map(|r| format!("`{}` on `{}`", r.pathway, r.target)).unwrap_or_default();
            say!("judged {}: {action} would have been {verdict}", judged.decision_id);
            Ok(ExitCode::SUCCESS)
        }
        ShadowCommand::Report { json } => report(endpoints, json).await,
    }
}

/// What happened to a shadow decision's incident, from the agent (`unknown` when
/// the agent cannot say: it is down, or has let the incident go).
fn outcome(incidents: &[pb::Incident], incident_id: &str) -> String {
    incidents.iter().find(|i| i.id == incident_id).map_or_else(|| "unknown".to_owned(), |i| i.state.clone())
}

fn judgement(decision: &pb::Decision) -> String {
    match &decision.judgement {
        Some(j) if j.agrees => format!("agreed ({})", j.identity),
        Some(j) => format!("disagreed ({}): {}", j.identity, j.reason),
        None => "not judged".to_owned(),
    }
}

async fn report(endpoints: &Endpoints, as_json: bool) -> Result<ExitCode> {
    let mut governor = endpoints.governor().await?;
    let request = endpoints.authed(pb::ListDecisionsRequest { incident_id: String::new() })?;
    let mut shadow: Vec<pb::Decision> =
        governor.list_decisions(request).await.map_err(endpoints.governor_failed())?.into_inner().decisions.into_iter().filter(|d| d.mode == "shadow").collect();
    shadow.sort_by_key(|d| d.issued_at_ms);
    let records = governor.get_autonomy(endpoints.authed(pb::GetAutonomyRequest {})?).await.map_err(endpoints.governor_failed())?.into_inner().stats;
    // The incidents' states say what happened without ARF; the report stands without them.
    let incidents = match endpoints.agent().await {
        Ok(mut agent) => agent.list_incidents(pb::ListIncidentsRequest {}).await.map(|r| r.into_inner().incidents).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let judged = shadow.iter().filter(|d| d.judgement.is_some()).count();
    let agreed = shadow.iter().filter(|d| d.judgement.as_ref().is_some_and(|j| j.agrees)).count();
    let route = |d: &pb::Decision| pb::Route::try_from(d.route).map(|r| r.as_str_name().to_ascii_lowercase()).unwrap_or_default();
    let action = |d: &pb::Decision| d.remediation.as_ref().map(|r| (r.pathway.clone(), r.target.clone())).unwrap_or_default();
    if as_json {
        let decisions: Vec<_> = shadow
            .iter()
            .map(|d| {
                let (pathway, target) = action(d);
                json!({
                    "decision_id": d.decision_id, "incident_id": d.incident_id, "issued_at": arf_core::time::format_ms(d.issued_at_ms),
                    "service": d.service, "environment": d.environment, "pathway": pathway, "target": target,
                    "would_have_been": route(d), "incident_state": outcome(&incidents, &d.incident_id),
                    "judgement": d.judgement.as_ref().map(|j| json!({"identity": j.identity, "agrees": j.agrees, "reason": j.reason})),
                })
            })
            .collect();
        let records: Vec<_> = records
            .iter()
            .map(|s| {
                json!({
                    "environment": s.environment, "service": s.service, "pathway": s.pathway, "shadow_agreed": s.shadow_agreed, "shadow_disagreed": s.shadow_disagreed,
                    "verified": s.verified_in_window, "failed": s.failed_in_window, "earned": s.earned, "required_runs": s.required_runs, "graduated": s.graduated,
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&json!({"decisions": decisions, "judged": judged, "agreed": agreed, "records": records}))?);
        return Ok(ExitCode::SUCCESS);
    }
    if shadow.is_empty() {
        say!("no shadow decisions held by the governor");
    } else {
        let rows: Vec<Vec<String>> = shadow
            .iter()
            .map(|d| {
                let (pathway, target) = action(d);
                vec![
                    arf_core::time::format_ms_column(d.issued_at_ms),
                    d.decision_id.clone(),
                    d.incident_id.clone(),
                    format!("{pathway} on {target}"),
                    route(d),
                    outcome(&incidents, &d.incident_id),
                    judgement(d),
                ]
            })
            .collect();
        for line in table(&["DECIDED", "DECISION", "INCIDENT", "WOULD HAVE RUN", "ROUTE", "INCIDENT NOW", "JUDGEMENT"], &rows) {
            say!("{line}");
        }
        let rate = if judged == 0 { "no judgements yet".to_owned() } else { format!("{:.0}% agreement", 100.0 * agreed as f64 / judged as f64) };
        say!("{} shadow decision(s), {judged} judged, {agreed} agreed ({rate})", shadow.len());
    }
    let tracked: Vec<&pb::PathwayOutcomeStats> = records.iter().filter(|s| s.required_runs > 0).collect();
    if !tracked.is_empty() {
        say!("");
        let rows: Vec<Vec<String>> = tracked
            .iter()
            .map(|s| {
                vec![
                    s.environment.clone(),
                    s.service.clone(),
                    s.pathway.clone(),
                    format!("{} / {}", s.shadow_agreed, s.shadow_disagreed),
                    format!("{} / {}", s.verified_in_window, s.failed_in_window),
                    format!("{} of {}", s.earned, s.required_runs),
                    if s.graduated { "graduated".to_owned() } else { "not yet".to_owned() },
                ]
            })
            .collect();
        for line in table(&["ENVIRONMENT", "SERVICE", "PATHWAY", "AGREED / DISAGREED", "VERIFIED / FAILED", "IN A ROW", "AUTONOMY IN REVIEW"], &rows) {
            say!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
