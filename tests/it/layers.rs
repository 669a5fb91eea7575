//! The house keeps its shape: no import cycle between the files of a crate, nor between its folders
//! (the stages of the pipeline), and the core crate depends on no Kubernetes client, async runtime
//! or HTTP stack (scripts/test.sh also checks that with `cargo tree`).
//!
//! A file's imports are the `crate::…` and `super::…` paths in its code (comments and its
//! `#[cfg(test)] mod tests` are left out: a test may look anywhere). Each path is resolved to the
//! longest module prefix that is a file of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates of the workspace: (name, source root).
const CRATES: &[(&str, &str)] = &[
    ("vworkspace-core", "crates/core/src"),
    ("vworkspace-controller", "crates/controller/src"),
    ("vworkspace-operator", "src"),
    ("vworkspace-testkit", "crates/testkit/src"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` -> `a::b`, `a/mod.rs` -> `a`, `lib.rs` -> `` (the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts.join("::")
}

/// The code of a file without comments and without its unit-test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` / `super::a` path in `code`, made absolute for module `this`.
fn paths(code: &str, this: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for (start, word) in [("crate::", true), ("super::", false)] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let mut segments: Vec<String> = Vec::new();
            if !word {
                // super:: from `a::b` (a file b.rs) is `a`; from a mod.rs of `a::b` it is `a`.
                let mut base: Vec<String> = if this.is_empty() {
                    Vec::new()
                } else {
                    this.split("::").map(str::to_owned).collect()
                };
                base.pop();
                segments = base;
            }
            let rest: String = code[from..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            segments.extend(
                rest.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            // `crate::a::{b::c, d}`: one path a member (one level of braces is all the code uses).
            let after = &code[from + rest.len()..];
            if (rest.ends_with("::") || rest.is_empty())
                && let Some(group) = after.strip_prefix('{').and_then(|g| g.split('}').next())
            {
                for member in group.split(',') {
                    let mut path = segments.clone();
                    path.extend(
                        member
                            .trim()
                            .split("::")
                            .filter(|s| !s.is_empty() && *s != "self")
                            .map(str::to_owned),
                    );
                    found.push(path);
                }
                continue;
            }
            found.push(segments);
        }
    }
    found
}

/// Module-level edges of one crate: file module -> file module it imports.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read source");
        let entry = graph.entry(module.clone()).or_default();
        for path in paths(&code(&text), module) {
            // The longest prefix that is a module of this crate.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|p| modules.contains_key(p));
            if let Some(target) = target
                && target != *module
                && !target.is_empty()
            {
                entry.insert(target);
            }
        }
    }
    graph
}

/// The strongly connected components with more than one member (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.graph.get(v) {
            for w in targets {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// The folder (top-level module) graph: `cluster::status` -> `cluster`.
fn folders(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let top = |m: &str| m.split("::").next().unwrap_or_default().to_owned();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in graph {
        let entry = out.entry(top(from)).or_default();
        for to in targets {
            if top(to) != top(from) {
                entry.insert(top(to));
            }
        }
    }
    out
}

#[test]
fn no_import_cycle_between_files_or_folders() {
    let mut problems = Vec::new();
    for (name, src) in CRATES {
        let graph = edges(&root().join(src));
        assert!(graph.len() > 3, "{name}: found only {} files", graph.len());
        for cycle in cycles(&graph) {
            problems.push(format!(
                "{name}: files import each other: {}",
                cycle.join(" <-> ")
            ));
        }
        for cycle in cycles(&folders(&graph)) {
            problems.push(format!(
                "{name}: folders import each other: {}",
                cycle.join(" <-> ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_cycle_finder_finds_cycles() {
    // The check above cannot pass by finding nothing: a made-up graph with one cycle is caught.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.insert("a".into(), ["b".to_owned()].into());
    graph.insert("b".into(), ["c".to_owned()].into());
    graph.insert("c".into(), ["a".to_owned()].into());
    graph.insert("d".into(), ["a".to_owned()].into());
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        paths("use crate::trust::release::{self};", "intent"),
        vec![vec!["trust", "release"]]
    );
    assert_eq!(
        paths("use crate::{cluster::rbac, metrics};", "runtime"),
        vec![vec!["cluster", "rbac"], vec!["metrics"]]
    );
    assert_eq!(
        paths("super::ChildContext", "children::instance"),
        vec![vec!["children", "ChildContext"]]
    );
}

#[test]
fn core_manifest_names_no_client_runtime_or_http_stack() {
    let manifest =
        std::fs::read_to_string(root().join("crates/core/Cargo.toml")).expect("core manifest");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] table");
    for line in deps.lines() {
        let name = line.split(['.', '=', ' ']).next().unwrap_or_default();
        assert!(
            !matches!(
                name,
                "kube"
                    | "kube-client"
                    | "kube-runtime"
                    | "tokio"
                    | "hyper"
                    | "hyper-util"
                    | "reqwest"
            ),
            "crates/core depends on {name}"
        );
    }
}
