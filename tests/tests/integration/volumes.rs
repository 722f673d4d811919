//! A volume's life through the real processes: grpcurl and a generated Python
//! client against scoria-api, scoria-scheduler and scoria-volume, on SQLite and on
//! PostgreSQL, with real files on the `file` backend.

use std::{collections::HashSet, os::unix::fs::MetadataExt, time::Duration};

use scoria_common::{
    RequestContext,
    rpc::{Broker, Priority, RpcClient, Target, notifier::NotificationReader},
};
use scoria_proto::bus::CreateVolume;
use scoria_tests::{
    bus_config,
    stack::{DbKind, Stack, grpcurl},
};
use serde_json::{Value, json};

const CREATE: &str = "scoria.v1.VolumeService/CreateVolume";
const GET: &str = "scoria.v1.VolumeService/GetVolume";
const LIST: &str = "scoria.v1.VolumeService/ListVolumes";
const UPDATE: &str = "scoria.v1.VolumeService/UpdateVolume";
const DELETE: &str = "scoria.v1.VolumeService/DeleteVolume";
const GIB: u64 = 1 << 30;

async fn create(stack: &Stack, project: &str, body: Value) -> Value {
    let created = stack
        .call(project, CREATE, &body)
        .await
        .unwrap_or_else(|e| panic!("create: {e:?}\n{}", stack.logs()));
    assert_eq!(created["status"], "VOLUME_STATUS_CREATING", "{created}");
    created
}

fn id(volume: &Value) -> String {
    volume["id"].as_str().expect("id").to_owned()
}

async fn lifecycle(kind: DbKind) {
    let stack = Stack::start(kind).await;
    let notifications = Broker::connect(
        bus_config(&stack.exchange),
        "reader",
        Duration::from_secs(10),
    )
    .await
    .expect("broker");
    let created = create(
        &stack,
        "p1",
        json!({"name": "data", "size_gib": 3, "metadata": {"tier": "gold"}}),
    )
    .await;
    let id = id(&created);
    assert_eq!(created["projectId"], "p1");
    let available = stack
        .wait_status("p1", &id, "VOLUME_STATUS_AVAILABLE")
        .await;
    assert_eq!(available["host"], stack.volume_host.as_str());
    assert_eq!(available["sizeGib"], "3");

    // A real, sparse file of exactly the size.
    let file = stack.volume_file(&id);
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(meta.len(), 3 * GIB);
    assert!(
        meta.blocks() * 512 < GIB,
        "the file is not sparse: {} blocks",
        meta.blocks()
    );

    let listed = stack.call("p1", LIST, &json!({})).await.expect("list");
    assert_eq!(listed["volumes"][0]["id"], id.as_str());
    let updated = stack
        .call(
            "p1",
            UPDATE,
            &json!({"id": id, "name": "renamed", "updateMask": {"paths": ["name"]}}),
        )
        .await
        .expect("update");
    assert_eq!(updated["name"], "renamed");
    assert_eq!(
        updated["metadata"]["tier"], "gold",
        "metadata outside the mask is kept"
    );

    let deleting = stack
        .call("p1", DELETE, &json!({"id": id}))
        .await
        .expect("delete");
    assert_eq!(deleting["status"], "VOLUME_STATUS_DELETING");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match stack.call("p1", GET, &json!({"id": id})).await {
            Err(e) if e.code == "NotFound" => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "still there: {other:?}\n{}",
                stack.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!file.exists(), "the backing file outlived the volume");

    let mut reader = NotificationReader::open(&notifications, Priority::Info)
        .await
        .expect("reader");
    let mut events = Vec::new();
    while let Some(n) = reader.next(Duration::from_secs(2)).await.expect("read") {
        events.push(n.event_type);
        if events.len() == 4 {
            break;
        }
    }
    assert_eq!(
        events,
        vec![
            "volume.create.start",
            "volume.create.end",
            "volume.delete.start",
            "volume.delete.end"
        ]
    );
    notifications.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_sqlite() {
    lifecycle(DbKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_postgres() {
    lifecycle(DbKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_client_drives_the_lifecycle_on_postgres() {
    let stack = Stack::start(DbKind::Postgres).await;
    let out_dir = stack.dir.path().join("py");
    std::fs::create_dir_all(&out_dir).expect("dir");
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let generated = std::process::Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I", proto_root])
        .arg(format!("--python_out={}", out_dir.display()))
        .arg(format!("--grpc_python_out={}", out_dir.display()))
        .arg("scoria/v1/volume.proto")
        .output()
        .expect("python3 with grpcio-tools is needed (pip install grpcio-tools, or run scripts/setup.sh)");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/lifecycle.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&out_dir)
        .arg(&stack.api)
        .arg("py-project")
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "python client failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        stack.logs()
    );
    for step in [
        "created",
        "available",
        "listed",
        "updated",
        "rejected INVALID_ARGUMENT",
        "deleted",
    ] {
        assert!(stdout.contains(step), "missing step {step:?} in:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_and_health_need_no_proto_files() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let list = tokio::process::Command::new("grpcurl")
        .args(["-plaintext", &stack.api, "list"])
        .output()
        .await
        .expect("grpcurl");
    let services = String::from_utf8_lossy(&list.stdout);
    for service in [
        "scoria.v1.VolumeService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.contains(service),
            "{service} not listed: {services}"
        );
    }
    let describe = tokio::process::Command::new("grpcurl")
        .args(["-plaintext", &stack.api, "describe", "scoria.v1.Volume"])
        .output()
        .await
        .expect("grpcurl");
    let text = String::from_utf8_lossy(&describe.stdout);
    assert!(
        text.contains("size_gib") && text.contains("google.protobuf.Timestamp"),
        "{text}"
    );
    // grpcurl 1.8 speaks only v1alpha: ask the v1 service with its own client.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", stack.api))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut v1 =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = v1
        .server_reflection_info(futures_util::stream::iter([ask]))
        .await
        .expect("reflection v1")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let listed = format!("{:?}", answer.message_response);
    assert!(listed.contains("scoria.v1.VolumeService"), "{listed}");
    let health = grpcurl(
        &stack.api,
        &[],
        "grpc.health.v1.Health/Check",
        r#"{"service":"scoria.v1.VolumeService"}"#,
    )
    .await
    .expect("health");
    assert_eq!(health["status"], "SERVING");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_id_makes_create_idempotent() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let body = json!({"name": "once", "size_gib": 1, "requestId": "req-abc"});
    let first = create(&stack, "p1", body.clone()).await;
    let again = stack.call("p1", CREATE, &body).await.expect("retry");
    assert_eq!(
        again["id"], first["id"],
        "the same key returns the same volume"
    );
    let other_project = create(&stack, "p2", body.clone()).await;
    assert_ne!(other_project["id"], first["id"], "keys are per project");
    let err = stack
        .call(
            "p1",
            CREATE,
            &json!({"name": "different", "size_gib": 1, "requestId": "req-abc"}),
        )
        .await
        .expect_err("same key, different request");
    assert_eq!(err.code, "AlreadyExists", "{err:?}");
    assert!(err.message.contains("req-abc"), "{err:?}");
    let listed = stack.call("p1", LIST, &json!({})).await.expect("list");
    assert_eq!(listed["volumes"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_names_the_field_and_writes_nothing() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let long = "x".repeat(256);
    let many: serde_json::Map<String, Value> =
        (0..129).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (CREATE, json!({"size_gib": 0}), "size_gib"),
        (CREATE, json!({"size_gib": 100000000}), "size_gib"),
        (CREATE, json!({"size_gib": 1, "name": long}), "name"),
        (
            CREATE,
            json!({"size_gib": 1, "description": long}),
            "description",
        ),
        (CREATE, json!({"size_gib": 1, "metadata": many}), "metadata"),
        (
            CREATE,
            json!({"size_gib": 1, "snapshotId": "not-a-uuid"}),
            "snapshot_id",
        ),
        (
            CREATE,
            json!({"size_gib": 1, "sourceVolumeId": "nope"}),
            "source_volume_id",
        ),
        (GET, json!({"id": "not-a-uuid"}), "id"),
        (DELETE, json!({"id": "../../etc"}), "id"),
        (LIST, json!({"pageSize": 5000}), "page_size"),
        (LIST, json!({"pageToken": "garbage!"}), "page_token"),
        (
            UPDATE,
            json!({"id": uuid::Uuid::new_v4().to_string(), "updateMask": {"paths": ["size_gib"]}}),
            "update_mask",
        ),
    ];
    for (method, body, field) in cases {
        let err = stack
            .call("p1", method, &body)
            .await
            .expect_err("must be rejected");
        assert_eq!(err.code, "InvalidArgument", "{method} {body}: {err:?}");
        assert!(
            err.message.contains(field),
            "{method} {body}: message does not name {field}: {err:?}"
        );
    }
    assert_eq!(
        stack.db.count_volumes("p1").await.expect("count"),
        0,
        "a rejected request wrote a row"
    );
    let missing = stack
        .call("p1", GET, &json!({"id": uuid::Uuid::new_v4().to_string()}))
        .await
        .expect_err("404");
    assert_eq!(missing.code, "NotFound");
    let unauthenticated = grpcurl(&stack.api, &[], LIST, "{}")
        .await
        .expect_err("no project header");
    assert_eq!(
        unauthenticated.code, "Unauthenticated",
        "{unauthenticated:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn projects_only_see_their_own_volumes_and_pages_are_opaque() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(id(&create(
            &stack,
            "alice",
            json!({"name": format!("v{i}"), "size_gib": 1}),
        )
        .await));
    }
    let err = stack
        .call("bob", GET, &json!({"id": ids[0]}))
        .await
        .expect_err("foreign volume");
    assert_eq!(
        err.code, "NotFound",
        "another project's volume must look absent: {err:?}"
    );
    let err = stack
        .call("bob", DELETE, &json!({"id": ids[0]}))
        .await
        .expect_err("foreign delete");
    assert_eq!(err.code, "NotFound");
    let bob = stack.call("bob", LIST, &json!({})).await.expect("list");
    assert!(
        bob.get("volumes")
            .is_none_or(|v| v.as_array().is_some_and(Vec::is_empty)),
        "{bob}"
    );

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = stack
            .call("alice", LIST, &json!({"pageSize": 3, "pageToken": token}))
            .await
            .expect("page");
        pages += 1;
        for v in page["volumes"].as_array().expect("volumes") {
            seen.push(id(v));
        }
        token = page["nextPageToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if token.is_empty() {
            break;
        }
        if pages == 1 {
            let foreign = stack
                .call("bob", LIST, &json!({"pageSize": 3, "pageToken": token}))
                .await;
            assert_eq!(foreign.expect_err("foreign token").code, "InvalidArgument");
            let other_filter = stack
                .call(
                    "alice",
                    LIST,
                    &json!({"pageSize": 3, "pageToken": token, "name": "v1"}),
                )
                .await;
            assert_eq!(
                other_filter.expect_err("token of other filters").code,
                "InvalidArgument"
            );
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "pages return every volume once, oldest first");

    let named = stack
        .call("alice", LIST, &json!({"name": "v3"}))
        .await
        .expect("by name");
    assert_eq!(named["volumes"].as_array().map(Vec::len), Some(1));
    for v in &ids {
        stack
            .wait_status("alice", v, "VOLUME_STATUS_AVAILABLE")
            .await;
    }
    let by_status = stack
        .call("alice", LIST, &json!({"status": "VOLUME_STATUS_AVAILABLE"}))
        .await
        .expect("by status");
    assert_eq!(by_status["volumes"].as_array().map(Vec::len), Some(7));
    let creating = stack
        .call("alice", LIST, &json!({"status": "VOLUME_STATUS_CREATING"}))
        .await
        .expect("by status");
    assert!(creating.get("volumes").is_none(), "{creating}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_valid_backend_puts_the_volume_in_error_with_the_reason() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let created = create(
        &stack,
        "p1",
        json!({"size_gib": 1, "availabilityZone": "nowhere"}),
    )
    .await;
    let failed = stack
        .wait_status("p1", &id(&created), "VOLUME_STATUS_ERROR")
        .await;
    let reason = failed["errorMessage"].as_str().unwrap_or_default();
    assert!(reason.contains("No valid backend"), "{failed}");
    let too_big = create(&stack, "p1", json!({"size_gib": 5000})).await;
    let failed = stack
        .wait_status("p1", &id(&too_big), "VOLUME_STATUS_ERROR")
        .await;
    assert!(
        failed["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("No valid backend"),
        "{failed}"
    );
    // An error volume can be deleted; it never reached a backend.
    stack
        .call("p1", DELETE, &json!({"id": id(&created)}))
        .await
        .expect("delete error volume");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_of_a_busy_volume_is_refused() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let created = create(&stack, "p1", json!({"size_gib": 1})).await;
    let id = id(&created);
    stack
        .wait_status("p1", &id, "VOLUME_STATUS_AVAILABLE")
        .await;
    assert!(
        stack
            .db
            .transition_volume(
                &id,
                &[scoria_common::model::VolumeStatus::Available],
                scoria_common::model::VolumeStatus::Extending,
                None,
                None
            )
            .await
            .expect("cas")
    );
    let err = stack
        .call("p1", DELETE, &json!({"id": id}))
        .await
        .expect_err("extending");
    assert_eq!(err.code, "FailedPrecondition", "{err:?}");
    assert!(stack.volume_file(&id).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_create_does_no_harm() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let created = create(&stack, "p1", json!({"size_gib": 1})).await;
    let id = id(&created);
    stack
        .wait_status("p1", &id, "VOLUME_STATUS_AVAILABLE")
        .await;
    let file = stack.volume_file(&id);
    std::fs::write(&file, b"data written by a user").expect("write");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open")
        .set_len(GIB)
        .expect("len");

    let rpc = RpcClient::new(
        Broker::connect(
            bus_config(&stack.exchange),
            "redeliver",
            Duration::from_secs(10),
        )
        .await
        .expect("broker"),
    );
    let again = CreateVolume {
        volume_id: id.clone(),
        size_gib: 1,
        attempt: 1,
        ..Default::default()
    };
    let target =
        Target::topic(scoria_common::ops::volume_topic(&stack.volume_host)).expect("target");
    for _ in 0..3 {
        rpc.cast(
            &RequestContext::internal("test"),
            &target,
            "create_volume",
            &again,
        )
        .await
        .expect("cast");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let volume = stack
        .wait_status("p1", &id, "VOLUME_STATUS_AVAILABLE")
        .await;
    assert_eq!(volume["errorMessage"], Value::Null);
    let content = std::fs::read(&file).expect("read");
    assert!(
        content.starts_with(b"data written by a user"),
        "a redelivered create overwrote the volume"
    );
    rpc.broker().close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_is_unavailable_and_writes_nothing_while_reads_work() {
    // An API whose broker is unreachable: creates fail fast, reads still work.
    let stack = Stack::start(DbKind::Sqlite).await;
    let created = create(&stack, "p1", json!({"size_gib": 1})).await;
    let port = scoria_tests::stack::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(stack.dir.path().join("lonely-api.log")).expect("log");
    let mut api = tokio::process::Command::new(scoria_tests::stack::binary("scoria-api"))
        .env("SCORIA_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("SCORIA_CONTROL_EXCHANGE", &stack.exchange)
        .env("SCORIA_DATABASE_URL", &stack.database_url)
        .env("SCORIA_DATA_DIR", stack.dir.path())
        .env("SCORIA_API_LISTEN", &addr)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn api");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while grpcurl(&addr, &[], "grpc.health.v1.Health/Check", "{}")
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "lonely api never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = stack.db.count_volumes("p1").await.expect("count");
    let err = grpcurl(
        &addr,
        &["-H", "x-project-id: p1"],
        CREATE,
        r#"{"size_gib": 1}"#,
    )
    .await
    .expect_err("no broker");
    assert_eq!(err.code, "Unavailable", "{err:?}");
    assert_eq!(
        stack.db.count_volumes("p1").await.expect("count"),
        before,
        "nothing written"
    );
    let got = grpcurl(
        &addr,
        &["-H", "x-project-id: p1"],
        GET,
        &json!({"id": id(&created)}).to_string(),
    )
    .await;
    assert!(got.is_ok(), "reads work without the broker: {got:?}");
    let _ = api.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_every_service_cleanly() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    let ids: HashSet<String> = {
        let mut ids = HashSet::new();
        for _ in 0..5 {
            ids.insert(id(&create(&stack, "p1", json!({"size_gib": 1})).await));
        }
        ids
    };
    for v in &ids {
        stack.wait_status("p1", v, "VOLUME_STATUS_AVAILABLE").await;
    }
    let codes = stack.terminate().await;
    for (name, code) in codes {
        assert_eq!(
            code,
            Some(0),
            "{name} did not exit 0 on SIGTERM\n{}",
            stack.logs()
        );
    }
}
