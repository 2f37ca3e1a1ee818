//! The governor: policy, risk, routing, approvals, explanations, decision signing and dispatch.
//!
//! The model proposes; policy decides. [`decide`] turns a proposal into a decision
//! (checked against the governor's own catalog and inventory, scored by [`risk`],
//! routed by the Rego bundle in [`policy`]); [`decision`] holds the rules of
//! oversight; [`explain`] writes what a person reads. All of these are pure, with
//! time passed in. Only [`grpc`](serve) talks to the network: it authenticates
//! callers, writes ahead to the audit log, signs and dispatches.

pub mod config;
pub mod backing;
pub mod calibration;
pub mod decide;
pub mod decision;
pub mod explain;
pub mod graduation;
mod grpc;
pub mod guard;
pub mod identity;
pub mod notify;
pub mod policy;
pub mod policy_test;
pub mod risk;
pub mod snapshot;

pub use config::{Config, Identity};
pub use grpc::{Clock, serve, serve_with_clock};
pub use risk::RiskWeights;
