//! Wires config -> tracing -> `run` for `scoria-api`.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(scoria_common::process::run_main(scoria_api::BINARY, scoria_api::run).await?)
}
