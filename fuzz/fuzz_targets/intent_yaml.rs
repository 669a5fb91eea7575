//! Intent files: the bounded YAML loader and the layout/kind/schema validation behind it.
#![no_main]
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vworkspace_operator::git::{ClusterTree, TreeEntry};

fuzz_target!(|data: &[u8]| {
    let entries = BTreeMap::from([(
        "namespaces/org-a/applicationinstances/app.yaml".to_owned(),
        TreeEntry::File(data.to_vec()),
    )]);
    let tree = ClusterTree::from_entries("demo", entries);
    let _ = vworkspace_operator::intent::parse_tree(
        &tree,
        &vworkspace_operator::limits::Limits::default(),
    );
});
