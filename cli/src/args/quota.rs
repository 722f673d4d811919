//! The `quota` subcommand's arguments.

use clap::Subcommand;

use super::key_value;

/// `quota` actions.
#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Shows a project's limits and usage.
    #[command(
        after_help = "Examples:\n  scoria quota show\n  scoria quota show demo\n  scoria quota show --default"
    )]
    Show {
        /// The project [default: your own].
        project: Option<String>,
        /// The defaults of projects without their own.
        #[arg(long, conflicts_with = "project")]
        default: bool,
    },
    /// Sets a project's limits (admin); -1 is no limit.
    #[command(
        after_help = "Example:\n  scoria quota set demo --volumes 50 --gigabytes 500 --limit gigabytes_gold=100"
    )]
    Set {
        /// The project.
        project: String,
        /// The most volumes.
        #[arg(long, allow_negative_numbers = true)]
        volumes: Option<i64>,
        /// The most GiB of volumes and snapshots.
        #[arg(long, allow_negative_numbers = true)]
        gigabytes: Option<i64>,
        /// The most snapshots.
        #[arg(long, allow_negative_numbers = true)]
        snapshots: Option<i64>,
        /// The most attachments.
        #[arg(long, allow_negative_numbers = true)]
        attachments: Option<i64>,
        /// The largest single volume, in GiB.
        #[arg(long, allow_negative_numbers = true)]
        per_volume_gigabytes: Option<i64>,
        /// Any resource, e.g. `volumes_gold=10` (repeatable).
        #[arg(long = "limit", value_name = "RESOURCE=LIMIT", value_parser = resource_limit, allow_negative_numbers = true)]
        limits: Vec<(String, i64)>,
    },
    /// Removes a project's own limits: the defaults apply again (admin).
    #[command(after_help = "Example:\n  scoria quota delete demo")]
    Delete {
        /// The project.
        project: String,
    },
}

/// `RESOURCE=LIMIT`.
pub(super) fn resource_limit(raw: &str) -> Result<(String, i64), String> {
    let (k, v) = key_value(raw)?;
    let limit = v
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a number (use -1 for no limit)"))?;
    Ok((k, limit))
}
