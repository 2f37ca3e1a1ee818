//! Proto ↔ domain conversions for the agent.

use arf_core::diagnosis::{Hypothesis, Proposal, Remediation};
use arf_proto::v1 as pb;

use crate::incident::Incident;
use crate::ingest::generic::GenericSignal;
use crate::service::Accepted;

pub fn generic_signal(signal: pb::Signal) -> GenericSignal {
    GenericSignal {
        source: signal.source,
        kind: signal.kind,
        status: signal.status,
        title: signal.title,
        description: signal.description,
        severity: signal.severity,
        service: signal.service,
        environment: signal.environment,
        labels: signal.labels.into_iter().collect(),
        annotations: signal.annotations.into_iter().collect(),
        observed_at_ms: signal.observed_at_ms,
        fingerprint: signal.fingerprint,
    }
}

pub fn accepted(accepted: Accepted) -> pb::AcceptedSignal {
    pb::AcceptedSignal {
        signal_id: accepted.signal_id,
        fingerprint: accepted.fingerprint,
        incident_id: accepted.incident_id,
        duplicate: accepted.duplicate,
        audit_seq: accepted.audit_seq,
    }
}

pub fn incident(incident: &Incident) -> pb::Incident {
    pb::Incident {
        id: incident.id.clone(),
        title: incident.title.clone(),
        service: incident.service.clone(),
        environment: incident.environment.clone(),
        state: incident.state.as_str().to_owned(),
        signal_count: incident.signal_count,
        fingerprints: incident.signals.keys().cloned().collect(),
        opened_at_ms: incident.opened_at_ms,
        updated_at_ms: incident.updated_at_ms,
        snapshot_hash: incident.snapshot_hash.clone(),
        decision_ids: incident.decision_ids.clone(),
        reason: incident.reason.clone(),
        model_calls: incident.model_calls,
    }
}

fn remediation(remediation: &Remediation) -> pb::Remediation {
    pb::Remediation {
        pathway: remediation.pathway.clone(),
        target: remediation.target.clone(),
        parameters_json: arf_core::canonical::to_string(&remediation.parameters).unwrap_or_else(|_| "{}".to_owned()),
        rationale: remediation.rationale.clone(),
    }
}

fn hypothesis(hypothesis: &Hypothesis) -> pb::Hypothesis {
    pb::Hypothesis {
        id: hypothesis.id.clone(),
        root_cause: hypothesis.root_cause.clone(),
        evidence: hypothesis.evidence.clone(),
        confidence: hypothesis.confidence,
        uncertainty: hypothesis.uncertainty.clone(),
        remediations: hypothesis.remediations.iter().map(remediation).collect(),
        expected_impact: hypothesis.expected_impact.clone(),
    }
}

pub fn proposal_to_pb(proposal: &Proposal) -> pb::Proposal {
    pb::Proposal {
        id: proposal.id.clone(),
        incident_id: proposal.incident_id.clone(),
        snapshot_hash: proposal.snapshot_hash.clone(),
        hypothesis: Some(hypothesis(&proposal.hypothesis)),
        remediation: Some(remediation(&proposal.remediation)),
        service: proposal.service.clone(),
        environment: proposal.environment.clone(),
        reasoner: proposal.reasoner.clone(),
    }
}
