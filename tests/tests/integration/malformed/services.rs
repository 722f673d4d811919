//! The malformed requests of the snapshot, volume type, admin and attachment
//! services.

use tonic::Code;

use super::{Case, UNKNOWN_ID, admin_bad, admin_case, bad, case, entries, long, unknown};
use crate::support::{mask, pb};

/// The SnapshotService cases; `volume` is an available volume of `p1`.
pub(super) fn snapshots(volume: &str) -> Vec<Case> {
    let of = |volume_id: &str| pb::CreateSnapshotRequest {
        volume_id: volume_id.to_owned(),
        ..Default::default()
    };
    let get = |id: &str| pb::GetSnapshotRequest { id: id.to_owned() };
    let delete = |id: &str| pb::DeleteSnapshotRequest { id: id.to_owned() };
    let list = pb::ListSnapshotsRequest::default;
    vec![
        bad(of(""), "volume_id"),
        bad(of("garbage"), "volume_id"),
        bad(
            pb::CreateSnapshotRequest {
                name: long(),
                ..of(volume)
            },
            "name",
        ),
        bad(
            pb::CreateSnapshotRequest {
                description: long(),
                ..of(volume)
            },
            "description",
        ),
        unknown(of(UNKNOWN_ID)),
        bad(get(""), "id"),
        bad(get("garbage"), "id"),
        unknown(get(UNKNOWN_ID)),
        bad(
            pb::ListSnapshotsRequest {
                page_size: -5,
                ..list()
            },
            "page_size",
        ),
        bad(
            pb::ListSnapshotsRequest {
                page_token: "garbage".into(),
                ..list()
            },
            "page_token",
        ),
        bad(
            pb::ListSnapshotsRequest {
                status: 42,
                ..list()
            },
            "status",
        ),
        bad(
            pb::ListSnapshotsRequest {
                volume_id: "garbage".into(),
                ..list()
            },
            "volume_id",
        ),
        bad(delete(""), "id"),
        bad(delete("garbage"), "id"),
        unknown(delete(UNKNOWN_ID)),
    ]
}

/// The VolumeTypeService cases (writes are admin only; a type `gold` exists).
pub(super) fn volume_types() -> Vec<Case> {
    let named = |name: &str| pb::CreateVolumeTypeRequest {
        name: name.to_owned(),
        ..Default::default()
    };
    let get = |id_or_name: &str| pb::GetVolumeTypeRequest {
        id_or_name: id_or_name.to_owned(),
    };
    let update = |id_or_name: &str, paths: &[&str]| pb::UpdateVolumeTypeRequest {
        id_or_name: id_or_name.to_owned(),
        update_mask: mask(paths),
        ..Default::default()
    };
    let delete = |id_or_name: &str| pb::DeleteVolumeTypeRequest {
        id_or_name: id_or_name.to_owned(),
    };
    vec![
        admin_bad(named(""), "name"),
        admin_bad(named("  "), "name"),
        admin_bad(named(&long()), "name"),
        admin_bad(
            pb::CreateVolumeTypeRequest {
                description: long(),
                ..named("t1")
            },
            "description",
        ),
        admin_bad(
            pb::CreateVolumeTypeRequest {
                extra_specs: entries(129),
                ..named("t1")
            },
            "extra_specs",
        ),
        admin_bad(
            pb::CreateVolumeTypeRequest {
                extra_specs: [(String::new(), "x".to_owned())].into(),
                ..named("t1")
            },
            r#"extra_specs[""]"#,
        ),
        case(named("t1"), Code::PermissionDenied, "CreateVolumeType"),
        bad(get(""), "id_or_name"),
        case(get("no-such-type"), Code::NotFound, "no-such-type"),
        bad(get(&long()), "id_or_name"),
        admin_bad(update("", &["description"]), "id_or_name"),
        admin_bad(update("gold", &["name"]), "update_mask"),
        admin_bad(
            pb::UpdateVolumeTypeRequest {
                description: long(),
                ..update("gold", &["description"])
            },
            "description",
        ),
        admin_case(
            update("no-such-type", &["description"]),
            Code::NotFound,
            "no-such-type",
        ),
        admin_bad(delete(""), "id_or_name"),
        admin_case(delete("no-such-type"), Code::NotFound, "no-such-type"),
    ]
}

/// The AdminService cases (admin only); `volume` is an available volume.
pub(super) fn admin(volume: &str) -> Vec<Case> {
    let set =
        |binary: &str, host: &str, enabled: bool, reason: &str| pb::SetServiceEnabledRequest {
            binary: binary.to_owned(),
            host: host.to_owned(),
            enabled,
            reason: reason.to_owned(),
        };
    let reset = |volume_id: &str, status: i32| pb::ResetVolumeStatusRequest {
        volume_id: volume_id.to_owned(),
        status,
    };
    let pools = |host: &str| pb::ListPoolsRequest {
        host: host.to_owned(),
    };
    let available = pb::VolumeStatus::Available.into();
    vec![
        case(
            pb::ListServicesRequest::default(),
            Code::PermissionDenied,
            "ListServices",
        ),
        admin_bad(set("", "n1@file", true, ""), "binary"),
        admin_bad(set("scoria-volume", "", true, ""), "host"),
        admin_bad(set("scoria-volume", "n1@file", false, ""), "reason"),
        admin_bad(set("scoria-volume", "n1@file", false, &long()), "reason"),
        admin_case(
            set("scoria-volume", "nowhere@file", true, ""),
            Code::NotFound,
            "nowhere@file",
        ),
        admin_bad(reset("", available), "volume_id"),
        admin_bad(reset(volume, 0), "status"),
        admin_bad(reset(volume, 99), "status"),
        admin_case(
            reset(UNKNOWN_ID, pb::VolumeStatus::Error.into()),
            Code::NotFound,
            UNKNOWN_ID,
        ),
        admin_bad(pools("no-backend"), "host"),
        admin_bad(pools(&long()), "host"),
        case(pools(""), Code::PermissionDenied, "ListPools"),
    ]
}

/// The AttachmentService cases; `volume` is an available volume of `p1`.
pub(super) fn attachments(volume: &str) -> Vec<Case> {
    let host = |host: &str| pb::Connector {
        host: host.to_owned(),
        ..Default::default()
    };
    let attach = |volume_id: &str, connector: Option<pb::Connector>| pb::CreateAttachmentRequest {
        volume_id: volume_id.to_owned(),
        connector,
        ..Default::default()
    };
    let client = || Some(host("client-1"));
    let get = |id: &str| pb::GetAttachmentRequest { id: id.to_owned() };
    let list = pb::ListAttachmentsRequest::default;
    let delete = |id: &str| pb::DeleteAttachmentRequest { id: id.to_owned() };
    vec![
        bad(attach("", client()), "volume_id"),
        bad(attach("garbage", client()), "volume_id"),
        bad(attach(volume, None), "connector"),
        bad(
            attach(
                volume,
                Some(pb::Connector {
                    ip: "10.0.0.1".into(),
                    ..Default::default()
                }),
            ),
            "connector.host",
        ),
        bad(attach(volume, Some(host(&long()))), "connector.host"),
        bad(
            attach(
                volume,
                Some(pb::Connector {
                    properties: entries(51),
                    ..host("c")
                }),
            ),
            "connector.properties",
        ),
        bad(
            pb::CreateAttachmentRequest {
                mode: 7,
                ..attach(volume, client())
            },
            "mode",
        ),
        bad(
            pb::CreateAttachmentRequest {
                instance_id: long(),
                ..attach(volume, client())
            },
            "instance_id",
        ),
        unknown(attach(UNKNOWN_ID, client())),
        bad(get(""), "id"),
        bad(get("garbage"), "id"),
        unknown(get(UNKNOWN_ID)),
        bad(
            pb::ListAttachmentsRequest {
                volume_id: "garbage".into(),
                ..list()
            },
            "volume_id",
        ),
        bad(
            pb::ListAttachmentsRequest {
                page_token: "garbage".into(),
                ..list()
            },
            "page_token",
        ),
        bad(delete(""), "id"),
        bad(delete("garbage"), "id"),
        unknown(delete(UNKNOWN_ID)),
    ]
}
