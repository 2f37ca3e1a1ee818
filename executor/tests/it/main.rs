//! Integration tests of the executor: a real audit log, a real executor, real
//! processes and a real HTTP target, all on loopback. One module per behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod harness;

mod audit_unavailable;
mod bounded_output;
mod gitops;
mod prometheus;
mod recovery;
mod replicas;
mod http_target;
mod rejects_bad_decisions;
mod rolls_back;
mod secrets;
mod runs_once;
mod serializes_targets;
mod timeout_kills_group;
mod tls;
mod witnesses_the_log;
mod withdrawn;
