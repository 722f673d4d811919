//! Overdue snapshot work: creating, deleting.

use std::sync::Mutex;

use scoria_common::{
    db::{DbError, WorkerEntry, WorkerOutcome},
    events::Event,
    model::{Snapshot, SnapshotStatus, now_ms},
    sync::lock,
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
                let mut snapshot = snapshot;
                let outcome = Mutex::new(WorkerOutcome::Lost);
                let cas = async {
                    let done = db
                        .fail_snapshot_worker(entry, SnapshotStatus::Error, &message)
                        .await?;
                    *lock(&outcome) = done;
                    Ok::<_, DbError>(done == WorkerOutcome::Done)
                };
                let apply = |s: &mut Snapshot| {
                    s.status = SnapshotStatus::Error;
                    s.error_message = message.clone();
                    s.updated_at_ms = now_ms();
                };
                let won = self
                    .shared
                    .settler
                    .settle(
                        &Self::ctx(),
                        &mut snapshot,
                        cas,
                        apply,
                        Some(Event::SnapshotCreateError),
                    )
                    .await?;
                if won {
                    tracing::warn!(snapshot_id = %id, "snapshot overdue: set to error");
                    self.shared.remove_leftover_snapshot(id).await;
                }
                let outcome = *lock(&outcome);
                Ok(outcome.into())
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
