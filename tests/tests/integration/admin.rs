//! The admin API through the real processes: services up and enabled, a disabled
//! volume service skipped by the scheduler, status resets.

use std::time::{Duration, Instant};

use scoria_tests::stack::{DbKind, Stack};
use serde_json::{Value, json};

const ADMIN: &str = "scoria.v1.AdminService";
const CREATE: &str = "scoria.v1.VolumeService/CreateVolume";
const GET: &str = "scoria.v1.VolumeService/GetVolume";

/// Creates volumes until one settles in `status` (the scheduler learns about a
/// service change at its next refresh of the services table); its JSON.
async fn create_until(stack: &Stack, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = stack
            .call("p1", CREATE, &json!({"size_gib": 1}))
            .await
            .expect("create");
        let id = v["id"].as_str().expect("id").to_owned();
        let settled = loop {
            let got = stack
                .call("p1", GET, &json!({"id": id}))
                .await
                .expect("get");
            if got["status"] != "VOLUME_STATUS_CREATING" {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if settled["status"] == status {
            return settled;
        }
        assert!(
            Instant::now() < deadline,
            "no volume reached {status}: last {settled}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn services_can_be_listed_disabled_and_volumes_reset() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let member = stack
        .call("p1", &format!("{ADMIN}/ListServices"), &json!({}))
        .await;
    assert_eq!(member.expect_err("admins only").code, "PermissionDenied");

    let listed = stack
        .call_admin("p1", &format!("{ADMIN}/ListServices"), &json!({}))
        .await
        .expect("list");
    let services = listed["services"].as_array().expect("services").clone();
    let volume = services
        .iter()
        .find(|s| s["binary"] == "scoria-volume")
        .unwrap_or_else(|| panic!("no volume service in {listed}"));
    assert_eq!(volume["host"], stack.volume_host.as_str());
    assert_eq!(volume["state"], "SERVICE_STATE_UP", "{volume}");
    assert_eq!(volume["enabled"], true, "{volume}");
    assert!(
        services
            .iter()
            .any(|s| s["binary"] == "scoria-scheduler" && s["state"] == "SERVICE_STATE_UP")
    );

    let set = format!("{ADMIN}/SetServiceEnabled");
    let no_reason = stack
        .call_admin(
            "p1",
            &set,
            &json!({"binary": "scoria-volume", "host": stack.volume_host, "enabled": false}),
        )
        .await
        .expect_err("a reason is needed");
    assert_eq!(no_reason.code, "InvalidArgument");
    assert!(no_reason.message.contains("reason"), "{no_reason:?}");
    let unknown = stack
        .call_admin(
            "p1",
            &set,
            &json!({"binary": "scoria-volume", "host": "nowhere@x", "enabled": true}),
        )
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code, "NotFound");

    let disabled = stack
        .call_admin(
            "p1",
            &set,
            &json!({"binary": "scoria-volume", "host": stack.volume_host, "enabled": false, "reason": "maintenance"}),
        )
        .await
        .expect("disable");
    assert_eq!(disabled["disabledReason"], "maintenance");
    let failed = create_until(&stack, "VOLUME_STATUS_ERROR").await;
    assert!(
        failed["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("No valid backend"),
        "{failed}"
    );

    stack
        .call_admin(
            "p1",
            &set,
            &json!({"binary": "scoria-volume", "host": stack.volume_host, "enabled": true}),
        )
        .await
        .expect("enable");
    let ok = create_until(&stack, "VOLUME_STATUS_AVAILABLE").await;

    // Reset: an admin override, also of another project's volume.
    let reset = format!("{ADMIN}/ResetVolumeStatus");
    let bad = stack
        .call_admin(
            "other",
            &reset,
            &json!({"volume_id": ok["id"], "status": "VOLUME_STATUS_UNSPECIFIED"}),
        )
        .await
        .expect_err("unspecified");
    assert_eq!(bad.code, "InvalidArgument");
    assert!(bad.message.contains("status"), "{bad:?}");
    let errored = stack
        .call_admin(
            "other",
            &reset,
            &json!({"volume_id": ok["id"], "status": "VOLUME_STATUS_ERROR"}),
        )
        .await
        .expect("reset");
    assert_eq!(errored["status"], "VOLUME_STATUS_ERROR");
    let seen = stack
        .call("p1", GET, &json!({"id": ok["id"]}))
        .await
        .expect("get");
    assert_eq!(seen["status"], "VOLUME_STATUS_ERROR");
    stack
        .call(
            "p1",
            "scoria.v1.VolumeService/DeleteVolume",
            &json!({"id": ok["id"]}),
        )
        .await
        .expect("an error volume can be deleted");
}
