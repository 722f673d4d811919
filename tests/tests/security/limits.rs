//! The API's limits through the real binaries: a project over its rate gets
//! RESOURCE_EXHAUSTED with a `RetryInfo` while another project still gets
//! through; a message over the size limit and headers over the metadata limit
//! are refused with RESOURCE_EXHAUSTED and a message that says which limit.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack};
use tonic::{Code, Request, metadata::MetadataValue};
use tonic_types::StatusExt;

use crate::{counts, field, reason};

/// A ListVolumes of the caller's own volumes.
fn list() -> pb::ListVolumesRequest {
    pb::ListVolumesRequest::default()
}

#[tokio::test]
async fn a_project_over_its_rate_waits_and_the_others_do_not() {
    // 2 requests a second, 4 at once: a tight loop of 12 runs dry fast even on
    // a loaded machine.
    let stack = Stack::start_with(
        DbKind::Sqlite,
        &[
            ("SCORIA_API_RATE_LIMIT", "2"),
            ("SCORIA_API_RATE_BURST", "4"),
        ],
    )
    .await;
    let hog = stack.volumes("hog");
    let calm = stack.volumes("calm");

    let started = Instant::now();
    let replies = join_all((0..12).map(|_| {
        let mut hog = hog.clone();
        async move { hog.list_volumes(list()).await }
    }))
    .await;
    let elapsed = started.elapsed();
    // Right after the hog ran dry, at the same moment, another project passes.
    calm.clone()
        .list_volumes(list())
        .await
        .unwrap_or_else(|e| panic!("another project is not limited: {e:?}"));

    let passed = replies.iter().filter(|r| r.is_ok()).count();
    // The burst, plus what the rate refilled while the calls ran.
    let allowed = 4 + (elapsed.as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        (4..=allowed).contains(&passed),
        "{passed} of 12 passed in {elapsed:?} (at most {allowed}): {replies:?}"
    );
    let refused = replies
        .iter()
        .find_map(|r| r.as_ref().err())
        .unwrap_or_else(|| panic!("nothing refused: {replies:?}"));
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(refused), "RATE_LIMITED");
    assert!(
        refused.message().contains("project hog") && refused.message().contains("2/s, burst 4"),
        "{}",
        refused.message()
    );
    let retry = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo.retry_delay in {refused:?}"));
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_millis(500),
        "one token comes every 500 ms: {retry:?}"
    );
    for reply in &replies {
        if let Err(status) = reply {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        }
    }

    // After the delay it asked for (and a little), the hog passes again.
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    hog.clone()
        .list_volumes(list())
        .await
        .unwrap_or_else(|e| panic!("after the retry delay: {e:?}"));
}

#[tokio::test]
async fn limits_of_size_and_metadata_refuse_with_resource_exhausted() {
    // The defaults: 4 MiB messages, 16 KiB of headers.
    let stack = Stack::start(DbKind::Sqlite).await;
    let volumes = stack.volumes("p1");
    let before = counts(&stack).await;

    // A message over 4 MiB: refused before it is decoded.
    let huge = pb::CreateVolumeRequest {
        size_gib: 1,
        description: "d".repeat(4 * 1024 * 1024 + 1),
        ..Default::default()
    };
    let status = volumes
        .clone()
        .create_volume(huge)
        .await
        .expect_err("over 4 MiB");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "REQUEST_TOO_LARGE");
    assert!(
        status.message().starts_with("request too large: 41943")
            && status.message().ends_with("the limit is 4194304 bytes"),
        "{}",
        status.message()
    );

    // Under the limit it is decoded, and the field is what is wrong.
    let long = pb::CreateVolumeRequest {
        size_gib: 1,
        description: "d".repeat(1024 * 1024),
        ..Default::default()
    };
    let status = volumes
        .clone()
        .create_volume(long)
        .await
        .expect_err("too long a description");
    assert_eq!(field(&status), "description");

    // 20 KiB of headers: over the 16 KiB limit (below what HTTP/2 itself cuts off).
    let mut request = Request::new(list());
    let padding = MetadataValue::try_from("p".repeat(20 * 1024)).expect("ascii");
    request.metadata_mut().insert("x-padding", padding);
    let status = volumes
        .clone()
        .list_volumes(request)
        .await
        .expect_err("20 KiB of headers");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "METADATA_TOO_LARGE");
    assert!(
        status
            .message()
            .starts_with("request metadata too large: 20")
            && status.message().ends_with("the limit is 16384 bytes"),
        "{}",
        status.message()
    );

    // Far beyond: HTTP/2 refuses the stream itself (HTTP 431, which tonic's
    // client maps to UNKNOWN); the connection lives on.
    let mut request = Request::new(list());
    let padding = MetadataValue::try_from("p".repeat(100 * 1024)).expect("ascii");
    request.metadata_mut().insert("x-padding", padding);
    let status = volumes
        .clone()
        .list_volumes(request)
        .await
        .expect_err("100 KiB of headers");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(status.message().contains("431"), "{status:?}");

    // Just under the limits, all is well; nothing was written by the refusals.
    let mut request = Request::new(list());
    let padding = MetadataValue::try_from("p".repeat(8 * 1024)).expect("ascii");
    request.metadata_mut().insert("x-padding", padding);
    volumes
        .clone()
        .list_volumes(request)
        .await
        .unwrap_or_else(|e| panic!("8 KiB of headers: {e:?}\n{}", stack.logs()));
    assert_eq!(counts(&stack).await, before);
}

#[tokio::test]
async fn a_connection_holds_at_most_its_concurrent_streams() {
    let stack = Stack::start_with(
        DbKind::Sqlite,
        &[("SCORIA_API_MAX_CONCURRENT_STREAMS", "2")],
    )
    .await;
    let clients = stack.as_member("p1");
    let volume = clients
        .volumes()
        .create_volume(pb::CreateVolumeRequest {
            size_gib: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create: {e:?}\n{}", stack.logs()))
        .into_inner()
        .id;
    // Two watch streams stay open on the stack's one connection...
    let watch = || {
        let mut volumes = clients.volumes();
        let id = volume.clone();
        async move {
            volumes
                .watch_volume(pb::WatchVolumeRequest { id })
                .await
                .unwrap_or_else(|e| panic!("watch: {e:?}"))
                .into_inner()
        }
    };
    let first = watch().await;
    let second = watch().await;
    // ...so a third request waits for one of them to end.
    let mut waiting = Box::pin(clients.get_volume(&volume));
    let early = tokio::time::timeout(Duration::from_millis(1500), &mut waiting).await;
    assert!(early.is_err(), "a third stream was let in: {early:?}");
    drop(first);
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the third request goes through once a stream ends")
        .unwrap_or_else(|e| panic!("get: {e:?}"));
    assert_eq!(got.id, volume);
    drop(second);
}
