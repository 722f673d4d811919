//! What the RPC layer records: messages sent per topic, method and outcome,
//! call latency (client side), handler duration (server side), redeliveries,
//! dead letters, reconnects and publisher-confirm latency.
//!
//! Outcomes are bounded: `ok`; a local failure as the kind of [`RpcError`]
//! (`timeout`, `no_route`, `no_consumer`, `nacked`, `unavailable`, `bad_reply`,
//! `invalid_target`, `shutting_down`); a remote failure (the handler's status)
//! as its gRPC code name (`NotFound`, `FailedPrecondition` ...).

use std::{future::Future, time::Instant};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tonic::Status;

use super::{CounterFamily, HistogramFamily, code_name, duration_family};
use crate::rpc::{RpcError, Target};

/// The method label of a message whose method this server does not serve
/// (names from the wire are not labels: they are not bounded).
pub const UNKNOWN_METHOD: &str = "unknown";

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetter {
    /// No handler for its method.
    UnknownMethod,
    /// Its body is not the method's request.
    Undecodable,
    /// Its handler panicked.
    Panicked,
    /// A cast still `UNAVAILABLE` after the redelivery cap.
    RetriesExhausted,
}

impl DeadLetter {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetter::UnknownMethod => "unknown_method",
            DeadLetter::Undecodable => "undecodable",
            DeadLetter::Panicked => "panicked",
            DeadLetter::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// The bus families.
pub struct BusMetrics {
    calls: CounterFamily<3>,
    casts: CounterFamily<3>,
    fanouts: CounterFamily<3>,
    call_duration: HistogramFamily<3>,
    handled: HistogramFamily<3>,
    redeliveries: CounterFamily<1>,
    dead_lettered: CounterFamily<2>,
    reconnects: Counter,
    confirm: Histogram,
}

impl BusMetrics {
    pub(super) fn new(registry: &mut Registry) -> Self {
        let this = Self {
            calls: Family::default(),
            casts: Family::default(),
            fanouts: Family::default(),
            call_duration: duration_family(),
            handled: duration_family(),
            redeliveries: Family::default(),
            dead_lettered: Family::default(),
            reconnects: Counter::default(),
            confirm: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 14,
            )),
        };
        registry.register(
            "scoria_rpc_calls_sent",
            "Calls sent, by topic, method and outcome.",
            this.calls.clone(),
        );
        registry.register(
            "scoria_rpc_casts_sent",
            "Casts sent (confirmed by the broker when ok), by topic, method and outcome.",
            this.casts.clone(),
        );
        registry.register(
            "scoria_rpc_fanouts_sent",
            "Fanout casts sent, by topic, method and outcome.",
            this.fanouts.clone(),
        );
        registry.register(
            "scoria_rpc_call_duration_seconds",
            "How long calls took until their reply (client side), by topic, method and outcome.",
            this.call_duration.clone(),
        );
        registry.register(
            "scoria_rpc_handler_duration_seconds",
            "How long handlers ran (server side), by topic, method and outcome.",
            this.handled.clone(),
        );
        registry.register(
            "scoria_rpc_redeliveries",
            "Deliveries the broker flagged redelivered, by topic.",
            this.redeliveries.clone(),
        );
        registry.register(
            "scoria_rpc_dead_lettered",
            "Messages rejected to the dead-letter exchange, by topic and reason.",
            this.dead_lettered.clone(),
        );
        registry.register(
            "scoria_rpc_broker_reconnects",
            "Connections to the broker re-established after a loss.",
            this.reconnects.clone(),
        );
        registry.register(
            "scoria_rpc_publish_confirm_seconds",
            "How long the broker took to confirm a publish.",
            this.confirm.clone(),
        );
        this
    }

    /// Records a call to `target` that ended with `result` after `started`.
    pub fn call<T>(
        &self,
        target: &Target,
        method: &str,
        started: Instant,
        result: &Result<T, RpcError>,
    ) {
        let labels = labels(target.topic_name(), method, outcome(result));
        self.calls.get_or_create(&labels).inc();
        self.call_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Records a cast to `target` and passes its result on.
    pub fn cast<T>(
        &self,
        target: &Target,
        method: &str,
        result: Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let labels = labels(target.topic_name(), method, outcome(&result));
        self.casts.get_or_create(&labels).inc();
        result
    }

    /// Records a fanout cast to `topic` and passes its result on.
    pub fn fanout<T>(
        &self,
        topic: &str,
        method: &str,
        result: Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let labels = labels(topic, method, outcome(&result));
        self.fanouts.get_or_create(&labels).inc();
        result
    }

    /// Records a handler of `method` (served: [`UNKNOWN_METHOD`] otherwise) on
    /// `topic` that ran since `started` and returned `outcome`.
    pub fn handled<T>(
        &self,
        topic: &str,
        method: &str,
        started: Instant,
        outcome: &Result<T, Status>,
    ) {
        let code = match outcome {
            Ok(_) => "ok",
            Err(status) => code_name(status.code()),
        };
        self.handled
            .get_or_create(&labels(topic, method, code))
            .observe(started.elapsed().as_secs_f64());
    }

    /// Records a delivery, counting it if the broker flagged it redelivered.
    pub fn delivered(&self, topic: &str, redelivered: bool) {
        if redelivered {
            self.redeliveries
                .get_or_create(&[("topic", topic.to_owned())])
                .inc();
        }
    }

    /// Records a message of `topic` rejected to the dead-letter exchange.
    pub fn dead_lettered(&self, topic: &str, reason: DeadLetter) {
        self.dead_lettered
            .get_or_create(&[
                ("topic", topic.to_owned()),
                ("reason", reason.as_str().to_owned()),
            ])
            .inc();
    }

    /// Records a connection re-established after a loss.
    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// Awaits a publisher confirmation, recording how long it took.
    pub async fn confirm<F: Future>(&self, confirmation: F) -> F::Output {
        let started = Instant::now();
        let out = confirmation.await;
        self.confirm.observe(started.elapsed().as_secs_f64());
        out
    }
}

fn labels(topic: &str, method: &str, outcome: &'static str) -> super::Labels<3> {
    [
        ("topic", topic.to_owned()),
        ("method", method.to_owned()),
        ("outcome", outcome.to_owned()),
    ]
}

/// The `outcome` label of a result (see the module's documentation).
pub fn outcome<T>(result: &Result<T, RpcError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(RpcError::Remote { status, .. }) => code_name(status.code()),
        Err(RpcError::Timeout { .. }) => "timeout",
        Err(RpcError::NoRoute { .. }) => "no_route",
        Err(RpcError::NoConsumer { .. }) => "no_consumer",
        Err(RpcError::Nacked { .. }) => "nacked",
        Err(RpcError::Unavailable(_)) => "unavailable",
        Err(RpcError::BadReply { .. }) => "bad_reply",
        Err(RpcError::InvalidTarget { .. }) => "invalid_target",
        Err(RpcError::QueueMismatch(_)) => "queue_mismatch",
        Err(RpcError::ShuttingDown) => "shutting_down",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn outcomes_are_kinds_locally_and_codes_remotely() {
        assert_eq!(outcome::<()>(&Ok(())), "ok");
        let remote = RpcError::Remote {
            method: "m".into(),
            target: "t".into(),
            status: Status::not_found("gone"),
        };
        assert_eq!(outcome::<()>(&Err(remote)), "NotFound");
        let timeout = RpcError::Timeout {
            method: "m".into(),
            target: "t".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(outcome::<()>(&Err(timeout)), "timeout");
        assert_eq!(
            outcome::<()>(&Err(RpcError::NoConsumer { target: "t".into() })),
            "no_consumer"
        );
        assert_eq!(
            outcome::<()>(&Err(RpcError::Unavailable("down".into()))),
            "unavailable"
        );
    }

    #[tokio::test]
    async fn casts_and_handlers_are_counted_per_topic_method_and_outcome() {
        let bus = &super::super::global().bus;
        let target = Target::topic("unit-bus-topic").expect("topic");
        let _ = bus.cast(&target, "do_it", Ok::<(), RpcError>(()));
        let _ = bus.cast(&target, "do_it", Err::<(), _>(RpcError::ShuttingDown));
        bus.handled(
            "unit-bus-topic",
            "do_it",
            Instant::now(),
            &Err::<(), _>(Status::internal("x")),
        );
        bus.dead_lettered("unit-bus-topic", DeadLetter::UnknownMethod);
        let text = super::super::global().render().await;
        for line in [
            "scoria_rpc_casts_sent_total{topic=\"unit-bus-topic\",method=\"do_it\",outcome=\"ok\"} 1",
            "scoria_rpc_casts_sent_total{topic=\"unit-bus-topic\",method=\"do_it\",outcome=\"shutting_down\"} 1",
            "scoria_rpc_handler_duration_seconds_count{topic=\"unit-bus-topic\",method=\"do_it\",outcome=\"Internal\"} 1",
            "scoria_rpc_dead_lettered_total{topic=\"unit-bus-topic\",reason=\"unknown_method\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
