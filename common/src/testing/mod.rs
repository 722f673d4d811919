//! Test support shared by every crate's tests (feature `testing`): a temporary
//! SQLite database and recording fakes of the ports ([`SchedulerOps`],
//! [`VolumeOps`], [`Notifications`]). Unit tests only: an integration test runs the
//! real services against the real broker and database.
//!
//! [`SchedulerOps`]: crate::ops::SchedulerOps
//! [`VolumeOps`]: crate::ops::VolumeOps
//! [`Notifications`]: crate::events::Notifications
#![allow(clippy::unwrap_used)]

mod db;
mod notifications;
mod scheduler;
mod volumes;

pub use db::TempDb;
pub use notifications::{Announced, RecordingNotifier};
pub use scheduler::{IdleScheduler, RecordingScheduler};
pub use volumes::{RecordingVolumes, VolumeCall};

use crate::{ops::OpsError, rpc::RpcError};

/// The error a fake returns while "the broker is down": undelivered, UNAVAILABLE.
pub fn broker_down() -> OpsError {
    OpsError::Bus(RpcError::Unavailable(
        "the fake bus is down (test)".to_owned(),
    ))
}
