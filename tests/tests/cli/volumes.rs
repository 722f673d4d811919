//! Volumes, snapshots and attachments through the CLI: made, listed in every
//! format, shown by name and id, changed, extended, deleted, each step checked
//! against the API's own answer.

use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack};
use serde_json::{Value, json};
use tonic::Code;

use crate::{field, scoria};

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_created_listed_shown_changed_extended_and_deleted() {
    let stack = Stack::start(DbKind::Sqlite).await;

    // create --wait -f json: the settled volume, as JSON.
    let created = scoria(
        &stack,
        &[
            "volume", "create", "--size", "1", "--name", "a", "--wait", "-f", "json",
        ],
    )
    .await
    .ok();
    let volume = created.json();
    let id = field(&volume, "id").to_owned();
    assert_eq!(volume["status"], "available", "{created}");
    assert_eq!(volume["size"], 1, "{created}");
    assert_eq!(volume["name"], "a", "{created}");
    assert_eq!(volume["project_id"], "p1", "{created}");
    let real = stack.get_volume("p1", &id).await.expect("get the volume");
    assert_eq!(real.status(), pb::VolumeStatus::Available);
    assert_eq!(real.size_gib, 1);
    assert_eq!(real.name, "a");

    // list, in every format.
    let table = scoria(&stack, &["volume", "list"]).await.ok();
    assert!(
        table.stdout.contains(&id) && table.stdout.contains("| a "),
        "{table}"
    );
    for header in ["ID", "Name", "Status", "Size"] {
        assert!(table.stdout.contains(header), "{table}");
    }
    let listed = scoria(&stack, &["volume", "list", "-f", "json"]).await.ok();
    assert_eq!(
        listed.json(),
        json!([{"ID": id, "Name": "a", "Status": "available", "Size": 1}]),
        "{listed}"
    );
    let yaml = scoria(&stack, &["volume", "list", "-f", "yaml"]).await.ok();
    let lines: Vec<&str> = yaml.stdout.lines().collect();
    assert!(
        lines.contains(&format!("- ID: {id}").as_str())
            || lines.contains(&format!("- ID: '{id}'").as_str()),
        "{yaml}"
    );
    for line in ["  Name: a", "  Status: available", "  Size: 1"] {
        assert!(lines.contains(&line), "no line {line:?}:\n{yaml}");
    }
    let values = scoria(
        &stack,
        &["volume", "list", "-f", "value", "-c", "ID", "-c", "Status"],
    )
    .await
    .ok();
    assert_eq!(values.stdout, format!("{id} available\n"), "{values}");

    // show, by name and by id.
    let by_name = scoria(&stack, &["volume", "show", "a", "-f", "json"])
        .await
        .ok()
        .json();
    let by_id = scoria(&stack, &["volume", "show", &id, "-f", "json"])
        .await
        .ok()
        .json();
    assert_eq!(by_name, by_id);
    assert_eq!(by_name["id"], id.as_str());
    for key in [
        "id",
        "name",
        "description",
        "status",
        "size",
        "type",
        "availability_zone",
        "host",
        "project_id",
        "user_id",
        "properties",
        "snapshot_id",
        "source_volid",
        "error_message",
        "created_at",
        "updated_at",
    ] {
        assert!(by_id.get(key).is_some(), "no {key} in {by_id:#}");
    }
    assert_eq!(by_id["host"], real.host.as_str());
    let status = scoria(
        &stack,
        &["volume", "show", "a", "-c", "status", "-f", "value"],
    )
    .await
    .ok();
    assert_eq!(status.stdout, "available\n", "{status}");
    let table = scoria(&stack, &["volume", "show", &id]).await.ok();
    assert!(
        table.stdout.contains("| Field ") && table.stdout.contains("| status "),
        "{table}"
    );

    // set: properties added, one removed, then a new name.
    scoria(
        &stack,
        &[
            "volume",
            "set",
            "a",
            "--property",
            "k=v",
            "--property",
            "x=y",
        ],
    )
    .await
    .ok();
    let both = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(both.metadata.len(), 2, "{both:?}");
    scoria(&stack, &["volume", "set", "a", "--unset-property", "x"])
        .await
        .ok();
    let shown = scoria(&stack, &["volume", "show", "a", "-f", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["properties"], json!({"k": "v"}), "{shown:#}");
    let real = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(
        real.metadata.into_iter().collect::<Vec<_>>(),
        vec![("k".to_owned(), "v".to_owned())]
    );
    scoria(&stack, &["volume", "set", "a", "--name", "b"])
        .await
        .ok();
    assert_eq!(stack.get_volume("p1", &id).await.expect("get").name, "b");
    let gone = scoria(&stack, &["volume", "show", "a"]).await.exits(1);
    assert!(
        gone.stderr.contains("no volume with the name or id \"a\""),
        "{gone}"
    );

    // extend --wait: the new size, settled.
    let extended = scoria(
        &stack,
        &[
            "volume", "extend", "b", "--size", "2", "--wait", "-f", "json",
        ],
    )
    .await
    .ok();
    let json = extended.json();
    assert_eq!(json["size"], 2, "{extended}");
    assert_eq!(json["status"], "available", "{extended}");
    let real = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(
        (real.size_gib, real.status()),
        (2, pb::VolumeStatus::Available)
    );

    // delete --wait: gone when it returns.
    let deleted = scoria(&stack, &["volume", "delete", "b", "--wait"])
        .await
        .ok();
    assert_eq!(deleted.stdout, "", "{deleted}");
    let err = stack.get_volume("p1", &id).await.expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let empty = scoria(&stack, &["volume", "list", "-f", "json"]).await.ok();
    assert_eq!(empty.json(), json!([]), "{empty}");

    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_and_an_attachment_round_trip() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let created = scoria(
        &stack,
        &[
            "volume", "create", "--size", "1", "--name", "data", "--wait", "-f", "value", "-c",
            "id",
        ],
    )
    .await
    .ok();
    let volume = created.text().to_owned();
    assert!(uuid::Uuid::try_parse(&volume).is_ok(), "{created}");

    // Snapshot: create --wait, list, show, delete --wait.
    let made = scoria(
        &stack,
        &[
            "snapshot", "create", "--volume", "data", "--name", "s", "--wait", "-f", "json",
        ],
    )
    .await
    .ok();
    let snapshot = made.json();
    let snapshot_id = field(&snapshot, "id").to_owned();
    assert_eq!(snapshot["status"], "available", "{made}");
    assert_eq!(snapshot["volume_id"], volume.as_str(), "{made}");
    assert_eq!(snapshot["size"], 1, "{made}");
    let real = stack
        .as_member("p1")
        .get_snapshot(&snapshot_id)
        .await
        .expect("get snapshot");
    assert_eq!(real.status(), pb::SnapshotStatus::Available);
    let listed = scoria(&stack, &["snapshot", "list", "-f", "json"])
        .await
        .ok();
    assert_eq!(
        listed.json(),
        json!([{"ID": snapshot_id, "Name": "s", "Status": "available", "Size": 1, "Volume": volume}]),
        "{listed}"
    );
    let of_volume = scoria(
        &stack,
        &[
            "snapshot", "list", "--volume", &volume, "-f", "value", "-c", "Name",
        ],
    )
    .await
    .ok();
    assert_eq!(of_volume.stdout, "s\n", "{of_volume}");
    let shown = scoria(&stack, &["snapshot", "show", "s", "-f", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["id"], snapshot_id.as_str(), "{shown:#}");
    assert_eq!(shown["name"], "s", "{shown:#}");
    scoria(&stack, &["snapshot", "delete", "s", "--wait"])
        .await
        .ok();
    let err = stack
        .as_member("p1")
        .get_snapshot(&snapshot_id)
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Attachment: create prints the NBD URI, list finds it, delete detaches.
    let attached = scoria(
        &stack,
        &[
            "attachment",
            "create",
            &volume,
            "--host",
            "h1",
            "-c",
            "uri",
            "-f",
            "value",
        ],
    )
    .await
    .ok();
    let uri = attached.text().to_owned();
    assert!(
        uri.starts_with("nbd://") && !uri.contains('\n'),
        "{attached}"
    );
    let real = stack.get_volume("p1", &volume).await.expect("get");
    assert_eq!(real.status(), pb::VolumeStatus::InUse, "{real:?}");
    let status = scoria(
        &stack,
        &["volume", "show", "data", "-c", "status", "-f", "value"],
    )
    .await
    .ok();
    assert_eq!(status.stdout, "in-use\n", "{status}");
    let listed = scoria(
        &stack,
        &["attachment", "list", "--volume", "data", "-f", "json"],
    )
    .await
    .ok();
    let rows = listed.json();
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{listed}");
    let attachment = field(&rows[0], "ID").to_owned();
    assert_eq!(rows[0]["Volume"], volume.as_str(), "{listed}");
    assert_eq!(rows[0]["Host"], "h1", "{listed}");
    assert_eq!(rows[0]["Mode"], "rw", "{listed}");
    assert_eq!(rows[0]["URI"], uri.as_str(), "{listed}");
    let shown = scoria(&stack, &["attachment", "show", &attachment, "-f", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["uri"], uri.as_str(), "{shown:#}");
    assert_eq!(shown["status"], "attached", "{shown:#}");
    let real = stack
        .attachments("p1")
        .get_attachment(pb::GetAttachmentRequest {
            id: attachment.clone(),
        })
        .await
        .expect("get attachment")
        .into_inner();
    assert_eq!(
        real.connection_info.map(|i| i.uri),
        Some(uri.clone()),
        "the URI printed is the API's"
    );
    scoria(&stack, &["attachment", "delete", &attachment])
        .await
        .ok();
    stack
        .wait_status("p1", &volume, pb::VolumeStatus::Available)
        .await;
    let none = scoria(
        &stack,
        &["attachment", "list", "--volume", &volume, "-f", "json"],
    )
    .await
    .ok();
    assert_eq!(none.json(), Value::Array(vec![]), "{none}");

    stack.assert_quota_exact().await;
}
