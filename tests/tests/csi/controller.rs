//! The Controller service against a real stack: every call, each repeated
//! (the spec's idempotency rules), every required field and unknown id,
//! sizes, paging, capacity, expansion, snapshots, content sources, publish
//! contexts and topology, checked against what Scoria then holds.

use std::{collections::BTreeSet, io::Write, time::Duration};

use scoria_csi::proto::{
    self as csi, CapacityRange, ControllerExpandVolumeRequest, ControllerGetCapabilitiesRequest,
    ControllerGetVolumeRequest, ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest,
    CreateSnapshotRequest, CreateVolumeRequest, DeleteSnapshotRequest, DeleteVolumeRequest,
    GetCapacityRequest, ListSnapshotsRequest, ListVolumesRequest, Topology, TopologyRequirement,
    ValidateVolumeCapabilitiesRequest, VolumeCapability, VolumeContentSource,
    controller_client::ControllerClient, volume_capability::access_mode::Mode,
};
use scoria_proto::v1 as pb;
use scoria_tests::{
    csi::{PROJECT, Plugin},
    stack::{DbKind, Stack},
};
use tonic::{Code, transport::Channel};

const GIB: i64 = 1 << 30;
const ZONE_KEY: &str = "topology.block.scoria.dev/zone";

fn capability(block: bool, mode: Mode) -> VolumeCapability {
    use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })
        }),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn mount() -> VolumeCapability {
    capability(false, Mode::SingleNodeWriter)
}

fn range(required: i64, limit: i64) -> Option<CapacityRange> {
    Some(CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    })
}

fn create(name: &str, required: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: range(required, 0),
        volume_capabilities: vec![mount()],
        ..Default::default()
    }
}

fn topology(zone: &str) -> Topology {
    Topology {
        segments: [(ZONE_KEY.to_owned(), zone.to_owned())].into(),
    }
}

/// Creates volume `name` of `required` bytes; its CSI volume.
async fn make(ctl: &mut ControllerClient<Channel>, name: &str, required: i64) -> csi::Volume {
    ctl.create_volume(create(name, required))
        .await
        .unwrap_or_else(|e| panic!("CreateVolume {name}: {e:?}"))
        .into_inner()
        .volume
        .expect("a volume")
}

fn publish(volume_id: &str, node: &str, readonly: bool) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: node.into(),
        volume_capability: Some(mount()),
        readonly,
        ..Default::default()
    }
}

/// The code of a failed call, and its message (for "names the field").
#[track_caller]
fn refused<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> (Code, String) {
    match result {
        Ok(r) => panic!("expected a refusal, got {r:?}"),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    mentions: &str,
) {
    let (got, message) = refused(result);
    assert_eq!(got, code, "{message}");
    assert!(
        message.contains(mentions),
        "{message:?} should name {mentions:?}"
    );
}

async fn scoria_volume(stack: &Stack, id: &str) -> Result<pb::Volume, tonic::Status> {
    Plugin::scoria(stack).get_volume(id).await
}

#[tokio::test]
async fn capabilities_list_exactly_what_is_implemented() {
    use csi::controller_service_capability::{Type, rpc::Type as Rpc};
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let caps = ctl
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let got: BTreeSet<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref().map(|Type::Rpc(r)| r.r#type))
        .collect();
    let wanted: BTreeSet<i32> = [
        Rpc::CreateDeleteVolume,
        Rpc::PublishUnpublishVolume,
        Rpc::ListVolumes,
        Rpc::GetCapacity,
        Rpc::CreateDeleteSnapshot,
        Rpc::ListSnapshots,
        Rpc::CloneVolume,
        Rpc::PublishReadonly,
        Rpc::ExpandVolume,
        Rpc::ListVolumesPublishedNodes,
        Rpc::VolumeCondition,
        Rpc::GetVolume,
        Rpc::GetSnapshot,
    ]
    .into_iter()
    .map(|r| r as i32)
    .collect();
    assert_eq!(got, wanted);
    // What is not listed is not served.
    let modify = ctl
        .controller_modify_volume(csi::ControllerModifyVolumeRequest {
            volume_id: "x".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(refused(modify).0, Code::Unimplemented);
}

#[tokio::test]
async fn create_volume_is_idempotent_by_name_and_another_size_already_exists() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    // 1.5 GiB rounds up to 2.
    let first = make(&mut ctl, "pvc-one", GIB + GIB / 2).await;
    assert_eq!(first.capacity_bytes, 2 * GIB);
    let again = make(&mut ctl, "pvc-one", GIB + GIB / 2).await;
    assert_eq!(again, first, "the same name and size is the same volume");
    // A range the existing volume fits is the same request too.
    let fits = ctl
        .create_volume(CreateVolumeRequest {
            capacity_range: range(2 * GIB, 4 * GIB),
            ..create("pvc-one", 0)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fits.volume.unwrap().volume_id, first.volume_id);
    assert_refused(
        ctl.create_volume(create("pvc-one", 5 * GIB)).await,
        Code::AlreadyExists,
        &first.volume_id,
    );

    let volume = scoria_volume(&stack, &first.volume_id).await.unwrap();
    assert_eq!(volume.status(), pb::VolumeStatus::Available);
    assert_eq!(volume.size_gib, 2);
    assert_eq!(volume.name, "pvc-one");
    assert_eq!(
        volume
            .metadata
            .get("csi.block.scoria.dev/name")
            .map(String::as_str),
        Some("pvc-one")
    );
    assert_eq!(
        first.volume_context.get("volume_type"),
        Some(&volume.volume_type)
    );
    // Exactly one volume of that name.
    let all = Plugin::scoria(&stack)
        .volumes()
        .list_volumes(pb::ListVolumesRequest {
            name: "pvc-one".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .volumes;
    assert_eq!(all.len(), 1, "{all:?}");

    // A name Scoria cannot hold (too long, a tab) still finds its one volume.
    let long = format!("pvc\t{}", "x".repeat(300));
    let a = make(&mut ctl, &long, GIB).await;
    let b = make(&mut ctl, &long, GIB).await;
    assert_eq!(a.volume_id, b.volume_id);
    assert_ne!(a.volume_id, first.volume_id);

    // Deleted, the name makes a new volume.
    ctl.delete_volume(DeleteVolumeRequest {
        volume_id: first.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let reborn = make(&mut ctl, "pvc-one", 3 * GIB).await;
    assert_ne!(reborn.volume_id, first.volume_id);
    assert_eq!(reborn.capacity_bytes, 3 * GIB);
    let reborn_again = make(&mut ctl, "pvc-one", 3 * GIB).await;
    assert_eq!(reborn_again.volume_id, reborn.volume_id);
}

#[tokio::test]
async fn capacity_ranges_round_up_and_what_cannot_fit_the_limit_is_out_of_range() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let sized = |name: &str, required, limit| CreateVolumeRequest {
        capacity_range: range(required, limit),
        ..create(name, 0)
    };
    let one = ctl
        .create_volume(sized("tiny", 1, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.volume.unwrap().capacity_bytes, GIB);
    let limited = ctl
        .create_volume(sized("limited", 0, 3 * GIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        limited.volume.unwrap().capacity_bytes,
        GIB,
        "no requirement: the default 1 GiB"
    );
    let exact = ctl
        .create_volume(sized("exact", 2 * GIB, 2 * GIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exact.volume.unwrap().capacity_bytes, 2 * GIB);
    let unranged = ctl
        .create_volume(CreateVolumeRequest {
            capacity_range: None,
            ..create("unranged", 0)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unranged.volume.unwrap().capacity_bytes, GIB);

    assert_refused(
        ctl.create_volume(sized("small", 1, 1000)).await,
        Code::OutOfRange,
        "limit_bytes",
    );
    assert_refused(
        ctl.create_volume(sized("odd", GIB + 1, GIB + 2)).await,
        Code::OutOfRange,
        "limit_bytes",
    );
    assert_refused(
        ctl.create_volume(sized("neg", -1, 0)).await,
        Code::InvalidArgument,
        "required_bytes",
    );
    assert_refused(
        ctl.create_volume(sized("neg2", 0, -1)).await,
        Code::InvalidArgument,
        "limit_bytes",
    );
    assert_refused(
        ctl.create_volume(sized("inverted", 2 * GIB, GIB)).await,
        Code::InvalidArgument,
        "capacity_range",
    );
    // Beyond Scoria's largest volume (16 TiB by default).
    assert_refused(
        ctl.create_volume(create("huge", 20_000 * GIB)).await,
        Code::OutOfRange,
        "size_gib",
    );
    // Nothing was made for the refusals.
    let listed = ctl
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 4, "{listed:?}");
}

#[tokio::test]
async fn every_required_field_is_invalid_argument_naming_it() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let volume = make(&mut ctl, "pvc-fields", GIB).await;
    let id = volume.volume_id.clone();
    let bad = Code::InvalidArgument;

    assert_refused(ctl.create_volume(create("", GIB)).await, bad, "name");
    let no_caps = CreateVolumeRequest {
        volume_capabilities: vec![],
        ..create("pvc-x", GIB)
    };
    assert_refused(ctl.create_volume(no_caps).await, bad, "volume_capabilities");
    let no_mode = CreateVolumeRequest {
        volume_capabilities: vec![VolumeCapability {
            access_mode: None,
            ..mount()
        }],
        ..create("pvc-x", GIB)
    };
    assert_refused(ctl.create_volume(no_mode).await, bad, "access_mode");
    let no_type = CreateVolumeRequest {
        volume_capabilities: vec![VolumeCapability {
            access_type: None,
            ..mount()
        }],
        ..create("pvc-x", GIB)
    };
    assert_refused(ctl.create_volume(no_type).await, bad, "access_type");
    let typo = CreateVolumeRequest {
        parameters: [("tpye".to_owned(), "x".to_owned())].into(),
        ..create("pvc-x", GIB)
    };
    assert_refused(ctl.create_volume(typo).await, bad, "tpye");
    let empty_source = CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(csi::volume_content_source::Type::Snapshot(
                csi::volume_content_source::SnapshotSource::default(),
            )),
        }),
        ..create("pvc-x", GIB)
    };
    assert_refused(ctl.create_volume(empty_source).await, bad, "snapshot_id");
    assert_refused(
        ctl.create_volume(create("bad\u{1}name", GIB)).await,
        bad,
        "name",
    );

    assert_refused(
        ctl.delete_volume(DeleteVolumeRequest::default()).await,
        bad,
        "volume_id",
    );
    assert_refused(
        ctl.controller_publish_volume(publish("", "node-a", false))
            .await,
        bad,
        "volume_id",
    );
    assert_refused(
        ctl.controller_publish_volume(publish(&id, "", false)).await,
        bad,
        "node_id",
    );
    let no_capability = ControllerPublishVolumeRequest {
        volume_capability: None,
        ..publish(&id, "node-a", false)
    };
    assert_refused(
        ctl.controller_publish_volume(no_capability).await,
        bad,
        "volume_capability",
    );
    assert_refused(
        ctl.controller_unpublish_volume(ControllerUnpublishVolumeRequest::default())
            .await,
        bad,
        "volume_id",
    );
    let validate =
        |volume_id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
            volume_id: volume_id.into(),
            volume_capabilities: caps,
            ..Default::default()
        };
    assert_refused(
        ctl.validate_volume_capabilities(validate("", vec![mount()]))
            .await,
        bad,
        "volume_id",
    );
    assert_refused(
        ctl.validate_volume_capabilities(validate(&id, vec![]))
            .await,
        bad,
        "volume_capabilities",
    );
    let snapshot = |name: &str, source: &str| CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    };
    assert_refused(ctl.create_snapshot(snapshot("", &id)).await, bad, "name");
    assert_refused(
        ctl.create_snapshot(snapshot("snap", "")).await,
        bad,
        "source_volume_id",
    );
    assert_refused(
        ctl.delete_snapshot(DeleteSnapshotRequest::default()).await,
        bad,
        "snapshot_id",
    );
    let expand = |volume_id: &str, capacity_range| ControllerExpandVolumeRequest {
        volume_id: volume_id.into(),
        capacity_range,
        ..Default::default()
    };
    assert_refused(
        ctl.controller_expand_volume(expand("", range(2 * GIB, 0)))
            .await,
        bad,
        "volume_id",
    );
    assert_refused(
        ctl.controller_expand_volume(expand(&id, None)).await,
        bad,
        "capacity_range",
    );
    assert_refused(
        ctl.controller_get_volume(ControllerGetVolumeRequest::default())
            .await,
        bad,
        "volume_id",
    );
    let negative = ListVolumesRequest {
        max_entries: -1,
        ..Default::default()
    };
    assert_refused(ctl.list_volumes(negative).await, bad, "max_entries");
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_deleting_or_unpublishing_them_succeeds() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let missing = uuid::Uuid::new_v4().to_string();
    for unknown in [missing.as_str(), "not-a-uuid"] {
        let nf = Code::NotFound;
        assert_refused(
            ctl.controller_publish_volume(publish(unknown, "node-a", false))
                .await,
            nf,
            unknown,
        );
        let validate = ValidateVolumeCapabilitiesRequest {
            volume_id: unknown.into(),
            volume_capabilities: vec![mount()],
            ..Default::default()
        };
        assert_refused(
            ctl.validate_volume_capabilities(validate).await,
            nf,
            unknown,
        );
        let expand = ControllerExpandVolumeRequest {
            volume_id: unknown.into(),
            capacity_range: range(2 * GIB, 0),
            ..Default::default()
        };
        assert_refused(ctl.controller_expand_volume(expand).await, nf, unknown);
        let get = ControllerGetVolumeRequest {
            volume_id: unknown.into(),
        };
        assert_refused(ctl.controller_get_volume(get).await, nf, unknown);
        let snapshot = CreateSnapshotRequest {
            name: format!("snap-{unknown}"),
            source_volume_id: unknown.into(),
            ..Default::default()
        };
        assert_refused(ctl.create_snapshot(snapshot).await, nf, unknown);
        let from_snapshot = CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource {
                r#type: Some(csi::volume_content_source::Type::Snapshot(
                    csi::volume_content_source::SnapshotSource {
                        snapshot_id: unknown.into(),
                    },
                )),
            }),
            ..create("from-nothing", GIB)
        };
        assert_refused(ctl.create_volume(from_snapshot).await, nf, unknown);
        let from_volume = CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource {
                r#type: Some(csi::volume_content_source::Type::Volume(
                    csi::volume_content_source::VolumeSource {
                        volume_id: unknown.into(),
                    },
                )),
            }),
            ..create("clone-of-nothing", GIB)
        };
        assert_refused(ctl.create_volume(from_volume).await, nf, unknown);

        ctl.delete_volume(DeleteVolumeRequest {
            volume_id: unknown.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        ctl.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: unknown.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        ctl.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: unknown.into(),
            node_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // Nothing of the refused creates is left.
    let listed = ctl
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.entries.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn delete_volume_removes_it_refuses_a_published_one_and_repeats_fine() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let volume = make(&mut ctl, "pvc-del", GIB).await;
    let id = volume.volume_id.clone();
    assert!(stack.volume_file(&id).exists());
    ctl.controller_publish_volume(publish(&id, "node-a", false))
        .await
        .unwrap();
    let delete = DeleteVolumeRequest {
        volume_id: id.clone(),
        ..Default::default()
    };
    let (code, message) = refused(ctl.delete_volume(delete.clone()).await);
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(
        scoria_volume(&stack, &id).await.is_ok(),
        "a refused delete keeps the volume"
    );

    let unpublish = ControllerUnpublishVolumeRequest {
        volume_id: id.clone(),
        node_id: "node-a".into(),
        ..Default::default()
    };
    ctl.controller_unpublish_volume(unpublish).await.unwrap();
    ctl.delete_volume(delete.clone()).await.unwrap();
    // Gone when DeleteVolume returns: the row and the backend file.
    assert_eq!(
        scoria_volume(&stack, &id).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(
        !stack.volume_file(&id).exists(),
        "{}",
        stack.volume_file(&id).display()
    );
    ctl.delete_volume(delete).await.unwrap();
}

#[tokio::test]
async fn publish_hands_out_the_nbd_export_once_per_node_and_unpublish_detaches() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let volume = make(&mut ctl, "pvc-pub", GIB).await;
    let id = volume.volume_id.clone();
    let context = ctl
        .controller_publish_volume(publish(&id, "node-a", false))
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    assert_eq!(context.get("protocol").map(String::as_str), Some("nbd"));
    assert_eq!(context.get("read_only").map(String::as_str), Some("false"));
    let (host, port, export) = (&context["host"], &context["port"], &context["export_name"]);
    assert_eq!(context["uri"], format!("nbd://{host}:{port}/{export}"));
    // The export listens there.
    let addr = format!("{host}:{port}");
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .expect("connect in time")
    .unwrap_or_else(|e| panic!("nothing listens on {addr}: {e}"));
    // Scoria holds one attachment for the node.
    let attachments = Plugin::scoria(&stack)
        .attachments()
        .list_attachments(pb::ListAttachmentsRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .attachments;
    assert_eq!(attachments.len(), 1, "{attachments:?}");
    assert_eq!(attachments[0].connector.as_ref().unwrap().host, "node-a");
    assert_eq!(context["attachment_id"], attachments[0].id);

    let again = ctl
        .controller_publish_volume(publish(&id, "node-a", false))
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    assert_eq!(again, context, "publishing again answers the same");
    assert_refused(
        ctl.controller_publish_volume(publish(&id, "node-a", true))
            .await,
        Code::AlreadyExists,
        "read-write",
    );
    assert_refused(
        ctl.controller_publish_volume(publish(&id, "node-b", false))
            .await,
        Code::FailedPrecondition,
        "node-a",
    );

    let got = ctl
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = got.status.unwrap();
    assert_eq!(status.published_node_ids, vec!["node-a".to_owned()]);
    assert!(!status.volume_condition.unwrap().abnormal);
    let listed = ctl
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.entries[0]
            .status
            .as_ref()
            .unwrap()
            .published_node_ids,
        vec!["node-a".to_owned()]
    );

    let unpublish = ControllerUnpublishVolumeRequest {
        volume_id: id.clone(),
        node_id: "node-a".into(),
        ..Default::default()
    };
    ctl.controller_unpublish_volume(unpublish.clone())
        .await
        .unwrap();
    let volume = scoria_volume(&stack, &id).await.unwrap();
    assert_eq!(volume.status(), pb::VolumeStatus::Available);
    ctl.controller_unpublish_volume(unpublish).await.unwrap();
    let got = ctl
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.status.unwrap().published_node_ids.is_empty());

    // Read-only when asked: the export refuses writes.
    let ro = ctl
        .controller_publish_volume(publish(&id, "node-b", true))
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    assert_eq!(ro.get("read_only").map(String::as_str), Some("true"));
    let attachment = Plugin::scoria(&stack)
        .attachments()
        .get_attachment(pb::GetAttachmentRequest {
            id: ro["attachment_id"].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(attachment.mode(), pb::AttachMode::Ro);
    // Unpublishing from every node (no node_id).
    ctl.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        scoria_volume(&stack, &id).await.unwrap().status(),
        pb::VolumeStatus::Available
    );
}

#[tokio::test]
async fn multi_node_access_needs_a_multiattach_type() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    stack
        .types_admin(PROJECT)
        .create_volume_type(pb::CreateVolumeTypeRequest {
            name: "shared".into(),
            extra_specs: [("multiattach".to_owned(), "<is> True".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let multi = capability(true, Mode::MultiNodeMultiWriter);
    let plain = CreateVolumeRequest {
        volume_capabilities: vec![multi.clone()],
        ..create("pvc-multi", GIB)
    };
    assert_refused(
        ctl.create_volume(plain).await,
        Code::InvalidArgument,
        "multiattach",
    );
    let shared = CreateVolumeRequest {
        volume_capabilities: vec![multi.clone()],
        parameters: [("type".to_owned(), "shared".to_owned())].into(),
        ..create("pvc-multi", GIB)
    };
    let volume = ctl
        .create_volume(shared)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(volume.volume_context["volume_type"], "shared");
    let on = |node: &str| ControllerPublishVolumeRequest {
        volume_capability: Some(multi.clone()),
        ..publish(&volume.volume_id, node, false)
    };
    ctl.controller_publish_volume(on("node-a")).await.unwrap();
    ctl.controller_publish_volume(on("node-b")).await.unwrap();
    let got = ctl
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: volume.volume_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.status.unwrap().published_node_ids,
        vec!["node-a".to_owned(), "node-b".to_owned()]
    );

    // ValidateVolumeCapabilities agrees.
    let single = make(&mut ctl, "pvc-single", GIB).await;
    let validate = |id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    };
    let answer = ctl
        .validate_volume_capabilities(validate(
            &single.volume_id,
            vec![mount(), capability(true, Mode::SingleNodeReaderOnly)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.confirmed.unwrap().volume_capabilities.len(), 2);
    let answer = ctl
        .validate_volume_capabilities(validate(
            &single.volume_id,
            vec![capability(false, Mode::MultiNodeReaderOnly)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.confirmed.is_none() && answer.message.contains("multiattach"),
        "{answer:?}"
    );
    let answer = ctl
        .validate_volume_capabilities(validate(&volume.volume_id, vec![multi.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.confirmed.is_some(), "{answer:?}");
    let other_type = ValidateVolumeCapabilitiesRequest {
        parameters: [("type".to_owned(), "shared".to_owned())].into(),
        ..validate(&single.volume_id, vec![mount()])
    };
    let answer = ctl
        .validate_volume_capabilities(other_type)
        .await
        .unwrap()
        .into_inner();
    assert!(answer.confirmed.is_none(), "{answer:?}");
}

#[tokio::test]
async fn list_volumes_pages_and_a_token_it_never_gave_is_aborted() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let mut made = BTreeSet::new();
    for name in ["pvc-l1", "pvc-l2", "pvc-l3"] {
        made.insert(make(&mut ctl, name, GIB).await.volume_id);
    }
    let page = |max_entries, starting_token: &str| ListVolumesRequest {
        max_entries,
        starting_token: starting_token.into(),
    };
    let first = ctl.list_volumes(page(2, "")).await.unwrap().into_inner();
    assert_eq!(first.entries.len(), 2);
    assert!(!first.next_token.is_empty());
    let second = ctl
        .list_volumes(page(2, &first.next_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.entries.len(), 1);
    assert!(second.next_token.is_empty());
    let seen: BTreeSet<String> = first
        .entries
        .iter()
        .chain(&second.entries)
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    assert_eq!(seen, made);
    let all = ctl.list_volumes(page(0, "")).await.unwrap().into_inner();
    assert_eq!(all.entries.len(), 3);
    assert!(all.next_token.is_empty());
    for bad in [
        "garbage",
        "s1.AAAA",
        &first.next_token[..first.next_token.len() - 2],
    ] {
        assert_eq!(
            refused(ctl.list_volumes(page(2, bad)).await).0,
            Code::Aborted,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn get_capacity_sums_the_free_space_of_the_pools_by_zone_and_type() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let admin = || stack.admin(PROJECT);
    let pools = loop {
        let pools = admin()
            .list_pools(pb::ListPoolsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .pools;
        if !pools.is_empty() {
            break pools;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let free: f64 = pools.iter().map(|p| p.free_capacity_gib).sum();
    let zone = pools[0].availability_zone.clone();
    let capacity = |parameters: Vec<(&str, &str)>, zone: Option<&str>| GetCapacityRequest {
        volume_capabilities: vec![mount()],
        parameters: parameters
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        accessible_topology: zone.map(topology),
    };
    let all = ctl
        .get_capacity(capacity(vec![], None))
        .await
        .unwrap()
        .into_inner();
    assert!(free > 0.0);
    assert_eq!(all.available_capacity, (free * GIB as f64) as i64);
    assert!(all.maximum_volume_size.unwrap() <= all.available_capacity);
    let in_zone = ctl
        .get_capacity(capacity(vec![], Some(&zone)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_zone.available_capacity, all.available_capacity);
    let elsewhere = ctl
        .get_capacity(capacity(vec![], Some("nowhere")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(elsewhere.available_capacity, 0);

    let types = stack.types_admin(PROJECT);
    for (name, backend) in [
        ("here", pools[0].backend_name.as_str()),
        ("there", "no-such-backend"),
    ] {
        types
            .clone()
            .create_volume_type(pb::CreateVolumeTypeRequest {
                name: name.into(),
                extra_specs: [("volume_backend_name".to_owned(), backend.to_owned())].into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let here = ctl
        .get_capacity(capacity(vec![("type", "here")], None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(here.available_capacity, all.available_capacity);
    let there = ctl
        .get_capacity(capacity(vec![("type", "there")], None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(there.available_capacity, 0);
    assert_refused(
        ctl.get_capacity(capacity(vec![("type", "no-such-type")], None))
            .await,
        Code::InvalidArgument,
        "no-such-type",
    );
    // Several nodes on a type without multiattach: nothing.
    let multi = GetCapacityRequest {
        volume_capabilities: vec![capability(true, Mode::MultiNodeMultiWriter)],
        ..capacity(vec![], None)
    };
    assert_eq!(
        ctl.get_capacity(multi)
            .await
            .unwrap()
            .into_inner()
            .available_capacity,
        0
    );
}

#[tokio::test]
async fn expand_grows_an_unpublished_volume_and_repeating_changes_nothing() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let volume = make(&mut ctl, "pvc-grow", GIB).await;
    let id = volume.volume_id.clone();
    let expand = |required, capability: Option<VolumeCapability>| ControllerExpandVolumeRequest {
        volume_id: id.clone(),
        capacity_range: range(required, 0),
        volume_capability: capability,
        ..Default::default()
    };
    let grown = ctl
        .controller_expand_volume(expand(3 * GIB, Some(mount())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 3 * GIB);
    assert!(
        grown.node_expansion_required,
        "a filesystem grows on the node"
    );
    assert_eq!(scoria_volume(&stack, &id).await.unwrap().size_gib, 3);
    assert_eq!(
        std::fs::metadata(stack.volume_file(&id)).unwrap().len(),
        3 * GIB as u64
    );
    let again = ctl
        .controller_expand_volume(expand(3 * GIB, Some(mount())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.capacity_bytes, 3 * GIB);
    let smaller = ctl
        .controller_expand_volume(expand(2 * GIB, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(smaller.capacity_bytes, 3 * GIB, "never shrinks");
    let block = ctl
        .controller_expand_volume(expand(
            4 * GIB,
            Some(capability(true, Mode::SingleNodeWriter)),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(block.capacity_bytes, 4 * GIB);
    assert!(
        !block.node_expansion_required,
        "a raw block device needs nothing on the node"
    );

    let (code, message) = refused(
        ctl.controller_expand_volume(expand(20_000 * GIB, None))
            .await,
    );
    assert_eq!(code, Code::OutOfRange, "{message}");

    // Published, it cannot grow (offline expansion).
    ctl.controller_publish_volume(publish(&id, "node-a", false))
        .await
        .unwrap();
    let (code, message) = refused(
        ctl.controller_expand_volume(expand(5 * GIB, Some(mount())))
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert_eq!(scoria_volume(&stack, &id).await.unwrap().size_gib, 4);
}

#[tokio::test]
async fn snapshots_are_idempotent_by_name_listed_by_id_volume_and_page_and_deleted() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let a = make(&mut ctl, "pvc-sa", 2 * GIB).await.volume_id;
    let b = make(&mut ctl, "pvc-sb", GIB).await.volume_id;
    let snap = |name: &str, source: &str| CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    };
    let s1 = ctl
        .create_snapshot(snap("snap-1", &a))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(s1.ready_to_use);
    assert_eq!(s1.source_volume_id, a);
    assert_eq!(s1.size_bytes, 2 * GIB);
    assert!(s1.creation_time.is_some());
    let again = ctl
        .create_snapshot(snap("snap-1", &a))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(again, s1);
    assert_refused(
        ctl.create_snapshot(snap("snap-1", &b)).await,
        Code::AlreadyExists,
        &s1.snapshot_id,
    );
    assert_refused(
        ctl.create_snapshot(CreateSnapshotRequest {
            parameters: [("x".to_owned(), "y".to_owned())].into(),
            ..snap("snap-p", &a)
        })
        .await,
        Code::InvalidArgument,
        "parameters",
    );
    // Of a published volume too (Kubernetes snapshots volumes in use).
    ctl.controller_publish_volume(publish(&b, "node-a", false))
        .await
        .unwrap();
    let s2 = ctl
        .create_snapshot(snap("snap-2", &b))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let s3 = ctl
        .create_snapshot(snap("snap-3", &a))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();

    let list = |req: ListSnapshotsRequest| {
        let mut ctl = ctl.clone();
        async move { ctl.list_snapshots(req).await }
    };
    let ids = |r: &csi::ListSnapshotsResponse| -> BTreeSet<String> {
        r.entries
            .iter()
            .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone())
            .collect()
    };
    let by_id = list(ListSnapshotsRequest {
        snapshot_id: s2.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(ids(&by_id), BTreeSet::from([s2.snapshot_id.clone()]));
    for unknown in [uuid::Uuid::new_v4().to_string(), "nope".to_owned()] {
        let none = list(ListSnapshotsRequest {
            snapshot_id: unknown,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
        assert!(none.entries.is_empty());
    }
    let of_a = list(ListSnapshotsRequest {
        source_volume_id: a.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        ids(&of_a),
        BTreeSet::from([s1.snapshot_id.clone(), s3.snapshot_id.clone()])
    );
    let first = list(ListSnapshotsRequest {
        max_entries: 2,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(first.entries.len(), 2);
    let rest = list(ListSnapshotsRequest {
        max_entries: 2,
        starting_token: first.next_token.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert!(rest.next_token.is_empty());
    let all: BTreeSet<String> = ids(&first).union(&ids(&rest)).cloned().collect();
    assert_eq!(all.len(), 3);
    let bad = list(ListSnapshotsRequest {
        starting_token: "garbage".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(refused(bad).0, Code::Aborted);
    let got = ctl
        .get_snapshot(csi::GetSnapshotRequest {
            snapshot_id: s3.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.snapshot.unwrap(), s3);

    let delete = DeleteSnapshotRequest {
        snapshot_id: s1.snapshot_id.clone(),
        ..Default::default()
    };
    ctl.delete_snapshot(delete.clone()).await.unwrap();
    let gone = Plugin::scoria(&stack).get_snapshot(&s1.snapshot_id).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);
    ctl.delete_snapshot(delete).await.unwrap();
    // A volume with snapshots cannot go.
    let (code, message) = refused(
        ctl.delete_volume(DeleteVolumeRequest {
            volume_id: a.clone(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{message}");
}

/// Writes `bytes` at the start of volume `id`'s backing file.
fn write_volume(stack: &Stack, id: &str, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(stack.volume_file(id))
        .unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

fn read_volume(stack: &Stack, id: &str, len: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(stack.volume_file(id)).unwrap();
    bytes.truncate(len);
    bytes
}

#[tokio::test]
async fn volumes_from_a_snapshot_and_from_a_volume_hold_the_source_bytes() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let source = make(&mut ctl, "pvc-src", 2 * GIB).await.volume_id;
    let data = b"scoria csi: bytes that must travel";
    write_volume(&stack, &source, data);
    let snapshot = ctl
        .create_snapshot(CreateSnapshotRequest {
            name: "snap-src".into(),
            source_volume_id: source.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let from = |name: &str, content: csi::volume_content_source::Type, capacity_range| {
        CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource {
                r#type: Some(content),
            }),
            capacity_range,
            ..create(name, 0)
        }
    };
    let of_snapshot =
        csi::volume_content_source::Type::Snapshot(csi::volume_content_source::SnapshotSource {
            snapshot_id: snapshot.snapshot_id.clone(),
        });
    let of_volume =
        csi::volume_content_source::Type::Volume(csi::volume_content_source::VolumeSource {
            volume_id: source.clone(),
        });
    for (name, content) in [
        ("pvc-from-snap", of_snapshot.clone()),
        ("pvc-clone", of_volume.clone()),
    ] {
        // No size asked: the source's.
        let volume = ctl
            .create_volume(from(name, content.clone(), None))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        assert_eq!(volume.capacity_bytes, 2 * GIB);
        assert_eq!(
            volume
                .content_source
                .as_ref()
                .and_then(|c| c.r#type.clone()),
            Some(content.clone())
        );
        assert_eq!(
            read_volume(&stack, &volume.volume_id, data.len()),
            data,
            "{name}"
        );
        let again = ctl
            .create_volume(from(name, content.clone(), None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.volume.unwrap().volume_id, volume.volume_id);
        // The same name from another source is another volume.
        let other = if matches!(content, csi::volume_content_source::Type::Snapshot(_)) {
            of_volume.clone()
        } else {
            of_snapshot.clone()
        };
        assert_refused(
            ctl.create_volume(from(name, other, None)).await,
            Code::AlreadyExists,
            name,
        );
        // Smaller than the source: out of range.
        let small = from(&format!("{name}-small"), content, range(0, GIB));
        assert_refused(
            ctl.create_volume(small).await,
            Code::OutOfRange,
            "limit_bytes",
        );
    }
    // Larger than the source.
    let big = ctl
        .create_volume(from("pvc-big", of_snapshot, range(3 * GIB, 0)))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(big.capacity_bytes, 3 * GIB);
    assert_eq!(
        scoria_volume(&stack, &big.volume_id)
            .await
            .unwrap()
            .size_gib,
        3
    );
    assert_eq!(read_volume(&stack, &big.volume_id, data.len()), data);
}

#[tokio::test]
async fn topology_places_the_volume_in_the_zone_asked_for() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let mut ctl = plugin.controller();
    let zones = Plugin::scoria(&stack)
        .zones()
        .list_availability_zones(pb::ListAvailabilityZonesRequest {})
        .await
        .unwrap()
        .into_inner()
        .availability_zones;
    let zone = zones.first().expect("a zone").name.clone();
    let placed =
        |name: &str, requisite: Vec<Topology>, preferred: Vec<Topology>| CreateVolumeRequest {
            accessibility_requirements: Some(TopologyRequirement {
                requisite,
                preferred,
            }),
            ..create(name, GIB)
        };
    let preferred = ctl
        .create_volume(placed(
            "pvc-z1",
            vec![topology(&zone), topology("elsewhere")],
            vec![topology(&zone)],
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(preferred.accessible_topology, vec![topology(&zone)]);
    assert_eq!(
        scoria_volume(&stack, &preferred.volume_id)
            .await
            .unwrap()
            .availability_zone,
        zone
    );
    let requisite = ctl
        .create_volume(placed("pvc-z2", vec![topology(&zone)], vec![]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(requisite.accessible_topology, vec![topology(&zone)]);
    let by_parameter = ctl
        .create_volume(CreateVolumeRequest {
            parameters: [("zone".to_owned(), zone.clone())].into(),
            ..create("pvc-z3", GIB)
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(by_parameter.accessible_topology, vec![topology(&zone)]);
    let outside = CreateVolumeRequest {
        parameters: [("zone".to_owned(), zone.clone())].into(),
        ..placed("pvc-z4", vec![topology("elsewhere")], vec![])
    };
    assert_refused(
        ctl.create_volume(outside).await,
        Code::InvalidArgument,
        "requisite",
    );
    // A zone without a backend: refused, and nothing is left of the try.
    let nowhere = ctl
        .create_volume(placed("pvc-z5", vec![topology("nowhere")], vec![]))
        .await;
    let (code, message) = refused(nowhere);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    let listed = ctl
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 3, "{listed:?}\n{}", plugin.logs());
}

#[tokio::test]
async fn racing_creates_of_one_name_make_one_volume_even_through_two_plugins() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let first = Plugin::start_with(&stack, "ctl-1", &["--mode", "controller"]).await;
    let second = Plugin::start_with(&stack, "ctl-2", &["--mode", "controller"]).await;
    let mut calls = Vec::new();
    for i in 0..6 {
        let mut ctl = if i % 2 == 0 {
            first.controller()
        } else {
            second.controller()
        };
        calls.push(tokio::spawn(async move {
            ctl.create_volume(create("pvc-race", 2 * GIB)).await
        }));
    }
    let mut ids = BTreeSet::new();
    for call in calls {
        let volume = call.await.unwrap().unwrap().into_inner().volume.unwrap();
        assert_eq!(volume.capacity_bytes, 2 * GIB);
        ids.insert(volume.volume_id);
    }
    assert_eq!(ids.len(), 1, "one volume for one name: {ids:?}");
    let all = Plugin::scoria(&stack)
        .volumes()
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .volumes;
    assert_eq!(all.len(), 1, "{all:?}");
}
