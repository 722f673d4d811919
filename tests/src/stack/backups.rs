//! Backups as a test sees them: the BackupService client, waits on a backup's
//! status, the stack's directory backup target and its chunk files, and
//! `qemu-io` on a backend object.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use scoria_proto::v1 as pb;
use tonic::{Response, Status};

use super::{
    Stack,
    clients::{Backups, Clients, POLL, WAIT_TIMEOUT},
};

/// `qemu-io -f <raw|qcow2> -c <command> <path>` on a backend object (the format
/// from its extension): `write -P <pattern> <offset> <len>` or `read -P ...`
/// (a read fails when the bytes differ from the pattern).
pub fn qemu_io_file(path: &Path, command: &str) -> Result<(), String> {
    let format = if path.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    };
    let out = std::process::Command::new("qemu-io")
        .args(["-f", format, "-c", command])
        .arg(path)
        .output()
        .expect("qemu-io is needed (apt-get install qemu-utils, or run scripts/setup.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success()
        && !text.contains("Pattern verification failed")
        && !text.contains("error")
    {
        Ok(())
    } else {
        Err(format!("qemu-io {command} {}: {text}", path.display()))
    }
}

impl Clients {
    /// GetBackup `id`.
    pub async fn get_backup(&self, id: &str) -> Result<pb::Backup, Status> {
        let request = pb::GetBackupRequest { id: id.to_owned() };
        self.backups()
            .get_backup(request)
            .await
            .map(Response::into_inner)
    }
}

// === impl Stack ===

impl Stack {
    /// The BackupService, as a member of `project`.
    pub fn backups(&self, project: &str) -> Backups {
        self.as_member(project).backups()
    }

    /// Polls GetBackup (as a member of `project`) until the backup's status is
    /// `status`; returns it. Fails with the logs after 30 s.
    pub async fn wait_backup_status(
        &self,
        project: &str,
        id: &str,
        status: pb::BackupStatus,
    ) -> pb::Backup {
        let clients = self.as_member(project);
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let backup = clients.get_backup(id).await;
            if let Ok(b) = &backup
                && b.status() == status
            {
                return b.clone();
            }
            assert!(
                Instant::now() < deadline,
                "backup {id} never reached {status:?}: last {backup:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls GetBackup until the backup is NOT_FOUND. Fails after 30 s.
    pub async fn wait_backup_gone(&self, project: &str, id: &str) {
        let clients = self.as_member(project);
        self.wait_not_found(id, || clients.get_backup(id)).await;
    }

    /// The directory backup target every volume service of the stack shares.
    pub fn backup_dir(&self) -> PathBuf {
        self.env
            .iter()
            .find(|(k, _)| k == "SCORIA_BACKUP_TARGET")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| self.dir.path().join("backups"))
    }

    /// The chunk files of the directory target, sorted (temp files excluded).
    pub fn backup_chunk_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.backup_dir().join("chunks"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|fan| {
                std::fs::read_dir(fan.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "zst"))
            // An object being written (or one a kill -9 interrupted) has a temp name.
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".scoria-tmp-"))
            })
            .collect();
        files.sort();
        files
    }
}
