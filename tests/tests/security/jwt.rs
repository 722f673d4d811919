//! `jwt` auth mode through the real API: tokens signed by keys the test makes,
//! verified against a JWKS served over https (and found by OIDC discovery),
//! every kind of bad token refused as UNAUTHENTICATED saying why, and a key
//! rotated in at the issuer picked up on its first use.

use std::time::Duration;

use scoria_proto::v1::{self as pb, volume_service_client::VolumeServiceClient};
use scoria_tests::{
    jwt::{IdentityProvider, SigningKey, hmac, now, tampered, unsigned},
    stack::{DbKind, Stack, binary},
};
use serde_json::{Value, json};
use tonic::{
    Code, Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

const AUDIENCE: &str = "scoria";

#[derive(Clone)]
struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn volumes(
    stack: &Stack,
    token: Option<&str>,
) -> VolumeServiceClient<InterceptedService<Channel, Bearer>> {
    let value = token.map(|t| format!("Bearer {t}").parse().expect("ASCII token"));
    VolumeServiceClient::with_interceptor(stack.channel(), Bearer(value))
}

fn claims(issuer: &str, project: &str, roles: &[&str]) -> Value {
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "alice",
        "project_id": project,
        "roles": roles,
        "iat": now(),
        "exp": now() + 600,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

async fn list(stack: &Stack, token: Option<&str>) -> Result<Vec<pb::Volume>, Status> {
    volumes(stack, token)
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .map(|r| r.into_inner().volumes)
}

fn jwt_env<'a>(idp: &'a IdentityProvider, source: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SCORIA_AUTH_MODE", "jwt"),
        source,
        ("SCORIA_AUTH_AUDIENCE", AUDIENCE),
        (
            "SCORIA_AUTH_CA_FILE",
            idp.ca_file.to_str().expect("utf-8 path"),
        ),
        ("SCORIA_AUTH_LEEWAY_SECS", "5"),
        ("SCORIA_AUTH_JWKS_MIN_REFRESH_SECS", "1"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_verified_against_the_jwks_url_and_bad_ones_refused() {
    let (rsa, ec, ed) = (
        SigningKey::rsa("k-rsa"),
        SigningKey::ec("k-ec"),
        SigningKey::ed("k-ed"),
    );
    let idp = IdentityProvider::start(&[&rsa, &ec, &ed]).await;
    let url = idp.jwks_url();
    let mut env = jwt_env(&idp, ("SCORIA_AUTH_JWKS", &url));
    env.push(("SCORIA_AUTH_ISSUER", &idp.issuer));
    let stack = Stack::start_with(DbKind::Sqlite, &env).await;
    let issuer = idp.issuer.clone();

    // Good tokens of each algorithm act as their project, with their roles.
    let member = rsa.sign(&claims(&issuer, "p1", &["member"]));
    let created = volumes(&stack, Some(&member))
        .create_volume(pb::CreateVolumeRequest {
            name: "jwt".into(),
            size_gib: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("a member's RS256 token creates: {e:?}\n{}", stack.logs()))
        .into_inner();
    assert_eq!(created.project_id, "p1");
    for key in [&ec, &ed] {
        let token = key.sign(&claims(&issuer, "p1", &["reader"]));
        let seen = list(&stack, Some(&token))
            .await
            .unwrap_or_else(|e| panic!("{:?} token lists: {e:?}", key.alg));
        assert_eq!(seen.len(), 1, "{:?}", key.alg);
    }
    let reader = ec.sign(&claims(&issuer, "p1", &["reader"]));
    let refused = volumes(&stack, Some(&reader))
        .create_volume(pb::CreateVolumeRequest {
            size_gib: 1,
            ..Default::default()
        })
        .await
        .expect_err("readers may not create");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let stranger = ed.sign(&claims(&issuer, "p2", &["member"]));
    assert!(
        list(&stack, Some(&stranger))
            .await
            .expect("p2 lists")
            .is_empty()
    );

    // Every bad token is UNAUTHENTICATED, saying why, never echoing it.
    let good = claims(&issuer, "p1", &["admin"]);
    let unknown = SigningKey::ec("k-unknown");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            rsa.sign(&with(good.clone(), "exp", json!(now() - 120))),
            "expired",
        ),
        (
            "future nbf",
            rsa.sign(&with(good.clone(), "nbf", json!(now() + 600))),
            "not valid yet",
        ),
        (
            "wrong iss",
            ec.sign(&with(good.clone(), "iss", json!("https://evil.example"))),
            "wrong issuer",
        ),
        (
            "wrong aud",
            ec.sign(&with(good.clone(), "aud", json!("other"))),
            "wrong audience",
        ),
        ("unknown kid", unknown.sign(&good), "unknown signing key"),
        (
            "tampered",
            tampered(&rsa.sign(&claims(&issuer, "p1", &["reader"])), &good),
            "bad signature",
        ),
        ("alg none", unsigned(&good), "alg none"),
        ("HMAC", hmac(&good, b"a shared secret"), "HMAC"),
        (
            "no exp",
            ed.sign(&with(good.clone(), "exp", Value::Null)),
            "exp",
        ),
        (
            "no project",
            ed.sign(&with(good.clone(), "project_id", Value::Null)),
            "project_id",
        ),
        ("garbage", "not-a-jwt".into(), "malformed"),
    ];
    for (what, token, says) in &cases {
        let err = list(&stack, Some(token)).await.expect_err(what);
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        assert!(
            err.message().contains(says),
            "{what}: {:?} does not say {says:?}",
            err.message()
        );
        assert!(
            !err.message().contains(token.as_str()),
            "{what}: the token is echoed"
        );
    }
    let err = list(&stack, None).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("Bearer"), "{}", err.message());

    // A key rotated in at the issuer works at its first use (an unknown kid
    // fetches the JWKS again), and a flood of unknown kids does not hammer it.
    let rotated = SigningKey::ed("k-rotated");
    idp.publish(&[&rsa, &ec, &ed, &rotated]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token = rotated.sign(&claims(&issuer, "p1", &["member"]));
    assert_eq!(
        list(&stack, Some(&token))
            .await
            .expect("the rotated key verifies")
            .len(),
        1
    );
    let before = idp.fetches();
    let flood = unknown.sign(&good);
    for _ in 0..30 {
        let err = list(&stack, Some(&flood)).await.expect_err("unknown kid");
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let fetched = idp.fetches() - before;
    assert!(
        fetched <= 2,
        "30 unknown kids in well under 2 s fetched the JWKS {fetched} times"
    );

    // A key the issuer dropped stops working once the JWKS is fetched again.
    idp.publish(&[&ec, &ed, &rotated]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = list(&stack, Some(&flood)).await; // an unknown kid: fetch again
    let err = list(&stack, Some(&member))
        .await
        .expect_err("the RSA key is gone");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("unknown signing key"),
        "{}",
        err.message()
    );

    // No token reaches the logs.
    let logs = std::fs::read_to_string(stack.log_path("scoria-api")).expect("api log");
    for (what, token, _) in &cases {
        if token.len() > 20 {
            assert!(
                !logs.contains(token.as_str()),
                "{what}: the token is logged"
            );
        }
    }
    assert!(!logs.contains(&member), "a good token is logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jwks_is_found_by_oidc_discovery() {
    let key = SigningKey::ec("k1");
    let idp = IdentityProvider::start(&[&key]).await;
    let env = jwt_env(&idp, ("SCORIA_AUTH_OIDC_ISSUER", &idp.issuer));
    let stack = Stack::start_with(DbKind::Sqlite, &env).await;
    // The issuer checked is the discovered one.
    let good = key.sign(&claims(&idp.issuer, "p1", &["reader"]));
    list(&stack, Some(&good))
        .await
        .expect("a token of the OIDC issuer");
    let other = key.sign(&claims("https://other.example", "p1", &["reader"]));
    let err = list(&stack, Some(&other))
        .await
        .expect_err("another issuer");
    assert!(err.message().contains("wrong issuer"), "{}", err.message());
}

#[tokio::test]
async fn bad_jwt_settings_stop_the_api_naming_the_variable() {
    let key = SigningKey::ec("k1");
    let idp = IdentityProvider::start(&[&key]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let jwks = idp.jwks_url();
    let ca = idp.ca_file.to_str().expect("utf-8").to_owned();
    let unreachable = "https://127.0.0.1:1/jwks.json".to_owned();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("SCORIA_AUTH_JWKS", &jwks), ("SCORIA_AUTH_ISSUER", "x")],
            "SCORIA_AUTH_AUDIENCE",
        ),
        (
            vec![("SCORIA_AUTH_AUDIENCE", "a"), ("SCORIA_AUTH_ISSUER", "x")],
            "SCORIA_AUTH_JWKS",
        ),
        (
            vec![
                ("SCORIA_AUTH_JWKS", &unreachable),
                ("SCORIA_AUTH_ISSUER", "x"),
                ("SCORIA_AUTH_AUDIENCE", "a"),
            ],
            "SCORIA_AUTH_JWKS",
        ),
        (
            // The server's certificate is not from a CA the API trusts.
            vec![
                ("SCORIA_AUTH_JWKS", &jwks),
                ("SCORIA_AUTH_ISSUER", "x"),
                ("SCORIA_AUTH_AUDIENCE", "a"),
                ("SCORIA_AUTH_CA_FILE", ""),
            ],
            "SCORIA_AUTH_JWKS",
        ),
        (
            vec![
                ("SCORIA_AUTH_JWKS", "http://127.0.0.1/jwks.json"),
                ("SCORIA_AUTH_ISSUER", "x"),
                ("SCORIA_AUTH_AUDIENCE", "a"),
            ],
            "https://",
        ),
    ];
    for (env, named) in cases {
        let mut command = tokio::process::Command::new(binary("scoria-api"));
        command
            .env("SCORIA_AUTH_MODE", "jwt")
            .env("SCORIA_AUTH_CA_FILE", &ca)
            .env("SCORIA_API_LISTEN", "127.0.0.1:0")
            .env(
                "SCORIA_DATABASE_URL",
                format!("sqlite://{}/scoria.db", dir.path().display()),
            )
            .env("SCORIA_DATA_DIR", dir.path())
            .kill_on_drop(true);
        for (k, v) in &env {
            if v.is_empty() {
                command.env_remove(k);
            } else {
                command.env(k, v);
            }
        }
        let out = tokio::time::timeout(Duration::from_secs(40), command.output())
            .await
            .unwrap_or_else(|_| panic!("scoria-api must stop on {env:?}"))
            .expect("run scoria-api");
        assert!(!out.status.success(), "scoria-api started with {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(named),
            "{env:?}: {named:?} not in: {stderr}"
        );
    }
}
