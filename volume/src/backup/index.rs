//! [`ChunkIndex`]: the reference counts of a repository's chunks, shared by
//! every backup in it, and [`MemoryIndex`], an in-memory one for tests and
//! benches (the service keeps its index in the database).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;

use super::error::Result;

/// Which backups reference which chunks, and which chunks are stored.
///
/// A chunk is written once: [`acquire`](Self::acquire) tells the engine whether
/// the object must still be put. A digest that [`release`](Self::release)
/// returned counts as not stored until it is [`forget`](Self::forget)ten: an
/// `acquire` of it in between must return true (its object is being deleted).
#[async_trait]
pub trait ChunkIndex: Send + Sync + 'static {
    /// Records that `backup_id` uses `digest` (idempotent per (backup, digest));
    /// returns true if the chunk object must still be written (nobody has
    /// stored it yet).
    async fn acquire(&self, backup_id: &str, digest: &str) -> Result<bool>;

    /// Marks `digest`'s object as written.
    async fn stored(&self, digest: &str) -> Result<()>;

    /// Drops every reference `backup_id` holds; returns the digests no backup
    /// references any more (those of earlier, interrupted deletes too), which
    /// the caller deletes from the target and then [`forget`](Self::forget)s.
    async fn release(&self, backup_id: &str) -> Result<Vec<String>>;

    /// Drops `digest` from the index once its object is deleted (kept if a
    /// backup acquired it again meanwhile).
    async fn forget(&self, digest: &str) -> Result<()>;
}

/// A [`ChunkIndex`] in memory: for unit tests and benches, and for a
/// repository only one process uses for as long as it runs.
#[derive(Debug, Default)]
pub struct MemoryIndex {
    state: std::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per digest, the backups referencing it (empty: released, to delete).
    refs: BTreeMap<String, BTreeSet<String>>,
    /// The digests whose objects are written.
    stored: HashSet<String>,
}

impl MemoryIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of digests referenced by at least one backup.
    pub fn referenced(&self) -> usize {
        self.lock().refs.values().filter(|b| !b.is_empty()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl ChunkIndex for MemoryIndex {
    async fn acquire(&self, backup_id: &str, digest: &str) -> Result<bool> {
        let mut state = self.lock();
        state
            .refs
            .entry(digest.to_owned())
            .or_default()
            .insert(backup_id.to_owned());
        Ok(!state.stored.contains(digest))
    }

    async fn stored(&self, digest: &str) -> Result<()> {
        self.lock().stored.insert(digest.to_owned());
        Ok(())
    }

    async fn release(&self, backup_id: &str) -> Result<Vec<String>> {
        let mut state = self.lock();
        let mut unreferenced = Vec::new();
        for (digest, backups) in state.refs.iter_mut() {
            backups.remove(backup_id);
            if backups.is_empty() {
                unreferenced.push(digest.clone());
            }
        }
        for digest in &unreferenced {
            state.stored.remove(digest);
        }
        Ok(unreferenced)
    }

    async fn forget(&self, digest: &str) -> Result<()> {
        let mut state = self.lock();
        if state.refs.get(digest).is_some_and(BTreeSet::is_empty) {
            state.refs.remove(digest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_chunk_is_written_once_and_freed_with_its_last_backup() {
        let index = MemoryIndex::new();
        assert!(index.acquire("a", "d1").await.expect("acquire"));
        index.stored("d1").await.expect("stored");
        assert!(
            !index.acquire("a", "d1").await.expect("again"),
            "idempotent"
        );
        assert!(!index.acquire("b", "d1").await.expect("shared"));
        assert!(index.acquire("b", "d2").await.expect("new"));
        index.stored("d2").await.expect("stored");

        assert!(
            index.release("a").await.expect("release").is_empty(),
            "b holds d1"
        );
        assert_eq!(index.release("b").await.expect("release"), ["d1", "d2"]);
        // Until forgotten, a released digest must be written again.
        assert!(index.acquire("c", "d1").await.expect("again"));
        index.forget("d1").await.expect("forget");
        index.forget("d2").await.expect("forget");
        assert_eq!(index.referenced(), 1, "c's d1 is kept");
        assert!(index.release("x").await.expect("unknown").is_empty());
    }
}
