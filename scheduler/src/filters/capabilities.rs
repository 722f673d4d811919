//! CapabilitiesFilter (Cinder's `CapabilitiesFilter` with `extra_specs_ops`):
//! every extra spec of the volume type must match the pool's capability of the
//! same name.
//!
//! Keys: `capabilities:<name>` is matched as `<name>`; a key of another scope
//! (`provisioning:type`, `vendor:thing`) is not for this filter and is ignored;
//! a plain key (`volume_backend_name`, `multiattach`) is a capability name. A
//! pool lacking the capability fails.
//!
//! Values (the first word may be an operator):
//!
//! | spec | matches the capability value `v` when |
//! | --- | --- |
//! | `= n` | `v >= n` numerically |
//! | `== n`, `!= n`, `>= n`, `<= n` | numeric comparison |
//! | `s== s`, `s!= s`, `s< s`, `s<= s`, `s> s`, `s>= s` | string comparison |
//! | `<in> s` | `s` is a substring of `v` |
//! | `<all-in> a b ...` | every word is a substring of `v` |
//! | `<or> a <or> b ...` | `v` equals one of the words |
//! | `<is> True` / `<is> False` | `v` read as a boolean (`true`, `yes`, `1`, ... case-insensitive) is the same |
//! | anything else | `v` equals the whole spec |
//!
//! A value that is not a number never matches a numeric operator.

use std::collections::BTreeMap;

use super::{HostFilter, RequestSpec};
use crate::host_state::HostState;

/// The scope prefix whose keys this filter matches.
const SCOPE: &str = "capabilities";

/// A comparison operator taking one operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`: numerically at least.
    AtLeast,
    /// `==`
    NumEq,
    /// `!=`
    NumNe,
    /// `>=`
    NumGe,
    /// `<=`
    NumLe,
    /// `s==`
    StrEq,
    /// `s!=`
    StrNe,
    /// `s<`
    StrLt,
    /// `s<=`
    StrLe,
    /// `s>`
    StrGt,
    /// `s>=`
    StrGe,
    /// `<in>`: substring.
    In,
}

impl Op {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "=" => Op::AtLeast,
            "==" => Op::NumEq,
            "!=" => Op::NumNe,
            ">=" => Op::NumGe,
            "<=" => Op::NumLe,
            "s==" => Op::StrEq,
            "s!=" => Op::StrNe,
            "s<" => Op::StrLt,
            "s<=" => Op::StrLe,
            "s>" => Op::StrGt,
            "s>=" => Op::StrGe,
            "<in>" => Op::In,
            _ => return None,
        })
    }

    fn apply(self, value: &str, operand: &str) -> bool {
        let numbers = || {
            Some((
                value.trim().parse::<f64>().ok()?,
                operand.trim().parse::<f64>().ok()?,
            ))
        };
        let numeric = |cmp: fn(f64, f64) -> bool| numbers().is_some_and(|(v, o)| cmp(v, o));
        match self {
            Op::AtLeast | Op::NumGe => numeric(|v, o| v >= o),
            Op::NumEq => numeric(|v, o| v == o),
            Op::NumNe => numeric(|v, o| v != o),
            Op::NumLe => numeric(|v, o| v <= o),
            Op::StrEq => value == operand,
            Op::StrNe => value != operand,
            Op::StrLt => value < operand,
            Op::StrLe => value <= operand,
            Op::StrGt => value > operand,
            Op::StrGe => value >= operand,
            Op::In => value.contains(operand),
        }
    }
}

/// A parsed extra-spec value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// No operator: the capability equals the whole spec.
    Equals(String),
    /// An operator and its operand.
    Compare(Op, String),
    /// `<or> a <or> b`: equals one of them.
    AnyOf(Vec<String>),
    /// `<all-in> a b`: contains each.
    AllIn(Vec<String>),
    /// `<is> True|False`.
    Is(bool),
    /// An operator without operand: matches nothing.
    Never,
}

impl Requirement {
    /// Parses a spec value as Cinder's `extra_specs_ops.match` reads it.
    pub fn parse(spec: &str) -> Self {
        let mut words = spec.split_whitespace();
        let Some(first) = words.next() else {
            return Requirement::Equals(spec.to_owned());
        };
        let rest: Vec<&str> = words.collect();
        match first {
            // `<or> v1 <or> v2`: the values sit at even positions after the first `<or>`.
            "<or>" if !rest.is_empty() => {
                Requirement::AnyOf(rest.iter().step_by(2).map(|w| (*w).to_owned()).collect())
            }
            "<all-in>" if !rest.is_empty() => {
                Requirement::AllIn(rest.iter().map(|w| (*w).to_owned()).collect())
            }
            "<is>" => rest
                .first()
                .map_or(Requirement::Never, |w| Requirement::Is(truthy(w))),
            "<or>" | "<all-in>" => Requirement::Never,
            op => match (Op::parse(op), rest.first()) {
                (Some(op), Some(operand)) => Requirement::Compare(op, (*operand).to_owned()),
                (Some(_), None) => Requirement::Never,
                (None, _) => Requirement::Equals(spec.to_owned()),
            },
        }
    }

    /// Whether capability value `value` satisfies the requirement.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Requirement::Equals(expected) => value == expected,
            Requirement::Compare(op, operand) => op.apply(value, operand),
            Requirement::AnyOf(options) => options.iter().any(|o| o == value),
            Requirement::AllIn(words) => words.iter().all(|w| value.contains(w.as_str())),
            Requirement::Is(expected) => truthy(value) == *expected,
            Requirement::Never => false,
        }
    }
}

/// `oslo.utils`' `bool_from_string`: `1`, `t`, `true`, `on`, `y`, `yes` (any case) are true.
fn truthy(word: &str) -> bool {
    matches!(
        word.trim().to_ascii_lowercase().as_str(),
        "1" | "t" | "true" | "on" | "y" | "yes"
    )
}

/// One extra spec for this filter: the capability it looks at and what it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilitySpec {
    /// The capability name (the `capabilities:` scope stripped).
    pub key: String,
    /// The spec as written.
    pub raw: String,
    /// The parsed requirement.
    pub requirement: Requirement,
}

impl CapabilitySpec {
    /// The specs of `extra_specs` this filter checks, sorted by key; keys of
    /// other scopes are left out.
    pub fn from_extra_specs(extra_specs: &BTreeMap<String, String>) -> Vec<Self> {
        let mut specs: Vec<Self> = extra_specs
            .iter()
            .filter_map(|(key, value)| {
                let key = match key.split_once(':') {
                    Some((SCOPE, name)) if !name.is_empty() => name,
                    Some(_) => return None,
                    None if key == SCOPE || key.is_empty() => return None,
                    None => key.as_str(),
                };
                Some(Self {
                    key: key.to_owned(),
                    raw: value.clone(),
                    requirement: Requirement::parse(value),
                })
            })
            .collect();
        specs.sort_by(|a, b| a.key.cmp(&b.key));
        specs
    }
}

/// Keeps the pools whose capabilities satisfy every extra spec.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapabilitiesFilter;

impl CapabilitiesFilter {
    /// The filter's name.
    pub const NAME: &'static str = "CapabilitiesFilter";
}

impl HostFilter for CapabilitiesFilter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        spec.capability_specs
            .iter()
            .all(|s| match host.capabilities.get(&s.key) {
                Some(value) => s.requirement.matches(value),
                None => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{pool, spec};

    fn m(value: &str, spec: &str) -> bool {
        Requirement::parse(spec).matches(value)
    }

    #[test]
    fn plain_value_is_string_equality() {
        assert!(m("file", "file"));
        assert!(!m("file", "qcow2"));
        assert!(!m("1", "1.0"), "no operator: not numeric");
        assert!(m("two words", "two words"));
        assert!(!m("two  words", "two words"));
        assert!(m("", ""));
        assert!(
            m("<bogus> x", "<bogus> x"),
            "unknown operator: the whole spec is the value"
        );
    }

    #[test]
    fn equals_operator_is_numeric_at_least() {
        assert!(m("10", "= 10"));
        assert!(m("11", "= 10"));
        assert!(!m("9", "= 10"));
        assert!(m("10.5", "= 10"));
        assert!(!m("many", "= 10"), "not a number");
        assert!(!m("10", "= lots"));
    }

    #[test]
    fn numeric_operators() {
        assert!(m("5", "== 5.0"));
        assert!(!m("5", "== 6"));
        assert!(m("5", "!= 6"));
        assert!(!m("5", "!= 5"));
        assert!(m("5", ">= 5"));
        assert!(!m("4.9", ">= 5"));
        assert!(m("5", "<= 5"));
        assert!(!m("5.1", "<= 5"));
        assert!(m(" 7 ", ">= 7"), "whitespace around a number is fine");
        assert!(!m("x", "!= 5"), "a non-number never matches, not even !=");
    }

    #[test]
    fn string_operators() {
        assert!(m("abc", "s== abc"));
        assert!(!m("abc", "s== abd"));
        assert!(m("abc", "s!= abd"));
        assert!(!m("abc", "s!= abc"));
        assert!(m("abc", "s< abd"));
        assert!(!m("abd", "s< abc"));
        assert!(m("abc", "s<= abc"));
        assert!(m("b", "s> a"));
        assert!(!m("a", "s> a"));
        assert!(m("a", "s>= a"));
        assert!(m("10", "s< 9"), "string order, not numeric");
    }

    #[test]
    fn in_is_substring() {
        assert!(m("iSCSI,NBD", "<in> NBD"));
        assert!(!m("iSCSI", "<in> NBD"));
        assert!(m("nbd", "<in> nb"));
    }

    #[test]
    fn all_in_needs_every_word() {
        assert!(m("aes vmx sse", "<all-in> aes vmx"));
        assert!(!m("aes sse", "<all-in> aes vmx"));
        assert!(!m("aes", "<all-in>"), "no operand");
    }

    #[test]
    fn or_is_any_of() {
        let spec = "<or> file <or> qcow2 <or> rbd";
        assert!(m("file", spec));
        assert!(m("qcow2", spec));
        assert!(m("rbd", spec));
        assert!(!m("lvm", spec));
        assert!(!m("<or>", spec), "the keywords are not values");
        assert!(m("x", "<or> x"));
        assert!(!m("", "<or>"));
    }

    #[test]
    fn is_is_boolean_case_insensitive() {
        for value in ["True", "true", "TRUE", "yes", "1"] {
            assert!(m(value, "<is> True"), "{value}");
            assert!(m(value, "<is> true"), "{value}");
            assert!(!m(value, "<is> False"), "{value}");
        }
        for value in ["False", "false", "0", "no"] {
            assert!(m(value, "<is> False"), "{value}");
            assert!(m(value, "<is> FALSE"), "{value}");
            assert!(!m(value, "<is> True"), "{value}");
        }
        assert!(!m("True", "<is>"), "no operand");
    }

    #[test]
    fn operator_without_operand_never_matches() {
        for op in ["=", "==", "!=", ">=", "<=", "s==", "s<", "<in>"] {
            assert_eq!(Requirement::parse(op), Requirement::Never, "{op}");
            assert!(!m(op, op));
        }
    }

    fn specs(pairs: &[(&str, &str)]) -> Vec<CapabilitySpec> {
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CapabilitySpec::from_extra_specs(&map)
    }

    #[test]
    fn scopes() {
        let s = specs(&[
            ("capabilities:multiattach", "<is> True"),
            ("volume_backend_name", "gold"),
            ("provisioning:type", "thin"),
            ("vendor:anything", "x"),
            ("capabilities:", "x"),
        ]);
        assert_eq!(
            s.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            ["multiattach", "volume_backend_name"]
        );
    }

    fn filter(host: &HostState, pairs: &[(&str, &str)]) -> bool {
        let s = RequestSpec {
            capability_specs: specs(pairs),
            ..spec(1)
        };
        CapabilitiesFilter.passes(host, &s)
    }

    #[test]
    fn filter_matches_every_spec_against_the_pool() {
        let mut host = pool("n@gold", 100.0, 100.0);
        host.capabilities
            .insert("multiattach".into(), "True".into());
        host.capabilities
            .insert("storage_protocol".into(), "nbd".into());
        assert!(filter(&host, &[]), "no specs: every pool");
        assert!(
            filter(&host, &[("volume_backend_name", "gold")]),
            "pins the backend"
        );
        assert!(!filter(&host, &[("volume_backend_name", "silver")]));
        assert!(filter(
            &host,
            &[
                ("capabilities:multiattach", "<is> True"),
                ("storage_protocol", "<or> nbd <or> iscsi")
            ]
        ));
        assert!(!filter(
            &host,
            &[
                ("capabilities:multiattach", "<is> True"),
                ("storage_protocol", "iscsi")
            ]
        ));
        assert!(
            !filter(&host, &[("replication", "<is> False")]),
            "a missing capability fails"
        );
        assert!(
            filter(&host, &[("vendor:replication", "<is> True")]),
            "other scopes are ignored"
        );
        assert!(filter(
            &host,
            &[("driver", "file"), ("total_capacity_gb", ">= 100")]
        ));
        assert!(filter(
            &host,
            &[("thick_provisioning_support", "<is> True")]
        ));
    }
}
