//! Policy through the real API: Cinder's defaults for readers, members and
//! admins on every service, projects kept apart, a policy file overriding a
//! rule (by Scoria's name and by Cinder's), and a bad file stopping the API.

use std::time::Duration;

use scoria_proto::v1 as pb;
use scoria_tests::stack::{Caller, Clients, DbKind, Stack, binary};
use tonic::{Code, Status};

fn volume(name: &str) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.to_owned(),
        size_gib: 1,
        ..Default::default()
    }
}

fn code<T>(result: Result<tonic::Response<T>, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// A volume of `project`, available.
async fn available_volume(stack: &Stack, project: &str, name: &str) -> String {
    let id = stack
        .volumes(project)
        .create_volume(volume(name))
        .await
        .unwrap_or_else(|e| panic!("create: {e:?}\n{}", stack.logs()))
        .into_inner()
        .id;
    stack
        .wait_status(project, &id, pb::VolumeStatus::Available)
        .await;
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn readers_members_admins_and_other_projects_on_every_service() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let reader = stack.clients(Caller::new("p1", "reader"));
    let member = stack.clients(Caller::member("p1"));
    let admin = stack.clients(Caller::new("p1", "admin"));
    let stranger = stack.clients(Caller::member("p2"));
    let nobody = stack.clients(Caller::new("p1", "observer"));

    // VolumeService: readers read, members write, other projects see nothing.
    let id = available_volume(&stack, "p1", "mine").await;
    assert_eq!(
        code(reader.volumes().create_volume(volume("r")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            reader
                .volumes()
                .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(reader.get_volume(&id).await.map(tonic::Response::new)),
        Code::Ok
    );
    let listed = reader
        .volumes()
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .expect("reader lists")
        .into_inner();
    assert_eq!(listed.volumes.len(), 1);
    assert_eq!(
        code(stranger.get_volume(&id).await.map(tonic::Response::new)),
        Code::NotFound,
        "another project's volume is not found"
    );
    assert_eq!(
        code(
            stranger
                .volumes()
                .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
                .await
        ),
        Code::NotFound
    );
    let theirs = stranger
        .volumes()
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .expect("stranger lists")
        .into_inner();
    assert!(theirs.volumes.is_empty(), "{theirs:?}");
    assert_eq!(
        code(
            nobody
                .volumes()
                .list_volumes(pb::ListVolumesRequest::default())
                .await
        ),
        Code::PermissionDenied,
        "a role the policy does not know admits nothing"
    );

    // SnapshotService.
    let snap = pb::CreateSnapshotRequest {
        volume_id: id.clone(),
        name: "s".into(),
        ..Default::default()
    };
    assert_eq!(
        code(reader.snapshots().create_snapshot(snap.clone()).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(stranger.snapshots().create_snapshot(snap.clone()).await),
        Code::NotFound,
        "a snapshot of another project's volume"
    );
    let snapshot = member
        .snapshots()
        .create_snapshot(snap)
        .await
        .expect("member snapshots")
        .into_inner();
    stack
        .wait_snapshot_status("p1", &snapshot.id, pb::SnapshotStatus::Available)
        .await;
    assert_eq!(
        code(
            reader
                .get_snapshot(&snapshot.id)
                .await
                .map(tonic::Response::new)
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            stranger
                .get_snapshot(&snapshot.id)
                .await
                .map(tonic::Response::new)
        ),
        Code::NotFound
    );

    // AttachmentService.
    assert_eq!(
        code(
            reader
                .attachments()
                .create_attachment(pb::CreateAttachmentRequest {
                    volume_id: id.clone(),
                    ..Default::default()
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            reader
                .attachments()
                .list_attachments(pb::ListAttachmentsRequest::default())
                .await
        ),
        Code::Ok
    );

    // VolumeTypeService: admins manage, everyone with a role reads.
    let gold = pb::CreateVolumeTypeRequest {
        name: "gold".into(),
        ..Default::default()
    };
    assert_eq!(
        code(member.volume_types().create_volume_type(gold.clone()).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(admin.volume_types().create_volume_type(gold).await),
        Code::Ok
    );
    assert_eq!(
        code(
            reader
                .volume_types()
                .list_volume_types(pb::ListVolumeTypesRequest::default())
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            member
                .volume_types()
                .delete_volume_type(pb::DeleteVolumeTypeRequest {
                    id_or_name: "gold".into()
                })
                .await
        ),
        Code::PermissionDenied
    );

    // AvailabilityZoneService.
    assert_eq!(
        code(
            reader
                .zones()
                .list_availability_zones(pb::ListAvailabilityZonesRequest::default())
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            nobody
                .zones()
                .list_availability_zones(pb::ListAvailabilityZonesRequest::default())
                .await
        ),
        Code::PermissionDenied
    );

    // AdminService: admins only.
    for clients in [&reader, &member] {
        assert_eq!(
            code(
                clients
                    .admin()
                    .list_services(pb::ListServicesRequest::default())
                    .await
            ),
            Code::PermissionDenied
        );
    }
    assert_eq!(
        code(
            admin
                .admin()
                .list_services(pb::ListServicesRequest::default())
                .await
        ),
        Code::Ok
    );

    // QuotaService: members read their own, admins change.
    assert_eq!(
        code(
            reader
                .quotas()
                .get_quota(pb::GetQuotaRequest {
                    project_id: "p1".into()
                })
                .await
        ),
        Code::Ok
    );
    let update = pb::UpdateQuotaRequest {
        project_id: "p1".into(),
        limits: [("volumes".to_owned(), 50)].into(),
    };
    assert_eq!(
        code(member.quotas().update_quota(update.clone()).await),
        Code::PermissionDenied
    );
    assert_eq!(code(admin.quotas().update_quota(update).await), Code::Ok);

    // An admin of another project sees and removes p1's volume.
    let other_admin = stack.clients(Caller::new("p9", "admin"));
    assert_eq!(
        code(
            other_admin
                .snapshots()
                .delete_snapshot(pb::DeleteSnapshotRequest {
                    id: snapshot.id.clone()
                })
                .await
        ),
        Code::Ok
    );
    stack.wait_snapshot_gone("p1", &snapshot.id).await;
    assert_eq!(
        code(other_admin.get_volume(&id).await.map(tonic::Response::new)),
        Code::Ok
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_file_makes_delete_and_snapshot_admin_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        "# Only admins delete volumes; snapshots by Cinder's rule name.\n\
         \"volume:delete\": \"role:admin\"\n\
         \"volume:create_snapshot\": \"rule:admin_api\"\n",
    )
    .expect("write policy");
    let stack = Stack::start_with(
        DbKind::Sqlite,
        &[("SCORIA_POLICY_FILE", path.to_str().expect("utf-8 path"))],
    )
    .await;
    let member: Clients = stack.clients(Caller::member("p1"));
    let admin = stack.clients(Caller::new("p1", "admin"));
    let id = available_volume(&stack, "p1", "v").await;

    let refused = member
        .volumes()
        .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
        .await
        .expect_err("members may no longer delete");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("volume:delete"),
        "the refusal names the rule: {}",
        refused.message()
    );
    let snap = pb::CreateSnapshotRequest {
        volume_id: id.clone(),
        name: "s".into(),
        ..Default::default()
    };
    let refused = member
        .snapshots()
        .create_snapshot(snap)
        .await
        .expect_err("members may no longer snapshot");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("snapshot:create"),
        "{}",
        refused.message()
    );
    // Rules the file does not name keep their defaults.
    assert_eq!(
        code(member.volumes().create_volume(volume("w")).await),
        Code::Ok
    );
    // The volume is still there, and an admin deletes it.
    assert_eq!(
        code(member.get_volume(&id).await.map(tonic::Response::new)),
        Code::Ok
    );
    admin
        .volumes()
        .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
        .await
        .expect("admins delete");
    stack.wait_volume_gone("p1", &id).await;
}

#[tokio::test]
async fn a_bad_policy_file_stops_the_api_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (text, wanted) in [
        (
            "\"volume:create\": \"rule:admin_api\"\n\n\"volume:explode\": \"role:admin\"\n",
            ["line 3", "volume:explode"],
        ),
        (
            "\"volume:delete\": \"role:admin and (role:member\"\n",
            ["line 1", "volume:delete"],
        ),
    ] {
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, text).expect("write policy");
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(binary("scoria-api"))
                .env("SCORIA_POLICY_FILE", &path)
                .env("SCORIA_API_LISTEN", "127.0.0.1:0")
                .env(
                    "SCORIA_DATABASE_URL",
                    format!("sqlite://{}/scoria.db", dir.path().display()),
                )
                .env("SCORIA_DATA_DIR", dir.path())
                .env("SCORIA_METRICS_LISTEN", "")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("scoria-api must stop at once on a bad policy file")
        .expect("run scoria-api");
        assert!(!out.status.success(), "scoria-api started with {text:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for word in wanted {
            assert!(stderr.contains(word), "{word:?} not in: {stderr}");
        }
    }
}
