//! Conversions between the domain types ([`crate::model`]) and their protobuf
//! forms: the one place they live, so no handler converts by hand.

use prost_types::Timestamp;
use scoria_proto::v1 as pb;

use crate::model::{
    AttachMode, Attachment, AttachmentStatus, Backup, BackupStatus, ConnectionInfo, Connector,
    MigrationStatus, Snapshot, SnapshotStatus, Volume, VolumeStatus,
};

impl From<VolumeStatus> for pb::VolumeStatus {
    fn from(status: VolumeStatus) -> Self {
        match status {
            VolumeStatus::Creating => pb::VolumeStatus::Creating,
            VolumeStatus::Available => pb::VolumeStatus::Available,
            VolumeStatus::Reserved => pb::VolumeStatus::Reserved,
            VolumeStatus::Attaching => pb::VolumeStatus::Attaching,
            VolumeStatus::InUse => pb::VolumeStatus::InUse,
            VolumeStatus::Detaching => pb::VolumeStatus::Detaching,
            VolumeStatus::Extending => pb::VolumeStatus::Extending,
            VolumeStatus::Deleting => pb::VolumeStatus::Deleting,
            VolumeStatus::Error => pb::VolumeStatus::Error,
            VolumeStatus::ErrorDeleting => pb::VolumeStatus::ErrorDeleting,
            VolumeStatus::ErrorExtending => pb::VolumeStatus::ErrorExtending,
            VolumeStatus::BackingUp => pb::VolumeStatus::BackingUp,
            VolumeStatus::RestoringBackup => pb::VolumeStatus::RestoringBackup,
            VolumeStatus::AwaitingTransfer => pb::VolumeStatus::AwaitingTransfer,
            VolumeStatus::Retyping => pb::VolumeStatus::Retyping,
            VolumeStatus::Maintenance => pb::VolumeStatus::Maintenance,
            VolumeStatus::Reverting => pb::VolumeStatus::Reverting,
            VolumeStatus::Managing => pb::VolumeStatus::Managing,
            VolumeStatus::ErrorManaging => pb::VolumeStatus::ErrorManaging,
        }
    }
}

/// The domain status of a wire status; `None` for `UNSPECIFIED`.
pub fn volume_status_from_proto(status: pb::VolumeStatus) -> Option<VolumeStatus> {
    Some(match status {
        pb::VolumeStatus::Unspecified => return None,
        pb::VolumeStatus::Creating => VolumeStatus::Creating,
        pb::VolumeStatus::Available => VolumeStatus::Available,
        pb::VolumeStatus::Reserved => VolumeStatus::Reserved,
        pb::VolumeStatus::Attaching => VolumeStatus::Attaching,
        pb::VolumeStatus::InUse => VolumeStatus::InUse,
        pb::VolumeStatus::Detaching => VolumeStatus::Detaching,
        pb::VolumeStatus::Extending => VolumeStatus::Extending,
        pb::VolumeStatus::Deleting => VolumeStatus::Deleting,
        pb::VolumeStatus::Error => VolumeStatus::Error,
        pb::VolumeStatus::ErrorDeleting => VolumeStatus::ErrorDeleting,
        pb::VolumeStatus::ErrorExtending => VolumeStatus::ErrorExtending,
        pb::VolumeStatus::BackingUp => VolumeStatus::BackingUp,
        pb::VolumeStatus::RestoringBackup => VolumeStatus::RestoringBackup,
        pb::VolumeStatus::AwaitingTransfer => VolumeStatus::AwaitingTransfer,
        pb::VolumeStatus::Retyping => VolumeStatus::Retyping,
        pb::VolumeStatus::Maintenance => VolumeStatus::Maintenance,
        pb::VolumeStatus::Reverting => VolumeStatus::Reverting,
        pb::VolumeStatus::Managing => VolumeStatus::Managing,
        pb::VolumeStatus::ErrorManaging => VolumeStatus::ErrorManaging,
    })
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

impl From<MigrationStatus> for pb::MigrationStatus {
    fn from(status: MigrationStatus) -> Self {
        match status {
            MigrationStatus::Never => pb::MigrationStatus::Unspecified,
            MigrationStatus::Migrating => pb::MigrationStatus::Migrating,
            MigrationStatus::Success => pb::MigrationStatus::Success,
            MigrationStatus::Error => pb::MigrationStatus::Error,
        }
    }
}

impl From<&Volume> for pb::Volume {
    fn from(v: &Volume) -> Self {
        pb::Volume {
            id: v.id.clone(),
            name: v.name.clone(),
            description: v.description.clone(),
            size_gib: v.size_gib,
            status: pb::VolumeStatus::from(v.status) as i32,
            volume_type: v.volume_type.clone(),
            availability_zone: v.availability_zone.clone(),
            metadata: v.metadata.clone(),
            host: v.host.clone().unwrap_or_default(),
            project_id: v.project_id.clone(),
            user_id: v.user_id.clone(),
            error_message: v.error_message.clone(),
            snapshot_id: v.snapshot_id.clone().unwrap_or_default(),
            source_volume_id: v.source_volume_id.clone().unwrap_or_default(),
            created_at: Some(timestamp(v.created_at_ms)),
            updated_at: Some(timestamp(v.updated_at_ms)),
            migration_status: pb::MigrationStatus::from(v.migration_status) as i32,
            migration_error: v.migration_error.clone(),
        }
    }
}

impl From<SnapshotStatus> for pb::SnapshotStatus {
    fn from(status: SnapshotStatus) -> Self {
        match status {
            SnapshotStatus::Creating => pb::SnapshotStatus::Creating,
            SnapshotStatus::Available => pb::SnapshotStatus::Available,
            SnapshotStatus::Deleting => pb::SnapshotStatus::Deleting,
            SnapshotStatus::Error => pb::SnapshotStatus::Error,
            SnapshotStatus::ErrorDeleting => pb::SnapshotStatus::ErrorDeleting,
            SnapshotStatus::Restoring => pb::SnapshotStatus::Restoring,
            SnapshotStatus::Managing => pb::SnapshotStatus::Managing,
            SnapshotStatus::ErrorManaging => pb::SnapshotStatus::ErrorManaging,
        }
    }
}

/// The domain status of a wire snapshot status; `None` for `UNSPECIFIED`.
pub fn snapshot_status_from_proto(status: pb::SnapshotStatus) -> Option<SnapshotStatus> {
    Some(match status {
        pb::SnapshotStatus::Unspecified => return None,
        pb::SnapshotStatus::Creating => SnapshotStatus::Creating,
        pb::SnapshotStatus::Available => SnapshotStatus::Available,
        pb::SnapshotStatus::Deleting => SnapshotStatus::Deleting,
        pb::SnapshotStatus::Error => SnapshotStatus::Error,
        pb::SnapshotStatus::ErrorDeleting => SnapshotStatus::ErrorDeleting,
        pb::SnapshotStatus::Restoring => SnapshotStatus::Restoring,
        pb::SnapshotStatus::Managing => SnapshotStatus::Managing,
        pb::SnapshotStatus::ErrorManaging => SnapshotStatus::ErrorManaging,
    })
}

impl From<&Snapshot> for pb::Snapshot {
    fn from(s: &Snapshot) -> Self {
        pb::Snapshot {
            id: s.id.clone(),
            volume_id: s.volume_id.clone(),
            name: s.name.clone(),
            description: s.description.clone(),
            size_gib: s.size_gib,
            status: pb::SnapshotStatus::from(s.status) as i32,
            project_id: s.project_id.clone(),
            user_id: s.user_id.clone(),
            error_message: s.error_message.clone(),
            created_at: Some(timestamp(s.created_at_ms)),
            updated_at: Some(timestamp(s.updated_at_ms)),
        }
    }
}

impl From<BackupStatus> for pb::BackupStatus {
    fn from(status: BackupStatus) -> Self {
        match status {
            BackupStatus::Creating => pb::BackupStatus::Creating,
            BackupStatus::Available => pb::BackupStatus::Available,
            BackupStatus::Deleting => pb::BackupStatus::Deleting,
            BackupStatus::Restoring => pb::BackupStatus::Restoring,
            BackupStatus::Error => pb::BackupStatus::Error,
            BackupStatus::ErrorDeleting => pb::BackupStatus::ErrorDeleting,
        }
    }
}

/// The domain status of a wire backup status; `None` for `UNSPECIFIED`.
pub fn backup_status_from_proto(status: pb::BackupStatus) -> Option<BackupStatus> {
    Some(match status {
        pb::BackupStatus::Unspecified => return None,
        pb::BackupStatus::Creating => BackupStatus::Creating,
        pb::BackupStatus::Available => BackupStatus::Available,
        pb::BackupStatus::Deleting => BackupStatus::Deleting,
        pb::BackupStatus::Restoring => BackupStatus::Restoring,
        pb::BackupStatus::Error => BackupStatus::Error,
        pb::BackupStatus::ErrorDeleting => BackupStatus::ErrorDeleting,
    })
}

impl From<&Backup> for pb::Backup {
    fn from(b: &Backup) -> Self {
        pb::Backup {
            id: b.id.clone(),
            volume_id: b.volume_id.clone(),
            name: b.name.clone(),
            description: b.description.clone(),
            size_gib: b.size_gib,
            status: pb::BackupStatus::from(b.status) as i32,
            project_id: b.project_id.clone(),
            user_id: b.user_id.clone(),
            error_message: b.error_message.clone(),
            incremental: b.incremental,
            parent_id: b.parent_id.clone().unwrap_or_default(),
            has_dependent_backups: b.has_dependents,
            host: b.host.clone().unwrap_or_default(),
            object_count: b.object_count,
            stored_bytes: b.stored_bytes,
            restore_volume_id: b.restore_volume_id.clone().unwrap_or_default(),
            created_at: Some(timestamp(b.created_at_ms)),
            updated_at: Some(timestamp(b.updated_at_ms)),
        }
    }
}

impl From<&crate::model::VolumeType> for pb::VolumeType {
    fn from(t: &crate::model::VolumeType) -> Self {
        pb::VolumeType {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            extra_specs: t.extra_specs.clone(),
            is_default: t.is_default,
            created_at: Some(timestamp(t.created_at_ms)),
            updated_at: Some(timestamp(t.updated_at_ms)),
        }
    }
}

impl From<&crate::model::Transfer> for pb::Transfer {
    fn from(t: &crate::model::Transfer) -> Self {
        pb::Transfer {
            id: t.id.clone(),
            name: t.name.clone(),
            volume_id: t.volume_id.clone(),
            source_project_id: t.source_project_id.clone(),
            destination_project_id: t.destination_project_id.clone().unwrap_or_default(),
            accepted: t.destination_project_id.is_some(),
            no_snapshots: t.no_snapshots,
            created_at: Some(timestamp(t.created_at_ms)),
            expires_at: Some(timestamp(t.expires_at_ms)),
        }
    }
}

/// The wire form of a registered service at `now_ms`: up when its last heartbeat
/// is at most `service_down_ms` old ([`crate::model::Service::is_up`]).
pub fn service_to_proto(
    service: &crate::model::Service,
    now_ms: i64,
    service_down_ms: i64,
) -> pb::Service {
    let state = if service.is_up(now_ms, service_down_ms) {
        pb::ServiceState::Up
    } else {
        pb::ServiceState::Down
    };
    pb::Service {
        binary: service.binary.clone(),
        host: service.host.clone(),
        availability_zone: service.availability_zone.clone(),
        enabled: !service.disabled,
        disabled_reason: service.disabled_reason.clone(),
        state: state as i32,
        last_heartbeat: Some(timestamp(service.last_heartbeat_ms)),
    }
}

impl From<AttachmentStatus> for pb::AttachmentStatus {
    fn from(status: AttachmentStatus) -> Self {
        match status {
            AttachmentStatus::Reserved => pb::AttachmentStatus::Reserved,
            AttachmentStatus::Attaching => pb::AttachmentStatus::Attaching,
            AttachmentStatus::Attached => pb::AttachmentStatus::Attached,
            AttachmentStatus::Detaching => pb::AttachmentStatus::Detaching,
            AttachmentStatus::Detached => pb::AttachmentStatus::Detached,
            AttachmentStatus::ErrorAttaching => pb::AttachmentStatus::ErrorAttaching,
            AttachmentStatus::ErrorDetaching => pb::AttachmentStatus::ErrorDetaching,
        }
    }
}

impl From<AttachMode> for pb::AttachMode {
    fn from(mode: AttachMode) -> Self {
        match mode {
            AttachMode::ReadWrite => pb::AttachMode::Rw,
            AttachMode::ReadOnly => pb::AttachMode::Ro,
        }
    }
}

/// The domain mode of a wire mode (`UNSPECIFIED` is read-write).
pub fn attach_mode_from_proto(mode: pb::AttachMode) -> AttachMode {
    match mode {
        pb::AttachMode::Unspecified | pb::AttachMode::Rw => AttachMode::ReadWrite,
        pb::AttachMode::Ro => AttachMode::ReadOnly,
    }
}

impl From<&Connector> for pb::Connector {
    fn from(c: &Connector) -> Self {
        pb::Connector {
            host: c.host.clone(),
            ip: c.ip.clone(),
            initiator: c.initiator.clone(),
            properties: c.properties.clone(),
        }
    }
}

impl From<&pb::Connector> for Connector {
    fn from(c: &pb::Connector) -> Self {
        Connector {
            host: c.host.clone(),
            ip: c.ip.clone(),
            initiator: c.initiator.clone(),
            properties: c.properties.clone(),
        }
    }
}

impl From<&ConnectionInfo> for pb::ConnectionInfo {
    fn from(info: &ConnectionInfo) -> Self {
        pb::ConnectionInfo {
            protocol: info.protocol.clone(),
            host: info.host.clone(),
            port: u32::from(info.port),
            export_name: info.export_name.clone(),
            uri: info.uri(),
            read_only: info.read_only,
        }
    }
}

/// The domain form of a wire connection info (from the bus); `None` when its port
/// does not fit a TCP port.
pub fn connection_info_from_proto(info: &pb::ConnectionInfo) -> Option<ConnectionInfo> {
    Some(ConnectionInfo {
        protocol: info.protocol.clone(),
        host: info.host.clone(),
        port: u16::try_from(info.port).ok()?,
        export_name: info.export_name.clone(),
        read_only: info.read_only,
    })
}

impl From<&Attachment> for pb::Attachment {
    fn from(a: &Attachment) -> Self {
        pb::Attachment {
            id: a.id.clone(),
            volume_id: a.volume_id.clone(),
            project_id: a.project_id.clone(),
            status: pb::AttachmentStatus::from(a.status) as i32,
            instance_id: a.instance_id.clone(),
            connector: Some(pb::Connector::from(&a.connector)),
            mode: pb::AttachMode::from(a.mode) as i32,
            connection_info: a.connection_info.as_ref().map(pb::ConnectionInfo::from),
            error_message: a.error_message.clone(),
            volume_host: a.volume_host.clone(),
            created_at: Some(timestamp(a.created_at_ms)),
            updated_at: Some(timestamp(a.updated_at_ms)),
            attached_at: a.attached_at_ms.map(timestamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_up_within_the_down_time() {
        let service = crate::model::Service {
            binary: "scoria-volume".into(),
            host: "n1@file".into(),
            availability_zone: "az1".into(),
            disabled: true,
            disabled_reason: "maintenance".into(),
            last_heartbeat_ms: 1_000_000,
            cluster: String::new(),
        };
        let up = service_to_proto(&service, 1_060_000, 60_000);
        assert_eq!(
            up.state,
            pb::ServiceState::Up as i32,
            "exactly the down time is up"
        );
        assert!(!up.enabled);
        assert_eq!(up.disabled_reason, "maintenance");
        assert_eq!(up.binary, "scoria-volume");
        assert_eq!(up.host, "n1@file");
        assert_eq!(up.availability_zone, "az1");
        assert_eq!(up.last_heartbeat, Some(timestamp(1_000_000)));
        let down = service_to_proto(&service, 1_060_001, 60_000);
        assert_eq!(down.state, pb::ServiceState::Down as i32);
    }

    #[test]
    fn every_status_round_trips() {
        for status in VolumeStatus::ALL {
            assert_eq!(
                volume_status_from_proto(pb::VolumeStatus::from(status)),
                Some(status)
            );
        }
        assert_eq!(
            volume_status_from_proto(pb::VolumeStatus::Unspecified),
            None
        );
    }

    #[test]
    fn every_snapshot_status_round_trips() {
        for status in SnapshotStatus::ALL {
            assert_eq!(
                snapshot_status_from_proto(pb::SnapshotStatus::from(status)),
                Some(status)
            );
        }
        assert_eq!(
            snapshot_status_from_proto(pb::SnapshotStatus::Unspecified),
            None
        );
    }

    #[test]
    fn every_backup_status_round_trips() {
        for status in BackupStatus::ALL {
            assert_eq!(
                backup_status_from_proto(pb::BackupStatus::from(status)),
                Some(status)
            );
        }
        assert_eq!(
            backup_status_from_proto(pb::BackupStatus::Unspecified),
            None
        );
    }

    #[test]
    fn timestamps_split_milliseconds() {
        assert_eq!(
            timestamp(1_500),
            Timestamp {
                seconds: 1,
                nanos: 500_000_000
            }
        );
    }
}
