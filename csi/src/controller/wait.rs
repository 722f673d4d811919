//! Following a Scoria volume, snapshot or attachment until it settles: its
//! `Watch*` stream, or polling its `Get*` when the stream cannot serve
//! (UNIMPLEMENTED, broken off, ended). The CO's own deadline cancels a wait
//! by dropping the call; [`DEADLINE`] bounds one that nobody cancels.

use std::time::Duration;

use scoria_cli::connect::Api;
use scoria_proto::v1 as pb;
use tokio::time::Instant;
use tonic::{Code, Status, Streaming};

use crate::error::{Error, Result};

/// The longest wait for one resource.
pub const DEADLINE: Duration = Duration::from_secs(300);
/// How often a resource is polled without a stream.
const POLL: Duration = Duration::from_millis(250);

/// Where a followed resource is, as the caller judges it.
pub enum Step<T> {
    /// Still moving.
    Pending,
    /// Settled: the value to return.
    Done(T),
    /// Settled badly.
    Failed(Error),
}

/// A Scoria resource with a `Get*` and a `Watch*`.
pub trait Watched: Sized + Send {
    /// One message of its watch stream.
    type Message: Send + 'static;
    /// `volume`, `snapshot`, `attachment`.
    const KIND: &'static str;
    /// Opens its watch stream.
    fn watch(
        api: &Api,
        id: &str,
    ) -> impl Future<Output = Result<Streaming<Self::Message>, Status>> + Send;
    /// Reads it once.
    fn get(api: &Api, id: &str) -> impl Future<Output = Result<Self, Status>> + Send;
    /// The resource in a message (`None` once it is gone).
    fn seen(message: Self::Message) -> Option<Self>;
}

/// Follows resource `id` until `judge` says done or failed (it sees `None`
/// once the resource is gone); DEADLINE_EXCEEDED after [`DEADLINE`].
pub async fn until<T: Watched, R>(
    api: &Api,
    id: &str,
    mut judge: impl FnMut(Option<&T>) -> Step<R>,
) -> Result<R> {
    let deadline = Instant::now() + DEADLINE;
    let timeout = || {
        Error::Timeout(format!(
            "{} {id} did not settle within {DEADLINE:?}",
            T::KIND
        ))
    };
    match tokio::time::timeout_at(deadline, T::watch(api, id)).await {
        Err(_) => return Err(timeout()),
        Ok(Ok(mut stream)) => loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => return Err(timeout()),
                Ok(Ok(Some(message))) => match judge(T::seen(message).as_ref()) {
                    Step::Pending => {}
                    Step::Done(r) => return Ok(r),
                    Step::Failed(e) => return Err(e),
                },
                // Ended or broke off: poll from here.
                Ok(Ok(None)) | Ok(Err(_)) => break,
            }
        },
        // No streams here, or already gone: polling says what that means.
        Ok(Err(_)) => {}
    }
    loop {
        let seen = match T::get(api, id).await {
            Ok(t) => Some(t),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(Error::scoria(format!("get {} {id}", T::KIND))(s)),
        };
        match judge(seen.as_ref()) {
            Step::Pending => {}
            Step::Done(r) => return Ok(r),
            Step::Failed(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(timeout());
        }
        tokio::time::sleep(POLL).await;
    }
}

// === impl Watched ===

impl Watched for pb::Volume {
    type Message = pb::WatchVolumeResponse;
    const KIND: &'static str = "volume";

    async fn watch(api: &Api, id: &str) -> Result<Streaming<Self::Message>, Status> {
        let request = pb::WatchVolumeRequest { id: id.to_owned() };
        api.volumes()
            .watch_volume(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn get(api: &Api, id: &str) -> Result<Self, Status> {
        let request = pb::GetVolumeRequest { id: id.to_owned() };
        api.volumes()
            .get_volume(request)
            .await
            .map(|r| r.into_inner())
    }

    fn seen(message: Self::Message) -> Option<Self> {
        if message.deleted {
            None
        } else {
            message.volume
        }
    }
}

impl Watched for pb::Snapshot {
    type Message = pb::WatchSnapshotResponse;
    const KIND: &'static str = "snapshot";

    async fn watch(api: &Api, id: &str) -> Result<Streaming<Self::Message>, Status> {
        let request = pb::WatchSnapshotRequest { id: id.to_owned() };
        api.snapshots()
            .watch_snapshot(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn get(api: &Api, id: &str) -> Result<Self, Status> {
        let request = pb::GetSnapshotRequest { id: id.to_owned() };
        api.snapshots()
            .get_snapshot(request)
            .await
            .map(|r| r.into_inner())
    }

    fn seen(message: Self::Message) -> Option<Self> {
        if message.deleted {
            None
        } else {
            message.snapshot
        }
    }
}

impl Watched for pb::Attachment {
    type Message = pb::WatchAttachmentResponse;
    const KIND: &'static str = "attachment";

    async fn watch(api: &Api, id: &str) -> Result<Streaming<Self::Message>, Status> {
        let request = pb::WatchAttachmentRequest { id: id.to_owned() };
        api.attachments()
            .watch_attachment(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn get(api: &Api, id: &str) -> Result<Self, Status> {
        let request = pb::GetAttachmentRequest { id: id.to_owned() };
        api.attachments()
            .get_attachment(request)
            .await
            .map(|r| r.into_inner())
    }

    fn seen(message: Self::Message) -> Option<Self> {
        if message.deleted {
            None
        } else {
            message.attachment
        }
    }
}

/// Waits until resource `id` is gone.
pub async fn gone<T: Watched>(
    api: &Api,
    id: &str,
    failed: impl Fn(&T) -> Option<Error>,
) -> Result<()> {
    until::<T, ()>(api, id, |seen| match seen {
        None => Step::Done(()),
        Some(t) => match failed(t) {
            Some(e) => Step::Failed(e),
            None => Step::Pending,
        },
    })
    .await
}
