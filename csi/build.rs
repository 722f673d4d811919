//! Compiles `proto/csi/v1/csi.proto` with `protox` (pure Rust: no system
//! `protoc`) and writes the descriptor set that gRPC reflection serves.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

/// The CSI schema, relative to `proto/`.
const PROTOS: &[&str] = &["csi/v1/csi.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("csi_descriptor.bin"), fds.encode_to_vec())?;
    let mut config = prost_build::Config::new();
    // Ordered maps: contexts and parameters print (and compare) the same each time.
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
