//! Wires config -> tracing -> `run` for `scoria-scheduler`.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(scoria_common::process::run_main(scoria_scheduler::BINARY, scoria_scheduler::run).await?)
}
