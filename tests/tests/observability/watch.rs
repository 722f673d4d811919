//! Watch streams against real processes: a WatchVolume through a second API
//! instance follows what the first one and the services do, to the final
//! `deleted` message and an OK close (intermediate states may be coalesced); WatchSnapshot and WatchAttachment; another
//! project's id is NOT_FOUND, and watchers beyond `api.max_watchers` RESOURCE_EXHAUSTED; the API's broker connections closed mid-watch
//! (the watcher still ends on the right state); a client that never reads is
//! dropped with RESOURCE_EXHAUSTED "watcher too slow".

use std::time::{Duration, Instant};

use scoria_proto::v1 as pb;
use scoria_tests::{
    close_broker_connections,
    stack::{Caller, Clients, DbKind, Stack, channel},
};
use tonic::{Code, Streaming};

/// How long any one expected message may take.
const STEP: Duration = Duration::from_secs(30);

fn sized(size_gib: u64) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        size_gib,
        ..Default::default()
    }
}

/// The next message of `stream` within [`STEP`] (`None`: it ended with OK).
async fn next<T>(stream: &mut Streaming<T>) -> Option<T> {
    tokio::time::timeout(STEP, stream.message())
        .await
        .expect("a watch message within the step timeout")
        .expect("the stream goes on (or ends with OK)")
}

/// Reads volume messages until one satisfies `done`; the statuses seen on the way.
async fn volume_until(
    stream: &mut Streaming<pb::WatchVolumeResponse>,
    done: impl Fn(&pb::WatchVolumeResponse) -> bool,
) -> Vec<pb::VolumeStatus> {
    let mut seen = Vec::new();
    loop {
        let message = next(stream).await.expect("the stream ended too early");
        let volume = message.volume.as_ref().expect("a volume");
        seen.push(volume.status());
        if done(&message) {
            return seen;
        }
        assert!(
            !message.deleted,
            "deleted before the expected state: {seen:?}"
        );
    }
}

async fn watch_volume(clients: &Clients, id: &str) -> Streaming<pb::WatchVolumeResponse> {
    clients
        .volumes()
        .watch_volume(pb::WatchVolumeRequest { id: id.to_owned() })
        .await
        .expect("WatchVolume")
        .into_inner()
}

async fn create_available(stack: &Stack, size_gib: u64) -> pb::Volume {
    let volume = stack
        .volumes("p1")
        .create_volume(sized(size_gib))
        .await
        .expect("create")
        .into_inner();
    stack
        .wait_status("p1", &volume.id, pb::VolumeStatus::Available)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_volume_through_another_instance_follows_create_extend_delete() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    let b = stack.start_api_instance("b").await;
    let on_b = Clients::new(channel(&b), Caller::member("p1"));
    let a = stack.volumes("p1");

    let volume = a
        .clone()
        .create_volume(sized(1))
        .await
        .expect("create through A")
        .into_inner();
    let started = Instant::now();
    let mut stream = watch_volume(&on_b, &volume.id).await;
    let first = next(&mut stream).await.expect("a first message");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the first message took {:?}",
        started.elapsed()
    );
    assert_eq!(
        first.volume.as_ref().map(|v| v.id.as_str()),
        Some(volume.id.as_str())
    );
    assert!(!first.deleted);
    if first.volume.as_ref().map(pb::Volume::status) != Some(pb::VolumeStatus::Available) {
        volume_until(&mut stream, |m| {
            m.volume.as_ref().map(pb::Volume::status) == Some(pb::VolumeStatus::Available)
        })
        .await;
    }

    a.clone()
        .extend_volume(pb::ExtendVolumeRequest {
            id: volume.id.clone(),
            new_size_gib: 2,
        })
        .await
        .expect("extend through A");
    let seen = volume_until(&mut stream, |m| {
        m.volume
            .as_ref()
            .is_some_and(|v| v.status() == pb::VolumeStatus::Available && v.size_gib == 2)
    })
    .await;
    // `extending` may be coalesced away when the backend is quicker than the
    // feed (a message names the row; the hub sends the row as it is on reading).
    assert!(
        seen.iter()
            .all(|s| [pb::VolumeStatus::Extending, pb::VolumeStatus::Available].contains(s)),
        "{seen:?}"
    );

    a.clone()
        .delete_volume(pb::DeleteVolumeRequest {
            id: volume.id.clone(),
        })
        .await
        .expect("delete through A");
    let seen = volume_until(&mut stream, |m| m.deleted).await;
    assert!(
        seen.iter()
            .all(|s| [pb::VolumeStatus::Deleting, pb::VolumeStatus::Available].contains(s)),
        "deleting (or, coalesced, the last state) before deleted: {seen:?}"
    );
    assert!(
        next(&mut stream).await.is_none(),
        "the stream closes with OK after deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_snapshot_and_attachment_end_with_their_deletion() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    let b = stack.start_api_instance("b").await;
    let on_b = Clients::new(channel(&b), Caller::member("p1"));
    let volume = create_available(&stack, 1).await;

    let snapshot = stack
        .snapshots("p1")
        .create_snapshot(pb::CreateSnapshotRequest {
            volume_id: volume.id.clone(),
            name: "s".into(),
            ..Default::default()
        })
        .await
        .expect("create snapshot")
        .into_inner();
    let mut snapshots = on_b
        .snapshots()
        .watch_snapshot(pb::WatchSnapshotRequest {
            id: snapshot.id.clone(),
        })
        .await
        .expect("WatchSnapshot")
        .into_inner();
    loop {
        let m = next(&mut snapshots).await.expect("a snapshot message");
        assert!(!m.deleted);
        if m.snapshot.as_ref().map(pb::Snapshot::status) == Some(pb::SnapshotStatus::Available) {
            break;
        }
    }
    stack
        .snapshots("p1")
        .delete_snapshot(pb::DeleteSnapshotRequest {
            id: snapshot.id.clone(),
        })
        .await
        .expect("delete snapshot");
    loop {
        let m = next(&mut snapshots).await.expect("a snapshot message");
        if m.deleted {
            assert_eq!(m.snapshot.map(|s| s.id), Some(snapshot.id.clone()));
            break;
        }
    }
    assert!(next(&mut snapshots).await.is_none());

    let attachment = stack
        .attachments("p1")
        .create_attachment(pb::CreateAttachmentRequest {
            volume_id: volume.id.clone(),
            connector: Some(pb::Connector {
                host: "compute-1".into(),
                ip: "10.0.0.5".into(),
                ..Default::default()
            }),
            instance_id: "vm-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("attach: {e:?}\n{}", stack.logs()))
        .into_inner();
    let mut attachments = on_b
        .attachments()
        .watch_attachment(pb::WatchAttachmentRequest {
            id: attachment.id.clone(),
        })
        .await
        .expect("WatchAttachment")
        .into_inner();
    let first = next(&mut attachments).await.expect("a first message");
    assert_eq!(
        first.attachment.as_ref().map(pb::Attachment::status),
        Some(pb::AttachmentStatus::Attached)
    );
    stack
        .attachments("p1")
        .delete_attachment(pb::DeleteAttachmentRequest {
            id: attachment.id.clone(),
        })
        .await
        .expect("detach");
    loop {
        let m = next(&mut attachments).await.expect("an attachment message");
        if m.deleted {
            break;
        }
    }
    assert!(next(&mut attachments).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn watching_another_projects_volume_is_not_found_and_watchers_are_bounded() {
    let stack = Stack::start_with(DbKind::Sqlite, &[("SCORIA_API_MAX_WATCHERS", "2")]).await;
    let volume = stack
        .volumes("p1")
        .create_volume(sized(1))
        .await
        .expect("create")
        .into_inner();
    let err = stack
        .volumes("p2")
        .watch_volume(pb::WatchVolumeRequest {
            id: volume.id.clone(),
        })
        .await
        .expect_err("another project's volume");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = stack
        .volumes("p1")
        .watch_volume(pb::WatchVolumeRequest {
            id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("an unknown id");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let mine = stack.as_member("p1");
    let _first = watch_volume(&mine, &volume.id).await;
    let _second = watch_volume(&mine, &volume.id).await;
    let err = mine
        .volumes()
        .watch_volume(pb::WatchVolumeRequest {
            id: volume.id.clone(),
        })
        .await
        .expect_err("a third watcher beyond api.max_watchers = 2");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    drop(_first);
    // The slot comes back once the server sees the stream go.
    let deadline = Instant::now() + STEP;
    loop {
        match mine
            .volumes()
            .watch_volume(pb::WatchVolumeRequest {
                id: volume.id.clone(),
            })
            .await
        {
            Ok(_) => break,
            Err(err) if err.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("no slot after a watcher left: {err:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_ends_on_the_right_state_across_the_apis_broker_reconnect() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    let b = stack.start_api_instance("b").await;
    let on_b = Clients::new(channel(&b), Caller::member("p1"));
    let volume = create_available(&stack, 1).await;
    let mut stream = watch_volume(&on_b, &volume.id).await;
    next(&mut stream).await.expect("a first message");

    // Both API instances lose their broker connections; renames through A
    // happen while B's change feed is re-subscribing.
    let needle = format!("{}:scoria-api@", stack.exchange);
    let closed = close_broker_connections(&needle)
        .await
        .expect("rabbitmqctl");
    assert!(closed >= 2, "closed only {closed} API connections");
    for i in 0..5 {
        stack
            .volumes("p1")
            .update_volume(pb::UpdateVolumeRequest {
                id: volume.id.clone(),
                name: format!("renamed-{i}"),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into()],
                }),
                ..Default::default()
            })
            .await
            .expect("rename through A");
    }
    loop {
        let m = next(&mut stream)
            .await
            .expect("a message after the reconnect");
        if m.volume.as_ref().is_some_and(|v| v.name == "renamed-4") {
            break;
        }
    }
    stack
        .volumes("p1")
        .delete_volume(pb::DeleteVolumeRequest {
            id: volume.id.clone(),
        })
        .await
        .expect("delete");
    loop {
        let m = next(&mut stream).await.expect("a message before the end");
        if m.deleted {
            assert_eq!(m.volume.map(|v| v.name), Some("renamed-4".to_owned()));
            break;
        }
    }
    assert!(next(&mut stream).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_dropped_as_too_slow() {
    let stack = Stack::start_with(DbKind::Sqlite, &[("SCORIA_API_WATCH_BUFFER", "4")]).await;
    let volume = create_available(&stack, 1).await;
    // A small HTTP/2 window, so the server's socket buffers fill quickly too.
    let small = tonic::transport::Channel::from_shared(format!("http://{}", stack.api))
        .expect("uri")
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .expect("connect");
    let slow = Clients::new(small, Caller::member("p1"));
    let mut stream = watch_volume(&slow, &volume.id).await;

    // Each update ~25 KB of metadata: 200 of them outgrow every buffer on the way.
    let updates = 200;
    for i in 0..updates {
        let metadata = (0..100)
            .map(|k| (format!("key-{k:03}"), format!("{i:05}-{}", "x".repeat(240))))
            .collect();
        stack
            .volumes("p1")
            .update_volume(pb::UpdateVolumeRequest {
                id: volume.id.clone(),
                metadata,
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["metadata".into()],
                }),
                ..Default::default()
            })
            .await
            .expect("update");
    }
    // Now read: what was buffered comes first, then the verdict.
    let mut read = 0;
    let status = loop {
        match tokio::time::timeout(STEP, stream.message()).await {
            Ok(Ok(Some(_))) => read += 1,
            Ok(Ok(None)) => panic!("the stream ended with OK after {read} messages"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("no verdict after {read} messages"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("watcher too slow"),
        "{}",
        status.message()
    );
    assert!(
        read < updates,
        "read {read} of {updates} updates: nothing was dropped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_instance_stopping_ends_its_watchers_with_unavailable() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    let b = stack.start_api_instance("b").await;
    let on_b = Clients::new(channel(&b), Caller::member("p1"));
    let volume = create_available(&stack, 1).await;
    let mut stream = watch_volume(&on_b, &volume.id).await;
    next(&mut stream).await.expect("a first message");

    let started = Instant::now();
    let code = stack.stop_service("scoria-api@b").await;
    let took = started.elapsed();
    assert_eq!(code, Some(0), "SIGTERM exits cleanly\n{}", stack.logs());
    // Open streams do not hold the drain until its timeout.
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let status = tokio::time::timeout(STEP, stream.message())
        .await
        .expect("the stream ends")
        .expect_err("a watcher ends with a status on shutdown");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
}
