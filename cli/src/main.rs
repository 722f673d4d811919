//! The `scoria` binary: see the library's docs.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    scoria_cli::main().await
}
