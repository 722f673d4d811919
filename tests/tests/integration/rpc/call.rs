//! Calls: the round trip with its context, remote errors, timeouts, no route.

use std::time::{Duration, Instant};

use scoria_common::rpc::{CallOptions, RpcClient, RpcError, ServerOptions, Target};
use scoria_tests::{broker::TestExchange, msg::Echo};
use tonic::{Code, Status};

use super::{Seen, TestServer, broker, ctx, echo};

#[tokio::test]
async fn call_round_trip_carries_the_context() {
    let cx = TestExchange::new("call");
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), Seen::default()).await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let target = Target::topic("t").unwrap();

    let reply: Echo = client
        .call(&ctx(), &target, "echo", &echo(7))
        .await
        .expect("call");
    assert_eq!(
        reply,
        Echo {
            text: "s1:m7".into(),
            seq: 7,
            sleep_ms: 0
        }
    );

    let context = ctx();
    let who: Echo = client
        .call(&context, &target, "whoami", &Echo::default())
        .await
        .expect("call");
    let expected = format!(
        "{}|project-a|member|{}",
        context.request_id, context.traceparent.trace_id
    );
    assert_eq!(
        who.text, expected,
        "request context must arrive in the headers"
    );
    server.stop().await;
}

#[tokio::test]
async fn remote_error_arrives_typed_and_whole() {
    let cx = TestExchange::new("remote-err");
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), Seen::default()).await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let err = client
        .call::<_, Echo>(&ctx(), &Target::topic("t").unwrap(), "fail", &echo(1))
        .await
        .expect_err("handler fails");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let status = Status::from(err);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "volume v-1 is in-use");
    assert_eq!(status.details(), &[1, 2, 3]);
    assert_eq!(
        status
            .metadata()
            .get("x-field")
            .and_then(|v| v.to_str().ok()),
        Some("status")
    );
    server.stop().await;
}

#[tokio::test]
async fn call_past_its_timeout_is_deadline_exceeded_and_late_reply_dropped() {
    let cx = TestExchange::new("timeout");
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), Seen::default()).await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let target = Target::topic("t").unwrap();

    let started = Instant::now();
    let slow = Echo {
        text: "slow".into(),
        seq: 1,
        sleep_ms: 1_500,
    };
    let err = client
        .call_with::<_, Echo>(
            &ctx(),
            &target,
            "sleep",
            &slow,
            CallOptions::timeout(Duration::from_millis(300)),
        )
        .await
        .expect_err("must time out");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1_200),
        "timed out after {:?}",
        started.elapsed()
    );

    // The late reply to seq 1 arrives while the next call waits: it must not be
    // taken for the next call's reply.
    let fast = Echo {
        text: "fast".into(),
        seq: 2,
        sleep_ms: 1_500,
    };
    let reply: Echo = client
        .call(&ctx(), &target, "sleep", &fast)
        .await
        .expect("second call");
    assert_eq!(reply.seq, 2);
    server.stop().await;
}

#[tokio::test]
async fn call_to_a_topic_nobody_serves_fails_fast() {
    let cx = TestExchange::new("noroute");
    let client = RpcClient::new(broker(&cx, "client").await);
    let options = CallOptions::timeout(Duration::from_secs(30));

    let started = Instant::now();
    let err = client
        .call_with::<_, Echo>(
            &ctx(),
            &Target::topic("nobody").unwrap(),
            "echo",
            &echo(1),
            options,
        )
        .await
        .expect_err("no route");
    assert!(matches!(err, RpcError::NoRoute { .. }), "{err:?}");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    let err = client
        .cast(
            &ctx(),
            &Target::topic("nobody").unwrap(),
            "record",
            &echo(1),
        )
        .await
        .expect_err("an unroutable cast is an error at once");
    assert!(matches!(err, RpcError::NoRoute { .. }), "{err:?}");

    // The queue exists (a server ran once) but nobody consumes it now.
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("gone"), Seen::default()).await;
    server.stop().await;
    let started = Instant::now();
    let err = client
        .call_with::<_, Echo>(
            &ctx(),
            &Target::topic("gone").unwrap(),
            "echo",
            &echo(1),
            options,
        )
        .await
        .expect_err("no consumer");
    assert!(matches!(err, RpcError::NoConsumer { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}
