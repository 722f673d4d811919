//! Wires config -> tracing -> `run` for `scoria-volume`.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(scoria_common::process::run_main(scoria_volume::BINARY, scoria_volume::run).await?)
}
