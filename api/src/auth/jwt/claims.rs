//! Which claims of a verified token carry the project, the user and the roles.
//! A name with dots reaches into objects (`project.id`, `realm_access.roles`);
//! roles may be a list of strings or one string of names split by spaces or commas.

use serde_json::Value;

use super::{JwtError, JwtIdentity};

/// The longest project or user id accepted.
const MAX_ID_CHARS: usize = 255;

/// The claim names (`SCORIA_AUTH_PROJECT_CLAIM`, `_USER_CLAIM`, `_ROLES_CLAIM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The project's claim (`project_id`).
    pub project: String,
    /// The user's claim (`sub`).
    pub user: String,
    /// The roles' claim (`roles`).
    pub roles: String,
}

impl Default for Claims {
    fn default() -> Self {
        Self {
            project: "project_id".into(),
            user: "sub".into(),
            roles: "roles".into(),
        }
    }
}

fn lookup<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    // A claim whose own name has dots wins over the nested reading.
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

fn id(claims: &Value, name: &str, what: &str) -> Result<String, JwtError> {
    let value = lookup(claims, name)
        .ok_or_else(|| JwtError::Claim(format!("the token has no {name} claim (the {what})")))?;
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(JwtError::Claim(format!(
                "the token's {name} claim (the {what}) is not a string"
            )));
        }
    };
    if text.is_empty() || text.chars().count() > MAX_ID_CHARS || text.chars().any(char::is_control)
    {
        return Err(JwtError::Claim(format!(
            "the token's {name} claim (the {what}) must be 1 to {MAX_ID_CHARS} printable characters"
        )));
    }
    Ok(text)
}

impl Claims {
    /// The identity `claims` carry.
    pub(crate) fn identity(&self, claims: &Value) -> Result<JwtIdentity, JwtError> {
        let project_id = id(claims, &self.project, "project")?;
        let user_id = id(claims, &self.user, "user")?;
        let roles = match lookup(claims, &self.roles) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s
                .split([' ', ','])
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    // Keystone lists roles as objects with a name.
                    Value::Object(o) => o
                        .get("name")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or(()),
                    _ => Err(()),
                })
                .collect::<Result<_, ()>>()
                .map_err(|()| {
                    JwtError::Claim(format!(
                        "the token's {} claim (the roles) must be a list of names",
                        self.roles
                    ))
                })?,
            Some(_) => {
                return Err(JwtError::Claim(format!(
                    "the token's {} claim (the roles) must be a list of names",
                    self.roles
                )));
            }
        };
        Ok(JwtIdentity {
            project_id,
            user_id,
            roles,
        })
    }
}
