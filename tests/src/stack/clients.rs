//! The API as a test speaks to it: the generated tonic clients over one shared
//! HTTP/2 [`Channel`], each acting as a [`Caller`] (the headers the API's
//! `noauth` mode reads: `x-project-id`, `x-roles`), and the waits built on them.

use std::time::{Duration, Instant};

use scoria_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient,
    attachment_service_client::AttachmentServiceClient,
    availability_zone_service_client::AvailabilityZoneServiceClient,
    backup_service_client::BackupServiceClient, quota_service_client::QuotaServiceClient,
    snapshot_service_client::SnapshotServiceClient, transfer_service_client::TransferServiceClient,
    volume_service_client::VolumeServiceClient,
    volume_type_service_client::VolumeTypeServiceClient,
};
use tonic::{
    Code, Request, Response, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::Stack;

/// How long a wait on a volume or snapshot status may take.
pub(super) const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a wait polls.
pub(super) const POLL: Duration = Duration::from_millis(50);

/// A lazy channel to the API at `addr` (`host:port`): it connects on first use
/// and again after the API restarts; a connect gives up after 5 s, a call
/// after 30 s.
pub fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("an API address makes a valid URI")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

/// A lazy TLS channel to the API at `addr` (`127.0.0.1:port`), trusting
/// `tls.ca` and showing `tls.identity` if any.
pub fn tls_channel(addr: &str, tls: &super::ClientTls) -> Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    let read = |p: &std::path::Path| {
        std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    };
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&tls.ca)));
    if let Some(pair) = &tls.identity {
        config = config.identity(Identity::from_pem(read(&pair.cert), read(&pair.key)));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("an API address makes a valid URI")
        .tls_config(config)
        .expect("a TLS configuration")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

/// Who a client acts as in the API's `noauth` mode: the `x-project-id` and
/// `x-roles` headers it puts on every request (none for an anonymous one).
#[derive(Debug, Clone)]
pub struct Caller {
    project: Option<AsciiMetadataValue>,
    roles: Option<AsciiMetadataValue>,
}

impl Caller {
    /// A caller of `project` with `roles` (comma-separated).
    pub fn new(project: &str, roles: &str) -> Self {
        Self {
            project: Some(project.parse().expect("a project id is ASCII")),
            roles: Some(roles.parse().expect("roles are ASCII")),
        }
    }

    /// A `member` of `project`.
    pub fn member(project: &str) -> Self {
        Self::new(project, "member")
    }

    /// An `admin` (and `member`) of `project`.
    pub fn admin(project: &str) -> Self {
        Self::new(project, "admin,member")
    }

    /// No headers at all: the API refuses it as UNAUTHENTICATED.
    pub fn anonymous() -> Self {
        Self {
            project: None,
            roles: None,
        }
    }
}

impl Interceptor for Caller {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let headers = request.metadata_mut();
        if let Some(project) = &self.project {
            headers.insert("x-project-id", project.clone());
        }
        if let Some(roles) = &self.roles {
            headers.insert("x-roles", roles.clone());
        }
        Ok(request)
    }
}

/// The transport of every client: the shared channel with a [`Caller`]'s headers.
pub type Authed = InterceptedService<Channel, Caller>;
/// A `scoria.v1.VolumeService` client.
pub type Volumes = VolumeServiceClient<Authed>;
/// A `scoria.v1.SnapshotService` client.
pub type Snapshots = SnapshotServiceClient<Authed>;
/// A `scoria.v1.AttachmentService` client.
pub type Attachments = AttachmentServiceClient<Authed>;
/// A `scoria.v1.VolumeTypeService` client.
pub type VolumeTypes = VolumeTypeServiceClient<Authed>;
/// A `scoria.v1.AvailabilityZoneService` client.
pub type Zones = AvailabilityZoneServiceClient<Authed>;
/// A `scoria.v1.AdminService` client.
pub type Admin = AdminServiceClient<Authed>;
/// A `scoria.v1.QuotaService` client.
pub type Quotas = QuotaServiceClient<Authed>;
/// A `scoria.v1.BackupService` client.
pub type Backups = BackupServiceClient<Authed>;
/// A `scoria.v1.TransferService` client.
pub type Transfers = TransferServiceClient<Authed>;

/// A client of every public service, all acting as one [`Caller`] over one
/// channel (cheap to clone; each accessor returns a fresh client handle).
#[derive(Debug, Clone)]
pub struct Clients {
    channel: Channel,
    caller: Caller,
}

impl Clients {
    /// Clients over `channel` acting as `caller`.
    pub fn new(channel: Channel, caller: Caller) -> Self {
        Self { channel, caller }
    }

    fn authed(&self) -> Authed {
        InterceptedService::new(self.channel.clone(), self.caller.clone())
    }

    /// `scoria.v1.VolumeService`.
    pub fn volumes(&self) -> Volumes {
        VolumeServiceClient::new(self.authed())
    }

    /// `scoria.v1.SnapshotService`.
    pub fn snapshots(&self) -> Snapshots {
        SnapshotServiceClient::new(self.authed())
    }

    /// `scoria.v1.AttachmentService`.
    pub fn attachments(&self) -> Attachments {
        AttachmentServiceClient::new(self.authed())
    }

    /// `scoria.v1.VolumeTypeService`.
    pub fn volume_types(&self) -> VolumeTypes {
        VolumeTypeServiceClient::new(self.authed())
    }

    /// `scoria.v1.AvailabilityZoneService`.
    pub fn zones(&self) -> Zones {
        AvailabilityZoneServiceClient::new(self.authed())
    }

    /// `scoria.v1.AdminService`.
    pub fn admin(&self) -> Admin {
        AdminServiceClient::new(self.authed())
    }

    /// `scoria.v1.QuotaService`.
    pub fn quotas(&self) -> Quotas {
        QuotaServiceClient::new(self.authed())
    }

    /// `scoria.v1.BackupService`.
    pub fn backups(&self) -> Backups {
        BackupServiceClient::new(self.authed())
    }

    /// `scoria.v1.TransferService`.
    pub fn transfers(&self) -> Transfers {
        TransferServiceClient::new(self.authed())
    }

    /// GetVolume `id`.
    pub async fn get_volume(&self, id: &str) -> Result<pb::Volume, Status> {
        let request = pb::GetVolumeRequest { id: id.to_owned() };
        self.volumes()
            .get_volume(request)
            .await
            .map(Response::into_inner)
    }

    /// GetSnapshot `id`.
    pub async fn get_snapshot(&self, id: &str) -> Result<pb::Snapshot, Status> {
        let request = pb::GetSnapshotRequest { id: id.to_owned() };
        self.snapshots()
            .get_snapshot(request)
            .await
            .map(Response::into_inner)
    }
}

/// Whether the API at `channel` answers `grpc.health.v1.Health/Check` (of the
/// whole server) with SERVING.
pub async fn serving(channel: &Channel) -> bool {
    health_status(channel).await == Some(ServingStatus::Serving)
}

/// What the API's overall health check answers (`None`: it does not answer).
pub async fn health_status(channel: &Channel) -> Option<ServingStatus> {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .ok()
        .map(|r| r.into_inner().status())
}

// === impl Stack ===

impl Stack {
    /// The channel to the stack's API, shared by every client of the stack.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Every client, acting as `caller`.
    pub fn clients(&self, caller: Caller) -> Clients {
        Clients::new(self.channel(), caller)
    }

    /// Every client, as a `member` of `project`.
    pub fn as_member(&self, project: &str) -> Clients {
        self.clients(Caller::member(project))
    }

    /// Every client, as an `admin` of `project`.
    pub fn as_admin(&self, project: &str) -> Clients {
        self.clients(Caller::admin(project))
    }

    /// The VolumeService, as a member of `project`.
    pub fn volumes(&self, project: &str) -> Volumes {
        self.as_member(project).volumes()
    }

    /// The SnapshotService, as a member of `project`.
    pub fn snapshots(&self, project: &str) -> Snapshots {
        self.as_member(project).snapshots()
    }

    /// The AttachmentService, as a member of `project`.
    pub fn attachments(&self, project: &str) -> Attachments {
        self.as_member(project).attachments()
    }

    /// The VolumeTypeService, as a member of `project` (reads only).
    pub fn volume_types(&self, project: &str) -> VolumeTypes {
        self.as_member(project).volume_types()
    }

    /// The VolumeTypeService, as an admin of `project` (writes too).
    pub fn types_admin(&self, project: &str) -> VolumeTypes {
        self.as_admin(project).volume_types()
    }

    /// The AvailabilityZoneService, as a member of `project`.
    pub fn zones(&self, project: &str) -> Zones {
        self.as_member(project).zones()
    }

    /// The AdminService, as an admin of `project`.
    pub fn admin(&self, project: &str) -> Admin {
        self.as_admin(project).admin()
    }

    /// The QuotaService, as an admin of `project` (writes too).
    pub fn quotas_admin(&self, project: &str) -> Quotas {
        self.as_admin(project).quotas()
    }

    /// Sets `limits` (resource -> limit) of project `project` (as an admin).
    pub async fn set_quota(&self, project: &str, limits: &[(&str, i64)]) -> pb::Quota {
        let request = pb::UpdateQuotaRequest {
            project_id: project.to_owned(),
            limits: limits.iter().map(|(r, l)| ((*r).to_owned(), *l)).collect(),
        };
        self.quotas_admin("admin-project")
            .update_quota(request)
            .await
            .unwrap_or_else(|e| panic!("UpdateQuota of {project}: {e}"))
            .into_inner()
    }

    /// `(in_use, reserved, limit)` of `resource` in project `project`'s quota
    /// (GetQuota as an admin).
    pub async fn quota_usage(&self, project: &str, resource: &str) -> (i64, i64, i64) {
        let quota = self
            .quotas_admin("admin-project")
            .get_quota(pb::GetQuotaRequest {
                project_id: project.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("GetQuota of {project}: {e}"))
            .into_inner();
        quota
            .usages
            .iter()
            .find(|u| u.resource == resource)
            .map(|u| (u.in_use, u.reserved, u.limit))
            .unwrap_or_else(|| panic!("no {resource} in the quota of {project}: {quota:?}"))
    }

    /// Asserts AdminService.CheckQuotaUsage (of every project) finds the
    /// recorded quota usage equal to a recount of the rows.
    pub async fn assert_quota_exact(&self) {
        let differences = self
            .admin("admin-project")
            .check_quota_usage(pb::CheckQuotaUsageRequest::default())
            .await
            .unwrap_or_else(|e| panic!("CheckQuotaUsage: {e}"))
            .into_inner()
            .differences;
        assert!(
            differences.is_empty(),
            "quota usage differs from the rows: {differences:#?}\n{}",
            self.logs()
        );
    }

    /// The `grpc.health.v1.Health` client of the API (it needs no headers).
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    /// Whether the API's health check answers SERVING.
    pub async fn serving(&self) -> bool {
        serving(&self.channel).await
    }

    /// GetVolume `id` as a member of `project`.
    pub async fn get_volume(&self, project: &str, id: &str) -> Result<pb::Volume, Status> {
        self.as_member(project).get_volume(id).await
    }

    /// Polls GetVolume (as a member of `project`) until the volume's status is
    /// `status`; returns it. Fails with the logs after 30 s.
    pub async fn wait_status(
        &self,
        project: &str,
        id: &str,
        status: pb::VolumeStatus,
    ) -> pb::Volume {
        let clients = self.as_member(project);
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let volume = clients.get_volume(id).await;
            if let Ok(v) = &volume
                && v.status() == status
            {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "volume {id} never reached {status:?}: last {volume:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls GetVolume until the volume is NOT_FOUND. Fails after 30 s.
    pub async fn wait_volume_gone(&self, project: &str, id: &str) {
        let clients = self.as_member(project);
        self.wait_not_found(id, || clients.get_volume(id)).await;
    }

    /// Polls GetSnapshot (as a member of `project`) until the snapshot's status
    /// is `status`; returns it. Fails with the logs after 30 s.
    pub async fn wait_snapshot_status(
        &self,
        project: &str,
        id: &str,
        status: pb::SnapshotStatus,
    ) -> pb::Snapshot {
        let clients = self.as_member(project);
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let snapshot = clients.get_snapshot(id).await;
            if let Ok(s) = &snapshot
                && s.status() == status
            {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "snapshot {id} never reached {status:?}: last {snapshot:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls GetSnapshot until the snapshot is NOT_FOUND. Fails after 30 s.
    pub async fn wait_snapshot_gone(&self, project: &str, id: &str) {
        let clients = self.as_member(project);
        self.wait_not_found(id, || clients.get_snapshot(id)).await;
    }

    pub(super) async fn wait_not_found<T, F>(&self, id: &str, get: impl Fn() -> F)
    where
        T: std::fmt::Debug,
        F: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            match get().await {
                Err(status) if status.code() == Code::NotFound => return,
                other => assert!(
                    Instant::now() < deadline,
                    "{id} still there: {other:?}\n{}",
                    self.logs()
                ),
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
