//! Proto ↔ domain conversions for the executor service.

use arf_proto::v1 as pb;

use arf_core::decision::SignedDecision;

use crate::execution::{ExecutionState, ProbeResult};

pub fn signed_decision(signed: pb::SignedDecision) -> SignedDecision {
    SignedDecision {
        body: signed.body,
        signature: signed.signature,
        key_id: signed.key_id,
        audit_seq: signed.audit_seq,
    }
}

pub fn execution(state: &ExecutionState, replayed: bool) -> pb::Execution {
    pb::Execution {
        decision_id: state.decision_id.clone(),
        pathway: state.pathway.clone(),
        target: state.target.clone(),
        outcome: state.outcome.as_str().to_owned(),
        detail: state.detail.clone(),
        verification: state.verification.iter().map(probe_result).collect(),
        replayed,
    }
}

fn probe_result(result: &ProbeResult) -> pb::ProbeResult {
    pb::ProbeResult {
        probe: result.probe.clone(),
        passed: result.passed,
        detail: result.detail.clone(),
        latency_ms: result.latency_ms,
    }
}
