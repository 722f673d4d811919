//! One message: run its handler, reply to a call, then settle the delivery.
//!
//! A cast whose handler answers `UNAVAILABLE` is tried again after a pause, a
//! bounded number of times. Classic queues do not count redeliveries, so the
//! count travels with the message: instead of requeueing it, the server
//! publishes a copy (same properties, persistent, publisher-confirmed, straight
//! to the queue it came from through the default exchange) whose
//! `x-scoria-delivery-count` header is one more, and acks the original once
//! the broker confirmed the copy. A message that arrives with the count at
//! [`ServerOptions::max_redeliveries`](super::ServerOptions) and is still
//! unavailable is rejected without requeue: the broker dead-letters it to `<cx>.dead`.
//!
//! ```text
//!   delivery (count c) ──handler──▶ OK / other error ──▶ ack
//!                                 ├▶ UNAVAILABLE, c < max ──pause──▶ publish copy (c+1), confirmed ──▶ ack
//!                                 │                                  └ copy not confirmed ──▶ nack, requeue
//!                                 └▶ UNAVAILABLE, c = max ──▶ reject ──▶ <cx>.dlx ──▶ <cx>.dead
//! ```

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::FutureExt;
use lapin::{
    BasicProperties, Confirmation,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use tonic::{Code, Status};

use super::{Dispatcher, HandlerError};
use crate::{
    rpc::{CONTENT_TYPE, broker::Session, headers, reply},
    telemetry::context as telemetry,
};

/// The header counting how many times a cast was tried again after `UNAVAILABLE`
/// (absent on its first delivery).
pub const DELIVERY_COUNT: &str = "x-scoria-delivery-count";

/// What happens to a message after its handler ran.
enum Disposition {
    /// Handled (successfully or with an error the handler chose): ack.
    Done,
    /// Can never be handled: reject to the dead-letter queue.
    Poison,
    /// A dependency is down: try again after a pause, or dead-letter past the
    /// cap (casts only).
    Retry,
}

/// How a server tries casts again; the same for all its messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryPolicy {
    /// Tries after the first before dead-lettering.
    pub(super) max_redeliveries: u32,
    /// The pause before the first try again; it doubles with each further one,
    /// up to [`MAX_RETRY_PAUSE`].
    pub(super) pause: Duration,
    /// How long publishing the copy may take.
    pub(super) publish_timeout: Duration,
}

/// One delivery to handle, and where it came from.
pub(super) struct Job {
    pub(super) dispatcher: Arc<Dispatcher>,
    pub(super) session: Arc<Session>,
    pub(super) topic: String,
    /// The queue the delivery came from (copies go back to it).
    pub(super) queue: Arc<str>,
    pub(super) reply_exchange: Arc<str>,
    pub(super) retry: RetryPolicy,
}

impl Job {
    pub(super) async fn handle(self, mut delivery: Delivery) {
        let body = Bytes::from(std::mem::take(&mut delivery.data));
        let props = &delivery.properties;
        let method = props
            .kind()
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_default();
        let mut ctx = headers::decode(props.headers().as_ref());
        let reply_to = props.reply_to().as_ref().map(|r| r.to_string());
        let correlation_id = props.correlation_id().as_ref().map(|c| c.to_string());
        let is_call = reply_to.is_some() && correlation_id.is_some();
        let count = delivery_count(props.headers().as_ref());
        let span = tracing::info_span!(
            "rpc.handle",
            topic = %self.topic,
            %method,
            request_id = %ctx.request_id,
            trace_id = tracing::field::Empty,
            redelivered = delivery.redelivered,
            delivery_count = count,
        );
        // The handler span continues the sender's trace; the context follows it.
        if let Some(own) =
            telemetry::continue_trace(&span, || headers::traceparent(props.headers().as_ref()))
        {
            ctx.traceparent = own;
        }
        telemetry::record_trace_id(&span, &ctx.traceparent);

        let bus = &crate::metrics::global().bus;
        bus.delivered(&self.topic, delivery.redelivered);
        let started = std::time::Instant::now();
        let (outcome, disposition) = match self.dispatcher.handlers.get(&method) {
            None => (
                Err(Status::unimplemented(format!(
                    "unknown method {method:?} on topic {:?}",
                    self.topic
                ))),
                Disposition::Poison,
            ),
            Some(handler) => {
                let run = AssertUnwindSafe(handler(ctx, body.clone())).catch_unwind();
                match tracing::Instrument::instrument(run, span.clone()).await {
                    Ok(Ok(result)) => (Ok(result), Disposition::Done),
                    Ok(Err(HandlerError::Decode(err))) => (
                        Err(Status::invalid_argument(format!(
                            "the body of {method} is not its request message: {err}"
                        ))),
                        Disposition::Poison,
                    ),
                    Ok(Err(HandlerError::Status(status))) => {
                        let retry = !is_call && status.code() == Code::Unavailable;
                        (
                            Err(status),
                            if retry {
                                Disposition::Retry
                            } else {
                                Disposition::Done
                            },
                        )
                    }
                    Err(_) => (
                        Err(Status::internal(format!(
                            "the handler of {method} panicked"
                        ))),
                        Disposition::Poison,
                    ),
                }
            }
        };
        let served = self.dispatcher.handlers.contains_key(&method);
        let label = if served {
            method.as_str()
        } else {
            crate::metrics::bus::UNKNOWN_METHOD
        };
        bus.handled(&self.topic, label, started, &outcome);
        if let (Err(status), Disposition::Poison) = (&outcome, &disposition) {
            bus.dead_lettered(&self.topic, dead_letter_reason(served, status.code()));
        }
        match (&outcome, &disposition) {
            (Err(status), Disposition::Poison) => {
                tracing::warn!(parent: &span, code = ?status.code(), error = %status.message(), "dead-lettering message")
            }
            (Err(status), Disposition::Retry) => {
                tracing::info!(parent: &span, error = %status.message(), "dependency unavailable")
            }
            (Err(status), Disposition::Done) if !is_call => {
                tracing::warn!(parent: &span, code = ?status.code(), error = %status.message(), "cast handler failed")
            }
            _ => {}
        }
        if let (Some(reply_to), Some(correlation_id)) = (reply_to, correlation_id) {
            self.reply(&reply_to, &correlation_id, &method, outcome)
                .await;
        }
        let settled = match disposition {
            Disposition::Done => delivery.acker.ack(BasicAckOptions::default()).await,
            Disposition::Poison => {
                delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
            }
            Disposition::Retry => self.retry(&delivery, &body, &method, count, &span).await,
        };
        if let Err(err) = settled {
            // The channel died: the broker redelivers the message.
            tracing::debug!(parent: &span, error = %err, "could not settle message; it will be redelivered");
        }
    }

    /// Tries a cast again (a copy counted one more, then ack), or dead-letters
    /// it when it was tried `max_redeliveries` times already.
    async fn retry(
        &self,
        delivery: &Delivery,
        body: &[u8],
        method: &str,
        count: u32,
        span: &tracing::Span,
    ) -> lapin::Result<bool> {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default();
        if count >= self.retry.max_redeliveries {
            tracing::warn!(
                parent: span,
                %method,
                target = %self.queue,
                count,
                %message_id,
                "cast still unavailable after {count} redeliveries; dead-lettering it"
            );
            crate::metrics::global().bus.dead_lettered(
                &self.topic,
                crate::metrics::bus::DeadLetter::RetriesExhausted,
            );
            return delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
        }
        tokio::time::sleep(backoff(self.retry.pause, count)).await;
        let props = delivery
            .properties
            .clone()
            .with_headers(with_delivery_count(
                delivery.properties.headers().as_ref(),
                count + 1,
            ))
            .with_delivery_mode(2);
        match self.publish_copy(body, props).await {
            Ok(()) => {
                tracing::debug!(parent: span, %message_id, count = count + 1, "cast published again");
                delivery.acker.ack(BasicAckOptions::default()).await
            }
            Err(reason) => {
                // Without a confirmed copy the original must stay: requeue it
                // (its count does not advance; the next try publishes again).
                tracing::warn!(parent: span, %method, target = %self.queue, %message_id, %reason, "could not publish the cast again; requeueing it");
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
            }
        }
    }

    /// Publishes `body` to this job's queue through the default exchange and
    /// waits for the broker's confirmation.
    async fn publish_copy(&self, body: &[u8], props: BasicProperties) -> Result<(), String> {
        let publish = async {
            let confirmation = self
                .session
                .publisher
                .basic_publish(
                    "".into(),
                    self.queue.as_ref().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    props,
                )
                .await
                .inspect_err(|_| self.session.mark_broken())
                .map_err(|e| e.to_string())?
                .await
                .inspect_err(|_| self.session.mark_broken())
                .map_err(|e| e.to_string())?;
            match confirmation {
                Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                    Err(format!("returned by the broker: {}", returned.reply_text))
                }
                Confirmation::Nack(None) => Err("nacked by the broker".to_owned()),
            }
        };
        tokio::time::timeout(self.retry.publish_timeout, publish)
            .await
            .map_err(|_| format!("not confirmed within {:?}", self.retry.publish_timeout))?
    }

    async fn reply(
        &self,
        reply_to: &str,
        correlation_id: &str,
        method: &str,
        outcome: Result<Bytes, Status>,
    ) {
        let props = BasicProperties::default()
            .with_type(method.into())
            .with_content_type(CONTENT_TYPE.into())
            .with_correlation_id(correlation_id.into())
            .with_delivery_mode(1);
        let published = self
            .session
            .replies
            .basic_publish(
                self.reply_exchange.as_ref().into(),
                reply_to.into(),
                BasicPublishOptions::default(),
                &reply::encode(outcome),
                props,
            )
            .await;
        if let Err(err) = published {
            tracing::warn!(error = %err, %method, "could not publish a reply; the caller will time out");
            self.session.mark_broken();
        }
    }
}

// === the delivery count ===

/// Why a message is poison: no handler, a body that does not decode, a panic.
fn dead_letter_reason(served: bool, code: Code) -> crate::metrics::bus::DeadLetter {
    use crate::metrics::bus::DeadLetter;
    match (served, code) {
        (false, _) => DeadLetter::UnknownMethod,
        (true, Code::InvalidArgument) => DeadLetter::Undecodable,
        (true, _) => DeadLetter::Panicked,
    }
}

/// The [`DELIVERY_COUNT`] of a message: 0 if absent or not a non-negative integer.
fn delivery_count(headers: Option<&FieldTable>) -> u32 {
    let Some(value) = headers.and_then(|h| h.inner().get(DELIVERY_COUNT)) else {
        return 0;
    };
    let count: i128 = match value {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        _ => 0,
    };
    u32::try_from(count.max(0)).unwrap_or(u32::MAX)
}

/// `headers` with [`DELIVERY_COUNT`] set to `count`, every other header kept.
fn with_delivery_count(headers: Option<&FieldTable>, count: u32) -> FieldTable {
    let mut headers = headers.cloned().unwrap_or_default();
    headers.insert(
        ShortString::from(DELIVERY_COUNT),
        AMQPValue::LongLongInt(count.into()),
    );
    headers
}

/// The longest pause between two tries of a cast.
pub(crate) const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// The pause before try `count + 1`: `first`, doubled each time, at most
/// [`MAX_RETRY_PAUSE`]. With the defaults (1 s, 10 redeliveries) a cast rides
/// out about three minutes of a dependency's outage before it is dead-lettered.
fn backoff(first: Duration, count: u32) -> Duration {
    first
        .saturating_mul(1u32 << count.min(16))
        .min(MAX_RETRY_PAUSE.max(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_its_maximum() {
        let first = Duration::from_secs(1);
        let pauses: Vec<u64> = (0..8).map(|c| backoff(first, c).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30, 30]);
        let total: u64 = (0..10).map(|c| backoff(first, c).as_secs()).sum();
        assert!(total >= 180, "{total}");
        assert_eq!(
            backoff(Duration::from_millis(10), 1),
            Duration::from_millis(20)
        );
    }

    #[test]
    fn the_delivery_count_starts_at_zero_and_round_trips() {
        assert_eq!(delivery_count(None), 0);
        let mut headers = FieldTable::default();
        headers.insert("x-request-id".into(), AMQPValue::LongString("r-1".into()));
        assert_eq!(delivery_count(Some(&headers)), 0);

        let counted = with_delivery_count(Some(&headers), 3);
        assert_eq!(delivery_count(Some(&counted)), 3);
        assert!(
            counted.inner().contains_key("x-request-id"),
            "other headers kept"
        );
        let again = with_delivery_count(Some(&counted), 4);
        assert_eq!(delivery_count(Some(&again)), 4);
    }

    #[test]
    fn a_foreign_or_odd_delivery_count_is_read_safely() {
        let mut headers = FieldTable::default();
        headers.insert(DELIVERY_COUNT.into(), AMQPValue::LongInt(-5));
        assert_eq!(delivery_count(Some(&headers)), 0);
        headers.insert(DELIVERY_COUNT.into(), AMQPValue::ShortShortUInt(7));
        assert_eq!(delivery_count(Some(&headers)), 7);
        headers.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(i64::MAX));
        assert_eq!(delivery_count(Some(&headers)), u32::MAX);
        headers.insert(DELIVERY_COUNT.into(), AMQPValue::LongString("2".into()));
        assert_eq!(delivery_count(Some(&headers)), 0);
    }
}
