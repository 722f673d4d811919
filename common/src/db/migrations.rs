//! Volume migrations and retypes: the `migrations` table and the
//! compare-and-sets that start, finish and fail a move.
//!
//! ```text
//!  start_migration   available -> maintenance (API), or retyping -> retyping
//!                    (scheduler, a retype that moves); migration_status
//!                    migrating; row `copying` owned by the destination; the
//!                    volume's worker entry owned by the destination
//!  finish_migration  maintenance | retyping -> available, host = destination
//!                    (type = the new one, its quota checked); migration_status
//!                    success; worker entry removed; row -> `cleanup` owned by
//!                    the source (its old object must go)
//!  fail_migration    maintenance | retyping -> available where it was;
//!                    migration_status error + migration_error; worker entry
//!                    and `copying` row removed
//!  remove_migration  the source removed its old object: the `cleanup` row goes
//! ```
//!
//! Each is one transaction, so a volume never switches host without its
//! cleanup record, and never fails back without its worker entry going.

use sqlx::Row;

use super::{
    Db, DbResult, WorkerEntry, WorkerKind,
    quota::{self, Demand},
    volumes::get_volume_in,
    workers::remove_worker,
};
use crate::{
    changes::ChangeKind,
    model::{MigrationStatus, VolumeStatus, now_ms},
};

/// Where a migration's row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    /// The destination copies the bytes (owner: the destination).
    Copying,
    /// The volume switched host; the source must remove its old object
    /// (owner: the source).
    Cleanup,
}

impl MigrationState {
    /// The name stored in `migrations.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Copying => "copying",
            Self::Cleanup => "cleanup",
        }
    }
}

/// One volume being moved (a `migrations` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The volume.
    pub volume_id: String,
    /// `host@backend` it is moved from.
    pub source_host: String,
    /// `host@backend` it is moved to.
    pub dest_host: String,
    /// The type it gets when it lands (a retype that moves), None: its own.
    pub new_type: Option<String>,
    /// Where it stands.
    pub state: MigrationState,
    /// The service that must finish the current state.
    pub owner: String,
    /// By when (ms since the epoch).
    pub deadline_ms: i64,
}

/// What [`Db::start_migration`] compares and sets.
#[derive(Debug, Clone)]
pub struct MigrationStart<'a> {
    /// The volume.
    pub volume_id: &'a str,
    /// The status it must be in (`available` for a migration, `retyping` for
    /// a retype that moves).
    pub from: VolumeStatus,
    /// Its status meanwhile (`maintenance` or `retyping`).
    pub to: VolumeStatus,
    /// Its host now (part of the compare-and-set).
    pub source_host: &'a str,
    /// The destination `host@backend`.
    pub dest_host: &'a str,
    /// The new type of a retype.
    pub new_type: Option<&'a str>,
    /// The volume's worker entry, owned by the destination.
    pub worker: &'a WorkerEntry,
}

const COLUMNS: &str = "volume_id, source_host, dest_host, new_type, state, owner, deadline";

fn migration_from_row(row: &sqlx::any::AnyRow) -> DbResult<Migration> {
    let new_type: String = row.try_get("new_type")?;
    let state: String = row.try_get("state")?;
    Ok(Migration {
        volume_id: row.try_get("volume_id")?,
        source_host: row.try_get("source_host")?,
        dest_host: row.try_get("dest_host")?,
        new_type: (!new_type.is_empty()).then_some(new_type),
        state: if state == MigrationState::Cleanup.as_str() {
            MigrationState::Cleanup
        } else {
            MigrationState::Copying
        },
        owner: row.try_get("owner")?,
        deadline_ms: row.try_get("deadline")?,
    })
}

impl Db {
    /// Compare-and-set starting a move (see the module's diagram): only while
    /// the volume is in `from` on `source_host`, has no snapshot and no earlier
    /// move still recorded. A retype's new type must fit the per-type quota
    /// ([`DbError::OverQuota`](super::DbError::OverQuota), nothing written).
    /// Returns whether it won.
    pub async fn start_migration(&self, start: &MigrationStart<'_>) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let Some(volume) = get_volume_in(&mut tx, start.volume_id).await? else {
            return Ok(false);
        };
        if let Some(new_type) = start.new_type {
            let demand = Demand::retype(&volume.project_id, new_type, volume.size_gib);
            quota::enforce(&mut tx, &self.quota_defaults, &demand).await?;
        }
        let now = now_ms();
        let won = sqlx::query(
            "UPDATE volumes SET status = $1, migration_status = $2, migration_error = '', \
             updated_at = $3 WHERE id = $4 AND status = $5 AND host = $6 \
             AND NOT EXISTS (SELECT 1 FROM snapshots WHERE snapshots.volume_id = $4) \
             AND NOT EXISTS (SELECT 1 FROM migrations WHERE migrations.volume_id = $4)",
        )
        .bind(start.to.as_str())
        .bind(MigrationStatus::Migrating.as_str())
        .bind(now)
        .bind(start.volume_id)
        .bind(start.from.as_str())
        .bind(start.source_host)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO migrations (volume_id, source_host, dest_host, new_type, state, owner, \
             deadline, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(start.volume_id)
        .bind(start.source_host)
        .bind(start.dest_host)
        .bind(start.new_type.unwrap_or_default())
        .bind(MigrationState::Copying.as_str())
        .bind(start.dest_host)
        .bind(start.worker.deadline_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        start.worker.upsert(&mut *tx).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, start.volume_id);
        Ok(true)
    }

    /// The move of volume `volume_id`, if one is recorded.
    pub async fn get_migration(&self, volume_id: &str) -> DbResult<Option<Migration>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM migrations WHERE volume_id = $1"
        )))
        .bind(volume_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(migration_from_row).transpose()
    }

    /// The moves whose source `owner` must still remove its old object.
    pub async fn migrations_to_clean(&self, owner: &str) -> DbResult<Vec<Migration>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM migrations WHERE owner = $1 AND state = $2"
        )))
        .bind(owner)
        .bind(MigrationState::Cleanup.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(migration_from_row).collect()
    }

    /// Compare-and-set finishing `migration` (see the module's diagram), the
    /// source's cleanup due by `cleanup_deadline_ms`. A retype's new type is
    /// checked against its per-type quota again, in this transaction
    /// ([`DbError::OverQuota`](super::DbError::OverQuota), nothing written).
    /// Returns whether it won.
    pub async fn finish_migration(
        &self,
        migration: &Migration,
        cleanup_deadline_ms: i64,
    ) -> DbResult<bool> {
        let id = migration.volume_id.as_str();
        let mut tx = self.begin_write().await?;
        let Some(volume) = get_volume_in(&mut tx, id).await? else {
            return Ok(false);
        };
        if let Some(new_type) = &migration.new_type {
            let demand = Demand::retype(&volume.project_id, new_type, volume.size_gib);
            quota::enforce(&mut tx, &self.quota_defaults, &demand).await?;
        }
        let won = sqlx::query(
            "UPDATE volumes SET status = $1, host = $2, volume_type = COALESCE($3, volume_type), \
             migration_status = $4, migration_error = '', error_message = '', updated_at = $5 \
             WHERE id = $6 AND status IN ($7, $8) AND host = $9",
        )
        .bind(VolumeStatus::Available.as_str())
        .bind(&migration.dest_host)
        .bind(migration.new_type.clone())
        .bind(MigrationStatus::Success.as_str())
        .bind(now_ms())
        .bind(id)
        .bind(VolumeStatus::Maintenance.as_str())
        .bind(VolumeStatus::Retyping.as_str())
        .bind(&migration.source_host)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            return Ok(false);
        }
        remove_worker(&mut *tx, WorkerKind::Volume, id).await?;
        sqlx::query(
            "UPDATE migrations SET state = $1, owner = source_host, deadline = $2 \
             WHERE volume_id = $3",
        )
        .bind(MigrationState::Cleanup.as_str())
        .bind(cleanup_deadline_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, id);
        Ok(true)
    }

    /// Compare-and-set failing the move of `volume_id` (a retype too, moving
    /// or not): `maintenance` | `retyping` -> `available` where it is, with
    /// `why`; its worker entry and `copying` row go. Returns whether it won.
    pub async fn fail_migration(&self, volume_id: &str, why: &str) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let won = sqlx::query(
            "UPDATE volumes SET status = $1, migration_status = $2, migration_error = $3, \
             updated_at = $4 WHERE id = $5 AND status IN ($6, $7)",
        )
        .bind(VolumeStatus::Available.as_str())
        .bind(MigrationStatus::Error.as_str())
        .bind(why)
        .bind(now_ms())
        .bind(volume_id)
        .bind(VolumeStatus::Maintenance.as_str())
        .bind(VolumeStatus::Retyping.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            return Ok(false);
        }
        remove_worker(&mut *tx, WorkerKind::Volume, volume_id).await?;
        sqlx::query("DELETE FROM migrations WHERE volume_id = $1 AND state = $2")
            .bind(volume_id)
            .bind(MigrationState::Copying.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, volume_id);
        Ok(true)
    }

    /// Compare-and-set finishing a retype in place: `retyping` on `host` ->
    /// `available` with type `new_type` (its per-type quota checked in this
    /// transaction; usage moves by the triggers), worker entry removed.
    /// Returns whether it won.
    pub async fn finish_retype(
        &self,
        volume_id: &str,
        host: &str,
        new_type: &str,
    ) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let Some(volume) = get_volume_in(&mut tx, volume_id).await? else {
            return Ok(false);
        };
        let demand = Demand::retype(&volume.project_id, new_type, volume.size_gib);
        quota::enforce(&mut tx, &self.quota_defaults, &demand).await?;
        let won = sqlx::query(
            "UPDATE volumes SET status = $1, volume_type = $2, migration_error = '', \
             updated_at = $3 WHERE id = $4 AND status = $5 AND host = $6 \
             AND NOT EXISTS (SELECT 1 FROM migrations WHERE migrations.volume_id = $4)",
        )
        .bind(VolumeStatus::Available.as_str())
        .bind(new_type)
        .bind(now_ms())
        .bind(volume_id)
        .bind(VolumeStatus::Retyping.as_str())
        .bind(host)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            return Ok(false);
        }
        remove_worker(&mut *tx, WorkerKind::Volume, volume_id).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, volume_id);
        Ok(true)
    }

    /// Compare-and-set starting a retype: `available` -> `retyping` on `host`
    /// with its worker entry, the new type's per-type quota checked
    /// ([`DbError::OverQuota`](super::DbError::OverQuota), nothing written).
    /// Returns whether it won.
    pub async fn start_retype(
        &self,
        volume_id: &str,
        host: &str,
        new_type: &str,
        worker: &WorkerEntry,
    ) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let Some(volume) = get_volume_in(&mut tx, volume_id).await? else {
            return Ok(false);
        };
        let demand = Demand::retype(&volume.project_id, new_type, volume.size_gib);
        quota::enforce(&mut tx, &self.quota_defaults, &demand).await?;
        let won = sqlx::query(
            "UPDATE volumes SET status = $1, migration_error = '', updated_at = $2 \
             WHERE id = $3 AND status = $4 AND host = $5 AND volume_type = $6 \
             AND NOT EXISTS (SELECT 1 FROM migrations WHERE migrations.volume_id = $3)",
        )
        .bind(VolumeStatus::Retyping.as_str())
        .bind(now_ms())
        .bind(volume_id)
        .bind(VolumeStatus::Available.as_str())
        .bind(host)
        .bind(&volume.volume_type)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            return Ok(false);
        }
        worker.upsert(&mut *tx).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, volume_id);
        Ok(true)
    }

    /// The source removed its old object: the `cleanup` row of `volume_id`
    /// goes. Whether there was one.
    pub async fn remove_migration(&self, volume_id: &str) -> DbResult<bool> {
        let removed = sqlx::query("DELETE FROM migrations WHERE volume_id = $1 AND state = $2")
            .bind(volume_id)
            .bind(MigrationState::Cleanup.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(removed == 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        db::{Db, MigrationStart, MigrationState, Owner, WorkerEntry, WorkerKind},
        model::{MigrationStatus, Volume, VolumeStatus, now_ms},
    };

    async fn available_on(db: &Db, host: &str) -> Volume {
        let now = now_ms();
        let volume = Volume {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: "p1".into(),
            user_id: "u1".into(),
            name: "v".into(),
            description: String::new(),
            size_gib: 2,
            status: VolumeStatus::Available,
            volume_type: String::new(),
            availability_zone: String::new(),
            host: Some(host.into()),
            metadata: Default::default(),
            error_message: String::new(),
            snapshot_id: None,
            source_volume_id: None,
            created_at_ms: now,
            updated_at_ms: now,
            migration_status: Default::default(),
            migration_error: String::new(),
        };
        let worker = WorkerEntry::volume(&volume.id, VolumeStatus::Creating, Owner::Scheduler, now);
        db.create_volume(&volume, None, &worker)
            .await
            .expect("insert");
        db.remove_worker_entry(&worker).await.expect("no entry");
        volume
    }

    #[tokio::test]
    async fn a_move_starts_once_and_fails_back_or_finishes_with_its_cleanup_record() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("scoria.db").display());
        let db = Db::connect(&url).await.expect("db");
        let volume = available_on(&db, "a@file").await;
        let id = volume.id.as_str();
        let worker = WorkerEntry::volume(
            id,
            VolumeStatus::Maintenance,
            Owner::Service("b@qcow2".into()),
            now_ms() + 60_000,
        );
        let start = MigrationStart {
            volume_id: id,
            from: VolumeStatus::Available,
            to: VolumeStatus::Maintenance,
            source_host: "a@file",
            dest_host: "b@qcow2",
            new_type: None,
            worker: &worker,
        };
        assert!(db.start_migration(&start).await.expect("start"));
        assert!(
            !db.start_migration(&start).await.expect("again"),
            "one winner"
        );
        let row = db.get_volume(id).await.expect("get").expect("row");
        assert_eq!(
            (row.status, row.migration_status),
            (VolumeStatus::Maintenance, MigrationStatus::Migrating)
        );
        assert!(
            db.get_worker(WorkerKind::Volume, id)
                .await
                .expect("worker")
                .is_some()
        );

        assert!(db.fail_migration(id, "copy failed").await.expect("fail"));
        let row = db.get_volume(id).await.expect("get").expect("row");
        assert_eq!(row.status, VolumeStatus::Available);
        assert_eq!(row.host.as_deref(), Some("a@file"));
        assert_eq!(
            (row.migration_status, row.migration_error.as_str()),
            (MigrationStatus::Error, "copy failed")
        );
        assert_eq!(
            db.get_worker(WorkerKind::Volume, id).await.expect("worker"),
            None
        );
        assert_eq!(db.get_migration(id).await.expect("row"), None);

        assert!(db.start_migration(&start).await.expect("start again"));
        let migration = db.get_migration(id).await.expect("row").expect("copying");
        assert!(
            db.finish_migration(&migration, now_ms())
                .await
                .expect("finish")
        );
        assert!(
            !db.fail_migration(id, "late").await.expect("late"),
            "finished: a late failure loses"
        );
        let row = db.get_volume(id).await.expect("get").expect("row");
        assert_eq!(
            (row.status, row.host.as_deref()),
            (VolumeStatus::Available, Some("b@qcow2"))
        );
        assert_eq!(row.migration_status, MigrationStatus::Success);
        let cleanup = db.migrations_to_clean("a@file").await.expect("list");
        assert_eq!(cleanup.len(), 1);
        assert_eq!(cleanup[0].state, MigrationState::Cleanup);
        assert!(db.remove_migration(id).await.expect("remove"));
        assert!(
            db.migrations_to_clean("a@file")
                .await
                .expect("list")
                .is_empty()
        );
    }
}
