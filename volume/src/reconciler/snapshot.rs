//! Overdue snapshot work: creating, deleting.

use scoria_common::{
    db::{WorkerEntry, WorkerOutcome},
    events::Event,
    model::{Snapshot, SnapshotStatus},
    service::overdue::Failure,
};
use scoria_proto::bus::DeleteSnapshot;

use super::{Reconciler, ResolveError, Resolved};
use crate::driver::ObjectKind;

impl Reconciler {
    pub(super) async fn snapshot(&self, entry: &WorkerEntry) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let row = self.shared.db.get_snapshot(id).await?;
        let status = |s: &Snapshot| s.status.as_str();
        let Some(mut snapshot) = self.current(entry, ObjectKind::Snapshot, row, status).await
        else {
            return self.stale(entry).await;
        };
        let host = &self.shared.host;
        match snapshot.status {
            SnapshotStatus::Creating => {
                let message =
                    format!("creation did not finish by its deadline (snapshot {id} on {host})");
                let failure = Failure {
                    to: SnapshotStatus::Error,
                    message: &message,
                    event: Event::SnapshotCreateError,
                };
                let outcome = self.fail(entry, &mut snapshot, failure).await?;
                if outcome == WorkerOutcome::Done {
                    tracing::warn!(snapshot_id = %id, "snapshot overdue: set to error");
                    self.shared.remove_leftover_snapshot(id).await;
                }
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
