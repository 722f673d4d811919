//! The admin API through the real processes: services up and enabled, a disabled
//! volume service skipped by the scheduler, status resets, pools.

use std::time::{Duration, Instant};

use scoria_tests::stack::{DbKind, Stack};
use tonic::{Code, Response};

use crate::support::{create, pb, sized};

/// Creates volumes until one settles in `status` (the scheduler learns about a
/// service change at its next refresh of the services table); returns it.
async fn create_until(stack: &Stack, status: pb::VolumeStatus) -> pb::Volume {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let id = create(stack, "p1", sized(1)).await.id;
        let settled = loop {
            let got = stack.get_volume("p1", &id).await.expect("get");
            if got.status() != pb::VolumeStatus::Creating {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if settled.status() == status {
            return settled;
        }
        assert!(
            Instant::now() < deadline,
            "no volume reached {status:?}: last {settled:?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A SetServiceEnabled request for the stack's volume service.
fn set_volume_service(stack: &Stack, enabled: bool, reason: &str) -> pb::SetServiceEnabledRequest {
    pb::SetServiceEnabledRequest {
        binary: "scoria-volume".into(),
        host: stack.volume_host.clone(),
        enabled,
        reason: reason.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn services_can_be_listed_disabled_and_volumes_reset() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let member = stack
        .as_member("p1")
        .admin()
        .list_services(pb::ListServicesRequest::default())
        .await;
    assert_eq!(
        member.expect_err("admins only").code(),
        Code::PermissionDenied
    );

    let mut admin = stack.admin("p1");
    let listed = admin
        .list_services(pb::ListServicesRequest::default())
        .await
        .expect("list")
        .into_inner();
    let volume = listed
        .services
        .iter()
        .find(|s| s.binary == "scoria-volume")
        .unwrap_or_else(|| panic!("no volume service in {listed:?}"));
    assert_eq!(volume.host, stack.volume_host);
    assert_eq!(volume.state(), pb::ServiceState::Up, "{volume:?}");
    assert!(volume.enabled, "{volume:?}");
    assert!(
        listed
            .services
            .iter()
            .any(|s| s.binary == "scoria-scheduler" && s.state() == pb::ServiceState::Up)
    );

    let no_reason = admin
        .set_service_enabled(set_volume_service(&stack, false, ""))
        .await
        .expect_err("a reason is needed");
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    assert!(no_reason.message().contains("reason"), "{no_reason:?}");
    let unknown = admin
        .set_service_enabled(pb::SetServiceEnabledRequest {
            host: "nowhere@x".into(),
            ..set_volume_service(&stack, true, "")
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);

    let disabled = admin
        .set_service_enabled(set_volume_service(&stack, false, "maintenance"))
        .await
        .expect("disable")
        .into_inner();
    assert_eq!(disabled.disabled_reason, "maintenance");
    let failed = create_until(&stack, pb::VolumeStatus::Error).await;
    assert!(
        failed.error_message.contains("No valid backend"),
        "{failed:?}"
    );

    admin
        .set_service_enabled(set_volume_service(&stack, true, ""))
        .await
        .expect("enable");
    let ok = create_until(&stack, pb::VolumeStatus::Available).await;

    // Reset: an admin override, also of another project's volume.
    let reset = |status: pb::VolumeStatus| pb::ResetVolumeStatusRequest {
        volume_id: ok.id.clone(),
        status: status.into(),
    };
    let mut other = stack.admin("other");
    let bad = other
        .reset_volume_status(reset(pb::VolumeStatus::Unspecified))
        .await
        .expect_err("unspecified");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("status"), "{bad:?}");
    let errored = other
        .reset_volume_status(reset(pb::VolumeStatus::Error))
        .await
        .expect("reset")
        .into_inner();
    assert_eq!(errored.status(), pb::VolumeStatus::Error);
    let seen = stack.get_volume("p1", &ok.id).await.expect("get");
    assert_eq!(seen.status(), pb::VolumeStatus::Error);
    stack
        .volumes("p1")
        .delete_volume(pb::DeleteVolumeRequest { id: ok.id.clone() })
        .await
        .expect("an error volume can be deleted");
}

/// ListPools (as an admin of `p1`) with host filter `host`.
async fn list_pools(stack: &Stack, host: &str) -> Result<pb::ListPoolsResponse, tonic::Status> {
    stack
        .admin("p1")
        .list_pools(pb::ListPoolsRequest { host: host.into() })
        .await
        .map(Response::into_inner)
}

/// The stack's pool as ListPools shows it (`host` filter `host`), if listed.
async fn listed_pool(stack: &Stack, host: &str) -> Option<pb::StoragePool> {
    let listed = list_pools(stack, host).await.expect("list pools");
    assert!(
        listed.pools.len() <= 1,
        "one volume service, one pool: {listed:?}"
    );
    listed.pools.into_iter().next()
}

#[tokio::test(flavor = "multi_thread")]
async fn pools_show_the_backend_capacity_and_what_volumes_take() {
    // Reports every second, so the test sees one after its creates.
    let stack = Stack::start_with(
        DbKind::Sqlite,
        &[("SCORIA_VOLUME_REPORT_INTERVAL_SECS", "1")],
    )
    .await;

    let member = stack
        .as_member("p1")
        .admin()
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect_err("admins only");
    assert_eq!(member.code(), Code::PermissionDenied, "{member:?}");
    for bad in [
        "nobackend",
        "n1@file#pool",
        &format!("{}@file", "h".repeat(300)),
    ] {
        let err = list_pools(&stack, bad).await.expect_err("bad host");
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains("host"), "{err:?}");
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    let before = loop {
        if let Some(pool) = listed_pool(&stack, &stack.volume_host).await {
            break pool;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler never listed the volume service's pool\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let backend = &stack.backend;
    assert_eq!(
        before.name,
        format!("{}#{backend}", stack.volume_host),
        "{before:?}"
    );
    assert_eq!(before.host, stack.volume_host);
    assert_eq!(&before.backend_name, backend);
    assert_eq!(before.driver, "file");
    assert_eq!(before.availability_zone, "default");
    assert_eq!(
        before.total_capacity_gib, 1000.0,
        "SCORIA_VOLUME_CAPACITY_GIB"
    );
    assert!(before.thin_provisioning_support, "{before:?}");
    assert_eq!(
        before
            .capabilities
            .get("storage_protocol")
            .map(String::as_str),
        Some("nbd"),
        "{before:?}"
    );
    assert!(before.updated_at.is_some(), "{before:?}");
    assert_eq!(
        listed_pool(&stack, "").await.map(|p| p.name),
        Some(before.name.clone()),
        "no filter lists it too"
    );
    assert!(
        listed_pool(&stack, "nobody@file").await.is_none(),
        "another host lists nothing"
    );

    let base = before.allocated_capacity_gib;
    let mut ids = Vec::new();
    for size in [3, 4] {
        ids.push(create(&stack, "p1", sized(size)).await.id);
    }
    for id in &ids {
        stack
            .wait_status("p1", id, pb::VolumeStatus::Available)
            .await;
    }
    // The report in flight while the volumes were made may still predate them,
    // so the one seen now is only the reference for "a later report".
    let seen = listed_pool(&stack, &stack.volume_host)
        .await
        .expect("still listed");

    // After the next report (not only the scheduler's virtual consumption):
    // the backend itself counts 7 GiB more.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let pool = listed_pool(&stack, &stack.volume_host)
            .await
            .expect("still listed");
        // A different `updated_at` is a newer report (older ones are ignored).
        if pool.updated_at != seen.updated_at && pool.allocated_capacity_gib == base + 7.0 {
            break pool;
        }
        assert!(
            Instant::now() < deadline,
            "allocated did not reach {} after a report: {pool:?}\n{}",
            base + 7.0,
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(after.total_capacity_gib, 1000.0);
}
