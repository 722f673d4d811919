//! CapacityFilter (Cinder's `CapacityFilter`): the pool must have room for the
//! volume after its reserved share, thin pools within their over-subscription
//! ratio.
//!
//! ```text
//! free unknown/infinite                      -> pass (a failed create reschedules)
//! total unknown/infinite                     -> pass only if reserved% == 0
//! total <= 0                                 -> fail
//! free' = free - floor(total * reserved%)
//! thin request on a thin pool, ratio >= 1:   (allocated + size) / total <= ratio
//!                                            and free' * ratio >= size
//! thin request on a thin pool, ratio < 1:    fail (invalid ratio)
//! otherwise (thick):                         free' >= size
//! ```

use super::{HostFilter, RequestSpec};
use crate::host_state::{Capacity, HostState};

/// Keeps the pools with room for the volume.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapacityFilter;

impl CapacityFilter {
    /// The filter's name.
    pub const NAME: &'static str = "CapacityFilter";
}

impl HostFilter for CapacityFilter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        let requested = spec.size_gib as f64;
        let free_space = match host.free_capacity {
            Capacity::Known(free) => free,
            // The backend cannot say: assume it can; a failed create reschedules.
            Capacity::Infinite | Capacity::Unknown => return true,
        };
        let total = match host.total_capacity {
            Capacity::Known(total) => total,
            // The reserved share cannot be computed without a total.
            Capacity::Infinite | Capacity::Unknown => return host.reserved_percentage == 0,
        };
        if total <= 0.0 {
            tracing::debug!(pool = %host.pool_key, "total capacity is 0: filtered out");
            return false;
        }
        let reserved = (total * f64::from(host.reserved_percentage) / 100.0).floor();
        let free = free_space - reserved;
        if spec.thin && host.thin_provisioning_support {
            let ratio = host.max_over_subscription_ratio;
            if ratio < 1.0 {
                tracing::warn!(pool = %host.pool_key, ratio, "invalid max_over_subscription_ratio (< 1): filtered out");
                return false;
            }
            let provisioned_ratio = (host.allocated_capacity_gib + requested) / total;
            if provisioned_ratio > ratio {
                tracing::debug!(pool = %host.pool_key, provisioned_ratio, ratio, "would exceed the over-subscription ratio");
                return false;
            }
            return free * ratio >= requested;
        }
        free >= requested
    }
}

/// The free capacity a request sees (Cinder's `calculate_virtual_free_capacity`):
/// for a thin request on a thin pool, `total * ratio - allocated - reserved`;
/// otherwise `free - reserved`. `None` when a figure is unknown or infinite.
pub fn virtual_free_gib(host: &HostState, thin: bool) -> Option<f64> {
    let total = host.total_capacity.known()?;
    let reserved = host.reserved_gib()?;
    if thin && host.thin_provisioning_support {
        Some(total * host.max_over_subscription_ratio - host.allocated_capacity_gib - reserved)
    } else {
        Some(host.free_capacity.known()? - reserved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{pool, spec};

    fn thin(total: f64, free: f64, allocated: f64, ratio: f64) -> HostState {
        let mut host = pool("n@file", total, free);
        host.thin_provisioning_support = true;
        host.allocated_capacity_gib = allocated;
        host.max_over_subscription_ratio = ratio;
        host
    }

    fn thick_spec(size: u64) -> RequestSpec {
        RequestSpec {
            thin: false,
            ..spec(size)
        }
    }

    #[test]
    fn thick_needs_free_after_reserve() {
        let mut host = pool("n@file", 100.0, 20.0);
        assert!(CapacityFilter.passes(&host, &spec(20)), "exactly fits");
        assert!(!CapacityFilter.passes(&host, &spec(21)));
        host.reserved_percentage = 10; // 10 GiB kept back
        assert!(CapacityFilter.passes(&host, &spec(10)));
        assert!(!CapacityFilter.passes(&host, &spec(11)));
    }

    #[test]
    fn reserve_is_floored_like_cinder() {
        let mut host = pool("n@file", 99.0, 20.0);
        host.reserved_percentage = 5; // floor(4.95) = 4
        assert!(CapacityFilter.passes(&host, &spec(16)));
        assert!(!CapacityFilter.passes(&host, &spec(17)));
    }

    #[test]
    fn unknown_or_infinite_free_passes() {
        let mut host = pool("n@file", 100.0, 0.0);
        host.free_capacity = Capacity::Unknown;
        assert!(CapacityFilter.passes(&host, &spec(1_000)));
        host.free_capacity = Capacity::Infinite;
        assert!(CapacityFilter.passes(&host, &spec(1_000)));
    }

    #[test]
    fn unknown_total_passes_only_without_reserve() {
        let mut host = pool("n@file", 0.0, 50.0);
        host.total_capacity = Capacity::Unknown;
        assert!(CapacityFilter.passes(&host, &spec(1_000)));
        host.reserved_percentage = 5;
        assert!(!CapacityFilter.passes(&host, &spec(1)));
        host.total_capacity = Capacity::Infinite;
        assert!(!CapacityFilter.passes(&host, &spec(1)));
        host.reserved_percentage = 0;
        assert!(CapacityFilter.passes(&host, &spec(1)));
    }

    #[test]
    fn zero_total_fails() {
        let host = pool("n@file", 0.0, 0.0);
        assert!(!CapacityFilter.passes(&host, &spec(1)));
        assert!(!CapacityFilter.passes(&host, &spec(0)));
    }

    #[test]
    fn thin_checks_the_provisioned_ratio() {
        // total 100, ratio 2: at most 200 provisioned.
        let host = thin(100.0, 90.0, 150.0, 2.0);
        assert!(
            CapacityFilter.passes(&host, &spec(50)),
            "(150 + 50) / 100 = 2 <= 2"
        );
        assert!(
            !CapacityFilter.passes(&host, &spec(51)),
            "(150 + 51) / 100 > 2"
        );
    }

    #[test]
    fn thin_checks_adjusted_free_virtual() {
        // Provisioned ratio is fine, but free (after reserve) * ratio is too small.
        let mut host = thin(100.0, 10.0, 0.0, 2.0);
        assert!(CapacityFilter.passes(&host, &spec(20)), "10 * 2 >= 20");
        assert!(!CapacityFilter.passes(&host, &spec(21)));
        host.reserved_percentage = 5; // free' = 5, * 2 = 10
        assert!(CapacityFilter.passes(&host, &spec(10)));
        assert!(!CapacityFilter.passes(&host, &spec(11)));
    }

    #[test]
    fn thin_with_invalid_ratio_fails() {
        let host = thin(100.0, 100.0, 0.0, 0.5);
        assert!(!CapacityFilter.passes(&host, &spec(1)));
        // A thick request on that pool ignores the ratio.
        assert!(CapacityFilter.passes(&host, &thick_spec(1)));
    }

    #[test]
    fn thick_request_on_thin_pool_uses_real_free() {
        let host = thin(100.0, 10.0, 150.0, 20.0);
        assert!(
            CapacityFilter.passes(&host, &spec(100)),
            "thin: 10 * 20 >= 100, 250/100 <= 20"
        );
        assert!(!CapacityFilter.passes(&host, &thick_spec(11)));
        assert!(CapacityFilter.passes(&host, &thick_spec(10)));
    }

    #[test]
    fn thin_request_on_thick_only_pool_uses_real_free() {
        let host = pool("n@file", 100.0, 10.0);
        assert!(!host.thin_provisioning_support);
        assert!(!CapacityFilter.passes(&host, &spec(11)));
    }

    #[test]
    fn virtual_consumption_shrinks_what_passes() {
        let mut host = pool("n@file", 100.0, 30.0);
        host.consume(20);
        assert!(CapacityFilter.passes(&host, &spec(10)));
        assert!(!CapacityFilter.passes(&host, &spec(11)));
    }

    #[test]
    fn virtual_free_capacity() {
        let mut host = thin(100.0, 40.0, 120.0, 2.0);
        host.reserved_percentage = 10;
        assert_eq!(
            virtual_free_gib(&host, true),
            Some(100.0 * 2.0 - 120.0 - 10.0)
        );
        assert_eq!(virtual_free_gib(&host, false), Some(40.0 - 10.0));
        host.free_capacity = Capacity::Unknown;
        assert_eq!(virtual_free_gib(&host, false), None);
        host.total_capacity = Capacity::Infinite;
        assert_eq!(virtual_free_gib(&host, true), None);
    }
}
