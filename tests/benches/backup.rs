//! The backup benchmark: a 1 GiB sparse raw image with 10% of its 4 MiB chunks
//! holding random bytes; a full backup, then 10% of the chunks rewritten (half
//! that held data, half that were zero) and an incremental backup; then a
//! restore of each into a fresh sparse file (checked byte for byte, outside
//! the timing). Run with `cargo bench -p scoria-tests --bench backup`.
//!
//! For the directory target (a temp dir) and for the S3 target against moto's
//! server on 127.0.0.1 (started here; skipped with the reason printed when it
//! cannot start). Prints per step the wall time, the throughput in MiB/s of
//! volume size, the chunk objects written and the compressed bytes stored.
//! The image was just written, so its reads come from the page cache; random
//! bytes do not compress, so stored bytes are the data's size.
//!
//! Under `cargo test --benches` (no `--bench` flag) it runs a smoke size (a
//! 16 MiB image, dir target only).
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use scoria_tests::fixtures::s3::{ACCESS_KEY_ID, REGION, S3Server, SECRET_ACCESS_KEY};
use scoria_volume::backup::{
    BackupEngine, BackupTarget, CHUNK_BYTES, DirTarget, MemoryIndex, TargetSettings, open_target,
    testkit::{file_sha256, sparse_image, write_chunks},
};

const MIB: f64 = (1 << 20) as f64;

/// The image: its chunks, those filled at first, those rewritten after the full backup.
struct Plan {
    chunks: u64,
    filled: Vec<u64>,
    changed: Vec<u64>,
}

impl Plan {
    /// `chunks` chunks, every tenth filled; then a tenth rewritten, half of
    /// them among the filled ones, half among the zero ones.
    fn new(chunks: u64) -> Self {
        let filled: Vec<u64> = (0..chunks).step_by(10).collect();
        let tenth = filled.len();
        let changed = filled
            .iter()
            .step_by(2)
            .copied()
            .chain((5..chunks).step_by(20))
            .take(tenth)
            .collect();
        Self {
            chunks,
            filled,
            changed,
        }
    }

    fn size(&self) -> u64 {
        self.chunks * CHUNK_BYTES
    }
}

fn row(step: &str, size: u64, took: Duration, written: Option<(u64, u64)>) {
    let mib = size as f64 / MIB;
    let objects = written
        .map(|(chunks, bytes)| {
            format!(
                "{chunks:>5} chunks written, {:>8.1} MiB stored",
                bytes as f64 / MIB
            )
        })
        .unwrap_or_default();
    println!(
        "  {step:<22} {:>8.3} s  {:>8.1} MiB/s   {objects}",
        took.as_secs_f64(),
        mib / took.as_secs_f64()
    );
}

async fn run(label: &str, target: Arc<dyn BackupTarget>, dir: &Path, plan: &Plan) {
    let engine = BackupEngine::new(target, Arc::new(MemoryIndex::new()), dir.join("scratch"));
    let image = dir.join("image");
    let size = plan.size();
    sparse_image(&image, size);
    write_chunks(&image, CHUNK_BYTES, plan.filled.iter().copied(), 1);
    println!(
        "{label}: {:.0} MiB image, {} chunks of {} MiB, {} with data",
        size as f64 / MIB,
        plan.chunks,
        CHUNK_BYTES >> 20,
        plan.filled.len()
    );

    let started = Instant::now();
    let full = engine
        .backup("bench-full", "vol", &image, None)
        .await
        .unwrap();
    row(
        "full backup",
        size,
        started.elapsed(),
        Some((full.written_chunks, full.stored_bytes)),
    );
    let full_sum = file_sha256(&image);

    write_chunks(&image, CHUNK_BYTES, plan.changed.iter().copied(), 2);
    let parent = engine.manifest("bench-full").await.unwrap();
    let started = Instant::now();
    let incr = engine
        .backup("bench-incr", "vol", &image, Some(&parent))
        .await
        .unwrap();
    row(
        &format!("incremental ({} changed)", plan.changed.len()),
        size,
        started.elapsed(),
        Some((incr.written_chunks, incr.stored_bytes)),
    );
    assert_eq!(incr.written_chunks, plan.changed.len() as u64);
    let incr_sum = file_sha256(&image);

    for (id, sum) in [("bench-full", full_sum), ("bench-incr", incr_sum)] {
        let dest = dir.join(format!("restore-{id}"));
        sparse_image(&dest, size);
        let started = Instant::now();
        engine.restore(id, &dest).await.unwrap();
        row(
            &format!("restore {}", &id[6..]),
            size,
            started.elapsed(),
            None,
        );
        assert_eq!(file_sha256(&dest), sum, "{id} restored other bytes");
        std::fs::remove_file(&dest).unwrap();
    }
    for id in ["bench-full", "bench-incr"] {
        engine.delete(id).await.unwrap();
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // 1 GiB in 4 MiB chunks; the smoke size is 16 MiB.
    let plan = Plan::new(if full { 256 } else { 4 });
    let dir = tempfile::Builder::new()
        .prefix("scoria-bench-backup-")
        .tempdir()
        .unwrap();

    let repo = dir.path().join("repo");
    let target = Arc::new(DirTarget::open(&repo).unwrap());
    let work = dir.path().join("dir");
    std::fs::create_dir(&work).unwrap();
    run(
        &format!("dir target ({})", repo.display()),
        target,
        &work,
        &plan,
    )
    .await;

    if !full {
        return;
    }
    let server = match S3Server::start() {
        Ok(server) => server,
        Err(e) => {
            println!("s3 target: skipped, the S3 server did not start: {e}");
            return;
        }
    };
    server.create_bucket("bench").unwrap();
    let settings = TargetSettings {
        url: "s3://bench/repo".into(),
        s3_endpoint: Some(server.endpoint()),
        s3_region: Some(REGION.into()),
        s3_access_key_id: Some(ACCESS_KEY_ID.into()),
        s3_secret_access_key: Some(SECRET_ACCESS_KEY.into()),
        s3_allow_http: true,
    };
    let work = dir.path().join("s3");
    std::fs::create_dir(&work).unwrap();
    let label = format!("s3 target (moto server at {})", server.endpoint());
    run(&label, open_target(&settings).unwrap(), &work, &plan).await;
}
