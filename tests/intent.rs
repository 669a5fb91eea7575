//! Intent parsing and validation: the example parses; every refusal names its file and says why.

use std::collections::BTreeMap;

use vworkspace_operator::git::{ClusterTree, TreeEntry};
use vworkspace_operator::intent::{self, IntentErrorKind};
use vworkspace_operator::limits::Limits;

const APP: &str = "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: app\nspec:\n  chart:\n    repository: https://charts.example.org\n    name: app\n    version: 1.0.0\n  values:\n    a: 1\n";
const OP: &str = "apiVersion: ops.vworkspace.io/v1alpha1\nkind: Operation\nmetadata:\n  name: op\nspec:\n  type: Backup\n  template: velero-namespace-backup\n";

fn tree(files: &[(&str, &str)]) -> ClusterTree {
    let entries: BTreeMap<String, TreeEntry> = files
        .iter()
        .map(|(p, c)| ((*p).to_owned(), TreeEntry::File(c.as_bytes().to_vec())))
        .collect();
    ClusterTree::from_entries("demo", entries)
}

/// The single refusal for one file, asserting it names the file.
fn refusal(path: &str, contents: &str) -> IntentErrorKind {
    let errors =
        intent::parse_tree(&tree(&[(path, contents)]), &Limits::default()).expect_err("refused");
    assert_eq!(errors.errors.len(), 1, "{errors}");
    let text = errors.to_string();
    assert!(
        text.starts_with(&format!("clusters/demo/{path}: ")),
        "{text}"
    );
    errors.errors[0].kind.clone()
}

const APP_PATH: &str = "namespaces/org-a/applicationinstances/app.yaml";

#[test]
fn the_example_repository_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo-layout");
    let tree =
        vworkspace_operator::checkout::read_cluster_directory(&root, "demo", &Limits::default())
            .expect("read");
    let parsed = intent::parse_tree(&tree, &Limits::default()).expect("valid");
    assert_eq!(parsed.application_instances.len(), 2);
    assert_eq!(parsed.operations.len(), 2);
    assert_eq!(parsed.namespaces(), ["org-myteam", "org-vault"]);
    let nextcloud = &parsed.application_instances[0];
    assert_eq!(
        (nextcloud.namespace.as_str(), nextcloud.name.as_str()),
        ("org-myteam", "nextcloud")
    );
    assert_eq!(
        nextcloud.resource.metadata.namespace.as_deref(),
        Some("org-myteam")
    );
    assert_eq!(nextcloud.resource.spec.chart.version, "6.6.4");
}

#[test]
fn valid_tree_with_release_files_skipped() {
    let t = tree(&[
        ("release.yaml", "not checked here"),
        ("release.sigs/a.sig", "not checked here"),
        (APP_PATH, APP),
        ("namespaces/org-a/operations/op.yaml", OP),
    ]);
    let parsed = intent::parse_tree(&t, &Limits::default()).expect("valid");
    let names = |items: Vec<(&str, &str)>| {
        items
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        parsed
            .application_instances
            .iter()
            .map(|i| (i.namespace.clone(), i.name.clone()))
            .collect::<Vec<_>>(),
        names(vec![("org-a", "app")])
    );
    assert_eq!(
        parsed
            .operations
            .iter()
            .map(|i| (i.namespace.clone(), i.name.clone()))
            .collect::<Vec<_>>(),
        names(vec![("org-a", "op")])
    );
    assert_eq!(
        parsed.operations[0].resource.spec.template,
        "velero-namespace-backup"
    );
}

#[test]
fn wrong_kinds_are_refused() {
    for (api, kind) in [
        ("v1", "Secret"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("v1", "Namespace"),
        ("ops.vworkspace.io/v1alpha1", "Operation"),
        ("apps.vworkspace.io/v1beta1", "ApplicationInstance"),
    ] {
        let text = APP
            .replace("apps.vworkspace.io/v1alpha1", api)
            .replace("ApplicationInstance", kind);
        assert_eq!(
            refusal(APP_PATH, &text),
            IntentErrorKind::WrongKind {
                api_version: api.into(),
                kind: kind.into()
            }
        );
    }
}

#[test]
fn yaml_level_refusals() {
    assert!(
        matches!(refusal(APP_PATH, &format!("{APP}---\n{APP}")), IntentErrorKind::Yaml(e) if matches!(*e, vworkspace_operator::yaml::YamlError::MultipleDocuments { .. }))
    );
    assert!(matches!(
        refusal(APP_PATH, &format!("{APP}spec: {{}}\n")),
        IntentErrorKind::Yaml(_)
    ));
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'] {
        bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        prev = name;
    }
    assert!(matches!(refusal(APP_PATH, &bomb), IntentErrorKind::Yaml(_)));
    let deep = format!("{APP}    deep: {}x{}\n", "[".repeat(80), "]".repeat(80));
    assert!(matches!(refusal(APP_PATH, &deep), IntentErrorKind::Yaml(_)));
    let errors = intent::parse_tree(
        &ClusterTree::from_entries(
            "demo",
            BTreeMap::from([(APP_PATH.to_owned(), TreeEntry::File(b"a: \xff\n".to_vec()))]),
        ),
        &Limits::default(),
    )
    .expect_err("non-utf8");
    assert!(errors.to_string().contains("not valid UTF-8"), "{errors}");
    let small = Limits {
        max_file_bytes: 64,
        ..Limits::default()
    };
    let errors = intent::parse_tree(&tree(&[(APP_PATH, APP)]), &small).expect_err("too large");
    assert!(
        errors.to_string().contains("over the limit of 64"),
        "{errors}"
    );
}

#[test]
fn layout_refusals() {
    for path in [
        "README.md",
        "namespaces/org-a/app.yaml",
        "namespaces/org-a/applicationinstances/app.yml",
        "namespaces/org-a/secrets/app.yaml",
        "namespaces/org-a/applicationinstances/sub/app.yaml",
        "other/release.yaml",
    ] {
        assert_eq!(refusal(path, APP), IntentErrorKind::OutsideLayout, "{path}");
    }
    for path in [
        "namespaces/../applicationinstances/app.yaml",
        "namespaces/Org-A/applicationinstances/app.yaml",
        "namespaces/org.a/applicationinstances/app.yaml",
        "namespaces/org-a/applicationinstances/..yaml",
        "namespaces/org-a/applicationinstances/App.yaml",
    ] {
        assert!(
            matches!(refusal(path, APP), IntentErrorKind::InvalidName(_)),
            "{path}"
        );
    }
    let mut entries = BTreeMap::new();
    entries.insert(APP_PATH.to_owned(), TreeEntry::Symlink);
    entries.insert(
        "namespaces/org-a/operations/op.yaml".to_owned(),
        TreeEntry::Submodule,
    );
    let errors = intent::parse_tree(
        &ClusterTree::from_entries("demo", entries),
        &Limits::default(),
    )
    .expect_err("links");
    let kinds: Vec<_> = errors.errors.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        [IntentErrorKind::Symlink, IntentErrorKind::Submodule]
    );
}

#[test]
fn object_level_refusals() {
    assert_eq!(
        refusal(
            APP_PATH,
            &APP.replace("name: app\nspec", "name: other\nspec")
        ),
        IntentErrorKind::NameMismatch("other".into())
    );
    assert_eq!(
        refusal(
            APP_PATH,
            &APP.replace(
                "metadata:\n  name: app\n",
                "metadata:\n  name: app\n  namespace: kube-system\n"
            )
        ),
        IntentErrorKind::NamespaceMismatch("kube-system".into())
    );
    assert!(
        intent::parse_tree(
            &tree(&[(
                APP_PATH,
                &APP.replace(
                    "metadata:\n  name: app\n",
                    "metadata:\n  name: app\n  namespace: org-a\n"
                )
            )]),
            &Limits::default()
        )
        .is_ok()
    );
    assert_eq!(
        refusal(
            APP_PATH,
            &APP.replace(
                "metadata:\n  name: app\n",
                "metadata:\n  name: app\n  finalizers: [x]\n"
            )
        ),
        IntentErrorKind::DisallowedMetadata("finalizers".into())
    );
    assert_eq!(
        refusal(
            APP_PATH,
            &APP.replace(
                "metadata:\n  name: app\n",
                "metadata:\n  name: app\n  ownerReferences: []\n"
            )
        ),
        IntentErrorKind::DisallowedMetadata("ownerReferences".into())
    );
    assert_eq!(
        refusal(APP_PATH, &format!("{APP}status:\n  x: 1\n")),
        IntentErrorKind::StatusPresent
    );
    assert_eq!(
        refusal(APP_PATH, &format!("{APP}data:\n  x: 1\n")),
        IntentErrorKind::UnknownField("data".into())
    );
    let unknown = APP.replace(
        "    version: 1.0.0\n",
        "    version: 1.0.0\n    verify: false\n",
    );
    assert!(
        matches!(refusal(APP_PATH, &unknown), IntentErrorKind::InvalidSpec(m) if m.contains("verify"))
    );
    let bad_type = OP.replace("type: Backup", "type: Exfiltrate");
    assert!(matches!(
        refusal("namespaces/org-a/operations/op.yaml", &bad_type),
        IntentErrorKind::InvalidSpec(_)
    ));
    assert_eq!(
        refusal(APP_PATH, "- a\n- b\n"),
        IntentErrorKind::NotAnObject
    );
}

#[test]
fn all_errors_are_collected() {
    let t = tree(&[
        ("README.md", "x"),
        (APP_PATH, &APP.replace("name: app\nspec", "name: x\nspec")),
        ("namespaces/org-a/operations/op.yaml", OP),
    ]);
    let errors = intent::parse_tree(&t, &Limits::default()).expect_err("two bad files");
    assert_eq!(errors.errors.len(), 2);
    assert_eq!(errors.to_string().lines().count(), 2);
}
