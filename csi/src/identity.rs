//! The Identity service: who the plugin is, what it offers, and whether it is
//! ready (Probe: the Scoria API answers a cheap read with the plugin's
//! credentials, when this process serves the Controller).

use std::{collections::BTreeMap, sync::Arc};

use scoria_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::{
    DRIVER_NAME, VERSION,
    proto::{
        GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
        GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse, identity_server,
        plugin_capability,
    },
    scoria::Scoria,
};

/// The Identity service.
#[derive(Debug, Clone)]
pub struct Identity {
    scoria: Arc<Scoria>,
    controller: bool,
}

impl Identity {
    /// Identity of a plugin reaching Scoria through `scoria`; `controller`
    /// says whether this process serves the Controller service.
    pub fn new(scoria: Arc<Scoria>, controller: bool) -> Self {
        Self { scoria, controller }
    }

    /// Whether the Scoria API answers (ListAvailabilityZones: cheap, needs
    /// the database and valid credentials); why not, if it does not.
    async fn api_answers(&self) -> Result<(), String> {
        let api = self.scoria.api().await.map_err(|e| e.to_string())?;
        api.zones()
            .list_availability_zones(pb::ListAvailabilityZonesRequest {})
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }
}

fn service(kind: plugin_capability::service::Type) -> PluginCapability {
    PluginCapability {
        r#type: Some(plugin_capability::Type::Service(
            plugin_capability::Service {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl identity_server::Identity for Identity {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        let manifest = BTreeMap::from([("url".to_owned(), self.scoria.url().to_owned())]);
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.to_owned(),
            vendor_version: VERSION.to_owned(),
            manifest,
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::service::Type;
        let mut capabilities = Vec::new();
        if self.controller {
            capabilities.push(service(Type::ControllerService));
        }
        capabilities.push(service(Type::VolumeAccessibilityConstraints));
        if self.controller {
            // Scoria extends available (unattached) volumes only.
            capabilities.push(PluginCapability {
                r#type: Some(plugin_capability::Type::VolumeExpansion(
                    plugin_capability::VolumeExpansion {
                        r#type: plugin_capability::volume_expansion::Type::Offline as i32,
                    },
                )),
            });
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        // The node side works from the publish context alone: it is ready
        // without the API.
        let ready = if self.controller {
            match self.api_answers().await {
                Ok(()) => true,
                Err(why) => {
                    tracing::info!(url = %self.scoria.url(), %why, "not ready: the Scoria API does not answer");
                    false
                }
            }
        } else {
            true
        };
        Ok(Response::new(ProbeResponse { ready: Some(ready) }))
    }
}
