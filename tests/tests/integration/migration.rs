//! Migration and retype on the real stack: two volume services (the stack's
//! `file` backend and a `qcow2` one), bytes written with `qemu-io` into the
//! backend object, read back from the other backend's object after the move,
//! and nothing left on the backend the volume left.

use scoria_tests::stack::{DbKind, Stack, qemu_io_file};
use tonic::Code;

use crate::support::{create, pb, sized};

/// The stack plus a qcow2 volume service, with a type pinned to each backend;
/// the scheduler restarted so it waits for both backends' reports.
async fn two_backends() -> (Stack, String) {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    let qcow2 = stack
        .start_volume_service("qcow2", &[("SCORIA_VOLUME_DRIVER", "qcow2")])
        .await;
    stack.stop_service("scoria-scheduler").await;
    stack.start_service("scoria-scheduler").await;
    let backend = stack.backend.clone();
    for (name, on) in [("on-file", backend.as_str()), ("on-qcow2", "qcow2")] {
        stack
            .types_admin("p1")
            .create_volume_type(pb::CreateVolumeTypeRequest {
                name: name.to_owned(),
                extra_specs: [("volume_backend_name".to_owned(), on.to_owned())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("type {name}: {e:?}"));
    }
    (stack, qcow2)
}

/// A 1 GiB volume of `volume_type`, available; its id.
async fn volume_of(stack: &Stack, volume_type: &str) -> String {
    let request = pb::CreateVolumeRequest {
        volume_type: volume_type.to_owned(),
        ..sized(1)
    };
    let id = create(stack, "p1", request).await.id;
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    id
}

fn io(stack: &Stack, backend: &str, id: &str, command: &str) -> Result<(), String> {
    qemu_io_file(&stack.backend_object_in(backend, "volume", id), command)
}

fn object_exists(stack: &Stack, backend: &str, id: &str) -> bool {
    stack.backend_object_in(backend, "volume", id).exists()
}

async fn migrate(stack: &Stack, id: &str, host: &str) -> Result<pb::Volume, tonic::Status> {
    stack
        .admin("p1")
        .migrate_volume(pb::MigrateVolumeRequest {
            volume_id: id.to_owned(),
            host: host.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Waits until the volume is available again after a move; returns it.
async fn settled(stack: &Stack, id: &str) -> pb::Volume {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v = stack.get_volume("p1", id).await.expect("get");
        if v.status() == pb::VolumeStatus::Available
            && v.migration_status() != pb::MigrationStatus::Migrating
        {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "volume {id} never settled: {v:?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migrated_volume_keeps_its_bytes_raw_to_qcow2_and_back() {
    let (stack, qcow2) = two_backends().await;
    let file_host = stack.volume_host.clone();
    let backend = stack.backend.clone();
    let id = volume_of(&stack, "on-file").await;
    io(&stack, &backend, &id, "write -P 0xa5 0 1M").expect("write");
    io(&stack, &backend, &id, "write -P 0x3c 512M 64k").expect("write");

    let moving = migrate(&stack, &id, &qcow2).await.expect("migrate");
    assert_eq!(moving.status(), pb::VolumeStatus::Maintenance, "{moving:?}");
    assert_eq!(moving.migration_status(), pb::MigrationStatus::Migrating);
    let there = settled(&stack, &id).await;
    assert_eq!(
        there.migration_status(),
        pb::MigrationStatus::Success,
        "{there:?}\n{}",
        stack.logs()
    );
    assert_eq!(there.host, qcow2);
    io(&stack, "qcow2", &id, "read -P 0xa5 0 1M").expect("bytes on qcow2");
    io(&stack, "qcow2", &id, "read -P 0x3c 512M 64k").expect("bytes on qcow2");
    wait_gone(&stack, &backend, &id).await;

    // And back, to raw, with new bytes written on the qcow2 side.
    io(&stack, "qcow2", &id, "write -P 0x77 4M 1M").expect("write");
    let back = migrate(&stack, &id, &file_host)
        .await
        .expect("migrate back");
    assert_eq!(back.status(), pb::VolumeStatus::Maintenance);
    let home = settled(&stack, &id).await;
    assert_eq!(
        home.migration_status(),
        pb::MigrationStatus::Success,
        "{home:?}"
    );
    assert_eq!(home.host, file_host);
    io(&stack, &backend, &id, "read -P 0xa5 0 1M").expect("bytes back on raw");
    io(&stack, &backend, &id, "read -P 0x77 4M 1M").expect("bytes back on raw");
    wait_gone(&stack, "qcow2", &id).await;
    stack.assert_quota_exact().await;
}

/// Waits until the old object of `id` on `backend` is removed.
async fn wait_gone(stack: &Stack, backend: &str, id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while object_exists(stack, backend, id) {
        assert!(
            std::time::Instant::now() < deadline,
            "the old object of {id} stayed on {backend}\n{}",
            stack.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retypes_in_place_or_by_a_migration_and_quota_usage_follows() {
    let (stack, qcow2) = two_backends().await;
    let backend = stack.backend.clone();
    let file_host = stack.volume_host.clone();
    stack
        .types_admin("p1")
        .create_volume_type(pb::CreateVolumeTypeRequest {
            name: "plain".to_owned(),
            ..Default::default()
        })
        .await
        .expect("type plain");
    let id = volume_of(&stack, "on-file").await;
    io(&stack, &backend, &id, "write -P 0x5a 0 1M").expect("write");

    // In place: `plain` asks nothing the file backend lacks.
    let retype = |new: &str, policy: pb::MigrationPolicy| pb::RetypeVolumeRequest {
        id: id.clone(),
        new_volume_type: new.to_owned(),
        migration_policy: policy as i32,
    };
    let started = stack
        .volumes("p1")
        .retype_volume(retype("plain", pb::MigrationPolicy::Never))
        .await
        .expect("retype")
        .into_inner();
    assert_eq!(started.status(), pb::VolumeStatus::Retyping);
    let v = settled(&stack, &id).await;
    assert_eq!(
        (v.volume_type.as_str(), v.host.as_str()),
        ("plain", file_host.as_str()),
        "{v:?}"
    );
    io(&stack, &backend, &id, "read -P 0x5a 0 1M").expect("bytes kept in place");
    assert_eq!(stack.quota_usage("p1", "volumes_plain").await.0, 1);
    assert_eq!(stack.quota_usage("p1", "volumes_on-file").await.0, 0);
    stack.assert_quota_exact().await;

    // Policy never, to a type only the other backend has: refused, stays.
    stack
        .volumes("p1")
        .retype_volume(retype("on-qcow2", pb::MigrationPolicy::Never))
        .await
        .expect("retype");
    let v = settled(&stack, &id).await;
    assert_eq!(v.volume_type, "plain", "{v:?}");
    assert_eq!(v.migration_status(), pb::MigrationStatus::Error);
    assert!(v.migration_error.contains("never"), "{v:?}");
    assert_eq!(v.host, file_host);

    // On demand: migrated to the qcow2 backend with the bytes.
    stack
        .volumes("p1")
        .retype_volume(retype("on-qcow2", pb::MigrationPolicy::OnDemand))
        .await
        .expect("retype");
    let v = settled(&stack, &id).await;
    assert_eq!(
        (
            v.volume_type.as_str(),
            v.host.as_str(),
            v.migration_status()
        ),
        ("on-qcow2", qcow2.as_str(), pb::MigrationStatus::Success),
        "{v:?}\n{}",
        stack.logs()
    );
    io(&stack, "qcow2", &id, "read -P 0x5a 0 1M").expect("bytes after the move");
    wait_gone(&stack, &backend, &id).await;
    assert_eq!(stack.quota_usage("p1", "volumes_plain").await.0, 0);
    assert_eq!(stack.quota_usage("p1", "volumes_on-qcow2").await.0, 1);
    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_migrations_and_retypes_are_refused_naming_the_field() {
    let (stack, qcow2) = two_backends().await;
    let id = volume_of(&stack, "on-file").await;
    let own = stack.volume_host.clone();
    for (host, field) in [
        ("nohost", "host"),
        (own.as_str(), "host"),
        ("nobody@nothing", "host"),
    ] {
        let err = migrate(&stack, &id, host).await.expect_err(host);
        assert_eq!(err.code(), Code::InvalidArgument, "{host}: {err:?}");
        assert!(err.message().contains(field), "{err:?}");
    }
    let err = stack
        .as_member("p1")
        .admin()
        .migrate_volume(pb::MigrateVolumeRequest {
            volume_id: id.clone(),
            host: qcow2.clone(),
        })
        .await
        .expect_err("a member migrates nothing");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = stack
        .volumes("p1")
        .retype_volume(pb::RetypeVolumeRequest {
            id: id.clone(),
            new_volume_type: "no-such-type".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown type");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("new_volume_type"), "{err:?}");
    // Nothing was written.
    let v = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(v.status(), pb::VolumeStatus::Available);
    assert_eq!(v.migration_status(), pb::MigrationStatus::Unspecified);
}
