//! The rule language of oslo.policy, as Cinder's policy files write it:
//!
//! ```text
//! expr  := or
//! or    := and ("or" and)*
//! and   := not ("and" not)*
//! not   := "not" not | "(" or ")" | check
//! check := "@" | "!" | "rule:" NAME | "role:" NAME | ATTR ":" VALUE
//! ```
//!
//! `@` always passes, `!` never does, and an empty rule passes (oslo's `""`).
//! `ATTR:VALUE` compares an attribute of the caller (`project_id`, `user_id`,
//! `is_admin`, `is_admin_project`) with a value: `%(project_id)s` names one of the
//! target (the resource a request acts on), anything else is a literal (`True`,
//! `'abc'`). Roles compare without case, as Keystone's do.

use std::fmt;

/// A parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `@` or an empty rule.
    Always,
    /// `!`.
    Never,
    /// `rule:NAME`: another rule of the policy.
    Rule(String),
    /// `role:NAME` (lower-cased).
    Role(String),
    /// `ATTR:VALUE`.
    Match {
        /// The caller's attribute.
        attr: Attr,
        /// What it must equal.
        value: Value,
    },
    /// `not E`.
    Not(Box<Expr>),
    /// `E and E and ...`.
    And(Vec<Expr>),
    /// `E or E or ...`.
    Or(Vec<Expr>),
}

/// An attribute of the caller a rule may compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    /// The project the caller's token is scoped to.
    ProjectId,
    /// The caller's user id.
    UserId,
    /// Whether the caller passes the `context_is_admin` rule (`True` / `False`).
    IsAdmin,
    /// Keystone's admin-project flag; `True` for every caller here (Keystone's
    /// answer when no admin project is configured).
    IsAdminProject,
}

impl Attr {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "project_id" | "tenant_id" | "tenant" => Self::ProjectId,
            "user_id" | "user" => Self::UserId,
            "is_admin" => Self::IsAdmin,
            "is_admin_project" => Self::IsAdminProject,
            _ => return None,
        })
    }
}

/// The right side of `ATTR:VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `%(NAME)s`: the target's attribute.
    Target(TargetAttr),
    /// A literal.
    Literal(String),
}

/// An attribute of the target a rule may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAttr {
    /// `%(project_id)s`: the project the request acts in.
    ProjectId,
    /// `%(user_id)s`: the user the request acts for.
    UserId,
}

/// Why a rule does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

/// What a rule is evaluated against.
pub trait Facts {
    /// Whether the caller holds `role` (lower-case).
    fn has_role(&self, role: &str) -> bool;
    /// The caller's `attr`, as text (`True` / `False` for flags).
    fn attr(&self, attr: Attr) -> String;
    /// The target's `attr`.
    fn target(&self, attr: TargetAttr) -> String;
    /// Whether the rule `name` passes.
    fn rule(&self, name: &str) -> bool;
}

impl Expr {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return Ok(Expr::Always);
        }
        let mut parser = Parser { tokens, at: 0 };
        let expr = parser.or()?;
        match parser.peek() {
            None => Ok(expr),
            Some(token) => Err(SyntaxError(format!("unexpected {token:?}"))),
        }
    }

    /// Whether the rule passes for `facts`.
    pub fn eval(&self, facts: &dyn Facts) -> bool {
        match self {
            Expr::Always => true,
            Expr::Never => false,
            Expr::Rule(name) => facts.rule(name),
            Expr::Role(role) => facts.has_role(role),
            Expr::Match { attr, value } => {
                let want = match value {
                    Value::Target(t) => facts.target(*t),
                    Value::Literal(l) => l.clone(),
                };
                let have = facts.attr(*attr);
                match attr {
                    Attr::IsAdmin | Attr::IsAdminProject => have.eq_ignore_ascii_case(&want),
                    _ => have == want,
                }
            }
            Expr::Not(e) => !e.eval(facts),
            Expr::And(es) => es.iter().all(|e| e.eval(facts)),
            Expr::Or(es) => es.iter().any(|e| e.eval(facts)),
        }
    }

    /// Every `rule:NAME` this rule refers to.
    pub fn references(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Rule(name) = e {
                out.push(name.as_str());
            }
        });
        out
    }

    fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Not(e) => e.walk(f),
            Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| e.walk(f)),
            _ => {}
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, es: &[Expr], op: &str| {
            f.write_str("(")?;
            for (i, e) in es.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                write!(f, "{e}")?;
            }
            f.write_str(")")
        };
        match self {
            Expr::Always => f.write_str("@"),
            Expr::Never => f.write_str("!"),
            Expr::Rule(n) => write!(f, "rule:{n}"),
            Expr::Role(r) => write!(f, "role:{r}"),
            Expr::Match { attr, value } => {
                let attr = match attr {
                    Attr::ProjectId => "project_id",
                    Attr::UserId => "user_id",
                    Attr::IsAdmin => "is_admin",
                    Attr::IsAdminProject => "is_admin_project",
                };
                match value {
                    Value::Target(TargetAttr::ProjectId) => write!(f, "{attr}:%(project_id)s"),
                    Value::Target(TargetAttr::UserId) => write!(f, "{attr}:%(user_id)s"),
                    Value::Literal(l) => write!(f, "{attr}:{l}"),
                }
            }
            Expr::Not(e) => write!(f, "not {e}"),
            Expr::And(es) => join(f, es, "and"),
            Expr::Or(es) => join(f, es, "or"),
        }
    }
}

/// Words and parentheses (oslo splits on white space, then peels parentheses).
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for word in text.split_whitespace() {
        let mut word = word;
        while let Some(rest) = word.strip_prefix('(') {
            tokens.push("(".to_owned());
            word = rest;
        }
        let mut closing = 0;
        while let Some(rest) = word.strip_suffix(')') {
            closing += 1;
            word = rest;
        }
        if !word.is_empty() {
            tokens.push(word.to_owned());
        }
        tokens.extend(std::iter::repeat_n(")".to_owned(), closing));
    }
    tokens
}

struct Parser {
    tokens: Vec<String>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn keyword(&self, word: &str) -> bool {
        self.peek().is_some_and(|t| t.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        let mut terms = vec![self.and()?];
        while self.keyword("or") {
            self.at += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let mut terms = vec![self.not()?];
        while self.keyword("and") {
            self.at += 1;
            terms.push(self.not()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn not(&mut self) -> Result<Expr, SyntaxError> {
        if self.keyword("not") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        match self.next() {
            None => Err(SyntaxError(
                "the rule ends where a check was expected".into(),
            )),
            Some(t) if t == "(" => {
                let inner = self.or()?;
                match self.next() {
                    Some(t) if t == ")" => Ok(inner),
                    Some(t) => Err(SyntaxError(format!("expected \")\", found {t:?}"))),
                    None => Err(SyntaxError("a \"(\" is never closed".into())),
                }
            }
            Some(t) => check(&t),
        }
    }
}

fn check(token: &str) -> Result<Expr, SyntaxError> {
    match token {
        "@" => return Ok(Expr::Always),
        "!" => return Ok(Expr::Never),
        ")" => return Err(SyntaxError("unexpected \")\"".into())),
        t if t.eq_ignore_ascii_case("and")
            || t.eq_ignore_ascii_case("or")
            || t.eq_ignore_ascii_case("not") =>
        {
            return Err(SyntaxError(format!(
                "unexpected {t:?} where a check was expected"
            )));
        }
        _ => {}
    }
    let Some((kind, value)) = token.split_once(':') else {
        return Err(SyntaxError(format!(
            "{token:?} is not a check (role:NAME, rule:NAME, ATTR:VALUE, @ or !)"
        )));
    };
    if value.is_empty() {
        return Err(SyntaxError(format!(
            "{token:?} has nothing after the colon"
        )));
    }
    match kind {
        "rule" => Ok(Expr::Rule(value.to_owned())),
        "role" => Ok(Expr::Role(value.to_lowercase())),
        "http" | "https" => Err(SyntaxError(format!(
            "{token:?}: remote (http) checks are not supported"
        ))),
        attr => {
            let attr = Attr::parse(attr).ok_or_else(|| {
                SyntaxError(format!(
                    "{token:?}: unknown attribute {attr:?} (known: project_id, user_id, is_admin, is_admin_project, role, rule)"
                ))
            })?;
            let value = if let Some(name) =
                value.strip_prefix("%(").and_then(|v| v.strip_suffix(")s"))
            {
                Value::Target(match name {
                    "project_id" | "tenant_id" => TargetAttr::ProjectId,
                    "user_id" => TargetAttr::UserId,
                    other => {
                        return Err(SyntaxError(format!(
                            "{token:?}: unknown target attribute {other:?} (known: project_id, user_id)"
                        )));
                    }
                })
            } else {
                let literal = value
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                    .unwrap_or(value);
                Value::Literal(literal.to_owned())
            };
            Ok(Expr::Match { attr, value })
        }
    }
}
