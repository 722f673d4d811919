//! The operations each service offers the others: one port per remote service, as
//! Mayastor's `operations/<resource>/{traits,client,server}.rs`.
//!
//! Each port is a transport-free trait ([`SchedulerOps`], [`VolumeOps`]), its AMQP
//! client, and its dispatcher that serves any implementation on the bus. The real
//! manager implements the trait and so does the client, so a caller never knows
//! which side of the broker it is on; test fakes implement the same trait
//! (`scoria_common::testing`). Methods that go to one volume service take its
//! `host@backend` as an argument: no client is bound to one host.
//!
//! Every bus method is declared once, in [`scheduler::methods`] and
//! [`volume::methods`]; the client sends and the dispatcher serves through that
//! one declaration, so the two sides cannot disagree on a name or a type.
//!
//! | topic | method | message | kind |
//! | --- | --- | --- | --- |
//! | `scheduler` | `create_volume` | `ScheduleCreateVolume` | cast |
//! | `scheduler` (fanout) | `update_service_capabilities` | `Capabilities` | fanout |
//! | `scheduler` | `get_pools` | `GetPools` -> `PoolList` | call |
//! | `volume.<host@backend>` | `create_volume` | `CreateVolume` | cast |
//! | `volume.<host@backend>` | `delete_volume` | `DeleteVolume` | cast |
//! | `volume.<host@backend>` | `extend_volume` | `ExtendVolume` | cast |
//! | `volume.<host@backend>` | `create_snapshot` | `CreateSnapshot` | cast |
//! | `volume.<host@backend>` | `delete_snapshot` | `DeleteSnapshot` | cast |
//! | `volume.<host@backend>` | `attach_volume` | `AttachVolume` -> `AttachResult` | call |
//! | `volume.<host@backend>` | `detach_volume` | `DetachVolume` -> `DetachResult` | call |
//! | `volume` (fanout) | `publish_service_capabilities` | `PublishCapabilities` | fanout |
//! | `scheduler` | `retype_volume` | `RetypeVolume` | cast |
//! | `scheduler` | `find_migration_host` | `FindMigrationHost` -> `MigrationHost` | call |
//! | `volume.<host@backend>` | `migrate_volume` | `MigrateVolume` | cast |
//! | `volume.<host@backend>` | `export_for_migration` | `MigrationExport` -> `MigrationExportInfo` | call |
//! | `volume.<host@backend>` | `unexport_for_migration` | `MigrationExport` -> `MigrationUnexported` | call |
//! | `volume.<host@backend>` | `cleanup_migration_source` | `CleanupMigrationSource` | cast |

mod error;
pub mod method;
pub mod scheduler;
pub mod volume;

pub use error::{OpsError, OpsResult};
pub use scheduler::{SCHEDULER_TOPIC, SchedulerClient, SchedulerOps, scheduler_dispatcher};
pub use volume::{VOLUME_TOPIC, VolumeClient, VolumeOps, volume_dispatcher, volume_topic};
