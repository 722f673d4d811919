use std::path::Path;

use scoria_common::RequestContext;
use tonic::Code;

use super::{Policy, PolicyError, defaults::METHOD_RULES, expr::Expr};

fn ctx(project: &str, roles: &[&str]) -> RequestContext {
    RequestContext::new(project, "u1", roles.iter().map(|r| r.to_string()).collect())
}

fn allowed(policy: &Policy, roles: &[&str], rule: &str) -> bool {
    policy.check(rule, &ctx("p1", roles))
}

fn load(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_yaml(text, Path::new("policy.yaml"))
}

#[test]
fn every_default_rule_parses() {
    for (name, text) in super::defaults::BASE_RULES
        .iter()
        .copied()
        .chain(METHOD_RULES.iter().map(|(_, n, r)| (*n, *r)))
    {
        Expr::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // And every reference of the defaults exists.
    Policy::from_yaml("", Path::new("empty")).expect("defaults are consistent");
}

#[test]
fn the_defaults_are_cinders() {
    let p = Policy::defaults();
    for (path, rule, _) in METHOD_RULES {
        let admin = allowed(&p, &["admin"], rule);
        let member = allowed(&p, &["member"], rule);
        let reader = allowed(&p, &["reader"], rule);
        let nobody = allowed(&p, &["observer"], rule);
        assert!(admin, "admin may call {path}");
        assert!(!nobody, "a caller without a known role may not call {path}");
        let read = ["Get", "List", "Watch"]
            .iter()
            .any(|verb| path.rsplit('/').next().is_some_and(|m| m.starts_with(verb)));
        let admin_only = path.contains("AdminService")
            || path.contains("VolumeTypeService/") && !read
            || (path.contains("QuotaService/") && !read);
        if admin_only {
            assert!(!member && !reader, "{path} is admin-only");
        } else if read {
            assert!(member && reader, "{path} is a read: members and readers");
        } else {
            assert!(member && !reader, "{path} is a write: members, not readers");
        }
    }
}

#[test]
fn the_expression_language_parses_and_decides() {
    let p = Policy::defaults();
    let c = ctx("p1", &["member"]);
    let decide = |text: &str| {
        let e = Expr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        e.eval(&super::Eval {
            policy: &p,
            ctx: &c,
            depth: 0,
        })
    };
    assert!(decide(""));
    assert!(decide("@"));
    assert!(!decide("!"));
    assert!(decide("role:member"));
    assert!(decide("role:MEMBER"), "roles compare without case");
    assert!(decide("role:reader"), "member implies reader");
    assert!(!decide("role:admin"));
    assert!(decide("not role:admin"));
    assert!(decide("role:admin or role:member"));
    assert!(!decide("role:admin and role:member"));
    assert!(decide(
        "(role:admin or role:member) and project_id:%(project_id)s"
    ));
    assert!(decide("project_id:p1"));
    assert!(decide("project_id:'p1'"));
    assert!(!decide("project_id:p2"));
    assert!(decide("user_id:%(user_id)s"));
    assert!(!decide("is_admin:True"));
    assert!(decide("is_admin:False"));
    assert!(decide("rule:admin_or_owner"));
    assert!(!decide("rule:admin_api"));
    assert!(decide("not (role:admin or not role:member)"));
    // `not` binds tighter than `and`, which binds tighter than `or`.
    assert!(decide("role:admin and role:nobody or role:member"));
    assert!(!decide("not role:member or role:admin"));

    for bad in [
        "role:",
        "role:admin and",
        "(role:admin",
        "role:admin)",
        "admin",
        "or role:admin",
        "colour:red",
        "project_id:%(colour)s",
        "http://example.com/check",
        "not",
    ] {
        assert!(Expr::parse(bad).is_err(), "{bad:?} must not parse");
    }
}

#[test]
fn a_policy_file_overrides_rules_and_cinder_names_carry_over() {
    let p = load(
        r#"
# Only admins delete.
"volume:delete": "role:admin"
"admin_api": "role:admin or role:operator"
volume:create_snapshot: "rule:admin_api"
'volume:get': ''
"#,
    )
    .expect("loads");
    assert!(!allowed(&p, &["member"], "volume:delete"));
    assert!(allowed(&p, &["admin"], "volume:delete"));
    assert!(
        allowed(&p, &["member"], "volume:create"),
        "untouched rules keep their default"
    );
    assert!(
        allowed(&p, &["operator"], "volume_extension:services:index"),
        "admin_api now admits operators"
    );
    assert!(
        !allowed(&p, &["member"], "snapshot:create"),
        "Cinder's name for snapshot:create"
    );
    assert!(allowed(&p, &["operator"], "snapshot:create"));
    assert!(
        allowed(&p, &["observer"], "volume:get"),
        "an empty rule admits everyone"
    );
}

#[test]
fn a_bad_policy_file_names_the_line() {
    let err = load("\"volume:create\": \"rule:admin_api\"\n\"volume:explode\": \"role:admin\"\n")
        .expect_err("unknown rule");
    assert!(
        matches!(err, PolicyError::UnknownRule { line: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("line 2") && err.to_string().contains("volume:explode"),
        "{err}"
    );

    let err = load("\n\n\"volume:delete\": \"role:admin and\"\n").expect_err("syntax");
    assert!(matches!(err, PolicyError::Syntax { line: 3, .. }), "{err}");

    let err = load("\"volume:delete\": \"rule:no_such_rule\"\n").expect_err("reference");
    assert!(
        matches!(err, PolicyError::Reference { line: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no_such_rule"), "{err}");

    let err = load("\"admin_api\": \"rule:default\"\n\"default\": \"rule:admin_api\"\n")
        .expect_err("cycle");
    assert!(matches!(err, PolicyError::Reference { .. }), "{err}");

    let err = load("\"context_is_admin\": \"is_admin:True\"\n").expect_err("is_admin cycle");
    assert!(matches!(err, PolicyError::Reference { .. }), "{err}");

    let err = load("- a\n- b\n").expect_err("not a mapping");
    assert!(matches!(err, PolicyError::Yaml { line: 1, .. }), "{err}");

    let err = load("\"volume:delete\": [\"role:admin\"]\n").expect_err("not a string");
    assert!(matches!(err, PolicyError::Yaml { line: 1, .. }), "{err}");

    let err =
        load("\"volume:delete\": \"role:admin\"\n\"volume:delete\": \"@\"\n").expect_err("twice");
    assert!(matches!(err, PolicyError::Yaml { line: 2, .. }), "{err}");

    let err = load("\"volume:delete\": \"role:admin\n").expect_err("broken yaml");
    assert!(matches!(err, PolicyError::Yaml { .. }), "{err}");
}

#[test]
fn refusals_name_the_rule_and_unknown_paths_are_closed() {
    let p = load("\"volume:delete\": \"role:admin\"\n").expect("loads");
    let err = p
        .enforce(
            &ctx("p1", &["member"]),
            "/scoria.v1.VolumeService/DeleteVolume",
        )
        .expect_err("refused");
    let status = err.into_status();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("DeleteVolume"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("volume:delete"),
        "{}",
        status.message()
    );
    for path in ["/scoria.v1.VolumeService/GetEverything", "/GetVolume", ""] {
        let err = Policy::defaults()
            .enforce(&ctx("p1", &["admin"]), path)
            .expect_err(path);
        assert_eq!(err.into_status().code(), Code::PermissionDenied, "{path}");
    }
}

/// Every RPC of every service the protos declare has a rule, and nothing else does.
#[test]
fn every_rpc_has_a_rule() {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(scoria_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptors");
    let mut declared: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "scoria.v1")
        .flat_map(|f| {
            f.service.iter().flat_map(move |s| {
                s.method
                    .iter()
                    .map(move |m| format!("/{}.{}/{}", f.package(), s.name(), m.name()))
            })
        })
        .collect();
    declared.sort();
    let mut known: Vec<String> = Policy::methods().map(|(p, _)| p.to_owned()).collect();
    known.sort();
    assert_eq!(declared, known);
    let mut names: Vec<&str> = Policy::methods().map(|(_, n)| n).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), known.len(), "one rule per RPC");
}
