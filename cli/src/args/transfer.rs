//! The `transfer` subcommand's arguments.

use clap::Subcommand;

/// `transfer` actions.
#[derive(Debug, Subcommand)]
pub enum TransferCommand {
    /// Offers a volume to another project: prints the transfer and its auth key
    /// (shown only now).
    #[command(after_help = "Example:\n  scoria transfer create --volume data --name for-team-b")]
    Create {
        /// The volume (name or id).
        #[arg(long)]
        volume: String,
        /// The name.
        #[arg(long, default_value = "")]
        name: String,
        /// The volume goes without its snapshots (it must have none).
        #[arg(long)]
        no_snapshots: bool,
    },
    /// Accepts a transfer into the current project.
    #[command(after_help = "Example:\n  scoria transfer accept <transfer id> <auth key>")]
    Accept {
        /// The transfer's id.
        transfer: String,
        /// The auth key the giver received.
        auth_key: String,
    },
    /// Lists the project's pending transfers.
    #[command(after_help = "Example:\n  scoria transfer list")]
    List {
        /// Only the transfer of this volume (name or id).
        #[arg(long)]
        volume: Option<String>,
    },
    /// Shows a pending transfer.
    #[command(after_help = "Example:\n  scoria transfer show <transfer id>")]
    Show {
        /// The transfer's id.
        transfer: String,
    },
    /// Withdraws pending transfers: their volumes are available again.
    #[command(after_help = "Example:\n  scoria transfer delete <transfer id>")]
    Delete {
        /// The transfers' ids.
        #[arg(required = true)]
        transfers: Vec<String>,
    },
}
