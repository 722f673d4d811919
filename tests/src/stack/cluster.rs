//! Further members of an active-active volume cluster (`SCORIA_VOLUME_CLUSTER`):
//! each a `scoria-volume` of its own host name, data dir and export ports, on
//! the stack's broker and database, with whatever cluster and shared backend
//! directory the stack's environment (or `extra_env`) gives.

use super::{
    Stack, export_ports,
    services::{Heartbeat, Ready},
};

// === impl Stack ===

impl Stack {
    /// Starts a further `scoria-volume` as host `member` (`SCORIA_HOST`), with
    /// the stack's environment plus its own data dir (`<dir>/<member>`) and
    /// export ports, then `extra_env`, and waits for its first heartbeat as
    /// `member@<backend>`. Its process is named `scoria-volume@<member>` (log
    /// file, [`Stack::stop_service`]); returns its `member@backend`.
    pub async fn start_volume_member(
        &mut self,
        member: &str,
        extra_env: &[(&str, &str)],
    ) -> String {
        let name = format!("scoria-volume@{member}");
        assert!(
            !self.children.iter().any(|(n, _)| *n == name),
            "{name} runs already"
        );
        let data_dir = self.dir.path().join(member);
        std::fs::create_dir_all(&data_dir).expect("member data dir");
        let data_dir = data_dir.display().to_string();
        let ports = export_ports();
        let mut env = self.env.clone();
        let own = [
            ("SCORIA_HOST", member),
            ("SCORIA_DATA_DIR", data_dir.as_str()),
            ("SCORIA_EXPORT_PORTS", ports.as_str()),
        ];
        for (k, v) in own.iter().chain(extra_env) {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let backend = env
            .iter()
            .find(|(k, _)| k == "SCORIA_VOLUME_BACKEND")
            .map_or_else(|| self.backend.clone(), |(_, v)| v.clone());
        let host = format!("{member}@{backend}");
        let since = scoria_common::model::now_ms();
        self.spawn_as(&name, "scoria-volume", &env);
        let beat = Heartbeat {
            binary: "scoria-volume",
            host: Some(&host),
            since_ms: since,
        };
        self.wait_started(&name, Ready::Beat(beat)).await;
        host
    }
}
