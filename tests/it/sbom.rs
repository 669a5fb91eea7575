//! The operator's SBOM (issue 27, image provenance). `scripts/sbom.sh generate` writes it with
//! cargo-cyclonedx (the version the script pins, installed under target/cargo-tools/); these tests
//! run that script and check its real output against what cargo itself resolves: every package of
//! the vworkspace-operator binary's normal and build dependency graph, as
//! `cargo metadata --locked --filter-platform <target>` reports it, is listed once with its name,
//! version, `pkg:cargo/<name>@<version>` purl and the SHA-256 that Cargo.lock records for it, with
//! the same dependency edges, and nothing else is (no dev-dependency, no other target's crate).
//!
//! The tool is `VWS_CARGO_CYCLONEDX=<path>` (scripts/test.sh installs it with `scripts/sbom.sh tool`
//! and sets it), else the cached install under target/cargo-tools/; without either the tests that
//! need it print a `SKIPPED` line. The release workflow template's SBOM step is run with bash and
//! its files checked the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::go_tools::skipped;

const BINARY_PACKAGE: &str = "vworkspace-operator";

/// The targets deploy/Dockerfile builds the image for, and so the SBOMs a release ships.
const IMAGE_TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A package as Cargo and the SBOM name it: (name, version).
type Package = (String, String);

/// What the SBOM of one target must say, from `cargo metadata` and Cargo.lock.
struct Expected {
    target: String,
    binary: Package,
    /// Every package of the graph (the binary's package not included), with the checksum Cargo.lock
    /// records for it (None: a path package, which has none) and whether Cargo names a license.
    packages: BTreeMap<Package, (Option<String>, bool)>,
    /// The normal and build dependencies of the binary's package and of every package above.
    edges: BTreeMap<Package, BTreeSet<Package>>,
}

fn cargo_cyclonedx() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("VWS_CARGO_CYCLONEDX").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let cached = root().join("target/cargo-tools/cargo-cyclonedx/bin/cargo-cyclonedx");
    if cached.is_file() {
        return Ok(cached);
    }
    Err(
        std::env::var("VWS_CARGO_CYCLONEDX_SKIP").unwrap_or_else(|_| {
            "no cargo-cyclonedx (scripts/sbom.sh tool, or VWS_CARGO_CYCLONEDX)".into()
        }),
    )
}

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// Runs `scripts/sbom.sh generate OUT TARGET` with the given tool and reads what it wrote.
fn generate(tool: &Path, target: &str, dir: &Path) -> Value {
    let out = dir.join(format!("{target}.cdx.json"));
    let run = Command::new(root().join("scripts/sbom.sh"))
        .args(["generate", out.to_str().expect("utf-8 path"), target])
        .env("VWS_CARGO_CYCLONEDX", tool)
        .output()
        .expect("scripts/sbom.sh");
    assert!(
        run.status.success(),
        "scripts/sbom.sh generate {target}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    read_json(&out)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Cargo.lock's checksums, by package.
fn lockfile_checksums() -> BTreeMap<Package, String> {
    #[derive(serde::Deserialize)]
    struct Lock {
        package: Vec<Locked>,
    }
    #[derive(serde::Deserialize)]
    struct Locked {
        name: String,
        version: String,
        checksum: Option<String>,
    }
    let text = std::fs::read_to_string(root().join("Cargo.lock")).expect("Cargo.lock");
    let lock: Lock = toml::from_str(&text).expect("Cargo.lock is TOML");
    lock.package
        .into_iter()
        .filter_map(|p| Some(((p.name, p.version), p.checksum?)))
        .collect()
}

/// The binary's normal and build dependency graph for `target`, walked from its package through
/// `cargo metadata`'s resolve (edges of kind normal or build; dev edges are not followed).
fn expected(target: &str) -> Expected {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            target,
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let by_id: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p))
        .collect();
    let package = |id: &str| -> Package {
        let p = by_id[id];
        (
            p["name"].as_str().expect("name").into(),
            p["version"].as_str().expect("version").into(),
        )
    };
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve")
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let binary_id = by_id
        .iter()
        .find(|(_, p)| p["name"] == BINARY_PACKAGE)
        .map(|(id, _)| *id)
        .expect("the binary's package");
    let checksums = lockfile_checksums();
    let mut expected = Expected {
        target: target.into(),
        binary: package(binary_id),
        packages: BTreeMap::new(),
        edges: BTreeMap::new(),
    };
    let mut queue = vec![binary_id];
    let mut seen = BTreeSet::from([binary_id]);
    while let Some(id) = queue.pop() {
        let mut deps = BTreeSet::new();
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let kinds = dep["dep_kinds"].as_array().expect("dep_kinds");
            if !kinds
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build")
            {
                continue;
            }
            let dep_id = dep["pkg"].as_str().expect("pkg");
            deps.insert(package(dep_id));
            if seen.insert(dep_id) {
                queue.push(dep_id);
                let named_license = by_id[dep_id]["license"].is_string();
                let checksum = checksums.get(&package(dep_id)).cloned();
                expected
                    .packages
                    .insert(package(dep_id), (checksum, named_license));
            }
        }
        expected.edges.insert(package(id), deps);
    }
    expected
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Everything the SBOM gets wrong against `expected`, one line each; empty when it is right.
fn findings(sbom: &Value, expected: &Expected) -> Vec<String> {
    let mut found = Vec::new();
    if sbom["bomFormat"] != "CycloneDX" || sbom["specVersion"] != "1.5" {
        found.push(format!(
            "not CycloneDX 1.5: {} {}",
            sbom["bomFormat"], sbom["specVersion"]
        ));
    }
    let subject = &sbom["metadata"]["component"];
    if (text(&subject["name"]), text(&subject["version"]))
        != (expected.binary.0.as_str(), expected.binary.1.as_str())
    {
        found.push(format!(
            "describes {} {}, not the binary",
            subject["name"], subject["version"]
        ));
    }
    let triple = sbom["metadata"]["properties"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "cdx:rustc:sbom:target:triple");
    if triple.map(|p| text(&p["value"])) != Some(expected.target.as_str()) {
        found.push(format!(
            "target triple {triple:?}, expected {}",
            expected.target
        ));
    }
    let mut by_ref: BTreeMap<String, Package> = BTreeMap::from([(
        text(&subject["bom-ref"]).to_owned(),
        expected.binary.clone(),
    )]);
    let mut listed = BTreeSet::new();
    for component in sbom["components"].as_array().into_iter().flatten() {
        let package: Package = (
            text(&component["name"]).into(),
            text(&component["version"]).into(),
        );
        by_ref.insert(text(&component["bom-ref"]).into(), package.clone());
        if !listed.insert(package.clone()) {
            found.push(format!("{package:?} listed twice"));
        }
        match expected.packages.get(&package) {
            None => found.push(format!(
                "{package:?} is listed but not in the binary's graph"
            )),
            Some(want) => found.extend(component_findings(component, &package, want)),
        }
    }
    for package in expected.packages.keys().filter(|p| !listed.contains(*p)) {
        found.push(format!(
            "{package:?} is in the binary's graph but not listed"
        ));
    }
    found.extend(edge_findings(sbom, &by_ref, expected));
    found
}

/// purl, hash and license of one listed package.
fn component_findings(
    component: &Value,
    (name, version): &Package,
    (checksum, named_license): &(Option<String>, bool),
) -> Vec<String> {
    let mut found = Vec::new();
    let purl = text(&component["purl"]);
    let want_purl = format!("pkg:cargo/{name}@{version}");
    // A registry crate's purl is exactly that; a path package's adds its location as a qualifier.
    let purl_ok = match checksum {
        Some(_) => purl == want_purl,
        None => purl
            .strip_prefix(&want_purl)
            .is_some_and(|rest| rest.starts_with('?')),
    };
    if !purl_ok {
        found.push(format!("{name} {version}: purl {purl:?}"));
    }
    let hashes: Vec<(&str, &str)> = component["hashes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| (text(&h["alg"]), text(&h["content"])))
        .collect();
    let want_hashes: Vec<(&str, &str)> = checksum.iter().map(|c| ("SHA-256", c.as_str())).collect();
    if hashes != want_hashes {
        found.push(format!(
            "{name} {version}: hashes {hashes:?}, Cargo.lock says {want_hashes:?}"
        ));
    }
    let licensed = component["licenses"]
        .as_array()
        .is_some_and(|l| !l.is_empty());
    if *named_license && !licensed {
        found.push(format!(
            "{name} {version}: Cargo names a license, the SBOM none"
        ));
    }
    found
}

/// The SBOM's `dependencies` against the graph's edges, for every package with any.
fn edge_findings(
    sbom: &Value,
    by_ref: &BTreeMap<String, Package>,
    expected: &Expected,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut edges: BTreeMap<Package, BTreeSet<Package>> = BTreeMap::new();
    for entry in sbom["dependencies"].as_array().into_iter().flatten() {
        let Some(from) = by_ref.get(text(&entry["ref"])) else {
            found.push(format!(
                "dependencies name an unlisted ref {}",
                entry["ref"]
            ));
            continue;
        };
        let targets = entry["dependsOn"].as_array().into_iter().flatten();
        let to: BTreeSet<Package> = targets
            .filter_map(|r| by_ref.get(text(r)).cloned())
            .collect();
        edges.insert(from.clone(), to);
    }
    for (from, want) in &expected.edges {
        let have = edges.get(from).cloned().unwrap_or_default();
        if &have != want {
            let missing: Vec<_> = want.difference(&have).collect();
            let extra: Vec<_> = have.difference(want).collect();
            found.push(format!(
                "{from:?} depends on: missing {missing:?}, extra {extra:?}"
            ));
        }
    }
    found
}

#[test]
fn the_sbom_lists_every_package_of_the_binarys_graph_with_its_lockfile_checksum_and_nothing_else() {
    let test = "sbom::the_sbom_lists_every_package_of_the_binarys_graph_with_its_lockfile_checksum_and_nothing_else";
    let tool = match cargo_cyclonedx() {
        Ok(tool) => tool,
        Err(why) => return skipped(test, &why),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host_triple();
    let sbom = generate(&tool, &host, dir.path());
    let expected = expected(&host);
    let found = findings(&sbom, &expected);
    assert!(
        found.is_empty(),
        "the SBOM for {host}:\n{}",
        found.join("\n")
    );
    // The graph is the real one: the crates the operator is built on are there, the workspace's
    // libraries with no checksum, and nothing that only the tests use.
    let names: BTreeSet<&str> = expected.packages.keys().map(|(n, _)| n.as_str()).collect();
    for crate_name in [
        "gix",
        "kube",
        "age",
        "ssh-key",
        "tokio",
        "vworkspace-core",
        "vworkspace-controller",
    ] {
        assert!(names.contains(crate_name), "{crate_name} in the graph");
    }
    let components = sbom["components"].as_array().expect("components");
    assert!(
        !components.iter().any(|c| c["name"] == "vworkspace-testkit"),
        "a dev-dependency is not in the SBOM"
    );
    assert!(
        expected.packages.len() > 300,
        "{} packages",
        expected.packages.len()
    );
}

#[test]
fn the_check_finds_a_missing_an_extra_a_wrong_hash_and_a_lost_edge() {
    let test = "sbom::the_check_finds_a_missing_an_extra_a_wrong_hash_and_a_lost_edge";
    let tool = match cargo_cyclonedx() {
        Ok(tool) => tool,
        Err(why) => return skipped(test, &why),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host_triple();
    let sbom = generate(&tool, &host, dir.path());
    let expected = expected(&host);
    let component = |name: &str| {
        let components = sbom["components"].as_array().expect("components");
        components
            .iter()
            .position(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let mut missing = sbom.clone();
    missing["components"]
        .as_array_mut()
        .expect("components")
        .remove(component("gix"));
    assert!(
        findings(&missing, &expected)
            .iter()
            .any(|f| f.contains("\"gix\"") && f.contains("not listed"))
    );
    let mut extra = sbom.clone();
    let mut planted = sbom["components"][component("kube")].clone();
    planted["name"] = "kube-evil".into();
    extra["components"]
        .as_array_mut()
        .expect("components")
        .push(planted);
    assert!(
        findings(&extra, &expected)
            .iter()
            .any(|f| f.contains("kube-evil") && f.contains("not in the binary's graph"))
    );
    let mut wrong_hash = sbom.clone();
    wrong_hash["components"][component("age")]["hashes"][0]["content"] = "00".repeat(32).into();
    assert!(
        findings(&wrong_hash, &expected)
            .iter()
            .any(|f| f.starts_with("age ") && f.contains("hashes"))
    );
    let mut lost_edge = sbom.clone();
    for entry in lost_edge["dependencies"]
        .as_array_mut()
        .expect("dependencies")
    {
        if let Some(on) = entry["dependsOn"].as_array_mut() {
            on.retain(|r| !text(r).contains("#tokio@"));
        }
    }
    assert!(
        findings(&lost_edge, &expected)
            .iter()
            .any(|f| f.contains("missing") && f.contains("\"tokio\""))
    );
    assert!(
        findings(&sbom, &expected).is_empty(),
        "the unmodified SBOM passes"
    );
}

/// The `run:` script of the step named `name` in a workflow job.
fn step_script<'a>(workflow: &'a Value, job: &str, name: &str) -> &'a str {
    let steps = workflow["jobs"][job]["steps"].as_array().expect("steps");
    let step = steps
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("step {name:?}"));
    step["run"].as_str().expect("a run: script")
}

#[test]
fn the_release_workflow_and_the_image_write_the_sbom_with_the_script_the_tests_check() {
    let test =
        "sbom::the_release_workflow_and_the_image_write_the_sbom_with_the_script_the_tests_check";
    let text_of = |rel: &str| {
        std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let release = text_of("examples/ci/release.yml");
    let workflow: Value = serde_saphyr::from_str(&release).expect("release.yml is YAML");
    let sbom_step = step_script(&workflow, "image", "SBOM");
    assert!(
        sbom_step.contains("scripts/sbom.sh generate"),
        "{sbom_step}"
    );
    for target in IMAGE_TARGETS {
        assert!(
            sbom_step.contains(target),
            "the release's SBOM step covers {target}"
        );
    }
    // The image is signed and the SBOM attested as CycloneDX, the provenance comes from the SLSA
    // generator, and the SBOMs go next to the release's files.
    let attest = step_script(&workflow, "image", "Attest the SBOMs");
    assert!(
        attest.contains("cosign attest --yes --type cyclonedx --predicate \"$sbom\""),
        "{attest}"
    );
    assert!(
        step_script(&workflow, "image", "Sign the image")
            .contains("cosign sign --yes --recursive \"$IMAGE@$DIGEST\"")
    );
    assert_eq!(
        workflow["jobs"]["image"]["permissions"]["id-token"],
        "write"
    );
    let slsa = text(&workflow["jobs"]["provenance"]["uses"]);
    assert!(
        slsa.starts_with(
            "slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@v"
        ),
        "{slsa}"
    );
    assert!(step_script(&workflow, "release", "GitHub release").contains("dist/*.cdx.json"));
    // The image writes its SBOM with the same script, for its own target, into the final stage.
    let dockerfile = text_of("deploy/Dockerfile");
    assert!(dockerfile.contains("scripts/sbom.sh generate /sbom.cdx.json \"$target\""));
    let final_stage = &dockerfile[dockerfile.rfind("\nFROM ").expect("FROM")..];
    assert!(
        final_stage
            .contains("COPY --from=sbom /sbom.cdx.json /usr/share/doc/vworkspace/sbom.cdx.json")
    );
    // One pin of the tool (scripts/sbom.sh); CI installs it with that script too.
    for (file, body) in [
        ("examples/ci/release.yml", &release),
        ("deploy/Dockerfile", &dockerfile),
    ] {
        assert!(
            !body.contains("cargo install"),
            "{file} installs nothing itself: scripts/sbom.sh does"
        );
    }
    assert!(text_of("scripts/test.sh").contains("./scripts/sbom.sh tool"));

    // The release's SBOM step, run as the workflow runs it, writes SBOMs the check accepts.
    let tool = match cargo_cyclonedx() {
        Ok(tool) => tool,
        Err(why) => return skipped(test, &why),
    };
    let dist = tempfile::tempdir().expect("tempdir");
    let run = Command::new("bash")
        .args(["-euo", "pipefail", "-c", sbom_step])
        .current_dir(root())
        .env("DIST", dist.path())
        .env("GITHUB_REF_NAME", "v0.0.0-test")
        .env("VWS_CARGO_CYCLONEDX", &tool)
        .output()
        .expect("bash");
    assert!(
        run.status.success(),
        "the SBOM step: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    for target in IMAGE_TARGETS {
        let file = dist
            .path()
            .join(format!("vworkspace-operator-v0.0.0-test-{target}.cdx.json"));
        let found = findings(&read_json(&file), &expected(target));
        assert!(
            found.is_empty(),
            "the release's SBOM for {target}:\n{}",
            found.join("\n")
        );
    }
}
