//! `arf pathways list` and `arf pathways show NAME`: the catalog the executor runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use arf_core::catalog::{Catalog, Pathway};

#[derive(Debug, Subcommand)]
pub enum PathwaysCommand {
    /// Every pathway, one line each.
    List {
        /// The catalog directory (default: the local deployment's, else `examples/pathways`).
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The JSON Schema of a pathway file.
    Schema,
    /// One pathway in full.
    Show {
        /// The pathway's name (`arf pathways list` shows them).
        name: String,
        /// The catalog directory (default: the local deployment's, else `examples/pathways`).
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The catalog: the one given, else the deployment's executor's, else the bundled examples.
fn catalog_dir(given: Option<PathBuf>, deployed: Option<PathBuf>) -> PathBuf {
    given.or(deployed).unwrap_or_else(|| PathBuf::from("examples/pathways"))
}

fn load(given: Option<PathBuf>, deployed: Option<PathBuf>) -> Result<Catalog> {
    let dir = catalog_dir(given, deployed);
    Catalog::load_dir(&dir).with_context(|| format!("cannot load the catalog in `{}`", dir.display()))
}

fn summary(p: &Pathway, digest: &str) -> serde_json::Value {
    serde_json::json!({
        "name": p.name, "description": p.description, "target_kind": p.target_kind,
        "base_risk": p.base_risk, "blast_radius": p.blast_radius, "reversible": p.reversible(),
        "security_sensitive": p.security_sensitive, "digest": digest,
    })
}

pub fn run(command: PathwaysCommand, deployed: Option<PathBuf>) -> Result<ExitCode> {
    match command {
        PathwaysCommand::List { catalog, json } => {
            let catalog = load(catalog, deployed)?;
            if json {
                let all: Vec<_> = catalog.pathways().map(|p| summary(p, catalog.digest(&p.name).unwrap_or_default())).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<24} {:<10} {:>5} {:>6} {:<12} DESCRIPTION", "NAME", "TARGET", "RISK", "BLAST", "REVERSIBLE");
            for p in catalog.pathways() {
                let mut description: String = p.description.chars().take(70).collect();
                if p.description.chars().count() > 70 {
                    description.push('…');
                }
                let reversible = if p.reversible() { "yes" } else { "IRREVERSIBLE" };
                println!("{:<24} {:<10} {:>5.2} {:>6.2} {:<12} {description}", p.name, p.target_kind, p.base_risk, p.blast_radius, reversible);
            }
            Ok(ExitCode::SUCCESS)
        }
        PathwaysCommand::Schema => {
            println!("{}", serde_json::to_string_pretty(&arf_core::catalog::pathway_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        PathwaysCommand::Show { name, catalog, json } => {
            let catalog = load(catalog, deployed)?;
            let Some(pathway) = catalog.get(&name) else {
                eprintln!("error: unknown pathway `{name}`; `arf pathways list` shows the catalog");
                return Ok(ExitCode::from(crate::exit::FAILURE));
            };
            let digest = catalog.digest(&name).unwrap_or_default();
            if json {
                let mut value = serde_json::to_value(pathway)?;
                value["digest"] = serde_json::Value::String(digest.to_owned());
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("# {} (digest {digest})", pathway.name);
                println!("{}", toml::to_string_pretty(pathway).context("cannot print the pathway")?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
