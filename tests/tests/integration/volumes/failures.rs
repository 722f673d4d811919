//! Volumes when something goes wrong: no backend fits, the volume is busy, a
//! create is delivered again, the API's broker is unreachable.

use std::time::Duration;

use scoria_common::{
    RequestContext,
    model::VolumeStatus,
    rpc::{Broker, RpcClient, Target},
};
use scoria_proto::bus::CreateVolume;
use scoria_tests::{
    bus_config,
    stack::{self, Caller, Clients, DbKind, Stack},
};
use tonic::Code;

use crate::support::{GIB, create, pb, sized};

#[tokio::test(flavor = "multi_thread")]
async fn no_valid_backend_puts_the_volume_in_error_with_the_reason() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let nowhere = pb::CreateVolumeRequest {
        availability_zone: "nowhere".into(),
        ..sized(1)
    };
    let created = create(&stack, "p1", nowhere).await;
    let failed = stack
        .wait_status("p1", &created.id, pb::VolumeStatus::Error)
        .await;
    assert!(
        failed.error_message.contains("No valid backend"),
        "{failed:?}"
    );
    let too_big = create(&stack, "p1", sized(5000)).await;
    let failed = stack
        .wait_status("p1", &too_big.id, pb::VolumeStatus::Error)
        .await;
    assert!(
        failed.error_message.contains("No valid backend"),
        "{failed:?}"
    );
    // An error volume can be deleted; it never reached a backend.
    stack
        .volumes("p1")
        .delete_volume(pb::DeleteVolumeRequest { id: created.id })
        .await
        .expect("delete error volume");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_of_a_busy_volume_is_refused() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let id = create(&stack, "p1", sized(1)).await.id;
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    assert!(
        stack
            .db
            .transition_volume(
                &id,
                &[VolumeStatus::Available],
                VolumeStatus::Extending,
                None,
                None
            )
            .await
            .expect("cas")
    );
    let err = stack
        .volumes("p1")
        .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
        .await
        .expect_err("extending");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(stack.volume_file(&id).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_create_does_no_harm() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let id = create(&stack, "p1", sized(1)).await.id;
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    let file = stack.volume_file(&id);
    std::fs::write(&file, b"data written by a user").expect("write");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open")
        .set_len(GIB)
        .expect("len");

    let rpc = RpcClient::new(
        Broker::connect(
            bus_config(&stack.exchange),
            "redeliver",
            Duration::from_secs(10),
        )
        .await
        .expect("broker"),
    );
    let again = CreateVolume {
        volume_id: id.clone(),
        size_gib: 1,
        attempt: 1,
        ..Default::default()
    };
    let target =
        Target::topic(scoria_common::ops::volume_topic(&stack.volume_host)).expect("target");
    for _ in 0..3 {
        rpc.cast(
            &RequestContext::internal("test"),
            &target,
            "create_volume",
            &again,
        )
        .await
        .expect("cast");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let volume = stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    assert_eq!(volume.error_message, "");
    let content = std::fs::read(&file).expect("read");
    assert!(
        content.starts_with(b"data written by a user"),
        "a redelivered create overwrote the volume"
    );
    rpc.broker().close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_is_unavailable_and_writes_nothing_while_reads_work() {
    // An API whose broker is unreachable: creates fail fast, reads still work.
    let stack = Stack::start(DbKind::Sqlite).await;
    let created = create(&stack, "p1", sized(1)).await;
    let addr = format!("127.0.0.1:{}", stack::free_port());
    let log = std::fs::File::create(stack.dir.path().join("lonely-api.log")).expect("log");
    let mut api = tokio::process::Command::new(stack::binary("scoria-api"))
        .env("SCORIA_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("SCORIA_CONTROL_EXCHANGE", &stack.exchange)
        .env("SCORIA_DATABASE_URL", &stack.database_url)
        .env("SCORIA_DATA_DIR", stack.dir.path())
        .env("SCORIA_API_LISTEN", &addr)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn api");
    let channel = stack::channel(&addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // It answers, and its health tells the truth: NOT_SERVING without a broker.
    let health = loop {
        if let Some(status) = stack::health_status(&channel).await {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lonely api never answered its health check"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        health,
        tonic_health::pb::health_check_response::ServingStatus::NotServing,
        "health must not say SERVING while the broker is unreachable"
    );
    let lonely = Clients::new(channel, Caller::member("p1"));
    let before = stack.db.count_volumes("p1").await.expect("count");
    let err = lonely
        .volumes()
        .create_volume(sized(1))
        .await
        .expect_err("no broker");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(
        stack.db.count_volumes("p1").await.expect("count"),
        before,
        "nothing written"
    );
    let got = lonely.get_volume(&created.id).await;
    assert!(got.is_ok(), "reads work without the broker: {got:?}");
    let _ = api.kill().await;
}
