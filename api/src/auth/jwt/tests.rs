//! Unit tests of the parts that need no keys: the header checks and the claims.
//! Signed tokens against a served JWKS are tested through the real API
//! (`tests/tests/security/jwt.rs`).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde_json::json;

use super::{Claims, JwtError, inspect_header};

fn token(header: serde_json::Value) -> String {
    format!("{}.e30.sig", B64.encode(header.to_string()))
}

#[test]
fn unsigned_and_hmac_tokens_are_refused_by_their_header() {
    assert_eq!(
        inspect_header(&token(json!({"alg": "none"}))),
        Err(JwtError::Unsigned)
    );
    assert_eq!(
        inspect_header(&token(json!({"alg": "None"}))),
        Err(JwtError::Unsigned)
    );
    assert!(matches!(
        inspect_header(&token(json!({"alg": "HS256"}))),
        Err(JwtError::Hmac(_))
    ));
    assert!(matches!(
        inspect_header(&token(json!({"alg": "XY999"}))),
        Err(JwtError::Algorithm(_))
    ));
    for bad in ["", "a.b", "a.b.c.d", "!!!.e30.sig"] {
        assert!(
            matches!(inspect_header(bad), Err(JwtError::Malformed(_))),
            "{bad:?}"
        );
    }
    let (alg, kid) = inspect_header(&token(json!({"alg": "ES256", "kid": "k1"}))).expect("ok");
    assert_eq!(alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(kid.as_deref(), Some("k1"));
    assert!(matches!(
        inspect_header(&token(json!({"alg": "ES256", "kid": 7}))),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn claims_are_read_by_name_and_dotted_path() {
    let defaults = Claims::default();
    let id = defaults
        .identity(&json!({"project_id": "p1", "sub": "alice", "roles": ["member", "reader"]}))
        .expect("identity");
    assert_eq!(
        (id.project_id.as_str(), id.user_id.as_str()),
        ("p1", "alice")
    );
    assert_eq!(id.roles, ["member", "reader"]);

    let keycloak = Claims {
        project: "project.id".into(),
        user: "preferred_username".into(),
        roles: "realm_access.roles".into(),
    };
    let id = keycloak
        .identity(&json!({
            "project": {"id": "p2"},
            "preferred_username": "bob",
            "realm_access": {"roles": ["admin"]},
        }))
        .expect("nested claims");
    assert_eq!(
        (id.project_id.as_str(), id.roles.as_slice()),
        ("p2", &["admin".to_owned()][..])
    );

    // Roles as one string, or Keystone's objects with a name; none at all is no role.
    let id = defaults
        .identity(&json!({"project_id": "p", "sub": "u", "roles": "member reader,admin"}))
        .expect("string roles");
    assert_eq!(id.roles, ["member", "reader", "admin"]);
    let id = defaults
        .identity(&json!({"project_id": "p", "sub": "u", "roles": [{"id": "1", "name": "member"}]}))
        .expect("keystone roles");
    assert_eq!(id.roles, ["member"]);
    assert!(
        defaults
            .identity(&json!({"project_id": "p", "sub": "u"}))
            .expect("no roles")
            .roles
            .is_empty()
    );

    for (bad, says) in [
        (json!({"sub": "u"}), "no project_id claim"),
        (json!({"project_id": "", "sub": "u"}), "project_id"),
        (json!({"project_id": "p\u{0}", "sub": "u"}), "printable"),
        (json!({"project_id": ["p"], "sub": "u"}), "not a string"),
        (json!({"project_id": "p"}), "no sub claim"),
        (
            json!({"project_id": "p", "sub": "u", "roles": [1]}),
            "list of names",
        ),
        (
            json!({"project_id": "p", "sub": "u", "roles": {"a": 1}}),
            "list of names",
        ),
    ] {
        let err = defaults.identity(&bad).expect_err(says);
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
}
