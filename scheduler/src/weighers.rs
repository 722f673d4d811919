//! Weighers rank the pools that passed the filters; the highest weight wins.
//!
//! [`CapacityWeigher`] is Cinder's: the raw weight is the free capacity the
//! request would see (virtual free for thin requests on thin pools), normalised
//! to `0..=1` over the candidates and multiplied by `capacity_weight_multiplier`.
//! A positive multiplier spreads volumes over the emptiest pools; a negative one
//! stacks them onto the fullest. A pool reporting infinite capacity always
//! ranks first, one reporting unknown capacity always last.

use crate::{
    filters::{RequestSpec, virtual_free_gib},
    host_state::{Capacity, HostState},
};

/// Ranks pools by free capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityWeigher {
    multiplier: f64,
}

impl CapacityWeigher {
    /// A weigher with `capacity_weight_multiplier` `multiplier`.
    pub fn new(multiplier: f64) -> Self {
        Self { multiplier }
    }

    /// The raw weight of one pool (Cinder's `_weigh_object`), before
    /// normalisation: the free GiB the request sees, or an infinity chosen so
    /// that infinite pools rank first and unknown ones last whatever the sign
    /// of the multiplier.
    pub fn raw_weight(&self, host: &HostState, spec: &RequestSpec) -> f64 {
        let (favoured, disfavoured) = if self.multiplier > 0.0 {
            (f64::INFINITY, f64::NEG_INFINITY)
        } else {
            (f64::NEG_INFINITY, f64::INFINITY)
        };
        let figures = [host.total_capacity, host.free_capacity];
        if figures.contains(&Capacity::Unknown) {
            disfavoured
        } else if figures.contains(&Capacity::Infinite) {
            favoured
        } else {
            virtual_free_gib(host, spec.thin).unwrap_or(disfavoured)
        }
    }

    /// The final weight of each pool, in input order.
    pub fn weigh(&self, hosts: &[&HostState], spec: &RequestSpec) -> Vec<f64> {
        let raw: Vec<f64> = hosts.iter().map(|h| self.raw_weight(h, spec)).collect();
        normalize(&raw)
            .into_iter()
            .map(|w| w * self.multiplier)
            .collect()
    }

    /// The pool with the highest weight (the first of equals), if any.
    pub fn best<'a>(&self, hosts: &[&'a HostState], spec: &RequestSpec) -> Option<&'a HostState> {
        let weights = self.weigh(hosts, spec);
        let mut best: Option<(usize, f64)> = None;
        for (i, w) in weights.into_iter().enumerate() {
            if best.is_none_or(|(_, top)| w > top) {
                best = Some((i, w));
            }
        }
        best.map(|(i, _)| hosts[i])
    }
}

/// Min-max normalisation to `0..=1` (all equal: all 0), with infinities first
/// replaced by values just beyond the finite range (Cinder's `OFFSET_MULT`).
fn normalize(raw: &[f64]) -> Vec<f64> {
    let finite = raw.iter().copied().filter(|w| w.is_finite());
    let (fmin, fmax) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), w| {
        (lo.min(w), hi.max(w))
    });
    let (fmin, fmax) = if fmin > fmax {
        (0.0, 0.0)
    } else {
        (fmin, fmax)
    };
    let offset = if fmax > fmin {
        (fmax - fmin) * 0.5
    } else {
        1.0
    };
    let clamped: Vec<f64> = raw
        .iter()
        .map(|&w| {
            if w == f64::INFINITY {
                fmax + offset
            } else if w == f64::NEG_INFINITY || w.is_nan() {
                fmin - offset
            } else {
                w
            }
        })
        .collect();
    let lo = clamped.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = clamped.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi <= lo || hi.is_nan() || lo.is_nan() {
        return vec![0.0; raw.len()];
    }
    clamped.into_iter().map(|w| (w - lo) / (hi - lo)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{pool, spec};

    fn best_host(weigher: CapacityWeigher, hosts: &[&HostState], s: &RequestSpec) -> String {
        weigher
            .best(hosts, s)
            .map(|h| h.host.clone())
            .unwrap_or_default()
    }

    #[test]
    fn normalises_and_multiplies() {
        let (a, b, c) = (
            pool("a@f", 100.0, 10.0),
            pool("b@f", 100.0, 60.0),
            pool("c@f", 100.0, 110.0),
        );
        let weights = CapacityWeigher::new(2.0).weigh(&[&a, &b, &c], &spec(1));
        assert_eq!(weights, [0.0, 1.0, 2.0]);
        let equal = CapacityWeigher::new(1.0).weigh(&[&a, &a], &spec(1));
        assert_eq!(equal, [0.0, 0.0]);
        assert!(CapacityWeigher::new(1.0).weigh(&[], &spec(1)).is_empty());
    }

    #[test]
    fn positive_multiplier_spreads_to_the_emptiest() {
        let (a, b) = (pool("a@f", 100.0, 10.0), pool("b@f", 100.0, 60.0));
        assert_eq!(
            best_host(CapacityWeigher::new(1.0), &[&a, &b], &spec(1)),
            "b@f"
        );
    }

    #[test]
    fn negative_multiplier_stacks_on_the_fullest() {
        let (a, b) = (pool("a@f", 100.0, 10.0), pool("b@f", 100.0, 60.0));
        assert_eq!(
            best_host(CapacityWeigher::new(-1.0), &[&a, &b], &spec(1)),
            "a@f"
        );
    }

    #[test]
    fn ties_go_to_the_first() {
        let (a, b) = (pool("a@f", 100.0, 50.0), pool("b@f", 100.0, 50.0));
        assert_eq!(
            best_host(CapacityWeigher::new(1.0), &[&a, &b], &spec(1)),
            "a@f"
        );
        assert!(CapacityWeigher::new(1.0).best(&[], &spec(1)).is_none());
    }

    #[test]
    fn reserve_counts() {
        let mut a = pool("a@f", 1000.0, 100.0);
        a.reserved_percentage = 10; // 100 - 100 = 0 usable
        let b = pool("b@f", 100.0, 50.0);
        assert_eq!(
            best_host(CapacityWeigher::new(1.0), &[&a, &b], &spec(1)),
            "b@f"
        );
    }

    #[test]
    fn thin_pools_weigh_virtual_free() {
        // Thin pool: 100 total * ratio 4 - 100 allocated = 300 virtual free,
        // though only 20 really free.
        let mut thin = pool("thin@f", 100.0, 20.0);
        thin.thin_provisioning_support = true;
        thin.max_over_subscription_ratio = 4.0;
        thin.allocated_capacity_gib = 100.0;
        let thick = pool("thick@f", 200.0, 200.0);
        let w = CapacityWeigher::new(1.0);
        assert_eq!(w.raw_weight(&thin, &spec(1)), 300.0);
        assert_eq!(best_host(w, &[&thin, &thick], &spec(1)), "thin@f");
        let thick_request = RequestSpec {
            thin: false,
            ..spec(1)
        };
        assert_eq!(w.raw_weight(&thin, &thick_request), 20.0);
        assert_eq!(best_host(w, &[&thin, &thick], &thick_request), "thick@f");
    }

    #[test]
    fn virtual_consumption_moves_the_choice() {
        let (mut a, b) = (pool("a@f", 100.0, 60.0), pool("b@f", 100.0, 50.0));
        let w = CapacityWeigher::new(1.0);
        assert_eq!(best_host(w, &[&a, &b], &spec(20)), "a@f");
        a.consume(20);
        assert_eq!(best_host(w, &[&a, &b], &spec(20)), "b@f");
    }

    #[test]
    fn infinite_first_unknown_last_whatever_the_sign() {
        let mut inf = pool("inf@f", 100.0, 0.0);
        inf.free_capacity = Capacity::Infinite;
        let mut unknown = pool("unknown@f", 100.0, 0.0);
        unknown.free_capacity = Capacity::Unknown;
        let (small, big) = (pool("small@f", 100.0, 10.0), pool("big@f", 100.0, 90.0));
        let hosts = [&unknown, &small, &big, &inf];
        for multiplier in [1.0, -1.0] {
            let w = CapacityWeigher::new(multiplier);
            assert_eq!(
                best_host(w, &hosts, &spec(1)),
                "inf@f",
                "multiplier {multiplier}"
            );
            let weights = w.weigh(&hosts, &spec(1));
            let lowest = weights.iter().copied().fold(f64::INFINITY, f64::min);
            assert_eq!(
                weights[0], lowest,
                "unknown ranks last with multiplier {multiplier}: {weights:?}"
            );
            assert!(weights.iter().all(|w| w.is_finite()));
        }
        // Spreading still ranks big above small; stacking the reverse.
        let p = CapacityWeigher::new(1.0).weigh(&hosts, &spec(1));
        assert!(p[2] > p[1]);
        let n = CapacityWeigher::new(-1.0).weigh(&hosts, &spec(1));
        assert!(n[1] > n[2]);
    }

    #[test]
    fn normalize_edge_cases() {
        assert_eq!(normalize(&[f64::INFINITY, f64::INFINITY]), [0.0, 0.0]);
        assert_eq!(normalize(&[f64::NEG_INFINITY, f64::INFINITY]), [0.0, 1.0]);
        assert_eq!(normalize(&[5.0]), [0.0]);
    }
}
