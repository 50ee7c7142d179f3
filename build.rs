//! Compiles `src/grpc/proto/inference.proto` into Rust (prost messages, tonic service and client) and writes its
//! descriptor set for the reflection service. protox parses the file, so no `protoc` needs to be installed.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "src/grpc/proto/inference.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["src/grpc/proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("inference_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Tensor bytes stay in the buffer they arrived in.
        .bytes(".inference")
        .compile_fds(descriptors)?;
    Ok(())
}
