//! The filters (Cinder's `HostFilter`s) and the pipeline running them: each
//! filter keeps the pools that can take the request; the pipeline remembers how
//! many pools each one removed, so "no valid backend" can say why.
//! See `README.md` beside this file for the whole picture.

mod availability_zone;
mod capabilities;
mod capacity;
mod required_host;
mod retry;

use std::{collections::HashSet, fmt::Write as _};

use scoria_proto::bus::ScheduleCreateVolume;

pub use availability_zone::AvailabilityZoneFilter;
pub use capabilities::{CapabilitiesFilter, CapabilitySpec, Requirement};
pub use capacity::{CapacityFilter, virtual_free_gib};
pub use required_host::RequiredHostFilter;
pub use retry::RetryFilter;

use crate::host_state::HostState;

/// The filters this scheduler knows, in their default order.
pub const FILTER_NAMES: [&str; 4] = [
    AvailabilityZoneFilter::NAME,
    CapacityFilter::NAME,
    CapabilitiesFilter::NAME,
    RetryFilter::NAME,
];

/// The extra spec choosing thick provisioning (`provisioning:type = thick`).
pub const PROVISIONING_TYPE_KEY: &str = "provisioning:type";

/// What the filters and weighers see of a create request (Cinder's
/// `request_spec` + `filter_properties`), parsed once per request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestSpec {
    /// The volume.
    pub volume_id: String,
    /// Its size.
    pub size_gib: u64,
    /// The availability zone asked for (empty: any).
    pub availability_zone: String,
    /// The volume type's name.
    pub volume_type: String,
    /// Whether the volume is thin (unless `provisioning:type` is `thick`).
    pub thin: bool,
    /// The extra specs the CapabilitiesFilter matches.
    pub capability_specs: Vec<CapabilitySpec>,
    /// `host@backend#pool` (or `host@backend`) already tried.
    pub tried_hosts: HashSet<String>,
    /// The `host@backend` that must take the volume (its source's), empty: any.
    pub required_host: String,
}

impl RequestSpec {
    /// The spec of a scheduling request.
    pub fn new(request: &ScheduleCreateVolume) -> Self {
        Self {
            volume_id: request.volume_id.clone(),
            size_gib: request.size_gib,
            availability_zone: request.availability_zone.clone(),
            volume_type: request.volume_type.clone(),
            thin: request
                .extra_specs
                .get(PROVISIONING_TYPE_KEY)
                .map(|t| t.trim())
                != Some("thick"),
            capability_specs: CapabilitySpec::from_extra_specs(&request.extra_specs),
            tried_hosts: request.tried_hosts.iter().cloned().collect(),
            required_host: request.required_host.clone(),
        }
    }
}

/// One filter: whether a pool can take a request. Pure: no I/O, no clock.
pub trait HostFilter: Send + Sync + std::fmt::Debug {
    /// The filter's name, as configured and as shown in errors.
    fn name(&self) -> &'static str;
    /// Whether `host` passes for `spec`.
    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool;
}

/// What a pipeline run left and who removed the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterOutcome<'a> {
    /// The pools that passed every filter, in input order.
    pub passed: Vec<&'a HostState>,
    /// How many pools went in.
    pub known: usize,
    /// How many usable pools were skipped before filtering (stale report,
    /// service down or disabled).
    pub skipped: usize,
    /// Each filter that ran and how many pools it removed, in order.
    pub eliminated: Vec<(&'static str, usize)>,
}

impl FilterOutcome<'_> {
    /// Why nothing (or so little) passed, for the volume's `error_message`:
    /// `3 hosts known; AvailabilityZoneFilter removed 1, CapacityFilter removed 2`.
    pub fn explain(&self) -> String {
        let mut out = format!("{} hosts known", self.known);
        if self.skipped > 0 {
            let _ = write!(out, " ({} more down, disabled or stale)", self.skipped);
        }
        for (i, (name, removed)) in self.eliminated.iter().enumerate() {
            let _ = write!(
                out,
                "{}{name} removed {removed}",
                if i == 0 { "; " } else { ", " }
            );
        }
        out
    }
}

/// The filters, in the order they run (Cinder's `FilterScheduler` filter step).
#[derive(Debug)]
pub struct FilterPipeline {
    filters: Vec<Box<dyn HostFilter>>,
}

impl Default for FilterPipeline {
    fn default() -> Self {
        Self {
            filters: vec![
                Box::new(AvailabilityZoneFilter),
                Box::new(CapacityFilter),
                Box::new(CapabilitiesFilter),
                Box::new(RetryFilter),
            ],
        }
    }
}

impl FilterPipeline {
    /// The filters named, in that order; `Err` names the first unknown one.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let filters = names
            .iter()
            .map(|name| -> Result<Box<dyn HostFilter>, String> {
                Ok(match name.as_ref() {
                    AvailabilityZoneFilter::NAME => Box::new(AvailabilityZoneFilter),
                    CapacityFilter::NAME => Box::new(CapacityFilter),
                    CapabilitiesFilter::NAME => Box::new(CapabilitiesFilter),
                    RetryFilter::NAME => Box::new(RetryFilter),
                    other => return Err(other.to_owned()),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { filters })
    }

    /// The names of the filters, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.filters.iter().map(|f| f.name()).collect()
    }

    /// Runs every filter over `hosts`; stops early once none is left. A request
    /// naming a required host goes through [`RequiredHostFilter`] first, whatever
    /// is configured.
    pub fn run<'a>(
        &self,
        hosts: &[&'a HostState],
        skipped: usize,
        spec: &RequestSpec,
    ) -> FilterOutcome<'a> {
        let mut passed: Vec<&'a HostState> = hosts.to_vec();
        let mut eliminated = Vec::with_capacity(self.filters.len() + 1);
        let required: &dyn HostFilter = &RequiredHostFilter;
        let always = (!spec.required_host.is_empty()).then_some(required);
        for filter in always
            .into_iter()
            .chain(self.filters.iter().map(|f| f.as_ref()))
        {
            if passed.is_empty() {
                break;
            }
            let before = passed.len();
            passed.retain(|host| filter.passes(host, spec));
            eliminated.push((filter.name(), before - passed.len()));
        }
        FilterOutcome {
            passed,
            known: hosts.len(),
            skipped,
            eliminated,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host_state::tests::report;

    /// A pool state of `host` with `total`/`free` GiB, thick, AZ `default`.
    pub(crate) fn pool(host: &str, total: f64, free: f64) -> HostState {
        let r = report(host, 1, &[("pool", total, free)]);
        HostState::from_report(&r, &r.pools[0], 1, 1)
    }

    pub(crate) fn spec(size_gib: u64) -> RequestSpec {
        RequestSpec {
            size_gib,
            thin: true,
            ..RequestSpec::default()
        }
    }

    #[test]
    fn request_spec_from_bus_message() {
        let request = ScheduleCreateVolume {
            volume_id: "v1".into(),
            size_gib: 3,
            availability_zone: "az1".into(),
            extra_specs: [
                ("provisioning:type".to_owned(), "thick".to_owned()),
                (
                    "capabilities:multiattach".to_owned(),
                    "<is> True".to_owned(),
                ),
                ("vendor:thing".to_owned(), "x".to_owned()),
            ]
            .into(),
            tried_hosts: vec!["a@b#c".into()],
            ..ScheduleCreateVolume::default()
        };
        let spec = RequestSpec::new(&request);
        assert!(!spec.thin);
        assert_eq!(
            spec.capability_specs.len(),
            1,
            "scoped specs of other scopes are ignored"
        );
        assert_eq!(spec.capability_specs[0].key, "multiattach");
        assert!(spec.tried_hosts.contains("a@b#c"));
        assert!(
            RequestSpec::new(&ScheduleCreateVolume::default()).thin,
            "thin unless asked for thick"
        );
    }

    #[test]
    fn pipeline_reports_who_removed_what() {
        let mut far = pool("far@file", 100.0, 100.0);
        far.availability_zone = "az2".into();
        let small = pool("small@file", 10.0, 1.0);
        let tried = pool("tried@file", 100.0, 100.0);
        let good = pool("good@file", 100.0, 100.0);
        let hosts = [&far, &small, &tried, &good];
        let mut s = spec(5);
        s.availability_zone = "default".into();
        s.tried_hosts.insert("tried@file#pool".into());

        let outcome = FilterPipeline::default().run(&hosts, 2, &s);
        assert_eq!(
            outcome
                .passed
                .iter()
                .map(|p| p.host.as_str())
                .collect::<Vec<_>>(),
            ["good@file"]
        );
        assert_eq!(
            outcome.eliminated,
            [
                ("AvailabilityZoneFilter", 1),
                ("CapacityFilter", 1),
                ("CapabilitiesFilter", 0),
                ("RetryFilter", 1)
            ]
        );
        assert_eq!(
            outcome.explain(),
            "4 hosts known (2 more down, disabled or stale); AvailabilityZoneFilter removed 1, \
             CapacityFilter removed 1, CapabilitiesFilter removed 0, RetryFilter removed 1"
        );
    }

    #[test]
    fn pipeline_stops_when_nothing_is_left() {
        let small = pool("small@file", 10.0, 1.0);
        let outcome = FilterPipeline::default().run(&[&small], 0, &spec(5));
        assert!(outcome.passed.is_empty());
        assert_eq!(
            outcome.eliminated,
            [("AvailabilityZoneFilter", 0), ("CapacityFilter", 1)]
        );
        assert_eq!(
            outcome.explain(),
            "1 hosts known; AvailabilityZoneFilter removed 0, CapacityFilter removed 1"
        );
        let none = FilterPipeline::default().run(&[], 0, &spec(5));
        assert_eq!(none.explain(), "0 hosts known");
    }

    #[test]
    fn a_required_host_is_always_enforced_first() {
        let a = pool("a@file", 100.0, 100.0);
        let b = pool("b@file", 100.0, 100.0);
        let mut s = spec(5);
        s.required_host = "b@file".into();
        let configured = FilterPipeline::from_names(&["CapacityFilter"]).expect("known");
        let outcome = configured.run(&[&a, &b], 0, &s);
        assert_eq!(
            outcome
                .passed
                .iter()
                .map(|p| p.host.as_str())
                .collect::<Vec<_>>(),
            ["b@file"]
        );
        assert_eq!(
            outcome.eliminated,
            [("RequiredHostFilter", 1), ("CapacityFilter", 0)]
        );
        s.required_host = "c@file".into();
        let outcome = configured.run(&[&a, &b], 0, &s);
        assert!(outcome.passed.is_empty());
        assert_eq!(
            outcome.explain(),
            "2 hosts known; RequiredHostFilter removed 2"
        );
        let request = ScheduleCreateVolume {
            required_host: "b@file".into(),
            ..ScheduleCreateVolume::default()
        };
        assert_eq!(RequestSpec::new(&request).required_host, "b@file");
    }

    #[test]
    fn pipeline_from_names() {
        let p = FilterPipeline::from_names(&["RetryFilter", "CapacityFilter"]).expect("known");
        assert_eq!(p.names(), ["RetryFilter", "CapacityFilter"]);
        assert_eq!(
            FilterPipeline::from_names(&["Nope"]).expect_err("unknown"),
            "Nope"
        );
        assert_eq!(FilterPipeline::default().names(), FILTER_NAMES);
    }
}
