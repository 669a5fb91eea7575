//! The unit tests of the secrets module: round trips, envelopes, paths and refusals.

use serde_json::Value;

use super::envelope::{open_envelope, seal};
use super::*;
use crate::limits::Limits;

const MARKER: &str = "hunter2-PLAINTEXT-MARKER";

fn keys() -> (Identities, String) {
    let (secret, recipient) = generate();
    let ids = Identities::parse(secret.expose_str().expect("utf8"), "test").expect("identity");
    (ids, recipient)
}

fn ctx() -> ValueContext {
    ValueContext {
        cluster: "demo".into(),
        namespace: "org-a".into(),
        instance: "app".into(),
    }
}

fn binding(path: &str) -> Binding {
    Binding {
        cluster: "demo".into(),
        namespace: "org-a".into(),
        instance: "app".into(),
        path: path.into(),
    }
}

#[test]
fn bound_round_trip_and_mismatches() {
    let (ids, rcpt) = keys();
    let limits = Limits::default();
    let good = encrypt(MARKER.as_bytes(), &rcpt, Some(&binding("smtp.password"))).expect("encrypt");
    let values = serde_json::json!({"smtp": {"password": good.clone(), "host": "h"}});
    let decrypted =
        decrypt_values(&values, &ctx(), &ids, &ValuesPolicy::default(), &limits).expect("ok");
    assert_eq!(decrypted.len(), 1);
    assert_eq!(
        decrypted
            .iter()
            .next()
            .map(|(_, v, b)| (v.expose().to_vec(), b)),
        Some((MARKER.as_bytes().to_vec(), true))
    );
    assert!(!format!("{decrypted:?}").contains(MARKER));

    // Moved to another path, instance, namespace or cluster.
    let moved = serde_json::json!({"smtp": {"user": good.clone()}});
    let errs =
        decrypt_values(&moved, &ctx(), &ids, &ValuesPolicy::default(), &limits).expect_err("moved");
    assert!(
        matches!(
            &errs[0].kind,
            ValueErrorKind::BindingMismatch { field: "path", .. }
        ),
        "{errs:?}"
    );
    for (field, other) in [
        (
            "instance",
            ValueContext {
                instance: "other".into(),
                ..ctx()
            },
        ),
        (
            "namespace",
            ValueContext {
                namespace: "org-b".into(),
                ..ctx()
            },
        ),
        (
            "cluster",
            ValueContext {
                cluster: "prod".into(),
                ..ctx()
            },
        ),
    ] {
        let errs = decrypt_values(&values, &other, &ids, &ValuesPolicy::default(), &limits)
            .expect_err("moved");
        assert!(
            matches!(&errs[0].kind, ValueErrorKind::BindingMismatch { field: f, .. } if *f == field),
            "{errs:?}"
        );
        assert!(
            errs[0].to_string().contains("spec.values.smtp.password"),
            "{}",
            errs[0]
        );
        assert!(!errs[0].to_string().contains(MARKER));
    }
}

#[test]
fn unbound_values_are_reported_and_can_be_refused() {
    let (ids, rcpt) = keys();
    let plain = encrypt(MARKER.as_bytes(), &rcpt, None).expect("encrypt");
    let values = serde_json::json!({"list": [{"token": plain}]});
    let ok = decrypt_values(
        &values,
        &ctx(),
        &ids,
        &ValuesPolicy::default(),
        &Limits::default(),
    )
    .expect("ok");
    assert_eq!(ok.unbound_paths(), ["list.0.token"]);
    let errs = decrypt_values(
        &values,
        &ctx(),
        &ids,
        &ValuesPolicy {
            require_bound: true,
        },
        &Limits::default(),
    )
    .expect_err("refused");
    assert_eq!(errs[0].kind, ValueErrorKind::UnboundValueNotAllowed);
}

#[test]
fn envelope_rules() {
    assert!(matches!(
        seal(b"x", &binding("a\nb")),
        Err(SecretsError::InvalidBinding("path"))
    ));
    assert!(matches!(
        seal(b"x", &binding("")),
        Err(SecretsError::InvalidBinding("path"))
    ));
    let sealed = seal(b"v\n\nw", &binding("p")).expect("seal");
    let (b, v) = open_envelope(&sealed).expect("open").expect("bound");
    assert_eq!(b, binding("p"));
    assert_eq!(v.expose(), b"v\n\nw");
    let broken = format!("{ENVELOPE_MAGIC}\ncluster: demo\nnamespace org-a\n");
    assert!(matches!(
        open_envelope(broken.as_bytes()),
        Err(SecretsError::MalformedEnvelope(_))
    ));
    assert!(open_envelope(b"plain value").expect("unbound").is_none());
}

#[test]
fn keys_with_dots_are_unaddressable() {
    let (ids, rcpt) = keys();
    let v = encrypt(b"x", &rcpt, None).expect("encrypt");
    let values = serde_json::json!({"a.b": v});
    let errs = decrypt_values(
        &values,
        &ctx(),
        &ids,
        &ValuesPolicy::default(),
        &Limits::default(),
    )
    .expect_err("dot");
    assert_eq!(errs[0].kind, ValueErrorKind::UnaddressablePath);
}

#[test]
fn identity_errors_never_echo_keys() {
    let (secret, _) = generate();
    let text = secret.expose_str().expect("utf8").to_owned();
    // Change the last (checksum) character to a different one: bech32 detects any single change.
    let last = if text.ends_with('Q') { 'P' } else { 'Q' };
    let broken = format!("# comment\n{}{last}\n", &text[..text.len() - 1]);
    let err = Identities::parse(&broken, "identity.txt").expect_err("bad");
    assert_eq!(
        err,
        SecretsError::InvalidIdentity {
            source_name: "identity.txt".into(),
            line: 2
        }
    );
    assert!(!err.to_string().contains(&text[15..40]));
    assert!(matches!(
        Identities::parse("# nothing\n", "empty"),
        Err(SecretsError::NoIdentities(_))
    ));
    let (ids, _) = keys();
    assert!(!format!("{ids:?}").contains("AGE-SECRET-KEY"));
    assert_eq!(format!("{secret:?}"), REDACTED);
    assert_eq!(format!("{secret}"), REDACTED);
}

#[test]
fn redact_and_set_leaf() {
    let mut values = serde_json::json!({"a": {"b": format!("{ARMOR_BEGIN}\nxx\n")}, "c": [1, "d"]});
    assert_eq!(
        redact_values(&values),
        serde_json::json!({"a": {"b": REDACTED}, "c": [1, "d"]})
    );
    set_leaf(&mut values, "c.1", Value::String("e".into())).expect("set");
    assert_eq!(values["c"][1], "e");
    assert!(matches!(
        set_leaf(&mut values, "c.9", Value::Null),
        Err(SecretsError::NoSuchPath(_))
    ));
}
