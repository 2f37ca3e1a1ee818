//! Errors to gRPC statuses.

use tonic::Status;

use crate::decide::InvalidProposal;
use crate::decision::OversightError;

pub fn invalid_proposal(error: InvalidProposal) -> Status {
    Status::invalid_argument(error.to_string())
}

pub fn oversight(error: OversightError) -> Status {
    let message = error.to_string();
    match error {
        OversightError::MissingReason => Status::invalid_argument(message),
        OversightError::NotHuman { .. }
        | OversightError::SelfApproval { .. }
        | OversightError::RoleNotAllowed { .. } => Status::permission_denied(message),
        OversightError::NotPending { .. } | OversightError::Expired { .. } | OversightError::AlreadyApproved { .. } | OversightError::Shadow { .. } => {
            Status::failed_precondition(message)
        }
    }
}

/// The log could not be written, so nothing was done: fail closed.
pub fn audit_unavailable(error: &arf_audit_client::AuditError, consequence: &str) -> Status {
    Status::unavailable(format!("cannot write ahead to the audit log, so {consequence}: {error}"))
}

/// The log could not be read, so what depends on reading it did not happen.
pub fn audit_unreadable(error: &arf_audit_client::AuditError, consequence: &str) -> Status {
    match error {
        arf_audit_client::AuditError::Unavailable(_) => Status::unavailable(format!("cannot read the audit log, so {consequence}: {error}")),
        _ => Status::failed_precondition(format!("the audit log refused a read, so {consequence}: {error}")),
    }
}

pub fn not_found(decision_id: &str) -> Status {
    Status::not_found(format!("no decision `{decision_id}`"))
}

/// Until decisions are rebuilt from the log after a start, "no such decision" would be a guess.
pub fn restoring(decision_id: &str) -> Status {
    Status::unavailable(format!("no decision `{decision_id}` yet: the governor is still rebuilding its decisions from the audit log"))
}
