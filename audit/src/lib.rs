//! The append-only, hash-chained audit log that connects ARF's processes.
//!
//! [`store`] is the log on disk (checksummed frames in one file, fsynced with group
//! commit; [`frame`] is its format), [`record`] the record format and chain
//! verification, [`merkle`] the RFC 6962 tree over the records and its proofs,
//! [`checkpoint`] the signed checkpoints, [`grpc`] the service, and [`client`] what
//! the other processes use to append before they act.

pub mod bundle;
pub mod config;
pub mod frame;
pub mod grpc;
pub mod log;
pub mod pg;
pub mod store;

// What writers and readers link on their own (`arf-audit-client`), re-exported so
// the log and its tools name one set of types.
pub use arf_audit_client::{checkpoint, client, merkle, record, witness};

pub use client::{AuditClient, AuditError};
pub use config::Config;
pub use record::{Entry, Record, RecordKind};
pub use grpc::serve;
