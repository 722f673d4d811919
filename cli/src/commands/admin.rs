//! `scoria availability-zone list`, `scoria service list|set`, `scoria pool list`.

use scoria_proto::v1 as pb;

use crate::{
    args::{PoolCommand, ServiceCommand, ZoneCommand},
    connect::Api,
    error::CliError,
    output::Shown,
    records,
};

/// Runs an `availability-zone` command.
pub async fn zones(api: &Api, command: ZoneCommand) -> Result<Shown, CliError> {
    match command {
        ZoneCommand::List => {
            let zones = api
                .zones()
                .list_availability_zones(pb::ListAvailabilityZonesRequest {})
                .await
                .map_err(CliError::request("list availability zones"))?
                .into_inner()
                .availability_zones;
            Ok(Shown::Many {
                columns: vec!["Zone Name", "Zone Status"],
                rows: zones.iter().map(records::zone_row).collect(),
            })
        }
    }
}

/// Runs a `service` command.
pub async fn services(api: &Api, command: ServiceCommand) -> Result<Shown, CliError> {
    match command {
        ServiceCommand::List { binary } => {
            let services = api
                .admin()
                .list_services(pb::ListServicesRequest {
                    binary: binary.unwrap_or_default(),
                })
                .await
                .map_err(CliError::request("list services"))?
                .into_inner()
                .services;
            Ok(Shown::Many {
                columns: records::SERVICE_COLUMNS.to_vec(),
                rows: services.iter().map(records::service_row).collect(),
            })
        }
        ServiceCommand::Set {
            host,
            binary,
            enable,
            disable: _,
            reason,
        } => {
            let service = api
                .admin()
                .set_service_enabled(pb::SetServiceEnabledRequest {
                    binary: binary.clone(),
                    host: host.clone(),
                    enabled: enable,
                    reason,
                })
                .await
                .map_err(CliError::request(format!("set service {binary} on {host}")))?
                .into_inner();
            Ok(Shown::One(records::service_row(&service)))
        }
    }
}

/// Runs a `pool` command.
pub async fn pools(api: &Api, command: PoolCommand) -> Result<Shown, CliError> {
    match command {
        PoolCommand::List { host, long } => {
            let pools = api
                .admin()
                .list_pools(pb::ListPoolsRequest { host })
                .await
                .map_err(CliError::request("list pools"))?
                .into_inner()
                .pools;
            Ok(Shown::Many {
                columns: records::pool_columns(long),
                rows: pools.iter().map(records::pool_row).collect(),
            })
        }
    }
}
