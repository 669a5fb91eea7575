//! `crds/` is generated from the Rust types; this test fails when the two drift apart.

#[test]
fn crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let rendered = vworkspace_operator::crd::render_all().expect("render");
    assert_eq!(rendered.len(), 3);
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = rendered.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        on_disk, names,
        "crds/ holds other files; regenerate with `cargo run -- crdgen --out-dir crds`"
    );
    for (name, yaml) in rendered {
        let committed = std::fs::read_to_string(dir.join(&name)).expect("read");
        assert!(
            committed == yaml,
            "crds/{name} differs from the Rust types: run `cargo run -- crdgen --out-dir crds` and commit"
        );
    }
}

#[test]
fn crds_are_structural_and_scoped_as_designed() {
    let rendered = vworkspace_operator::crd::render_all().expect("render");
    let by_name = |n: &str| {
        rendered
            .iter()
            .find(|(f, _)| f.starts_with(n))
            .map(|(_, y)| y.clone())
            .expect("crd")
    };
    assert!(by_name("clusters.ops.vworkspace.io").contains("scope: Cluster"));
    assert!(by_name("applicationinstances.apps.vworkspace.io").contains("scope: Namespaced"));
    assert!(by_name("operations.ops.vworkspace.io").contains("scope: Namespaced"));
    assert!(
        by_name("applicationinstances.apps.vworkspace.io")
            .contains("x-kubernetes-preserve-unknown-fields: true")
    );
}
