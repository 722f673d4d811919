//! The settling of attachments stuck in `attaching` or `detaching` past their
//! deadline, from what really runs (see the README's diagram).

use scoria_common::{
    db::{WorkerEntry, WorkerKind},
    model::{Attachment, AttachmentStatus, now_ms},
};

use super::{ReconcileReport, Reconciler};
use crate::{
    BINARY,
    error::{Result, VolumeError},
};

/// How long a member of a cluster may miss heartbeats before its peers settle
/// the attachments it exports (Cinder's `service_down_time` default, as the
/// scheduler's).
pub const PEER_DOWN_MS: i64 = 60_000;

/// What [`Reconciler::reconcile_attachments`] did, by attachment id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentReconcile {
    /// `attaching` whose export runs: now `attached`.
    pub attached: Vec<String>,
    /// `attaching` without an export: now `error_attaching`.
    pub failed: Vec<String>,
    /// `detaching`: export stopped if unused, row removed.
    pub detached: Vec<String>,
    /// `detaching` whose export would not stop: now `error_detaching`.
    pub failed_detach: Vec<String>,
}

impl Reconciler {
    /// Overdue attachment entries: stale ones go here; the rest are settled
    /// from what really runs by [`VolumeManager::reconcile_attachments`].
    pub(super) async fn attachments(&self, entries: &[WorkerEntry], report: &mut ReconcileReport) {
        let mut live = Vec::new();
        for entry in entries {
            match &self.shared.db.worker_is_stale(entry).await {
                Ok(true) => match self.stale(entry).await {
                    Ok(_) => report.stale.push(entry.resource_id.clone()),
                    Err(err) => {
                        tracing::warn!(attachment_id = %entry.resource_id, %err, "cannot remove stale entry now");
                        report.skipped.push(entry.resource_id.clone());
                    }
                },
                Ok(false) => live.push(entry.resource_id.clone()),
                Err(err) => {
                    tracing::warn!(attachment_id = %entry.resource_id, %err, "cannot check attachment now");
                    report.skipped.push(entry.resource_id.clone());
                }
            }
        }
        if live.is_empty() {
            return;
        }
        // Settled from the exports that really run.
        match self.reconcile_attachments().await {
            Ok(settled) => {
                for id in live {
                    if settled.failed.contains(&id) || settled.failed_detach.contains(&id) {
                        report.failed.push(id);
                    } else if settled.attached.contains(&id) || settled.detached.contains(&id) {
                        report.finished.push(id);
                    } else {
                        report.skipped.push(id);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot settle overdue attachments now");
                report.skipped.extend(live);
            }
        }
    }

    /// Settles this host's attachments stuck in `attaching` or `detaching` past
    /// their worker entry's deadline, from what really runs: an `attaching` one
    /// whose export serves becomes `attached` (with that info), else
    /// `error_attaching`; a `detaching` one has its export stopped if no other
    /// attachment uses it, and goes. Attachments a handler works on now are left
    /// alone. A database error fails the run.
    #[tracing::instrument(skip(self), err, fields(host = %self.shared.host))]
    pub async fn reconcile_attachments(&self) -> Result<AttachmentReconcile> {
        let overdue = self
            .shared
            .db
            .overdue_workers(&self.shared.host, now_ms())
            .await?;
        let mut report = AttachmentReconcile::default();
        for entry in overdue {
            if entry.kind != WorkerKind::Attachment
                || self.shared.in_flight.contains(&entry.resource_id)
            {
                continue;
            }
            let id = entry.resource_id.as_str();
            let _busy = self.shared.in_flight.enter(id);
            let Some(first) = self.shared.db.get_attachment(id).await? else {
                continue;
            };
            let _volume = self.shared.locks.lock(&first.volume_id).await;
            let Some(attachment) = self.shared.db.get_attachment(id).await? else {
                continue;
            };
            if let Some(peer) = self.exported_by_live_peer(id).await? {
                tracing::debug!(attachment_id = %id, %peer, "exported by a live member of the cluster: its to settle");
                continue;
            }
            match attachment.status {
                AttachmentStatus::Attaching => {
                    self.settle_attaching(&attachment, &mut report).await?;
                }
                AttachmentStatus::Detaching => {
                    self.settle_detaching(&attachment, &mut report).await?;
                }
                other => {
                    tracing::debug!(attachment_id = %id, status = %other, "not stuck: left to the reconciler's stale check");
                }
            }
        }
        if report != AttachmentReconcile::default() {
            tracing::info!(?report, "stuck attachments settled");
        }
        Ok(report)
    }

    /// The other member of this service's cluster whose export attachment `id`
    /// is, if that member is up: only it knows whether its export runs, so only
    /// it settles the attachment (a member down for [`PEER_DOWN_MS`] leaves it to
    /// the others, which find no export of theirs).
    async fn exported_by_live_peer(&self, id: &str) -> Result<Option<String>> {
        let Some(member) = self.shared.db.export_host(id).await? else {
            return Ok(None);
        };
        if member == self.shared.export_host() {
            return Ok(None);
        }
        let up = self
            .shared
            .db
            .get_service(BINARY, &member)
            .await?
            .is_some_and(|s| s.is_up(now_ms(), PEER_DOWN_MS));
        Ok(up.then_some(member))
    }

    async fn settle_attaching(
        &self,
        attachment: &Attachment,
        report: &mut AttachmentReconcile,
    ) -> Result<()> {
        let id = attachment.id.as_str();
        let serving = match &self.shared.exports {
            Some(exports) => exports
                .serving(&attachment.volume_id, attachment.mode.is_read_only())
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let ctx = Self::ctx();
        let mut copy = attachment.clone();
        if let Some(info) = serving {
            if self.shared.settle_attached(&ctx, &mut copy, &info).await? {
                tracing::info!(attachment_id = %id, uri = %info.uri(), "stuck attach: its export runs, attached");
                report.attached.push(id.to_owned());
            }
            return Ok(());
        }
        let reason = format!(
            "attaching volume {} did not finish before its deadline",
            attachment.volume_id
        );
        if self
            .shared
            .settle_failed(&ctx, &mut copy, AttachmentStatus::ErrorAttaching, &reason)
            .await?
        {
            tracing::warn!(attachment_id = %id, "stuck attach without an export: error_attaching");
            report.failed.push(id.to_owned());
        }
        Ok(())
    }

    async fn settle_detaching(
        &self,
        attachment: &Attachment,
        report: &mut AttachmentReconcile,
    ) -> Result<()> {
        let id = attachment.id.as_str();
        let ctx = Self::ctx();
        let mut copy = attachment.clone();
        match self.shared.unexport_if_unused(attachment).await {
            Ok(_) => {
                if self.shared.settle_detached(&ctx, &mut copy).await? {
                    tracing::info!(attachment_id = %id, "stuck detach finished");
                    report.detached.push(id.to_owned());
                }
            }
            Err(source) => {
                let reason = VolumeError::Unexport {
                    volume_id: attachment.volume_id.clone(),
                    source,
                }
                .to_string();
                if self
                    .shared
                    .settle_failed(&ctx, &mut copy, AttachmentStatus::ErrorDetaching, &reason)
                    .await?
                {
                    report.failed_detach.push(id.to_owned());
                }
            }
        }
        Ok(())
    }
}
