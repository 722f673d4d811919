//! Locking, one way everywhere: a poisoned `std::sync::Mutex` is recovered, not
//! skipped. A panic while the lock was held leaves data that every holder
//! keeps consistent between its statements (a map insert or remove is never half
//! done), so going on with it is right; skipping the operation silently (a call
//! never registered, nothing marked in flight) is what loses work.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering the guard if a holder panicked.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_data() {
        let mutex = std::sync::Arc::new(Mutex::new(vec![1]));
        let poisoner = mutex.clone();
        let _ = std::thread::spawn(move || {
            let mut guard = poisoner.lock().expect("first lock");
            guard.push(2);
            panic!("poison it");
        })
        .join();
        assert!(mutex.is_poisoned());
        lock(&mutex).push(3);
        assert_eq!(*lock(&mutex), vec![1, 2, 3]);
    }
}
