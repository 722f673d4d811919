//! The arguments of `volume retype|migrate|revert|manage|unmanage` and
//! `snapshot manage|unmanage`: moving a volume, rolling it back, adopting a
//! backend object or giving one up.

use clap::{Args, ValueEnum};

use super::{WaitArgs, key_value};

/// Whether a retype may move the volume to another backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrationPolicy {
    /// Only in place: fail if the volume's backend does not fit the new type.
    Never,
    /// Migrate the volume when its backend does not fit the new type.
    OnDemand,
}

/// `volume retype`.
#[derive(Debug, Args)]
pub struct RetypeArgs {
    /// The volume (name or id).
    pub volume: String,
    /// The new volume type (its name).
    #[arg(long = "type", value_name = "TYPE")]
    pub volume_type: String,
    /// Whether the volume may move to another backend for the new type.
    #[arg(long, value_enum, default_value_t = MigrationPolicy::Never)]
    pub migration_policy: MigrationPolicy,
    /// Whether and how long to follow the resource.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `volume migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The volume (name or id).
    pub volume: String,
    /// The destination, `host@backend` or `host@backend#pool` [default: the scheduler's pick].
    #[arg(long, default_value = "", value_name = "HOST")]
    pub host: String,
    /// Whether and how long to follow the resource.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `volume revert`.
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// The volume (name or id).
    pub volume: String,
    /// The snapshot to roll back to (name or id): the volume's newest.
    #[arg(long, value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Whether and how long to follow the resource.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `volume manage`.
#[derive(Debug, Args)]
pub struct ManageVolumeArgs {
    /// The backend holding the object, `host@backend` or `host@backend#pool`.
    #[arg(long, value_name = "HOST")]
    pub host: String,
    /// The object's name on that backend (a file name, extension included).
    #[arg(long, value_name = "OBJECT")]
    pub reference: String,
    /// The volume's name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// A description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// A volume type the backend satisfies (its name) [default: the default type].
    #[arg(long = "type", default_value = "", value_name = "TYPE")]
    pub volume_type: String,
    /// The project to own the volume [default: your own].
    #[arg(long, default_value = "", value_name = "PROJECT")]
    pub project: String,
    /// A metadata property (repeatable).
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = key_value)]
    pub properties: Vec<(String, String)>,
    /// Whether and how long to follow the resource.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `volume unmanage`.
#[derive(Debug, Args)]
pub struct UnmanageVolumeArgs {
    /// The volume (name or id).
    pub volume: String,
}

/// `snapshot manage`.
#[derive(Debug, Args)]
pub struct ManageSnapshotArgs {
    /// The volume the snapshot is of (name or id); its backend holds the object.
    #[arg(long)]
    pub volume: String,
    /// The object's name on the volume's backend (a file name, extension included).
    #[arg(long, value_name = "OBJECT")]
    pub reference: String,
    /// The snapshot's name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// A description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Whether and how long to follow the resource.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `snapshot unmanage`.
#[derive(Debug, Args)]
pub struct UnmanageSnapshotArgs {
    /// The snapshot (name or id).
    pub snapshot: String,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command, SnapshotCommand, VolumeCommand};

    fn parse(line: &[&str]) -> Command {
        Cli::try_parse_from(line)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .command
    }

    #[test]
    fn the_moving_and_adopting_commands_parse() {
        let Command::Volume(VolumeCommand::Retype(retype)) = parse(&[
            "scoria",
            "volume",
            "retype",
            "data",
            "--type",
            "gold",
            "--migration-policy",
            "on-demand",
            "--wait",
        ]) else {
            panic!("not a retype");
        };
        assert_eq!(retype.volume_type, "gold");
        assert_eq!(retype.migration_policy, MigrationPolicy::OnDemand);
        assert!(retype.wait.wait);
        let Command::Volume(VolumeCommand::Retype(retype)) =
            parse(&["scoria", "volume", "retype", "data", "--type", "gold"])
        else {
            panic!("not a retype");
        };
        assert_eq!(retype.migration_policy, MigrationPolicy::Never);

        let Command::Volume(VolumeCommand::Migrate(migrate)) =
            parse(&["scoria", "volume", "migrate", "data"])
        else {
            panic!("not a migrate");
        };
        assert_eq!(migrate.host, "", "the scheduler picks");

        let Command::Volume(VolumeCommand::Manage(manage)) = parse(&[
            "scoria",
            "volume",
            "manage",
            "--host",
            "node1@file",
            "--reference",
            "legacy.img",
            "--property",
            "k=v",
            "--project",
            "p1",
        ]) else {
            panic!("not a manage");
        };
        assert_eq!(
            (manage.host.as_str(), manage.reference.as_str()),
            ("node1@file", "legacy.img")
        );
        assert_eq!(manage.properties, vec![("k".into(), "v".into())]);
        assert_eq!(manage.project, "p1");
        assert!(
            Cli::try_parse_from(["scoria", "volume", "manage", "--host", "node1@file"]).is_err(),
            "--reference is required"
        );
        assert!(
            Cli::try_parse_from(["scoria", "volume", "revert", "data"]).is_err(),
            "--snapshot is required"
        );

        let Command::Snapshot(SnapshotCommand::Manage(manage)) = parse(&[
            "scoria",
            "snapshot",
            "manage",
            "--volume",
            "data",
            "--reference",
            "old-snap.img",
        ]) else {
            panic!("not a snapshot manage");
        };
        assert_eq!(manage.volume, "data");
    }
}
