//! Volume types on CreateVolume, clones (`source_volume_id`) and ExtendVolume.

use scoria_common::model::VolumeType;
use tonic_types::StatusExt;

use super::*;

/// The field a status's `BadRequest` details name.
fn field(status: &Status) -> String {
    status
        .get_details_bad_request()
        .and_then(|bad| bad.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

/// Volume `id` placed on `host` and available, as a backend would leave it.
async fn make_available(f: &Fixture, id: &str, host: &str) {
    let won =
        f.db.transition_volume_with_worker(
            id,
            &[VolumeStatus::Creating],
            VolumeStatus::Available,
            Some(host),
            None,
            None,
        )
        .await
        .expect("db");
    assert!(won);
}

async fn add_type(f: &Fixture, name: &str, specs: &[(&str, &str)]) {
    let volume_type = VolumeType {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.into(),
        description: String::new(),
        extra_specs: specs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        is_default: false,
        created_at_ms: 1,
        updated_at_ms: 1,
    };
    assert!(f.db.create_volume_type(&volume_type).await.expect("db"));
}

fn last_scheduled(f: &Fixture) -> ScheduleCreateVolume {
    f.h.scheduler
        .scheduled()
        .last()
        .cloned()
        .expect("scheduled")
}

#[tokio::test]
async fn create_takes_the_named_or_default_type_and_its_specs() {
    let f = fixture().await;
    let p1 = member("p1");
    let plain = create(&f, &p1, "plain").await;
    assert_eq!(plain.volume_type, "__DEFAULT__");
    assert!(last_scheduled(&f).extra_specs.is_empty());

    add_type(&f, "gold", &[("volume_backend_name", "fast")]).await;
    let gold = f
        .api
        .create_volume(request(
            &p1,
            pb::CreateVolumeRequest {
                volume_type: "gold".into(),
                ..create_req("gold")
            },
        ))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(gold.volume_type, "gold");
    let row = f.db.get_volume(&gold.id).await.expect("db").expect("row");
    assert_eq!(row.volume_type, "gold", "the type's name is stored");
    let scheduled = last_scheduled(&f);
    assert_eq!(scheduled.volume_type, "gold");
    assert_eq!(
        scheduled
            .extra_specs
            .get("volume_backend_name")
            .map(String::as_str),
        Some("fast")
    );

    let status = f
        .api
        .create_volume(request(
            &p1,
            pb::CreateVolumeRequest {
                volume_type: "silver".into(),
                ..create_req("x")
            },
        ))
        .await
        .expect_err("unknown type");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("volume_type") && status.message().contains("silver"),
        "{}",
        status.message()
    );
    assert_eq!(f.db.count_volumes("p1").await.expect("count"), 2);
}

fn clone_req(source: &str, size_gib: u64) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        size_gib,
        source: Some(pb::create_volume_request::Source::SourceVolumeId(
            source.to_owned(),
        )),
        ..create_req("clone")
    }
}

#[tokio::test]
async fn clones_go_to_the_source_host_with_its_size_and_type() {
    let f = fixture().await;
    let p1 = member("p1");
    add_type(&f, "gold", &[("volume_backend_name", "fast")]).await;
    let source = f
        .api
        .create_volume(request(
            &p1,
            pb::CreateVolumeRequest {
                size_gib: 3,
                volume_type: "gold".into(),
                availability_zone: "az1".into(),
                ..create_req("source")
            },
        ))
        .await
        .expect("create")
        .into_inner();

    let clone = |ctx: RequestContext, req: pb::CreateVolumeRequest| {
        let api = f.api.clone();
        async move { api.create_volume(request(&ctx, req)).await }
    };
    // Not available yet.
    let status = clone(p1.clone(), clone_req(&source.id, 0))
        .await
        .expect_err("creating");
    assert_eq!(status.code(), Code::FailedPrecondition);

    make_available(&f, &source.id, "h1@file").await;
    let status = clone(member("p2"), clone_req(&source.id, 0))
        .await
        .expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("source_volume_id"),
        "{}",
        status.message()
    );
    let missing = uuid::Uuid::new_v4().to_string();
    let status = clone(p1.clone(), clone_req(&missing, 0))
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);
    let status = clone(p1.clone(), clone_req(&source.id, 2))
        .await
        .expect_err("smaller");
    assert_eq!(
        (status.code(), field(&status).as_str()),
        (Code::InvalidArgument, "size_gib")
    );
    let other_zone = pb::CreateVolumeRequest {
        availability_zone: "az2".into(),
        ..clone_req(&source.id, 0)
    };
    let status = clone(p1.clone(), other_zone).await.expect_err("zone");
    assert_eq!(
        (status.code(), field(&status).as_str()),
        (Code::InvalidArgument, "availability_zone")
    );
    let status = clone(p1.clone(), clone_req("nope", 0))
        .await
        .expect_err("bad id");
    assert_eq!(
        (status.code(), field(&status).as_str()),
        (Code::InvalidArgument, "source_volume_id")
    );

    let cloned = clone(p1.clone(), clone_req(&source.id, 0))
        .await
        .expect("clone")
        .into_inner();
    assert_eq!(cloned.size_gib, 3, "size 0 means the source's");
    assert_eq!(cloned.source_volume_id, source.id);
    assert_eq!(cloned.volume_type, "gold", "the source's type");
    assert_eq!(cloned.availability_zone, "az1");
    let row = f.db.get_volume(&cloned.id).await.expect("db").expect("row");
    assert_eq!(row.source_volume_id.as_deref(), Some(source.id.as_str()));
    let scheduled = last_scheduled(&f);
    assert_eq!(
        (
            scheduled.volume_id.as_str(),
            scheduled.source_volume_id.as_str(),
            scheduled.required_host.as_str(),
            scheduled.size_gib
        ),
        (cloned.id.as_str(), source.id.as_str(), "h1@file", 3)
    );
    assert_eq!(
        scheduled
            .extra_specs
            .get("volume_backend_name")
            .map(String::as_str),
        Some("fast")
    );

    let bigger = clone(p1.clone(), clone_req(&source.id, 5))
        .await
        .expect("bigger clone")
        .into_inner();
    assert_eq!(bigger.size_gib, 5);
}

#[tokio::test]
async fn size_zero_needs_a_source() {
    let f = fixture().await;
    let status = f
        .api
        .create_volume(request(
            &member("p1"),
            pb::CreateVolumeRequest {
                size_gib: 0,
                ..create_req("x")
            },
        ))
        .await
        .expect_err("size 0");
    assert_eq!(field(&status), "size_gib");
}

fn extend_req(id: &str, new_size_gib: u64) -> pb::ExtendVolumeRequest {
    pb::ExtendVolumeRequest {
        id: id.to_owned(),
        new_size_gib,
    }
}

#[tokio::test]
async fn extend_marks_extending_and_casts_to_the_host() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume = create(&f, &p1, "grow").await;
    let extend = |ctx: RequestContext, req: pb::ExtendVolumeRequest| {
        let api = f.api.clone();
        async move { api.extend_volume(request(&ctx, req)).await }
    };

    let status = extend(p1.clone(), extend_req(&volume.id, 2))
        .await
        .expect_err("creating");
    assert_eq!(status.code(), Code::FailedPrecondition);
    make_available(&f, &volume.id, "h1@file").await;

    let cases = [
        (extend_req("nope", 2), Code::InvalidArgument, "id"),
        (
            extend_req(&volume.id, 1),
            Code::InvalidArgument,
            "new_size_gib",
        ),
        (
            extend_req(&volume.id, 0),
            Code::InvalidArgument,
            "new_size_gib",
        ),
        (
            extend_req(&volume.id, 101),
            Code::InvalidArgument,
            "new_size_gib",
        ),
    ];
    for (req, code, name) in cases {
        let status = extend(p1.clone(), req).await.expect_err(name);
        assert_eq!((status.code(), field(&status).as_str()), (code, name));
    }
    let status = extend(member("p2"), extend_req(&volume.id, 2))
        .await
        .expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
    let missing = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        extend(p1.clone(), extend_req(&missing, 2))
            .await
            .expect_err("missing")
            .code(),
        Code::NotFound
    );
    assert!(f.extended().is_empty());

    let extending = extend(p1.clone(), extend_req(&volume.id, 4))
        .await
        .expect("extend")
        .into_inner();
    assert_eq!(extending.status, pb::VolumeStatus::Extending as i32);
    assert_eq!(
        extending.size_gib, 1,
        "the size changes when the backend is done"
    );
    let row = f.db.get_volume(&volume.id).await.expect("db").expect("row");
    assert_eq!(row.status, VolumeStatus::Extending);
    let worker =
        f.db.get_worker(WorkerKind::Volume, &volume.id)
            .await
            .expect("db")
            .expect("worker");
    assert_eq!(
        (worker.status.as_str(), worker.service.as_str()),
        ("extending", "h1@file")
    );
    let extended = f.extended();
    assert_eq!(extended.len(), 1);
    assert_eq!(extended[0].0, "h1@file");
    assert_eq!(
        (
            extended[0].1.volume_id.as_str(),
            extended[0].1.new_size_gib,
            extended[0].1.previous_status.as_str()
        ),
        (volume.id.as_str(), 4, "available")
    );

    // A second extend while the first runs loses.
    let status = extend(p1.clone(), extend_req(&volume.id, 8))
        .await
        .expect_err("extending");
    assert_eq!(status.code(), Code::FailedPrecondition);
}

/// Defect 4: two racing extends, the second checked against the size before the
/// first finished, must not cast its smaller size after the larger one: its
/// compare-and-set includes the size it checked, so it loses.
#[tokio::test]
async fn an_extend_checked_against_a_stale_size_loses() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume = create(&f, &p1, "race").await;
    make_available(&f, &volume.id, "h1@file").await;
    // The second request reads and checks the volume (1 GiB < 4 GiB) ...
    let stale = f.db.get_volume(&volume.id).await.expect("db").expect("row");
    // ... then the first extends it to 8 GiB, and the backend finishes.
    f.api
        .extend_volume(request(&p1, extend_req(&volume.id, 8)))
        .await
        .expect("first extend");
    assert!(
        f.db.finish_extend_to(&volume.id, 8, VolumeStatus::Available)
            .await
            .expect("db")
    );
    let err = f
        .api
        .start_extend(&p1, stale, 4)
        .await
        .expect_err("stale size");
    assert_eq!(err.into_status().code(), Code::FailedPrecondition);
    let row = f.db.get_volume(&volume.id).await.expect("db").expect("row");
    assert_eq!((row.status, row.size_gib), (VolumeStatus::Available, 8));
    let sizes: Vec<u64> = f.extended().iter().map(|(_, r)| r.new_size_gib).collect();
    assert_eq!(sizes, [8], "only the first extend was cast");
}

#[tokio::test]
async fn a_failed_extend_cast_puts_the_volume_back() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume = create(&f, &p1, "grow").await;
    make_available(&f, &volume.id, "h1@file").await;
    f.fail_casts(true);
    let status = f
        .api
        .extend_volume(request(&p1, extend_req(&volume.id, 2)))
        .await
        .expect_err("cast fails");
    assert_eq!(status.code(), Code::Unavailable);
    let row = f.db.get_volume(&volume.id).await.expect("db").expect("row");
    assert_eq!((row.status, row.size_gib), (VolumeStatus::Available, 1));
    assert_eq!(
        f.h.notifier.events_of(&volume.id),
        [Event::VolumeResizeError]
    );
    assert!(
        f.db.get_worker(WorkerKind::Volume, &volume.id)
            .await
            .expect("db")
            .is_none()
    );

    f.fail_casts(false);
    f.h.link.set_down(true);
    let status = f
        .api
        .extend_volume(request(&p1, extend_req(&volume.id, 2)))
        .await
        .expect_err("broker down");
    assert_eq!(status.code(), Code::Unavailable);
    let row = f.db.get_volume(&volume.id).await.expect("db").expect("row");
    assert_eq!(row.status, VolumeStatus::Available);
}
