//! Overdue snapshot work: creating, deleting.

use scoria_common::{
    db::{WorkerEntry, WorkerOutcome},
    events::Event,
    model::SnapshotStatus,
};
use scoria_proto::bus::DeleteSnapshot;

use super::{Reconciler, ResolveError, Resolved};

impl Reconciler {
    pub(super) async fn snapshot(&self, entry: &WorkerEntry) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let db = &self.shared.db;
        let Some(snapshot) = db.get_snapshot(id).await? else {
            if matches!(entry.status.as_str(), "creating" | "deleting") {
                self.shared.remove_leftover_snapshot(id).await;
            }
            return self.stale(entry).await;
        };
        if snapshot.status.as_str() != entry.status {
            return self.stale(entry).await;
        }
        let host = &self.shared.host;
        match snapshot.status {
            SnapshotStatus::Creating => {
                let message =
                    format!("creation did not finish by its deadline (snapshot {id} on {host})");
                match db
                    .fail_snapshot_worker(entry, SnapshotStatus::Error, &message)
                    .await?
                {
                    WorkerOutcome::Done => {
                        tracing::warn!(snapshot_id = %id, "snapshot overdue: set to error");
                        self.shared.remove_leftover_snapshot(id).await;
                        let mut failed = snapshot;
                        failed.status = SnapshotStatus::Error;
                        failed.error_message = message;
                        self.shared.settler.announce(
                            &Self::ctx(),
                            Event::SnapshotCreateError,
                            &failed,
                        );
                        Ok(Resolved::Failed)
                    }
                    WorkerOutcome::Stale => Ok(Resolved::Stale),
                    WorkerOutcome::Lost => Ok(Resolved::Skipped),
                }
            }
            SnapshotStatus::Deleting => {
                tracing::info!(snapshot_id = %id, "snapshot deletion overdue: deleting again");
                self.ops
                    .delete_snapshot(
                        &Self::ctx(),
                        &self.shared.host,
                        DeleteSnapshot {
                            snapshot_id: id.to_owned(),
                        },
                    )
                    .await?;
                Ok(Resolved::Redone)
            }
            other => {
                tracing::warn!(snapshot_id = %id, status = %other, "overdue snapshot entry in a status the reconciler does not settle");
                Ok(Resolved::Skipped)
            }
        }
    }
}
