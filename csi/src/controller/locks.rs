//! One operation at a time per key (a volume's id, a CO name): a second call
//! on the same key waits for the first, then finds its result (every call is
//! idempotent). The map holds only keys in use.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::OwnedMutexGuard;

/// Per-key locks.
#[derive(Debug, Default)]
pub struct Locks {
    held: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A held lock; dropping it releases the key.
pub struct Held<'a> {
    locks: &'a Locks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Locks {
    /// Waits for `key` and holds it.
    pub async fn lock(&self, key: impl Into<String>) -> Held<'_> {
        let key = key.into();
        let mutex = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.entry(key.clone()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        Held {
            locks: self,
            key,
            guard: Some(guard),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut held = self.locks.held.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it: nobody waits, forget the key.
        if held
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            held.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_held_once_and_forgotten_after() {
        let locks = Locks::default();
        let first = locks.lock("v").await;
        let other = locks.lock("w").await;
        let second =
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("v")).await;
        assert!(second.is_err(), "v is held");
        drop(first);
        drop(other);
        let _again = locks.lock("v").await;
        assert_eq!(locks.held.lock().map(|h| h.len()).unwrap_or(0), 1);
    }
}
