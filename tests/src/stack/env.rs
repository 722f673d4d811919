//! What a stack needs from the machine: the test PostgreSQL, the service
//! binaries (built on first use), a free port.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

/// The PostgreSQL the tests use.
pub fn postgres_url() -> String {
    std::env::var("SCORIA_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://scoria_test:scoria_test_pw@127.0.0.1:5432/scoria_test".to_owned()
    })
}

/// Panics with what to start when PostgreSQL is not reachable.
pub fn require_postgres() {
    let url = postgres_url();
    let hostport = url
        .split('@')
        .next_back()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .to_owned();
    let reachable = std::net::TcpStream::connect_timeout(
        &hostport
            .parse()
            .unwrap_or_else(|_| ([127, 0, 0, 1], 5432).into()),
        Duration::from_secs(2),
    )
    .is_ok();
    assert!(
        reachable,
        "PostgreSQL is not reachable at {hostport} (SCORIA_TEST_DATABASE_URL={url}). Start it: \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or run `scripts/setup.sh` as root."
    );
}

/// Where the service binaries are (and the CLI's and the CSI plugin's, built by
/// the same cargo run, so one set of features serves them all): next to the
/// test binary's `deps/` folder.
/// They are built once per test process with the same cargo and profile, so a
/// test never runs stale binaries.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_owned();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        // The profile of this test binary (`cargo bench` runs a release one).
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut command = std::process::Command::new(cargo);
        // Without the variables cargo sets for this test binary: build scripts
        // (ring's) rerun when cargo's own CARGO_MANIFEST_DIR or CARGO_PKG_* change,
        // so a build from here and one from a shell would rebuild each other.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || key.starts_with("CARGO_BIN_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&key.as_str())
            {
                command.env_remove(key);
            }
        }
        let out = command
            .args([
                "build",
                "--bins",
                "-p",
                "scoria-api",
                "-p",
                "scoria-scheduler",
                "-p",
                "scoria-volume",
                "-p",
                "scoria-cli",
                "-p",
                "scoria-csi",
            ])
            .args(release.then_some("--release"))
            .stdout(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(err) = built {
        panic!("building the service binaries failed: {err}");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing after cargo build",
        path.display()
    );
    path
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
