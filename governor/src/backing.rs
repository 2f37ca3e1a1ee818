//! Backing: the governor decides only on a proposal the log already holds.
//!
//! The caller of `Evaluate` says which incident, snapshot and hypothesis it acts
//! for, but a caller is only a token. Before deciding, the governor reads the
//! incident's records and trusts only those the agent's writer identity appended:
//! the signals (which say what the incident is about: its services, environments
//! and kinds of signal), the snapshot whose hash the proposal names, and the
//! diagnosis that holds exactly this proposal. A proposal without that backing, or
//! that differs from what was logged, is refused (pure: the caller reads the log).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use arf_audit_client::{Record, RecordKind};
use arf_core::diagnosis::Proposal;
use arf_core::records::{self, DiagnosisRecord, SignalRecord, SnapshotRecord};

/// What the log says an incident is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentScope {
    pub incident_id: String,
    pub services: BTreeSet<String>,
    pub environments: BTreeSet<String>,
    pub signal_kinds: BTreeSet<String>,
    pub signals: u64,
    /// The model of the logged diagnosis that holds the proposal.
    #[serde(default)]
    pub model: String,
    /// Which attempt at the incident this proposal is: 1 plus the actions of it the
    /// governor has authorized before (from the governor's own records).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

impl IncidentScope {
    /// An incident of one alert from `service` in `environment` (for tests and tools).
    pub fn single(incident_id: &str, service: &str, environment: &str) -> Self {
        Self {
            incident_id: incident_id.to_owned(),
            services: BTreeSet::from([service.to_owned()]),
            environments: BTreeSet::from([environment.to_owned()]),
            signal_kinds: BTreeSet::from(["alert".to_owned()]),
            signals: 1,
            model: String::new(),
            attempt: 1,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unbacked {
    #[error("the audit log holds no signal of incident `{0}` written by the agent")]
    NoSignals(String),
    #[error("the audit log holds no snapshot `{hash}` of incident `{incident}` written by the agent")]
    NoSnapshot { incident: String, hash: String },
    #[error("the audit log holds no diagnosis of incident `{incident}` with proposal `{proposal}` written by the agent")]
    NoDiagnosis { incident: String, proposal: String },
    #[error("the agent's records of the incident are not what the agent writes, so they back nothing: {0}")]
    Malformed(String),
    #[error("proposal `{proposal}` differs from the one the agent logged in its diagnosis (`{field}`)")]
    Differs { proposal: String, field: &'static str },
}

/// Checks that `records` (an incident's trail, as read from the log) back
/// `proposal`, trusting only records of `agent_writer`, and returns the scope
/// the signals give the incident.
pub fn backing(records: &[Record], proposal: &Proposal, agent_writer: &str) -> Result<IncidentScope, Unbacked> {
    let incident = &proposal.incident_id;
    let trusted = || records.iter().filter(|r| r.writer == agent_writer && r.incident_id == *incident);
    let mut scope = IncidentScope {
        incident_id: incident.clone(),
        services: BTreeSet::new(),
        environments: BTreeSet::new(),
        signal_kinds: BTreeSet::new(),
        signals: 0,
        model: String::new(),
        attempt: 1,
    };
    let malformed = |error: records::Malformed| Unbacked::Malformed(error.to_string());
    for record in trusted().filter(|r| r.kind == RecordKind::Signal) {
        let SignalRecord { signal, .. } = record.parse().map_err(malformed)?;
        let add = |set: &mut BTreeSet<String>, value: &str| {
            if !value.is_empty() {
                set.insert(value.to_owned());
            }
        };
        add(&mut scope.services, &signal.service);
        add(&mut scope.environments, &signal.environment);
        add(&mut scope.signal_kinds, signal.kind.as_str());
        scope.signals += 1;
    }
    if scope.signals == 0 || scope.services.is_empty() {
        return Err(Unbacked::NoSignals(incident.clone()));
    }
    let mut snapshot_logged = false;
    for record in trusted().filter(|r| r.kind == RecordKind::Snapshot) {
        let snapshot: SnapshotRecord = record.parse().map_err(malformed)?;
        snapshot_logged |= snapshot.hash == proposal.snapshot_hash;
    }
    if !snapshot_logged {
        return Err(Unbacked::NoSnapshot { incident: incident.clone(), hash: proposal.snapshot_hash.clone() });
    }
    let mut diagnosis = None;
    for record in trusted().filter(|r| r.kind == RecordKind::Diagnosis) {
        let parsed: DiagnosisRecord = record.parse().map_err(malformed)?;
        if parsed.proposal.as_ref().is_some_and(|p| p.id == proposal.id) {
            diagnosis = Some(parsed);
        }
    }
    let diagnosis = diagnosis.ok_or_else(|| Unbacked::NoDiagnosis { incident: incident.clone(), proposal: proposal.id.clone() })?;
    // The reasoner and model that answered, for calibrating what it states.
    let model = diagnosis.model.unwrap_or_default();
    scope.model = format!("{}:{}", proposal.reasoner, model.trim_start_matches(&format!("{}:", proposal.reasoner)));
    let Some(logged) = diagnosis.proposal else { return Err(Unbacked::NoDiagnosis { incident: incident.clone(), proposal: proposal.id.clone() }) };
    let differs = |field| Err(Unbacked::Differs { proposal: proposal.id.clone(), field });
    if logged.snapshot_hash != proposal.snapshot_hash {
        return differs("snapshot_hash");
    }
    if logged.remediation != proposal.remediation {
        return differs("remediation");
    }
    if logged.hypothesis != proposal.hypothesis {
        return differs("hypothesis");
    }
    if logged != *proposal {
        return differs("service, environment or reasoner");
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use arf_audit_client::Entry;
    use arf_audit_client::record::GENESIS_HASH;
    use arf_core::diagnosis::{Hypothesis, Remediation};
    use serde_json::json;

    fn proposal() -> Proposal {
        let remediation = Remediation {
            pathway: "restart_service".into(),
            target: "web-staging".into(),
            parameters: json!({"reason": "pool"}),
            rationale: "stuck".into(),
        };
        Proposal {
            id: "prop-1".into(),
            incident_id: "inc-1".into(),
            snapshot_hash: "snap".into(),
            hypothesis: Hypothesis {
                id: "h1".into(),
                root_cause: "pool exhausted".into(),
                evidence: vec!["sig-1".into()],
                confidence: 0.9,
                uncertainty: String::new(),
                expected_impact: String::new(),
                remediations: vec![remediation.clone()],
            },
            remediation,
            service: "web".into(),
            environment: "staging".into(),
            reasoner: "scripted".into(),
        }
    }

    fn signal() -> arf_core::signal::Signal {
        arf_core::signal::Signal {
            id: "sig-1".into(),
            source: "alertmanager".into(),
            kind: arf_core::signal::SignalKind::Alert,
            status: arf_core::signal::SignalStatus::Firing,
            title: "5xx".into(),
            description: String::new(),
            severity: "critical".into(),
            service: "web".into(),
            environment: "staging".into(),
            labels: std::collections::BTreeMap::new(),
            annotations: std::collections::BTreeMap::new(),
            observed_at_ms: 0,
            fingerprint: "fp".into(),
        }
    }

    fn diagnosis() -> DiagnosisRecord {
        DiagnosisRecord {
            status: records::DiagnosisStatus::Grounded,
            model: Some("scripted".into()),
            hypotheses: vec![proposal().hypothesis],
            proposal: Some(proposal()),
            ..DiagnosisRecord::attempt("diagnosis@v2", "ph", "snap", "scripted")
        }
    }

    fn seal(writer: &str, entries: Vec<(RecordKind, serde_json::Value)>) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        for (kind, payload) in entries {
            let (seq, hash) = out.last().map_or((0, GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
            out.push(Record::seal(seq, &hash, 0, writer, Entry::new("inc-1", kind, payload)));
        }
        out
    }

    fn entries() -> Vec<(RecordKind, serde_json::Value)> {
        let snapshot = arf_core::diagnosis::Snapshot {
            incident_id: "inc-1".into(),
            service: "web".into(),
            environment: "staging".into(),
            items: Vec::new(),
            dropped: Vec::new(),
        };
        vec![
            (RecordKind::Signal, records::encode(&SignalRecord { signal: signal(), duplicate: false, sender: None })),
            (RecordKind::Snapshot, records::encode(&SnapshotRecord { hash: "snap".into(), snapshot, extends: None })),
            (RecordKind::Diagnosis, records::encode(&diagnosis())),
        ]
    }

    fn trail(writer: &str) -> Vec<Record> {
        seal(writer, entries())
    }

    #[test]
    fn an_agent_record_not_in_the_agents_format_backs_nothing() {
        for index in 0..3 {
            let mut entries = entries();
            entries[index].1["smuggled"] = json!("scope: payments");
            let refused = backing(&seal("agent", entries), &proposal(), "agent");
            assert!(matches!(&refused, Err(Unbacked::Malformed(reason)) if reason.contains("smuggled")), "{refused:?}");
        }
    }

    #[test]
    fn a_logged_proposal_is_backed_and_its_scope_comes_from_the_signals() {
        let scope = backing(&trail("agent"), &proposal(), "agent").unwrap();
        assert_eq!(scope.services, BTreeSet::from(["web".to_owned()]));
        assert_eq!(scope.environments, BTreeSet::from(["staging".to_owned()]));
        assert_eq!(scope.signal_kinds, BTreeSet::from(["alert".to_owned()]));
    }

    #[test]
    fn anything_the_log_does_not_hold_as_the_agent_wrote_it_is_refused() {
        assert_eq!(backing(&[], &proposal(), "agent"), Err(Unbacked::NoSignals("inc-1".into())));
        assert!(matches!(backing(&trail("governor"), &proposal(), "agent"), Err(Unbacked::NoSignals(_))), "another writer's records back nothing");
        let mut other_snapshot = proposal();
        other_snapshot.snapshot_hash = "forged".into();
        assert!(matches!(backing(&trail("agent"), &other_snapshot, "agent"), Err(Unbacked::NoSnapshot { .. })));
        let mut other_id = proposal();
        other_id.id = "prop-2".into();
        assert!(matches!(backing(&trail("agent"), &other_id, "agent"), Err(Unbacked::NoDiagnosis { .. })));
        let mut retargeted = proposal();
        retargeted.remediation.target = "payments-staging".into();
        assert_eq!(backing(&trail("agent"), &retargeted, "agent"), Err(Unbacked::Differs { proposal: "prop-1".into(), field: "remediation" }));
        let mut confident = proposal();
        confident.hypothesis.confidence = 1.0;
        assert_eq!(backing(&trail("agent"), &confident, "agent"), Err(Unbacked::Differs { proposal: "prop-1".into(), field: "hypothesis" }));
    }
}
