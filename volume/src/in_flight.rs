//! The in-flight registry: the resources a handler of this process works on right
//! now. The reconciler leaves them alone whatever their deadline (their owner is
//! alive); a leaf module, so the manager and the reconciler share it without
//! importing each other.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use scoria_common::sync::lock;

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
        *lock(&self.0).entry(id.to_owned()).or_insert(0) += 1;
        InFlightGuard {
            set: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Whether a handler works on `id` right now.
    pub fn contains(&self, id: &str) -> bool {
        lock(&self.0).contains_key(id)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut map = lock(&self.set.0);
        if let Some(count) = map.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_registry_still_marks_work_in_flight() {
        let set = InFlight::default();
        let poisoner = set.clone();
        let _ = std::thread::spawn(move || {
            let _held = poisoner.0.lock().expect("first lock");
            panic!("poison the registry");
        })
        .join();
        assert!(set.0.is_poisoned());
        let guard = set.enter("vol-1");
        assert!(set.contains("vol-1"), "entered work must be in flight");
        drop(guard);
        assert!(!set.contains("vol-1"), "left work must not be in flight");
    }
}
