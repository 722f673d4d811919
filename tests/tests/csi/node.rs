//! The Node service through the real `scoria-csi` process on a real stack: the
//! export of a real attachment staged through qemu-storage-daemon, FUSE and a loop
//! device (this machine has no `nbd` module), a real ext4 mounted and bind-mounted,
//! every call repeated, every required field and not-found, raw block, read-only,
//! stats and expansion limits. The volume and its attachment come straight from
//! Scoria's API here, so these tests need no Controller; `lifecycle.rs` drives
//! the Controller too.
//!
//! Everything a test mounts, attaches or starts is undone by a [`Cleanup`] guard
//! even when it fails.

use std::{
    collections::BTreeMap,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use scoria_csi::{
    TOPOLOGY_ZONE_KEY,
    proto::{
        self as csi, NodeExpandVolumeRequest, NodeGetCapabilitiesRequest, NodeGetInfoRequest,
        NodeGetVolumeStatsRequest, NodePublishVolumeRequest, NodeStageVolumeRequest,
        NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, VolumeCapability,
        node_client::NodeClient,
        volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode},
    },
};
use scoria_proto::v1 as pb;
use scoria_tests::{
    csi::Plugin,
    stack::{DbKind, Stack},
};
use tonic::{Code, Response, Status, transport::Channel};

/// One GiB.
pub(crate) const GIB: u64 = 1 << 30;

// === the tools ===

/// Panics naming what to install when a tool the node needs is missing.
pub(crate) fn require_node_tools() {
    for (program, package) in [
        ("qemu-storage-daemon", "qemu-utils"),
        ("losetup", "util-linux"),
        ("blkid", "util-linux"),
        ("mkfs.ext4", "e2fsprogs"),
        ("resize2fs", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("dumpe2fs", "e2fsprogs"),
        ("mount", "mount"),
    ] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{program} is missing: install {package} (apt-get install {package})"
        );
    }
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: FUSE is needed (modprobe fuse; apt-get install fuse3)"
    );
    assert!(
        Path::new("/dev/loop-control").exists(),
        "/dev/loop-control is missing: loop devices are needed (modprobe loop)"
    );
}

// === cleanup ===

/// Undoes, on drop, whatever is left under its roots: mounts (deepest first),
/// loop devices on files there, and qemu-storage-daemons whose command line
/// names them. Declare it after the [`Plugin`] (it drops first) so nothing is
/// mounted when the plugin's temp dir goes.
pub(crate) struct Cleanup {
    roots: Vec<PathBuf>,
}

impl Cleanup {
    /// A guard for everything under the plugins' dirs.
    pub(crate) fn new(plugins: &[&Plugin]) -> Self {
        Self {
            roots: plugins.iter().map(|p| p.dir().to_path_buf()).collect(),
        }
    }

    fn under(&self, path: &str) -> bool {
        self.roots.iter().any(|r| Path::new(path).starts_with(r))
    }

    /// Mount points under the roots.
    pub(crate) fn mounts(&self) -> Vec<String> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|m| m.replace("\\040", " "))
            .filter(|m| self.under(m))
            .collect()
    }

    /// Loop devices whose backing file is under the roots.
    pub(crate) fn loops(&self) -> Vec<String> {
        let backing: Vec<(String, String)> = std::fs::read_dir("/sys/block")
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
                    .filter_map(|e| {
                        let file =
                            std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
                        Some((
                            format!("/dev/{}", e.file_name().to_string_lossy()),
                            file.trim().to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Loops on files under the roots, then loops on those loops (read-only
        // block publishes), those last so they are detached first.
        let mut found: Vec<String> = backing
            .iter()
            .filter(|(_, file)| self.under(file))
            .map(|(dev, _)| dev.clone())
            .collect();
        let stacked: Vec<String> = backing
            .iter()
            .filter(|(_, file)| found.contains(file))
            .map(|(dev, _)| dev.clone())
            .collect();
        found.retain(|d| !stacked.contains(d));
        stacked.into_iter().rev().chain(found).collect()
    }

    /// Pids of qemu-storage-daemons naming a path under the roots.
    pub(crate) fn daemons(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let zombie = stat
                    .rsplit_once(')')
                    .is_some_and(|(_, s)| s.trim_start().starts_with('Z'));
                !zombie
                    && cmdline.contains("qemu-storage-daemon")
                    && self
                        .roots
                        .iter()
                        .any(|r| cmdline.contains(&*r.to_string_lossy()))
            })
            .collect()
    }

    /// Asserts nothing is left: no mount, loop device or daemon under the roots.
    pub(crate) fn assert_clean(&self, when: &str) {
        assert_eq!(self.mounts(), Vec::<String>::new(), "mounts left {when}");
        assert_eq!(
            self.loops(),
            Vec::<String>::new(),
            "loop devices left {when}"
        );
        assert_eq!(
            self.daemons(),
            Vec::<i32>::new(),
            "qemu-storage-daemons left {when}"
        );
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = std::process::Command::new(args[0])
                .args(&args[1..])
                .output();
        };
        // The loops first: once a FUSE export file is lazily unmounted its loop's
        // backing file reads `/` and could no longer be found.
        let loops = self.loops();
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in &mounts {
            // Export files stay busy until their loop goes: they fail here.
            run(&["umount", m]);
        }
        for dev in &loops {
            run(&["losetup", "-d", dev]);
        }
        for pid in self.daemons() {
            run(&["kill", "-9", &pid.to_string()]);
        }
        std::thread::sleep(Duration::from_millis(100));
        for m in self.mounts() {
            run(&["umount", "-l", &m]);
        }
    }
}

// === requests ===

/// A mount capability (`fs_type` empty: the plugin's default) in `mode`.
pub(crate) fn mount_cap(fs_type: &str, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A raw block capability in `mode`.
pub(crate) fn block_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A NodeStageVolume request.
pub(crate) fn stage_req(
    volume_id: &str,
    context: &BTreeMap<String, String>,
    staging: &Path,
    cap: &VolumeCapability,
) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: volume_id.into(),
        publish_context: context.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    }
}

/// A NodePublishVolume request.
pub(crate) fn publish_req(
    volume_id: &str,
    staging: &Path,
    target: &Path,
    cap: &VolumeCapability,
    readonly: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap.clone()),
        readonly,
        ..Default::default()
    }
}

/// A NodeUnstageVolume request.
pub(crate) fn unstage_req(volume_id: &str, staging: &Path) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
    }
}

/// A NodeUnpublishVolume request.
pub(crate) fn unpublish_req(volume_id: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
    }
}

/// A NodeGetVolumeStats request.
pub(crate) fn stats_req(volume_id: &str, path: &Path) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: volume_id.into(),
        volume_path: path.display().to_string(),
        staging_target_path: String::new(),
    }
}

/// The value of a call that must succeed, or a panic with the plugin's log.
pub(crate) fn ok<T>(what: &str, plugin: &Plugin, result: Result<Response<T>, Status>) -> T {
    match result {
        Ok(r) => r.into_inner(),
        Err(e) => panic!("{what}: {e:?}\n{}", plugin.logs()),
    }
}

/// Asserts a call was refused with `code`, its message mentioning `mentions`.
pub(crate) fn refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<Response<T>, Status>,
    code: Code,
    mentions: &str,
) {
    match result {
        Ok(r) => panic!("{what}: expected {code:?}, got OK {:?}", r.get_ref()),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            assert!(
                s.message().contains(mentions),
                "{what}: {:?} should mention {mentions:?}",
                s.message()
            );
        }
    }
}

// === a volume and its export ===

/// A volume of `size_gib` in the plugin's project, available; its id.
pub(crate) async fn new_volume(stack: &Stack, size_gib: u64) -> String {
    let clients = Plugin::scoria(stack);
    let created = clients
        .volumes()
        .create_volume(pb::CreateVolumeRequest {
            size_gib,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create volume: {e:?}\n{}", stack.logs()))
        .into_inner();
    stack
        .wait_status(
            scoria_tests::csi::PROJECT,
            &created.id,
            pb::VolumeStatus::Available,
        )
        .await;
    created.id
}

/// Attaches `volume_id` to `host` through Scoria's API (what ControllerPublish
/// does) and returns the publish context the contract's keys name.
pub(crate) async fn export(
    stack: &Stack,
    volume_id: &str,
    host: &str,
    read_only: bool,
) -> BTreeMap<String, String> {
    let attachment = Plugin::scoria(stack)
        .attachments()
        .create_attachment(pb::CreateAttachmentRequest {
            volume_id: volume_id.into(),
            connector: Some(pb::Connector {
                host: host.into(),
                ..Default::default()
            }),
            mode: if read_only {
                pb::AttachMode::Ro
            } else {
                pb::AttachMode::Rw
            } as i32,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("attach {volume_id}: {e:?}\n{}", stack.logs()))
        .into_inner();
    let info = attachment
        .connection_info
        .unwrap_or_else(|| panic!("no connection info: {volume_id}"));
    [
        ("protocol", info.protocol),
        ("host", info.host),
        ("port", info.port.to_string()),
        ("export_name", info.export_name),
        ("uri", info.uri),
        ("read_only", info.read_only.to_string()),
        ("attachment_id", attachment.id),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A stack, a plugin (node `node-a`), the tools checked.
async fn start() -> (Stack, Plugin) {
    require_node_tools();
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start_with(
        &stack,
        "node-a",
        &["--zone", "zone-a", "--max-volumes", "16"],
    )
    .await;
    (stack, plugin)
}

/// Staging and target paths in the plugin's dir (the staging dir made, as a CO does).
pub(crate) fn paths(plugin: &Plugin, name: &str) -> (PathBuf, PathBuf) {
    let staging = plugin.dir().join(format!("{name}-staging"));
    std::fs::create_dir_all(&staging).expect("staging dir");
    (staging, plugin.dir().join(format!("{name}-target")))
}

/// The bytes and inodes usage of a NodeGetVolumeStats answer.
pub(crate) fn usage(
    stats: &csi::NodeGetVolumeStatsResponse,
    unit: csi::volume_usage::Unit,
) -> csi::VolumeUsage {
    stats
        .usage
        .iter()
        .find(|u| u.unit == unit as i32)
        .cloned()
        .unwrap_or_else(|| panic!("no {unit:?} usage in {stats:?}"))
}

fn node(plugin: &Plugin) -> NodeClient<Channel> {
    plugin.node()
}

// === tests ===

#[tokio::test]
async fn node_info_and_capabilities_say_what_the_node_is_and_does() {
    let (_stack, plugin) = start().await;
    let info = ok(
        "NodeGetInfo",
        &plugin,
        node(&plugin).node_get_info(NodeGetInfoRequest {}).await,
    );
    assert_eq!(info.node_id, "node-a");
    assert_eq!(info.max_volumes_per_node, 16);
    let topology = info.accessible_topology.expect("accessible_topology");
    assert_eq!(
        topology.segments.get(TOPOLOGY_ZONE_KEY).map(String::as_str),
        Some("zone-a")
    );
    let caps = ok(
        "NodeGetCapabilities",
        &plugin,
        node(&plugin)
            .node_get_capabilities(NodeGetCapabilitiesRequest {})
            .await,
    );
    use csi::node_service_capability::{Type, rpc::Type as Rpc};
    let mut kinds: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref().map(|Type::Rpc(rpc)| rpc.r#type))
        .collect();
    kinds.sort();
    let want = [
        Rpc::StageUnstageVolume,
        Rpc::GetVolumeStats,
        Rpc::ExpandVolume,
        Rpc::VolumeCondition,
    ];
    assert_eq!(kinds, want.iter().map(|t| *t as i32).collect::<Vec<_>>());
}

#[tokio::test]
async fn stage_publish_and_back_each_repeated_leave_nothing_behind() {
    let (stack, plugin) = start().await;
    let cleanup = Cleanup::new(&[&plugin]);
    let volume = new_volume(&stack, 1).await;
    let ctx = export(&stack, &volume, "node-a", false).await;
    let (staging, target) = paths(&plugin, "v");
    let cap = mount_cap("", Mode::SingleNodeWriter);
    let mut node = node(&plugin);

    for round in 0..2 {
        ok(
            &format!("stage #{round}"),
            &plugin,
            node.node_stage_volume(stage_req(&volume, &ctx, &staging, &cap))
                .await,
        );
    }
    let blkid = std::process::Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", &staging.display().to_string()])
        .output()
        .expect("findmnt");
    assert_eq!(
        String::from_utf8_lossy(&blkid.stdout).trim(),
        "ext4",
        "staged as ext4"
    );
    // The same volume elsewhere, or otherwise, is the spec's error.
    let (other_staging, other_target) = paths(&plugin, "other");
    refused(
        "stage at another path",
        node.node_stage_volume(stage_req(&volume, &ctx, &other_staging, &cap))
            .await,
        Code::FailedPrecondition,
        "staged at",
    );
    refused(
        "stage with another capability",
        node.node_stage_volume(stage_req(
            &volume,
            &ctx,
            &staging,
            &block_cap(Mode::SingleNodeWriter),
        ))
        .await,
        Code::AlreadyExists,
        "another volume_capability",
    );

    for round in 0..2 {
        ok(
            &format!("publish #{round}"),
            &plugin,
            node.node_publish_volume(publish_req(&volume, &staging, &target, &cap, false))
                .await,
        );
    }
    std::fs::write(target.join("hello.txt"), b"hello from the node")
        .expect("write through the target");
    assert_eq!(
        std::fs::read(staging.join("hello.txt")).expect("read"),
        b"hello from the node"
    );
    refused(
        "publish the same target read-only",
        node.node_publish_volume(publish_req(&volume, &staging, &target, &cap, true))
            .await,
        Code::AlreadyExists,
        "published at",
    );
    refused(
        "a second target of a single-node-writer volume",
        node.node_publish_volume(publish_req(&volume, &staging, &other_target, &cap, false))
            .await,
        Code::FailedPrecondition,
        "allows one target",
    );
    refused(
        "unstage while published",
        node.node_unstage_volume(unstage_req(&volume, &staging))
            .await,
        Code::FailedPrecondition,
        "still published",
    );

    for round in 0..2 {
        ok(
            &format!("unpublish #{round}"),
            &plugin,
            node.node_unpublish_volume(unpublish_req(&volume, &target))
                .await,
        );
    }
    assert!(!target.exists(), "the target the node made is gone");
    for round in 0..2 {
        ok(
            &format!("unstage #{round}"),
            &plugin,
            node.node_unstage_volume(unstage_req(&volume, &staging))
                .await,
        );
    }
    cleanup.assert_clean("after unstage");
    assert!(
        !plugin.state_dir().join("volumes").join(&volume).exists(),
        "the volume's state is gone"
    );

    // Staged again: the same filesystem (never reformatted), the file still there.
    ok(
        "stage again",
        &plugin,
        node.node_stage_volume(stage_req(&volume, &ctx, &staging, &cap))
            .await,
    );
    assert_eq!(
        std::fs::read(staging.join("hello.txt")).expect("read after restage"),
        b"hello from the node"
    );
    ok(
        "unstage again",
        &plugin,
        node.node_unstage_volume(unstage_req(&volume, &staging))
            .await,
    );
    cleanup.assert_clean("after the second unstage");
}

#[tokio::test]
async fn required_fields_and_unknown_volumes_get_the_spec_codes() {
    let (stack, plugin) = start().await;
    let _cleanup = Cleanup::new(&[&plugin]);
    let mut node = node(&plugin);
    let (staging, target) = paths(&plugin, "v");
    let cap = mount_cap("", Mode::SingleNodeWriter);
    let ctx: BTreeMap<String, String> =
        [("host", "127.0.0.1"), ("port", "1"), ("export_name", "x")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
    let id = "0d9f1b8e-0000-4000-8000-000000000001";
    let inval = Code::InvalidArgument;

    // NodeStageVolume
    let base = stage_req(id, &ctx, &staging, &cap);
    let mut r = base.clone();
    r.volume_id.clear();
    refused(
        "stage without volume_id",
        node.node_stage_volume(r).await,
        inval,
        "volume_id",
    );
    let mut r = base.clone();
    r.staging_target_path.clear();
    refused(
        "stage without staging_target_path",
        node.node_stage_volume(r).await,
        inval,
        "staging_target_path",
    );
    let mut r = base.clone();
    r.volume_capability = None;
    refused(
        "stage without volume_capability",
        node.node_stage_volume(r).await,
        inval,
        "volume_capability",
    );
    let mut r = base.clone();
    r.volume_capability = Some(VolumeCapability {
        access_mode: None,
        ..cap.clone()
    });
    refused(
        "stage without access_mode",
        node.node_stage_volume(r).await,
        inval,
        "volume_capability.access_mode",
    );
    let mut r = base.clone();
    r.volume_capability = Some(VolumeCapability {
        access_type: None,
        ..cap.clone()
    });
    refused(
        "stage without access_type",
        node.node_stage_volume(r).await,
        inval,
        "volume_capability.access_type",
    );
    for key in ["host", "port", "export_name"] {
        let mut r = base.clone();
        r.publish_context.remove(key);
        refused(
            &format!("stage without {key}"),
            node.node_stage_volume(r).await,
            inval,
            &format!("publish_context.{key}"),
        );
    }
    let mut r = base.clone();
    r.staging_target_path = "relative/path".into();
    refused(
        "stage at a relative path",
        node.node_stage_volume(r).await,
        inval,
        "staging_target_path",
    );

    // NodeUnstageVolume
    refused(
        "unstage without volume_id",
        node.node_unstage_volume(unstage_req("", &staging)).await,
        inval,
        "volume_id",
    );
    let r = NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: String::new(),
    };
    refused(
        "unstage without staging_target_path",
        node.node_unstage_volume(r).await,
        inval,
        "staging_target_path",
    );

    // NodePublishVolume
    let base = publish_req(id, &staging, &target, &cap, false);
    let mut r = base.clone();
    r.volume_id.clear();
    refused(
        "publish without volume_id",
        node.node_publish_volume(r).await,
        inval,
        "volume_id",
    );
    let mut r = base.clone();
    r.target_path.clear();
    refused(
        "publish without target_path",
        node.node_publish_volume(r).await,
        inval,
        "target_path",
    );
    let mut r = base.clone();
    r.volume_capability = None;
    refused(
        "publish without volume_capability",
        node.node_publish_volume(r).await,
        inval,
        "volume_capability",
    );
    let mut r = base.clone();
    r.staging_target_path.clear();
    refused(
        "publish without staging_target_path",
        node.node_publish_volume(r).await,
        Code::FailedPrecondition,
        "staging_target_path",
    );

    // NodeUnpublishVolume
    refused(
        "unpublish without volume_id",
        node.node_unpublish_volume(unpublish_req("", &target)).await,
        inval,
        "volume_id",
    );
    let r = NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: String::new(),
    };
    refused(
        "unpublish without target_path",
        node.node_unpublish_volume(r).await,
        inval,
        "target_path",
    );

    // NodeGetVolumeStats, NodeExpandVolume
    refused(
        "stats without volume_id",
        node.node_get_volume_stats(stats_req("", &staging)).await,
        inval,
        "volume_id",
    );
    let r = NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        ..Default::default()
    };
    refused(
        "stats without volume_path",
        node.node_get_volume_stats(r).await,
        inval,
        "volume_path",
    );
    let expand = |volume_id: &str, path: &str| NodeExpandVolumeRequest {
        volume_id: volume_id.into(),
        volume_path: path.into(),
        ..Default::default()
    };
    refused(
        "expand without volume_id",
        node.node_expand_volume(expand("", "/x")).await,
        inval,
        "volume_id",
    );
    refused(
        "expand without volume_path",
        node.node_expand_volume(expand(id, "")).await,
        inval,
        "volume_path",
    );

    // Unknown volumes: NOT_FOUND where the spec says so, success where undoing nothing.
    let not_found = Code::NotFound;
    refused(
        "stats of an unknown volume",
        node.node_get_volume_stats(stats_req(id, &staging)).await,
        not_found,
        id,
    );
    refused(
        "expand an unknown volume",
        node.node_expand_volume(expand(id, &staging.display().to_string()))
            .await,
        not_found,
        id,
    );
    refused(
        "publish a volume never staged",
        node.node_publish_volume(publish_req(id, &staging, &target, &cap, false))
            .await,
        not_found,
        id,
    );
    ok(
        "unstage an unknown volume",
        &plugin,
        node.node_unstage_volume(unstage_req(id, &staging)).await,
    );
    ok(
        "unpublish an unknown volume",
        &plugin,
        node.node_unpublish_volume(unpublish_req(id, &target)).await,
    );

    // An export its server does not know: NOT_FOUND, and nothing left behind.
    let volume = new_volume(&stack, 1).await;
    let mut ctx = export(&stack, &volume, "node-a", false).await;
    ctx.insert("export_name".into(), "volume-no-such-export".into());
    refused(
        "stage an export that does not exist",
        node.node_stage_volume(stage_req(&volume, &ctx, &staging, &cap))
            .await,
        not_found,
        "volume-no-such-export",
    );
    _cleanup.assert_clean("after a refused stage");
}

#[tokio::test]
async fn raw_block_volumes_are_staged_as_a_device_and_published_as_one() {
    let (stack, plugin) = start().await;
    let cleanup = Cleanup::new(&[&plugin]);
    let volume = new_volume(&stack, 1).await;
    let ctx = export(&stack, &volume, "node-a", false).await;
    let (staging, target) = paths(&plugin, "blk");
    let cap = block_cap(Mode::SingleNodeWriter);
    let mut node = node(&plugin);
    for round in 0..2 {
        ok(
            &format!("stage block #{round}"),
            &plugin,
            node.node_stage_volume(stage_req(&volume, &ctx, &staging, &cap))
                .await,
        );
        ok(
            &format!("publish block #{round}"),
            &plugin,
            node.node_publish_volume(publish_req(&volume, &staging, &target, &cap, false))
                .await,
        );
    }
    refused(
        "publish a block volume as a filesystem",
        node.node_publish_volume(publish_req(
            &volume,
            &staging,
            &plugin.dir().join("t2"),
            &mount_cap("", Mode::SingleNodeWriter),
            false,
        ))
        .await,
        Code::FailedPrecondition,
        "block",
    );
    // The target is the device: bytes written at an offset read back, and the
    // size is the volume's.
    let mut dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&target)
        .expect("open the target device");
    assert_eq!(dev.seek(SeekFrom::End(0)).expect("seek end"), GIB);
    dev.seek(SeekFrom::Start(4096 * 100)).expect("seek");
    dev.write_all(&[0xa5; 4096]).expect("write the device");
    dev.sync_all().expect("sync");
    drop(dev);
    let mut dev = std::fs::File::open(&target).expect("reopen");
    let mut back = vec![0; 4096];
    dev.seek(SeekFrom::Start(4096 * 100)).expect("seek");
    dev.read_exact(&mut back).expect("read the device");
    assert!(
        back.iter().all(|b| *b == 0xa5),
        "the bytes written read back"
    );
    drop(dev);

    let stats = ok(
        "block stats",
        &plugin,
        node.node_get_volume_stats(stats_req(&volume, &target))
            .await,
    );
    assert_eq!(
        usage(&stats, csi::volume_usage::Unit::Bytes).total,
        GIB as i64
    );
    assert!(!stats.volume_condition.expect("condition").abnormal);

    ok(
        "unpublish block",
        &plugin,
        node.node_unpublish_volume(unpublish_req(&volume, &target))
            .await,
    );
    assert!(!target.exists(), "the device file at the target is gone");

    // Read-only: a read-only device of its own (a read-only bind of a device node
    // would not stop writes), gone again with the unpublish.
    for round in 0..2 {
        ok(
            &format!("publish block read-only #{round}"),
            &plugin,
            node.node_publish_volume(publish_req(&volume, &staging, &target, &cap, true))
                .await,
        );
    }
    assert_eq!(
        cleanup.loops().len(),
        2,
        "the volume's loop and a read-only one"
    );
    let mut dev = std::fs::File::open(&target).expect("open the read-only target");
    dev.seek(SeekFrom::Start(4096 * 100)).expect("seek");
    dev.read_exact(&mut back)
        .expect("read the read-only device");
    assert!(back.iter().all(|b| *b == 0xa5), "the same bytes read-only");
    drop(dev);
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .and_then(|mut d| d.write_all(&[0; 4096]).and_then(|()| d.sync_all()));
    assert!(
        write.is_err(),
        "a write through a read-only block target is refused"
    );
    ok(
        "unpublish block read-only",
        &plugin,
        node.node_unpublish_volume(unpublish_req(&volume, &target))
            .await,
    );
    assert_eq!(cleanup.loops().len(), 1, "the read-only loop is gone");
    ok(
        "unstage block",
        &plugin,
        node.node_unstage_volume(unstage_req(&volume, &staging))
            .await,
    );
    cleanup.assert_clean("after unstaging a block volume");
}

#[tokio::test]
async fn a_read_only_publish_refuses_writes() {
    let (stack, plugin) = start().await;
    let cleanup = Cleanup::new(&[&plugin]);
    let volume = new_volume(&stack, 1).await;
    let ctx = export(&stack, &volume, "node-a", false).await;
    let (staging, target) = paths(&plugin, "ro");
    let cap = mount_cap("ext4", Mode::SingleNodeWriter);
    let mut node = node(&plugin);
    ok(
        "stage",
        &plugin,
        node.node_stage_volume(stage_req(&volume, &ctx, &staging, &cap))
            .await,
    );
    std::fs::write(staging.join("seed.txt"), b"seed").expect("write while staged");
    for round in 0..2 {
        ok(
            &format!("publish read-only #{round}"),
            &plugin,
            node.node_publish_volume(publish_req(&volume, &staging, &target, &cap, true))
                .await,
        );
    }
    assert_eq!(
        std::fs::read(target.join("seed.txt")).expect("read through the ro target"),
        b"seed"
    );
    let err = std::fs::write(target.join("nope.txt"), b"x")
        .expect_err("a write through a read-only target");
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
    ok(
        "unpublish",
        &plugin,
        node.node_unpublish_volume(unpublish_req(&volume, &target))
            .await,
    );
    ok(
        "unstage",
        &plugin,
        node.node_unstage_volume(unstage_req(&volume, &staging))
            .await,
    );

    // A filesystem of another type is never reformatted; nor is an empty volume
    // formatted through a read-only attachment.
    refused(
        "stage ext4 as xfs",
        node.node_stage_volume(stage_req(
            &volume,
            &ctx,
            &staging,
            &mount_cap("xfs", Mode::SingleNodeWriter),
        ))
        .await,
        Code::FailedPrecondition,
        "never reformatted",
    );
    ok(
        "unstage the refused stage",
        &plugin,
        node.node_unstage_volume(unstage_req(&volume, &staging))
            .await,
    );
    let empty = new_volume(&stack, 1).await;
    let ro_ctx = export(&stack, &empty, "node-a", true).await;
    refused(
        "stage an empty volume read-only",
        node.node_stage_volume(stage_req(
            &empty,
            &ro_ctx,
            &staging,
            &mount_cap("", Mode::SingleNodeReaderOnly),
        ))
        .await,
        Code::FailedPrecondition,
        "read-only",
    );
    ok(
        "unstage it",
        &plugin,
        node.node_unstage_volume(unstage_req(&empty, &staging))
            .await,
    );
    cleanup.assert_clean("after the read-only cases");
}

#[tokio::test]
async fn volume_stats_report_usage_and_a_lost_mount() {
    let (stack, plugin) = start().await;
    let cleanup = Cleanup::new(&[&plugin]);
    let volume = new_volume(&stack, 1).await;
    let ctx = export(&stack, &volume, "node-a", false).await;
    let (staging, target) = paths(&plugin, "st");
    let cap = mount_cap("", Mode::SingleNodeWriter);
    let mut node = node(&plugin);
    ok(
        "stage",
        &plugin,
        node.node_stage_volume(stage_req(&volume, &ctx, &staging, &cap))
            .await,
    );
    ok(
        "publish",
        &plugin,
        node.node_publish_volume(publish_req(&volume, &staging, &target, &cap, false))
            .await,
    );

    let before = ok(
        "stats",
        &plugin,
        node.node_get_volume_stats(stats_req(&volume, &target))
            .await,
    );
    let bytes = usage(&before, csi::volume_usage::Unit::Bytes);
    let inodes = usage(&before, csi::volume_usage::Unit::Inodes);
    assert!(
        bytes.total > (GIB as i64) * 9 / 10 && bytes.total <= GIB as i64,
        "{bytes:?}"
    );
    assert!(bytes.used + bytes.available <= bytes.total, "{bytes:?}");
    assert!(inodes.total > 0 && inodes.used > 0, "{inodes:?}");
    assert!(!before.volume_condition.clone().expect("condition").abnormal);

    // 32 MiB in 100 files: used bytes and inodes grow by that much.
    for i in 0..100 {
        let mut f = std::fs::File::create(target.join(format!("f{i}"))).expect("create");
        f.write_all(&vec![7u8; 32 << 20 >> 7]).expect("write");
        f.sync_all().expect("sync");
    }
    let after = ok(
        "stats after writing",
        &plugin,
        node.node_get_volume_stats(stats_req(&volume, &staging))
            .await,
    );
    let grown = usage(&after, csi::volume_usage::Unit::Bytes).used - bytes.used;
    assert!(grown >= 24 << 20, "used bytes grew by {grown}");
    assert!(usage(&after, csi::volume_usage::Unit::Inodes).used >= inodes.used + 100);
    refused(
        "stats at a path the volume is not at",
        node.node_get_volume_stats(stats_req(&volume, &plugin.dir().join("elsewhere")))
            .await,
        Code::NotFound,
        "not staged or published",
    );

    // Expansion asks no more than the device has: success with its size; more is refused.
    let expand = |required: i64| NodeExpandVolumeRequest {
        volume_id: volume.clone(),
        volume_path: target.display().to_string(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        staging_target_path: staging.display().to_string(),
        ..Default::default()
    };
    let grown = ok(
        "expand to the size it has",
        &plugin,
        node.node_expand_volume(expand(GIB as i64)).await,
    );
    assert_eq!(grown.capacity_bytes, GIB as i64);
    refused(
        "expand beyond the device",
        node.node_expand_volume(expand(2 * GIB as i64)).await,
        Code::FailedPrecondition,
        "stage it again",
    );

    // Someone unmounts the target behind the plugin's back: abnormal.
    let out = std::process::Command::new("umount")
        .arg(&target)
        .output()
        .expect("umount");
    assert!(out.status.success(), "{out:?}");
    let lost = ok(
        "stats of a lost mount",
        &plugin,
        node.node_get_volume_stats(stats_req(&volume, &target))
            .await,
    );
    let condition = lost.volume_condition.expect("condition");
    assert!(condition.abnormal, "{condition:?}");
    assert!(
        condition.message.contains("no longer mounted"),
        "{condition:?}"
    );

    ok(
        "unpublish",
        &plugin,
        node.node_unpublish_volume(unpublish_req(&volume, &target))
            .await,
    );
    ok(
        "unstage",
        &plugin,
        node.node_unstage_volume(unstage_req(&volume, &staging))
            .await,
    );
    cleanup.assert_clean("after unstage");
}
