//! The shared fixture of the end-to-end tests: cluster `demo`'s signed intent repository
//! ([`vworkspace_testkit::IntentRepo`]: commits signed by the real `git commit -S`, keys from
//! `ssh-keygen`, values from the real `age` and from our `encrypt`, releases written by our `release
//! --unchecked` and co-signed by `ssh-keygen -Y sign`), holding the intent below, and the operator's
//! `verify` run against it ([`vworkspace_testkit::IntentRepo::verify`]).
#![allow(dead_code)]

// The stock tools, for every test module (`use crate::common::*`).
#[allow(unused_imports)]
pub use vworkspace_testkit::{age_encrypt, age_keygen, run, run_with_stdin, ssh_keygen, stdout};

pub const BIN: &str = env!("CARGO_BIN_EXE_vworkspace-operator");
/// The allocator settings `deploy/deployment.yaml` gives the operator's container
/// (`deploy::the_deployment_sets_the_allocator_settings_the_tests_run_with` holds the two equal):
/// every operator a real-server test or bench starts runs with them, as deployed.
pub const ALLOCATOR_ENV: [(&str, &str); 2] =
    [("MIMALLOC_ALLOW_THP", "0"), ("MIMALLOC_PURGE_DELAY", "0")];
pub const SMTP_PASSWORD: &str = "hunter2-PLAINTEXT-MARKER-smtp";
pub const ADMIN_TOKEN: &str = "hunter2-PLAINTEXT-MARKER-admin";

/// Cluster `demo`'s repository (releases are `--unchecked`: the tests of `verify`'s refusals need
/// signed hostile intent).
pub type Fixture = vworkspace_testkit::IntentRepo;

pub fn nextcloud(password: &str) -> String {
    let indented: String = password
        .lines()
        .map(|l| format!("            {l}\n"))
        .collect();
    format!(
        "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: nextcloud\nspec:\n  chart:\n    repository: https://nextcloud.github.io/helm/\n    name: nextcloud\n    version: 6.6.4\n  values:\n    nextcloud:\n      host: cloud.example.org\n      mail:\n        smtp:\n          password: |\n{indented}"
    )
}

pub fn vaultwarden(token: &str) -> String {
    let indented: String = token.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "apiVersion: apps.vworkspace.io/v1alpha1\nkind: ApplicationInstance\nmetadata:\n  name: vaultwarden\n  namespace: org-vault\nspec:\n  chart:\n    repository: oci://ghcr.io/guerzon/charts\n    name: vaultwarden\n    version: 0.31.8\n  values:\n    adminToken:\n      value: |\n{indented}"
    )
}

pub const BACKUP: &str = "apiVersion: ops.vworkspace.io/v1alpha1\nkind: Operation\nmetadata:\n  name: nightly\nspec:\n  type: Backup\n  template: velero-namespace-backup\n  target:\n    applicationInstance: nextcloud\n";

/// A repository with one signed commit holding a 2-of-2 release (serial 1) of cluster `demo`: a
/// bound value (nextcloud), a plain one (vaultwarden) and a Backup Operation.
pub fn fixture() -> Fixture {
    let f = Fixture::builder(BIN, "demo").unchecked_release().build();
    let smtp = f.bound_encrypt(
        SMTP_PASSWORD,
        "org-myteam",
        "nextcloud",
        "nextcloud.mail.smtp.password",
    );
    f.write(
        "clusters/demo/namespaces/org-myteam/applicationinstances/nextcloud.yaml",
        &nextcloud(&smtp),
    );
    let token = f.age_encrypt(ADMIN_TOKEN);
    f.write(
        "clusters/demo/namespaces/org-vault/applicationinstances/vaultwarden.yaml",
        &vaultwarden(&token),
    );
    f.write(
        "clusters/demo/namespaces/org-myteam/operations/nightly.yaml",
        BACKUP,
    );
    f.release(&[]);
    f.commit("release 1");
    f
}
