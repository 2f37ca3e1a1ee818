//! The append-only, hash-chained audit log that connects ARF's processes.
//!
//! [`store`] is the sled-backed log itself, [`record`] the record format and chain
//! verification, [`grpc`] the service, and [`client`] what the other processes use
//! to append before they act.

pub mod client;
pub mod config;
pub mod grpc;
pub mod record;
pub mod store;

pub use client::{AuditClient, AuditError};
pub use config::Config;
pub use record::{Entry, Record, RecordKind};
pub use grpc::serve;
