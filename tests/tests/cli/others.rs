//! Everything but volumes: where the API is (flags, `clouds.toml`, an address
//! with nothing there), completion and help, quotas, services, types, zones and
//! pools.

use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack, free_port};
use serde_json::{Value, json};
use tonic::Code;

use crate::{binary, clouds_file, command, field, run, scoria, scoria_admin, url};

/// The row of `rows` (a JSON array) whose `key` is `value`.
#[track_caller]
fn row<'a>(rows: &'a Value, key: &str, value: &str) -> &'a Value {
    rows.as_array()
        .and_then(|rows| rows.iter().find(|r| r[key] == value))
        .unwrap_or_else(|| panic!("no row with {key} = {value:?} in {rows:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_found_from_flags_and_clouds_and_named_when_unreachable() {
    let stack = Stack::start(DbKind::Sqlite).await;

    // Nothing listens there: exit 1 naming the address, no debug dump.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let unreachable = scoria(&stack, &["--os-url", &dead, "volume", "list"])
        .await
        .exits(1);
    assert_eq!(unreachable.stdout, "", "{unreachable}");
    assert!(
        unreachable
            .stderr
            .starts_with(&format!("error: cannot reach the Scoria API at {dead}: ")),
        "{unreachable}"
    );
    for needle in ["{", "Error {", "panicked"] {
        assert!(
            !unreachable.stderr.contains(needle),
            "{needle:?} in:\n{unreachable}"
        );
    }

    // --os-cloud: the entry gives the URL and project.
    std::fs::write(
        clouds_file(&stack),
        format!(
            "[clouds.lab]\nurl = \"{}\"\nproject = \"p1\"\n\n[clouds.prod]\nurl = \"http://127.0.0.1:1\"\n",
            url(&stack)
        ),
    )
    .expect("write clouds.toml");
    let mut from_cloud = command(&stack, binary());
    from_cloud
        .env_remove("SCORIA_URL")
        .env_remove("SCORIA_PROJECT")
        .args([
            "--os-cloud",
            "lab",
            "volume",
            "create",
            "--size",
            "1",
            "--name",
            "clouded",
            "-f",
            "json",
        ]);
    let made = run(from_cloud).await.ok();
    let id = field(&made.json(), "id").to_owned();
    let real = stack.get_volume("p1", &id).await.expect("made in p1");
    assert_eq!(
        (real.name.as_str(), real.project_id.as_str()),
        ("clouded", "p1")
    );
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    // The variable names the cloud as well; a flag wins over the entry.
    let mut by_env = command(&stack, binary());
    by_env
        .env_remove("SCORIA_URL")
        .env("SCORIA_CLOUD", "lab")
        .env("SCORIA_PROJECT", "p2")
        .args(["volume", "list", "-f", "value", "-c", "Name"]);
    let other_project = run(by_env).await.ok();
    assert_eq!(
        other_project.stdout, "",
        "p2 has no volumes:\n{other_project}"
    );

    // An unknown cloud: exit 2 naming the clouds the file has.
    let unknown = scoria(&stack, &["--os-cloud", "staging", "volume", "list"])
        .await
        .exits(2);
    assert!(
        unknown.stderr.contains("staging") && unknown.stderr.contains("it has: lab, prod"),
        "{unknown}"
    );

    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn completion_and_help_need_no_api() {
    let stack = Stack::start(DbKind::Sqlite).await;
    // Nothing of these connects: an address with nothing there is fine.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let bash = scoria(&stack, &["--os-url", &dead, "completion", "bash"])
        .await
        .ok();
    assert!(
        bash.stdout.contains("_scoria") && bash.stdout.contains("complete"),
        "{bash}"
    );
    let zsh = scoria(&stack, &["completion", "zsh"]).await.ok();
    assert!(zsh.stdout.contains("#compdef scoria"), "{zsh}");
    let help = scoria(&stack, &["--os-url", &dead, "volume", "create", "--help"])
        .await
        .ok();
    assert!(
        help.stdout.contains("Example") && help.stdout.contains("--size <GIB>"),
        "{help}"
    );
    let top = scoria(&stack, &["--help"]).await.ok();
    for noun in ["volume", "snapshot", "attachment", "type", "quota"] {
        assert!(top.stdout.contains(noun), "{noun} missing:\n{top}");
    }
    let bad_shell = scoria(&stack, &["completion", "cmd.exe"]).await.exits(2);
    assert!(bad_shell.stderr.contains("bash"), "{bad_shell}");

    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_services_types_zones_and_pools() {
    let stack = Stack::start(DbKind::Sqlite).await;

    // quota show (a member, its own project), set as an admin, refused to a member.
    let table = scoria(&stack, &["quota", "show"]).await.ok();
    assert!(
        table.stdout.contains("| volumes ") && table.stdout.contains("Limit"),
        "{table}"
    );
    let set = scoria_admin(&stack, &["quota", "set", "p1", "--volumes", "5"])
        .await
        .ok();
    assert!(set.stdout.contains("volumes"), "{set}");
    let shown = scoria(&stack, &["quota", "show", "-f", "json"]).await.ok();
    let rows = shown.json();
    assert_eq!(row(&rows, "Resource", "volumes")["Limit"], 5, "{shown}");
    assert_eq!(stack.quota_usage("p1", "volumes").await.2, 5);
    let denied = scoria(&stack, &["quota", "set", "p1", "--volumes", "50"])
        .await
        .exits(1);
    assert!(
        denied
            .stderr
            .starts_with("error: set the quota of project p1 failed: ")
            && denied.stderr.contains("(PERMISSION_DENIED)"),
        "{denied}"
    );
    assert_eq!(stack.quota_usage("p1", "volumes").await.2, 5, "unchanged");
    let nothing = scoria_admin(&stack, &["quota", "set", "p1"]).await.exits(2);
    assert!(nothing.stderr.contains("nothing to set"), "{nothing}");

    // service list (admin): both services, up.
    let services = scoria_admin(&stack, &["service", "list", "-f", "json"])
        .await
        .ok();
    let rows = services.json();
    for binary in ["scoria-volume", "scoria-scheduler"] {
        let service = row(&rows, "Binary", binary);
        assert_eq!(service["State"], "up", "{services}");
        assert_eq!(service["Status"], "enabled", "{services}");
    }
    assert_eq!(
        row(&rows, "Binary", "scoria-volume")["Host"],
        stack.volume_host.as_str(),
        "{services}"
    );
    let table = scoria_admin(&stack, &["service", "list"]).await.ok();
    assert!(
        table.stdout.contains("scoria-volume") && table.stdout.contains("scoria-scheduler"),
        "{table}"
    );

    // type create / show / unset / delete.
    let created = scoria_admin(
        &stack,
        &["type", "create", "gold", "--property", "a=b", "-f", "json"],
    )
    .await
    .ok();
    let gold = created.json();
    assert_eq!(gold["name"], "gold", "{created}");
    assert_eq!(gold["properties"], json!({"a": "b"}), "{created}");
    let shown = scoria(&stack, &["type", "show", "gold", "-f", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["id"], gold["id"], "{shown:#}");
    assert_eq!(shown["properties"], json!({"a": "b"}), "{shown:#}");
    let listed = scoria(&stack, &["type", "list", "-f", "value", "-c", "Name"])
        .await
        .ok();
    assert!(listed.stdout.lines().any(|l| l == "gold"), "{listed}");
    let unset = scoria_admin(
        &stack,
        &["type", "unset", "gold", "--property", "a", "-f", "json"],
    )
    .await
    .ok();
    assert_eq!(unset.json()["properties"], json!({}), "{unset}");
    let real = stack
        .volume_types("p1")
        .get_volume_type(pb::GetVolumeTypeRequest {
            id_or_name: "gold".into(),
        })
        .await
        .expect("get type")
        .into_inner();
    assert!(real.extra_specs.is_empty(), "{real:?}");
    let member = scoria(&stack, &["type", "delete", "gold"]).await.exits(1);
    assert!(member.stderr.contains("PERMISSION_DENIED"), "{member}");
    scoria_admin(&stack, &["type", "delete", "gold"]).await.ok();
    let err = stack
        .volume_types("p1")
        .get_volume_type(pb::GetVolumeTypeRequest {
            id_or_name: "gold".into(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // availability-zone list: the API's zones.
    let zones = stack
        .zones("p1")
        .list_availability_zones(pb::ListAvailabilityZonesRequest {})
        .await
        .expect("zones")
        .into_inner()
        .availability_zones;
    assert!(!zones.is_empty());
    let listed = scoria(&stack, &["availability-zone", "list", "-f", "json"])
        .await
        .ok();
    let rows = listed.json();
    for zone in &zones {
        let shown = row(&rows, "Zone Name", &zone.name);
        assert_eq!(
            shown["Zone Status"],
            if zone.available {
                "available"
            } else {
                "not available"
            },
            "{listed}"
        );
    }
    let table = scoria(&stack, &["availability-zone", "list"]).await.ok();
    assert!(table.stdout.contains(&zones[0].name), "{table}");

    // pool list (admin): the stack's pool.
    let pools = stack
        .admin("p1")
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect("pools")
        .into_inner()
        .pools;
    let [pool] = pools.as_slice() else {
        panic!("one pool expected: {pools:?}");
    };
    assert!(pool.name.starts_with(&stack.volume_host), "{pool:?}");
    let listed = scoria_admin(&stack, &["pool", "list", "-f", "value"])
        .await
        .ok();
    assert_eq!(listed.stdout, format!("{}\n", pool.name), "{listed}");
    let long = scoria_admin(&stack, &["pool", "list", "--long", "-f", "json"])
        .await
        .ok();
    let rows = long.json();
    let shown = row(&rows, "Name", &pool.name);
    assert_eq!(shown["Backend"], pool.backend_name.as_str(), "{long}");
    assert_eq!(shown["Total GiB"], pool.total_capacity_gib, "{long}");
    let member = scoria(&stack, &["pool", "list"]).await.exits(1);
    assert!(member.stderr.contains("PERMISSION_DENIED"), "{member}");

    stack.assert_quota_exact().await;
}
