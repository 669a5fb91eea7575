//! Every child built from an ApplicationInstance or an Operation, against golden YAML files in
//! `tests/golden/` (reviewed by eye; regenerate with `UPDATE_GOLDEN=1 cargo test --test it children` and
//! read the diff), the sparse secret-values split, and the status readers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use vworkspace_controller::children::engines::{self, JobTemplate, OperationError};
use vworkspace_controller::children::flux::{self, ChildrenError};
use vworkspace_core::crd::{
    ApplicationInstance, ApplicationInstanceSpec, ChartRef, Operation, OperationPhase,
    OperationSpec, OperationTarget, OperationType,
};
use vworkspace_core::limits::Limits;
use vworkspace_core::secrets::{self, Binding, Identities, ValueContext, ValuesPolicy};

fn golden(name: &str, value: &impl serde::Serialize) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let rendered = serde_saphyr::to_string(value).expect("yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, &rendered).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(rendered, expected, "{name} differs from its golden file");
}

fn instance(repository: &str, values: Option<Value>) -> ApplicationInstance {
    let mut ai = ApplicationInstance::new(
        "nextcloud",
        ApplicationInstanceSpec {
            chart: ChartRef {
                repository: repository.to_owned(),
                name: "nextcloud".to_owned(),
                version: "6.6.4".to_owned(),
                digest: None,
            },
            release_name: None,
            values,
            suspend: None,
        },
    );
    ai.metadata.namespace = Some("org-myteam".to_owned());
    ai.metadata.uid = Some("5b6f0c4e-ai-uid".to_owned());
    ai
}

struct Keys {
    identities: Identities,
    recipient: String,
}

fn keys() -> Keys {
    let (secret, recipient) = secrets::generate();
    let text = secret.expose_str().expect("utf8").to_owned();
    Keys {
        identities: Identities::parse(&text, "test identity").expect("identity"),
        recipient,
    }
}

fn bound(keys: &Keys, plaintext: &str, path: &str) -> String {
    let binding = Binding {
        cluster: "demo".into(),
        namespace: "org-myteam".into(),
        instance: "nextcloud".into(),
        path: path.into(),
    };
    secrets::encrypt(plaintext.as_bytes(), &keys.recipient, Some(&binding)).expect("encrypt")
}

fn split(keys: &Keys, ai: &ApplicationInstance) -> flux::SplitValues {
    let at = ValueContext {
        cluster: "demo".into(),
        namespace: "org-myteam".into(),
        instance: "nextcloud".into(),
    };
    let values = ai.spec.values.clone().unwrap_or(Value::Null);
    let decrypted = secrets::decrypt_values(
        &values,
        &at,
        &keys.identities,
        &ValuesPolicy::default(),
        &Limits::default(),
    )
    .expect("decrypts");
    flux::split_values(ai.spec.values.as_ref(), &decrypted).expect("split")
}

#[test]
fn https_instance_children_with_a_sparse_values_secret() {
    let keys = keys();
    let values = json!({
        "nextcloud": {
            "host": "cloud.example.org",
            "mail": {"smtp": {"host": "smtp.example.org", "password": bound(&keys, "s3cret-smtp", "nextcloud.mail.smtp.password")}},
        },
        "admins": [
            {"name": "alice", "token": bound(&keys, "t0ken-alice", "admins.0.token")},
            {"name": "bob"},
        ],
        "replicas": 2,
    });
    let ai = instance("https://nextcloud.github.io/helm/", Some(values));
    let split = split(&keys, &ai);
    // Inline: no ciphertext, no plaintext, no list that held a secret.
    let inline = split.inline.to_string();
    assert!(
        !inline.contains("AGE ENCRYPTED")
            && !inline.contains("s3cret")
            && !inline.contains("t0ken")
    );
    assert_eq!(
        split.inline["nextcloud"]["mail"]["smtp"]["host"],
        "smtp.example.org"
    );
    assert!(
        split.inline["nextcloud"]["mail"]["smtp"]
            .get("password")
            .is_none()
    );
    assert!(
        split.inline.get("admins").is_none(),
        "a list with a secret moves whole"
    );
    assert!(format!("{split:?}").contains("<redacted>"));
    let secret_yaml = split.secret.as_ref().expect("secret values");
    let sparse: Value = serde_json::from_slice(secret_yaml).expect("json is yaml");
    assert_eq!(
        sparse,
        json!({
            "nextcloud": {"mail": {"smtp": {"password": "s3cret-smtp"}}},
            "admins": [{"name": "alice", "token": "t0ken-alice"}, {"name": "bob"}],
        })
    );
    let (plural, source) = flux::source(&ai).expect("source");
    assert_eq!(plural, "helmrepositories");
    golden("helmrepository.yaml", &source);
    golden(
        "helmrelease-https.yaml",
        &flux::helm_release(&ai, &split.inline, true).expect("helmrelease"),
    );
    let secret = flux::values_secret(&ai, secret_yaml).expect("secret");
    let mut shown = serde_json::to_value(&secret).expect("json");
    // The golden file shows the decoded values.yaml so a reviewer can read it.
    shown["data"]["values.yaml"] = json!(String::from_utf8_lossy(secret_yaml));
    golden("values-secret.yaml", &shown);
}

#[test]
fn oci_instance_without_secrets_has_no_values_secret() {
    let keys = keys();
    let ai = instance("oci://ghcr.io/example/charts", Some(json!({"replicas": 1})));
    let split = split(&keys, &ai);
    assert!(split.secret.is_none());
    let (plural, source) = flux::source(&ai).expect("source");
    assert_eq!(plural, "ocirepositories");
    assert_eq!(
        source["spec"]["url"],
        "oci://ghcr.io/example/charts/nextcloud"
    );
    golden("ocirepository.yaml", &source);
    let release = flux::helm_release(&ai, &split.inline, false).expect("helmrelease");
    assert!(release["spec"].get("valuesFrom").is_none());
    golden("helmrelease-oci.yaml", &release);
    assert_eq!(
        flux::source(&instance("http://insecure.example.org", None)).map(|_| ()),
        Err(ChildrenError::Repository(
            "http://insecure.example.org".into()
        ))
    );
}

#[test]
fn a_pinned_chart_becomes_an_oci_repository_with_ref_digest_only() {
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut ai = instance("oci://ghcr.io/example/charts", None);
    ai.spec.chart.digest = Some(DIGEST.to_owned());
    let (plural, source) = flux::source(&ai).expect("source");
    assert_eq!(plural, "ocirepositories");
    // The digest replaces the tag: Flux would prefer it anyway, but a tag beside it would suggest
    // the tag matters.
    assert_eq!(source["spec"]["ref"], json!({"digest": DIGEST}));
    assert_eq!(
        source["spec"]["url"],
        "oci://ghcr.io/example/charts/nextcloud"
    );
    golden("ocirepository-digest.yaml", &source);
    // Without a digest the tag is the version, as before.
    let tagged = instance("oci://ghcr.io/example/charts", None);
    assert_eq!(
        flux::source(&tagged).expect("source").1["spec"]["ref"],
        json!({"tag": "6.6.4"})
    );
}

#[test]
fn chart_signing_keys_become_a_cosign_verify_block_and_pub_entries_of_the_values_secret() {
    let key = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQ==\n-----END PUBLIC KEY-----\n";
    let ai = instance("oci://ghcr.io/example/charts", None);
    let (_, mut source) = flux::source(&ai).expect("source");
    flux::verify_chart(&mut source, &flux::values_secret_name("nextcloud"));
    // The field names of source.toolkit.fluxcd.io/v1 OCIRepository (target/flux/crds).
    assert_eq!(
        source["spec"]["verify"],
        json!({"provider": "cosign", "secretRef": {"name": "nextcloud-values"}})
    );
    golden("ocirepository-verify.yaml", &source);
    // A HelmRepository has no verify: left alone.
    let (_, mut https) =
        flux::source(&instance("https://charts.example.org", None)).expect("source");
    flux::verify_chart(&mut https, "nextcloud-values");
    assert!(https["spec"].get("verify").is_none(), "{https}");
    // The Secret holds the keys (one a `.pub` entry, as cosign loads them) beside the values.
    let secret =
        flux::values_secret_with(&ai, Some(b"a: 1"), &[key.into(), key.into()]).expect("secret");
    let data = secret.data.expect("data");
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["cosign-0.pub", "cosign-1.pub", "values.yaml"]);
    assert_eq!(data["cosign-0.pub"].0, key.as_bytes());
    let only_keys = flux::values_secret_with(&ai, None, &[key.into()]).expect("secret");
    assert_eq!(
        only_keys.data.expect("data").keys().collect::<Vec<_>>(),
        ["cosign-0.pub"]
    );
}

#[test]
fn helm_release_ready_is_mirrored() {
    let release = json!({"status": {"conditions": [
        {"type": "Reconciling", "status": "False"},
        {"type": "Ready", "status": "True", "reason": "InstallSucceeded", "message": "Helm install succeeded"},
    ]}});
    assert_eq!(
        flux::helm_release_ready(&release),
        Some((
            "True".into(),
            "InstallSucceeded".into(),
            "Helm install succeeded".into()
        ))
    );
    assert_eq!(flux::helm_release_ready(&json!({})), None);
}

fn operation(kind: OperationType, template: &str, target: OperationTarget) -> Operation {
    let mut op = Operation::new(
        "nightly",
        OperationSpec {
            operation_type: kind,
            template: template.to_owned(),
            target,
            parameters: BTreeMap::from([
                ("ttl".to_owned(), "720h".to_owned()),
                ("database".to_owned(), "app".to_owned()),
            ]),
        },
    );
    op.metadata.namespace = Some("org-myteam".to_owned());
    op.metadata.uid = Some("9d2a-op-uid".to_owned());
    op
}

#[test]
fn every_engine_builds_its_child() {
    let target = OperationTarget {
        application_instance: Some("nextcloud".into()),
        persistent_volume_claim: Some("data-nextcloud-0".into()),
        backup_name: Some("org-myteam-nightly-1".into()),
    };
    let job = JobTemplate {
        image: "registry.example.org/tools/pg:16".into(),
        command: vec!["/bin/pg-dump".into(), "--all".into()],
    };
    for (kind, file) in [
        (OperationType::Backup, "operation-backup.yaml"),
        (OperationType::Restore, "operation-restore.yaml"),
        (OperationType::Snapshot, "operation-snapshot.yaml"),
        (OperationType::RunCommand, "operation-runcommand.yaml"),
        (OperationType::Workflow, "operation-workflow.yaml"),
    ] {
        let op = operation(kind, "nightly-template", target.clone());
        let child = engines::child(&op, "velero", Some(&job)).expect("child");
        golden(file, &child.body);
        match kind {
            OperationType::Backup | OperationType::Restore => {
                assert_eq!(child.namespace, "velero");
                assert!(child.body["metadata"].get("ownerReferences").is_none());
            }
            _ => {
                assert_eq!(child.namespace, "org-myteam");
                assert_eq!(
                    child.body["metadata"]["ownerReferences"][0]["kind"],
                    "Operation"
                );
            }
        }
    }
    // The Job runs as the runner, never as the operator, PSA-restricted, once.
    let op = operation(OperationType::RunCommand, "pg-dump", target);
    let job = engines::child(&op, "velero", Some(&job)).expect("job").body;
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "vworkspace-operation-runner");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(container["env"][0]["name"], "PARAM_DATABASE");
}

#[test]
fn an_operation_runs_once_per_spec() {
    let op = operation(OperationType::Backup, "t", OperationTarget::default());
    let same = operation(OperationType::Backup, "t", OperationTarget::default());
    assert_eq!(engines::run_id(&op), engines::run_id(&same));
    let mut changed = same.clone();
    changed.spec.parameters.insert("ttl".into(), "24h".into());
    assert_ne!(engines::run_id(&op), engines::run_id(&changed));
    let mut long = op.clone();
    long.metadata.name = Some("x".repeat(80));
    assert!(engines::run_id(&long).len() <= 63);
    assert!(engines::is_final(Some(OperationPhase::Failed)));
    assert!(!engines::is_final(Some(OperationPhase::Running)));
}

/// The Velero Backup of `name` in `namespace` (spec as [`operation`] builds it).
fn velero_backup(namespace: &str, name: &str, ttl: &str) -> String {
    let mut op = operation(OperationType::Backup, "t", OperationTarget::default());
    op.metadata.name = Some(name.to_owned());
    op.metadata.namespace = Some(namespace.to_owned());
    op.spec.parameters.insert("ttl".into(), ttl.into());
    let child = engines::child(&op, "velero", None).expect("backup");
    assert_eq!(child.namespace, "velero");
    assert!(child.name.len() <= 63, "{}", child.name);
    child.name
}

#[test]
fn velero_names_are_unique_per_namespace_operation_and_run_at_any_length() {
    // The first case: `team/a-nightly` and `team-a/nightly` shared one Backup.
    let a = velero_backup("team", "a-nightly", "720h");
    let b = velero_backup("team-a", "nightly", "720h");
    assert_ne!(a, b);
    // The second: a 48-character namespace cut the run digest off, so a new run found the old
    // run's Backup (and its `Succeeded`) and no backup was made.
    let long = "n".repeat(48);
    let first = velero_backup(&long, "nightly", "720h");
    let second = velero_backup(&long, "nightly", "24h");
    assert_ne!(first, second, "a new run is a new Backup");
    assert_eq!(
        first,
        velero_backup(&long, "nightly", "720h"),
        "one run, one name"
    );
    // Longest namespace and name: still distinct per name and run.
    let ns = "x".repeat(63);
    let names: std::collections::BTreeSet<String> = [
        velero_backup(&ns, &"y".repeat(253), "1h"),
        velero_backup(&ns, &format!("{}z", "y".repeat(252)), "1h"),
        velero_backup(&ns, &"y".repeat(253), "2h"),
    ]
    .into();
    assert_eq!(names.len(), 3, "{names:?}");
    // Operations whose long names share the kept prefix never share a run id (and so a child in
    // their namespace); a name that fits keeps the id it always had.
    let mut one = operation(OperationType::RunCommand, "t", OperationTarget::default());
    one.metadata.name = Some(format!("{}-one", "p".repeat(60)));
    let mut two = one.clone();
    two.metadata.name = Some(format!("{}-two", "p".repeat(60)));
    assert_ne!(engines::run_id(&one), engines::run_id(&two));
    let short = operation(OperationType::RunCommand, "t", OperationTarget::default());
    assert!(engines::run_id(&short).starts_with("nightly-"));
    assert_eq!(engines::run_id(&short).len(), "nightly-".len() + 10);
}

#[test]
fn refusals_name_the_field_and_say_what_to_do() {
    let op = operation(OperationType::Restore, "t", OperationTarget::default());
    let refused = engines::child(&op, "velero", None).expect_err("no backup name");
    assert_eq!(refused.reason(), engines::INVALID_OPERATION);
    assert!(refused.to_string().starts_with("spec.target.backupName"));
    let op = operation(OperationType::Snapshot, "t", OperationTarget::default());
    assert!(matches!(
        engines::child(&op, "velero", None),
        Err(OperationError::Invalid { field, .. }) if field == "spec.target.persistentVolumeClaim"
    ));
    let op = operation(OperationType::RunCommand, "t", OperationTarget::default());
    assert!(engines::child(&op, "velero", None).is_err());
    let refused = engines::check_template("pg-dump", "org-myteam", &["restic".to_owned()])
        .expect_err("not allowed");
    assert_eq!(refused.reason(), "OperationTemplateNotAllowedInNamespace");
    assert!(
        refused
            .to_string()
            .contains("app.vworkspace.io/allowed-operation-templates")
    );
    assert!(engines::check_template("restic", "org-myteam", &["restic".to_owned()]).is_ok());
    assert!(engines::job_template(Some("img"), Some("not json"), "ConfigMap x").is_err());
    assert!(engines::job_template(None, None, "ConfigMap x").is_err());
}

#[test]
fn phases_follow_each_childs_status() {
    use OperationPhase::*;
    let cases: Vec<(&str, Value, OperationPhase)> = vec![
        ("Backup", json!({}), Pending),
        (
            "Backup",
            json!({"status": {"phase": "InProgress"}}),
            Running,
        ),
        (
            "Backup",
            json!({"status": {"phase": "Completed"}}),
            Succeeded,
        ),
        (
            "Backup",
            json!({"status": {"phase": "PartiallyFailed"}}),
            Failed,
        ),
        (
            "Restore",
            json!({"status": {"phase": "Failed", "failureReason": "x"}}),
            Failed,
        ),
        ("VolumeSnapshot", json!({}), Pending),
        (
            "VolumeSnapshot",
            json!({"status": {"readyToUse": false}}),
            Running,
        ),
        (
            "VolumeSnapshot",
            json!({"status": {"readyToUse": true}}),
            Succeeded,
        ),
        (
            "VolumeSnapshot",
            json!({"status": {"error": {"message": "quota"}}}),
            Failed,
        ),
        ("Job", json!({"status": {"active": 1}}), Running),
        (
            "Job",
            json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
            Succeeded,
        ),
        (
            "Job",
            json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}),
            Failed,
        ),
        ("Workflow", json!({"status": {"phase": "Running"}}), Running),
        (
            "Workflow",
            json!({"status": {"phase": "Error", "message": "boom"}}),
            Failed,
        ),
        (
            "Workflow",
            json!({"status": {"phase": "Succeeded"}}),
            Succeeded,
        ),
    ];
    for (kind, child, expected) in cases {
        assert_eq!(
            engines::phase_of(kind, &child).0,
            expected,
            "{kind} {child}"
        );
    }
    assert_eq!(
        engines::pod_selector("Job", "nightly-abc").as_deref(),
        Some("job-name=nightly-abc")
    );
}
