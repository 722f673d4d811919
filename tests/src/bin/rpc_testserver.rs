//! A stand-alone RPC server for the integration tests that need a real process to
//! kill. It serves topic `$TEST_TOPIC` and prints one line per event on stdout:
//! `READY`, `START <seq>`, `DONE <seq>`.
//!
//! Methods: `echo` (call: replies the request with `<server>:` before its text),
//! `record` (cast: prints START, sleeps `sleep_ms`, prints DONE).
#![forbid(unsafe_code)]

use std::{io::Write, time::Duration};

use anyhow::Context;
use scoria_common::{
    RequestContext,
    rpc::{Broker, Dispatcher, RpcServer, ServerOptions},
};
use scoria_tests::msg::Echo;

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    scoria_common::telemetry::init(scoria_common::config::LogFormat::Human);
    let exchange = std::env::var("SCORIA_CONTROL_EXCHANGE").context("SCORIA_CONTROL_EXCHANGE")?;
    let topic = std::env::var("TEST_TOPIC").context("TEST_TOPIC")?;
    let name = std::env::var("TEST_SERVER_NAME").unwrap_or_else(|_| "testserver".into());
    let config = scoria_tests::bus_config(&exchange);
    let broker = Broker::connect(
        config,
        format!("{exchange}:{name}"),
        Duration::from_secs(10),
    )
    .await?;
    let server_name = name.clone();
    let dispatcher = Dispatcher::new()
        .method("echo", move |_ctx: RequestContext, req: Echo| {
            let name = server_name.clone();
            async move {
                Ok(Echo {
                    text: format!("{name}:{}", req.text),
                    ..req
                })
            }
        })
        .method("record", |_ctx: RequestContext, req: Echo| async move {
            say(format!("START {}", req.seq));
            tokio::time::sleep(Duration::from_millis(u64::from(req.sleep_ms))).await;
            say(format!("DONE {}", req.seq));
            Ok(())
        });
    let shutdown = scoria_common::shutdown::on_signal();
    let server = RpcServer::start(
        broker.clone(),
        ServerOptions::topic(topic),
        dispatcher,
        shutdown.clone(),
    )?;
    server.wait_ready(Duration::from_secs(10)).await?;
    say("READY".into());
    server.join().await;
    broker.close().await;
    Ok(())
}
