//! Bad text is refused alike on SQLite and on PostgreSQL: a NUL byte (which
//! PostgreSQL cannot store in `TEXT`, and SQLite can), other control characters
//! and over-long values get INVALID_ARGUMENT naming the field, on both, and
//! nothing is written. Text that is merely unusual (tabs and line breaks in a
//! description, any Unicode in a name) is stored and read back the same.

mod props;

use scoria_proto::v1 as pb;
use scoria_tests::{
    calls::Call,
    stack::{DbKind, Stack},
};
use tonic::Code;

use crate::{counts, field};

/// A well-formed id nothing has.
const UNKNOWN_ID: &str = "0b5c8f3e-0000-4000-8000-00000000dead";

/// Bad text in every kind of field, with the field each must be refused for.
fn bad_requests() -> Vec<(Call, &'static str)> {
    let volume = |f: fn(&mut pb::CreateVolumeRequest)| {
        let mut req = pb::CreateVolumeRequest {
            size_gib: 1,
            ..Default::default()
        };
        f(&mut req);
        Call::from(req)
    };
    let connector = |f: fn(&mut pb::Connector), mut req: pb::CreateAttachmentRequest| {
        let mut c = pb::Connector {
            host: "compute-1".into(),
            ..Default::default()
        };
        f(&mut c);
        req.connector = Some(c);
        Call::from(req)
    };
    let attach = pb::CreateAttachmentRequest {
        volume_id: UNKNOWN_ID.into(),
        ..Default::default()
    };
    let entry = |k: &str, v: &str| [(k.to_owned(), v.to_owned())].into();
    vec![
        (volume(|r| r.name = "nul\0name".into()), "name"),
        (volume(|r| r.name = "esc\u{1b}[31m".into()), "name"),
        (volume(|r| r.name = "two\nlines".into()), "name"),
        (volume(|r| r.name = "n".repeat(256)), "name"),
        (
            volume(|r| r.description = "bell\u{7}".into()),
            "description",
        ),
        (volume(|r| r.description = "nul\0".into()), "description"),
        (volume(|r| r.volume_type = "gold\0".into()), "volume_type"),
        (
            volume(|r| r.availability_zone = "az\u{85}".into()),
            "availability_zone",
        ),
        (volume(|r| r.request_id = "req\0".into()), "request_id"),
        (
            volume(|r| r.metadata = [("k".to_owned(), "v\0".to_owned())].into()),
            r#"metadata["k"]"#,
        ),
        (
            volume(|r| r.metadata = [("k\0".to_owned(), "v".to_owned())].into()),
            r#"metadata["k\0"]"#,
        ),
        (
            pb::UpdateVolumeRequest {
                id: UNKNOWN_ID.into(),
                name: "x\0".into(),
                ..Default::default()
            }
            .into(),
            "name",
        ),
        (
            pb::UpdateVolumeRequest {
                id: UNKNOWN_ID.into(),
                metadata: entry("tab\tkey", "v"),
                ..Default::default()
            }
            .into(),
            r#"metadata["tab\tkey"]"#,
        ),
        (
            pb::ListVolumesRequest {
                name: "\0".into(),
                ..Default::default()
            }
            .into(),
            "name",
        ),
        (
            pb::CreateSnapshotRequest {
                volume_id: UNKNOWN_ID.into(),
                name: "snap\0".into(),
                ..Default::default()
            }
            .into(),
            "name",
        ),
        (
            pb::CreateSnapshotRequest {
                volume_id: UNKNOWN_ID.into(),
                description: "\u{0}".into(),
                ..Default::default()
            }
            .into(),
            "description",
        ),
        (
            connector(|c| c.host = "host\0".into(), attach.clone()),
            "connector.host",
        ),
        (
            connector(|c| c.ip = "10.0.0.1\n".into(), attach.clone()),
            "connector.ip",
        ),
        (
            connector(|c| c.initiator = "iqn\u{7f}".into(), attach.clone()),
            "connector.initiator",
        ),
        (
            connector(
                |c| c.properties = [("os".to_owned(), "linux\0".to_owned())].into(),
                attach.clone(),
            ),
            r#"connector.properties["os"]"#,
        ),
        (
            connector(
                |_| {},
                pb::CreateAttachmentRequest {
                    instance_id: "vm\0".into(),
                    ..attach.clone()
                },
            ),
            "instance_id",
        ),
        (
            pb::CreateVolumeTypeRequest {
                name: "type\0".into(),
                ..Default::default()
            }
            .into(),
            "name",
        ),
        (
            pb::CreateVolumeTypeRequest {
                name: "t".into(),
                extra_specs: entry("k", "<is>\0True"),
                ..Default::default()
            }
            .into(),
            r#"extra_specs["k"]"#,
        ),
        (
            pb::GetVolumeTypeRequest {
                id_or_name: "gold\0".into(),
            }
            .into(),
            "id_or_name",
        ),
        (
            pb::SetServiceEnabledRequest {
                binary: "scoria-volume".into(),
                host: "node\0".into(),
                enabled: true,
                ..Default::default()
            }
            .into(),
            "host",
        ),
        (
            pb::SetServiceEnabledRequest {
                binary: "scoria-volume".into(),
                host: "node".into(),
                enabled: false,
                reason: "maintenance\0".into(),
            }
            .into(),
            "reason",
        ),
        (
            pb::ResetVolumeStatusRequest {
                volume_id: "\0".into(),
                status: pb::VolumeStatus::Available as i32,
            }
            .into(),
            "volume_id",
        ),
        (
            pb::ListServicesRequest {
                binary: "scoria\0".into(),
            }
            .into(),
            "binary",
        ),
        (
            pb::UpdateQuotaRequest {
                project_id: "p\0".into(),
                limits: [("volumes".to_owned(), 1)].into(),
            }
            .into(),
            "project_id",
        ),
        (
            pb::GetQuotaRequest {
                project_id: "p\u{1}".into(),
            }
            .into(),
            "project_id",
        ),
    ]
}

/// The answer of every bad request: (method, code, field, message).
async fn answers(kind: DbKind) -> Vec<(String, Code, String, String)> {
    let stack = Stack::start(kind).await;
    let admin = stack.as_admin("p1");
    let before = counts(&stack).await;
    let mut out = Vec::new();
    for (call, expected) in bad_requests() {
        let status = call
            .send(&admin)
            .await
            .expect_err(&format!("{kind:?}: {call:?} must be refused"));
        let named = field(&status);
        assert_eq!(named, expected, "{kind:?} {}: {status:?}", call.method());
        out.push((
            call.method().to_owned(),
            status.code(),
            named,
            status.message().to_owned(),
        ));
    }
    assert_eq!(counts(&stack).await, before, "{kind:?}: a refusal wrote");
    let api_log = std::fs::read_to_string(stack.log_path("scoria-api")).unwrap_or_default();
    assert!(!api_log.contains("internal error"), "{kind:?}:\n{api_log}");
    out
}

#[tokio::test]
async fn control_characters_are_refused_alike_on_sqlite_and_postgres() {
    let (sqlite, postgres) = tokio::join!(answers(DbKind::Sqlite), answers(DbKind::Postgres));
    assert_eq!(sqlite.len(), bad_requests().len());
    assert_eq!(sqlite, postgres, "SQLite and PostgreSQL answer differently");
}

/// Text the rules allow, stored and read back byte for byte.
async fn stored(kind: DbKind) -> (String, String, Vec<(String, String)>) {
    let stack = Stack::start(kind).await;
    let request = pb::CreateVolumeRequest {
        size_gib: 1,
        name: "名前 ünïcödé 🚀".into(),
        description: "line one\r\n\tline two".into(),
        metadata: [("ключ".to_owned(), "значение ✓".to_owned())].into(),
        ..Default::default()
    };
    let created = stack
        .volumes("p1")
        .create_volume(request.clone())
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e:?}\n{}", stack.logs()))
        .into_inner();
    let got = stack
        .get_volume("p1", &created.id)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
    assert_eq!(got.name, request.name, "{kind:?}");
    assert_eq!(got.description, request.description, "{kind:?}");
    assert_eq!(got.metadata, request.metadata, "{kind:?}");
    (
        got.name,
        got.description,
        got.metadata.into_iter().collect(),
    )
}

#[tokio::test]
async fn allowed_text_is_stored_alike_on_sqlite_and_postgres() {
    let (sqlite, postgres) = tokio::join!(stored(DbKind::Sqlite), stored(DbKind::Postgres));
    assert_eq!(sqlite, postgres);
}
