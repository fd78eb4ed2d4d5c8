//! Locks taken as they are after a panic: every mutex of the edge guards state that a
//! holder leaves whole at each step (a map, a list, counters), so a panic while one was held
//! (a bug, reported by the panic hook) must not take every later request or scrape down with
//! it through a poisoned lock. A leaf: it imports nothing of the edge.

use std::sync::{Mutex, MutexGuard};

/// `m`, locked; poisoned or not.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock whose holder panicked is taken, with what the holder left in it.
    #[test]
    fn a_poisoned_lock_is_taken_with_its_value() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let held = m.clone();
        let panicked = std::thread::spawn(move || {
            let mut value = held.lock().expect("first");
            *value = 2;
            panic!("while holding the lock");
        })
        .join();
        assert!(panicked.is_err() && m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 3);
    }
}
