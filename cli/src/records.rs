//! The API's messages as the CLI prints them: a resource's fields (snake_case,
//! as `openstack ... show`) and a list's columns (Title Case, as `openstack ...
//! list`), statuses spelled as Cinder spells them (`available`, `in-use`).

use std::time::{Duration, UNIX_EPOCH};

use scoria_proto::v1 as pb;
use serde_json::{Map, Value};

use crate::{error::CliError, output::Record};

/// An enum value's name without its prefix, lower case, `in_use` as `in-use`.
fn spelled(name: &str, prefix: &str) -> String {
    let bare = name
        .strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase();
    if bare == "in_use" {
        "in-use".to_owned()
    } else {
        bare
    }
}

/// A volume's status as Cinder spells it.
pub fn volume_status(status: pb::VolumeStatus) -> String {
    spelled(status.as_str_name(), "VOLUME_STATUS_")
}

/// A snapshot's status.
pub fn snapshot_status(status: pb::SnapshotStatus) -> String {
    spelled(status.as_str_name(), "SNAPSHOT_STATUS_")
}

/// Where a volume's last move to another backend stands (`migrating`,
/// `success`, `error`; empty if it never moved).
pub fn migration_status(status: pb::MigrationStatus) -> String {
    match status {
        pb::MigrationStatus::Unspecified => String::new(),
        _ => spelled(status.as_str_name(), "MIGRATION_STATUS_"),
    }
}

/// An attachment's status.
pub fn attachment_status(status: pb::AttachmentStatus) -> String {
    spelled(status.as_str_name(), "ATTACHMENT_STATUS_")
}

/// The enum value `text` names (`in-use`, `in_use`, `IN_USE` or the full
/// proto name), through `parse` of the proto name.
fn parse_status<T>(
    text: &str,
    prefix: &str,
    parse: fn(&str) -> Option<T>,
    all: &[&str],
) -> Result<T, CliError> {
    let upper = text.trim().to_ascii_uppercase().replace('-', "_");
    let full = if upper.starts_with(prefix) {
        upper
    } else {
        format!("{prefix}{upper}")
    };
    parse(&full)
        .filter(|_| !full.ends_with("UNSPECIFIED"))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "unknown status {text:?}: one of {}",
                all.join(", ")
            ))
        })
}

/// A volume status given on the command line.
pub fn parse_volume_status(text: &str) -> Result<pb::VolumeStatus, CliError> {
    parse_status(
        text,
        "VOLUME_STATUS_",
        pb::VolumeStatus::from_str_name,
        &[
            "creating",
            "available",
            "reserved",
            "attaching",
            "in-use",
            "detaching",
            "extending",
            "deleting",
            "error",
            "error_deleting",
            "error_extending",
            "backing_up",
            "restoring_backup",
            "awaiting_transfer",
            "retyping",
            "maintenance",
            "reverting",
            "managing",
            "error_managing",
        ],
    )
}

/// A snapshot status given on the command line.
pub fn parse_snapshot_status(text: &str) -> Result<pb::SnapshotStatus, CliError> {
    parse_status(
        text,
        "SNAPSHOT_STATUS_",
        pb::SnapshotStatus::from_str_name,
        &[
            "creating",
            "available",
            "deleting",
            "error",
            "error_deleting",
            "restoring",
            "managing",
            "error_managing",
        ],
    )
}

/// A timestamp as RFC 3339 (UTC, seconds), null when unset.
pub fn time(ts: Option<&prost_types::Timestamp>) -> Value {
    let Some(ts) = ts else { return Value::Null };
    let Ok(secs) = u64::try_from(ts.seconds) else {
        return Value::Null;
    };
    Value::String(
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string(),
    )
}

/// A string map as a JSON object.
pub fn map(entries: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Object(
        entries
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

/// `volume show`; `migration_status` and `migration_error` only once the
/// volume was moved (or a move of it failed).
pub fn volume(v: &pb::Volume) -> Record {
    let record = Record::new()
        .with("id", v.id.as_str())
        .with("name", v.name.as_str())
        .with("description", v.description.as_str())
        .with("status", volume_status(v.status()))
        .with("size", v.size_gib)
        .with("type", v.volume_type.as_str())
        .with("availability_zone", v.availability_zone.as_str())
        .with("host", v.host.as_str())
        .with("project_id", v.project_id.as_str())
        .with("user_id", v.user_id.as_str())
        .with("properties", map(&v.metadata))
        .with("snapshot_id", v.snapshot_id.as_str())
        .with("source_volid", v.source_volume_id.as_str())
        .with("error_message", v.error_message.as_str());
    let record = match v.migration_status() {
        pb::MigrationStatus::Unspecified => record,
        status => record.with("migration_status", migration_status(status)),
    };
    let record = if v.migration_error.is_empty() {
        record
    } else {
        record.with("migration_error", v.migration_error.as_str())
    };
    record
        .with("created_at", time(v.created_at.as_ref()))
        .with("updated_at", time(v.updated_at.as_ref()))
}

/// `volume list` columns (more with `--long`).
pub fn volume_columns(long: bool) -> Vec<&'static str> {
    let mut columns = vec!["ID", "Name", "Status", "Size"];
    if long {
        columns.extend(["Type", "Availability Zone", "Host", "Project", "Properties"]);
    }
    columns
}

/// A `volume list` row.
pub fn volume_row(v: &pb::Volume) -> Record {
    Record::new()
        .with("ID", v.id.as_str())
        .with("Name", v.name.as_str())
        .with("Status", volume_status(v.status()))
        .with("Size", v.size_gib)
        .with("Type", v.volume_type.as_str())
        .with("Availability Zone", v.availability_zone.as_str())
        .with("Host", v.host.as_str())
        .with("Project", v.project_id.as_str())
        .with("Properties", map(&v.metadata))
}

/// `snapshot show`.
pub fn snapshot(s: &pb::Snapshot) -> Record {
    Record::new()
        .with("id", s.id.as_str())
        .with("name", s.name.as_str())
        .with("description", s.description.as_str())
        .with("status", snapshot_status(s.status()))
        .with("size", s.size_gib)
        .with("volume_id", s.volume_id.as_str())
        .with("project_id", s.project_id.as_str())
        .with("error_message", s.error_message.as_str())
        .with("created_at", time(s.created_at.as_ref()))
        .with("updated_at", time(s.updated_at.as_ref()))
}

/// `snapshot list` columns.
pub fn snapshot_columns(long: bool) -> Vec<&'static str> {
    let mut columns = vec!["ID", "Name", "Status", "Size", "Volume"];
    if long {
        columns.extend(["Description", "Created At"]);
    }
    columns
}

/// A `snapshot list` row.
pub fn snapshot_row(s: &pb::Snapshot) -> Record {
    Record::new()
        .with("ID", s.id.as_str())
        .with("Name", s.name.as_str())
        .with("Status", snapshot_status(s.status()))
        .with("Size", s.size_gib)
        .with("Volume", s.volume_id.as_str())
        .with("Description", s.description.as_str())
        .with("Created At", time(s.created_at.as_ref()))
}

fn mode(m: pb::AttachMode) -> &'static str {
    match m {
        pb::AttachMode::Ro => "ro",
        _ => "rw",
    }
}

/// `attachment show` (and create): the NBD URI first after the ids.
pub fn attachment(a: &pb::Attachment) -> Record {
    let info = a.connection_info.clone().unwrap_or_default();
    let connector = a.connector.clone().unwrap_or_default();
    Record::new()
        .with("id", a.id.as_str())
        .with("volume_id", a.volume_id.as_str())
        .with("status", attachment_status(a.status()))
        .with("uri", info.uri.as_str())
        .with("mode", mode(a.mode()))
        .with("host", connector.host.as_str())
        .with("instance_id", a.instance_id.as_str())
        .with("protocol", info.protocol.as_str())
        .with("export_host", info.host.as_str())
        .with("export_port", info.port)
        .with("export_name", info.export_name.as_str())
        .with("volume_host", a.volume_host.as_str())
        .with("error_message", a.error_message.as_str())
        .with("attached_at", time(a.attached_at.as_ref()))
        .with("created_at", time(a.created_at.as_ref()))
}

/// `attachment list` columns.
pub fn attachment_columns() -> Vec<&'static str> {
    vec!["ID", "Volume", "Status", "Host", "Mode", "URI"]
}

/// An `attachment list` row.
pub fn attachment_row(a: &pb::Attachment) -> Record {
    let uri = a
        .connection_info
        .as_ref()
        .map(|i| i.uri.clone())
        .unwrap_or_default();
    Record::new()
        .with("ID", a.id.as_str())
        .with("Volume", a.volume_id.as_str())
        .with("Status", attachment_status(a.status()))
        .with(
            "Host",
            a.connector
                .as_ref()
                .map(|c| c.host.clone())
                .unwrap_or_default(),
        )
        .with("Mode", mode(a.mode()))
        .with("URI", uri)
}

/// `type show`.
pub fn volume_type(t: &pb::VolumeType) -> Record {
    Record::new()
        .with("id", t.id.as_str())
        .with("name", t.name.as_str())
        .with("description", t.description.as_str())
        .with("is_default", t.is_default)
        .with("properties", map(&t.extra_specs))
        .with("created_at", time(t.created_at.as_ref()))
        .with("updated_at", time(t.updated_at.as_ref()))
}

/// `type list` columns.
pub fn type_columns(long: bool) -> Vec<&'static str> {
    let mut columns = vec!["ID", "Name", "Is Default"];
    if long {
        columns.extend(["Description", "Properties"]);
    }
    columns
}

/// A `type list` row.
pub fn type_row(t: &pb::VolumeType) -> Record {
    Record::new()
        .with("ID", t.id.as_str())
        .with("Name", t.name.as_str())
        .with("Is Default", t.is_default)
        .with("Description", t.description.as_str())
        .with("Properties", map(&t.extra_specs))
}

/// An `availability-zone list` row.
pub fn zone_row(z: &pb::AvailabilityZone) -> Record {
    Record::new().with("Zone Name", z.name.as_str()).with(
        "Zone Status",
        if z.available {
            "available"
        } else {
            "not available"
        },
    )
}

/// A `service list` row (also what `service set` shows).
pub fn service_row(s: &pb::Service) -> Record {
    Record::new()
        .with("Binary", s.binary.as_str())
        .with("Host", s.host.as_str())
        .with("Zone", s.availability_zone.as_str())
        .with("Status", if s.enabled { "enabled" } else { "disabled" })
        .with(
            "State",
            if s.state() == pb::ServiceState::Up {
                "up"
            } else {
                "down"
            },
        )
        .with("Updated At", time(s.last_heartbeat.as_ref()))
        .with("Disabled Reason", s.disabled_reason.as_str())
}

/// `service list` columns.
pub const SERVICE_COLUMNS: [&str; 7] = [
    "Binary",
    "Host",
    "Zone",
    "Status",
    "State",
    "Updated At",
    "Disabled Reason",
];

/// `pool list` columns.
pub fn pool_columns(long: bool) -> Vec<&'static str> {
    let mut columns = vec!["Name"];
    if long {
        columns.extend([
            "Backend",
            "Zone",
            "Driver",
            "Total GiB",
            "Free GiB",
            "Allocated GiB",
            "Capabilities",
        ]);
    }
    columns
}

/// A `pool list` row.
pub fn pool_row(p: &pb::StoragePool) -> Record {
    Record::new()
        .with("Name", p.name.as_str())
        .with("Backend", p.backend_name.as_str())
        .with("Zone", p.availability_zone.as_str())
        .with("Driver", p.driver.as_str())
        .with("Total GiB", p.total_capacity_gib)
        .with("Free GiB", p.free_capacity_gib)
        .with("Allocated GiB", p.allocated_capacity_gib)
        .with("Capabilities", map(&p.capabilities))
}

/// `quota show` columns.
pub const QUOTA_COLUMNS: [&str; 4] = ["Resource", "In Use", "Reserved", "Limit"];

/// A `quota show` row.
pub fn quota_row(u: &pb::QuotaUsage) -> Record {
    Record::new()
        .with("Resource", u.resource.as_str())
        .with("In Use", u.in_use)
        .with("Reserved", u.reserved)
        .with("Limit", u.limit)
}

/// `transfer show` (and `create`, with its auth key; `accept`).
pub fn transfer(t: &pb::Transfer, auth_key: Option<&str>) -> Record {
    let mut record = Record::new()
        .with("id", t.id.as_str())
        .with("name", t.name.as_str())
        .with("volume_id", t.volume_id.as_str())
        .with("source_project_id", t.source_project_id.as_str());
    if t.accepted {
        record = record
            .with("destination_project_id", t.destination_project_id.as_str())
            .with("accepted", true);
    }
    if let Some(key) = auth_key {
        record = record.with("auth_key", key);
    }
    record
        .with("no_snapshots", t.no_snapshots)
        .with("created_at", time(t.created_at.as_ref()))
        .with("expires_at", time(t.expires_at.as_ref()))
}

/// `transfer list` columns.
pub fn transfer_columns() -> Vec<&'static str> {
    vec!["ID", "Name", "Volume", "Expires At"]
}

/// A `transfer list` row.
pub fn transfer_row(t: &pb::Transfer) -> Record {
    Record::new()
        .with("ID", t.id.as_str())
        .with("Name", t.name.as_str())
        .with("Volume", t.volume_id.as_str())
        .with("Expires At", time(t.expires_at.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_shows_its_migration_only_once_it_moved() {
        let never = volume(&pb::Volume::default());
        assert!(never.get("migration_status").is_none(), "{never:?}");
        assert!(never.get("migration_error").is_none(), "{never:?}");
        let mut failed = pb::Volume {
            migration_error: "no backend fits type gold".into(),
            ..Default::default()
        };
        failed.set_migration_status(pb::MigrationStatus::Error);
        let shown = volume(&failed);
        assert_eq!(
            shown.get("migration_status"),
            Some(&Value::String("error".into()))
        );
        assert_eq!(
            shown.get("migration_error"),
            Some(&Value::String("no backend fits type gold".into()))
        );
        let mut moved = pb::Volume::default();
        moved.set_migration_status(pb::MigrationStatus::Success);
        let shown = volume(&moved);
        assert_eq!(
            shown.get("migration_status"),
            Some(&Value::String("success".into()))
        );
        assert!(shown.get("migration_error").is_none(), "{shown:?}");
    }

    #[test]
    fn statuses_read_as_cinder_spells_them() {
        assert_eq!(volume_status(pb::VolumeStatus::InUse), "in-use");
        assert_eq!(
            volume_status(pb::VolumeStatus::ErrorDeleting),
            "error_deleting"
        );
        for text in ["in-use", "IN_USE", "VOLUME_STATUS_IN_USE"] {
            assert_eq!(
                parse_volume_status(text).expect(text),
                pb::VolumeStatus::InUse
            );
        }
        assert!(parse_volume_status("unspecified").is_err());
        for (text, status) in [
            ("retyping", pb::VolumeStatus::Retyping),
            ("maintenance", pb::VolumeStatus::Maintenance),
            ("reverting", pb::VolumeStatus::Reverting),
            ("managing", pb::VolumeStatus::Managing),
            ("error_managing", pb::VolumeStatus::ErrorManaging),
            ("error-managing", pb::VolumeStatus::ErrorManaging),
        ] {
            assert_eq!(parse_volume_status(text).expect(text), status);
            assert_eq!(volume_status(status), text.replace('-', "_"));
        }
        for (text, status) in [
            ("restoring", pb::SnapshotStatus::Restoring),
            ("managing", pb::SnapshotStatus::Managing),
            ("error_managing", pb::SnapshotStatus::ErrorManaging),
        ] {
            assert_eq!(parse_snapshot_status(text).expect(text), status);
            assert_eq!(snapshot_status(status), text);
        }
        let err = parse_volume_status("moving").expect_err("unknown");
        assert!(err.to_string().contains("error_managing"), "{err}");
        let err = parse_volume_status("broken").expect_err("unknown");
        assert!(err.to_string().contains("available"), "{err}");
        assert_eq!(
            time(Some(&prost_types::Timestamp {
                seconds: 0,
                nanos: 0
            })),
            Value::String("1970-01-01T00:00:00Z".into())
        );
    }
}
