//! Intent files: the bounded YAML loader and the layout/kind/schema validation behind it.
#![no_main]
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vworkspace_core::repository::{ClusterTree, TreeEntry};

fuzz_target!(|data: &[u8]| {
    let entries = BTreeMap::from([(
        "namespaces/org-a/applicationinstances/app.yaml".to_owned(),
        TreeEntry::File(data.to_vec()),
    )]);
    let tree = ClusterTree::from_entries("demo", entries);
    let _ = vworkspace_core::intent::parse_tree(
        &tree,
        &vworkspace_core::limits::Limits::default(),
    );
});
