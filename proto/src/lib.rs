//! The generated gRPC types and services of `arf.v1`, and the descriptor set for reflection.

/// The `arf.v1` package.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("arf.v1");
}

/// The encoded `FileDescriptorSet` of every ARF proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/arf_descriptor.bin"));

pub mod server;
pub mod auth;
pub mod tls;
pub mod service;
pub mod metrics;
pub mod http;
pub mod telemetry;
