//! Per-volume locks: a volume's attaches, detaches and their settling run one at
//! a time, so "last user gone: unexport" never races an attach that reuses the
//! export. A leaf module shared by the manager and the reconciler.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use scoria_common::sync::lock;

/// One async lock per volume, made on first use and dropped once nobody holds or
/// waits for it.
#[derive(Debug, Default)]
pub(crate) struct VolumeLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl VolumeLocks {
    /// Waits for volume `volume_id`'s lock; held until the guard is dropped.
    pub(crate) async fn lock(&self, volume_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = lock(&self.0);
            // A lock only this map holds is neither held nor awaited.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(volume_id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
