//! `scoria.v1.AvailabilityZoneService`: the zones of the volume services (from
//! the `services` table their heartbeats write), each available when at least one
//! of its services is up and enabled. "Up" uses the same window as
//! `AdminService.ListServices`: `api.service_down_time_secs`.

use std::collections::BTreeMap;

use scoria_common::{
    db::Db,
    model::{Service, now_ms},
};
use scoria_proto::v1::{self as pb, availability_zone_service_server::AvailabilityZoneService};
use tonic::{Request, Response, Status};

use crate::{
    error::{ApiError, ApiResult},
    request::handle,
};

/// The binary whose services make the zones.
const VOLUME_BINARY: &str = "scoria-volume";

/// The `AvailabilityZoneService` implementation.
#[derive(Clone)]
pub struct AvailabilityZoneApi {
    db: Db,
    /// A service whose last heartbeat is older than this (ms) is down.
    service_down_ms: i64,
}

impl AvailabilityZoneApi {
    /// The service over `db`; `service_down_ms` from `api.service_down_time_secs`.
    pub fn new(db: Db, service_down_ms: i64) -> Self {
        Self {
            db,
            service_down_ms,
        }
    }

    /// ListAvailabilityZones: the zones of the volume services now.
    async fn list(&self) -> ApiResult<pb::ListAvailabilityZonesResponse> {
        let services = self
            .db
            .list_services()
            .await
            .map_err(ApiError::db("list services"))?;
        Ok(pb::ListAvailabilityZonesResponse {
            availability_zones: zones(&services, now_ms(), self.service_down_ms),
        })
    }
}

/// The zones of `services` at `now_ms`, by name; a service whose heartbeat is
/// more than `service_down_ms` old is down.
pub fn zones(services: &[Service], now_ms: i64, service_down_ms: i64) -> Vec<pb::AvailabilityZone> {
    let mut zones: BTreeMap<&str, bool> = BTreeMap::new();
    for service in services.iter().filter(|s| s.binary == VOLUME_BINARY) {
        let up = now_ms.saturating_sub(service.last_heartbeat_ms) <= service_down_ms;
        *zones.entry(service.availability_zone.as_str()).or_default() |= up && !service.disabled;
    }
    zones
        .into_iter()
        .map(|(name, available)| pb::AvailabilityZone {
            name: name.to_owned(),
            available,
        })
        .collect()
}

#[tonic::async_trait]
impl AvailabilityZoneService for AvailabilityZoneApi {
    async fn list_availability_zones(
        &self,
        request: Request<pb::ListAvailabilityZonesRequest>,
    ) -> Result<Response<pb::ListAvailabilityZonesResponse>, Status> {
        handle(request, async |_, _| self.list().await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(binary: &str, zone: &str, beat_ago_ms: i64, disabled: bool) -> Service {
        Service {
            binary: binary.into(),
            host: format!("{zone}-{beat_ago_ms}@file"),
            availability_zone: zone.into(),
            disabled,
            disabled_reason: String::new(),
            last_heartbeat_ms: 1_000_000 - beat_ago_ms,
            cluster: String::new(),
        }
    }

    #[test]
    fn a_zone_is_available_with_one_service_up_and_enabled() {
        let services = [
            service("scoria-volume", "az1", 1_000, false),
            service("scoria-volume", "az1", 120_000, false),
            service("scoria-volume", "az2", 120_000, false),
            service("scoria-volume", "az3", 1_000, true),
            service("scoria-volume", "az3", 61_000, false),
            service("scoria-scheduler", "az4", 0, false),
        ];
        let zones = zones(&services, 1_000_000, 60_000);
        let got: Vec<(&str, bool)> = zones
            .iter()
            .map(|z| (z.name.as_str(), z.available))
            .collect();
        assert_eq!(
            got,
            [("az1", true), ("az2", false), ("az3", false)],
            "schedulers make no zone"
        );
    }

    #[test]
    fn the_down_window_is_the_configured_one() {
        let services = [
            service("scoria-volume", "az1", 30_000, false),
            service("scoria-volume", "az2", 90_000, false),
        ];
        let available = |down_ms: i64| -> Vec<(String, bool)> {
            zones(&services, 1_000_000, down_ms)
                .into_iter()
                .map(|z| (z.name, z.available))
                .collect()
        };
        assert_eq!(
            available(120_000),
            [("az1".to_owned(), true), ("az2".to_owned(), true)],
            "a 90 s old heartbeat is up with a 120 s window"
        );
        assert_eq!(
            available(10_000),
            [("az1".to_owned(), false), ("az2".to_owned(), false)],
            "a 30 s old heartbeat is down with a 10 s window"
        );
    }

    #[tokio::test]
    async fn lists_from_the_services_table() {
        let dir = std::env::temp_dir().join(format!("scoria-az-test-{}", uuid::Uuid::new_v4()));
        let db = Db::connect(&format!("sqlite://{}", dir.join("scoria.db").display()))
            .await
            .expect("db");
        db.heartbeat("scoria-volume", "n1@file", "az1")
            .await
            .expect("beat");
        let api = AvailabilityZoneApi::new(db.clone(), 60_000);
        let mut request = Request::new(pb::ListAvailabilityZonesRequest {});
        request
            .extensions_mut()
            .insert(scoria_common::RequestContext::new(
                "p1",
                "u1",
                vec!["reader".into()],
            ));
        let zones = api
            .list_availability_zones(request)
            .await
            .expect("list")
            .into_inner()
            .availability_zones;
        assert_eq!(
            zones,
            [pb::AvailabilityZone {
                name: "az1".into(),
                available: true
            }]
        );
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
