//! The start-up restore of the last run's exports: adopted, or started again
//! (see the diagram in `attach.rs`).

use std::collections::BTreeMap;

use scoria_common::{
    db::AttachmentQuery,
    model::{Attachment, AttachmentStatus},
};

use super::VolumeManager;
use crate::error::{Result, VolumeError};
use crate::export::{ExportError, ExportKey, Reexport};

/// What [`VolumeManager::restore_exports`] did at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Exports whose server of the last run still serves: kept, clients connected.
    pub adopted: Vec<ExportKey>,
    /// Exports started again (their server had died, or the machine restarted).
    pub reexported: Vec<ExportKey>,
    /// Attachments whose connection info changed (their old port was taken).
    pub moved: Vec<String>,
    /// Leftover servers no attachment wants: killed.
    pub killed: Vec<ExportKey>,
    /// Exports that could not be started again, and why.
    pub failed: Vec<(ExportKey, String)>,
}

fn key_of(attachment: &Attachment) -> Result<ExportKey, ExportError> {
    ExportKey::new(&attachment.volume_id, attachment.mode.is_read_only())
}

impl VolumeManager {
    /// At start-up, before the bus is served: the exports of this host's
    /// attachments (`attaching`, `attached`, `detaching`, `error_detaching`) still
    /// served by the last run are adopted, the run dir's other servers killed; the
    /// exports of `attached`, `detaching` and `error_detaching` attachments left
    /// without a server are started again, on their old port when it is free (the
    /// rows get the new info otherwise). Then attachments stuck past their
    /// deadline are settled ([`VolumeManager::reconcile_attachments`]). A database
    /// error fails it; an export that will not start is logged and reported.
    #[tracing::instrument(skip(self), err, fields(host = %self.settings.host))]
    pub async fn restore_exports(&self) -> Result<RestoreReport> {
        let Some(exports) = &self.shared.exports else {
            return Ok(RestoreReport::default());
        };
        let attachments = self
            .shared
            .db
            .list_attachments(&AttachmentQuery {
                volume_host: Some(self.settings.host.clone()),
                // A member of a cluster restores its own exports only.
                export_host: Some(self.shared.export_host().to_owned()),
                statuses: vec![
                    AttachmentStatus::Attaching,
                    AttachmentStatus::Attached,
                    AttachmentStatus::Detaching,
                    AttachmentStatus::ErrorDetaching,
                ],
                ..Default::default()
            })
            .await?;
        // Each export, with the attachments that hold it and need it served.
        let mut wanted: BTreeMap<ExportKey, Vec<&Attachment>> = BTreeMap::new();
        for attachment in &attachments {
            match key_of(attachment) {
                Ok(key) => wanted.entry(key).or_default().push(attachment),
                Err(err) => tracing::warn!(attachment_id = %attachment.id, %err, "skipped"),
            }
        }
        let keys: Vec<ExportKey> = wanted.keys().cloned().collect();
        let cleanup = exports
            .adopt_or_clean(&keys)
            .await
            .map_err(VolumeError::Restore)?;
        let mut report = RestoreReport {
            adopted: cleanup.adopted,
            killed: cleanup.killed,
            ..Default::default()
        };
        // Those with no server left, on their old ports where free.
        let mut todo = Vec::new();
        for (key, holders) in &wanted {
            let needs_server = holders
                .iter()
                .any(|a| a.status != AttachmentStatus::Attaching);
            if !needs_server || report.adopted.contains(key) {
                continue;
            }
            match self.shared.driver.volume_path(&key.volume_id) {
                Ok(path) => todo.push(Reexport {
                    key: key.clone(),
                    path,
                    format: self.shared.driver.format().to_owned(),
                    port_hint: holders
                        .iter()
                        .find_map(|a| a.connection_info.as_ref().map(|info| info.port)),
                }),
                Err(err) => report.failed.push((key.clone(), err.to_string())),
            }
        }
        for (key, started) in exports.reexport_many(todo).await {
            let info = match started {
                Ok(info) => info,
                Err(err) => {
                    tracing::error!(export = %key, %err, "cannot export again: its clients cannot connect");
                    report.failed.push((key, err.to_string()));
                    continue;
                }
            };
            tracing::info!(export = %key, uri = %info.uri(), "exported again");
            for holder in wanted.get(&key).into_iter().flatten() {
                if holder.status != AttachmentStatus::Attaching
                    && holder.connection_info.as_ref() != Some(&info)
                    && self
                        .shared
                        .db
                        .update_connection_info(&holder.id, &info)
                        .await?
                {
                    tracing::warn!(attachment_id = %holder.id, uri = %info.uri(), "export moved: connection info updated");
                    report.moved.push(holder.id.clone());
                }
            }
            report.reexported.push(key);
        }
        tracing::info!(?report, "exports restored");
        Ok(report)
    }

    /// Leaves every export running as the service stops (clients stay connected;
    /// the next start adopts them).
    pub async fn release_exports(&self) {
        if let Some(exports) = &self.shared.exports {
            exports.release().await;
        }
    }
}
