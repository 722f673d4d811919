//! A property test of every public RPC: `proptest` makes request messages of
//! every method with generated values (empty, plausible and arbitrary Unicode
//! strings, control characters and NUL, strings of 250 to 20,000 characters,
//! odd numbers, maps of any size) and each is sent, as an admin, to two real
//! stacks at once, one on SQLite and one on PostgreSQL. For every request:
//!
//! - no INTERNAL (nor UNKNOWN or DATA_LOSS, what a panic would look like);
//! - every INVALID_ARGUMENT names a field (a `BadRequest` violation the message
//!   names too);
//! - a refusal writes nothing (the row counts of every table stay);
//! - both databases give the same code (and field).
//!
//! Every project of the two stacks has a quota of zero, so no request starts
//! background work that would change the counts behind a later case's back;
//! what a request writes at once (volume types, quotas) it writes on success only.
//! The API logs must show no panic and no internal error at the end.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use proptest::{
    collection::{btree_map, vec},
    prelude::*,
    strategy::BoxedStrategy,
    test_runner::{Config, TestCaseError, TestRunner},
};
use scoria_proto::v1 as pb;
use scoria_tests::{
    calls::Call,
    stack::{Clients, DbKind, Stack},
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::UNKNOWN_ID;
use crate::counts;

/// Cases per group of RPCs.
const CASES: u32 = 64;

/// A request of any public RPC: the unary ones, and the `Watch*` streams (whose
/// first answer is what counts).
#[derive(Debug, Clone)]
enum Rpc {
    Unary(Call),
    WatchVolume(pb::WatchVolumeRequest),
    WatchSnapshot(pb::WatchSnapshotRequest),
    WatchAttachment(pb::WatchAttachmentRequest),
}

impl Rpc {
    fn method(&self) -> &'static str {
        match self {
            Rpc::Unary(call) => call.method(),
            Rpc::WatchVolume(_) => "WatchVolume",
            Rpc::WatchSnapshot(_) => "WatchSnapshot",
            Rpc::WatchAttachment(_) => "WatchAttachment",
        }
    }

    async fn send(&self, clients: &Clients) -> Result<(), Status> {
        match self.clone() {
            Rpc::Unary(call) => call.send(clients).await.map(drop),
            Rpc::WatchVolume(req) => clients.volumes().watch_volume(req).await.map(drop),
            Rpc::WatchSnapshot(req) => clients.snapshots().watch_snapshot(req).await.map(drop),
            Rpc::WatchAttachment(req) => {
                clients.attachments().watch_attachment(req).await.map(drop)
            }
        }
    }
}

fn unary<T: Into<Call>>(request: T) -> Rpc {
    Rpc::Unary(request.into())
}

// === strategies ===

/// Strings of every sort a client could send.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        5 => Just(String::new()),
        5 => "[a-z0-9_.:@ -]{1,24}",
        2 => any::<String>(),
        2 => vec(prop::char::range('\0', '\u{a0}'), 0..12).prop_map(String::from_iter),
        1 => (0usize..4, 250usize..262)
            .prop_map(|(c, n)| ["x", "é", "\0", "🚀"][c].repeat(n)),
        1 => (1usize..20_000).prop_map(|n| "y".repeat(n)),
        1 => prop::sample::select(vec![
            "__DEFAULT__", "fuzz-type", "scoria-volume", "scoria-api", "volumes",
            "gigabytes", "<is> True", "node@file", "node@file#pool", " ", "\t",
        ])
        .prop_map(str::to_owned),
    ]
    .boxed()
}

/// Ids: a UUID nothing has, random UUIDs (odd case too), or any text.
fn id() -> BoxedStrategy<String> {
    prop_oneof![
        2 => Just(UNKNOWN_ID.to_owned()),
        2 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        1 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).simple().to_string().to_uppercase()),
        3 => text(),
    ]
    .boxed()
}

/// Maps of text, from empty to over every limit.
fn map() -> BoxedStrategy<std::collections::BTreeMap<String, String>> {
    prop_oneof![
        3 => btree_map(text(), text(), 0..3),
        1 => btree_map("[a-z]{1,8}", "[a-z]{0,8}", 120..140),
    ]
    .boxed()
}

fn size() -> BoxedStrategy<u64> {
    prop_oneof![4 => 0u64..20, 1 => any::<u64>(), 1 => Just(u64::MAX)].boxed()
}

/// Page sizes, statuses, modes: mostly small, sometimes anything.
fn signed() -> BoxedStrategy<i32> {
    prop_oneof![
        4 => -1i32..10,
        1 => -2i32..1200,
        1 => any::<i32>(),
        1 => Just(i32::MIN),
        1 => Just(i32::MAX),
    ]
    .boxed()
}

/// A page token: mostly none, else anything.
fn token() -> BoxedStrategy<String> {
    prop_oneof![3 => Just(String::new()), 1 => text()].boxed()
}

fn mask() -> BoxedStrategy<Option<prost_types::FieldMask>> {
    prop::option::of(vec(text(), 0..3).prop_map(|paths| prost_types::FieldMask { paths })).boxed()
}

fn volume_rpcs() -> BoxedStrategy<Rpc> {
    use pb::create_volume_request::Source;
    let source = prop::option::weighted(
        0.3,
        prop_oneof![
            id().prop_map(Source::SnapshotId),
            id().prop_map(Source::SourceVolumeId),
        ],
    );
    let create = (
        (text(), text(), size(), text(), text()),
        (map(), text(), source),
    )
        .prop_map(
            |(
                (name, description, size_gib, volume_type, availability_zone),
                (metadata, request_id, source),
            )| {
                unary(pb::CreateVolumeRequest {
                    name,
                    description,
                    size_gib,
                    volume_type,
                    availability_zone,
                    metadata,
                    request_id,
                    source,
                })
            },
        );
    let list = (signed(), token(), signed(), text(), any::<bool>()).prop_map(
        |(page_size, page_token, status, name, all_projects)| {
            unary(pb::ListVolumesRequest {
                page_size,
                page_token,
                status,
                name,
                all_projects,
            })
        },
    );
    let update = (id(), mask(), text(), text(), map()).prop_map(
        |(id, update_mask, name, description, metadata)| {
            unary(pb::UpdateVolumeRequest {
                id,
                update_mask,
                name,
                description,
                metadata,
            })
        },
    );
    // Plausible but for one or two fields: these get past the checks to the
    // quota (zero), in the same transaction that would write the volume.
    let plausible = (
        text(),
        text(),
        1u64..4,
        map(),
        prop_oneof![Just(String::new()), text()],
    )
        .prop_map(|(name, description, size_gib, metadata, request_id)| {
            unary(pb::CreateVolumeRequest {
                name,
                description,
                size_gib,
                metadata,
                request_id,
                ..Default::default()
            })
        });
    prop_oneof![
        create,
        plausible,
        id().prop_map(|id| unary(pb::GetVolumeRequest { id })),
        list,
        update,
        id().prop_map(|id| unary(pb::DeleteVolumeRequest { id })),
        (id(), size())
            .prop_map(|(id, new_size_gib)| unary(pb::ExtendVolumeRequest { id, new_size_gib })),
        id().prop_map(|id| Rpc::WatchVolume(pb::WatchVolumeRequest { id })),
    ]
    .boxed()
}

fn snapshot_rpcs() -> BoxedStrategy<Rpc> {
    prop_oneof![
        (id(), text(), text(), any::<bool>()).prop_map(|(volume_id, name, description, force)| {
            unary(pb::CreateSnapshotRequest {
                volume_id,
                name,
                description,
                force,
            })
        }),
        id().prop_map(|id| unary(pb::GetSnapshotRequest { id })),
        (signed(), token(), id(), signed()).prop_map(
            |(page_size, page_token, volume_id, status)| {
                unary(pb::ListSnapshotsRequest {
                    page_size,
                    page_token,
                    volume_id,
                    status,
                })
            }
        ),
        id().prop_map(|id| unary(pb::DeleteSnapshotRequest { id })),
        id().prop_map(|id| Rpc::WatchSnapshot(pb::WatchSnapshotRequest { id })),
    ]
    .boxed()
}

fn attachment_rpcs() -> BoxedStrategy<Rpc> {
    let connector = prop::option::of((text(), text(), text(), map()).prop_map(
        |(host, ip, initiator, properties)| pb::Connector {
            host,
            ip,
            initiator,
            properties,
        },
    ));
    prop_oneof![
        (id(), connector, text(), signed()).prop_map(
            |(volume_id, connector, instance_id, mode)| {
                unary(pb::CreateAttachmentRequest {
                    volume_id,
                    connector,
                    instance_id,
                    mode,
                })
            }
        ),
        id().prop_map(|id| unary(pb::GetAttachmentRequest { id })),
        (id(), any::<u32>(), token()).prop_map(|(volume_id, page_size, page_token)| {
            unary(pb::ListAttachmentsRequest {
                volume_id,
                page_size,
                page_token,
            })
        }),
        id().prop_map(|id| unary(pb::DeleteAttachmentRequest { id })),
        id().prop_map(|id| Rpc::WatchAttachment(pb::WatchAttachmentRequest { id })),
    ]
    .boxed()
}

fn volume_type_rpcs() -> BoxedStrategy<Rpc> {
    prop_oneof![
        (text(), text(), map()).prop_map(|(name, description, extra_specs)| {
            unary(pb::CreateVolumeTypeRequest {
                name,
                description,
                extra_specs,
            })
        }),
        text().prop_map(|id_or_name| unary(pb::GetVolumeTypeRequest { id_or_name })),
        Just(unary(pb::ListVolumeTypesRequest {})),
        (text(), mask(), text(), map()).prop_map(
            |(id_or_name, update_mask, description, extra_specs)| {
                unary(pb::UpdateVolumeTypeRequest {
                    id_or_name,
                    update_mask,
                    description,
                    extra_specs,
                })
            }
        ),
        text().prop_map(|id_or_name| unary(pb::DeleteVolumeTypeRequest { id_or_name })),
        Just(unary(pb::ListAvailabilityZonesRequest {})),
    ]
    .boxed()
}

fn admin_rpcs() -> BoxedStrategy<Rpc> {
    prop_oneof![
        text().prop_map(|binary| unary(pb::ListServicesRequest { binary })),
        (text(), text(), any::<bool>(), text()).prop_map(|(binary, host, enabled, reason)| {
            unary(pb::SetServiceEnabledRequest {
                binary,
                host,
                enabled,
                reason,
            })
        }),
        (id(), signed()).prop_map(|(volume_id, status)| unary(pb::ResetVolumeStatusRequest {
            volume_id,
            status
        })),
        text().prop_map(|host| unary(pb::ListPoolsRequest { host })),
        text().prop_map(|project_id| unary(pb::CheckQuotaUsageRequest { project_id })),
    ]
    .boxed()
}

fn quota_rpcs() -> BoxedStrategy<Rpc> {
    let limits = prop_oneof![
        btree_map(text(), any::<i64>(), 0..4),
        btree_map(
            prop::sample::select(vec!["volumes", "gigabytes", "snapshots", "attachments"])
                .prop_map(str::to_owned),
            prop_oneof![-3i64..5, any::<i64>()],
            1..3
        ),
    ];
    prop_oneof![
        text().prop_map(|project_id| unary(pb::GetQuotaRequest { project_id })),
        (text(), limits)
            .prop_map(|(project_id, limits)| unary(pb::UpdateQuotaRequest { project_id, limits })),
        text().prop_map(|project_id| unary(pb::DeleteQuotaRequest { project_id })),
        Just(unary(pb::GetDefaultQuotaRequest {})),
    ]
    .boxed()
}

// === the property ===

/// What one stack answered: the code and, for INVALID_ARGUMENT, the field.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    code: Code,
    field: Option<String>,
}

/// Sends `rpc` to `stack` and checks the answer (see the module docs).
async fn answer(stack: &Stack, clients: &Clients, rpc: &Rpc) -> Result<Answer, TestCaseError> {
    let before = counts(stack).await;
    let Err(status) = rpc.send(clients).await else {
        return Ok(Answer {
            code: Code::Ok,
            field: None,
        });
    };
    let what = format!("{:?} {}: {status:?}", stack.kind(), rpc.method());
    prop_assert!(
        !matches!(
            status.code(),
            Code::Internal | Code::Unknown | Code::DataLoss
        ),
        "{what}"
    );
    let field = if status.code() == Code::InvalidArgument {
        let named = status
            .get_details_bad_request()
            .and_then(|bad| bad.field_violations.first().map(|v| v.field.clone()))
            .unwrap_or_default();
        prop_assert!(!named.is_empty(), "no field named: {what}");
        prop_assert!(
            status.message().contains(&named),
            "the message does not name {named}: {what}"
        );
        Some(named)
    } else {
        None
    };
    let after = counts(stack).await;
    prop_assert_eq!(&before, &after, "a refusal wrote: {}", what);
    Ok(Answer {
        code: status.code(),
        field,
    })
}

/// The two stacks, SQLite and PostgreSQL, their admin clients, and the
/// runtime to reach them from proptest's (synchronous) runner.
struct Stacks {
    sqlite: (Stack, Clients),
    postgres: (Stack, Clients),
    runtime: tokio::runtime::Handle,
    /// How often each method got each code (printed at the end, to show what
    /// the generated values reached).
    tally: Mutex<BTreeMap<(&'static str, String), usize>>,
}

impl Stacks {
    async fn start() -> Self {
        // Zero quotas: no request gets as far as work in the background.
        let env = [
            ("SCORIA_QUOTA_VOLUMES", "0"),
            ("SCORIA_QUOTA_GIGABYTES", "0"),
            ("SCORIA_QUOTA_SNAPSHOTS", "0"),
            ("SCORIA_QUOTA_ATTACHMENTS", "0"),
            ("SCORIA_API_RATE_LIMIT", "0"),
        ];
        let (sqlite, postgres) = tokio::join!(
            Stack::start_with(DbKind::Sqlite, &env),
            Stack::start_with(DbKind::Postgres, &env)
        );
        let with_type = async |stack: Stack| {
            let clients = stack.as_admin("fuzz");
            clients
                .volume_types()
                .create_volume_type(pb::CreateVolumeTypeRequest {
                    name: "fuzz-type".into(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("create fuzz-type: {e:?}"));
            (stack, clients)
        };
        Self {
            sqlite: with_type(sqlite).await,
            postgres: with_type(postgres).await,
            runtime: tokio::runtime::Handle::current(),
            tally: Mutex::default(),
        }
    }

    /// The property, for one request.
    fn check(&self, rpc: Rpc) -> Result<(), TestCaseError> {
        tokio::task::block_in_place(|| {
            self.runtime.block_on(async {
                let (on_sqlite, on_postgres) = tokio::join!(
                    answer(&self.sqlite.0, &self.sqlite.1, &rpc),
                    answer(&self.postgres.0, &self.postgres.1, &rpc)
                );
                let (on_sqlite, on_postgres) = (on_sqlite?, on_postgres?);
                *self
                    .tally
                    .lock()
                    .unwrap()
                    .entry((rpc.method(), format!("{:?}", on_sqlite.code)))
                    .or_default() += 1;
                prop_assert_eq!(
                    &on_sqlite,
                    &on_postgres,
                    "{} answered differently on SQLite and PostgreSQL",
                    rpc.method()
                );
                Ok(())
            })
        })
    }

    /// No panic and no internal error in either API's log.
    fn assert_clean_logs(&self) {
        for stack in [&self.sqlite.0, &self.postgres.0] {
            let log = std::fs::read_to_string(stack.log_path("scoria-api")).unwrap_or_default();
            for bad in ["panicked", "internal error"] {
                assert!(
                    !log.contains(bad),
                    "{:?}: the API log has {bad:?}:\n{}",
                    stack.kind(),
                    stack.logs()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_with_generated_values_alike_on_sqlite_and_postgres() {
    let stacks = Arc::new(Stacks::start().await);
    let groups: [(&str, BoxedStrategy<Rpc>); 6] = [
        ("volumes", volume_rpcs()),
        ("snapshots", snapshot_rpcs()),
        ("attachments", attachment_rpcs()),
        ("volume types", volume_type_rpcs()),
        ("admin", admin_rpcs()),
        ("quotas", quota_rpcs()),
    ];
    for (group, strategy) in groups {
        let config = Config {
            cases: CASES,
            // Nothing written next to the sources; a failure prints its case.
            failure_persistence: None,
            max_shrink_iters: 256,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let stacks = stacks.clone();
        if let Err(err) = runner.run(&strategy, move |rpc| stacks.check(rpc)) {
            panic!("{group}: {err}");
        }
    }
    stacks.assert_clean_logs();
    for ((method, code), n) in stacks.tally.lock().unwrap().iter() {
        eprintln!("{method:>22} {code:<18} {n}");
    }
}
