//! The expiry of transfers: every API instance, on a timer, ends the offers
//! whose `expires_at` has passed (row removed, volume `available` again), so an
//! `awaiting-transfer` volume never outlives its deadline by more than one
//! interval. Racing instances are safe: each row is removed once, by whichever
//! transaction deletes it first.

use std::{sync::Arc, time::Duration};

use scoria_common::{
    RequestContext,
    db::Db,
    events::{Event, Notifications},
    model::now_ms,
};
use tokio_util::sync::CancellationToken;

/// How many lapsed transfers one pass ends at most (the next pass takes the rest).
const BATCH: u32 = 100;

/// How often the sweep runs for offers that stand `expiry`: a quarter of it,
/// between 1 s and 60 s.
pub fn interval_for(expiry: Duration) -> Duration {
    (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Ends lapsed transfers every `interval` until `stop` is cancelled.
pub async fn sweep_expired(
    db: Db,
    notifications: Arc<dyn Notifications>,
    interval: Duration,
    stop: CancellationToken,
) {
    let ctx = RequestContext::internal(crate::BINARY);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match db.expire_transfers(now_ms(), BATCH).await {
            Ok(ended) => {
                for transfer in &ended {
                    notifications.announce(&ctx, Event::TransferDeleteEnd, transfer.into());
                    tracing::info!(transfer_id = %transfer.id, volume_id = %transfer.volume_id, "transfer lapsed: volume available again");
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "transfer expiry sweep failed; retried next interval")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_a_quarter_of_the_expiry_within_bounds() {
        assert_eq!(
            interval_for(Duration::from_secs(86_400)),
            Duration::from_secs(60)
        );
        assert_eq!(interval_for(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(interval_for(Duration::from_secs(1)), Duration::from_secs(1));
    }
}
