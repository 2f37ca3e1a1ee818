//! ARF's evaluation harness: the incident corpus, the simulated world the eval
//! pathways act on, scoring from the audit log, metrics and reports.
//!
//! The process orchestration (starting the real agent, governor and executor,
//! sending signals, approving as a simulated human) lives in the `arf` CLI
//! (`cli/src/eval.rs`); everything here is pure or loopback-only.

pub mod cassette;
pub mod corpus;
#[cfg(test)]
mod fixtures;
pub mod invariants;
pub mod metrics;
pub mod model;
pub mod report;
pub mod score;
pub mod world;

/// The eval pathway catalog, `(file name, contents)`, embedded so `arf eval run` works from any directory.
pub const PATHWAYS: &[(&str, &str)] = &[
    ("block_public_bucket.toml", include_str!("../pathways/block_public_bucket.toml")),
    ("failover_upstream.toml", include_str!("../pathways/failover_upstream.toml")),
    ("free_disk_space.toml", include_str!("../pathways/free_disk_space.toml")),
    ("isolate_workload.toml", include_str!("../pathways/isolate_workload.toml")),
    ("pin_dependency.toml", include_str!("../pathways/pin_dependency.toml")),
    ("reconcile_drift.toml", include_str!("../pathways/reconcile_drift.toml")),
    ("renew_certificate.toml", include_str!("../pathways/renew_certificate.toml")),
    ("restart_service.toml", include_str!("../pathways/restart_service.toml")),
    ("restrict_iam_policy.toml", include_str!("../pathways/restrict_iam_policy.toml")),
    ("revert_config_commit.toml", include_str!("../pathways/revert_config_commit.toml")),
    ("rollback_deployment.toml", include_str!("../pathways/rollback_deployment.toml")),
    ("rotate_credential.toml", include_str!("../pathways/rotate_credential.toml")),
];

/// The runbook baseline for the `rules` reasoner.
pub const RUNBOOKS: &[(&str, &str)] = &[("baseline.toml", include_str!("../runbooks/baseline.toml"))];

/// The investigation tools over the world's read-only views.
pub const TOOLS: &[(&str, &str)] = &[("world.toml", include_str!("../tools/world.toml"))];
