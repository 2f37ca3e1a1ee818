//! What every process that writes to or reads the audit log links, and nothing of
//! the log's store: [`client`] to append and read over gRPC, [`record`] the record
//! format and chain verification, [`merkle`] the RFC 6962 tree and its proofs,
//! [`checkpoint`] the signed checkpoints (C2SP signed notes), and [`witness`] the
//! checks a witness makes before it trusts the log, and [`state`] a process's state
//! saved for restarts that the log vouches for. The store and the service are
//! in `arf-audit`, which re-exports all of this.

pub mod checkpoint;
pub mod client;
pub mod merkle;
pub mod own;
pub mod record;
pub mod state;
pub mod witness;

pub use client::{AuditClient, AuditError, Quiet};
pub use record::{Entry, Record, RecordKind};
