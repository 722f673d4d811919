//! The S3 backup target against a real S3-protocol server (moto's, started by
//! the test on a free port): the checks the directory target passes (chunks
//! and manifests stored, read, listed and removed; backups and restores byte
//! for byte; incremental and shared chunks; delete; corrupt and missing
//! chunks), and what a missing bucket or a bad setting says.

use scoria_tests::fixtures::s3::{ACCESS_KEY_ID, REGION, S3Server, SECRET_ACCESS_KEY};
use scoria_volume::backup::{BackupError, TargetSettings, digest, open_target, testkit};

fn settings(endpoint: &str, url: &str) -> TargetSettings {
    TargetSettings {
        url: url.to_owned(),
        s3_endpoint: Some(endpoint.to_owned()),
        s3_region: Some(REGION.to_owned()),
        s3_access_key_id: Some(ACCESS_KEY_ID.to_owned()),
        s3_secret_access_key: Some(SECRET_ACCESS_KEY.to_owned()),
        s3_allow_http: true,
    }
}

fn server() -> S3Server {
    S3Server::start().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_s3_target_passes_the_target_checks() {
    let server = server();
    server.create_bucket("scoria-backups").unwrap();
    let url = "s3://scoria-backups/deployment/one";
    let target = open_target(&settings(&server.endpoint(), url)).unwrap();
    assert_eq!(target.describe(), url);
    testkit::conformance(target.clone()).await;

    // Another prefix of the bucket is another repository.
    let other = open_target(&settings(
        &server.endpoint(),
        "s3://scoria-backups/deployment/two",
    ))
    .unwrap();
    let name = digest(b"prefix");
    target.put_chunk(&name, "x".into()).await.unwrap();
    assert!(!other.has_chunk(&name).await.unwrap());
    assert!(other.list_chunks().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_bucket_fails_naming_the_target_and_the_object() {
    let server = server();
    let target = open_target(&settings(&server.endpoint(), "s3://no-such-bucket/p")).unwrap();
    let name = digest(b"missing bucket");
    let err = target.put_chunk(&name, "x".into()).await.unwrap_err();
    assert!(matches!(err, BackupError::Target { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("s3://no-such-bucket/p") && message.contains(&name),
        "{message}"
    );
}

#[test]
fn bad_s3_settings_name_the_setting() {
    // Nothing is sent: no server needed.
    let endpoint = "http://127.0.0.1:1";
    let cases = [
        (
            TargetSettings {
                s3_allow_http: false,
                ..settings(endpoint, "s3://bucket/p")
            },
            "backup.s3_endpoint",
        ),
        (
            TargetSettings {
                s3_secret_access_key: None,
                ..settings(endpoint, "s3://bucket/p")
            },
            "backup.s3_access_key_id",
        ),
        (settings(endpoint, "s3://Bad_Bucket/p"), "backup.target"),
        (settings(endpoint, "s3://bucket/../p"), "backup.target"),
    ];
    for (settings, setting) in cases {
        let err = open_target(&settings)
            .err()
            .unwrap_or_else(|| panic!("{settings:?} accepted"));
        assert!(
            matches!(&err, BackupError::Settings { setting: s, .. } if *s == setting),
            "{settings:?}: {err}"
        );
    }
}
