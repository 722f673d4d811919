//! Periodic tasks: one loop, written once, for every service's heartbeats,
//! reports, reaper and reconciler. A missed tick is delayed, never bunched, and
//! shutdown interrupts the wait and the run alike.

use std::{future::Future, time::Duration};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// When a periodic task runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRun {
    /// At once (a reconciler at start-up).
    Now,
    /// One period from now (a heartbeat whose first beat start-up wrote).
    AfterPeriod,
}

/// Runs `task` every `period` (first as `first` says) until `shutdown`; a run
/// in progress is dropped at shutdown.
pub async fn every<F, Fut>(
    period: Duration,
    first: FirstRun,
    shutdown: CancellationToken,
    mut task: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let start = match first {
        FirstRun::Now => Instant::now(),
        FirstRun::AfterPeriod => Instant::now() + period,
    };
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = task() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    fn counting(runs: &Arc<AtomicUsize>) -> impl FnMut() -> std::future::Ready<()> + use<> {
        let runs = runs.clone();
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        }
    }

    #[tokio::test]
    async fn now_runs_at_once_after_period_waits_a_period() {
        let (now, later) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let shutdown = CancellationToken::new();
        let period = Duration::from_millis(200);
        let a = tokio::spawn(every(
            period,
            FirstRun::Now,
            shutdown.clone(),
            counting(&now),
        ));
        let b = tokio::spawn(every(
            period,
            FirstRun::AfterPeriod,
            shutdown.clone(),
            counting(&later),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(now.load(Ordering::SeqCst), 1);
        assert_eq!(later.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(now.load(Ordering::SeqCst), 2);
        assert_eq!(later.load(Ordering::SeqCst), 1);
        shutdown.cancel();
        let (a, b) = tokio::join!(a, b);
        a.expect("a");
        b.expect("b");
    }

    #[tokio::test]
    async fn shutdown_interrupts_a_run_in_progress() {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(every(
            Duration::from_millis(10),
            FirstRun::Now,
            shutdown.clone(),
            || tokio::time::sleep(Duration::from_secs(3600)),
        ));
        tokio::time::sleep(Duration::from_millis(30)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stopped at once")
            .expect("no panic");
    }
}
