//! Compiles `proto/scoria/**.proto` with `protox` (pure Rust: no system `protoc`)
//! and writes the descriptor set that gRPC reflection serves.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

/// Every `.proto` file of the schema, relative to this crate's root.
const PROTOS: &[&str] = &[
    "scoria/rpc/v1/rpc.proto",
    "scoria/bus/v1/bus.proto",
    "scoria/v1/volume.proto",
    "scoria/v1/snapshot.proto",
    "scoria/v1/backup.proto",
    "scoria/v1/volume_type.proto",
    "scoria/v1/admin.proto",
    "scoria/v1/attachment.proto",
    "scoria/v1/quota.proto",
    "scoria/v1/transfer.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("scoria_descriptor.bin"), fds.encode_to_vec())?;
    let mut config = prost_build::Config::new();
    // `prost::Name` on every message, so payloads can travel as `google.protobuf.Any`.
    config.enable_type_names();
    config.bytes(["."]);
    // Ordered maps encode deterministically (idempotency digests, stable output).
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
