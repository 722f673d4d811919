//! The command line, as `clap` parses it: `scoria <resource> <action> [args]`,
//! the nouns and flags of python-openstackclient's `openstack volume ...`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

mod quota;
mod transfer;
mod volume_admin;

pub use quota::QuotaCommand;
pub use transfer::TransferCommand;
pub use volume_admin::{
    ManageSnapshotArgs, ManageVolumeArgs, MigrateArgs, MigrationPolicy, RetypeArgs, RevertArgs,
    UnmanageSnapshotArgs, UnmanageVolumeArgs,
};

/// Scoria's command line: volumes, snapshots, attachments, types, services,
/// pools and quotas of a Scoria API.
#[derive(Debug, Parser)]
#[command(
    name = "scoria",
    version,
    about,
    after_help = "Examples:\n  scoria volume create --size 10 --name data --wait\n  \
                  scoria volume list -f json\n  scoria --os-cloud prod quota show"
)]
pub struct Cli {
    /// Where the API is and who asks.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// How results are printed.
    #[command(flatten)]
    pub output: OutputArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the API is and who the caller is; each flag has an environment
/// variable, and `--os-cloud` picks an entry of `~/.config/scoria/clouds.toml`.
#[derive(Debug, Clone, Args, Default)]
pub struct ConnectionArgs {
    /// The API's URL (`http://host:port` or `https://...`) [default: http://127.0.0.1:8776].
    #[arg(long = "os-url", env = "SCORIA_URL", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// A bearer token (token and jwt auth modes).
    #[arg(
        long = "os-token",
        env = "SCORIA_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// The project to act in (the `x-project-id` header of the noauth mode).
    #[arg(
        long = "os-project",
        env = "SCORIA_PROJECT",
        global = true,
        value_name = "PROJECT"
    )]
    pub project: Option<String>,
    /// Roles, comma-separated (the `x-roles` header of the noauth mode).
    #[arg(
        long = "os-roles",
        env = "SCORIA_ROLES",
        global = true,
        value_name = "ROLES"
    )]
    pub roles: Option<String>,
    /// A PEM file of the CA that signed the API's certificate (https).
    #[arg(
        long = "os-cacert",
        visible_alias = "cacert",
        env = "SCORIA_CACERT",
        global = true,
        value_name = "FILE"
    )]
    pub cacert: Option<PathBuf>,
    /// A PEM client certificate, for an API that requires one (mTLS; with `--os-key`).
    #[arg(
        long = "os-cert",
        visible_alias = "cert",
        env = "SCORIA_CERT",
        global = true,
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// The PEM private key of `--os-cert`.
    #[arg(
        long = "os-key",
        visible_alias = "key",
        env = "SCORIA_KEY",
        global = true,
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// An entry of `~/.config/scoria/clouds.toml` (`[clouds.<name>]` with `url`,
    /// `token`, `project`, `roles`, `cacert`, `cert`, `key`); flags and variables win over it.
    #[arg(
        long = "os-cloud",
        env = "SCORIA_CLOUD",
        global = true,
        value_name = "NAME"
    )]
    pub cloud: Option<String>,
}

/// How results are printed.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'f', long = "format", global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only this column (repeatable), by its name as printed.
    #[arg(short = 'c', long = "column", global = true, value_name = "COLUMN")]
    pub columns: Vec<String>,
}

/// A resource and what to do with it.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Snapshots of volumes.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Attachments: volumes exported over NBD to a host.
    #[command(subcommand)]
    Attachment(AttachmentCommand),
    /// Volume types and their extra specs.
    #[command(name = "type", visible_alias = "volume-type", subcommand)]
    Type(TypeCommand),
    /// Availability zones.
    #[command(name = "availability-zone", subcommand)]
    AvailabilityZone(ZoneCommand),
    /// The scheduler and volume services (admin).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// The backends' pools and their capacity (admin).
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Per-project quotas.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Volume transfers to another project.
    #[command(subcommand)]
    Transfer(TransferCommand),
    /// Prints a shell completion script.
    #[command(after_help = "Example:\n  scoria completion bash > /etc/bash_completion.d/scoria")]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// How long `--wait` follows a resource, and whether it does.
#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArgs {
    /// Follow the resource until it settles (exit 1 if it ends in error).
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

impl WaitArgs {
    /// The timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

/// `volume` actions.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Creates a volume (empty, from a snapshot, or a clone of a volume).
    #[command(
        after_help = "Examples:\n  scoria volume create --size 10 --name data --wait\n  \
                            scoria volume create --size 10 --snapshot snap1 --type gold"
    )]
    Create {
        /// Size in GiB.
        #[arg(long, value_name = "GIB")]
        size: u64,
        /// The volume's name.
        #[arg(long, default_value = "")]
        name: String,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
        /// A volume type (name or id) [default: the default type].
        #[arg(long = "type", default_value = "", value_name = "TYPE")]
        volume_type: String,
        /// The availability zone [default: any].
        #[arg(long, default_value = "", value_name = "ZONE")]
        availability_zone: String,
        /// Make it from this snapshot (name or id).
        #[arg(long, conflicts_with = "source", value_name = "SNAPSHOT")]
        snapshot: Option<String>,
        /// Clone this volume (name or id).
        #[arg(long, value_name = "VOLUME")]
        source: Option<String>,
        /// A metadata property (repeatable).
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = key_value)]
        properties: Vec<(String, String)>,
        /// An idempotency key: the same key returns the same volume.
        #[arg(long, default_value = "")]
        request_id: String,
        /// Whether and how long to follow the resource.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Lists volumes.
    #[command(after_help = "Example:\n  scoria volume list --long --status available -f json")]
    List {
        /// More columns.
        #[arg(long)]
        long: bool,
        /// Only in this status (`available`, `in-use`, `error`, ...).
        #[arg(long)]
        status: Option<String>,
        /// Only with this name.
        #[arg(long)]
        name: Option<String>,
        /// Every project's (admin).
        #[arg(long)]
        all_projects: bool,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Start after this volume (id).
        #[arg(long)]
        marker: Option<String>,
    },
    /// Shows a volume.
    #[command(after_help = "Example:\n  scoria volume show data -c status")]
    Show {
        /// Name or id.
        volume: String,
    },
    /// Changes a volume's name, description or properties.
    #[command(
        after_help = "Example:\n  scoria volume set data --property tier=gold --unset-property old"
    )]
    Set {
        /// Name or id.
        volume: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        /// Set a property (repeatable).
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = key_value)]
        properties: Vec<(String, String)>,
        /// Remove a property (repeatable).
        #[arg(long = "unset-property", value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Deletes volumes.
    #[command(after_help = "Example:\n  scoria volume delete data old --wait")]
    Delete {
        /// Names or ids.
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Whether and how long to follow the resource.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Grows a volume.
    #[command(after_help = "Example:\n  scoria volume extend data --size 20 --wait")]
    Extend {
        /// Name or id.
        volume: String,
        /// The new size in GiB.
        #[arg(long, value_name = "GIB")]
        size: u64,
        /// Whether and how long to follow the resource.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Sets a volume's status, whatever it is (admin).
    #[command(
        name = "reset-state",
        after_help = "Example:\n  scoria volume reset-state data --state available"
    )]
    ResetState {
        /// Name or id.
        volume: String,
        /// The new status (`available`, `error`, ...).
        #[arg(long)]
        state: String,
    },
    /// Changes a volume's type, in place or (with `--migration-policy on-demand`)
    /// by moving it to a backend that fits the new type.
    #[command(
        after_help = "Example:\n  scoria volume retype data --type gold --migration-policy on-demand --wait"
    )]
    Retype(RetypeArgs),
    /// Moves a volume to another backend (admin).
    #[command(after_help = "Example:\n  scoria volume migrate data --host node2@file --wait")]
    Migrate(MigrateArgs),
    /// Rolls a volume back to its newest snapshot.
    #[command(
        after_help = "Example:\n  scoria volume revert data --snapshot before-upgrade --wait"
    )]
    Revert(RevertArgs),
    /// Adopts an object a backend holds into a new volume of its size, rounded
    /// up to whole GiB (admin).
    #[command(
        after_help = "Example:\n  scoria volume manage --host node1@file --reference legacy.img --name legacy --wait"
    )]
    Manage(ManageVolumeArgs),
    /// Forgets a volume without deleting its data: the object stays on its
    /// backend as `volume-<id>` (admin).
    #[command(after_help = "Example:\n  scoria volume unmanage legacy")]
    Unmanage(UnmanageVolumeArgs),
}

/// `snapshot` actions.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshots a volume.
    #[command(
        after_help = "Example:\n  scoria snapshot create --volume data --name before-upgrade --wait"
    )]
    Create {
        /// The volume (name or id).
        #[arg(long)]
        volume: String,
        /// The name.
        #[arg(long, default_value = "")]
        name: String,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
        /// Snapshot an attached volume too.
        #[arg(long)]
        force: bool,
        /// Whether and how long to follow the resource.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Lists snapshots.
    #[command(after_help = "Example:\n  scoria snapshot list --volume data")]
    List {
        /// Only of this volume (name or id).
        #[arg(long)]
        volume: Option<String>,
        /// Only in this status.
        #[arg(long)]
        status: Option<String>,
        /// More columns.
        #[arg(long)]
        long: bool,
    },
    /// Shows a snapshot.
    #[command(after_help = "Example:\n  scoria snapshot show before-upgrade")]
    Show {
        /// Name or id.
        snapshot: String,
    },
    /// Deletes snapshots.
    #[command(after_help = "Example:\n  scoria snapshot delete before-upgrade --wait")]
    Delete {
        /// Names or ids.
        #[arg(required = true)]
        snapshots: Vec<String>,
        /// Whether and how long to follow the resource.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Adopts an object the volume's backend holds as a snapshot of the volume (admin).
    #[command(
        after_help = "Example:\n  scoria snapshot manage --volume data --reference old-snap.img --wait"
    )]
    Manage(ManageSnapshotArgs),
    /// Forgets a snapshot without deleting its data: the object stays on its
    /// backend as `snapshot-<id>` (admin).
    #[command(after_help = "Example:\n  scoria snapshot unmanage old-snap")]
    Unmanage(UnmanageSnapshotArgs),
}

/// How an attachment opens its volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Read-write.
    Rw,
    /// Read-only.
    Ro,
}

/// `attachment` actions.
#[derive(Debug, Subcommand)]
pub enum AttachmentCommand {
    /// Attaches a volume to a host: prints the NBD URI to use.
    #[command(
        after_help = "Example:\n  scoria attachment create data --host compute-1 --mode ro -c uri -f value"
    )]
    Create {
        /// The volume (name or id).
        volume: String,
        /// The host that connects.
        #[arg(long)]
        host: String,
        /// The host's address.
        #[arg(long, default_value = "")]
        ip: String,
        /// An instance id to record.
        #[arg(long, default_value = "")]
        instance: String,
        /// Read-write or read-only.
        #[arg(long, value_enum, default_value_t = Mode::Rw)]
        mode: Mode,
        /// Whether and how long to follow the resource.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Lists attachments.
    #[command(after_help = "Example:\n  scoria attachment list --volume data")]
    List {
        /// Only of this volume (name or id).
        #[arg(long)]
        volume: Option<String>,
    },
    /// Shows an attachment.
    #[command(after_help = "Example:\n  scoria attachment show 5f0c... -c uri -f value")]
    Show {
        /// The attachment's id.
        attachment: String,
    },
    /// Detaches: deletes attachments.
    #[command(after_help = "Example:\n  scoria attachment delete 5f0c...")]
    Delete {
        /// Attachment ids.
        #[arg(required = true)]
        attachments: Vec<String>,
    },
}

/// `type` actions.
#[derive(Debug, Subcommand)]
pub enum TypeCommand {
    /// Creates a volume type (admin).
    #[command(
        after_help = "Example:\n  scoria type create gold --property volume_backend_name=fast"
    )]
    Create {
        /// The name.
        name: String,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
        /// An extra spec (repeatable).
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = key_value)]
        properties: Vec<(String, String)>,
    },
    /// Lists volume types.
    #[command(after_help = "Example:\n  scoria type list --long")]
    List {
        /// More columns.
        #[arg(long)]
        long: bool,
    },
    /// Shows a volume type.
    #[command(after_help = "Example:\n  scoria type show gold -f json")]
    Show {
        /// Name or id.
        volume_type: String,
    },
    /// Changes a type's description or adds extra specs (admin).
    #[command(after_help = "Example:\n  scoria type set gold --property multiattach='<is> True'")]
    Set {
        /// Name or id.
        volume_type: String,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        /// An extra spec to set (repeatable).
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = key_value)]
        properties: Vec<(String, String)>,
    },
    /// Removes extra specs of a type (admin).
    #[command(after_help = "Example:\n  scoria type unset gold --property multiattach")]
    Unset {
        /// Name or id.
        volume_type: String,
        /// An extra spec to remove (repeatable).
        #[arg(long = "property", value_name = "KEY", required = true)]
        properties: Vec<String>,
    },
    /// Deletes volume types no volume uses (admin).
    #[command(after_help = "Example:\n  scoria type delete gold")]
    Delete {
        /// Names or ids.
        #[arg(required = true)]
        volume_types: Vec<String>,
    },
}

/// `availability-zone` actions.
#[derive(Debug, Subcommand)]
pub enum ZoneCommand {
    /// Lists availability zones.
    #[command(after_help = "Example:\n  scoria availability-zone list")]
    List,
}

/// `service` actions.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Lists services.
    #[command(after_help = "Example:\n  scoria service list --binary scoria-volume")]
    List {
        /// Only of this binary (`scoria-volume`, `scoria-scheduler`).
        #[arg(long)]
        binary: Option<String>,
    },
    /// Enables or disables a service.
    #[command(
        after_help = "Example:\n  scoria service set node1@file scoria-volume --disable --reason maintenance"
    )]
    Set {
        /// `host` or `host@backend`.
        host: String,
        /// `scoria-volume` or `scoria-scheduler`.
        binary: String,
        /// Enable it.
        #[arg(long, conflicts_with = "disable", required_unless_present = "disable")]
        enable: bool,
        /// Disable it (needs --reason).
        #[arg(long, requires = "reason")]
        disable: bool,
        /// Why it is disabled.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `pool` actions.
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Lists pools.
    #[command(after_help = "Example:\n  scoria pool list --long")]
    List {
        /// Only of this backend (`host@backend`).
        #[arg(long, default_value = "")]
        host: String,
        /// More columns.
        #[arg(long)]
        long: bool,
    },
}

/// `KEY=VALUE`.
pub(crate) fn key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{raw:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{quota::resource_limit, *};

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pairs_are_parsed() {
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(key_value("=x").is_err());
        assert!(key_value("x").is_err());
        assert_eq!(
            resource_limit("volumes_gold=-1"),
            Ok(("volumes_gold".into(), -1))
        );
        assert!(resource_limit("volumes=many").is_err());
    }
}
