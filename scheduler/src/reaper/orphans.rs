//! The reaper's half for work of a volume service that is down (no heartbeat for
//! `service_down_time`) and overdue: handed to another service of the same
//! backend when one can do it, else failed naming the dead owner, each failure
//! announcing its operation's `.error` event.

use scoria_common::{
    RequestContext,
    db::{DbError, WorkerEntry, WorkerKind, WorkerOutcome},
    events::Event,
    model::{AttachmentStatus, SnapshotStatus, VolumeStatus, now_ms},
    service::overdue::Overdue,
};
use scoria_proto::bus::{CreateVolume, DeleteVolume};

use super::{Reaped, Reaper, VOLUME_BINARY};
use crate::BINARY;

impl Reaper {
    pub(super) async fn orphan(&self, entry: &WorkerEntry) -> Result<Reaped, DbError> {
        if self.db.worker_is_stale(entry).await? {
            return self.stale(entry).await;
        }
        let owner = entry.service.as_str();
        let backend = owner.split_once('@').map(|(_, b)| b).unwrap_or(owner);
        if let Some(taken) = self.take_over(entry, backend).await? {
            return Ok(taken);
        }
        let down = self.settings.service_down_time.as_secs();
        let why = |what: &str| {
            format!(
                "{what} did not finish: its owner {owner} is down (no heartbeat for {down} s) \
                 and no other service of backend {backend} can take it over"
            )
        };
        let id = entry.resource_id.as_str();
        let db = &self.db;
        let outcome = match (entry.kind, entry.status.as_str()) {
            (WorkerKind::Volume, status @ ("creating" | "deleting" | "extending")) => {
                let failed = match status {
                    "creating" => (VolumeStatus::Error, Event::VolumeCreateError),
                    "deleting" => (VolumeStatus::ErrorDeleting, Event::VolumeDeleteError),
                    _ => (VolumeStatus::ErrorExtending, Event::VolumeResizeError),
                };
                let message = why(&format!("{status} volume {id}"));
                self.fail_orphan(entry, db.get_volume(id).await?, failed, &message)
                    .await?
            }
            (WorkerKind::Snapshot, status @ ("creating" | "deleting")) => {
                let failed = match status {
                    "creating" => (SnapshotStatus::Error, Event::SnapshotCreateError),
                    _ => (SnapshotStatus::ErrorDeleting, Event::SnapshotDeleteError),
                };
                let message = why(&format!("{status} snapshot {id}"));
                self.fail_orphan(entry, db.get_snapshot(id).await?, failed, &message)
                    .await?
            }
            (WorkerKind::Attachment, status @ ("attaching" | "reserved" | "detaching")) => {
                // The attachment CAS removes the entry; check it is the one read.
                if db.get_worker(entry.kind, id).await?.as_ref() != Some(entry) {
                    return Ok(Reaped::Skipped);
                }
                let failed = match status {
                    "detaching" => (AttachmentStatus::ErrorDetaching, Event::VolumeDetachError),
                    _ => (AttachmentStatus::ErrorAttaching, Event::VolumeAttachError),
                };
                let message = why(&format!("{status} attachment {id}"));
                self.fail_orphan(entry, db.get_attachment(id).await?, failed, &message)
                    .await?
            }
            (kind, other) => {
                tracing::warn!(resource_id = %id, ?kind, status = %other, "orphaned entry in a status the reaper does not settle");
                return Ok(Reaped::Skipped);
            }
        };
        let Some(outcome) = outcome else {
            return self.stale(entry).await;
        };
        if outcome == WorkerOutcome::Done {
            tracing::warn!(resource_id = %id, status = %entry.status, %owner, "owner down: work failed");
        }
        Ok(Self::from_outcome(outcome))
    }

    /// Fails `row` (the resource of `entry`, `None`: gone) into `failed`;
    /// `None` when there is no row to fail (the entry is stale).
    async fn fail_orphan<T: Overdue>(
        &self,
        entry: &WorkerEntry,
        row: Option<T>,
        failed: (T::Status, Event),
        message: &str,
    ) -> Result<Option<WorkerOutcome>, DbError> {
        let Some(mut row) = row else {
            return Ok(None);
        };
        Ok(Some(self.fail(entry, &mut row, failed, message).await?))
    }

    /// Hands `entry` to another up, enabled volume service of `backend` if one
    /// can do the work: a plain create anywhere, a delete on a shared backend.
    /// `None`: no takeover (the caller fails the work).
    async fn take_over(
        &self,
        entry: &WorkerEntry,
        backend: &str,
    ) -> Result<Option<Reaped>, DbError> {
        if entry.kind != WorkerKind::Volume {
            return Ok(None);
        }
        let Some(volume) = self.db.get_volume(&entry.resource_id).await? else {
            return Ok(None);
        };
        let shared = self.settings.shared_backends.iter().any(|b| b == backend);
        let plain_create = volume.status == VolumeStatus::Creating
            && volume.snapshot_id.is_none()
            && volume.source_volume_id.is_none();
        let doable = plain_create || (shared && volume.status == VolumeStatus::Deleting);
        if !doable {
            return Ok(None);
        }
        let now = now_ms();
        let down_ms = self.settings.service_down_time.as_millis() as i64;
        let heir = self
            .db
            .list_services()
            .await?
            .into_iter()
            .filter(|s| {
                s.binary == VOLUME_BINARY
                    && !s.disabled
                    && s.is_up(now, down_ms)
                    && s.host != entry.service
                    && s.host.split_once('@').map(|(_, b)| b) == Some(backend)
            })
            .max_by_key(|s| s.last_heartbeat_ms);
        let Some(heir) = heir else {
            return Ok(None);
        };
        let deadline = now + self.settings.deadline.as_millis() as i64;
        if !self.db.move_worker(entry, &heir.host, deadline).await? {
            return Ok(Some(Reaped::Skipped));
        }
        tracing::warn!(volume_id = %volume.id, from = %entry.service, to = %heir.host, status = %volume.status, "owner down: work handed over");
        let ctx = RequestContext::internal(BINARY);
        let cast = if volume.status == VolumeStatus::Creating {
            let extra_specs = match self.db.get_volume_type(&volume.volume_type).await? {
                Some(volume_type) => volume_type.extra_specs,
                None => Default::default(),
            };
            let request = CreateVolume {
                volume_id: volume.id.clone(),
                size_gib: volume.size_gib,
                pool: format!("{}#{backend}", heir.host),
                tried_hosts: Vec::new(),
                attempt: self.settings.max_attempts,
                volume_type: volume.volume_type.clone(),
                availability_zone: volume.availability_zone.clone(),
                extra_specs,
                snapshot_id: String::new(),
                source_volume_id: String::new(),
            };
            self.volumes.create_volume(&ctx, &heir.host, request).await
        } else {
            let request = DeleteVolume {
                volume_id: volume.id.clone(),
            };
            self.volumes.delete_volume(&ctx, &heir.host, request).await
        };
        if let Err(err) = cast {
            // The heir owns the entry now: its reconciler or a later reap settles it.
            tracing::warn!(volume_id = %volume.id, to = %heir.host, error = %err, "cannot cast the handed-over work");
        }
        Ok(Some(Reaped::TakenOver))
    }
}
