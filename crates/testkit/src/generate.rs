//! A generated intent of a given size: the pass bench and the real-server scale test.

use vworkspace_core::secrets::{self, Binding};

/// How much intent [`crate::Builder::generated`] writes: `instances` ApplicationInstances in
/// `namespaces` namespaces named `<cluster>-0000`, … (consecutive instances share one), the first
/// `values` of them with a bound encrypted value at `mail.password` (encrypted by the library: the
/// CLI per value would dominate at thousands), and `operations` Backup Operations spread over the
/// namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// How many namespaces (at least one).
    pub namespaces: usize,
    /// How many ApplicationInstances, `app-00000`, ….
    pub instances: usize,
    /// How many Operations, `backup-00000`, ….
    pub operations: usize,
    /// How many of the instances carry an encrypted value.
    pub values: usize,
}

impl Scale {
    /// The index of the namespace of instance `i`.
    pub fn namespace_of(&self, i: usize) -> usize {
        let per_namespace = self.instances.div_ceil(self.namespaces.max(1)).max(1);
        i / per_namespace
    }

    /// The name of instance `i`.
    pub fn instance_name(i: usize) -> String {
        format!("app-{i:05}")
    }

    /// The files of the intent of cluster `cluster`, values encrypted to `recipient`.
    pub(crate) fn intent(&self, cluster: &str, recipient: &str) -> GeneratedIntent {
        let namespaces: Vec<String> = (0..self.namespaces.max(1))
            .map(|k| format!("{cluster}-{k:04}"))
            .collect();
        let mut intent = GeneratedIntent::default();
        for i in 0..self.instances {
            let ns = &namespaces[self.namespace_of(i)];
            let name = Self::instance_name(i);
            let mut values = format!("    host: {name}.example.org\n    replicas: 2\n");
            if i < self.values {
                let at = Binding {
                    cluster: cluster.to_owned(),
                    namespace: ns.clone(),
                    instance: name.clone(),
                    path: "mail.password".into(),
                };
                let value =
                    secrets::encrypt(format!("smtp-secret-{i}").as_bytes(), recipient, Some(&at))
                        .expect("encrypt");
                let indented: String = value.lines().map(|l| format!("        {l}\n")).collect();
                values.push_str(&format!("    mail:\n      password: |\n{indented}"));
                intent.armored.push(value);
            }
            intent.files.push((
                format!("clusters/{cluster}/namespaces/{ns}/applicationinstances/{name}.yaml"),
                format!(
                    "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: {name}\n  labels:\n    tier: web\nspec:\n  chart:\n    repository: https://charts.example.org/\n    name: app\n    version: 1.2.{i}\n  values:\n{values}"
                ),
            ));
        }
        for j in 0..self.operations {
            let ns = &namespaces[j % namespaces.len()];
            let name = format!("backup-{j:05}");
            intent.files.push((
                format!("clusters/{cluster}/namespaces/{ns}/operations/{name}.yaml"),
                format!(
                    "apiVersion: ops.vworkspace.io/v1alpha1\nkind: Operation\nmetadata:\n  name: {name}\nspec:\n  type: Backup\n  template: velero-namespace-backup\n  parameters:\n    ttl: 720h\n"
                ),
            ));
        }
        intent.namespaces = namespaces;
        intent
    }
}

/// What [`Scale::intent`] generates: files (path in the repository, contents), the namespaces, and
/// the armored values in instance order.
#[derive(Default)]
pub(crate) struct GeneratedIntent {
    pub(crate) files: Vec<(String, String)>,
    pub(crate) namespaces: Vec<String>,
    pub(crate) armored: Vec<String>,
}
