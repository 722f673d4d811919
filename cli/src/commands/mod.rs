//! One module per resource; each turns its parsed command into requests and
//! returns what to print.

mod admin;
mod attachment;
mod quota;
mod snapshot;
mod transfer;
mod volume;
mod volume_admin;
mod volume_type;

use crate::{args::Command, connect::Api, error::CliError, output::Shown};

/// Runs `command` against `api`.
pub async fn run(api: &Api, command: Command) -> Result<Shown, CliError> {
    match command {
        Command::Volume(c) => volume::run(api, c).await,
        Command::Snapshot(c) => snapshot::run(api, c).await,
        Command::Attachment(c) => attachment::run(api, c).await,
        Command::Type(c) => volume_type::run(api, c).await,
        Command::AvailabilityZone(c) => admin::zones(api, c).await,
        Command::Service(c) => admin::services(api, c).await,
        Command::Pool(c) => admin::pools(api, c).await,
        Command::Quota(c) => quota::run(api, c).await,
        Command::Transfer(c) => transfer::run(api, c).await,
        Command::Completion { .. } => Err(CliError::Internal(
            "completion is answered before connecting".into(),
        )),
    }
}
