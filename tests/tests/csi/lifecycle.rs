//! The whole sequence a kubelet and the sidecars perform, through the real plugin
//! processes (two "nodes": two plugins with their own node ids and state dirs) on
//! one stack: CreateVolume, ControllerPublish, NodeStage with a real ext4,
//! NodePublish, a file written, back down; the volume on the second node with the
//! file read back; an offline expansion grown on the node; a snapshot and a volume
//! from it holding the file; deletes. And a plugin killed in the middle of a stage
//! (its qemu-storage-daemon up, nothing mounted yet) that finishes or cleans up.

use std::{path::Path, time::Duration};

use scoria_csi::proto::{
    self as csi, ControllerExpandVolumeRequest, ControllerPublishVolumeRequest,
    ControllerUnpublishVolumeRequest, CreateSnapshotRequest, CreateVolumeRequest,
    DeleteSnapshotRequest, DeleteVolumeRequest, NodeExpandVolumeRequest, VolumeCapability,
    VolumeContentSource,
    volume_capability::access_mode::Mode,
    volume_content_source::{SnapshotSource, Type as Source},
};
use scoria_tests::{
    csi::Plugin,
    stack::{DbKind, Stack},
};
use tokio::time::{Instant, sleep};

use crate::node::{
    Cleanup, GIB, export, mount_cap, new_volume, ok, paths, publish_req, refused,
    require_node_tools, stage_req, stats_req, unpublish_req, unstage_req, usage,
};

/// ControllerPublishVolume of `volume_id` to `plugin`'s node; its publish context.
async fn controller_publish(
    plugin: &Plugin,
    volume_id: &str,
    cap: &VolumeCapability,
) -> std::collections::BTreeMap<String, String> {
    let request = ControllerPublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: plugin.node_id().into(),
        volume_capability: Some(cap.clone()),
        readonly: false,
        ..Default::default()
    };
    let answer = ok(
        "ControllerPublishVolume",
        plugin,
        plugin.controller().controller_publish_volume(request).await,
    );
    answer.publish_context
}

async fn controller_unpublish(plugin: &Plugin, volume_id: &str) {
    let request = ControllerUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: plugin.node_id().into(),
        ..Default::default()
    };
    ok(
        "ControllerUnpublishVolume",
        plugin,
        plugin
            .controller()
            .controller_unpublish_volume(request)
            .await,
    );
}

/// CreateVolume `name` of `bytes` (from `source`), repeated until the plugin says
/// it exists (the same answer each time); its id.
async fn create_volume(
    plugin: &Plugin,
    name: &str,
    bytes: i64,
    source: Option<Source>,
    cap: &VolumeCapability,
) -> String {
    let request = CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap.clone()],
        volume_content_source: source.map(|s| VolumeContentSource { r#type: Some(s) }),
        ..Default::default()
    };
    let first = ok(
        "CreateVolume",
        plugin,
        plugin.controller().create_volume(request.clone()).await,
    );
    let again = ok(
        "CreateVolume again",
        plugin,
        plugin.controller().create_volume(request).await,
    );
    let (a, b) = (first.volume.expect("volume"), again.volume.expect("volume"));
    assert_eq!(
        a.volume_id, b.volume_id,
        "CreateVolume is idempotent by name"
    );
    assert!(a.capacity_bytes >= bytes, "{a:?}");
    a.volume_id
}

/// NodeStage + NodePublish on `plugin` with `ctx`, at paths named `name`; the target.
async fn bring_up(
    plugin: &Plugin,
    volume: &str,
    ctx: &std::collections::BTreeMap<String, String>,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let cap = mount_cap("ext4", Mode::SingleNodeWriter);
    let (staging, target) = paths(plugin, name);
    let mut node = plugin.node();
    ok(
        "NodeStageVolume",
        plugin,
        node.node_stage_volume(stage_req(volume, ctx, &staging, &cap))
            .await,
    );
    ok(
        "NodePublishVolume",
        plugin,
        node.node_publish_volume(publish_req(volume, &staging, &target, &cap, false))
            .await,
    );
    (staging, target)
}

/// NodeUnpublish + NodeUnstage of what [`bring_up`] made.
async fn bring_down(plugin: &Plugin, volume: &str, staging: &Path, target: &Path) {
    let mut node = plugin.node();
    ok(
        "NodeUnpublishVolume",
        plugin,
        node.node_unpublish_volume(unpublish_req(volume, target))
            .await,
    );
    ok(
        "NodeUnstageVolume",
        plugin,
        node.node_unstage_volume(unstage_req(volume, staging)).await,
    );
}

#[tokio::test]
async fn the_kubelet_and_sidecar_sequence_keeps_data_across_nodes_expansion_and_snapshots() {
    require_node_tools();
    let stack = Stack::start(DbKind::Sqlite).await;
    let node_a = Plugin::start(&stack, "node-a").await;
    let node_b = Plugin::start(&stack, "node-b").await;
    let cleanup = Cleanup::new(&[&node_a, &node_b]);
    let cap = mount_cap("ext4", Mode::SingleNodeWriter);

    // Provision, attach to node-a, stage a fresh ext4, publish, write.
    let volume = create_volume(&node_a, "pvc-lifecycle", GIB as i64, None, &cap).await;
    let ctx = controller_publish(&node_a, &volume, &cap).await;
    for key in ["host", "port", "export_name"] {
        assert!(ctx.contains_key(key), "publish_context has {key}: {ctx:?}");
    }
    let (staging, target) = bring_up(&node_a, &volume, &ctx, "a").await;
    std::fs::write(target.join("data.txt"), b"written on node-a").expect("write on node-a");
    let stats = node_a
        .node()
        .node_get_volume_stats(stats_req(&volume, &target))
        .await;
    let before = usage(&ok("stats", &node_a, stats), csi::volume_usage::Unit::Bytes).total;
    assert!(before < GIB as i64, "a 1 GiB filesystem: {before}");
    bring_down(&node_a, &volume, &staging, &target).await;
    controller_unpublish(&node_a, &volume).await;
    cleanup.assert_clean("after node-a let go");

    // On node-b, another staging path: the same filesystem, the file read back.
    let ctx = controller_publish(&node_b, &volume, &cap).await;
    let (staging, target) = bring_up(&node_b, &volume, &ctx, "b").await;
    assert_eq!(
        std::fs::read(target.join("data.txt")).expect("read on node-b"),
        b"written on node-a"
    );
    bring_down(&node_b, &volume, &staging, &target).await;
    controller_unpublish(&node_b, &volume).await;

    // Expand offline (the resizer), then the node grows the filesystem once staged.
    let expanded = ok(
        "ControllerExpandVolume",
        &node_a,
        node_a
            .controller()
            .controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: volume.clone(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: 2 * GIB as i64,
                    limit_bytes: 0,
                }),
                volume_capability: Some(cap.clone()),
                ..Default::default()
            })
            .await,
    );
    assert!(expanded.capacity_bytes >= 2 * GIB as i64, "{expanded:?}");
    assert!(
        expanded.node_expansion_required,
        "a filesystem volume needs the node"
    );
    let ctx = controller_publish(&node_a, &volume, &cap).await;
    let (staging, target) = bring_up(&node_a, &volume, &ctx, "a2").await;
    for round in 0..2 {
        let grown = ok(
            &format!("NodeExpandVolume #{round}"),
            &node_a,
            node_a
                .node()
                .node_expand_volume(NodeExpandVolumeRequest {
                    volume_id: volume.clone(),
                    volume_path: target.display().to_string(),
                    staging_target_path: staging.display().to_string(),
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: 2 * GIB as i64,
                        limit_bytes: 0,
                    }),
                    volume_capability: Some(cap.clone()),
                    ..Default::default()
                })
                .await,
        );
        assert_eq!(grown.capacity_bytes, 2 * GIB as i64);
    }
    let after = ok(
        "stats after",
        &node_a,
        node_a
            .node()
            .node_get_volume_stats(stats_req(&volume, &target))
            .await,
    );
    let after = usage(&after, csi::volume_usage::Unit::Bytes).total;
    assert!(
        after > (2 * GIB as i64) * 9 / 10,
        "the filesystem grew: {before} -> {after}"
    );
    assert_eq!(
        std::fs::read(target.join("data.txt")).expect("read after growing"),
        b"written on node-a"
    );
    bring_down(&node_a, &volume, &staging, &target).await;
    controller_unpublish(&node_a, &volume).await;

    // A snapshot, and a volume from it that holds the file.
    let snap_request = CreateSnapshotRequest {
        source_volume_id: volume.clone(),
        name: "snap-lifecycle".into(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let snapshot = loop {
        let answer = ok(
            "CreateSnapshot",
            &node_a,
            node_a
                .controller()
                .create_snapshot(snap_request.clone())
                .await,
        );
        let snapshot = answer.snapshot.expect("snapshot");
        if snapshot.ready_to_use {
            break snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "snapshot never ready: {snapshot:?}"
        );
        sleep(Duration::from_millis(200)).await;
    };
    let source = Source::Snapshot(SnapshotSource {
        snapshot_id: snapshot.snapshot_id.clone(),
    });
    let restored = create_volume(&node_a, "pvc-restored", 2 * GIB as i64, Some(source), &cap).await;
    let ctx = controller_publish(&node_b, &restored, &cap).await;
    let (staging, target) = bring_up(&node_b, &restored, &ctx, "restored").await;
    assert_eq!(
        std::fs::read(target.join("data.txt")).expect("read the restored file"),
        b"written on node-a"
    );
    bring_down(&node_b, &restored, &staging, &target).await;
    controller_unpublish(&node_b, &restored).await;
    cleanup.assert_clean("at the end");

    // Deletes, each repeated.
    for _ in 0..2 {
        let request = DeleteVolumeRequest {
            volume_id: restored.clone(),
            ..Default::default()
        };
        ok(
            "DeleteVolume restored",
            &node_a,
            node_a.controller().delete_volume(request).await,
        );
        let request = DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        };
        ok(
            "DeleteSnapshot",
            &node_a,
            node_a.controller().delete_snapshot(request).await,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = DeleteVolumeRequest {
            volume_id: volume.clone(),
            ..Default::default()
        };
        match node_a.controller().delete_volume(request).await {
            Ok(_) => break,
            // The snapshot may still be going.
            Err(e) if Instant::now() < deadline && e.code() == tonic::Code::FailedPrecondition => {
                sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("DeleteVolume: {e:?}\n{}", node_a.logs()),
        }
    }
}

/// Waits until the stage record of `volume` says `attached` (the daemon and the
/// loop device are up, nothing is mounted).
async fn wait_attached(plugin: &Plugin, volume: &str, cleanup: &Cleanup) {
    let record = plugin
        .state_dir()
        .join("volumes")
        .join(volume)
        .join("stage.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        if text.contains("\"phase\": \"attached\"")
            && !cleanup.daemons().is_empty()
            && !cleanup.loops().is_empty()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stage never got attached: {text}\n{}",
            plugin.logs()
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_plugin_killed_in_the_middle_of_a_stage_finishes_or_cleans_up_after_restart() {
    require_node_tools();
    let stack = Stack::start(DbKind::Sqlite).await;
    let mut plugin = Plugin::start(&stack, "node-a").await;
    let cleanup = Cleanup::new(&[&plugin]);
    let volume = new_volume(&stack, 1).await;
    let ctx = export(&stack, &volume, "node-a", false).await;
    let (staging, _) = paths(&plugin, "r");
    let cap = mount_cap("", Mode::SingleNodeWriter);
    let failpoint = plugin
        .state_dir()
        .join("failpoints")
        .join("stage-after-attach");
    std::fs::create_dir_all(failpoint.parent().expect("dir")).expect("failpoints dir");

    // Killed after the attach: NodeUnstageVolume after the restart undoes it all.
    for finish in [false, true] {
        std::fs::write(&failpoint, b"").expect("arm the failpoint");
        let mut node = plugin.node();
        let request = stage_req(&volume, &ctx, &staging, &cap);
        let held = tokio::spawn(async move { node.node_stage_volume(request).await });
        wait_attached(&plugin, &volume, &cleanup).await;
        assert!(
            cleanup.mounts().iter().all(|m| !m.ends_with("r-staging")),
            "not mounted yet"
        );
        // A second call on the volume while the first runs: ABORTED, as the spec
        // has it for an operation pending on the volume.
        refused(
            "a stage while another one runs",
            plugin
                .node()
                .node_stage_volume(stage_req(&volume, &ctx, &staging, &cap))
                .await,
            tonic::Code::Aborted,
            "in progress",
        );
        plugin.restart().await;
        let interrupted = held.await.expect("the held call");
        assert!(
            interrupted.is_err(),
            "the killed plugin's call failed: {interrupted:?}"
        );
        std::fs::remove_file(&failpoint).expect("disarm");
        assert_eq!(cleanup.daemons().len(), 1, "the daemon outlived the plugin");

        let mut node = plugin.node();
        if finish {
            // The same stage again: finished on the daemon and loop already there.
            ok(
                "stage after the restart",
                &plugin,
                node.node_stage_volume(stage_req(&volume, &ctx, &staging, &cap))
                    .await,
            );
            assert_eq!(cleanup.daemons().len(), 1, "no second daemon");
            assert_eq!(cleanup.loops().len(), 1, "no second loop device");
            std::fs::write(staging.join("after-restart.txt"), b"ok")
                .expect("write on the finished stage");
            ok(
                "stage repeated",
                &plugin,
                node.node_stage_volume(stage_req(&volume, &ctx, &staging, &cap))
                    .await,
            );
        }
        ok(
            "unstage after the restart",
            &plugin,
            node.node_unstage_volume(unstage_req(&volume, &staging))
                .await,
        );
        cleanup.assert_clean(if finish {
            "after finishing and unstaging"
        } else {
            "after unstaging the half stage"
        });
        assert!(
            !plugin.state_dir().join("volumes").join(&volume).exists(),
            "no state left"
        );
    }
}
