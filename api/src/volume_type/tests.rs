//! Tests of [`super::VolumeTypeApi`] over a real SQLite database, and of the
//! auth layer's rule that only admins write types.

use prost_types::FieldMask;
use tonic::Code;
use tonic_types::StatusExt;

use super::*;
use crate::auth::{authorize, path_of};

struct Fixture {
    api: VolumeTypeApi,
    db: Db,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!("scoria-type-test-{}", uuid::Uuid::new_v4()));
    let db = Db::connect(&format!("sqlite://{}", dir.join("scoria.db").display()))
        .await
        .expect("db");
    Fixture {
        api: VolumeTypeApi::new(db.clone()),
        db,
        dir,
    }
}

fn ctx(roles: &[&str]) -> RequestContext {
    RequestContext::new("p1", "u1", roles.iter().map(|r| (*r).to_owned()).collect())
}

fn request<T>(ctx: &RequestContext, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(ctx.clone());
    request
}

fn specs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn create_req(name: &str, pairs: &[(&str, &str)]) -> pb::CreateVolumeTypeRequest {
    pb::CreateVolumeTypeRequest {
        name: name.into(),
        description: "d".into(),
        extra_specs: specs(pairs),
    }
}

fn field(status: &Status) -> String {
    status
        .get_details_bad_request()
        .and_then(|bad| bad.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn admins_create_everyone_reads() {
    let f = fixture().await;
    let admin = ctx(&["admin"]);
    let created = f
        .api
        .create_volume_type(request(
            &admin,
            create_req("gold", &[("volume_backend_name", "fast")]),
        ))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.name, "gold");
    assert!(!created.is_default);

    let reader = ctx(&["reader"]);
    for id_or_name in [created.id.clone(), "gold".to_owned()] {
        let got = f
            .api
            .get_volume_type(request(&reader, pb::GetVolumeTypeRequest { id_or_name }))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(got, created);
    }
    let status = f
        .api
        .get_volume_type(request(
            &reader,
            pb::GetVolumeTypeRequest {
                id_or_name: "silver".into(),
            },
        ))
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("volume_type"),
        "{}",
        status.message()
    );

    let list = f
        .api
        .list_volume_types(request(&reader, pb::ListVolumeTypesRequest {}))
        .await
        .expect("list")
        .into_inner();
    let names: Vec<(&str, bool)> = list
        .volume_types
        .iter()
        .map(|t| (t.name.as_str(), t.is_default))
        .collect();
    assert_eq!(names, [("__DEFAULT__", true), ("gold", false)]);

    let status = f
        .api
        .create_volume_type(request(&admin, create_req("gold", &[])))
        .await
        .expect_err("taken");
    assert_eq!(status.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn non_admins_cannot_write() {
    let f = fixture().await;
    let member = ctx(&["member"]);
    let status = f
        .api
        .create_volume_type(request(&member, create_req("gold", &[])))
        .await
        .expect_err("member");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = f
        .api
        .update_volume_type(request(
            &member,
            pb::UpdateVolumeTypeRequest {
                id_or_name: "__DEFAULT__".into(),
                description: "x".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("member");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = f
        .api
        .delete_volume_type(request(
            &member,
            pb::DeleteVolumeTypeRequest {
                id_or_name: "__DEFAULT__".into(),
            },
        ))
        .await
        .expect_err("member");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(f.db.list_volume_types().await.expect("db").len(), 1);
}

#[test]
fn the_auth_layer_keeps_type_writes_for_admins() {
    let member = ctx(&["member"]);
    let reader = ctx(&["reader"]);
    for write in ["CreateVolumeType", "UpdateVolumeType", "DeleteVolumeType"] {
        let err = authorize(&member, path_of(write)).expect_err(write);
        assert_eq!(err.into_status().code(), Code::PermissionDenied);
        authorize(&ctx(&["admin"]), path_of(write)).expect("admin");
    }
    for read in ["GetVolumeType", "ListVolumeTypes", "ListAvailabilityZones"] {
        authorize(&reader, path_of(read)).expect(read);
    }
    authorize(&member, path_of("ExtendVolume")).expect("members extend");
    authorize(&reader, path_of("ExtendVolume")).expect_err("readers do not");
}

#[tokio::test]
async fn fields_are_checked() {
    let f = fixture().await;
    let admin = ctx(&["admin"]);
    let long = "x".repeat(256);
    let many: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let long_key = format!("extra_specs[{:?}…]", "x".repeat(64));
    let cases: Vec<(pb::CreateVolumeTypeRequest, &str)> = vec![
        (create_req("", &[]), "name"),
        (create_req("  ", &[]), "name"),
        (create_req(&long, &[]), "name"),
        (
            pb::CreateVolumeTypeRequest {
                description: long.clone(),
                ..create_req("t", &[])
            },
            "description",
        ),
        (create_req("t", &many), "extra_specs"),
        (create_req("t", &[("", "v")]), r#"extra_specs[""]"#),
        (create_req("t", &[(long.as_str(), "v")]), &long_key),
        (
            create_req("t", &[("k", long.as_str())]),
            r#"extra_specs["k"]"#,
        ),
        (
            create_req("t", &[("multiattach", "<is>")]),
            r#"extra_specs["multiattach"]"#,
        ),
        (
            create_req("t", &[("multiattach", "<is> maybe")]),
            r#"extra_specs["multiattach"]"#,
        ),
        (
            create_req("t", &[("free_gib", ">= lots")]),
            r#"extra_specs["free_gib"]"#,
        ),
        (
            create_req("t", &[("free_gib", "==")]),
            r#"extra_specs["free_gib"]"#,
        ),
        (
            create_req("t", &[("name", "s==")]),
            r#"extra_specs["name"]"#,
        ),
        (
            create_req("t", &[("name", "<in>")]),
            r#"extra_specs["name"]"#,
        ),
        (
            create_req("t", &[("name", "<or>")]),
            r#"extra_specs["name"]"#,
        ),
        (
            create_req("t", &[("name", "<or> a b")]),
            r#"extra_specs["name"]"#,
        ),
        (
            create_req("t", &[("provisioning:type", "fat")]),
            r#"extra_specs["provisioning:type"]"#,
        ),
    ];
    for (req, name) in cases {
        let label = format!("{:?}", req.extra_specs);
        let status = f
            .api
            .create_volume_type(request(&admin, req))
            .await
            .expect_err(&label);
        assert_eq!(
            (status.code(), field(&status).as_str()),
            (Code::InvalidArgument, name),
            "{label}: {}",
            status.message()
        );
    }
    let good = [
        ("volume_backend_name", "file"),
        ("capabilities:multiattach", "<is> True"),
        ("free_capacity_gib", ">= 10.5"),
        ("driver", "<or> file <or> qcow2"),
        ("storage_protocol", "<in> nb"),
        ("vendor:thing", "anything goes"),
        ("provisioning:type", "thick"),
    ];
    f.api
        .create_volume_type(request(&admin, create_req("good", &good)))
        .await
        .expect("valid specs");
}

#[tokio::test]
async fn update_and_delete() {
    let f = fixture().await;
    let admin = ctx(&["admin"]);
    f.api
        .create_volume_type(request(
            &admin,
            create_req("gold", &[("volume_backend_name", "fast")]),
        ))
        .await
        .expect("create");

    // No mask: the fields set.
    let updated = f
        .api
        .update_volume_type(request(
            &admin,
            pb::UpdateVolumeTypeRequest {
                id_or_name: "gold".into(),
                description: "shiny".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.description, "shiny");
    assert_eq!(
        updated.extra_specs,
        specs(&[("volume_backend_name", "fast")])
    );

    // A mask clears the specs.
    let updated = f
        .api
        .update_volume_type(request(
            &admin,
            pb::UpdateVolumeTypeRequest {
                id_or_name: "gold".into(),
                update_mask: Some(FieldMask {
                    paths: vec!["extra_specs".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("update")
        .into_inner();
    assert!(updated.extra_specs.is_empty());
    assert_eq!(updated.description, "shiny");

    let bad_mask = pb::UpdateVolumeTypeRequest {
        id_or_name: "gold".into(),
        update_mask: Some(FieldMask {
            paths: vec!["name".into()],
        }),
        ..Default::default()
    };
    let status = f
        .api
        .update_volume_type(request(&admin, bad_mask))
        .await
        .expect_err("names do not change");
    assert_eq!(field(&status), "update_mask");
    let bad_specs = pb::UpdateVolumeTypeRequest {
        id_or_name: "gold".into(),
        extra_specs: specs(&[("multiattach", "<is>")]),
        ..Default::default()
    };
    let status = f
        .api
        .update_volume_type(request(&admin, bad_specs))
        .await
        .expect_err("bad spec");
    assert_eq!(field(&status), r#"extra_specs["multiattach"]"#);
    let missing = pb::UpdateVolumeTypeRequest {
        id_or_name: "silver".into(),
        description: "x".into(),
        ..Default::default()
    };
    assert_eq!(
        f.api
            .update_volume_type(request(&admin, missing))
            .await
            .expect_err("missing")
            .code(),
        Code::NotFound
    );

    let delete = |id_or_name: &str| {
        let api = f.api.clone();
        let req = request(
            &admin,
            pb::DeleteVolumeTypeRequest {
                id_or_name: id_or_name.to_owned(),
            },
        );
        async move { api.delete_volume_type(req).await }
    };
    assert_eq!(
        delete("__DEFAULT__").await.expect_err("default").code(),
        Code::FailedPrecondition
    );
    let volume = scoria_common::model::Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p9".into(),
        user_id: "u".into(),
        name: String::new(),
        description: String::new(),
        size_gib: 1,
        status: scoria_common::model::VolumeStatus::Available,
        volume_type: "gold".into(),
        availability_zone: String::new(),
        host: None,
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: 1,
        updated_at_ms: 1,
    };
    let worker = scoria_common::db::WorkerEntry {
        kind: scoria_common::db::WorkerKind::Volume,
        resource_id: volume.id.clone(),
        status: "creating".into(),
        service: "x".into(),
        deadline_ms: 0,
    };
    f.db.create_volume(&volume, None, &worker)
        .await
        .expect("db");
    let status = delete("gold").await.expect_err("in use");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("used by 1"),
        "{}",
        status.message()
    );
    f.db.delete_volume_row(&volume.id).await.expect("db");
    delete("gold").await.expect("unused");
    assert_eq!(
        delete("gold").await.expect_err("gone").code(),
        Code::NotFound
    );
    assert_eq!(
        delete("").await.expect_err("empty").code(),
        Code::InvalidArgument
    );
}
