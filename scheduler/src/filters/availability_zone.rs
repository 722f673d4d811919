//! AvailabilityZoneFilter: a request naming a zone only fits pools of that zone.

use super::{HostFilter, RequestSpec};
use crate::host_state::HostState;

/// Keeps the pools in the requested availability zone (any, if none is asked).
#[derive(Debug, Clone, Copy, Default)]
pub struct AvailabilityZoneFilter;

impl AvailabilityZoneFilter {
    /// The filter's name.
    pub const NAME: &'static str = "AvailabilityZoneFilter";
}

impl HostFilter for AvailabilityZoneFilter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        spec.availability_zone.is_empty() || spec.availability_zone == host.availability_zone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{pool, spec};

    #[test]
    fn empty_request_zone_means_any() {
        let mut host = pool("n@file", 10.0, 10.0);
        host.availability_zone = "az1".into();
        assert!(AvailabilityZoneFilter.passes(&host, &spec(1)));
    }

    #[test]
    fn zone_must_match_exactly() {
        let mut host = pool("n@file", 10.0, 10.0);
        host.availability_zone = "az1".into();
        let mut s = spec(1);
        s.availability_zone = "az1".into();
        assert!(AvailabilityZoneFilter.passes(&host, &s));
        s.availability_zone = "az2".into();
        assert!(!AvailabilityZoneFilter.passes(&host, &s));
        s.availability_zone = "AZ1".into();
        assert!(
            !AvailabilityZoneFilter.passes(&host, &s),
            "zones are case-sensitive, as in Cinder"
        );
    }
}
