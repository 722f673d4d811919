//! The domain types every service shares, free of protobuf and SQL: conversions to
//! and from the wire live in the API's `translation.rs`, to and from rows in [`crate::db`].

use std::{collections::BTreeMap, fmt, str::FromStr};

/// Declares a status enum stored as text: the enum, `ALL`, `as_str` (the name
/// stored in the database and shown in logs, Cinder's spelling), `Display` and
/// `FromStr` (whose error names the kind of status).
macro_rules! statuses {
    (
        $(#[doc = $doc:expr])*
        $name:ident, $what:literal {
            $($(#[doc = $vdoc:expr])* $variant:ident => $text:literal,)*
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[doc = $vdoc])* $variant,)*
        }

        impl $name {
            /// Every status.
            pub const ALL: [$name; [$($text),*].len()] = [$($name::$variant),*];

            /// The name stored in the database and shown in logs (Cinder's spelling).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|status| status.as_str() == s)
                    .ok_or_else(|| format!(concat!("unknown ", $what, " {:?}"), s))
            }
        }
    };
}

statuses! {
    /// The life cycle of a volume (Cinder's statuses).
    VolumeStatus, "volume status" {
        /// A backend is making it.
        Creating => "creating",
        /// Ready for use.
        Available => "available",
        /// Held for an attachment that is being set up.
        Reserved => "reserved",
        /// Being attached.
        Attaching => "attaching",
        /// Attached.
        InUse => "in-use",
        /// Being detached.
        Detaching => "detaching",
        /// Growing.
        Extending => "extending",
        /// Being deleted.
        Deleting => "deleting",
        /// Creation (or another operation) failed; see `error_message`.
        Error => "error",
        /// Deletion failed.
        ErrorDeleting => "error_deleting",
        /// Extension failed.
        ErrorExtending => "error_extending",
        /// A backup is reading it (Cinder's `backing-up`).
        BackingUp => "backing-up",
        /// A backup is being restored into it.
        RestoringBackup => "restoring-backup",
        /// Offered for transfer to another project.
        AwaitingTransfer => "awaiting-transfer",
        /// Its type is being changed (maybe with a migration).
        Retyping => "retyping",
        /// An operator is migrating it to another backend.
        Maintenance => "maintenance",
        /// Being rolled back to a snapshot.
        Reverting => "reverting",
        /// An existing backend object is being adopted.
        Managing => "managing",
        /// Adopting a backend object failed; deleting removes the row only.
        ErrorManaging => "error_managing",
    }
}

impl VolumeStatus {
    /// Whether this is one of the error statuses (`error`, `error_deleting`,
    /// `error_extending`, `error_managing`), the ones that keep an `error_message`.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Self::Error | Self::ErrorDeleting | Self::ErrorExtending | Self::ErrorManaging
        )
    }

    /// The statuses a volume may be deleted from (Cinder: not attached, not busy).
    pub const DELETABLE: [VolumeStatus; 5] = [
        Self::Available,
        Self::Error,
        Self::ErrorDeleting,
        Self::ErrorExtending,
        Self::ErrorManaging,
    ];
}

/// A volume as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// UUID.
    pub id: String,
    /// The owning project.
    pub project_id: String,
    /// The user who created it.
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Size in GiB.
    pub size_gib: u64,
    /// Status.
    pub status: VolumeStatus,
    /// Volume type name (empty: none).
    pub volume_type: String,
    /// Availability zone (empty: not chosen yet).
    pub availability_zone: String,
    /// `host@backend` once a backend took it.
    pub host: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Why it is in an error status (empty otherwise).
    pub error_message: String,
    /// The snapshot it was made from.
    pub snapshot_id: Option<String>,
    /// The volume it was cloned from.
    pub source_volume_id: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last change, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// Where its last move to another backend stands (retype or migration).
    pub migration_status: MigrationStatus,
    /// Why the last migration failed (with [`MigrationStatus::Error`]).
    pub migration_error: String,
}

statuses! {
    /// Where a volume's last move to another backend stands (Cinder's
    /// `migration_status`), stored as text (`''` when never migrated).
    MigrationStatus, "migration status" {
        /// Never migrated.
        Never => "",
        /// The bytes are being copied to the destination backend.
        Migrating => "migrating",
        /// The last migration finished: `host` is the destination.
        Success => "success",
        /// The last migration failed; the volume stayed where it was.
        Error => "error",
    }
}

// `statuses!` declares the enum and takes no `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for MigrationStatus {
    fn default() -> Self {
        Self::Never
    }
}

statuses! {
    /// The life cycle of a snapshot (Cinder's statuses).
    SnapshotStatus, "snapshot status" {
        /// A backend is making it.
        Creating => "creating",
        /// Ready: volumes can be made from it.
        Available => "available",
        /// Being deleted.
        Deleting => "deleting",
        /// Creation failed; see `error_message`.
        Error => "error",
        /// Deletion failed.
        ErrorDeleting => "error_deleting",
        /// Its volume is being reverted to it.
        Restoring => "restoring",
        /// An existing backend object is being adopted.
        Managing => "managing",
        /// Adopting a backend object failed; deleting removes the row only.
        ErrorManaging => "error_managing",
    }
}

impl SnapshotStatus {
    /// The statuses a snapshot may be deleted from.
    pub const DELETABLE: [SnapshotStatus; 4] = [
        Self::Available,
        Self::Error,
        Self::ErrorDeleting,
        Self::ErrorManaging,
    ];
}

/// A snapshot as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// UUID.
    pub id: String,
    /// The owning project (the volume's).
    pub project_id: String,
    /// The user who created it.
    pub user_id: String,
    /// The volume it was taken of.
    pub volume_id: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The volume's size when the snapshot was taken, GiB.
    pub size_gib: u64,
    /// Status.
    pub status: SnapshotStatus,
    /// `host@backend` holding it (the volume's host).
    pub host: Option<String>,
    /// Why it is in an error status (empty otherwise).
    pub error_message: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last change, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

statuses! {
    /// The life cycle of a backup (Cinder's statuses).
    BackupStatus, "backup status" {
        /// A volume service is writing it to the backup target.
        Creating => "creating",
        /// Complete: it can be restored.
        Available => "available",
        /// Being deleted from the backup target.
        Deleting => "deleting",
        /// Being restored into a volume (`restore_volume_id`).
        Restoring => "restoring",
        /// Creation failed (or its chunks are damaged); see `error_message`.
        Error => "error",
        /// Deletion failed.
        ErrorDeleting => "error_deleting",
    }
}

impl BackupStatus {
    /// The statuses a backup may be deleted from.
    pub const DELETABLE: [BackupStatus; 3] = [Self::Available, Self::Error, Self::ErrorDeleting];
}

/// A backup as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// UUID.
    pub id: String,
    /// The owning project (the volume's).
    pub project_id: String,
    /// The user who created it.
    pub user_id: String,
    /// The volume it was taken of (it may be gone since).
    pub volume_id: String,
    /// The backup an incremental one builds on.
    pub parent_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The volume's size when the backup was taken, GiB.
    pub size_gib: u64,
    /// Status.
    pub status: BackupStatus,
    /// Why it is in an error status, or why its last restore failed (empty otherwise).
    pub error_message: String,
    /// `host@backend` of the volume service that made it.
    pub host: Option<String>,
    /// Whether only chunks changed since the parent were stored.
    pub incremental: bool,
    /// Whether incremental backups build on it (read, never written).
    pub has_dependents: bool,
    /// Chunk objects it wrote to the target.
    pub object_count: u64,
    /// Compressed bytes of those objects.
    pub stored_bytes: u64,
    /// While `restoring`: the volume being restored into.
    pub restore_volume_id: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last change, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

statuses! {
    /// The life cycle of an attachment (Cinder's statuses).
    AttachmentStatus, "attachment status" {
        /// Held, not exported yet.
        Reserved => "reserved",
        /// Its volume service is exporting the volume.
        Attaching => "attaching",
        /// Exported: the connection info works.
        Attached => "attached",
        /// Its volume service is stopping the export.
        Detaching => "detaching",
        /// Detached (a row in this status is about to go).
        Detached => "detached",
        /// The export failed; see `error_message`.
        ErrorAttaching => "error_attaching",
        /// Stopping the export failed; the export may still run.
        ErrorDetaching => "error_detaching",
    }
}

impl AttachmentStatus {
    /// The statuses of an attachment that holds its volume (keeps it in use).
    pub const ACTIVE: [AttachmentStatus; 5] = [
        Self::Reserved,
        Self::Attaching,
        Self::Attached,
        Self::Detaching,
        Self::ErrorDetaching,
    ];

    /// The statuses an attachment may be deleted (detached) from.
    pub const DETACHABLE: [AttachmentStatus; 4] = [
        Self::Reserved,
        Self::Attached,
        Self::ErrorAttaching,
        Self::ErrorDetaching,
    ];
}

/// How an attachment may use its volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AttachMode {
    /// Read-write.
    #[default]
    ReadWrite,
    /// Read-only: its export refuses writes.
    ReadOnly,
}

impl AttachMode {
    /// `rw` or `ro`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWrite => "rw",
            Self::ReadOnly => "ro",
        }
    }

    /// Whether writes are refused.
    pub fn is_read_only(self) -> bool {
        self == Self::ReadOnly
    }
}

impl FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rw" => Ok(Self::ReadWrite),
            "ro" => Ok(Self::ReadOnly),
            other => Err(format!("unknown attach mode {other:?}")),
        }
    }
}

/// The attaching host (Cinder's connector).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Connector {
    /// The host's name.
    pub host: String,
    /// Its address.
    #[serde(default)]
    pub ip: String,
    /// An initiator name.
    #[serde(default)]
    pub initiator: String,
    /// Anything else it reports.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// How to reach an exported volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionInfo {
    /// Always `nbd`.
    pub protocol: String,
    /// The address the export listens on.
    pub host: String,
    /// Its TCP port.
    pub port: u16,
    /// The NBD export name.
    pub export_name: String,
    /// Whether the export refuses writes.
    #[serde(default)]
    pub read_only: bool,
}

impl ConnectionInfo {
    /// The export as an NBD URI, `nbd://<host>:<port>/<export_name>` (an IPv6 host
    /// is bracketed), as `qemu-io` and `qemu-img` take it.
    pub fn uri(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "{}://{host}:{}/{}",
            self.protocol, self.port, self.export_name
        )
    }
}

/// An attachment as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// UUID.
    pub id: String,
    /// The attached volume.
    pub volume_id: String,
    /// The owning project (the volume's).
    pub project_id: String,
    /// The user who attached.
    pub user_id: String,
    /// Status.
    pub status: AttachmentStatus,
    /// The instance it is for (empty: none given).
    pub instance_id: String,
    /// The attaching host.
    pub connector: Connector,
    /// Read-write or read-only.
    pub mode: AttachMode,
    /// The volume's backend, `host@backend` (the service that exports it).
    pub volume_host: String,
    /// Set once attached.
    pub connection_info: Option<ConnectionInfo>,
    /// Why it is in an error status (empty otherwise).
    pub error_message: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last change, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// When it became attached, milliseconds since the Unix epoch.
    pub attached_at_ms: Option<i64>,
}

/// A volume type: a named set of extra specs that steers scheduling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeType {
    /// UUID.
    pub id: String,
    /// Unique name; volumes refer to their type by it.
    pub name: String,
    /// Description.
    pub description: String,
    /// Matched against backend capabilities by the scheduler.
    pub extra_specs: BTreeMap<String, String>,
    /// Whether volumes created without a type get this one.
    pub is_default: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last change, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

/// A registered service (a row of `services`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `scoria-scheduler`, `scoria-volume`.
    pub binary: String,
    /// `host` or `host@backend`.
    pub host: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Whether the scheduler may use it.
    pub disabled: bool,
    /// Why it was disabled.
    pub disabled_reason: String,
    /// Last heartbeat, ms since the epoch.
    pub last_heartbeat_ms: i64,
    /// The cluster a volume service is a member of, as the `cluster@backend`
    /// it serves (empty: none).
    pub cluster: String,
}

impl Service {
    /// Whether it is up at `now_ms`: its last heartbeat is at most
    /// `service_down_ms` old (Cinder's `service_down_time`).
    pub fn is_up(&self, now_ms: i64, service_down_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_heartbeat_ms) <= service_down_ms
    }
}

/// Whether `host` is a volume service's `host@backend`: both parts present, one
/// `@`, no pool part (`#`), no white space or control characters.
pub fn is_service_host(host: &str) -> bool {
    host.split_once('@').is_some_and(|(name, backend)| {
        !name.is_empty()
            && !backend.is_empty()
            && !backend.contains('@')
            && !host
                .chars()
                .any(|c| c == '#' || c.is_whitespace() || c.is_control())
    })
}

/// The most bytes of an object reference (ManageVolume / ManageSnapshot): a
/// file name's limit on Linux.
pub const MAX_REFERENCE_BYTES: usize = 255;

/// Why `reference` cannot name a backend object to adopt, if it cannot: it
/// must be one plain name in the backend (no `/`, not `.` or `..`), not a
/// temporary file of Scoria's (a leading `.`), printable.
pub fn reference_problem(reference: &str) -> Option<&'static str> {
    if reference.is_empty() {
        Some("must not be empty")
    } else if reference.len() > MAX_REFERENCE_BYTES {
        Some("must be at most 255 bytes")
    } else if reference.contains('/') {
        Some("must be a name in the backend, without `/`")
    } else if reference.starts_with('.') {
        Some("must not start with `.` (`.`, `..` and Scoria's temporary files)")
    } else if reference.chars().any(char::is_control) {
        Some("must not hold control characters")
    } else {
        None
    }
}

/// A pending offer of a volume to another project (a row of `transfers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// UUID.
    pub id: String,
    /// The volume offered.
    pub volume_id: String,
    /// Display name.
    pub name: String,
    /// The project giving the volume.
    pub source_project_id: String,
    /// The user who made the offer.
    pub user_id: String,
    /// The salt of [`Transfer::key_hash`], hex.
    pub salt: String,
    /// SHA-256 of the salt and the auth key, hex (the key itself is never kept).
    pub key_hash: String,
    /// The volume goes alone (it has no snapshots).
    pub no_snapshots: bool,
    /// How many wrong keys were presented.
    pub failed_attempts: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When the offer lapses, milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
    /// The project that accepted it (set only in the answer of an accept).
    pub destination_project_id: Option<String>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_with_cinder_spelling() {
        for status in VolumeStatus::ALL {
            assert_eq!(status.as_str().parse::<VolumeStatus>(), Ok(status));
        }
        assert_eq!(VolumeStatus::InUse.as_str(), "in-use");
        assert!("bogus".parse::<VolumeStatus>().is_err());
    }

    #[test]
    fn attachment_statuses_and_modes_round_trip() {
        for status in AttachmentStatus::ALL {
            assert_eq!(status.as_str().parse::<AttachmentStatus>(), Ok(status));
        }
        assert_eq!("ro".parse::<AttachMode>(), Ok(AttachMode::ReadOnly));
        assert!("wo".parse::<AttachMode>().is_err());
        let info = ConnectionInfo {
            protocol: "nbd".into(),
            host: "::1".into(),
            port: 10809,
            export_name: "volume-x".into(),
            read_only: false,
        };
        assert_eq!(info.uri(), "nbd://[::1]:10809/volume-x");
    }

    #[test]
    fn snapshot_statuses_round_trip() {
        for status in SnapshotStatus::ALL {
            assert_eq!(status.as_str().parse::<SnapshotStatus>(), Ok(status));
        }
        assert_eq!(SnapshotStatus::ErrorDeleting.as_str(), "error_deleting");
        assert!("in-use".parse::<SnapshotStatus>().is_err());
    }
}
