//! Compiles `arf/v1/*.proto` with protox (a pure-Rust protobuf compiler), so a fresh
//! machine needs cargo alone, and writes the descriptor set that reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "arf/v1/types.proto",
    "arf/v1/audit.proto",
    "arf/v1/agent.proto",
    "arf/v1/governor.proto",
    "arf/v1/executor.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let bytes = descriptors.encode_to_vec();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("arf_descriptor.bin"), &bytes)?;
    // Decoding with the builder's own prost types keeps this independent of which
    // prost version protox was built against.
    let descriptors = tonic_prost_build::FileDescriptorSet::decode(bytes.as_slice())?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
