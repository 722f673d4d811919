//! The domain types every service shares, free of protobuf and SQL: conversions to
//! and from the wire live in the API's `translation.rs`, to and from rows in [`crate::db`].

use std::{collections::BTreeMap, fmt, str::FromStr};

/// The life cycle of a volume (Cinder's statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeStatus {
    /// A backend is making it.
    Creating,
    /// Ready for use.
    Available,
    /// Held for an attachment that is being set up.
    Reserved,
    /// Being attached.
    Attaching,
    /// Attached.
    InUse,
    /// Being detached.
    Detaching,
    /// Growing.
    Extending,
    /// Being deleted.
    Deleting,
    /// Creation (or another operation) failed; see `error_message`.
    Error,
    /// Deletion failed.
    ErrorDeleting,
    /// Extension failed.
    ErrorExtending,
}

impl VolumeStatus {
    /// Every status.
    pub const ALL: [VolumeStatus; 11] = [
        Self::Creating,
        Self::Available,
        Self::Reserved,
        Self::Attaching,
        Self::InUse,
        Self::Detaching,
        Self::Extending,
        Self::Deleting,
        Self::Error,
        Self::ErrorDeleting,
        Self::ErrorExtending,
    ];

    /// The name stored in the database and shown in logs (Cinder's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Available => "available",
            Self::Reserved => "reserved",
            Self::Attaching => "attaching",
            Self::InUse => "in-use",
            Self::Detaching => "detaching",
            Self::Extending => "extending",
            Self::Deleting => "deleting",
            Self::Error => "error",
            Self::ErrorDeleting => "error_deleting",
            Self::ErrorExtending => "error_extending",
        }
    }

    /// Whether this is one of the error statuses (`error`, `error_deleting`,
    /// `error_extending`), the ones that keep an `error_message`.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Self::Error | Self::ErrorDeleting | Self::ErrorExtending
        )
    }

    /// The statuses a volume may be deleted from (Cinder: not attached, not busy).
    pub const DELETABLE: [VolumeStatus; 4] = [
        Self::Available,
        Self::Error,
        Self::ErrorDeleting,
        Self::ErrorExtending,
    ];
}

impl fmt::Display for VolumeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VolumeStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown volume status {s:?}"))
    }
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
}

/// The life cycle of a snapshot (Cinder's statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotStatus {
    /// A backend is making it.
    Creating,
    /// Ready: volumes can be made from it.
    Available,
    /// Being deleted.
    Deleting,
    /// Creation failed; see `error_message`.
    Error,
    /// Deletion failed.
    ErrorDeleting,
}

impl SnapshotStatus {
    /// Every status.
    pub const ALL: [SnapshotStatus; 5] = [
        Self::Creating,
        Self::Available,
        Self::Deleting,
        Self::Error,
        Self::ErrorDeleting,
    ];

    /// The statuses a snapshot may be deleted from.
    pub const DELETABLE: [SnapshotStatus; 3] = [Self::Available, Self::Error, Self::ErrorDeleting];

    /// The name stored in the database and shown in logs (Cinder's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Available => "available",
            Self::Deleting => "deleting",
            Self::Error => "error",
            Self::ErrorDeleting => "error_deleting",
        }
    }
}

impl fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SnapshotStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown snapshot status {s:?}"))
    }
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
}

impl Service {
    /// Whether it is up at `now_ms`: its last heartbeat is at most
    /// `service_down_ms` old (Cinder's `service_down_time`).
    pub fn is_up(&self, now_ms: i64, service_down_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_heartbeat_ms) <= service_down_ms
    }
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
    fn snapshot_statuses_round_trip() {
        for status in SnapshotStatus::ALL {
            assert_eq!(status.as_str().parse::<SnapshotStatus>(), Ok(status));
        }
        assert_eq!(SnapshotStatus::ErrorDeleting.as_str(), "error_deleting");
        assert!("in-use".parse::<SnapshotStatus>().is_err());
    }
}
