//! What several areas share: request builders and the create-and-wait steps,
//! over the stack's typed clients.

pub use scoria_proto::v1 as pb;
use scoria_tests::stack::Stack;
use tonic::Response;

/// One GiB in bytes.
pub const GIB: u64 = 1 << 30;

/// A CreateVolume request of `size_gib`, everything else default.
pub fn sized(size_gib: u64) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        size_gib,
        ..Default::default()
    }
}

/// The `source` of a CreateVolume request: snapshot `id`.
pub fn from_snapshot(id: &str) -> Option<pb::create_volume_request::Source> {
    Some(pb::create_volume_request::Source::SnapshotId(id.to_owned()))
}

/// The `source` of a CreateVolume request: volume `id`.
pub fn from_volume(id: &str) -> Option<pb::create_volume_request::Source> {
    Some(pb::create_volume_request::Source::SourceVolumeId(
        id.to_owned(),
    ))
}

/// `paths` as an update mask.
pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// Creates a volume as a member of `project`; it answers CREATING. Fails with
/// the logs when refused.
pub async fn create(stack: &Stack, project: &str, request: pb::CreateVolumeRequest) -> pb::Volume {
    let created = stack
        .volumes(project)
        .create_volume(request.clone())
        .await
        .map(Response::into_inner)
        .unwrap_or_else(|e| panic!("create {request:?}: {e:?}\n{}", stack.logs()));
    assert_eq!(created.status(), pb::VolumeStatus::Creating, "{created:?}");
    created
}

/// Creates a volume in project `p1` and waits until it is available; its id.
pub async fn new_volume(stack: &Stack, request: pb::CreateVolumeRequest) -> String {
    let id = create(stack, "p1", request).await.id;
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    id
}
