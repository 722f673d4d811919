//! The RPC layer against the real broker: call, cast, fanout, errors, failures.

mod call;
mod cast;
mod failures;
mod queue_types;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use scoria_common::{
    RequestContext,
    rpc::{Broker, Dispatcher, RpcServer, ServerOptions},
};
use scoria_tests::{bus_config, msg::Echo};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, metadata::MetadataValue};

const WAIT: Duration = Duration::from_secs(15);

/// What a test server saw: (server name, seq) in arrival order.
type Seen = Arc<Mutex<Vec<(String, u64)>>>;

async fn broker(exchange: &str, name: &str) -> Broker {
    Broker::connect(bus_config(exchange), format!("{exchange}:{name}"), WAIT)
        .await
        .expect("connect to RabbitMQ")
}

/// A dispatcher with `echo` (call), `record` (cast, notes the seq in `seen`),
/// `fail` (returns a rich status), `sleep` (sleeps `sleep_ms`, then echoes) and
/// `whoami` (replies the caller's context).
fn dispatcher(name: &str, seen: Seen) -> Dispatcher {
    let n1 = name.to_owned();
    let n2 = name.to_owned();
    Dispatcher::new()
        .method("echo", move |_ctx: RequestContext, req: Echo| {
            let name = n1.clone();
            async move {
                Ok(Echo {
                    text: format!("{name}:{}", req.text),
                    ..req
                })
            }
        })
        .method("record", move |_ctx: RequestContext, req: Echo| {
            let (name, seen) = (n2.clone(), seen.clone());
            async move {
                seen.lock().unwrap().push((name, req.seq));
                Ok(())
            }
        })
        .method("fail", |_ctx: RequestContext, _req: Echo| async move {
            let mut status = Status::with_details(
                Code::FailedPrecondition,
                "volume v-1 is in-use",
                Bytes::from_static(&[1, 2, 3]),
            );
            status
                .metadata_mut()
                .insert("x-field", MetadataValue::from_static("status"));
            Err::<Echo, _>(status)
        })
        .method("sleep", |_ctx: RequestContext, req: Echo| async move {
            tokio::time::sleep(Duration::from_millis(u64::from(req.sleep_ms))).await;
            Ok(req)
        })
        .method("whoami", |ctx: RequestContext, _req: Echo| async move {
            Ok(Echo {
                text: format!(
                    "{}|{}|{}|{}",
                    ctx.request_id,
                    ctx.project_id,
                    ctx.roles.join(","),
                    ctx.traceparent.trace_id
                ),
                ..Echo::default()
            })
        })
}

struct TestServer {
    server: RpcServer,
    broker: Broker,
}

impl TestServer {
    async fn start(exchange: &str, name: &str, options: ServerOptions, seen: Seen) -> Self {
        let broker = broker(exchange, name).await;
        let server = RpcServer::start(
            broker.clone(),
            options,
            dispatcher(name, seen),
            CancellationToken::new(),
        )
        .expect("start server");
        server.wait_ready(WAIT).await.expect("server ready");
        Self { server, broker }
    }

    async fn stop(self) {
        self.server.shutdown().await;
        self.broker.close().await;
    }
}

fn ctx() -> RequestContext {
    RequestContext::new("project-a", "user-a", vec!["member".into()])
}

fn echo(seq: u64) -> Echo {
    Echo {
        text: format!("m{seq}"),
        seq,
        sleep_ms: 0,
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
