//! Stripes: a value that every request updates, kept in one copy per stripe, so that the
//! worker threads do not write one cache line in turn (each write by one thread takes the
//! line from the other core: taking the per-request metrics and the keep-alive wait's shared
//! wake-up list out altogether measured about a tenth less user-space time per kept-alive
//! request, striping them about 3% less CPU in all, BENCHMARKS.md). Readers (a `/metrics`
//! scrape, a shutdown) go over every copy.
//!
//! A thread's stripe is fixed at its first use, in the order threads come to it; threads
//! beyond [`STRIPES`] share stripes (still correct: the copies are atomics or locks, only
//! no longer one thread's alone).

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many copies a striped value has: more than the worker threads of a typical edge.
pub const STRIPES: usize = 8;

/// This thread's stripe, in `0..STRIPES`.
pub fn mine() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// `T` alone on its cache line(s): two stripes side by side in an array are not one line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_stripe() {
        let here = mine();
        assert_eq!(mine(), here);
        assert!(here < STRIPES);
        let other = std::thread::spawn(mine).join().expect("thread");
        assert!(other < STRIPES);
    }

    #[test]
    fn padded_values_are_a_line_apart() {
        let two: [Padded<u8>; 2] = Default::default();
        let gap = std::ptr::addr_of!(two[1]) as usize - std::ptr::addr_of!(two[0]) as usize;
        assert!(gap >= 128);
    }
}
