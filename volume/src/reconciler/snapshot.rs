//! Overdue snapshot work: creating, deleting, managing.

use scoria_common::{
    db::{WorkerEntry, WorkerOutcome},
    events::Event,
    model::{Snapshot, SnapshotStatus},
    service::overdue::Failure,
    settle::SnapshotChange,
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
            SnapshotStatus::Managing => {
                if self
                    .adopted(ObjectKind::Snapshot, id, snapshot.size_gib)
                    .await
                {
                    let from = [SnapshotStatus::Managing];
                    let change = SnapshotChange::new(&from, SnapshotStatus::Available).error("");
                    let event = Some(Event::SnapshotManageEnd);
                    let settler = &self.shared.settler;
                    let won = settler
                        .snapshot(&Self::ctx(), &mut snapshot, change, event)
                        .await?;
                    return Ok(if won {
                        Resolved::Finished
                    } else {
                        Resolved::Skipped
                    });
                }
                let message = format!(
                    "adopting a backend object as snapshot {id} did not finish by its deadline \
                     on {host}; the object keeps its name: manage it again"
                );
                let failure = Failure {
                    to: SnapshotStatus::ErrorManaging,
                    message: &message,
                    event: Event::SnapshotManageError,
                };
                Ok(self.fail(entry, &mut snapshot, failure).await?.into())
            }
            other => {
                tracing::warn!(snapshot_id = %id, status = %other, "overdue snapshot entry in a status the reconciler does not settle");
                Ok(Resolved::Skipped)
            }
        }
    }
}
