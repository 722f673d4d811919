//! The finish of an extend, bounded by size: shared by the volume manager (the
//! backend grew the object) and its reconciler (an overdue extend found done on
//! the backend).

use super::{Db, DbResult, WorkerKind, workers::remove_worker};
use crate::{
    changes::ChangeKind,
    model::{VolumeStatus, now_ms},
};

impl Db {
    /// Compare-and-set ending an extend that grows the volume: `extending` ->
    /// `to` with `new_size_gib` and no error message, only if the row is still
    /// smaller than `new_size_gib`, so a stale smaller extend never shrinks (or
    /// overwrites) a larger finished one. The volume's worker entry is removed in
    /// the same transaction. Returns whether it won.
    pub async fn finish_extend_to(
        &self,
        id: &str,
        new_size_gib: u64,
        to: VolumeStatus,
    ) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let won = sqlx::query(
            "UPDATE volumes SET status = $1, size_gib = $2, error_message = '', updated_at = $3 \
             WHERE id = $4 AND status = $5 AND size_gib < $2",
        )
        .bind(to.as_str())
        .bind(new_size_gib as i64)
        .bind(now_ms())
        .bind(id)
        .bind(VolumeStatus::Extending.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            return Ok(false);
        }
        remove_worker(&mut *tx, WorkerKind::Volume, id).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, id);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        db::{Db, WorkerEntry, WorkerKind},
        model::{Volume, VolumeStatus, now_ms},
    };

    #[tokio::test]
    async fn an_extend_finishes_only_growing_and_takes_its_worker_entry() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("scoria.db").display());
        let db = Db::connect(&url).await.expect("db");
        let now = now_ms();
        let volume = Volume {
            migration_status: Default::default(),
            migration_error: String::new(),
            id: uuid::Uuid::new_v4().to_string(),
            project_id: "p1".into(),
            user_id: "u1".into(),
            name: "v".into(),
            description: String::new(),
            size_gib: 2,
            status: VolumeStatus::Extending,
            volume_type: String::new(),
            availability_zone: String::new(),
            host: Some("node1@file".into()),
            metadata: Default::default(),
            error_message: String::new(),
            snapshot_id: None,
            source_volume_id: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let worker = WorkerEntry {
            kind: WorkerKind::Volume,
            resource_id: volume.id.clone(),
            status: "extending".into(),
            service: "node1@file".into(),
            deadline_ms: now + 60_000,
        };
        db.create_volume(&volume, None, &worker)
            .await
            .expect("insert");
        let id = volume.id.as_str();
        assert!(
            !db.finish_extend_to(id, 2, VolumeStatus::Available)
                .await
                .expect("same size"),
            "no bigger: lost"
        );
        assert!(
            db.finish_extend_to(id, 3, VolumeStatus::Available)
                .await
                .expect("grow")
        );
        let row = db.get_volume(id).await.expect("get").expect("row");
        assert_eq!((row.status, row.size_gib), (VolumeStatus::Available, 3));
        assert_eq!(
            db.get_worker(WorkerKind::Volume, id).await.expect("worker"),
            None
        );
        assert!(
            !db.finish_extend_to(id, 4, VolumeStatus::Available)
                .await
                .expect("not extending"),
            "not extending: lost"
        );
    }
}
