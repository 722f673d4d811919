//! Any request of the public API as one value, [`Call`], so a table of requests
//! to different methods can be sent in a loop. Every request message belongs to
//! exactly one method, so `From<request>` picks the method. The `Watch*` server
//! streams are left out (their first reply never ends a call).

use scoria_proto::v1 as pb;
use tonic::Status;

use crate::stack::Clients;

/// Declares [`Call`] with a variant per method, its `From` impls, its name and
/// its dispatch to `clients.<service>().<rpc>(request)`.
macro_rules! calls {
    ($($method:ident($request:ty) => $service:ident.$rpc:ident;)*) => {
        /// One request of the public API, by method.
        #[derive(Debug, Clone)]
        pub enum Call {
            $(
                #[doc = concat!("`", stringify!($method), "`.")]
                $method($request),
            )*
        }

        $(
            impl From<$request> for Call {
                fn from(request: $request) -> Self {
                    Self::$method(request)
                }
            }
        )*

        impl Call {
            /// The method's name (`CreateVolume`, ...).
            pub fn method(&self) -> &'static str {
                match self {
                    $(Self::$method(_) => stringify!($method),)*
                }
            }

            /// Sends the request with `clients`; the reply (its debug text), or
            /// the status.
            pub async fn send(&self, clients: &Clients) -> Result<String, Status> {
                match self.clone() {
                    $(Self::$method(request) => clients
                        .$service()
                        .$rpc(request)
                        .await
                        .map(|reply| format!("{:?}", reply.into_inner())),)*
                }
            }
        }
    };
}

calls! {
    CreateVolume(pb::CreateVolumeRequest) => volumes.create_volume;
    GetVolume(pb::GetVolumeRequest) => volumes.get_volume;
    ListVolumes(pb::ListVolumesRequest) => volumes.list_volumes;
    UpdateVolume(pb::UpdateVolumeRequest) => volumes.update_volume;
    DeleteVolume(pb::DeleteVolumeRequest) => volumes.delete_volume;
    ExtendVolume(pb::ExtendVolumeRequest) => volumes.extend_volume;
    CreateSnapshot(pb::CreateSnapshotRequest) => snapshots.create_snapshot;
    GetSnapshot(pb::GetSnapshotRequest) => snapshots.get_snapshot;
    ListSnapshots(pb::ListSnapshotsRequest) => snapshots.list_snapshots;
    DeleteSnapshot(pb::DeleteSnapshotRequest) => snapshots.delete_snapshot;
    CreateAttachment(pb::CreateAttachmentRequest) => attachments.create_attachment;
    GetAttachment(pb::GetAttachmentRequest) => attachments.get_attachment;
    ListAttachments(pb::ListAttachmentsRequest) => attachments.list_attachments;
    DeleteAttachment(pb::DeleteAttachmentRequest) => attachments.delete_attachment;
    CreateVolumeType(pb::CreateVolumeTypeRequest) => volume_types.create_volume_type;
    GetVolumeType(pb::GetVolumeTypeRequest) => volume_types.get_volume_type;
    ListVolumeTypes(pb::ListVolumeTypesRequest) => volume_types.list_volume_types;
    UpdateVolumeType(pb::UpdateVolumeTypeRequest) => volume_types.update_volume_type;
    DeleteVolumeType(pb::DeleteVolumeTypeRequest) => volume_types.delete_volume_type;
    ListAvailabilityZones(pb::ListAvailabilityZonesRequest) => zones.list_availability_zones;
    ListServices(pb::ListServicesRequest) => admin.list_services;
    SetServiceEnabled(pb::SetServiceEnabledRequest) => admin.set_service_enabled;
    ResetVolumeStatus(pb::ResetVolumeStatusRequest) => admin.reset_volume_status;
    ListPools(pb::ListPoolsRequest) => admin.list_pools;
    CheckQuotaUsage(pb::CheckQuotaUsageRequest) => admin.check_quota_usage;
    GetQuota(pb::GetQuotaRequest) => quotas.get_quota;
    UpdateQuota(pb::UpdateQuotaRequest) => quotas.update_quota;
    DeleteQuota(pb::DeleteQuotaRequest) => quotas.delete_quota;
    GetDefaultQuota(pb::GetDefaultQuotaRequest) => quotas.get_default_quota;
}
