//! The default policy: Cinder's base rules, and one rule per RPC with Cinder's
//! current defaults (readers read, members of the project change things, admins
//! do the admin actions).

/// Rules every policy has, that the per-RPC rules refer to.
pub(super) const BASE_RULES: &[(&str, &str)] = &[
    ("context_is_admin", "role:admin"),
    ("admin_api", "rule:context_is_admin"),
    (
        "project_member_api",
        "role:member and project_id:%(project_id)s",
    ),
    (
        "project_reader_api",
        "role:reader and project_id:%(project_id)s",
    ),
    (
        "admin_or_project_member",
        "rule:admin_api or rule:project_member_api",
    ),
    (
        "admin_or_project_reader",
        "rule:admin_api or rule:project_reader_api",
    ),
    // Cinder's older names, so policy files written against them still load.
    (
        "admin_or_owner",
        "rule:admin_api or project_id:%(project_id)s",
    ),
    ("default", "rule:admin_or_owner"),
    ("volume_type:manage", "rule:admin_api"),
];

const WRITE: &str = "rule:admin_or_project_member";
const READ: &str = "rule:admin_or_project_reader";
const ADMIN: &str = "rule:admin_api";
const TYPE_MANAGE: &str = "rule:volume_type:manage";

/// Every method behind the auth layer by its full gRPC path, with its rule and
/// the rule's default. A path that is not here is refused whoever asks.
pub(super) const METHOD_RULES: &[(&str, &str, &str)] = &[
    (
        "/scoria.v1.VolumeService/CreateVolume",
        "volume:create",
        WRITE,
    ),
    ("/scoria.v1.VolumeService/GetVolume", "volume:get", READ),
    (
        "/scoria.v1.VolumeService/ListVolumes",
        "volume:get_all",
        READ,
    ),
    (
        "/scoria.v1.VolumeService/UpdateVolume",
        "volume:update",
        WRITE,
    ),
    (
        "/scoria.v1.VolumeService/DeleteVolume",
        "volume:delete",
        WRITE,
    ),
    (
        "/scoria.v1.VolumeService/ExtendVolume",
        "volume:extend",
        WRITE,
    ),
    ("/scoria.v1.VolumeService/WatchVolume", "volume:watch", READ),
    (
        "/scoria.v1.SnapshotService/CreateSnapshot",
        "snapshot:create",
        WRITE,
    ),
    (
        "/scoria.v1.SnapshotService/GetSnapshot",
        "snapshot:get",
        READ,
    ),
    (
        "/scoria.v1.SnapshotService/ListSnapshots",
        "snapshot:get_all",
        READ,
    ),
    (
        "/scoria.v1.SnapshotService/DeleteSnapshot",
        "snapshot:delete",
        WRITE,
    ),
    (
        "/scoria.v1.SnapshotService/WatchSnapshot",
        "snapshot:watch",
        READ,
    ),
    (
        "/scoria.v1.BackupService/CreateBackup",
        "backup:create",
        WRITE,
    ),
    ("/scoria.v1.BackupService/GetBackup", "backup:get", READ),
    (
        "/scoria.v1.BackupService/ListBackups",
        "backup:get_all",
        READ,
    ),
    (
        "/scoria.v1.BackupService/DeleteBackup",
        "backup:delete",
        WRITE,
    ),
    (
        "/scoria.v1.BackupService/RestoreBackup",
        "backup:restore",
        WRITE,
    ),
    (
        "/scoria.v1.AttachmentService/CreateAttachment",
        "volume:attach",
        WRITE,
    ),
    (
        "/scoria.v1.AttachmentService/GetAttachment",
        "volume:get_attachment",
        READ,
    ),
    (
        "/scoria.v1.AttachmentService/ListAttachments",
        "volume:get_all_attachments",
        READ,
    ),
    (
        "/scoria.v1.AttachmentService/WatchAttachment",
        "volume:watch_attachment",
        READ,
    ),
    (
        "/scoria.v1.AttachmentService/DeleteAttachment",
        "volume:detach",
        WRITE,
    ),
    (
        "/scoria.v1.VolumeTypeService/CreateVolumeType",
        "volume_type:create",
        TYPE_MANAGE,
    ),
    (
        "/scoria.v1.VolumeTypeService/GetVolumeType",
        "volume_type:get",
        READ,
    ),
    (
        "/scoria.v1.VolumeTypeService/ListVolumeTypes",
        "volume_type:get_all",
        READ,
    ),
    (
        "/scoria.v1.VolumeTypeService/UpdateVolumeType",
        "volume_type:update",
        TYPE_MANAGE,
    ),
    (
        "/scoria.v1.VolumeTypeService/DeleteVolumeType",
        "volume_type:delete",
        TYPE_MANAGE,
    ),
    (
        "/scoria.v1.AvailabilityZoneService/ListAvailabilityZones",
        "availability_zone:list",
        READ,
    ),
    (
        "/scoria.v1.AdminService/ListServices",
        "volume_extension:services:index",
        ADMIN,
    ),
    (
        "/scoria.v1.AdminService/SetServiceEnabled",
        "volume_extension:services:update",
        ADMIN,
    ),
    (
        "/scoria.v1.AdminService/ResetVolumeStatus",
        "volume_extension:volume_admin_actions:reset_status",
        ADMIN,
    ),
    (
        "/scoria.v1.AdminService/ListPools",
        "scheduler_extension:scheduler_stats:get_pools",
        ADMIN,
    ),
    (
        "/scoria.v1.AdminService/CheckQuotaUsage",
        "volume_extension:quota_usage:check",
        ADMIN,
    ),
    ("/scoria.v1.QuotaService/GetQuota", "quota:get", READ),
    ("/scoria.v1.QuotaService/UpdateQuota", "quota:update", ADMIN),
    ("/scoria.v1.QuotaService/DeleteQuota", "quota:delete", ADMIN),
    (
        "/scoria.v1.QuotaService/GetDefaultQuota",
        "quota:get_default",
        READ,
    ),
    (
        "/scoria.v1.TransferService/CreateTransfer",
        "volume:create_transfer",
        WRITE,
    ),
    // Any member of the receiving project (the target is the caller's own).
    (
        "/scoria.v1.TransferService/AcceptTransfer",
        "volume:accept_transfer",
        WRITE,
    ),
    (
        "/scoria.v1.TransferService/GetTransfer",
        "volume:get_transfer",
        READ,
    ),
    (
        "/scoria.v1.TransferService/ListTransfers",
        "volume:get_all_transfers",
        READ,
    ),
    (
        "/scoria.v1.TransferService/DeleteTransfer",
        "volume:delete_transfer",
        WRITE,
    ),
    (
        "/scoria.v1.VolumeService/RevertVolumeToSnapshot",
        "volume:revert_to_snapshot",
        WRITE,
    ),
    (
        "/scoria.v1.AdminService/ManageVolume",
        "volume_extension:volume_manage",
        ADMIN,
    ),
    (
        "/scoria.v1.AdminService/UnmanageVolume",
        "volume_extension:volume_unmanage",
        ADMIN,
    ),
    (
        "/scoria.v1.AdminService/ManageSnapshot",
        "snapshot_extension:snapshot_manage",
        ADMIN,
    ),
    (
        "/scoria.v1.AdminService/UnmanageSnapshot",
        "snapshot_extension:snapshot_unmanage",
        ADMIN,
    ),
    (
        "/scoria.v1.VolumeService/RetypeVolume",
        "volume:retype",
        WRITE,
    ),
    (
        "/scoria.v1.AdminService/MigrateVolume",
        "volume:migrate_volume",
        ADMIN,
    ),
];

/// Cinder's names for rules Scoria names otherwise: a policy file may use either.
pub(super) const ALIASES: &[(&str, &str)] = &[
    ("volume:create_snapshot", "snapshot:create"),
    ("volume:get_snapshot", "snapshot:get"),
    ("volume:get_all_snapshots", "snapshot:get_all"),
    ("volume:delete_snapshot", "snapshot:delete"),
    ("volume:attachment_create", "volume:attach"),
    ("volume:attachment_delete", "volume:detach"),
    ("volume_extension:types_manage", "volume_type:manage"),
    ("volume_extension:type_create", "volume_type:create"),
    ("volume_extension:type_update", "volume_type:update"),
    ("volume_extension:type_delete", "volume_type:delete"),
    ("volume_extension:type_get", "volume_type:get"),
    ("volume_extension:type_get_all", "volume_type:get_all"),
    (
        "volume_extension:availability_zone_list",
        "availability_zone:list",
    ),
    ("volume_extension:quotas:show", "quota:get"),
    ("volume_extension:quotas:update", "quota:update"),
    ("volume_extension:quotas:delete", "quota:delete"),
];

/// Roles a role implies, as Keystone's default implied roles do.
pub(super) const IMPLIED_ROLES: &[(&str, &[&str])] =
    &[("admin", &["member", "reader"]), ("member", &["reader"])];
