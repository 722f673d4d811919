//! A fleet: several instances of every service on one PostgreSQL database, one
//! broker and one control exchange, as a deployment that outgrew one process of
//! each runs. Two API instances (`scoria-api`, `scoria-api@b`), two schedulers
//! (`scoria-scheduler`, `scoria-scheduler@b`, competing for the one scheduler
//! queue) and three volume services (`scoria-volume` on backend `file`,
//! `scoria-volume@file2`, `scoria-volume@file3`), each with its own capacity.
//! Built on [`Stack`]: every process is killed, and the database and broker
//! objects removed, when the fleet is dropped. Fleets of one test process run
//! one at a time, each process with a pool of 4 connections.

use std::time::{Duration, Instant};

use scoria_proto::v1 as pb;

use super::{Caller, Clients, DbKind, Stack, channel};

/// The queue type of every fleet, in this one place: quorum queues are what a
/// deployment of several instances runs on. Until `SCORIA_RPC_QUEUE_TYPE` is
/// merged the services ignore it (an unknown `SCORIA_*` variable is not read)
/// and declare classic queues; switching is this line.
pub const QUEUE_TYPE: (&str, &str) = ("SCORIA_RPC_QUEUE_TYPE", "quorum");

/// The process names of the fleet's API instances, in [`Fleet::api`] order.
pub const APIS: [&str; 2] = ["scoria-api", "scoria-api@b"];
/// The process names of the fleet's schedulers.
pub const SCHEDULERS: [&str; 2] = ["scoria-scheduler", "scoria-scheduler@b"];
/// The process names of the fleet's volume services.
pub const VOLUME_SERVICES: [&str; 3] = [
    "scoria-volume",
    "scoria-volume@file2",
    "scoria-volume@file3",
];
/// The backends of the fleet's volume services, in [`VOLUME_SERVICES`] order.
const BACKENDS: [&str; 3] = ["file", "file2", "file3"];

/// One fleet at a time in a test process: seven processes each, and the
/// PostgreSQL they share holds only so many connections.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the fleet may take for every scheduler to see every backend.
const POOLS_TIMEOUT: Duration = Duration::from_secs(60);

/// What a fleet is started with.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The capacity (`SCORIA_VOLUME_CAPACITY_GIB`) of each volume service, in
    /// [`VOLUME_SERVICES`] order.
    pub capacities_gib: [u64; 3],
    /// Further environment of every process.
    pub env: Vec<(String, String)>,
    /// `(upstream, via)`: the services reach the database at `via` (a proxy's
    /// `host:port`) instead of `upstream` (the test PostgreSQL's), while the
    /// fleet's own connection goes straight to it.
    pub database_via: Option<(String, String)>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            capacities_gib: [1000; 3],
            env: Vec::new(),
            database_via: None,
        }
    }
}

/// A running fleet (see the module docs).
pub struct Fleet {
    /// The stack holding every process, its database and its logs.
    pub stack: Stack,
    /// The `host:port` of each API instance, in [`APIS`] order.
    pub apis: [String; 2],
    /// The `host@backend` of each volume service, in [`VOLUME_SERVICES`] order.
    pub volume_hosts: [String; 3],
    /// This fleet's turn, held until after the stack is gone (fields drop in
    /// declaration order).
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

// === impl Fleet ===

impl Fleet {
    /// Starts the fleet on a fresh PostgreSQL database and waits until every
    /// process serves or beats and every backend is in the pools.
    pub async fn start(options: FleetOptions) -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        let first = options.capacities_gib[0].to_string();
        let mut env: Vec<(&str, &str)> = vec![
            QUEUE_TYPE,
            ("SCORIA_VOLUME_CAPACITY_GIB", &first),
            // 7 processes x 4 = 28 connections at most: several fleets and the
            // suite's other stacks share one PostgreSQL of `max_connections` 100.
            ("SCORIA_DATABASE_MAX_CONNECTIONS", "4"),
        ];
        env.extend(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let via = options.database_via.clone();
        let mut stack = Stack::start_routed(DbKind::Postgres, &env, |url| match &via {
            Some((upstream, via)) => url.replacen(upstream.as_str(), via, 1),
            None => url.to_owned(),
        })
        .await;
        let mut volume_hosts = [stack.volume_host.clone(), String::new(), String::new()];
        for i in 1..3 {
            let capacity = options.capacities_gib[i].to_string();
            volume_hosts[i] = stack
                .start_volume_service(BACKENDS[i], &[("SCORIA_VOLUME_CAPACITY_GIB", &capacity)])
                .await;
        }
        // Started after every volume service: it asks them all for reports.
        stack.start_scheduler_instance("b", &[]).await;
        let second = stack.start_api_instance("b").await;
        let fleet = Self {
            apis: [stack.api.clone(), second],
            stack,
            volume_hosts,
            _turn: turn,
        };
        fleet.wait_pools().await;
        fleet
    }

    /// Every client of API instance `i` (0 or 1), acting as `caller`.
    pub fn api(&self, i: usize, caller: Caller) -> Clients {
        if i == 0 {
            self.stack.clients(caller)
        } else {
            Clients::new(channel(&self.apis[i]), caller)
        }
    }

    /// Every client of API instance `i`, as a member of `project`.
    pub fn member(&self, i: usize, project: &str) -> Clients {
        self.api(i, Caller::member(project))
    }

    /// The log of process `name`, without its colours.
    pub fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.stack.log_path(name)).unwrap_or_default();
        strip_sgr(&text)
    }

    /// The ids among `ids` that scheduler process `name` placed (its
    /// `volume scheduled` lines).
    pub fn placed_by<'a>(&self, name: &str, ids: &'a [String]) -> Vec<&'a String> {
        let log = self.log(name);
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("volume scheduled"))
            .collect();
        ids.iter()
            .filter(|id| lines.iter().any(|l| l.contains(id.as_str())))
            .collect()
    }

    /// Waits until ListPools (through each API) shows every volume service's
    /// pool: both schedulers answer it, so each has seen every backend.
    async fn wait_pools(&self) {
        let deadline = Instant::now() + POOLS_TIMEOUT;
        let mut seen = [false, false];
        loop {
            for (i, seen) in seen.iter_mut().enumerate() {
                let mut admin = self.api(i, Caller::admin("admin-project")).admin();
                let pools = admin.list_pools(pb::ListPoolsRequest::default()).await;
                let names: Vec<String> = pools
                    .map(|r| r.into_inner().pools.into_iter().map(|p| p.name).collect())
                    .unwrap_or_default();
                *seen |= self
                    .volume_hosts
                    .iter()
                    .all(|h| names.iter().any(|n| n.starts_with(h.as_str())));
            }
            if seen.iter().all(|s| *s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the schedulers never saw every backend {:?}\n{}",
                self.volume_hosts,
                self.stack.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `text` without its SGR colour sequences (`ESC [ ... m`).
pub fn strip_sgr(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
