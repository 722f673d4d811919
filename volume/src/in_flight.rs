//! The in-flight registry: the resources a handler of this process works on right
//! now. The reconciler leaves them alone whatever their deadline (their owner is
//! alive); a leaf module, so the manager and the reconciler share it without
//! importing each other.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// The resources handlers of this process work on right now (counted: a
/// redelivered cast may run beside the first delivery).
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, usize>>>);

/// Marks a resource in flight until dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    set: InFlight,
    id: String,
}

impl InFlight {
    /// Marks `id` in flight until the guard is dropped.
    pub fn enter(&self, id: &str) -> InFlightGuard {
        if let Ok(mut map) = self.0.lock() {
            *map.entry(id.to_owned()).or_insert(0) += 1;
        }
        InFlightGuard {
            set: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Whether a handler works on `id` right now.
    pub fn contains(&self, id: &str) -> bool {
        self.0
            .lock()
            .map(|map| map.contains_key(id))
            .unwrap_or(false)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.set.0.lock()
            && let Some(count) = map.get_mut(&self.id)
        {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.id);
            }
        }
    }
}
