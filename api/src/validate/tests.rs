//! Tests of [`super`].
use prost_types::FieldMask;

use super::*;

const ID: &str = "0b5c8f3e-7d6a-4c1e-9a53-2f1e0d9c8b7a";

fn create() -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        size_gib: 1,
        ..Default::default()
    }
}

fn field_of(err: ApiError) -> String {
    match err {
        ApiError::InvalidField { field, .. } => field.into_owned(),
        other => panic!("not a field error: {other}"),
    }
}

fn long() -> String {
    "é".repeat(MAX_TEXT_CHARS + 1)
}

#[test]
fn minimal_create_is_valid() {
    let valid = create_volume(&create(), 10).expect("valid");
    assert_eq!(
        valid,
        ValidCreate {
            source: None,
            request_id: None
        }
    );
}

#[test]
fn size_must_be_in_range() {
    for size in [0, 11] {
        let req = pb::CreateVolumeRequest {
            size_gib: size,
            ..create()
        };
        assert_eq!(
            field_of(create_volume(&req, 10).expect_err("refused")),
            "size_gib"
        );
    }
    let req = pb::CreateVolumeRequest {
        size_gib: 10,
        ..create()
    };
    create_volume(&req, 10).expect("max is allowed");
}

#[test]
fn text_fields_are_limited_in_characters() {
    // 255 two-byte characters are fine: the limit counts characters, not bytes.
    let ok = "é".repeat(MAX_TEXT_CHARS);
    let req = pb::CreateVolumeRequest {
        name: ok,
        ..create()
    };
    create_volume(&req, 10).expect("255 characters");
    type Set = fn(&mut pb::CreateVolumeRequest);
    let cases: [(&str, Set); 5] = [
        ("name", |r| r.name = long()),
        ("description", |r| r.description = long()),
        ("volume_type", |r| r.volume_type = long()),
        ("availability_zone", |r| r.availability_zone = long()),
        ("request_id", |r| r.request_id = long()),
    ];
    for (field, set) in cases {
        let mut req = create();
        set(&mut req);
        assert_eq!(field_of(create_volume(&req, 10).expect_err(field)), field);
    }
}

#[test]
fn metadata_limits() {
    let too_many: BTreeMap<_, _> = (0..=MAX_METADATA_ENTRIES)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    let empty_key = BTreeMap::from([(String::new(), "v".to_owned())]);
    let long_key = BTreeMap::from([(long(), "v".to_owned())]);
    let long_value = BTreeMap::from([("k".to_owned(), long())]);
    let long_key_field = format!("metadata[{:?}…]", "é".repeat(64));
    for (metadata, field) in [
        (too_many, "metadata"),
        (empty_key, r#"metadata[""]"#),
        (long_key, long_key_field.as_str()),
        (long_value, r#"metadata["k"]"#),
    ] {
        let req = pb::CreateVolumeRequest {
            metadata,
            ..create()
        };
        assert_eq!(
            field_of(create_volume(&req, 10).expect_err("refused")),
            field
        );
    }
    let full: BTreeMap<_, _> = (0..MAX_METADATA_ENTRIES)
        .map(|i| (format!("k{i}"), "v".into()))
        .collect();
    create_volume(
        &pb::CreateVolumeRequest {
            metadata: full,
            ..create()
        },
        10,
    )
    .expect("128 entries");
}

#[test]
fn sources_must_be_uuids_and_are_canonicalised() {
    use pb::create_volume_request::Source;
    let req = pb::CreateVolumeRequest {
        source: Some(Source::SnapshotId("nope".into())),
        ..create()
    };
    assert_eq!(
        field_of(create_volume(&req, 10).expect_err("bad")),
        "snapshot_id"
    );
    let req = pb::CreateVolumeRequest {
        source: Some(Source::SourceVolumeId("nope".into())),
        ..create()
    };
    assert_eq!(
        field_of(create_volume(&req, 10).expect_err("bad")),
        "source_volume_id"
    );
    let req = pb::CreateVolumeRequest {
        source: Some(Source::SnapshotId(ID.to_uppercase())),
        ..create()
    };
    let valid = create_volume(&req, 10).expect("valid");
    assert_eq!(valid.source, Some(VolumeSource::Snapshot(ID.to_owned())));
    let req = pb::CreateVolumeRequest {
        source: Some(Source::SourceVolumeId(String::new())),
        ..create()
    };
    assert_eq!(create_volume(&req, 10).expect("empty is none").source, None);
}

#[test]
fn request_id_is_kept() {
    let req = pb::CreateVolumeRequest {
        request_id: "r-1".into(),
        ..create()
    };
    assert_eq!(
        create_volume(&req, 10)
            .expect("valid")
            .request_id
            .as_deref(),
        Some("r-1")
    );
}

/// Defect 11: AIP-158 clamps a page size above the maximum instead of
/// refusing it; a negative one stays INVALID_ARGUMENT.
#[test]
fn page_size_above_the_maximum_is_clamped() {
    assert_eq!(page_size(1001).expect("clamped"), MAX_PAGE_SIZE);
    assert_eq!(page_size(i32::MAX).expect("clamped"), MAX_PAGE_SIZE);
    assert_eq!(
        field_of(page_size(i32::MIN).expect_err("negative")),
        "page_size"
    );
}

#[test]
fn page_size_and_status() {
    assert_eq!(page_size(0).expect("default"), DEFAULT_PAGE_SIZE);
    assert_eq!(page_size(1000).expect("max"), 1000);
    assert_eq!(field_of(page_size(-1).expect_err("refused")), "page_size");
    assert_eq!(status_filter(0).expect("unspecified"), None);
    assert_eq!(
        status_filter(2).expect("available"),
        Some(VolumeStatus::Available)
    );
    assert_eq!(field_of(status_filter(99).expect_err("unknown")), "status");
    assert_eq!(snapshot_status_filter(0).expect("unspecified"), None);
    assert_eq!(
        snapshot_status_filter(5).expect("error_deleting"),
        Some(SnapshotStatus::ErrorDeleting)
    );
    assert_eq!(
        field_of(snapshot_status_filter(99).expect_err("unknown")),
        "status"
    );
}

fn update(paths: &[&str]) -> pb::UpdateVolumeRequest {
    pb::UpdateVolumeRequest {
        id: ID.into(),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        name: "n".into(),
        description: String::new(),
        metadata: BTreeMap::from([("k".into(), "v".into())]),
    }
}

#[test]
fn update_mask_selects_fields() {
    let (id, changes) = update_volume(&update(&["description"])).expect("valid");
    assert_eq!(id, ID);
    assert_eq!(changes.name, None);
    assert_eq!(changes.description.as_deref(), Some(""));
    assert_eq!(changes.metadata, None);
    assert_eq!(
        field_of(update_volume(&update(&["size_gib"])).expect_err("unknown")),
        "update_mask"
    );
}

#[test]
fn empty_mask_takes_non_default_fields() {
    let (_, changes) = update_volume(&update(&[])).expect("valid");
    assert_eq!(changes.name.as_deref(), Some("n"));
    assert_eq!(changes.description, None);
    assert_eq!(changes.metadata.map(|m| m.len()), Some(1));
    let no_mask = pb::UpdateVolumeRequest {
        update_mask: None,
        ..update(&[])
    };
    assert_eq!(
        update_volume(&no_mask).expect("valid").1.name.as_deref(),
        Some("n")
    );
}

#[test]
fn update_checks_fields_and_id() {
    let req = pb::UpdateVolumeRequest {
        name: long(),
        ..update(&["name"])
    };
    assert_eq!(field_of(update_volume(&req).expect_err("long")), "name");
    let req = pb::UpdateVolumeRequest {
        description: long(),
        ..update(&["description"])
    };
    assert_eq!(
        field_of(update_volume(&req).expect_err("long")),
        "description"
    );
    let req = pb::UpdateVolumeRequest {
        metadata: BTreeMap::from([(String::new(), String::new())]),
        ..update(&[])
    };
    assert_eq!(
        field_of(update_volume(&req).expect_err("empty key")),
        r#"metadata[""]"#
    );
    let req = pb::UpdateVolumeRequest {
        id: "x".into(),
        ..update(&["name"])
    };
    assert_eq!(field_of(update_volume(&req).expect_err("bad id")), "id");
    // A long name not in the mask is ignored, not refused.
    let req = pb::UpdateVolumeRequest {
        name: long(),
        ..update(&["description"])
    };
    update_volume(&req).expect("name not updated");
}

#[test]
fn every_text_field_refuses_control_characters() {
    type Set = fn(&mut pb::CreateVolumeRequest);
    let cases: [(&str, Set); 6] = [
        ("name", |r| r.name = "a\0".into()),
        ("description", |r| r.description = "a\u{7}".into()),
        ("volume_type", |r| r.volume_type = "a\n".into()),
        ("availability_zone", |r| {
            r.availability_zone = "a\u{9b}".into()
        }),
        ("request_id", |r| r.request_id = "a\r".into()),
        (r#"metadata["k"]"#, |r| {
            r.metadata = [("k".to_owned(), "\0".to_owned())].into();
        }),
    ];
    for (field, set) in cases {
        let mut req = create();
        set(&mut req);
        assert_eq!(field_of(create_volume(&req, 10).expect_err(field)), field);
    }
    let req = pb::CreateVolumeRequest {
        description: "tabs\tand\r\nline breaks".into(),
        ..create()
    };
    create_volume(&req, 10).expect("a description may hold tabs and line breaks");
    let attach = pb::CreateAttachmentRequest {
        volume_id: ID.into(),
        connector: Some(pb::Connector {
            host: "h\0".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        field_of(create_attachment(&attach).expect_err("nul host")),
        "connector.host"
    );
}
