//! Reconnection pacing: the rotation over the configured broker addresses and
//! the backoff between attempts.

use std::time::Duration;

use rand::Rng;

// === Rotation ===

/// Which broker address the supervisor tries, and when it must sleep: it
/// stays on an address while it answers, moves to the next one when an
/// attempt fails or the connection is lost, and asks for the backoff only
/// once every address has failed in a row.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    len: usize,
    current: usize,
    failures_in_row: usize,
}

impl Rotation {
    /// Over `len` addresses (at least one), starting at the first.
    pub(crate) fn new(len: usize) -> Self {
        Self {
            len: len.max(1),
            current: 0,
            failures_in_row: 0,
        }
    }

    /// The index of the address to try now.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// An attempt at [`Rotation::current`] succeeded.
    pub(crate) fn connected(&mut self) {
        self.failures_in_row = 0;
    }

    /// The connection at [`Rotation::current`] was lost: the node may be gone,
    /// try the next one first (at once).
    pub(crate) fn lost(&mut self) {
        self.failures_in_row = 0;
        self.advance();
    }

    /// An attempt at [`Rotation::current`] failed; moves to the next address.
    /// `true` when every address has now failed in a row: sleep the backoff
    /// before the next attempt.
    pub(crate) fn failed(&mut self) -> bool {
        self.advance();
        self.failures_in_row += 1;
        if self.failures_in_row >= self.len {
            self.failures_in_row = 0;
            true
        } else {
            false
        }
    }

    fn advance(&mut self) {
        self.current = (self.current + 1) % self.len;
    }
}

// === Backoff ===

/// Exponential backoff with "equal jitter": half the current step plus a random
/// part of the other half, so reconnecting processes do not stampede the broker.
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `base`, doubling up to `max`.
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            current: base,
        }
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = step / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Back to `base` after a success.
    pub(crate) fn reset(&mut self) {
        self.current = self.base;
    }
}
