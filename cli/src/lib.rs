//! `scoria`: Scoria's command line, over the generated tonic clients, in the
//! style of python-openstackclient's `openstack volume ...`.
//!
//! ```text
//!  argv ─clap─▶ args::Cli ─▶ connect::Settings (flags > env > clouds.toml) ─▶ Api
//!                  └─▶ commands::<resource> ─requests─▶ output::Shown ─▶ output::render (-f, -c)
//!                                  └─ --wait: wait::watch (Watch* stream; polls on UNIMPLEMENTED; spinner on a terminal)
//! ```
//!
//! Exit codes: 0 done, 1 a request failed or a resource ended in error, 2 bad usage.
#![forbid(unsafe_code)]

pub mod args;
mod commands;
pub mod connect;
pub mod error;
pub mod output;
pub mod records;
mod resolve;
pub mod wait;

use std::{io::Write, process::ExitCode};

use clap::{CommandFactory, Parser};

use crate::{args::Cli, connect::Settings, error::CliError};

/// Parses `std::env::args`, runs the command and prints its result or error;
/// the process's exit code.
pub async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints usage errors (exit 2) and --help / --version (exit 0).
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    match run(cli).await {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Runs `cli`; the text to print.
pub async fn run(cli: Cli) -> Result<String, CliError> {
    if let args::Command::Completion { shell } = cli.command {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "scoria", &mut out);
        return String::from_utf8(out).map_err(|e| CliError::Internal(e.to_string()));
    }
    let settings = Settings::resolve(&cli.connection, connect::clouds_path())?;
    let api = settings.connect().await?;
    let shown = commands::run(&api, cli.command).await?;
    output::render(&shown, cli.output.format, &cli.output.columns)
}
