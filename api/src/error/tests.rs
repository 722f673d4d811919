//! Tests of [`super`].
use scoria_common::status::{DOMAIN, reason_of};
use tonic_types::StatusExt;

use super::*;

#[test]
fn invalid_field_names_the_field_in_details() {
    let status = ApiError::invalid("size_gib", "must be at least 1").into_status();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("size_gib"),
        "{}",
        status.message()
    );
    let bad = status
        .get_details_bad_request()
        .expect("bad request details");
    assert_eq!(bad.field_violations.len(), 1);
    assert_eq!(bad.field_violations[0].field, "size_gib");
    assert_eq!(bad.field_violations[0].description, "must be at least 1");
    let info = status.get_details_error_info().expect("error info");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("INVALID_FIELD", DOMAIN)
    );
}

fn wrong_status() -> ApiError {
    ApiError::WrongStatus {
        kind: "volume",
        id: "v".into(),
        status: "creating".into(),
        detail: ": wait".into(),
    }
}

#[test]
fn codes_and_reasons() {
    use Reason as R;
    let remote = status::error(Code::ResourceExhausted, R::Exhausted, "no free export port");
    let cases = [
        (
            ApiError::volume_not_found("v1"),
            Code::NotFound,
            R::NotFound,
        ),
        (
            ApiError::invalid("page_token", "bad"),
            Code::InvalidArgument,
            R::InvalidPageToken,
        ),
        (
            ApiError::RequestIdReused {
                request_id: "r".into(),
                volume_id: "v".into(),
            },
            Code::AlreadyExists,
            R::RequestIdReused,
        ),
        (
            ApiError::AlreadyExists {
                kind: "volume_type",
                name: "gold".into(),
            },
            Code::AlreadyExists,
            R::AlreadyExists,
        ),
        (wrong_status(), Code::FailedPrecondition, R::WrongStatus),
        (
            ApiError::VolumeInUse {
                id: "v".into(),
                status: "in-use".into(),
                detail: String::new(),
            },
            Code::FailedPrecondition,
            R::VolumeInUse,
        ),
        (
            ApiError::NoBackend {
                kind: "volume",
                id: "v".into(),
            },
            Code::FailedPrecondition,
            R::WrongStatus,
        ),
        (
            ApiError::HasSnapshots {
                id: "v".into(),
                snapshots: vec!["s".into()],
                then: "delete them first",
            },
            Code::FailedPrecondition,
            R::HasSnapshots,
        ),
        (
            ApiError::HasAttachments {
                id: "v".into(),
                attachment_id: "a".into(),
                status: "attached".into(),
            },
            Code::FailedPrecondition,
            R::HasAttachments,
        ),
        (
            ApiError::SnapshotInUse {
                id: "s".into(),
                volumes: vec!["v".into()],
            },
            Code::FailedPrecondition,
            R::WrongStatus,
        ),
        (
            ApiError::NotMultiattach {
                id: "v".into(),
                attachments: vec!["a".into()],
                spec: "multiattach",
            },
            Code::FailedPrecondition,
            R::NotMultiattach,
        ),
        (
            ApiError::TypeInUse {
                name: "gold".into(),
                volumes: 2,
            },
            Code::FailedPrecondition,
            R::TypeInUse,
        ),
        (
            ApiError::DefaultType {
                name: "default".into(),
            },
            Code::FailedPrecondition,
            R::WrongStatus,
        ),
        (
            ApiError::SourceUnusable {
                kind: "snapshot",
                id: "s".into(),
                why: "is on no backend".into(),
            },
            Code::FailedPrecondition,
            R::SourceUnusable,
        ),
        (
            ApiError::Unimplemented("later"),
            Code::Unimplemented,
            R::Unimplemented,
        ),
        (
            ApiError::Unauthenticated("who".into()),
            Code::Unauthenticated,
            R::Unauthenticated,
        ),
        (
            ApiError::PermissionDenied("no".into()),
            Code::PermissionDenied,
            R::PermissionDenied,
        ),
        (
            ApiError::BrokerDown("down".into()),
            Code::Unavailable,
            R::BrokerUnavailable,
        ),
        (
            ApiError::Bus {
                action: "cast".into(),
                status: Status::unavailable("no route"),
            },
            Code::Unavailable,
            R::ServiceUnavailable,
        ),
        (
            ApiError::Bus {
                action: "cast".into(),
                status: Status::invalid_argument("bad target"),
            },
            Code::Internal,
            R::Internal,
        ),
        (
            ApiError::Call {
                action: "attach".into(),
                status: Status::deadline_exceeded("no reply"),
            },
            Code::DeadlineExceeded,
            R::Timeout,
        ),
        (
            ApiError::Call {
                action: "attach".into(),
                status: Status::unavailable("no server is consuming"),
            },
            Code::Unavailable,
            R::ServiceUnavailable,
        ),
        (
            // The volume service's own reason passes through.
            ApiError::Call {
                action: "attach".into(),
                status: remote,
            },
            Code::ResourceExhausted,
            R::Exhausted,
        ),
        (
            ApiError::Call {
                action: "attach".into(),
                status: Status::internal("qemu-nbd crashed"),
            },
            Code::Internal,
            R::Internal,
        ),
        (
            ApiError::db("get")(DbError::Unavailable(sqlx_pool_timeout())),
            Code::Unavailable,
            R::DatabaseUnavailable,
        ),
        (
            ApiError::db("get")(DbError::Corrupt {
                table: "volumes",
                id: "v".into(),
                reason: "x".into(),
            }),
            Code::Internal,
            R::Internal,
        ),
        (
            ApiError::Internal("oops".into()),
            Code::Internal,
            R::Internal,
        ),
    ];
    for (err, code, reason) in cases {
        let text = err.to_string();
        let status = err.into_status();
        assert_eq!(status.code(), code, "{text}");
        assert_eq!(reason_of(&status), Some(reason), "{text}");
    }
}

#[test]
fn messages_name_the_resource() {
    let status = ApiError::volume_not_found("0b5c").into_status();
    assert_eq!(status.message(), "volume 0b5c not found");
    assert_eq!(wrong_status().to_string(), "volume v is creating: wait");
}

#[test]
fn internal_errors_hide_details() {
    let err = ApiError::db("get volume")(DbError::UnsupportedUrl("mysql://secret".into()));
    let status = err.into_status();
    assert_eq!(status.code(), Code::Internal);
    assert!(!status.message().contains("secret"));
}

fn sqlx_pool_timeout() -> sqlx::Error {
    sqlx::Error::PoolTimedOut
}

#[test]
fn limits_are_resource_exhausted_and_a_rate_limit_says_when_to_retry() {
    let status = ApiError::RateLimited {
        project_id: "p1".into(),
        rate: 500,
        burst: 2000,
        retry_after: Duration::from_millis(2),
    }
    .into_status();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason_of(&status), Some(Reason::RateLimited));
    assert_eq!(
        status.message(),
        "project p1 is over its request rate (500/s, burst 2000): retry in 2 ms"
    );
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(2)));
    let status = ApiError::RequestTooLarge {
        bytes: 10,
        limit: 5,
    }
    .into_status();
    assert_eq!(
        (status.code(), reason_of(&status)),
        (Code::ResourceExhausted, Some(Reason::RequestTooLarge))
    );
    let status = ApiError::MetadataTooLarge {
        bytes: 10,
        limit: 5,
    }
    .into_status();
    assert_eq!(
        (status.code(), reason_of(&status)),
        (Code::ResourceExhausted, Some(Reason::MetadataTooLarge))
    );
}

#[test]
fn messages_are_capped_so_a_refusal_always_fits_in_headers() {
    let status = ApiError::invalid("name", "x".repeat(100_000)).into_status();
    assert_eq!(status.message().chars().count(), MAX_MESSAGE_CHARS + 1);
    assert!(status.message().starts_with("invalid name: xxx"));
    assert!(status.message().ends_with('…'));
    let bad = status.get_details_bad_request().expect("bad request");
    assert_eq!(bad.field_violations[0].field, "name");
    assert_eq!(
        bad.field_violations[0].description.chars().count(),
        MAX_MESSAGE_CHARS + 1
    );
}
