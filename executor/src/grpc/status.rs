//! Execution errors as gRPC statuses.

use tonic::Status;

use arf_audit_client::AuditError;
use arf_core::decision::EnvelopeError;

use crate::admission::AdmissionError;
use crate::engine::ExecuteError;
use crate::store::StoreError;

pub fn execute(error: ExecuteError) -> Status {
    let message = error.to_string();
    match error {
        ExecuteError::Envelope(envelope) => match envelope {
            EnvelopeError::UnknownKey(_) | EnvelopeError::BadSignature | EnvelopeError::Denied(_) => {
                Status::permission_denied(message)
            }
            EnvelopeError::Expired { .. } => Status::failed_precondition(message),
            EnvelopeError::Malformed(_) | EnvelopeError::Version(_) => Status::invalid_argument(message),
            _ => Status::invalid_argument(message),
        },
        ExecuteError::Admission(admission) => match admission {
            AdmissionError::NotLogged { .. }
            | AdmissionError::NotADecisionRecord { .. }
            | AdmissionError::NotTheGovernor { .. }
            | AdmissionError::RecordMismatch { .. }
            | AdmissionError::RecordMalformed { .. } => Status::permission_denied(message),
            AdmissionError::Parameters(_) => Status::invalid_argument(message),
            AdmissionError::UnknownPathway(_)
            | AdmissionError::PathwayChanged(_)
            | AdmissionError::UnknownTarget(_)
            | AdmissionError::TargetKind { .. }
            | AdmissionError::Plan(_) => Status::failed_precondition(message),
        },
        ExecuteError::ExpiredWhileQueued { .. } => Status::failed_precondition(message),
        ExecuteError::AuditUnavailable { .. }
        | ExecuteError::WriteAhead { .. }
        | ExecuteError::StartUnconfirmed { .. }
        | ExecuteError::RefusalNotLogged { .. }
        | ExecuteError::PrecheckUnanswered { .. } => Status::unavailable(message),
        ExecuteError::Interrupted { source: AuditError::Unavailable(_), .. } => Status::unavailable(message),
        ExecuteError::Interrupted { .. } | ExecuteError::Task(_) => Status::internal(message),
        // The executors' database down, or this replica's lease lapsed: another
        // replica (or this one, later) can take the decision.
        ExecuteError::Store(StoreError::Database(_) | StoreError::LeaseLost(_)) => Status::unavailable(message),
        ExecuteError::Store(StoreError::Fenced { .. }) => Status::aborted(message),
        ExecuteError::Store(_) => Status::internal(message),
        ExecuteError::ShuttingDown | ExecuteError::TargetUnsettled { .. } => Status::unavailable(message),
        // The governor pages someone on this one: the log was rewritten.
        ExecuteError::LogNotWitnessed { .. } => {
            let mut status = Status::failed_precondition(message);
            status.metadata_mut().insert(arf_proto::server::REFUSAL, tonic::metadata::MetadataValue::from_static(arf_proto::server::LOG_NOT_WITNESSED));
            status
        }
        ExecuteError::WrongWriter { .. }
        | ExecuteError::TargetNeedsHuman { .. }
        | ExecuteError::Malformed { .. }
        | ExecuteError::SameActionStarted { .. }
        | ExecuteError::Withdrawn { .. }
        | ExecuteError::Settled { .. } => {
            Status::failed_precondition(message)
        }
    }
}

pub fn store(error: StoreError) -> Status {
    match error {
        StoreError::Database(_) | StoreError::LeaseLost(_) => Status::unavailable(error.to_string()),
        other => Status::internal(other.to_string()),
    }
}
