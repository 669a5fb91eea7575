//! charts/vworkspace-operator renders the same objects as deploy/. Its templates are generated from
//! deploy/ by [`templates`] (each edit must match exactly once, so a change in deploy/ that the chart
//! does not follow fails here): `VWS_WRITE_CHART=1 cargo test --test it chart` writes them, every
//! other run checks that the files are what the generator makes. The chart is also rendered with
//! `helm template` and compared object for object with `kubectl kustomize` of deploy/ and of both
//! overlays (helm's output passes through `kubectl kustomize` too, so that both are printed by the
//! same serializer). The helm binary is `VWS_HELM=<path>`, else the one `scripts/go-tools.sh build helm`
//! built from Go modules (helm.sh/helm/v4 v4.3.2, under target/go-tools/; scripts/test.sh builds it
//! and sets VWS_HELM), else `helm` on PATH; without any, the test prints a `SKIPPED` line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Replaces `from` by `to`, which must occur exactly `times` times.
fn edit(text: &str, file: &str, from: &str, to: &str, times: usize) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, times,
        "{file}: expected {from:?} {times} time(s), found {found}: deploy/ changed, update tests/it/chart.rs"
    );
    text.replace(from, to)
}

const CERT_MANAGER: &str = r#"eq .Values.webhook.certificate "cert-manager""#;

fn header(source: &str) -> String {
    format!(
        "# Generated from {source} by tests/it/chart.rs (VWS_WRITE_CHART=1 cargo test --test it chart); do not edit.\n"
    )
}

/// The chart's templates: (file name, contents), generated from deploy/.
pub fn templates() -> Vec<(String, String)> {
    let kustomization: Value =
        serde_saphyr::from_str(&read("deploy/kustomization.yaml")).expect("kustomization");
    let mut out = Vec::new();
    for file in kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
    {
        let source = format!("deploy/{file}");
        let text = read(&source);
        let text = match file {
            "deployment.yaml" => {
                let t = edit(
                    &text,
                    file,
                    "  replicas: 2\n",
                    "  replicas: {{ .Values.replicas }}\n",
                    1,
                );
                let t = edit(
                    &t,
                    file,
                    "          image: ghcr.io/vworkspace/vworkspace-operator:0.1.0\n",
                    "          image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n",
                    1,
                );
                let t = edit(
                    &t,
                    file,
                    r#""--velero-namespace", "velero", "--webhook-cert-secret", "vworkspace-app-operator-webhook-tls"]"#,
                    &format!(
                        r#""--velero-namespace", {{{{ .Values.velero.namespace | quote }}}}, {{{{ if {CERT_MANAGER} }}}}"--webhook-cert-dir", "/etc/vworkspace/webhook"{{{{ else }}}}"--webhook-cert-secret", "vworkspace-app-operator-webhook-tls"{{{{ end }}}}]"#
                    ),
                    1,
                );
                let t = edit(
                    &t,
                    file,
                    "          resources:\n            requests:\n              cpu: 100m\n              memory: 128Mi\n            limits:\n              cpu: \"1\"\n              memory: 512Mi\n",
                    "          resources:\n            {{- toYaml .Values.resources | nindent 12 }}\n",
                    1,
                );
                let t = edit(
                    &t,
                    file,
                    "            - name: tmp\n              mountPath: /tmp\n",
                    &format!(
                        "            - name: tmp\n              mountPath: /tmp\n            {{{{- if {CERT_MANAGER} }}}}\n            - name: webhook-tls\n              mountPath: /etc/vworkspace/webhook\n              readOnly: true\n            {{{{- end }}}}\n"
                    ),
                    1,
                );
                edit(
                    &t,
                    file,
                    "        - name: tmp\n          emptyDir:\n            sizeLimit: 64Mi\n",
                    &format!(
                        "        - name: tmp\n          emptyDir:\n            sizeLimit: 64Mi\n        {{{{- if {CERT_MANAGER} }}}}\n        - name: webhook-tls\n          secret:\n            secretName: vworkspace-app-operator-webhook-cert\n        {{{{- end }}}}\n"
                    ),
                    1,
                )
            }
            "webhook.yaml" => edit(
                &text,
                file,
                "metadata:\n  name: vworkspace-app-operator\n  labels:\n",
                &format!(
                    "metadata:\n  name: vworkspace-app-operator\n  {{{{- if {CERT_MANAGER} }}}}\n  annotations:\n    cert-manager.io/inject-ca-from: vworkspace-system/vworkspace-app-operator-webhook\n  {{{{- end }}}}\n  labels:\n"
                ),
                1,
            ),
            _ => text,
        };
        out.push((file.to_owned(), header(&source) + &text));
    }
    let velero = "deploy/components/velero/velero-role.yaml";
    let text = edit(
        &read(velero),
        velero,
        "  namespace: velero\n",
        "  namespace: {{ .Values.velero.namespace }}\n",
        2,
    );
    out.push((
        "velero-role.yaml".into(),
        format!(
            "{}{{{{- if .Values.velero.enabled }}}}\n{text}{{{{- end }}}}\n",
            header(velero)
        ),
    ));
    let cert_manager = "deploy/components/cert-manager/certificate.yaml";
    out.push((
        "cert-manager.yaml".into(),
        format!(
            "{}{{{{- if {CERT_MANAGER} }}}}\n{}{{{{- end }}}}\n",
            header(cert_manager),
            read(cert_manager)
        ),
    ));
    out.push(("monitoring.yaml".into(), monitoring_template()));
    out
}

/// Helm would read `{{ $labels.cluster }}` (alert annotations) and `{{cluster}}` (dashboard legends)
/// as its own actions: they are printed literally.
fn escape_braces(text: &str) -> String {
    text.replace("{{", r#"{{ "{{" }}"#)
}

/// deploy/components/monitoring as one template behind `monitoring.enabled`: the PodMonitor, the
/// PrometheusRule, and the dashboard ConfigMap its kustomization generates from the JSON file.
fn monitoring_template() -> String {
    let dir = "deploy/components/monitoring";
    let kustomization: Value =
        serde_saphyr::from_str(&read(&format!("{dir}/kustomization.yaml"))).expect("kustomization");
    let generator = &kustomization["configMapGenerator"][0];
    let file = generator["files"][0].as_str().expect("the dashboard file");
    let labels = generator["options"]["labels"]
        .as_object()
        .expect("labels")
        .iter()
        .map(|(k, v)| format!("    {k}: {}\n", serde_json::to_string(v).expect("label")))
        .collect::<String>();
    let dashboard = read(&format!("{dir}/{file}"))
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>();
    let config_map = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n{labels}data:\n  {file}: |\n{dashboard}",
        generator["name"].as_str().expect("name"),
        generator["namespace"].as_str().expect("namespace"),
    );
    let mut documents = Vec::new();
    for resource in kustomization["resources"].as_array().expect("resources") {
        let path = format!("{dir}/{}", resource.as_str().expect("resource"));
        documents.push(escape_braces(&read(&path)));
    }
    documents.push(escape_braces(&config_map));
    format!(
        "{}{{{{- if .Values.monitoring.enabled }}}}\n{}{{{{- end }}}}\n",
        header(dir),
        documents.join("---\n")
    )
}

fn template_dir() -> PathBuf {
    root().join("charts/vworkspace-operator/templates")
}

#[test]
fn chart_templates_are_generated_from_deploy() {
    let generated = templates();
    if std::env::var_os("VWS_WRITE_CHART").is_some() {
        let dir = template_dir();
        std::fs::create_dir_all(&dir).expect("mkdir");
        for entry in std::fs::read_dir(&dir).expect("templates") {
            std::fs::remove_file(entry.expect("entry").path()).expect("remove");
        }
        for (name, text) in &generated {
            std::fs::write(dir.join(name), text).expect("write");
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(template_dir())
        .expect("charts/vworkspace-operator/templates")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(on_disk, names, "the chart's templates are deploy/'s files");
    for (name, text) in &generated {
        let file = std::fs::read_to_string(template_dir().join(name)).expect("template");
        assert!(
            file == *text,
            "charts/vworkspace-operator/templates/{name} is not what deploy/ generates: VWS_WRITE_CHART=1 cargo test --test it chart"
        );
    }
}

#[test]
fn chart_values_default_to_what_deploy_sets() {
    let values: Value =
        serde_saphyr::from_str(&read("charts/vworkspace-operator/values.yaml")).expect("values");
    let deployment: Value = serde_saphyr::from_str(&read("deploy/deployment.yaml")).expect("yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        format!(
            "{}:{}",
            values["image"]["repository"].as_str().expect("repository"),
            values["image"]["tag"].as_str().expect("tag")
        ),
        container["image"].as_str().expect("image")
    );
    assert_eq!(values["replicas"], deployment["spec"]["replicas"]);
    assert_eq!(values["resources"], container["resources"]);
    assert_eq!(values["webhook"]["certificate"], "self");
    assert_eq!(values["velero"]["enabled"], false);
    assert_eq!(values["velero"]["namespace"], "velero");
    assert_eq!(values["monitoring"]["enabled"], false);
}

fn run(command: &mut std::process::Command) -> String {
    let output = command.output().expect("runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `kubectl kustomize dir`, by id.
fn kustomize(dir: &Path) -> BTreeMap<String, Value> {
    let text = run(std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir));
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&text).expect("yaml");
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|d| {
            let id = format!(
                "{}/{}/{}",
                d["kind"].as_str().unwrap_or_default(),
                d["metadata"]["namespace"].as_str().unwrap_or_default(),
                d["metadata"]["name"].as_str().unwrap_or_default()
            );
            (id, d)
        })
        .collect()
}

#[test]
fn helm_template_renders_what_kustomize_renders() {
    let helm = match crate::support::go_tools::tool("helm") {
        Ok(helm) => helm,
        Err(why) => {
            crate::support::go_tools::skipped(
                "helm_template_renders_what_kustomize_renders",
                &format!(
                    "{why}; the templates are still checked against deploy/ by chart_templates_are_generated_from_deploy"
                ),
            );
            return;
        }
    };
    let chart = root().join("charts/vworkspace-operator");
    for (sets, kustomization) in [
        (vec![], "deploy"),
        (
            vec!["webhook.certificate=cert-manager"],
            "overlays/cert-manager",
        ),
        (vec!["velero.enabled=true"], "overlays/velero"),
        (vec!["monitoring.enabled=true"], "overlays/monitoring"),
    ] {
        let mut cmd = std::process::Command::new(&helm);
        cmd.arg("template").arg("vworkspace-operator").arg(&chart);
        for set in &sets {
            cmd.args(["--set", set]);
        }
        // Both through the same serializer: helm's output as the one resource of a kustomization.
        let rendered = tempfile::tempdir().expect("tempdir");
        std::fs::write(rendered.path().join("chart.yaml"), run(&mut cmd)).expect("write");
        std::fs::write(
            rendered.path().join("kustomization.yaml"),
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [chart.yaml]\n",
        )
        .expect("write");
        let from_helm = kustomize(rendered.path());
        let from_kustomize = kustomize(&root().join(kustomization));
        assert_eq!(
            from_helm.keys().collect::<Vec<_>>(),
            from_kustomize.keys().collect::<Vec<_>>(),
            "{sets:?} vs {kustomization}"
        );
        for (id, object) in &from_kustomize {
            assert_eq!(&from_helm[id], object, "{id}: {sets:?} vs {kustomization}");
        }
    }
}
