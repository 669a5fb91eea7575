//! Intent parsing and validation: the example parses; every refusal names its file, says why, and
//! is its own error variant.

use std::collections::BTreeMap;

use vworkspace_core::intent::{self, IntentErrorKind};
use vworkspace_core::limits::Limits;
use vworkspace_core::repository::{ClusterTree, TreeEntry};
use vworkspace_core::yaml::YamlError;

const APP: &str = "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: app\nspec:\n  chart:\n    repository: https://charts.example.org\n    name: app\n    version: 1.0.0\n  values:\n    a: 1\n";
const OP: &str = "apiVersion: ops.vworkspace.io/v1alpha1\nkind: Operation\nmetadata:\n  name: op\nspec:\n  type: Backup\n  template: velero-namespace-backup\n";

const APP_PATH: &str = "namespaces/org-a/applicationinstances/app.yaml";
const OP_PATH: &str = "namespaces/org-a/operations/op.yaml";

fn tree_of(entries: Vec<(&str, TreeEntry)>) -> ClusterTree {
    ClusterTree::from_entries(
        "demo",
        entries
            .into_iter()
            .map(|(p, e)| (p.to_owned(), e))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn tree(files: &[(&str, &str)]) -> ClusterTree {
    tree_of(
        files
            .iter()
            .map(|(p, c)| (*p, TreeEntry::File(c.as_bytes().to_vec())))
            .collect(),
    )
}

/// The single refusal of a one-entry tree, asserting the message names the file.
fn refusal_of(path: &str, entry: TreeEntry, limits: &Limits) -> IntentErrorKind {
    let errors = intent::parse_tree(&tree_of(vec![(path, entry)]), limits).expect_err("refused");
    assert_eq!(errors.errors.len(), 1, "{errors}");
    let text = errors.to_string();
    assert!(
        text.starts_with(&format!("clusters/demo/{path}: ")),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "one line per refusal: {text}");
    errors.errors[0].kind.clone()
}

fn refusal(path: &str, contents: &str) -> IntentErrorKind {
    refusal_of(
        path,
        TreeEntry::File(contents.as_bytes().to_vec()),
        &Limits::default(),
    )
}

/// The loader's refusal of an ApplicationInstance file.
fn yaml_refusal(contents: &[u8], limits: &Limits) -> YamlError {
    match refusal_of(APP_PATH, TreeEntry::File(contents.to_vec()), limits) {
        IntentErrorKind::Yaml(e) => {
            assert_eq!(e.file(), format!("clusters/demo/{APP_PATH}"));
            *e
        }
        other => panic!("expected a YAML refusal, got {other:?}"),
    }
}

fn with_metadata(extra: &str) -> String {
    APP.replace(
        "metadata:\n  name: app\n",
        &format!("metadata:\n  name: app\n{extra}"),
    )
}

#[test]
fn the_example_repository_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo-layout");
    let tree = vworkspace_operator::authoring::checkout::read_cluster_directory(
        &root,
        "demo",
        &Limits::default(),
    )
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
        nextcloud.source_path,
        "namespaces/org-myteam/applicationinstances/nextcloud.yaml"
    );
    let typed = nextcloud.resource.get().expect("read back");
    assert_eq!(typed.metadata.namespace.as_deref(), Some("org-myteam"));
    assert_eq!(typed.spec.chart.version, "6.6.4");
}

#[test]
fn valid_tree_in_path_order_with_release_files_skipped() {
    let t = tree(&[
        ("release.yaml", "not checked here"),
        ("release.sigs/a.sig", "not checked here"),
        ("namespaces/org-b/applicationinstances/app.yaml", APP),
        (APP_PATH, &with_metadata("  labels:\n    tier: web\n")),
        (
            "namespaces/org-a/applicationinstances/zeta.yaml",
            &APP.replace("name: app\nspec", "name: zeta\nspec"),
        ),
        (OP_PATH, OP),
    ]);
    let parsed = intent::parse_tree(&t, &Limits::default()).expect("valid");
    let keys: Vec<(String, String, String)> = parsed
        .application_instances
        .iter()
        .map(|i| (i.namespace.clone(), i.name.clone(), i.source_path.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            ("org-a", "app", APP_PATH),
            (
                "org-a",
                "zeta",
                "namespaces/org-a/applicationinstances/zeta.yaml"
            ),
            (
                "org-b",
                "app",
                "namespaces/org-b/applicationinstances/app.yaml"
            ),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    // The namespace comes from the path.
    assert_eq!(
        parsed.application_instances[2]
            .resource
            .get()
            .expect("read back")
            .metadata
            .namespace
            .as_deref(),
        Some("org-b")
    );
    assert_eq!(
        parsed.application_instances[0]
            .resource
            .get()
            .expect("read back")
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("tier"))
            .map(String::as_str),
        Some("web")
    );
    assert_eq!(parsed.operations.len(), 1);
    assert_eq!(
        parsed.operations[0]
            .resource
            .get()
            .expect("read back")
            .spec
            .template,
        "velero-namespace-backup"
    );
    assert_eq!(parsed.operations[0].source_path, OP_PATH);
}

#[test]
fn wrong_kinds_are_refused_naming_the_kind() {
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
    // An ApplicationInstance under operations/ is the wrong kind there.
    assert_eq!(
        refusal("namespaces/org-a/operations/app.yaml", APP),
        IntentErrorKind::WrongKind {
            api_version: "apps.vworkspace.io/v1alpha1".into(),
            kind: "ApplicationInstance".into()
        }
    );
    let errors = intent::parse_tree(
        &tree(&[(
            APP_PATH,
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\n",
        )]),
        &Limits::default(),
    )
    .expect_err("secret");
    assert!(errors.to_string().contains("kind \"Secret\""), "{errors}");
}

#[test]
fn two_documents_are_refused() {
    assert!(matches!(
        yaml_refusal(format!("{APP}---\n{APP}").as_bytes(), &Limits::default()),
        YamlError::MultipleDocuments { at: Some(_), .. }
    ));
    // A trailing `---` opens a second (empty) document: refused too.
    assert!(matches!(
        yaml_refusal(format!("{APP}---\n").as_bytes(), &Limits::default()),
        YamlError::MultipleDocuments { .. }
    ));
    // A leading `---` alone is fine.
    assert!(
        intent::parse_tree(
            &tree(&[(APP_PATH, &format!("---\n{APP}"))]),
            &Limits::default()
        )
        .is_ok()
    );
}

#[test]
fn duplicate_keys_are_refused_with_line_and_column() {
    let err = yaml_refusal(format!("{APP}spec: {{}}\n").as_bytes(), &Limits::default());
    assert!(
        matches!(&err, YamlError::DuplicateKey { key, at: Some(p), .. } if key == "spec" && p.line == 12),
        "{err:?}"
    );
    let nested = APP.replace("    name: app\n", "    name: app\n    name: evil\n");
    assert!(matches!(
        yaml_refusal(nested.as_bytes(), &Limits::default()),
        YamlError::DuplicateKey { key, .. } if key == "name"
    ));
}

#[test]
fn non_string_keys_are_refused() {
    assert!(matches!(
        yaml_refusal(
            format!("{APP}    80: http\n").as_bytes(),
            &Limits::default()
        ),
        YamlError::NonStringKey { at: Some(_), .. }
    ));
}

/// The classic billion laughs: ten levels of ten aliases each, 10^10 nodes once expanded. The
/// loader is bounded if this returns at all; it must return the alias-budget refusal, naming the
/// file, before anything is expanded past the budget.
#[test]
fn billion_laughs_is_refused_by_the_budget_naming_the_file() {
    let mut bomb = String::from(
        "a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
    );
    let mut prev = 'a';
    for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'] {
        bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        prev = name;
    }
    let err = yaml_refusal(bomb.as_bytes(), &Limits::default());
    assert!(matches!(err, YamlError::AliasBudget { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "clusters/demo/{APP_PATH}: YAML aliases over budget"
        )),
        "{err}"
    );
    // Many aliases to one small anchor: refused by the alias count, not after expanding them.
    let many = format!(
        "{APP}    x: &x y\n    z: [{}]\n",
        vec!["*x"; 101].join(", ")
    );
    assert!(matches!(
        yaml_refusal(many.as_bytes(), &Limits::default()),
        YamlError::AliasBudget { .. }
    ));
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!("{APP}    deep: {}x{}\n", "[".repeat(80), "]".repeat(80));
    assert!(matches!(
        yaml_refusal(deep.as_bytes(), &Limits::default()),
        YamlError::TooDeep { limit: 64, .. }
    ));
}

#[test]
fn non_utf8_is_refused() {
    assert_eq!(
        yaml_refusal(b"a: \xff\n", &Limits::default()),
        YamlError::NotUtf8 {
            file: format!("clusters/demo/{APP_PATH}"),
            offset: 3
        }
    );
}

#[test]
fn oversized_file_is_refused() {
    let small = Limits {
        max_file_bytes: 64,
        ..Limits::default()
    };
    assert_eq!(
        yaml_refusal(APP.as_bytes(), &small),
        YamlError::TooLarge {
            file: format!("clusters/demo/{APP_PATH}"),
            size: APP.len(),
            limit: 64
        }
    );
}

#[test]
fn empty_and_non_mapping_files_are_refused() {
    assert!(matches!(
        yaml_refusal(b"# nothing\n", &Limits::default()),
        YamlError::Empty { .. }
    ));
    assert_eq!(
        refusal(APP_PATH, "- a\n- b\n"),
        IntentErrorKind::NotAnObject
    );
}

#[test]
fn symlinks_and_submodules_are_refused_everywhere() {
    for path in [
        APP_PATH,
        OP_PATH,
        "release.yaml",
        "release.sigs/a.sig",
        "README.md",
    ] {
        assert_eq!(
            refusal_of(path, TreeEntry::Symlink, &Limits::default()),
            IntentErrorKind::Symlink,
            "{path}"
        );
        assert_eq!(
            refusal_of(path, TreeEntry::Submodule, &Limits::default()),
            IntentErrorKind::Submodule,
            "{path}"
        );
    }
}

#[test]
fn paths_outside_the_layout_are_refused() {
    for path in [
        "README.md",
        ".hidden.yaml",
        "namespaces/org-a/.app.yaml",
        "namespaces/org-a/applicationinstances/.gitkeep",
        "namespaces/org-a/app.yaml",
        "namespaces/org-a/applicationinstances/app.yml",
        "namespaces/org-a/applicationinstances/app.json",
        "namespaces/org-a/secrets/app.yaml",
        "namespaces/org-a/applicationinstances/sub/app.yaml",
        "other/release.yaml",
        "release.sigs/notes.txt",
        "release.sigs/.sig",
        "release.sigs/a.sig/b.sig",
        "release.yml",
    ] {
        assert_eq!(refusal(path, APP), IntentErrorKind::OutsideLayout, "{path}");
    }
}

#[test]
fn traversal_like_and_invalid_names_are_refused() {
    for path in [
        "namespaces/../applicationinstances/app.yaml",
        "namespaces/./applicationinstances/app.yaml",
        "namespaces/Org-A/applicationinstances/app.yaml",
        "namespaces/org.a/applicationinstances/app.yaml",
        "namespaces/-org/applicationinstances/app.yaml",
        "namespaces/org-a/applicationinstances/..yaml",
        "namespaces/org-a/applicationinstances/.yaml",
        "namespaces/org-a/applicationinstances/App.yaml",
        "namespaces/org-a/applicationinstances/a..b.yaml",
        "namespaces/org-a/applicationinstances/a_b.yaml",
    ] {
        assert!(
            matches!(refusal(path, APP), IntentErrorKind::InvalidName(_)),
            "{path}"
        );
    }
}

#[test]
fn name_and_namespace_must_match_the_path() {
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
            &APP.replace("metadata:\n  name: app\n", "metadata: {}\n")
        ),
        IntentErrorKind::NameMismatch(String::new())
    );
    assert_eq!(
        refusal(APP_PATH, &with_metadata("  namespace: kube-system\n")),
        IntentErrorKind::NamespaceMismatch("kube-system".into())
    );
    assert!(
        intent::parse_tree(
            &tree(&[(APP_PATH, &with_metadata("  namespace: org-a\n"))]),
            &Limits::default()
        )
        .is_ok()
    );
}

#[test]
fn disallowed_metadata_is_refused() {
    for (field, yaml) in [
        ("finalizers", "  finalizers: [x]\n"),
        ("ownerReferences", "  ownerReferences: []\n"),
        ("uid", "  uid: 0000\n"),
        ("resourceVersion", "  resourceVersion: \"1\"\n"),
        ("generateName", "  generateName: app-\n"),
        ("managedFields", "  managedFields: []\n"),
    ] {
        assert_eq!(
            refusal(APP_PATH, &with_metadata(yaml)),
            IntentErrorKind::DisallowedMetadata(field.into())
        );
    }
}

#[test]
fn status_and_unknown_top_level_fields_are_refused() {
    assert_eq!(
        refusal(APP_PATH, &format!("{APP}status:\n  x: 1\n")),
        IntentErrorKind::StatusPresent
    );
    assert_eq!(
        refusal(APP_PATH, &format!("{APP}data:\n  x: 1\n")),
        IntentErrorKind::UnknownField("data".into())
    );
}

#[test]
fn unknown_or_mistyped_spec_fields_are_refused() {
    let unknown = APP.replace(
        "    version: 1.0.0\n",
        "    version: 1.0.0\n    verify: false\n",
    );
    assert!(
        matches!(refusal(APP_PATH, &unknown), IntentErrorKind::InvalidSpec(m) if m.contains("verify"))
    );
    assert!(matches!(
        refusal(APP_PATH, &format!("{APP}  postRenderers: []\n")),
        IntentErrorKind::InvalidSpec(m) if m.contains("postRenderers")
    ));
    assert!(matches!(
        refusal(OP_PATH, &format!("{OP}  serviceAccountName: admin\n")),
        IntentErrorKind::InvalidSpec(m) if m.contains("serviceAccountName")
    ));
    assert!(matches!(
        refusal(OP_PATH, &OP.replace("type: Backup", "type: Exfiltrate")),
        IntentErrorKind::InvalidSpec(_)
    ));
    assert!(matches!(
        refusal(APP_PATH, &APP.replace("    version: 1.0.0\n", "")),
        IntentErrorKind::InvalidSpec(m) if m.contains("version")
    ));
    assert!(matches!(
        refusal(APP_PATH, &APP.replace("spec:\n  chart:", "nospec:\n  chart:")),
        IntentErrorKind::UnknownField(f) if f == "nospec"
    ));
}

fn field_of(kind: IntentErrorKind) -> String {
    match kind {
        IntentErrorKind::InvalidField { field, .. } => field,
        other => panic!("expected InvalidField, got {other:?}"),
    }
}

#[test]
fn field_rules_the_types_cannot_express() {
    for repo in [
        "http://charts.example.org",
        "file:///etc",
        "charts.example.org",
        "oci://",
    ] {
        assert_eq!(
            field_of(refusal(
                APP_PATH,
                &APP.replace("https://charts.example.org", repo)
            )),
            "spec.chart.repository",
            "{repo}"
        );
    }
    assert!(
        intent::parse_tree(
            &tree(&[(
                APP_PATH,
                &APP.replace("https://charts.example.org", "oci://ghcr.io/example/charts")
            )]),
            &Limits::default()
        )
        .is_ok()
    );
    assert_eq!(
        field_of(refusal(
            APP_PATH,
            &APP.replace("  values:\n    a: 1\n", "  values: [1, 2]\n")
        )),
        "spec.values"
    );
    assert_eq!(
        field_of(refusal(
            APP_PATH,
            &format!("{APP}  releaseName: Bad_Name\n")
        )),
        "spec.releaseName"
    );
    assert_eq!(
        field_of(refusal(
            OP_PATH,
            &OP.replace("velero-namespace-backup", "../x")
        )),
        "spec.template"
    );
    assert_eq!(
        field_of(refusal(
            OP_PATH,
            &format!("{OP}  target:\n    persistentVolumeClaim: ../../etc\n")
        )),
        "spec.target.persistentVolumeClaim"
    );
    assert_eq!(
        field_of(refusal(
            APP_PATH,
            &with_metadata("  labels:\n    tier: [web]\n")
        )),
        "metadata.labels"
    );
    assert_eq!(
        field_of(refusal(
            APP_PATH,
            &with_metadata("  labels:\n    \"bad key!\": x\n")
        )),
        "metadata.labels"
    );
    assert_eq!(
        field_of(refusal(
            APP_PATH,
            &with_metadata("  labels:\n    tier: \"has space\"\n")
        )),
        "metadata.labels"
    );
    assert_eq!(
        field_of(refusal(
            APP_PATH,
            &with_metadata("  annotations:\n    note: 5\n")
        )),
        "metadata.annotations"
    );
    // Annotation values are free text.
    assert!(
        intent::parse_tree(
            &tree(&[(
                APP_PATH,
                &with_metadata("  annotations:\n    example.org/note: \"any text, even spaces\"\n")
            )]),
            &Limits::default()
        )
        .is_ok()
    );
}

#[test]
fn all_errors_are_collected_one_line_each() {
    let t = tree(&[
        ("README.md", "x"),
        (APP_PATH, &APP.replace("name: app\nspec", "name: x\nspec")),
        (OP_PATH, OP),
        ("namespaces/org-a/operations/bad.yaml", "a: 1\na: 2\n"),
    ]);
    let errors = intent::parse_tree(&t, &Limits::default()).expect_err("three bad files");
    let text = errors.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("clusters/demo/README.md: not part of the layout"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!("clusters/demo/{APP_PATH}: metadata.name \"x\"")),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "clusters/demo/namespaces/org-a/operations/bad.yaml: duplicate key \"a\" at line 2, column 1; a key may appear once in a mapping"
    );
}
