//! Generates the protocol types and tonic stubs from `proto/` (the broker protocol, the
//! consumer protocol and the recovery-log hints it refers to), and
//! writes the file descriptor set used by gRPC reflection and the wire-contract test.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos: Vec<PathBuf> = ["protocol.proto", "recoverylog.proto", "consumer.proto"]
        .iter()
        .map(|name| proto_dir.join(name))
        .collect();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    // `bytes` fields as `Bytes`: append and read content moves between the network, spools
    // and stores without copies.
    tonic_prost_build::configure()
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("protocol_descriptor.bin"))
        .compile_protos(&protos, &[proto_dir])?;
    Ok(())
}
