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

/// The stack's pool as ListPools shows it (`host` filter `host`), if listed.
async fn listed_pool(stack: &Stack, host: &str) -> Option<Value> {
    let listed = stack
        .call_admin("p1", &format!("{ADMIN}/ListPools"), &json!({"host": host}))
        .await
        .expect("list pools");
    let pools = listed["pools"].as_array().cloned().unwrap_or_default();
    assert!(pools.len() <= 1, "one volume service, one pool: {listed}");
    pools.into_iter().next()
}

/// `allocatedCapacityGib` of a pool (proto3 JSON leaves out a zero).
fn allocated(pool: &Value) -> f64 {
    pool["allocatedCapacityGib"].as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn pools_show_the_backend_capacity_and_what_volumes_take() {
    // Reports every second, so the test sees one after its creates.
    let stack = Stack::start_with(
        DbKind::Sqlite,
        &[("SCORIA_VOLUME_REPORT_INTERVAL_SECS", "1")],
    )
    .await;
    let list = format!("{ADMIN}/ListPools");

    let member = stack
        .call("p1", &list, &json!({}))
        .await
        .expect_err("admins only");
    assert_eq!(member.code, "PermissionDenied", "{member:?}");
    for bad in [
        "nobackend",
        "n1@file#pool",
        &format!("{}@file", "h".repeat(300)),
    ] {
        let err = stack
            .call_admin("p1", &list, &json!({"host": bad}))
            .await
            .expect_err("bad host");
        assert_eq!(err.code, "InvalidArgument", "{bad}: {err:?}");
        assert!(err.message.contains("host"), "{err:?}");
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    let before = loop {
        if let Some(pool) = listed_pool(&stack, &stack.volume_host).await {
            break pool;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler never listed the volume service's pool\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let backend = &stack.backend;
    assert_eq!(
        before["name"],
        format!("{}#{backend}", stack.volume_host),
        "{before}"
    );
    assert_eq!(before["host"], stack.volume_host.as_str());
    assert_eq!(before["backendName"], backend.as_str());
    assert_eq!(before["driver"], "file");
    assert_eq!(before["availabilityZone"], "default");
    assert_eq!(
        before["totalCapacityGib"], 1000.0,
        "SCORIA_VOLUME_CAPACITY_GIB"
    );
    assert_eq!(before["thinProvisioningSupport"], true, "{before}");
    assert_eq!(
        before["capabilities"]["storage_protocol"], "nbd",
        "{before}"
    );
    assert!(before["updatedAt"].is_string(), "{before}");
    assert_eq!(
        listed_pool(&stack, "").await.map(|p| p["name"].clone()),
        Some(before["name"].clone()),
        "no filter lists it too"
    );
    assert!(
        listed_pool(&stack, "nobody@file").await.is_none(),
        "another host lists nothing"
    );

    let base = allocated(&before);
    let mut ids = Vec::new();
    for size in [3, 4] {
        let v = stack
            .call("p1", CREATE, &json!({"size_gib": size}))
            .await
            .expect("create");
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        stack.wait_status("p1", id, "VOLUME_STATUS_AVAILABLE").await;
    }
    // The report in flight while the volumes were made may still predate them,
    // so the one seen now is only the reference for "a later report".
    let seen = listed_pool(&stack, &stack.volume_host)
        .await
        .expect("still listed");

    // After the next report (not only the scheduler's virtual consumption):
    // the backend itself counts 7 GiB more.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let pool = listed_pool(&stack, &stack.volume_host)
            .await
            .expect("still listed");
        // A different `updatedAt` is a newer report (older ones are ignored).
        if pool["updatedAt"] != seen["updatedAt"] && allocated(&pool) == base + 7.0 {
            break pool;
        }
        assert!(
            Instant::now() < deadline,
            "allocated did not reach {} after a report: {pool}\n{}",
            base + 7.0,
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(after["totalCapacityGib"], 1000.0);
}
