//! Authorisation by policy rules in Cinder's style: every RPC has a rule
//! (`volume:create`, `volume_extension:volume_admin_actions:reset_status`, ...)
//! decided by its full gRPC path, with Cinder's current defaults. An optional
//! policy file in oslo.policy's YAML form (`SCORIA_POLICY_FILE`) overrides any
//! rule; a file naming an unknown rule, or with a rule that does not parse,
//! stops the API at start with the line named.
//!
//! The target of a rule (`%(project_id)s`) is the project the request acts in:
//! the caller's own, since resources of other projects are not found (see
//! `scope.rs`). A path without a rule is refused whoever asks (fail closed).

mod defaults;
pub mod expr;
mod file;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use scoria_common::RequestContext;

use crate::error::{ApiError, ApiResult};
use defaults::{ALIASES, BASE_RULES, IMPLIED_ROLES, METHOD_RULES};
use expr::{Attr, Expr, Facts, TargetAttr};

/// Why the policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path} (SCORIA_POLICY_FILE): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a YAML mapping of rule names to rule strings.
    #[error("policy file {path} line {line}: {reason}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// Where (1-based).
        line: usize,
        /// Why.
        reason: String,
    },
    /// The file names a rule Scoria does not have.
    #[error(
        "policy file {path} line {line}: unknown rule {name:?} (the README's Policy section lists the rule names)"
    )]
    UnknownRule {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// The name.
        name: String,
    },
    /// A rule does not parse.
    #[error("policy file {path} line {line}: rule {name:?}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// The rule.
        name: String,
        /// Why.
        reason: String,
    },
    /// A rule refers to a rule that does not exist, or to itself through others.
    #[error("policy file {path} line {line}: rule {name:?}: {reason}")]
    Reference {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// The rule.
        name: String,
        /// Why.
        reason: String,
    },
}

/// One rule and where it was set (`None`: a default).
#[derive(Debug, Clone)]
struct Rule {
    expr: Expr,
    line: Option<usize>,
}

/// The rules the API enforces.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: HashMap<String, Rule>,
}

impl Default for Policy {
    fn default() -> Self {
        Self::defaults()
    }
}

impl Policy {
    /// Cinder's defaults, with no file.
    pub fn defaults() -> Self {
        let mut rules = HashMap::new();
        let defaults = BASE_RULES
            .iter()
            .copied()
            .chain(METHOD_RULES.iter().map(|(_, name, rule)| (*name, *rule)));
        for (name, text) in defaults {
            // The defaults are constants; a unit test parses every one.
            let expr = Expr::parse(text).unwrap_or(Expr::Never);
            rules.insert(name.to_owned(), Rule { expr, line: None });
        }
        Self { rules }
    }

    /// The defaults, overridden by the policy file at `path` if there is one.
    pub fn load(path: Option<&Path>) -> Result<Self, PolicyError> {
        let Some(path) = path else {
            return Ok(Self::defaults());
        };
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// The defaults, overridden by the rules of a policy file's text (`path`
    /// names it in errors).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let entries = file::entries(text).map_err(|(line, reason)| PolicyError::Yaml {
            path: path.to_owned(),
            line,
            reason,
        })?;
        let mut policy = Self::defaults();
        let mut seen = HashSet::new();
        for entry in entries {
            let name = canonical(&entry.name).to_owned();
            if !policy.rules.contains_key(&name) {
                return Err(PolicyError::UnknownRule {
                    path: path.to_owned(),
                    line: entry.line,
                    name: entry.name,
                });
            }
            if !seen.insert(name.clone()) {
                return Err(PolicyError::Yaml {
                    path: path.to_owned(),
                    line: entry.line,
                    reason: format!("rule {:?} is set twice", entry.name),
                });
            }
            let expr = Expr::parse(&entry.rule).map_err(|e| PolicyError::Syntax {
                path: path.to_owned(),
                line: entry.line,
                name: entry.name.clone(),
                reason: e.0,
            })?;
            let expr = canonical_refs(expr);
            policy.rules.insert(
                name,
                Rule {
                    expr,
                    line: Some(entry.line),
                },
            );
        }
        policy.check_references(path)?;
        Ok(policy)
    }

    /// Every `rule:` reference exists and no rule depends on itself.
    fn check_references(&self, path: &Path) -> Result<(), PolicyError> {
        let error = |name: &str, rule: &Rule, reason: String| PolicyError::Reference {
            path: path.to_owned(),
            line: rule.line.unwrap_or(0),
            name: name.to_owned(),
            reason,
        };
        for (name, rule) in &self.rules {
            for reference in rule.expr.references() {
                if !self.rules.contains_key(reference) {
                    return Err(error(
                        name,
                        rule,
                        format!("refers to rule:{reference}, which does not exist"),
                    ));
                }
            }
            if self.depends_on(name, name, &mut HashSet::new()) {
                return Err(error(
                    name,
                    rule,
                    "refers to itself through rule: references".into(),
                ));
            }
        }
        Ok(())
    }

    fn depends_on<'a>(&'a self, from: &'a str, on: &str, visited: &mut HashSet<&'a str>) -> bool {
        let Some(rule) = self.rules.get(from) else {
            return false;
        };
        // `is_admin` is the `context_is_admin` rule.
        let mut next = rule.expr.references();
        if uses_is_admin(&rule.expr) {
            next.push("context_is_admin");
        }
        next.into_iter()
            .any(|r| r == on || (visited.insert(r) && self.depends_on(r, on, visited)))
    }

    /// The rule deciding the method at `path`, if it has one.
    pub fn rule_of(path: &str) -> Option<&'static str> {
        METHOD_RULES
            .iter()
            .find(|(known, _, _)| *known == path)
            .map(|(_, name, _)| *name)
    }

    /// Every method path with its rule name.
    pub fn methods() -> impl Iterator<Item = (&'static str, &'static str)> {
        METHOD_RULES.iter().map(|(path, name, _)| (*path, *name))
    }

    /// Whether the rule `name` passes for `ctx`.
    pub fn check(&self, name: &str, ctx: &RequestContext) -> bool {
        Eval {
            policy: self,
            ctx,
            depth: 0,
        }
        .rule(name)
    }

    /// Whether `ctx` may call the method at `path` (its full gRPC path).
    pub fn enforce(&self, ctx: &RequestContext, path: &str) -> ApiResult<()> {
        let Some(name) = Self::rule_of(path) else {
            return Err(ApiError::PermissionDenied(format!(
                "{path} is not a method this API serves: refused"
            )));
        };
        if self.check(name, ctx) {
            return Ok(());
        }
        let method = path.rsplit('/').next().unwrap_or(path);
        let rule = self
            .rules
            .get(name)
            .map(|r| r.expr.to_string())
            .unwrap_or_else(|| "!".into());
        Err(ApiError::PermissionDenied(format!(
            "{method} is refused by policy rule {name:?} ({rule}); the caller has roles [{}] in project {}",
            ctx.roles.join(", "),
            ctx.project_id
        )))
    }
}

/// Scoria's name for a rule a Cinder file may name otherwise.
fn canonical(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(cinder, _)| *cinder == name)
        .map(|(_, ours)| *ours)
        .unwrap_or(name)
}

fn canonical_refs(expr: Expr) -> Expr {
    match expr {
        Expr::Rule(name) => Expr::Rule(canonical(&name).to_owned()),
        Expr::Not(e) => Expr::Not(Box::new(canonical_refs(*e))),
        Expr::And(es) => Expr::And(es.into_iter().map(canonical_refs).collect()),
        Expr::Or(es) => Expr::Or(es.into_iter().map(canonical_refs).collect()),
        other => other,
    }
}

fn uses_is_admin(expr: &Expr) -> bool {
    match expr {
        Expr::Match {
            attr: Attr::IsAdmin,
            ..
        } => true,
        Expr::Not(e) => uses_is_admin(e),
        Expr::And(es) | Expr::Or(es) => es.iter().any(uses_is_admin),
        _ => false,
    }
}

/// Whether `roles` (with the roles they imply) include `role`.
fn holds(roles: &[String], role: &str) -> bool {
    roles.iter().any(|held| {
        let held = held.to_lowercase();
        held == role
            || IMPLIED_ROLES
                .iter()
                .any(|(r, implied)| *r == held && implied.contains(&role))
    })
}

/// One evaluation: the caller, and a bound on `rule:` depth (references are
/// checked for cycles at load; the bound is a second guard).
struct Eval<'a> {
    policy: &'a Policy,
    ctx: &'a RequestContext,
    depth: usize,
}

impl Facts for Eval<'_> {
    fn has_role(&self, role: &str) -> bool {
        holds(&self.ctx.roles, role)
    }

    fn attr(&self, attr: Attr) -> String {
        match attr {
            Attr::ProjectId => self.ctx.project_id.clone(),
            Attr::UserId => self.ctx.user_id.clone(),
            Attr::IsAdmin => {
                if self.rule("context_is_admin") {
                    "True".into()
                } else {
                    "False".into()
                }
            }
            Attr::IsAdminProject => "True".into(),
        }
    }

    fn target(&self, attr: TargetAttr) -> String {
        match attr {
            TargetAttr::ProjectId => self.ctx.project_id.clone(),
            TargetAttr::UserId => self.ctx.user_id.clone(),
        }
    }

    fn rule(&self, name: &str) -> bool {
        if self.depth > 32 {
            return false;
        }
        let Some(rule) = self.policy.rules.get(name) else {
            return false;
        };
        rule.expr.eval(&Eval {
            policy: self.policy,
            ctx: self.ctx,
            depth: self.depth + 1,
        })
    }
}

#[cfg(test)]
mod tests;
