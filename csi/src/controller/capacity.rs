//! Sizes: a CSI capacity range as whole GiB (Scoria's unit), and GetCapacity
//! from the pools the scheduler sees (AdminService.ListPools: the plugin's
//! credentials need the admin role for it).

use scoria_cli::connect::Api;
use scoria_proto::v1 as pb;

use crate::{
    GIB, TOPOLOGY_ZONE_KEY,
    error::{Error, Result},
    proto::{CapacityRange, GetCapacityRequest, GetCapacityResponse},
};

use super::capability;

/// The size of a volume with no capacity range.
pub const DEFAULT_GIB: u64 = 1;

/// The GiB a volume of `range` gets: `required_bytes` rounded up to a whole
/// GiB (at least `floor_gib`, the source's size, and 1), which must not
/// exceed `limit_bytes`. OUT_OF_RANGE when nothing fits; INVALID_ARGUMENT
/// for negative bounds or a limit under the requirement.
pub fn size_gib(range: Option<&CapacityRange>, floor_gib: u64) -> Result<u64> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 {
        return Err(Error::invalid(
            "capacity_range.required_bytes",
            format!("must not be negative, got {required}"),
        ));
    }
    if limit < 0 {
        return Err(Error::invalid(
            "capacity_range.limit_bytes",
            format!("must not be negative, got {limit}"),
        ));
    }
    if limit > 0 && required > limit {
        return Err(Error::invalid(
            "capacity_range",
            format!("required_bytes {required} exceeds limit_bytes {limit}"),
        ));
    }
    let required_gib = (required as u64).div_ceil(GIB as u64);
    let gib = required_gib
        .max(floor_gib)
        .max(if required == 0 { DEFAULT_GIB } else { 1 });
    if limit > 0 && gib.saturating_mul(GIB as u64) > limit as u64 {
        return Err(Error::OutOfRange(format!(
            "capacity_range: volumes come in whole GiB; {gib} GiB ({} bytes) is needed and exceeds limit_bytes {limit}",
            gib.saturating_mul(GIB as u64)
        )));
    }
    Ok(gib)
}

/// GiB as CSI bytes.
pub fn bytes(gib: u64) -> i64 {
    i64::try_from(gib)
        .unwrap_or(i64::MAX / GIB)
        .saturating_mul(GIB)
}

/// GetCapacity: the free capacity of the pools in the requested zone (the
/// topology's zone segment) that can hold the `type` parameter's volumes.
pub async fn get(api: &Api, request: GetCapacityRequest) -> Result<GetCapacityResponse> {
    let needs = if request.volume_capabilities.is_empty() {
        capability::Needs::default()
    } else {
        capability::check_all("volume_capabilities", &request.volume_capabilities)?
    };
    for key in request.parameters.keys() {
        super::volumes::known_parameter(key)?;
    }
    let volume_type = request.parameters.get("type").cloned().unwrap_or_default();
    let specs = capability::extra_specs(api, &volume_type).await?;
    let zone = request
        .accessible_topology
        .as_ref()
        .and_then(|t| t.segments.get(TOPOLOGY_ZONE_KEY).cloned())
        .or_else(|| request.parameters.get("zone").cloned());
    let none = GetCapacityResponse {
        available_capacity: 0,
        maximum_volume_size: Some(0),
        minimum_volume_size: None,
    };
    if capability::require_fit(api, needs, &volume_type)
        .await
        .is_err()
    {
        return Ok(none);
    }
    let pools = api
        .admin()
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .map_err(Error::scoria("ListPools"))?
        .into_inner()
        .pools;
    let free: Vec<f64> = pools
        .iter()
        .filter(|p| zone.as_ref().is_none_or(|z| *z == p.availability_zone))
        .filter(|p| specs.iter().all(|(k, v)| pool_satisfies(p, k, v)))
        .map(|p| p.free_capacity_gib.max(0.0))
        .collect();
    let to_bytes = |gib: f64| (gib * GIB as f64).min(i64::MAX as f64) as i64;
    Ok(GetCapacityResponse {
        available_capacity: to_bytes(free.iter().sum()),
        maximum_volume_size: Some(to_bytes(
            free.iter().fold(0.0_f64, |a, b| a.max(*b)).floor(),
        )),
        minimum_volume_size: Some(GIB),
    })
}

/// Whether pool `pool` fits extra spec `key` = `value` as far as the plugin
/// can tell: `volume_backend_name` and plain or `<is>` capabilities are
/// compared; operators the scheduler alone evaluates are taken as met.
fn pool_satisfies(pool: &pb::StoragePool, key: &str, value: &str) -> bool {
    let value = value.trim();
    if key == "volume_backend_name" {
        return pool.backend_name == value;
    }
    let key = key.strip_prefix("capabilities:").unwrap_or(key);
    if key.contains(':') || key == "multiattach" {
        // Scoped specs are not capabilities; multiattach was checked above.
        return true;
    }
    let have = pool
        .capabilities
        .get(key)
        .map(|v| v.trim().to_ascii_lowercase());
    if let Some(rest) = value.strip_prefix("<is>") {
        let want = rest.trim().to_ascii_lowercase();
        return have.is_some_and(|h| h == want);
    }
    let operator = value.starts_with(['<', '>', '=', '!'])
        || ["s==", "s!=", "s<", "s>"]
            .iter()
            .any(|op| value.starts_with(op));
    if operator {
        // <in>, <or>, >=, s== ...: the scheduler evaluates these; taken as met.
        return true;
    }
    have.is_none_or(|h| h == value.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> Option<CapacityRange> {
        Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        })
    }

    #[test]
    fn ranges_round_up_to_whole_gib_within_the_limit() {
        assert_eq!(size_gib(None, 0).ok(), Some(DEFAULT_GIB));
        assert_eq!(size_gib(range(1, 0).as_ref(), 0).ok(), Some(1));
        assert_eq!(size_gib(range(GIB + 1, 0).as_ref(), 0).ok(), Some(2));
        assert_eq!(size_gib(range(0, 3 * GIB).as_ref(), 2).ok(), Some(2));
        assert_eq!(size_gib(range(2 * GIB, 2 * GIB).as_ref(), 0).ok(), Some(2));
        let code = |r: Result<u64>| r.map_err(|e| e.code()).err();
        assert_eq!(
            code(size_gib(range(1, 1000).as_ref(), 0)),
            Some(tonic::Code::OutOfRange)
        );
        assert_eq!(
            code(size_gib(range(0, GIB).as_ref(), 2)),
            Some(tonic::Code::OutOfRange)
        );
        assert_eq!(
            code(size_gib(range(-1, 0).as_ref(), 0)),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(size_gib(range(5, 4).as_ref(), 0)),
            Some(tonic::Code::InvalidArgument)
        );
    }
}
