//! The malformed requests of `scoria.v1.VolumeService`.

use super::{Case, UNKNOWN_ID, bad, case, entries, long, unknown};
use crate::support::{from_snapshot, from_volume, mask, pb, sized};
use tonic::Code;

/// `id` (unchecked) as a GetVolume request.
fn get(id: &str) -> pb::GetVolumeRequest {
    pb::GetVolumeRequest { id: id.to_owned() }
}

/// An UpdateVolume of `id` renaming it to `n` (no mask).
fn rename(id: &str) -> pb::UpdateVolumeRequest {
    pb::UpdateVolumeRequest {
        id: id.to_owned(),
        name: "n".into(),
        ..Default::default()
    }
}

/// An ExtendVolume of `id` to `new_size_gib`.
fn extend(id: &str, new_size_gib: u64) -> pb::ExtendVolumeRequest {
    pb::ExtendVolumeRequest {
        id: id.to_owned(),
        new_size_gib,
    }
}

/// A ListVolumes of `page_size`.
fn page(page_size: i32) -> pb::ListVolumesRequest {
    pb::ListVolumesRequest {
        page_size,
        ..Default::default()
    }
}

/// A ListVolumes continuing at `page_token`.
fn token(page_token: &str) -> pb::ListVolumesRequest {
    pb::ListVolumesRequest {
        page_token: page_token.to_owned(),
        ..Default::default()
    }
}

/// The cases; `volume` is an available volume of project `p1`.
pub(super) fn cases(volume: &str) -> Vec<Case> {
    let delete = |id: &str| pb::DeleteVolumeRequest { id: id.to_owned() };
    vec![
        bad(pb::CreateVolumeRequest::default(), "size_gib"),
        bad(sized(0), "size_gib"),
        bad(sized(u64::MAX), "size_gib"),
        bad(
            pb::CreateVolumeRequest {
                name: long(),
                ..sized(1)
            },
            "name",
        ),
        bad(
            pb::CreateVolumeRequest {
                description: long(),
                ..sized(1)
            },
            "description",
        ),
        bad(
            pb::CreateVolumeRequest {
                volume_type: long(),
                ..sized(1)
            },
            "volume_type",
        ),
        bad(
            pb::CreateVolumeRequest {
                availability_zone: long(),
                ..sized(1)
            },
            "availability_zone",
        ),
        bad(
            pb::CreateVolumeRequest {
                metadata: entries(129),
                ..sized(1)
            },
            "metadata",
        ),
        bad(
            pb::CreateVolumeRequest {
                metadata: [(String::new(), "v".to_owned())].into(),
                ..sized(1)
            },
            r#"metadata[""]"#,
        ),
        bad(
            pb::CreateVolumeRequest {
                metadata: [("k".to_owned(), long())].into(),
                ..sized(1)
            },
            r#"metadata["k"]"#,
        ),
        bad(
            pb::CreateVolumeRequest {
                request_id: long(),
                ..sized(1)
            },
            "request_id",
        ),
        bad(
            pb::CreateVolumeRequest {
                source: from_snapshot("not-a-uuid"),
                ..sized(1)
            },
            "snapshot_id",
        ),
        bad(
            pb::CreateVolumeRequest {
                source: from_volume("../../etc"),
                ..sized(1)
            },
            "source_volume_id",
        ),
        unknown(pb::CreateVolumeRequest {
            source: from_snapshot(UNKNOWN_ID),
            ..sized(1)
        }),
        unknown(pb::CreateVolumeRequest {
            source: from_volume(UNKNOWN_ID),
            ..sized(1)
        }),
        case(
            pb::CreateVolumeRequest {
                volume_type: "no-such-type".into(),
                ..sized(1)
            },
            Code::NotFound,
            "no-such-type",
        ),
        bad(get(""), "id"),
        bad(get("garbage"), "id"),
        bad(get(&format!("{UNKNOWN_ID}x")), "id"),
        unknown(get(UNKNOWN_ID)),
        bad(page(-1), "page_size"),
        bad(token("garbage"), "page_token"),
        bad(token("eyJpZCI6IngifQ"), "page_token"),
        bad(
            pb::ListVolumesRequest {
                status: 99,
                ..Default::default()
            },
            "status",
        ),
        bad(
            pb::ListVolumesRequest {
                name: long(),
                ..Default::default()
            },
            "name",
        ),
        bad(rename(""), "id"),
        bad(rename("garbage"), "id"),
        bad(
            pb::UpdateVolumeRequest {
                update_mask: mask(&["size_gib"]),
                ..rename(volume)
            },
            "update_mask",
        ),
        bad(
            pb::UpdateVolumeRequest {
                id: volume.to_owned(),
                update_mask: mask(&["name", "status"]),
                ..Default::default()
            },
            "update_mask",
        ),
        bad(
            pb::UpdateVolumeRequest {
                update_mask: mask(&["name"]),
                name: long(),
                ..rename(volume)
            },
            "name",
        ),
        bad(
            pb::UpdateVolumeRequest {
                id: volume.to_owned(),
                description: long(),
                ..Default::default()
            },
            "description",
        ),
        bad(
            pb::UpdateVolumeRequest {
                id: volume.to_owned(),
                metadata: entries(129),
                ..Default::default()
            },
            "metadata",
        ),
        unknown(rename(UNKNOWN_ID)),
        bad(delete(""), "id"),
        bad(delete("*"), "id"),
        unknown(delete(UNKNOWN_ID)),
        bad(extend("garbage", 2), "id"),
        bad(extend(volume, 0), "new_size_gib"),
        bad(extend(volume, 1), "new_size_gib"),
        bad(extend(volume, u64::MAX), "new_size_gib"),
        unknown(extend(UNKNOWN_ID, 2)),
    ]
}
