//! Pathway runners, verification probes, rollback and idempotency: the executor
//! runs catalog pathways for signed, logged decisions only.
//!
//! [`engine`] orchestrates one execution; [`admission`], [`plan`] and
//! [`execution`] hold the rules it follows, as pure functions; [`runner`] and
//! [`probe`] touch targets; [`store`] makes execution idempotent per decision id;
//! [`records`] builds the audit payloads; the gRPC edge is in `grpc`.

pub mod admission;
pub mod config;
pub mod durable;
pub mod engine;
pub mod execution;
mod grpc;
pub mod plan;
pub mod probe;
pub mod records;
pub mod recovery;
pub mod runner;
pub mod secrets;
pub mod shared;
pub mod store;
pub mod verify;

pub use config::Config;
pub use grpc::{STORE_STOPPED, serve};
