//! When things go wrong: poison messages, closed connections, an unreachable
//! broker, shutdown with handlers in flight, casts waiting for their server.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions},
};
use scoria_common::rpc::{Broker, RpcClient, ServerOptions, Target};
use scoria_tests::{
    ChildProcess, broker::TestExchange, bus_config, close_broker_connections, msg::Echo,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{Seen, TestServer, WAIT, broker, ctx, echo, wait_until};

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_the_server_keeps_serving() {
    let cx = TestExchange::new("poison");
    let seen = Seen::default();
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), seen.clone()).await;
    let client = RpcClient::new(broker(&cx, "client").await);

    // Raw publishes: garbage for a known method, and an unknown method.
    let raw = broker(&cx, "raw").await;
    let conn = lapin::Connection::connect(
        &scoria_tests::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("raw connection");
    let channel = conn.create_channel().await.expect("channel");
    for (method, body) in [
        ("record", &[0xff_u8, 0xff, 0xff, 0x01][..]),
        ("no_such_method", &b"hello"[..]),
    ] {
        channel
            .basic_publish(
                cx.name().into(),
                "t".into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_type(method.into())
                    .with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
    // Both land in the dead-letter queue, once each.
    let dead = format!("{cx}.dead");
    let mut dead_types = Vec::new();
    let deadline = Instant::now() + WAIT;
    while dead_types.len() < 2 && Instant::now() < deadline {
        match channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            Some(msg) => dead_types.push(
                msg.delivery
                    .properties
                    .kind()
                    .as_ref()
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
            ),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    dead_types.sort();
    assert_eq!(
        dead_types,
        vec!["no_such_method".to_owned(), "record".to_owned()]
    );

    // A call to an unknown method gets a typed error at once, not a timeout.
    let err = client
        .call::<_, Echo>(
            &ctx(),
            &Target::topic("t").unwrap(),
            "no_such_method",
            &echo(1),
        )
        .await
        .expect_err("unknown method");
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    // The server still serves.
    let reply: Echo = client
        .call(&ctx(), &Target::topic("t").unwrap(), "echo", &echo(3))
        .await
        .expect("call");
    assert_eq!(reply.seq, 3);
    assert!(
        seen.lock().unwrap().is_empty(),
        "garbage must not reach the handler"
    );
    raw.close().await;
    server.stop().await;
}

#[tokio::test]
async fn closed_connections_recover_and_no_confirmed_cast_is_lost() {
    let cx = TestExchange::new("reconnect");
    let seen = Seen::default();
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), seen.clone()).await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let target = Target::topic("t").unwrap();
    assert_eq!(client.broker().connection_generation(), Some(1));
    assert_eq!(server.broker.connection_generation(), Some(1));

    // Casts go on until both sides are seen on new connections, and a while after.
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let sender = {
        let (client, target, confirmed, stop) = (
            client.clone(),
            target.clone(),
            confirmed.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut seq = 0u64;
            while !stop.is_cancelled() {
                match client.cast(&ctx(), &target, "record", &echo(seq)).await {
                    Ok(()) => confirmed.lock().unwrap().push(seq),
                    Err(err) => failures.push(format!("cast {seq}: {err}")),
                }
                seq += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        })
    };
    wait_until("some casts confirmed", || {
        confirmed.lock().unwrap().len() >= 50
    })
    .await;
    let closed = close_broker_connections(&cx).await.expect("rabbitmqctl");
    assert!(
        closed >= 2,
        "expected to close the client's and the server's connections, closed {closed}"
    );
    // rabbitmqctl returns once the broker closed them; the clients learn it a moment later.
    wait_until("client and server reconnected", || {
        client.broker().connection_generation() >= Some(2)
            && server.broker.connection_generation() >= Some(2)
    })
    .await;
    let after = confirmed.lock().unwrap().len();
    wait_until("casts confirmed on the new connection", || {
        confirmed.lock().unwrap().len() >= after + 50
    })
    .await;
    stop.cancel();
    let failures = sender.await.expect("sender");
    assert!(
        failures.is_empty(),
        "casts retry through a reconnect instead of failing: {failures:?}"
    );

    let confirmed: HashSet<u64> = confirmed.lock().unwrap().iter().copied().collect();
    wait_until("every confirmed cast handled", || {
        let got: HashSet<u64> = seen.lock().unwrap().iter().map(|(_, s)| *s).collect();
        confirmed.is_subset(&got)
    })
    .await;
    // Both sides are back: a call round-trips.
    server
        .server
        .wait_ready(WAIT)
        .await
        .expect("server resumed");
    let reply: Echo = client
        .call(&ctx(), &target, "echo", &echo(9))
        .await
        .expect("call after reconnect");
    assert_eq!(reply.seq, 9);
    server.stop().await;
}

#[tokio::test]
async fn calls_through_a_reconnect_succeed_or_say_they_were_lost_in_flight() {
    let cx = TestExchange::new("recall");
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), Seen::default()).await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let target = Target::topic("t").unwrap();
    let _: Echo = client
        .call(&ctx(), &target, "echo", &echo(0))
        .await
        .expect("first call");

    // Calls back to back while only the client's connection is closed under them.
    let stop = CancellationToken::new();
    let caller = {
        let (client, target, stop) = (client.clone(), target.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut refused) = (0u32, Vec::new());
            let mut seq = 1u64;
            while !stop.is_cancelled() {
                match client
                    .call::<_, Echo>(&ctx(), &target, "echo", &echo(seq))
                    .await
                {
                    Ok(reply) => {
                        assert_eq!(reply.seq, seq);
                        ok += 1;
                    }
                    // Lost after it was sent (before its confirm or its reply):
                    // sending it again could run it twice.
                    Err(err) if err.to_string().contains("was lost while echo") => {}
                    Err(err) => refused.push(format!("call {seq}: {err}")),
                }
                seq += 1;
            }
            (ok, refused)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed = close_broker_connections(&format!("{cx}:client"))
        .await
        .expect("rabbitmqctl");
    assert_eq!(closed, 1, "the client's connection is closed");
    wait_until("client reconnected", || {
        client.broker().connection_generation() >= Some(2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let (ok, refused) = caller.await.expect("caller");
    assert!(
        refused.is_empty(),
        "a call either goes through or says it was lost in flight (not a raw AMQP error): {refused:?}"
    );
    assert!(ok > 10, "calls went through before and after: {ok}");
    server.stop().await;
}

#[tokio::test]
async fn unreachable_broker_is_unavailable_with_a_clear_message() {
    let mut config = bus_config(&TestExchange::new("down"));
    config.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let started = Instant::now();
    let err = match Broker::connect(config, "down", Duration::from_millis(800)).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(err) => err,
    };
    assert_eq!(err.code(), Code::Unavailable);
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:1") && !msg.contains("guest:guest"),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn graceful_shutdown_finishes_handlers_in_flight() {
    let cx = TestExchange::new("drain");
    let exe = env!("CARGO_BIN_EXE_scoria-rpc-testserver");
    let envs = vec![
        ("SCORIA_CONTROL_EXCHANGE", cx.to_string()),
        ("TEST_TOPIC", "work".to_owned()),
    ];
    let mut server = ChildProcess::spawn(exe, &[], &envs).expect("spawn");
    server.wait_line("READY", WAIT).await.expect("ready");
    let client = RpcClient::new(broker(&cx, "client").await);
    let job = Echo {
        text: "job".into(),
        seq: 1,
        sleep_ms: 1_000,
    };
    client
        .cast(&ctx(), &Target::topic("work").unwrap(), "record", &job)
        .await
        .expect("cast");
    server.wait_line("START 1", WAIT).await.expect("started");
    let status = server.terminate(WAIT).await.expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    server
        .wait_line("DONE 1", Duration::from_secs(1))
        .await
        .expect("the handler in flight finished before exit");
}

#[tokio::test]
async fn casts_to_a_declared_queue_wait_for_their_server() {
    let cx = TestExchange::new("declared");
    let client = RpcClient::new(broker(&cx, "client").await);
    let target = Target::topic("warming").unwrap();
    scoria_common::rpc::server::declare_work_queue(client.broker(), &target)
        .await
        .expect("declare");
    for seq in 0..5 {
        client
            .cast(&ctx(), &target, "record", &echo(seq))
            .await
            .expect("a cast to a declared queue is accepted before any server runs");
    }
    let seen = Seen::default();
    let server =
        TestServer::start(&cx, "late", ServerOptions::topic("warming"), seen.clone()).await;
    wait_until("the queued casts", || seen.lock().unwrap().len() >= 5).await;
    server.stop().await;
}
