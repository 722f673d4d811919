//! A token bucket per project: `rate` tokens a second, at most `burst` saved up;
//! each request takes one. A project whose bucket is empty waits until a token
//! comes (the `RetryInfo` it is told); other projects have buckets of their own.
//!
//! Memory stays bounded by the projects active lately: a bucket left alone long
//! enough to fill up again is the same as no bucket, so a sweep (at most once
//! per refill time, done by whichever request comes then) drops every full one.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// One project's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left, as of `at`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// The buckets of every project seen lately.
#[derive(Debug)]
pub struct Buckets {
    /// Tokens per second.
    rate: f64,
    /// The most tokens a bucket holds.
    burst: f64,
    /// How long an empty bucket takes to fill: a bucket untouched that long is full.
    refill: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    buckets: HashMap<String, Bucket>,
    /// When the last sweep ran.
    swept: Instant,
}

impl Buckets {
    /// Buckets of `rate` requests a second with `burst` saved up at most
    /// (both at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        let (rate, burst) = (f64::from(rate.max(1)), f64::from(burst.max(1)));
        Self {
            rate,
            burst,
            refill: Duration::from_secs_f64(burst / rate),
            state: Mutex::new(State {
                buckets: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// Takes a token from `project`'s bucket now: `Ok`, or how long until one comes.
    pub fn take(&self, project: &str) -> Result<(), Duration> {
        self.take_at(project, Instant::now())
    }

    /// [`Buckets::take`] at `now` (tests pass their own clock).
    pub fn take_at(&self, project: &str, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another request panicked mid-update of
        // plain numbers: the state is still usable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(state.swept) >= self.refill.max(Duration::from_secs(1)) {
            let (rate, burst) = (self.rate, self.burst);
            state
                .buckets
                .retain(|_, b| level(b, now, rate, burst) < burst);
            state.swept = now;
        }
        let bucket = state.buckets.entry(project.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = level(bucket, now, self.rate, self.burst);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            return Ok(());
        }
        *bucket = Bucket { tokens, at: now };
        Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
    }

    /// How many projects have a bucket now (for tests of the sweep).
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .buckets
            .len()
    }

    /// Whether no project has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tokens of `bucket` at `now`.
fn level(bucket: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_gets_its_burst_then_its_rate() {
        let buckets = Buckets::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            buckets.take_at("p1", t0).expect("burst");
        }
        let wait = buckets.take_at("p1", t0).expect_err("empty");
        assert!(
            wait.abs_diff(Duration::from_millis(100)) < Duration::from_millis(1),
            "{wait:?}"
        );
        // Another project is not affected.
        buckets.take_at("p2", t0).expect("own bucket");
        // 50 ms later half a token came: still 50 ms to wait.
        let wait = buckets
            .take_at("p1", t0 + Duration::from_millis(50))
            .expect_err("half a token");
        assert!(
            wait.abs_diff(Duration::from_millis(50)) < Duration::from_millis(1),
            "{wait:?}"
        );
        buckets
            .take_at("p1", t0 + Duration::from_millis(100))
            .expect("a token came");
        buckets
            .take_at("p1", t0 + Duration::from_millis(100))
            .expect_err("and went");
    }

    #[test]
    fn saved_tokens_never_exceed_the_burst() {
        let buckets = Buckets::new(100, 2);
        let t0 = Instant::now();
        buckets.take_at("p", t0).expect("first");
        let later = t0 + Duration::from_secs(3600);
        buckets.take_at("p", later).expect("1");
        buckets.take_at("p", later).expect("2");
        buckets.take_at("p", later).expect_err("burst is 2");
    }

    #[test]
    fn idle_buckets_are_swept() {
        // Refill time 1 s: the sweep runs at most once a second.
        let buckets = Buckets::new(5, 5);
        let t0 = Instant::now();
        for p in 0..1000 {
            buckets.take_at(&format!("p{p}"), t0).expect("take");
        }
        assert_eq!(buckets.len(), 1000);
        // A busy project keeps its bucket; the others are full again after 1 s.
        buckets
            .take_at("busy", t0 + Duration::from_millis(900))
            .expect("busy");
        buckets
            .take_at("busy", t0 + Duration::from_millis(1500))
            .expect("busy");
        assert_eq!(buckets.len(), 1, "only the busy project is left");
        assert!(!buckets.is_empty());
    }
}
