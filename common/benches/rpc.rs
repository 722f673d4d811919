//! RPC benchmark on the real broker: `cargo bench -p scoria-common --bench rpc`.
//!
//! Prints, in one run: the `raw` lapin round trip (publish -> consume -> publish
//! reply, with the call's settings: transient, mandatory, publisher-confirmed)
//! p50; `call` p50/p99 sequential and calls/s with 10 concurrent callers; `cast`
//! throughput (persistent, confirmed, consumed and acked); `fanout` deliveries/s
//! to two servers; and `ratio` = call p50 / raw p50.
//!
//! `SCORIA_BENCH_QUEUE_TYPE=classic|quorum` (default classic) sets the type of
//! the work queues (`bus.queue_type`), to compare the two on one machine; the
//! first line printed names it.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use scoria_common::{
    RequestContext,
    config::{BusConfig, QueueType},
    rpc::{Broker, Dispatcher, RpcClient, RpcServer, ServerOptions, Target},
};
use tokio_util::sync::CancellationToken;

const CONCURRENT_CALLERS: usize = 10;
const CAST_IN_FLIGHT: usize = 512;

/// Sizes of one run: full under `cargo bench`, a quick smoke run under
/// `cargo test --benches` (which passes no `--bench` flag).
struct Sizes {
    sequential: usize,
    concurrent_secs: u64,
    casts: u64,
    fanouts: u64,
}

fn sizes() -> Sizes {
    if std::env::args().any(|a| a == "--bench") {
        Sizes {
            sequential: 3_000,
            concurrent_secs: 4,
            casts: 40_000,
            fanouts: 10_000,
        }
    } else {
        Sizes {
            sequential: 100,
            concurrent_secs: 1,
            casts: 500,
            fanouts: 200,
        }
    }
}

fn amqp_url() -> String {
    std::env::var("SCORIA_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

fn ms(v: u64) -> String {
    format!("{:.3} ms", v as f64 / 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Sizes {
        sequential,
        concurrent_secs,
        casts,
        fanouts,
    } = sizes();
    let url = amqp_url();
    let exchange = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let queue_type = match std::env::var("SCORIA_BENCH_QUEUE_TYPE") {
        Ok(value) => QueueType::try_from(value).map_err(|e| {
            anyhow::anyhow!(
                "SCORIA_BENCH_QUEUE_TYPE: {}",
                e.replace("SCORIA_RPC_QUEUE_TYPE (config key `bus.queue_type`)", "it")
            )
        })?,
        Err(_) => QueueType::Classic,
    };
    println!("queues  {queue_type}");
    let config = BusConfig {
        amqp_url: url.clone(),
        queue_type,
        control_exchange: exchange.clone(),
        queue_expiry_ms: Some(60_000),
        prefetch: 256,
        ..BusConfig::default()
    };
    let raw_p50 = raw_round_trip(&url, sequential).await.map_err(|e| {
        anyhow::anyhow!("RabbitMQ at {url} is needed (start it: `rabbitmq-server -detached`): {e}")
    })?;
    println!("raw     p50 {}", ms(raw_p50));

    let shutdown = CancellationToken::new();
    let server_broker = Broker::connect(
        config.clone(),
        format!("{exchange}:server"),
        Duration::from_secs(10),
    )
    .await?;
    let cast_count = Arc::new(AtomicU64::new(0));
    let counter = cast_count.clone();
    let dispatcher = Dispatcher::new()
        .method("echo", |_ctx: RequestContext, req: Vec<u8>| async move {
            Ok(req)
        })
        .method("count", move |_ctx: RequestContext, _req: Vec<u8>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        });
    let server = RpcServer::start(
        server_broker.clone(),
        ServerOptions::topic("bench").with_fanout(),
        dispatcher.clone(),
        shutdown.clone(),
    )?;
    server.wait_ready(Duration::from_secs(10)).await?;
    let second_broker = Broker::connect(
        config.clone(),
        format!("{exchange}:server2"),
        Duration::from_secs(10),
    )
    .await?;
    let second = RpcServer::start(
        second_broker.clone(),
        ServerOptions::fanout_only("bench"),
        dispatcher,
        shutdown.clone(),
    )?;
    second.wait_ready(Duration::from_secs(10)).await?;

    let client = RpcClient::new(
        Broker::connect(
            config.clone(),
            format!("{exchange}:client"),
            Duration::from_secs(10),
        )
        .await?,
    );
    let target = Target::topic("bench")?;
    let ctx = RequestContext::internal("bench");
    let payload = vec![7u8; 64];

    // call, sequential
    for _ in 0..200 {
        let _: Vec<u8> = client.call(&ctx, &target, "echo", &payload).await?;
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for _ in 0..sequential {
        let start = Instant::now();
        let _: Vec<u8> = client.call(&ctx, &target, "echo", &payload).await?;
        hist.record(us(start.elapsed()))?;
    }
    let call_p50 = hist.value_at_quantile(0.5);
    println!(
        "call    p50 {} p99 {} ({} sequential, {:.0} calls/s)",
        ms(call_p50),
        ms(hist.value_at_quantile(0.99)),
        sequential,
        1e6 / hist.mean()
    );

    // call, 10 concurrent callers
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(concurrent_secs);
    let started = Instant::now();
    let callers: Vec<_> = (0..CONCURRENT_CALLERS)
        .map(|_| {
            let (client, target, ctx, payload, done) = (
                client.clone(),
                target.clone(),
                ctx.clone(),
                payload.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let reply: Result<Vec<u8>, _> =
                        client.call(&ctx, &target, "echo", &payload).await;
                    if reply.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await?;
    }
    let calls = done.load(Ordering::Relaxed);
    println!(
        "call    {:.0} calls/s with {CONCURRENT_CALLERS} concurrent callers",
        calls as f64 / started.elapsed().as_secs_f64()
    );

    // cast: persistent + confirmed, consumed and acked
    cast_count.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let failures = stream::iter(0..casts)
        .map(|_| {
            let (client, target, ctx) = (client.clone(), target.clone(), ctx.clone());
            async move {
                client
                    .cast(&ctx, &target, "count", &Vec::<u8>::new())
                    .await
                    .is_err()
            }
        })
        .buffer_unordered(CAST_IN_FLIGHT)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let confirmed_in = started.elapsed();
    while cast_count.load(Ordering::Relaxed) < casts - failures as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "cast    {:.0} casts/s ({casts} persistent+confirmed, consumed and acked in {:.2} s; confirmed in {:.2} s; {failures} failed)",
        casts as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        confirmed_in.as_secs_f64()
    );

    // fanout to two servers
    cast_count.store(0, Ordering::Relaxed);
    let started = Instant::now();
    stream::iter(0..fanouts)
        .map(|_| {
            let (client, ctx) = (client.clone(), ctx.clone());
            async move {
                client
                    .fanout_cast(&ctx, "bench", "count", &Vec::<u8>::new())
                    .await
                    .is_err()
            }
        })
        .buffer_unordered(CAST_IN_FLIGHT)
        .for_each(|_| async {})
        .await;
    let wait_until = Instant::now() + Duration::from_secs(30);
    while cast_count.load(Ordering::Relaxed) < 2 * fanouts && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let delivered = cast_count.load(Ordering::Relaxed);
    println!(
        "fanout  {:.0} deliveries/s ({delivered} of {} to 2 servers)",
        delivered as f64 / started.elapsed().as_secs_f64(),
        2 * fanouts
    );
    println!(
        "ratio   {:.2} (call p50 / raw p50)",
        call_p50 as f64 / raw_p50 as f64
    );

    shutdown.cancel();
    server.join().await;
    second.join().await;
    server_broker.close().await;
    second_broker.close().await;
    client.broker().close().await;
    Ok(())
}

/// The bare lapin round trip with the same settings as a call: request
/// transient, mandatory, confirmed; reply on a second queue; p50 in µs.
async fn raw_round_trip(url: &str, sequential: usize) -> anyhow::Result<u64> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let server_conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (requests, replies) = (format!("bench-raw-req-{id}"), format!("bench-raw-rep-{id}"));
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    publisher
        .queue_declare(
            requests.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    publisher
        .queue_declare(
            replies.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let server_channel = server_conn.create_channel().await?;
    let reply_channel = server_conn.create_channel().await?;
    let mut server_consumer = server_channel
        .basic_consume(
            requests.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let server = tokio::spawn(async move {
        while let Some(Ok(delivery)) = server_consumer.next().await {
            let reply_to = delivery.properties.reply_to().clone().unwrap_or_default();
            let _ = reply_channel
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    &delivery.data,
                    BasicProperties::default().with_correlation_id(
                        delivery
                            .properties
                            .correlation_id()
                            .clone()
                            .unwrap_or_default(),
                    ),
                )
                .await;
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
    });
    let reply_consumer_channel = conn.create_channel().await?;
    let mut reply_consumer = reply_consumer_channel
        .basic_consume(
            replies.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut hist = Histogram::<u64>::new(3)?;
    let payload = vec![7u8; 64];
    for i in 0..(sequential + 200) {
        let start = Instant::now();
        let confirm = publisher
            .basic_publish(
                "".into(),
                requests.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &payload,
                BasicProperties::default()
                    .with_reply_to(replies.as_str().into())
                    .with_correlation_id(i.to_string().into())
                    .with_delivery_mode(1)
                    .with_expiration("60000".into()),
            )
            .await?;
        confirm.await?;
        reply_consumer
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("reply stream ended"))??;
        if i >= 200 {
            hist.record(us(start.elapsed()))?;
        }
    }
    server.abort();
    let _ = publisher
        .queue_delete(requests.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bye".into()).await;
    let _ = server_conn.close(200, "bye".into()).await;
    Ok(hist.value_at_quantile(0.5))
}
