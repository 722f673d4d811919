//! The settling steps several handlers end with: a row removed once its backend
//! object is gone, and a volume failed when its backend step failed.

use std::future::Future;

use scoria_common::{
    RequestContext,
    db::DbResult,
    events::Event,
    model::{Volume, VolumeStatus},
    settle::{Resource, VolumeChange},
};

use super::VolumeManager;
use crate::error::Result;

impl VolumeManager {
    /// Settles `resource` as deleted: `removed` is the compare-and-set that
    /// removes its row (and worker entry); on a win `event` is announced.
    pub(super) async fn settle_removed<T: Resource>(
        &self,
        ctx: &RequestContext,
        resource: &mut T,
        removed: impl Future<Output = DbResult<bool>>,
        event: Event,
    ) -> Result<()> {
        let settler = &self.shared.settler;
        if settler
            .settle(ctx, resource, removed, |_| {}, Some(event))
            .await?
        {
            tracing::info!(?event, "row removed: deleted");
        }
        Ok(())
    }

    /// A backend step on `volume` failed: it goes from `from` to `to` with
    /// `message`, announcing `event` if it won.
    pub(super) async fn volume_failed(
        &self,
        ctx: &RequestContext,
        volume: &mut Volume,
        (from, to): (VolumeStatus, VolumeStatus),
        message: &str,
        event: Event,
    ) -> Result<()> {
        tracing::error!(message, "backend step failed");
        let from = [from];
        let change = VolumeChange::new(&from, to).error(message);
        self.shared
            .settler
            .volume(ctx, volume, change, Some(event))
            .await?;
        Ok(())
    }
}
