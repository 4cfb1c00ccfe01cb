//! Generates the protocol types and tonic stubs from `proto/protocol.proto`, and
//! writes the file descriptor set used by gRPC reflection and the wire-contract test.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = proto_dir.join("protocol.proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed={}", proto.display());
    // `bytes` fields as `Bytes`: append and read content moves between the network, spools
    // and stores without copies.
    tonic_prost_build::configure()
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("protocol_descriptor.bin"))
        .compile_protos(&[proto], &[proto_dir])?;
    Ok(())
}
