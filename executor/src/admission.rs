//! The checks a verified decision must pass before anything is claimed or run:
//! it is logged by the governor exactly as signed, and its pathway and target are
//! the ones this executor knows. Pure: the audit record is fetched by the caller.

use thiserror::Error;

use arf_audit_client::{Record, RecordKind};
use arf_core::catalog::{Catalog, ParameterError, Pathway};
use arf_core::decision::DecisionBody;
use arf_core::records::AuthorizedRecord;
use arf_core::target::{Inventory, Target};

use crate::plan::{self, Plan, PlanError};
use crate::secrets::SecretSource;

/// The audit writer identity whose `decision` records the executor accepts.
pub const GOVERNOR_WRITER: &str = "governor";

#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum AdmissionError {
    #[error("decision `{decision_id}` is not in the audit log: there is no record `{seq}`")]
    NotLogged { decision_id: String, seq: u64 },
    #[error("decision `{decision_id}` is not in the audit log: record `{seq}` is of kind `{kind}`, not `decision`")]
    NotADecisionRecord { decision_id: String, seq: u64, kind: String },
    #[error(
        "decision `{decision_id}` is not in the audit log: record `{seq}` was written by `{writer}`, not by the governor"
    )]
    NotTheGovernor { decision_id: String, seq: u64, writer: String },
    #[error("decision `{decision_id}` does not match audit record `{seq}`: `{field}` differs")]
    RecordMismatch { decision_id: String, seq: u64, field: &'static str },
    #[error("decision `{decision_id}`: audit record `{seq}` is not an authorization as the governor writes it: {reason}")]
    RecordMalformed { decision_id: String, seq: u64, reason: String },
    #[error("pathway `{0}` is not in this executor's catalog")]
    UnknownPathway(String),
    #[error("pathway `{0}` changed since the governor judged it: its digest differs from the signed `pathway_digest`")]
    PathwayChanged(String),
    #[error(transparent)]
    Parameters(ParameterError),
    #[error("target `{0}` is not in this executor's inventory")]
    UnknownTarget(String),
    #[error("target `{target}` is a `{kind}`, but pathway `{pathway}` acts on a `{expected}`")]
    TargetKind { target: String, kind: String, pathway: String, expected: String },
    #[error(transparent)]
    Plan(PlanError),
}

/// Checks that `record` (the one at `seq`) is the governor's log of exactly this envelope.
pub fn check_record(
    record: Option<&Record>,
    seq: u64,
    body: &DecisionBody,
    envelope_sha256: &str,
) -> Result<(), AdmissionError> {
    let decision_id = || body.decision_id.clone();
    let record = record.ok_or_else(|| AdmissionError::NotLogged { decision_id: decision_id(), seq })?;
    if record.kind != RecordKind::Decision {
        return Err(AdmissionError::NotADecisionRecord {
            decision_id: decision_id(),
            seq,
            kind: record.kind.as_str().to_owned(),
        });
    }
    if record.writer != GOVERNOR_WRITER {
        return Err(AdmissionError::NotTheGovernor { decision_id: decision_id(), seq, writer: record.writer.clone() });
    }
    let logged: AuthorizedRecord =
        record.parse().map_err(|source| AdmissionError::RecordMalformed { decision_id: decision_id(), seq, reason: source.to_string() })?;
    if logged.decision_id != body.decision_id {
        return Err(AdmissionError::RecordMismatch { decision_id: decision_id(), seq, field: "decision_id" });
    }
    if logged.envelope_sha256 != envelope_sha256 {
        return Err(AdmissionError::RecordMismatch { decision_id: decision_id(), seq, field: "envelope_sha256" });
    }
    // The hash covers the body; comparing it too names what differs if a governor
    // ever logged one body and signed another.
    if logged.body != *body {
        return Err(AdmissionError::RecordMismatch { decision_id: decision_id(), seq, field: "body" });
    }
    Ok(())
}

/// What an admitted decision will run.
#[derive(Debug, Clone)]
pub struct Admitted<'a> {
    pub pathway: &'a Pathway,
    pub target: &'a Target,
    pub plan: Plan,
}

/// Checks the pathway, its digest, the parameters and the target, and renders the plan.
pub fn admit<'a>(
    catalog: &'a Catalog,
    inventory: &'a Inventory,
    secrets: &SecretSource,
    body: &DecisionBody,
) -> Result<Admitted<'a>, AdmissionError> {
    let pathway = catalog.get(&body.pathway).ok_or_else(|| AdmissionError::UnknownPathway(body.pathway.clone()))?;
    if catalog.digest(&body.pathway) != Some(body.pathway_digest.as_str()) {
        return Err(AdmissionError::PathwayChanged(body.pathway.clone()));
    }
    // The governor validated these too; checking again costs little and means a
    // governor bug cannot smuggle an argument past the schema.
    catalog.validate_parameters(&body.pathway, &body.parameters).map_err(AdmissionError::Parameters)?;
    let target = inventory.get(&body.target).ok_or_else(|| AdmissionError::UnknownTarget(body.target.clone()))?;
    if target.kind != pathway.target_kind {
        return Err(AdmissionError::TargetKind {
            target: body.target.clone(),
            kind: target.kind.clone(),
            pathway: pathway.name.clone(),
            expected: pathway.target_kind.clone(),
        });
    }
    let secret_values = secrets.resolve(&pathway.secrets).map_err(|message| {
        AdmissionError::Plan(PlanError::Invalid { pathway: pathway.name.clone(), field: "secrets".to_owned(), message })
    })?;
    let plan = plan::plan(pathway, &body.target, target, body, &secret_values).map_err(AdmissionError::Plan)?;
    Ok(Admitted { pathway, target, plan })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;
    use std::path::PathBuf;

    const PATHWAY: &str = r#"
name = "restart"
description = "Restart."
target_kind = "service"
base_risk = 0.1
blast_radius = 0.1
parameters = { type = "object", additionalProperties = false, properties = { reason = { type = "string" } } }
action = [{ kind = "command", argv = ["systemctl", "restart", "{{target.unit}}"] }]
rollback = [{ kind = "command", argv = ["systemctl", "start", "{{target.unit}}"] }]
[verify]
window_ms = 10
probes = [{ kind = "command", name = "active", argv = ["systemctl", "is-active", "{{target.unit}}"] }]
"#;

    fn catalog() -> Catalog {
        Catalog::from_sources(vec![(PathBuf::from("restart.toml"), PATHWAY.to_owned())]).unwrap()
    }

    fn inventory() -> Inventory {
        let target = |kind: &str, facts: &[(&str, &str)]| Target {
            kind: kind.into(),
            service: "web".into(),
            environment: "prod".into(),
            tier: "standard".into(),
            security_sensitive: false,
            facts: facts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            depends_on: Vec::new(),
        };
        [
            ("web".to_owned(), target("service", &[("unit", "web.service")])),
            ("db".to_owned(), target("database", &[("unit", "db.service")])),
            ("bare".to_owned(), target("service", &[])),
        ]
        .into()
    }

    fn body() -> DecisionBody {
        DecisionBody {
            version: 1,
            decision_id: "dec-1".into(),
            incident_id: "inc-1".into(),
            proposal_id: "prop-1".into(),
            snapshot_hash: "s".into(),
            pathway: "restart".into(),
            pathway_digest: catalog().digest("restart").unwrap().to_owned(),
            target: "web".into(),
            parameters: json!({"reason": "oom"}),
            route: arf_core::decision::Route::Autonomous,
            approvals: vec![],
            risk_score: 0.1,
            issued_at_ms: 0,
            expires_at_ms: 1,
        }
    }

    fn record(kind: RecordKind, writer: &str, payload: Value) -> Record {
        Record::seal(6, arf_audit_client::record::GENESIS_HASH, 0, writer, arf_audit_client::Entry::new("inc-1", kind, payload))
    }

    #[test]
    fn records() {
        let authorized = |decision_id: &str, sha: &str| {
            let mut body = body();
            decision_id.clone_into(&mut body.decision_id);
            arf_core::records::encode(&AuthorizedRecord {
                decision_id: decision_id.to_owned(),
                state: "authorized".into(),
                envelope_sha256: sha.to_owned(),
                body,
                route: "autonomous".into(),
                approvals: Vec::new(),
            })
        };
        let good = authorized("dec-1", "abc");
        let mut other_body = good.clone();
        other_body["body"]["target"] = json!("db");
        let mut smuggled = good.clone();
        smuggled["extra_targets"] = json!(["db"]);
        // (record, expected error fragment; None means admitted)
        let cases = [
            (Some(record(RecordKind::Decision, "governor", good.clone())), None),
            (None, Some("there is no record `7`")),
            (Some(record(RecordKind::Approval, "governor", good.clone())), Some("record `7` is of kind `approval`")),
            (Some(record(RecordKind::Decision, "agent", good.clone())), Some("written by `agent`")),
            (Some(record(RecordKind::Decision, "governor", authorized("dec-2", "abc"))), Some("`decision_id` differs")),
            (Some(record(RecordKind::Decision, "governor", authorized("dec-1", "abd"))), Some("`envelope_sha256` differs")),
            (Some(record(RecordKind::Decision, "governor", other_body)), Some("`body` differs")),
            (Some(record(RecordKind::Decision, "governor", json!({"decision_id": "dec-1"}))), Some("not an authorization as the governor writes it")),
            (Some(record(RecordKind::Decision, "governor", smuggled)), Some("extra_targets")),
        ];
        for (record, expected) in cases {
            let result = check_record(record.as_ref(), 7, &body(), "abc");
            match expected {
                None => assert_eq!(result, Ok(())),
                Some(fragment) => {
                    let err = result.unwrap_err().to_string();
                    assert!(err.contains(fragment) && err.contains("`dec-1`"), "{err}");
                }
            }
        }
    }

    #[test]
    fn pathways_and_targets() {
        let catalog = catalog();
        let inventory = inventory();
        // (change to the body, expected error fragment; None means admitted)
        type Change = Box<dyn Fn(&mut DecisionBody)>;
        let cases: Vec<(Change, Option<&str>)> = vec![
            (Box::new(|_| {}), None),
            (Box::new(|b| b.pathway = "reboot".into()), Some("pathway `reboot` is not in this executor's catalog")),
            (
                Box::new(|b| b.pathway_digest = "0".repeat(64)),
                Some("pathway `restart` changed since the governor judged it"),
            ),
            (Box::new(|b| b.parameters = json!({"cmd": "rm -rf /"})), Some("do not match its schema")),
            (Box::new(|b| b.target = "cache".into()), Some("target `cache` is not in this executor's inventory")),
            (
                Box::new(|b| b.target = "db".into()),
                Some("target `db` is a `database`, but pathway `restart` acts on a `service`"),
            ),
            (Box::new(|b| b.target = "bare".into()), Some("target.unit")),
        ];
        for (change, expected) in cases {
            let mut body = body();
            change(&mut body);
            match (admit(&catalog, &inventory, &SecretSource::default(), &body), expected) {
                (Ok(admitted), None) => assert_eq!(admitted.plan.action.len(), 1),
                (Err(err), Some(fragment)) => assert!(err.to_string().contains(fragment), "{err}"),
                (other, expected) => panic!("expected {expected:?}, got {other:?}"),
            }
        }
    }
}
