//! Governance commands: `arf policy test|reload|schema`, `arf autonomy on|off|status|reset`
//! and `arf keys generate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;

use arf_governor::policy_test;
use arf_proto::v1 as pb;

use crate::client::Endpoints;
use crate::exit;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Runs a bundle's test cases (`DIR/tests/*.cases.json`), like `opa test`; exits 1 on any failure.
    Test {
        /// The bundle's directory (its `*.rego` and `tests/`).
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Asks the running governor to load its bundle again (admin); a bundle that does not load is refused.
    Reload,
    /// Prints the JSON Schema of the input document policies read.
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum AutonomyCommand {
    /// Switches autonomy on everywhere (admin).
    On {
        /// Why, for the log (required).
        #[arg(long)]
        reason: String,
    },
    /// The kill switch: nothing runs without a person until an admin switches autonomy on again (any on-call identity may pull it).
    Off {
        /// Why, for the log and whoever is paged (required).
        #[arg(long)]
        reason: String,
    },
    /// The kill switch, tripped guard rails, active freezes and outcome statistics.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Switches autonomy back on after a guard rail tripped (admin): `--service` alone
    /// lifts everything on the service (rate limit, quarantine after a failed
    /// rollback, error budgets); with `--pathway` only that pathway's error budget.
    Reset {
        /// The service whose guard rails to reset.
        #[arg(long)]
        service: String,
        /// Only this pathway's error budget on the service.
        #[arg(long)]
        pathway: Option<String>,
        /// Why, for the log.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generates an ed25519 signing key (mode 0600) with its `.pub` beside it, for a key rotation.
    Generate {
        /// Where to write the new key (a file that does not exist yet).
        path: PathBuf,
    },
}

pub fn keys(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Generate { path } => {
            if path.exists() {
                anyhow::bail!("`{}` exists already; a rotation needs a new file", path.display());
            }
            let key = arf_core::keys::load_or_generate(&path)
                .with_context(|| format!("cannot generate a key at `{}`", path.display()))?;
            say!("key id: {}", arf_core::decision::key_id(&key.verifying_key()));
            say!("secret: {} (mode 0600; give it to the governor as `signing_key_file`)", path.display());
            say!(
                "public: {} (add it to the executor's `trusted_keys` first)",
                arf_core::keys::public_path(&path).display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn policy(endpoints: &Endpoints, command: PolicyCommand) -> Result<ExitCode> {
    match command {
        PolicyCommand::Test { dir, json } => test(&dir, json),
        PolicyCommand::Reload => {
            let request = endpoints.authed(pb::ReloadPoliciesRequest {})?;
            let response = endpoints.governor().await?.reload_policies(request).await.map_err(endpoints.governor_failed())?.into_inner();
            say!("policies reloaded; serving {} file(s):", response.files.len());
            for file in response.files {
                say!("  {file}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Schema => {
            say!("{}", serde_json::to_string_pretty(&arf_governor::policy::input_schema())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn test(dir: &Path, as_json: bool) -> Result<ExitCode> {
    let report = policy_test::run_dir(dir).with_context(|| format!("cannot test the policies in `{}`", dir.display()))?;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for result in &report.results {
            match &result.failure {
                None => say!("PASS  {} / {}", result.file, result.name),
                Some(failure) => say!("FAIL  {} / {}\n      {failure}", result.file, result.name),
            }
        }
        say!("{} passed, {} failed, {} cases", report.passed(), report.failed(), report.results.len());
    }
    Ok(if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::from(exit::FAILURE) })
}

pub async fn autonomy(endpoints: &Endpoints, command: AutonomyCommand) -> Result<ExitCode> {
    let mut governor = endpoints.governor().await?;
    let (state, as_json) = match command {
        AutonomyCommand::On { reason } => {
            let request = endpoints.authed(pb::SetAutonomyRequest { enabled: true, reason })?;
            (governor.set_autonomy(request).await.map_err(endpoints.governor_failed())?.into_inner(), false)
        }
        AutonomyCommand::Off { reason } => {
            let request = endpoints.authed(pb::SetAutonomyRequest { enabled: false, reason })?;
            (governor.set_autonomy(request).await.map_err(endpoints.governor_failed())?.into_inner(), false)
        }
        AutonomyCommand::Status { json } => {
            let request = endpoints.authed(pb::GetAutonomyRequest {})?;
            (governor.get_autonomy(request).await.map_err(endpoints.governor_failed())?.into_inner(), json)
        }
        AutonomyCommand::Reset { service, pathway, reason } => {
            let request = endpoints.authed(pb::ResetAutonomyRequest {
                service,
                pathway: pathway.unwrap_or_default(),
                reason,
            })?;
            (governor.reset_autonomy(request).await.map_err(endpoints.governor_failed())?.into_inner(), false)
        }
    };
    if as_json {
        say!("{}", serde_json::to_string_pretty(&status_json(&state))?);
    } else {
        print_status(&state);
    }
    Ok(ExitCode::SUCCESS)
}

fn trip_json(trip: &pb::GuardTrip) -> serde_json::Value {
    json!({
        "kind": trip.kind,
        "service": trip.service,
        "pathway": trip.pathway,
        "since": arf_core::time::format_ms(trip.since_ms),
        "reason": trip.reason,
    })
}

fn status_json(state: &pb::AutonomyStatus) -> serde_json::Value {
    json!({
        "enabled": state.enabled,
        "changed_by": state.changed_by,
        "changed_at_ms": state.changed_at_ms,
        "reason": state.reason,
        "trips": state.trips.iter().map(trip_json).collect::<Vec<_>>(),
        "cleared": state.cleared.iter().map(trip_json).collect::<Vec<_>>(),
        "active_freezes": state.active_freezes,
        "stats": state.stats.iter().map(|s| json!({
            "service": s.service, "pathway": s.pathway, "runs": s.runs,
            "verified": s.verified, "rolled_back": s.rolled_back, "failed": s.failed,
            "track_record": {"shadow_agreed": s.shadow_agreed, "shadow_disagreed": s.shadow_disagreed, "earned": s.earned, "required_runs": s.required_runs, "graduated": s.graduated},
        })).collect::<Vec<_>>(),
    })
}

fn print_status(state: &pb::AutonomyStatus) {
    let switch = if state.enabled { "on" } else { "OFF" };
    if state.changed_by.is_empty() {
        say!("global autonomy: {switch}");
    } else {
        say!(
            "global autonomy: {switch} (by {} at {}: {})",
            state.changed_by,
            arf_core::time::format_ms(state.changed_at_ms),
            state.reason
        );
    }
    for trip in &state.cleared {
        say!("reset: {} on {}{}", trip.kind, trip.service, scope(&trip.pathway));
    }
    if state.trips.is_empty() {
        say!("tripped guard rails: none");
    } else {
        say!("tripped guard rails (autonomy off until an admin resets them):");
        for trip in &state.trips {
            say!("  {} on {}{}: {}", trip.kind, trip.service, scope(&trip.pathway), trip.reason);
        }
    }
    if state.active_freezes.is_empty() {
        say!("change freezes active: none");
    } else {
        say!("change freezes active: {}", state.active_freezes.join(", "));
    }
    for s in &state.stats {
        let graduation = if s.graduated { "graduated".to_owned() } else { format!("{} of {} in a row toward graduation", s.earned, s.required_runs) };
        say!(
            "  {} on {}: {} runs, {} verified, {} rolled back, {} failed; shadow judgements {} agreed, {} disagreed; {graduation}",
            s.pathway, s.service, s.runs, s.verified, s.rolled_back, s.failed, s.shadow_agreed, s.shadow_disagreed
        );
    }
}

fn scope(pathway: &str) -> String {
    if pathway.is_empty() { String::new() } else { format!(" / {pathway}") }
}
