//! Quotas, exact by construction (no reserve / commit / rollback that can leak).
//!
//! - **Usage** lives in `quota_usages` (`in_use`, `reserved` per project and
//!   resource) and is moved only by triggers on the rows themselves (see
//!   [`holdings`]): whatever writes a volume, snapshot or attachment row moves
//!   its project's usage in the same transaction.
//! - **Limits** are the per-project overrides in `quotas`, else the defaults the
//!   [`Db`] handle carries ([`Db::with_quota_defaults`]; the API's come from its
//!   config).
//! - **Checks** run inside the transaction that writes the resource, after
//!   taking the project's row in `quota_locks`: of two requests of one project
//!   the second waits for the first to commit and then sees its usage (SQLite
//!   has one writer anyway; on PostgreSQL the row lock serialises them), so a
//!   limit is never passed however many API instances race. A refused request
//!   rolls back: nothing is written.

mod holdings;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt};

use serde::Deserialize;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::{Db, DbError, DbResult};
use crate::model::now_ms;

pub(in crate::db) use holdings::{create_failed, drop_triggers, triggers};

/// The recount of every project's usage (see [`holdings`]).
pub(in crate::db) fn recount_all() -> String {
    holdings::recount("1 = 1")
}

/// The limit that means "no limit".
pub const UNLIMITED: i64 = -1;

/// A resource a project's quota limits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// Volumes (any status but a failed create).
    Volumes,
    /// GiB of volumes and snapshots.
    Gigabytes,
    /// Snapshots.
    Snapshots,
    /// Attachments.
    Attachments,
    /// The largest single volume, in GiB (a bound, not a usage).
    PerVolumeGigabytes,
    /// Volumes of one volume type (by name).
    VolumesOfType(String),
    /// GiB of volumes and snapshots of one volume type.
    GigabytesOfType(String),
    /// Snapshots of volumes of one volume type.
    SnapshotsOfType(String),
    /// Backups (any status).
    Backups,
    /// GiB of backups (their volumes' sizes).
    BackupGigabytes,
}

impl Resource {
    /// The resources every project has, type-less.
    pub const BASE: [Resource; 7] = [
        Resource::Volumes,
        Resource::Gigabytes,
        Resource::Snapshots,
        Resource::Attachments,
        Resource::PerVolumeGigabytes,
        Resource::Backups,
        Resource::BackupGigabytes,
    ];

    /// The per-type resources of volume type `name`.
    pub fn of_type(name: &str) -> [Resource; 3] {
        [
            Resource::VolumesOfType(name.to_owned()),
            Resource::GigabytesOfType(name.to_owned()),
            Resource::SnapshotsOfType(name.to_owned()),
        ]
    }

    /// The resource's name, as Cinder spells it (`volumes`, `gigabytes_<type>`).
    pub fn name(&self) -> String {
        match self {
            Resource::Volumes => "volumes".to_owned(),
            Resource::Gigabytes => "gigabytes".to_owned(),
            Resource::Snapshots => "snapshots".to_owned(),
            Resource::Attachments => "attachments".to_owned(),
            Resource::PerVolumeGigabytes => "per_volume_gigabytes".to_owned(),
            Resource::Backups => "backups".to_owned(),
            Resource::BackupGigabytes => "backup_gigabytes".to_owned(),
            Resource::VolumesOfType(t) => format!("volumes_{t}"),
            Resource::GigabytesOfType(t) => format!("gigabytes_{t}"),
            Resource::SnapshotsOfType(t) => format!("snapshots_{t}"),
        }
    }

    /// The resource named `name`, if any (a per-type name does not say whether
    /// the type exists).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "volumes" => Resource::Volumes,
            "gigabytes" => Resource::Gigabytes,
            "snapshots" => Resource::Snapshots,
            "attachments" => Resource::Attachments,
            "per_volume_gigabytes" => Resource::PerVolumeGigabytes,
            "backups" => Resource::Backups,
            "backup_gigabytes" => Resource::BackupGigabytes,
            _ => {
                let typed = |prefix: &str| {
                    name.strip_prefix(prefix)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                };
                if let Some(t) = typed("volumes_") {
                    Resource::VolumesOfType(t)
                } else if let Some(t) = typed("gigabytes_") {
                    Resource::GigabytesOfType(t)
                } else if let Some(t) = typed("snapshots_") {
                    Resource::SnapshotsOfType(t)
                } else {
                    return None;
                }
            }
        })
    }

    /// The volume type of a per-type resource.
    pub fn volume_type(&self) -> Option<&str> {
        match self {
            Resource::VolumesOfType(t)
            | Resource::GigabytesOfType(t)
            | Resource::SnapshotsOfType(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The limits of a project without overrides (Cinder's `quota_*` options);
/// [`UNLIMITED`] is no limit. Per-type resources default to unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaDefaults {
    /// `SCORIA_QUOTA_VOLUMES` (10).
    pub volumes: i64,
    /// `SCORIA_QUOTA_GIGABYTES` (1000).
    pub gigabytes: i64,
    /// `SCORIA_QUOTA_SNAPSHOTS` (10).
    pub snapshots: i64,
    /// `SCORIA_QUOTA_ATTACHMENTS` (unlimited).
    pub attachments: i64,
    /// `SCORIA_QUOTA_PER_VOLUME_GIGABYTES` (unlimited).
    pub per_volume_gigabytes: i64,
    /// `SCORIA_QUOTA_BACKUPS` (10).
    pub backups: i64,
    /// `SCORIA_QUOTA_BACKUP_GIGABYTES` (1000).
    pub backup_gigabytes: i64,
}

impl QuotaDefaults {
    /// Cinder's defaults.
    pub const CINDER: QuotaDefaults = QuotaDefaults {
        volumes: 10,
        gigabytes: 1000,
        snapshots: 10,
        attachments: UNLIMITED,
        per_volume_gigabytes: UNLIMITED,
        backups: 10,
        backup_gigabytes: 1000,
    };

    /// No limit at all.
    pub const UNLIMITED: QuotaDefaults = QuotaDefaults {
        volumes: UNLIMITED,
        gigabytes: UNLIMITED,
        snapshots: UNLIMITED,
        attachments: UNLIMITED,
        per_volume_gigabytes: UNLIMITED,
        backups: UNLIMITED,
        backup_gigabytes: UNLIMITED,
    };

    /// The default limit of `resource`.
    pub fn of(&self, resource: &Resource) -> i64 {
        match resource {
            Resource::Volumes => self.volumes,
            Resource::Gigabytes => self.gigabytes,
            Resource::Snapshots => self.snapshots,
            Resource::Attachments => self.attachments,
            Resource::PerVolumeGigabytes => self.per_volume_gigabytes,
            Resource::Backups => self.backups,
            Resource::BackupGigabytes => self.backup_gigabytes,
            _ => UNLIMITED,
        }
    }

    /// The first default that is neither [`UNLIMITED`] nor a count (`>= 0`), by
    /// its key, for config validation.
    pub fn invalid(&self) -> Option<(&'static str, i64)> {
        [
            ("quota.volumes", self.volumes),
            ("quota.gigabytes", self.gigabytes),
            ("quota.snapshots", self.snapshots),
            ("quota.attachments", self.attachments),
            ("quota.per_volume_gigabytes", self.per_volume_gigabytes),
            ("quota.backups", self.backups),
            ("quota.backup_gigabytes", self.backup_gigabytes),
        ]
        .into_iter()
        .find(|(_, v)| !is_valid_limit(*v))
    }
}

impl Default for QuotaDefaults {
    fn default() -> Self {
        Self::CINDER
    }
}

/// Whether `limit` may be set: a count, or [`UNLIMITED`].
pub fn is_valid_limit(limit: i64) -> bool {
    limit >= UNLIMITED
}

/// One resource of a project's quota: its limit and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaLine {
    /// The resource.
    pub resource: Resource,
    /// The limit ([`UNLIMITED`]: none).
    pub limit: i64,
    /// In use (0 for `per_volume_gigabytes`).
    pub in_use: i64,
    /// Reserved by operations in flight.
    pub reserved: i64,
}

/// A resource a request would take past its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excess {
    /// The resource.
    pub resource: Resource,
    /// Its limit.
    pub limit: i64,
    /// In use now.
    pub in_use: i64,
    /// Reserved now.
    pub reserved: i64,
    /// What the request asked for.
    pub requested: i64,
}

/// A request refused by its project's quota: every resource it would exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    /// The project.
    pub project_id: String,
    /// What would be exceeded, by resource.
    pub excesses: Vec<Excess>,
}

impl fmt::Display for OverQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "project {} would exceed its quota: ", self.project_id)?;
        for (i, e) in self.excesses.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if e.resource == Resource::PerVolumeGigabytes {
                write!(
                    f,
                    "per_volume_gigabytes allows volumes of at most {} GiB, {} GiB requested",
                    e.limit, e.requested
                )?;
            } else {
                write!(
                    f,
                    "{} limit {}, {} in use and {} reserved, {} more requested",
                    e.resource, e.limit, e.in_use, e.reserved, e.requested
                )?;
            }
        }
        f.write_str(" (delete resources, or ask an operator to raise the quota)")
    }
}

/// A difference between the recorded usage and a recount from the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDifference {
    /// The project.
    pub project_id: String,
    /// The resource's name (a per-type one may name a type that is gone).
    pub resource: String,
    /// `(in_use, reserved)` as `quota_usages` records it.
    pub recorded: (i64, i64),
    /// `(in_use, reserved)` counted from the rows.
    pub counted: (i64, i64),
}

/// What a request will take of its project's quota.
#[derive(Debug, Clone)]
pub(in crate::db) struct Demand<'a> {
    project_id: &'a str,
    volume_type: &'a str,
    volumes: i64,
    snapshots: i64,
    gigabytes: i64,
    attachments: i64,
    backups: i64,
    backup_gigabytes: i64,
    /// The size of the volume the request makes (checked against
    /// `per_volume_gigabytes`).
    volume_gib: Option<i64>,
    /// Only the per-type resources (a retype: the totals do not move).
    typed_only: bool,
}

impl<'a> Demand<'a> {
    fn none(project_id: &'a str, volume_type: &'a str) -> Self {
        Self {
            project_id,
            volume_type,
            volumes: 0,
            snapshots: 0,
            gigabytes: 0,
            attachments: 0,
            backups: 0,
            backup_gigabytes: 0,
            volume_gib: None,
            typed_only: false,
        }
    }

    /// A volume of `size_gib` moving to type `new_type`: the per-type
    /// resources of the new type only (the totals stay as they are).
    pub(in crate::db) fn retype(project_id: &'a str, new_type: &'a str, size_gib: u64) -> Self {
        Self {
            volumes: 1,
            gigabytes: gib(size_gib),
            typed_only: true,
            ..Self::none(project_id, new_type)
        }
    }

    /// A new volume of `size_gib`.
    pub(in crate::db) fn volume(project_id: &'a str, volume_type: &'a str, size_gib: u64) -> Self {
        let size = gib(size_gib);
        Self {
            volumes: 1,
            gigabytes: size,
            volume_gib: Some(size),
            ..Self::none(project_id, volume_type)
        }
    }

    /// A new snapshot of `size_gib`.
    pub(in crate::db) fn snapshot(
        project_id: &'a str,
        volume_type: &'a str,
        size_gib: u64,
    ) -> Self {
        Self {
            snapshots: 1,
            gigabytes: gib(size_gib),
            ..Self::none(project_id, volume_type)
        }
    }

    /// A volume growing from `from_gib` to `to_gib`.
    pub(in crate::db) fn extend(
        project_id: &'a str,
        volume_type: &'a str,
        from_gib: u64,
        to_gib: u64,
    ) -> Self {
        Self {
            gigabytes: gib(to_gib).saturating_sub(gib(from_gib)),
            volume_gib: Some(gib(to_gib)),
            ..Self::none(project_id, volume_type)
        }
    }

    /// A new backup of a volume of `size_gib`.
    pub(in crate::db) fn backup(project_id: &'a str, size_gib: u64) -> Self {
        Self {
            backups: 1,
            backup_gigabytes: gib(size_gib),
            ..Self::none(project_id, "")
        }
    }

    /// A volume of `volume_gib` and `snapshots` snapshots of `snapshot_gib` in
    /// all coming into the project (a transfer).
    pub(in crate::db) fn transfer(
        project_id: &'a str,
        volume_type: &'a str,
        volume_gib: u64,
        snapshots: u64,
        snapshot_gib: u64,
    ) -> Self {
        let size = gib(volume_gib);
        Self {
            volumes: 1,
            snapshots: gib(snapshots),
            gigabytes: size.saturating_add(gib(snapshot_gib)),
            volume_gib: Some(size),
            ..Self::none(project_id, volume_type)
        }
    }

    /// A new attachment.
    pub(in crate::db) fn attachment(project_id: &'a str) -> Self {
        Self {
            attachments: 1,
            ..Self::none(project_id, "")
        }
    }

    /// The usage resources it takes, with how much.
    fn items(&self) -> Vec<(Resource, i64)> {
        let t = self.volume_type;
        let typed = |r: fn(String) -> Resource| (!t.is_empty()).then(|| r(t.to_owned()));
        let mut items = Vec::new();
        for (amount, base, of_type) in [
            (
                self.volumes,
                Some(Resource::Volumes),
                typed(Resource::VolumesOfType),
            ),
            (
                self.gigabytes,
                Some(Resource::Gigabytes),
                typed(Resource::GigabytesOfType),
            ),
            (
                self.snapshots,
                Some(Resource::Snapshots),
                typed(Resource::SnapshotsOfType),
            ),
            (self.attachments, Some(Resource::Attachments), None),
            (self.backups, Some(Resource::Backups), None),
            (self.backup_gigabytes, Some(Resource::BackupGigabytes), None),
        ] {
            let base = base.filter(|_| !self.typed_only);
            if amount > 0 {
                items.extend([base, of_type].into_iter().flatten().map(|r| (r, amount)));
            }
        }
        items
    }
}

fn gib(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// Checks `demand` against its project's limits inside `conn`'s transaction,
/// after taking the project's lock row (held until the transaction ends).
/// [`DbError::OverQuota`] names every resource it would exceed.
pub(in crate::db) async fn enforce(
    conn: &mut AnyConnection,
    defaults: &QuotaDefaults,
    demand: &Demand<'_>,
) -> DbResult<()> {
    let project = demand.project_id;
    sqlx::query(
        "INSERT INTO quota_locks (project_id, serial) VALUES ($1, 1) \
         ON CONFLICT (project_id) DO UPDATE SET serial = quota_locks.serial + 1",
    )
    .bind(project)
    .execute(&mut *conn)
    .await?;
    let (overrides, usage) = limits_and_usage_in(conn, project).await?;
    let limit = |r: &Resource| {
        overrides
            .get(&r.name())
            .copied()
            .unwrap_or_else(|| defaults.of(r))
    };
    let mut excesses = Vec::new();
    let items = demand.items();
    if items.iter().any(|(r, _)| limit(r) != UNLIMITED) {
        for (resource, requested) in items {
            let limit = limit(&resource);
            if limit == UNLIMITED {
                continue;
            }
            let (in_use, reserved) = usage.get(&resource.name()).copied().unwrap_or_default();
            if in_use.saturating_add(reserved).saturating_add(requested) > limit {
                excesses.push(Excess {
                    resource,
                    limit,
                    in_use,
                    reserved,
                    requested,
                });
            }
        }
    }
    if let Some(size) = demand.volume_gib {
        let largest = limit(&Resource::PerVolumeGigabytes);
        if largest != UNLIMITED && size > largest {
            excesses.push(Excess {
                resource: Resource::PerVolumeGigabytes,
                limit: largest,
                in_use: 0,
                reserved: 0,
                requested: size,
            });
        }
    }
    if excesses.is_empty() {
        Ok(())
    } else {
        Err(DbError::OverQuota(OverQuota {
            project_id: project.to_owned(),
            excesses,
        }))
    }
}

/// Project `project`'s overrides (by resource name) and recorded usage
/// (`(in_use, reserved)` by resource name) in one query: a check runs inside
/// SQLite's write lock, so one round trip fewer there is one fewer for every
/// writer.
async fn limits_and_usage_in(
    conn: &mut AnyConnection,
    project: &str,
) -> DbResult<(BTreeMap<String, i64>, BTreeMap<String, (i64, i64)>)> {
    let rows = sqlx::query(
        "SELECT 1 AS is_limit, resource, hard_limit AS a, 0 AS b FROM quotas WHERE project_id = $1 \
         UNION ALL \
         SELECT 0 AS is_limit, resource, in_use AS a, reserved AS b FROM quota_usages WHERE project_id = $1",
    )
    .bind(project)
    .fetch_all(&mut *conn)
    .await?;
    let (mut limits, mut usage) = (BTreeMap::new(), BTreeMap::new());
    for row in &rows {
        let is_limit: i64 = row.try_get("is_limit")?;
        let (resource, a, b): (String, i64, i64) = (
            row.try_get("resource")?,
            row.try_get("a")?,
            row.try_get("b")?,
        );
        if is_limit == 1 {
            limits.insert(resource, a);
        } else {
            usage.insert(resource, (a, b));
        }
    }
    Ok((limits, usage))
}

impl Db {
    /// This handle with `defaults` as the limits of projects without overrides
    /// (a handle from [`Db::connect`] has [`QuotaDefaults::UNLIMITED`]).
    pub fn with_quota_defaults(mut self, defaults: QuotaDefaults) -> Self {
        self.quota_defaults = defaults;
        self
    }

    /// The defaults this handle checks against.
    pub fn quota_defaults(&self) -> &QuotaDefaults {
        &self.quota_defaults
    }

    /// The resources a quota has: the base ones, then the per-type ones of every
    /// volume type (by name).
    pub async fn quota_resources(&self) -> DbResult<Vec<Resource>> {
        let types = self.list_volume_types().await?;
        let mut resources = Resource::BASE.to_vec();
        for t in types {
            resources.extend(Resource::of_type(&t.name));
        }
        Ok(resources)
    }

    /// Project `project_id`'s quota: every resource of [`Db::quota_resources`]
    /// (and any other the project has usage or an override of) with its limit
    /// (override, else default) and recorded usage.
    pub async fn project_quota(&self, project_id: &str) -> DbResult<Vec<QuotaLine>> {
        let mut resources = self.quota_resources().await?;
        let mut conn = self.pool.acquire().await?;
        let (overrides, usage) = limits_and_usage_in(&mut conn, project_id).await?;
        let held = usage
            .iter()
            .filter(|(_, u)| **u != (0, 0))
            .map(|(name, _)| name)
            .chain(overrides.keys());
        for resource in held.filter_map(|name| Resource::parse(name)) {
            if !resources.contains(&resource) {
                resources.push(resource);
            }
        }
        Ok(resources
            .into_iter()
            .map(|resource| {
                let name = resource.name();
                let (in_use, reserved) = usage.get(&name).copied().unwrap_or_default();
                QuotaLine {
                    limit: overrides
                        .get(&name)
                        .copied()
                        .unwrap_or_else(|| self.quota_defaults.of(&resource)),
                    resource,
                    in_use,
                    reserved,
                }
            })
            .collect())
    }

    /// Sets project `project_id`'s limits of `limits` (others stay), in one
    /// transaction. Limits below the current usage are kept: the project gets no
    /// more until it is under them.
    pub async fn set_project_quota(
        &self,
        project_id: &str,
        limits: &[(Resource, i64)],
    ) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        for (resource, limit) in limits {
            sqlx::query(
                "INSERT INTO quotas (project_id, resource, hard_limit, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (project_id, resource) DO UPDATE SET \
                 hard_limit = excluded.hard_limit, updated_at = excluded.updated_at",
            )
            .bind(project_id)
            .bind(resource.name())
            .bind(*limit)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes project `project_id`'s overrides: its limits are the defaults again.
    pub async fn delete_project_quota(&self, project_id: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM quotas WHERE project_id = $1")
            .bind(project_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Recounts what the rows of `project_id` (None: of every project) hold and
    /// returns where `quota_usages` says otherwise (none, by construction). One
    /// read transaction, so a write racing it cannot show as a difference.
    pub async fn check_quota_usage(
        &self,
        project_id: Option<&str>,
    ) -> DbResult<Vec<UsageDifference>> {
        let mut tx = self.pool.begin().await?;
        let filter = if project_id.is_some() {
            "project_id = $1"
        } else {
            "1 = 1"
        };
        let mut counted = fetch_usage(&mut tx, &holdings::recount(filter), project_id).await?;
        let recorded = fetch_usage(
            &mut tx,
            &format!(
                "SELECT project_id, resource, in_use, reserved FROM quota_usages WHERE {filter}"
            ),
            project_id,
        )
        .await?;
        tx.commit().await?;
        let mut differences = Vec::new();
        for (key, recorded) in recorded {
            let counted = counted.remove(&key).unwrap_or_default();
            if counted != recorded {
                differences.push((key, recorded, counted));
            }
        }
        differences.extend(
            counted
                .into_iter()
                .filter(|(_, c)| *c != (0, 0))
                .map(|(key, c)| (key, (0, 0), c)),
        );
        differences.sort();
        Ok(differences
            .into_iter()
            .map(
                |((project_id, resource), recorded, counted)| UsageDifference {
                    project_id,
                    resource,
                    recorded,
                    counted,
                },
            )
            .collect())
    }
}

/// Rows `(project_id, resource, in_use, reserved)` of `sql` (bound to `project`
/// when given) by `(project_id, resource)`.
async fn fetch_usage(
    conn: &mut AnyConnection,
    sql: &str,
    project: Option<&str>,
) -> DbResult<BTreeMap<(String, String), (i64, i64)>> {
    let mut q = sqlx::query(AssertSqlSafe(sql.to_owned()));
    if let Some(project) = project {
        q = q.bind(project.to_owned());
    }
    let rows = q.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            Ok((
                (row.try_get("project_id")?, row.try_get("resource")?),
                (row.try_get("in_use")?, row.try_get("reserved")?),
            ))
        })
        .collect()
}
