//! What the API server's admission keeps from everyone next to the operator's objects (issue 23),
//! on the real kube-apiserver with deploy/'s policies in force: the operator's token may change only
//! the caBundle of its webhook configuration; only the operator (and break glass) writes Cluster
//! status; a namespace editor cannot change the children the operator writes; a replica that does not
//! hold the leader Lease has its writes refused by the API server; and the policies' exemptions hold
//! in both of kube-controller-manager's credential modes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use super::admission::RestoreWebhook;
use super::fixture::Intent;
use super::server::{
    Audit, BREAK_GLASS_GROUP, OPERATOR_USER, Proc, apply, break_glass_client, client_from, delete,
    dynamic_api, get, merge_patch, server_and_ca, skipped, wait_for,
};
use super::{AI, OPS, SYSTEM, Scope, env, operator_binding, operator_cmd, webhook_replica};

const WEBHOOK_CA_POLICY: &str = "vworkspace-app-operator-webhook-ca-only";
const CLUSTER_STATUS_POLICY: &str = "vworkspace-cluster-status-from-operator";
const CHILDREN_POLICY: &str = "vworkspace-children-from-operator";
const RBAC_POLICY: &str = "vworkspace-namespace-rbac-from-operator";
const INSTANCES_POLICY: &str = "vworkspace-managed-from-git";
const FENCE_POLICY: &str = "vworkspace-app-operator-leader-fence";
const CONFIGURATION: &str = "vworkspace-app-operator";
const LEASE: &str = "vworkspace-app-operator";

/// The admin's kubeconfig, impersonating `user` in `groups` (the admin may impersonate anyone).
pub(super) async fn impersonating(kubeconfig: &Path, user: &str, groups: &[&str]) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    config.auth_info.impersonate = Some(user.into());
    if !groups.is_empty() {
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    }
    Client::try_from(config).expect("client")
}

/// A member of the break-glass group with rights on Cluster status, as an owner who uses break glass
/// binds them to the group.
async fn break_glass_on_cluster_status(env: &super::Env) -> Client {
    apply(
        &env.admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "vws-test-break-glass-status"},
                "rules": [{"apiGroups": ["ops.vworkspace.io"], "resources": ["clusters/status"],
                           "verbs": ["get", "patch", "update"]}]}),
    )
    .await
    .expect("ClusterRole");
    apply(
        &env.admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "vws-test-break-glass-status"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "vws-test-break-glass-status"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BREAK_GLASS_GROUP}]}),
    )
    .await
    .expect("ClusterRoleBinding");
    impersonating(
        &env.cp.kubeconfig,
        "break-glass-tester",
        &[BREAK_GLASS_GROUP],
    )
    .await
}

/// The message of a 403 from the admission policy `policy`; panics on anything else.
fn refused_by<T>(result: Result<T, kube::Error>, policy: &str, what: &str) -> String {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(policy) => s.message,
        Err(e) => panic!("{what}: expected a refusal by {policy}, got {e}"),
        Ok(_) => panic!("{what}: admitted; expected a refusal by {policy}"),
    }
}

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..PatchParams::default()
    }
}

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

fn dry_delete() -> DeleteParams {
    DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    }
}

type Edit = fn(&mut ValidatingWebhookConfiguration);

fn first_hook(c: &mut ValidatingWebhookConfiguration) -> &mut ValidatingWebhook {
    c.webhooks
        .as_mut()
        .and_then(|w| w.first_mut())
        .expect("a webhook")
}

/// Every change but the caBundle, each one the attack of issue 23 item 1 or a way to switch the
/// webhook off.
fn forbidden_edits() -> Vec<(&'static str, Edit)> {
    vec![
        ("point it at another URL", |c| {
            first_hook(c).client_config.url = Some("https://203.0.113.7/steal".into());
        }),
        ("send it every Secret", |c| {
            first_hook(c)
                .rules
                .get_or_insert_with(Vec::new)
                .push(RuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".into()]),
                    resources: Some(vec!["secrets".into()]),
                    operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                    scope: Some("*".into()),
                });
        }),
        ("fail open", |c| {
            first_hook(c).failure_policy = Some("Ignore".into());
        }),
        ("match every namespace", |c| {
            first_hook(c).namespace_selector = None;
        }),
        ("shorten its timeout", |c| {
            first_hook(c).timeout_seconds = Some(1);
        }),
        ("add a webhook", |c| {
            let mut extra = first_hook(c).clone();
            extra.name = "steal.vworkspace.io".into();
            c.webhooks.get_or_insert_with(Vec::new).push(extra);
        }),
        ("remove its webhooks", |c| {
            c.webhooks = Some(Vec::new());
        }),
        ("label it", |c| {
            c.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("evil".into(), "yes".into());
        }),
    ]
}

/// Issue 23 item 1: with the operator's own token, every change of its ValidatingWebhookConfiguration
/// but the caBundle is refused (and changes nothing), as are deleting it and creating another; the
/// caBundle itself can still be rotated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_token_may_change_only_the_ca_bundle_of_its_webhook_configuration() {
    let Some(env) =
        env("the_operators_token_may_change_only_the_ca_bundle_of_its_webhook_configuration").await
    else {
        return;
    };
    let _restore = RestoreWebhook {
        kubeconfig: env.cp.kubeconfig.clone(),
        shared: super::webhook_configuration(env.shared.webhook_port, Some(&env.shared.ca_bundle)),
    };
    let operator = client_from(&env.shared.operator_kubeconfig).await;
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(operator.clone());
    let admin_configs: Api<ValidatingWebhookConfiguration> = Api::all(env.admin.clone());
    let shown = |c: &ValidatingWebhookConfiguration| json!({"webhooks": c.webhooks, "labels": c.metadata.labels});
    let before = shown(&admin_configs.get(CONFIGURATION).await.expect("get"));

    for (what, edit) in forbidden_edits() {
        let mut config = configs
            .get(CONFIGURATION)
            .await
            .expect("the operator reads it");
        edit(&mut config);
        refused_by(
            configs
                .replace(CONFIGURATION, &PostParams::default(), &config)
                .await,
            WEBHOOK_CA_POLICY,
            what,
        );
        let now = shown(&admin_configs.get(CONFIGURATION).await.expect("get"));
        assert_eq!(now, before, "{what}: nothing changed");
    }
    // Deleting it or creating another is refused too (by RBAC first: the rule names the object and
    // grants get and update only).
    match configs
        .delete(CONFIGURATION, &DeleteParams::default())
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("the operator deleted its webhook configuration: {other:?}"),
    }
    let mut other = admin_configs.get(CONFIGURATION).await.expect("get");
    other.metadata = kube::api::ObjectMeta {
        name: Some("vws-steal".into()),
        ..Default::default()
    };
    match configs.create(&PostParams::default(), &other).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("the operator created a webhook configuration: {other:?}"),
    }

    // The caBundle alone: rotated with the operator's token (as runtime/certs.rs does).
    let scratch = env.shared.scratch.join("webhook-ca-only");
    std::fs::create_dir_all(&scratch).expect("mkdir");
    let (ca, _, _) = crate::support::tls::certificate(&scratch, "rotated");
    let rotated = std::fs::read(ca).expect("CA");
    let mut config = configs.get(CONFIGURATION).await.expect("get");
    for hook in config.webhooks.iter_mut().flatten() {
        hook.client_config.ca_bundle = Some(k8s_openapi::ByteString(rotated.clone()));
    }
    configs
        .replace(CONFIGURATION, &PostParams::default(), &config)
        .await
        .expect("the operator rotates the caBundle");
    let after = admin_configs.get(CONFIGURATION).await.expect("get");
    for hook in after.webhooks.iter().flatten() {
        assert_eq!(
            hook.client_config.ca_bundle.as_ref().map(|b| &b.0),
            Some(&rotated)
        );
        assert_eq!(
            hook.client_config.url,
            Some(format!(
                "https://127.0.0.1:{}/validate",
                env.shared.webhook_port
            ))
        );
    }
}

/// Issue 23 item 2: the operator's own status writes pass; the cluster admin (not in the break-glass
/// group) and another admin-like identity are refused a status write, which changes nothing; the
/// break-glass group may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_is_written_by_the_operator_alone_not_by_an_admin() {
    let Some(env) = env("cluster_status_is_written_by_the_operator_alone_not_by_an_admin").await
    else {
        return;
    };
    let ns = "cp-status-a";
    let intent = Intent::new("cp-status");
    intent.add_instance(ns, "app", "s3cret");
    intent.release(&[]);
    intent.commit("release 1");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let audit = Audit::mark(&env.cp.audit_log);
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "the operator's pass: {out}\n{err}");
    let status_writes: Vec<String> = audit
        .writes_by(OPERATOR_USER)
        .into_iter()
        .filter(|w| w.contains(&format!("/clusters/{}/status", scope.name)))
        .collect();
    assert!(
        !status_writes.is_empty() && status_writes.iter().all(|w| w.ends_with("(200)")),
        "the operator's status writes pass: {status_writes:?}"
    );
    let cluster = scope.cluster(&env.admin).await;
    assert_eq!(cluster["status"]["lastAppliedSerial"], 1, "{cluster}");

    // Dropping the serial floor (issue 23 2c), as the admin and as another admin-like identity.
    let tamper = json!({"status": {"lastAppliedSerial": null, "lastAppliedCommit": null}});
    let platform_admin =
        impersonating(&env.cp.kubeconfig, "platform-admin", &["system:masters"]).await;
    for (who, client) in [
        ("the cluster admin", &env.admin),
        ("platform-admin", &platform_admin),
    ] {
        let clusters = dynamic_api(client, OPS, "Cluster", None).await;
        refused_by(
            clusters
                .patch_status(&scope.name, &PatchParams::default(), &Patch::Merge(&tamper))
                .await,
            CLUSTER_STATUS_POLICY,
            who,
        );
    }
    let cluster = scope.cluster(&env.admin).await;
    assert_eq!(
        cluster["status"]["lastAppliedSerial"], 1,
        "unchanged: {cluster}"
    );

    // Break glass (with rights on the status the owner binds to the group) passes admission.
    let break_glass = break_glass_on_cluster_status(&env).await;
    let clusters = dynamic_api(&break_glass, OPS, "Cluster", None).await;
    wait_for("break glass to write the status (dry run)", 30, || async {
        clusters
            .patch_status(&scope.name, &dry_patch(), &Patch::Merge(&tamper))
            .await
            .ok()
    })
    .await;
}

/// Issue 23 item 2, the operator's half, on the real server: break glass (the one writer of a Cluster
/// status besides the operator) puts an inventory bomb on one Cluster's status. One `run --once` over
/// both Clusters then refuses that Cluster alone (`StatusUnreadable`, the raw status never logged) and
/// applies the other one's new release: the real list of Clusters still decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clusters_unreadable_status_fails_that_cluster_alone() {
    let test = "one_clusters_unreadable_status_fails_that_cluster_alone";
    let Some(env) = env(test).await else {
        return;
    };
    let (a, b) = (Intent::new("cp-unread-a"), Intent::new("cp-unread-b"));
    for (intent, ns) in [(&a, "cp-unread-a-ns"), (&b, "cp-unread-b-ns")] {
        intent.add_instance(ns, "app", "one");
        intent.release(&[]);
        intent.commit("release 1");
    }
    let scope_a = Scope::new(&env, &a, &["cp-unread-a-ns"]).await;
    let scope_b = Scope::new(&env, &b, &["cp-unread-b-ns"]).await;
    let _webhook = webhook_replica(&env, &scope_a.dir).await;
    for scope in [&scope_a, &scope_b] {
        let (ok, out, err) = scope.once(&env);
        assert!(ok, "{}: {out}\n{err}", scope.name);
    }
    let break_glass = break_glass_on_cluster_status(&env).await;
    let clusters = dynamic_api(&break_glass, OPS, "Cluster", None).await;
    // What the issue measured: 4 million entries, 8 MiB, claimed by 11 KB.
    let data = base64::engine::general_purpose::STANDARD.encode(vec![0x78u8; 11 * 1024]);
    let bomb = json!({"status": {"compactInventory": {"format": "zlib-lines-v1",
        "count": 4u64 << 20, "size": 8u64 << 20, "data": data}}});
    wait_for("break glass writes the bomb", 30, || async {
        clusters
            .patch_status(&scope_a.name, &PatchParams::default(), &Patch::Merge(&bomb))
            .await
            .ok()
    })
    .await;

    b.add_instance("cp-unread-b-ns", "wiki", "two");
    b.release(&[]);
    b.commit("release 2");
    // Both Clusters in one process, as a deployed operator reconciles them.
    let both = format!(
        "{} in (cp-unread-a,cp-unread-b)",
        super::server::SCOPE_LABEL
    );
    let mut cmd = super::operator_cmd_for(&env, &scope_a.dir, &both);
    cmd.arg("--once");
    let mut once = Proc::spawn(&mut cmd, &scope_a.dir, "both");
    let status = once.wait_timeout(180).expect("run --once ends");
    let log = once.stderr();
    assert!(!status.success(), "one Cluster was refused: {log}");
    assert!(!log.contains(&data[..64]), "the raw status is never logged");
    let b_status = scope_b.cluster(&env.admin).await;
    assert_eq!(b_status["status"]["lastAppliedSerial"], 2, "{b_status}");
    let (ready, reason, message) = scope_a.condition(&env.admin, "Ready").await;
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "StatusUnreadable"),
        "{message}"
    );
    assert!(message.contains("exceeds the limit of 100000"), "{message}");
    assert!(!message.contains(&data[..64]));
    // The refusal reached the status without touching the inventory: the operator does not drop
    // what it cannot read (the owner removes it, as the message says).
    let a_status = scope_a.cluster(&env.admin).await;
    assert_eq!(a_status["status"]["compactInventory"]["count"], 4u64 << 20);
}

/// A Flux tenant's rights in one namespace/// A Flux tenant's rights in one namespace (`flux create tenant` binds cluster-admin there).
async fn namespace_tenant(env: &super::Env, ns: &str, user: &str) -> Client {
    apply(
        &env.admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": format!("tenant-{user}"), "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
    )
    .await
    .expect("the tenant's RoleBinding");
    let tenant = impersonating(&env.cp.kubeconfig, user, &[]).await;
    // A new binding reaches the API server's RBAC cache a moment later: wait until it holds.
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(tenant.clone(), ns);
    wait_for(&format!("{user}'s rights in {ns}"), 30, || async {
        configmaps.list(&Default::default()).await.ok().map(drop)
    })
    .await;
    tenant
}

/// Issue 23 item 4: a namespace editor (a Flux tenant, cluster-admin in its namespace) edits the
/// HelmRelease the operator wrote (retarget, suspend, a postRenderer, a values key) and its values
/// Secret, deletes the HelmRelease, relabels it, plants a look-alike: each refused, nothing changed.
/// What controllers do keeps working: a status write, a finalizer, Flux's reconcile annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_editor_cannot_change_the_children_the_operator_wrote() {
    let test = "a_namespace_editor_cannot_change_the_children_the_operator_wrote";
    let Some(env) = env(test).await else {
        return;
    };
    if env.shared.thirdparty.is_none() {
        skipped(test, "../shared/thirdparty-crds is absent (the Flux CRDs)");
        return;
    }
    let ns = "cp-children-edit-a";
    let intent = Intent::new("cp-children-edit");
    intent.add_instance(ns, "nextcloud", "smtp-secret");
    intent.release(&[]);
    intent.commit("release 1");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "first pass: {out}\n{err}");
    let hr_version = "helm.toolkit.fluxcd.io/v2";
    {
        let mut controllers = Proc::spawn(&mut operator_cmd(&env, &scope.dir), &scope.dir, "run");
        for (api_version, kind, name) in [
            (hr_version, "HelmRelease", "nextcloud"),
            ("v1", "Secret", "nextcloud-values"),
        ] {
            let admin = env.admin.clone();
            wait_for(&format!("{kind} {ns}/{name}"), 60, || {
                let admin = admin.clone();
                async move { get(&admin, api_version, kind, Some(ns), name).await }
            })
            .await;
        }
        controllers.stop();
    }
    let hr_before = get(&env.admin, hr_version, "HelmRelease", Some(ns), "nextcloud")
        .await
        .expect("HelmRelease");
    let secret_before = get(&env.admin, "v1", "Secret", Some(ns), "nextcloud-values")
        .await
        .expect("values Secret");

    let tenant = namespace_tenant(&env, ns, "tenant-editor").await;
    let hr_edits = [
        (
            "retarget it",
            json!({"spec": {"targetNamespace": "kube-system"}}),
        ),
        ("suspend it", json!({"spec": {"suspend": true}})),
        (
            "run it as another account",
            json!({"spec": {"serviceAccountName": "default"}}),
        ),
        (
            "patch what it renders",
            json!({"spec": {"postRenderers": [{"kustomize": {"patches": [{"patch": "- op: add\n  path: /spec/template/spec/hostNetwork\n  value: true\n", "target": {"kind": "Deployment"}}]}}]}}),
        ),
        (
            "override a value",
            json!({"spec": {"values": {"mail": {"password": "mine"}}}}),
        ),
        (
            "take it from the operator",
            json!({"metadata": {"labels": {"app.vworkspace.io/managed-by": null}}}),
        ),
    ];
    for (what, patch) in &hr_edits {
        refused_by(
            merge_patch(
                &tenant,
                hr_version,
                "HelmRelease",
                Some(ns),
                "nextcloud",
                patch,
            )
            .await,
            CHILDREN_POLICY,
            what,
        );
    }
    let values = base64::engine::general_purpose::STANDARD.encode("mail:\n  password: mine\n");
    refused_by(
        merge_patch(
            &tenant,
            "v1",
            "Secret",
            Some(ns),
            "nextcloud-values",
            &json!({"data": {"values.yaml": values}}),
        )
        .await,
        CHILDREN_POLICY,
        "replace the decrypted values",
    );
    let releases = dynamic_api(&tenant, hr_version, "HelmRelease", Some(ns)).await;
    refused_by(
        releases.delete("nextcloud", &DeleteParams::default()).await,
        CHILDREN_POLICY,
        "delete the HelmRelease",
    );
    let secrets = dynamic_api(&tenant, "v1", "Secret", Some(ns)).await;
    refused_by(
        secrets
            .delete("nextcloud-values", &DeleteParams::default())
            .await,
        CHILDREN_POLICY,
        "delete the values Secret",
    );
    let look_alike: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "other-values", "namespace": ns,
                     "labels": {"app.vworkspace.io/managed-by": "vworkspace", "apps.vworkspace.io/instance": "other"}},
        "data": {"values.yaml": values}}))
    .expect("Secret");
    refused_by(
        secrets.create(&PostParams::default(), &look_alike).await,
        CHILDREN_POLICY,
        "plant a Secret labelled as the operator's",
    );
    let hr_after = get(&env.admin, hr_version, "HelmRelease", Some(ns), "nextcloud")
        .await
        .expect("HelmRelease");
    assert_eq!(
        hr_after.data["spec"], hr_before.data["spec"],
        "spec unchanged"
    );
    assert_eq!(hr_after.metadata.labels, hr_before.metadata.labels);
    let secret_after = get(&env.admin, "v1", "Secret", Some(ns), "nextcloud-values")
        .await
        .expect("values Secret");
    assert_eq!(
        secret_after.data["data"], secret_before.data["data"],
        "data unchanged"
    );

    // What Flux and a tenant's tooling still do: the reconcile annotation (the tenant), a finalizer
    // and the status (helm-controller's ServiceAccount).
    merge_patch(
        &tenant,
        hr_version,
        "HelmRelease",
        Some(ns),
        "nextcloud",
        &json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "now"}}}),
    )
    .await
    .expect("the reconcile annotation");
    let flux = namespace_tenant(
        &env,
        ns,
        "system:serviceaccount:flux-system:helm-controller",
    )
    .await;
    merge_patch(
        &flux,
        hr_version,
        "HelmRelease",
        Some(ns),
        "nextcloud",
        &json!({"metadata": {"finalizers": ["finalizers.fluxcd.io"]}}),
    )
    .await
    .expect("helm-controller's finalizer");
    let flux_releases = dynamic_api(&flux, hr_version, "HelmRelease", Some(ns)).await;
    flux_releases
        .patch_status(
            "nextcloud",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .expect("helm-controller's status");
    merge_patch(
        &flux,
        hr_version,
        "HelmRelease",
        Some(ns),
        "nextcloud",
        &json!({"metadata": {"finalizers": null}}),
    )
    .await
    .expect("helm-controller removes its finalizer");
}

/// Issue 23 item 8: the operator's RoleBindings and the runner's ServiceAccount in a managed namespace
/// are the operator's alone. A namespace admin (a Flux tenant) cannot delete or re-point them, nor
/// delete the runner's account; its own bindings stay its business. Break glass may delete one; the
/// operator's next write refused for lack of rights there (a new release's instance) brings it back at
/// once, not within the hour ([`vworkspace_controller::access_lost`]), and the release is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_rights_in_a_namespace_are_its_alone_and_come_back_at_once() {
    let test = "the_operators_rights_in_a_namespace_are_its_alone_and_come_back_at_once";
    let Some(env) = env(test).await else {
        return;
    };
    if env.shared.thirdparty.is_none() {
        skipped(test, "../shared/thirdparty-crds is absent (the Flux CRDs)");
        return;
    }
    let ns = "cp-rbac-own-a";
    let intent = Intent::new("cp-rbac-own");
    intent.add_instance(ns, "nextcloud", "smtp-secret");
    intent.release(&[]);
    intent.commit("release 1");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let (ok, out, err) = scope.once(&env);
    assert!(ok, "first pass: {out}\n{err}");

    let tenant = namespace_tenant(&env, ns, "tenant-rbac").await;
    let rbac = "rbac.authorization.k8s.io/v1";
    let bindings = dynamic_api(&tenant, rbac, "RoleBinding", Some(ns)).await;
    refused_by(
        bindings
            .delete("vworkspace-app-operator", &DeleteParams::default())
            .await,
        RBAC_POLICY,
        "delete the operator's RoleBinding",
    );
    refused_by(
        merge_patch(
            &tenant,
            rbac,
            "RoleBinding",
            Some(ns),
            "vworkspace-operation-runner",
            &json!({"subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}),
        )
        .await,
        RBAC_POLICY,
        "give the runner's rights to another account",
    );
    let accounts = dynamic_api(&tenant, "v1", "ServiceAccount", Some(ns)).await;
    refused_by(
        accounts
            .delete("vworkspace-operation-runner", &DeleteParams::default())
            .await,
        RBAC_POLICY,
        "delete the runner's ServiceAccount",
    );
    let own: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": rbac, "kind": "RoleBinding",
        "metadata": {"name": "tenant-own", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "someone"}]}))
    .expect("RoleBinding");
    bindings
        .create(&dry_post(), &own)
        .await
        .expect("the tenant's own bindings stay its business");

    let mut controllers = Proc::spawn(&mut operator_cmd(&env, &scope.dir), &scope.dir, "run");
    let hr_version = "helm.toolkit.fluxcd.io/v2";
    let admin = env.admin.clone();
    wait_for(
        "HelmRelease nextcloud from the running operator",
        90,
        || {
            let admin = admin.clone();
            async move { get(&admin, hr_version, "HelmRelease", Some(ns), "nextcloud").await }
        },
    )
    .await;
    let break_glass = impersonating(
        &env.cp.kubeconfig,
        "break-glass-admin",
        &["system:masters", BREAK_GLASS_GROUP],
    )
    .await;
    dynamic_api(&break_glass, rbac, "RoleBinding", Some(ns))
        .await
        .delete("vworkspace-app-operator", &DeleteParams::default())
        .await
        .expect("break glass may delete it");
    // The API server's RBAC cache follows a moment later: the operator's rights there are gone.
    let operator = client_from(&env.shared.operator_kubeconfig).await;
    let releases = dynamic_api(&operator, hr_version, "HelmRelease", Some(ns)).await;
    wait_for("the operator refused in the namespace", 30, || async {
        match releases.list(&Default::default()).await {
            Err(kube::Error::Api(s)) if s.code == 403 => Some(()),
            _ => None,
        }
    })
    .await;

    // Release 2 adds an instance: its children are written with the rights the deleted binding gave.
    intent.add_instance(ns, "wiki", "two");
    intent.release(&[]);
    intent.commit("release 2");
    let reconcile = std::process::Command::new(super::BIN)
        .args(["reconcile", "--cluster", "cp-rbac-own"])
        .env("KUBECONFIG", &env.cp.kubeconfig)
        .output()
        .expect("reconcile runs");
    assert!(
        reconcile.status.success(),
        "{}",
        String::from_utf8_lossy(&reconcile.stderr)
    );
    let admin = env.admin.clone();
    wait_for("the operator's RoleBinding back", 90, || {
        let admin = admin.clone();
        async move {
            get(
                &admin,
                rbac,
                "RoleBinding",
                Some(ns),
                "vworkspace-app-operator",
            )
            .await
        }
    })
    .await;
    let admin = env.admin.clone();
    wait_for("HelmRelease wiki of release 2", 120, || {
        let admin = admin.clone();
        async move { get(&admin, hr_version, "HelmRelease", Some(ns), "wiki").await }
    })
    .await;
    let log = controllers.stderr();
    assert!(
        log.contains("the Cluster pass checks its RBAC again now")
            && log.contains("checking the RBAC of namespaces where a child controller was refused"),
        "brought back by the refusal, not a timer: {log}"
    );
    controllers.stop();
}

/// Issue 23 item 8: the exemptions of the instance and children policies hold under both of
/// kube-controller-manager's credential modes: with --use-service-account-credentials each controller
/// is its own ServiceAccount (namespace-controller, generic-garbage-collector), without it all are
/// `system:kube-controller-manager`. Each may delete (dry run) an ApplicationInstance and a values
/// Secret in a managed namespace; anyone else with the same rights may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespace_controller_and_garbage_collector_are_exempt_in_both_credential_modes() {
    let Some(env) =
        env("the_namespace_controller_and_garbage_collector_are_exempt_in_both_credential_modes")
            .await
    else {
        return;
    };
    let ns = "cp-exempt-a";
    let intent = Intent::new("cp-exempt");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let break_glass = break_glass_client(&env.admin, &env.cp.kubeconfig).await;
    apply(
        &break_glass,
        &json!({"apiVersion": AI, "kind": "ApplicationInstance",
               "metadata": {"name": "exempt", "namespace": ns},
               "spec": {"chart": {"repository": "https://charts.example.org/", "name": "app", "version": "1.0.0"},
                        "values": {"host": "exempt.example.org"}}}),
    )
    .await
    .expect("an instance, by break glass");
    // A values Secret as the operator writes it (its labels), here by the admin in the break-glass
    // group.
    let admin_break_glass = impersonating(
        &env.cp.kubeconfig,
        "break-glass-admin",
        &["system:masters", BREAK_GLASS_GROUP],
    )
    .await;
    apply(
        &admin_break_glass,
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "exempt-values", "namespace": ns,
                             "labels": {"app.vworkspace.io/managed-by": "vworkspace", "apps.vworkspace.io/instance": "exempt"}},
                "stringData": {"values.yaml": "{}"}}),
    )
    .await
    .expect("a values Secret, by break glass");

    let delete_both = |client: Client| async move {
        let instances = dynamic_api(&client, AI, "ApplicationInstance", Some(ns)).await;
        let secrets = dynamic_api(&client, "v1", "Secret", Some(ns)).await;
        (
            instances.delete("exempt", &dry_delete()).await.map(drop),
            secrets
                .delete("exempt-values", &dry_delete())
                .await
                .map(drop),
        )
    };
    for user in [
        "system:serviceaccount:kube-system:namespace-controller",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:kube-controller-manager",
    ] {
        // system:masters for the RBAC rights: the policies look at the user name alone.
        let client = impersonating(&env.cp.kubeconfig, user, &["system:masters"]).await;
        let (instance, secret) = delete_both(client).await;
        instance.unwrap_or_else(|e| panic!("{user} deletes the instance: {e}"));
        secret.unwrap_or_else(|e| panic!("{user} deletes the values Secret: {e}"));
    }
    let someone = impersonating(&env.cp.kubeconfig, "someone", &["system:masters"]).await;
    let (instance, secret) = delete_both(someone).await;
    refused_by(instance, INSTANCES_POLICY, "someone deletes the instance");
    refused_by(secret, CHILDREN_POLICY, "someone deletes the values Secret");
}

/// A Pod of the operator's ServiceAccount in vworkspace-system (no scheduler runs: it is never
/// started), and a kubeconfig whose token is bound to it, so that the API server adds
/// `authentication.kubernetes.io/pod-name` to the requests made with it, as for a replica's mounted
/// token.
async fn replica_kubeconfig(
    admin: &Client,
    admin_kubeconfig: &Path,
    pod: &str,
    dir: &Path,
) -> PathBuf {
    let body = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "namespace": SYSTEM},
        "spec": {"serviceAccountName": "vworkspace-app-operator", "automountServiceAccountToken": false,
                 "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{"name": "operator", "image": "ghcr.io/vworkspace/vworkspace-operator:0.1.0",
                                 "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
    let created = apply(admin, &body).await.expect("the replica's Pod");
    let uid = created.metadata.uid.expect("uid");
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), SYSTEM);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}}});
    let response: Value = accounts
        .create_subresource(
            "token",
            "vworkspace-app-operator",
            &PostParams::default(),
            &request,
        )
        .await
        .expect("a token bound to the Pod");
    let token = response["status"]["token"].as_str().expect("token");
    let (server, ca) = server_and_ca(admin_kubeconfig);
    let out = dir.join(format!("{pod}.kubeconfig"));
    std::fs::write(
        &out,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: control-plane\n    cluster:\n      server: {server}\n      certificate-authority: {ca}\nusers:\n  - name: {pod}\n    user:\n      token: {token}\ncontexts:\n  - name: replica\n    context: {{cluster: control-plane, user: {pod}}}\ncurrent-context: replica\n"
        ),
    )
    .expect("write the replica's kubeconfig");
    out
}

/// Deletes the replicas' Pods and the Lease, also when the test fails.
struct Replicas {
    kubeconfig: PathBuf,
    pods: Vec<String>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        let kubeconfig = self.kubeconfig.clone();
        let pods = std::mem::take(&mut self.pods);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = client_from(&kubeconfig).await;
                for pod in pods {
                    delete(&client, "v1", "Pod", Some(SYSTEM), &pod).await;
                }
                delete(
                    &client,
                    "coordination.k8s.io/v1",
                    "Lease",
                    Some(SYSTEM),
                    LEASE,
                )
                .await;
            });
        })
        .join();
    }
}

/// The Lease, held by `holder` (written by the admin, as a replica acquiring it would).
async fn hold_lease(admin: &Client, holder: &str) {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    apply(
        admin,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE, "namespace": SYSTEM},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                         "acquireTime": now, "renewTime": now}}),
    )
    .await
    .expect("the Lease");
}

/// Each object's name and resourceVersion: any write that lands changes it.
async fn versions(
    api: &Api<kube::api::DynamicObject>,
) -> std::collections::BTreeMap<String, String> {
    api.list(&kube::api::ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|o| {
            (
                o.metadata.name.unwrap_or_default(),
                o.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

/// The operator's RoleBinding in `ns`, created as a dry run (nothing is written).
async fn dry_run_binding(client: &Client, ns: &str) -> Result<(), kube::Error> {
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(client.clone(), ns);
    let binding = serde_json::from_value(operator_binding(ns)).expect("RoleBinding");
    bindings.create(&dry_post(), &binding).await.map(drop)
}

/// Issue 23 item 7, the rule: a replica's write (its token bound to its Pod) is admitted only while
/// the Lease names that Pod; the election itself, the webhook's caBundle and its certificate Secret
/// stay open to every replica; a token bound to no Pod is not fenced; without a Lease nothing is held
/// up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_admits_a_replicas_writes_only_while_it_holds_the_lease() {
    let Some(env) =
        env("the_api_server_admits_a_replicas_writes_only_while_it_holds_the_lease").await
    else {
        return;
    };
    let ns = "cp-fence-rule-a";
    let intent = Intent::new("cp-fence-rule");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    let _replicas = Replicas {
        kubeconfig: env.cp.kubeconfig.clone(),
        pods: vec!["replica-a".into(), "replica-b".into()],
    };
    let a = client_from(
        &replica_kubeconfig(&env.admin, &env.cp.kubeconfig, "replica-a", &scope.dir).await,
    )
    .await;
    let b = client_from(
        &replica_kubeconfig(&env.admin, &env.cp.kubeconfig, "replica-b", &scope.dir).await,
    )
    .await;
    let unbound = client_from(&env.shared.operator_kubeconfig).await;

    hold_lease(&env.admin, "replica-a").await;
    // The API server's policy sees a new Lease a moment after it is written (until then there is
    // none, and without one the fence admits).
    wait_for("the fence to see the Lease", 30, || async {
        dry_run_binding(&b, ns).await.err()
    })
    .await;
    dry_run_binding(&a, ns).await.expect("the holder writes");
    let message = refused_by(
        dry_run_binding(&b, ns).await,
        FENCE_POLICY,
        "replica-b writes",
    );
    assert!(
        message.contains("replica-b") && message.contains("held by replica-a"),
        "{message}"
    );
    dry_run_binding(&unbound, ns)
        .await
        .expect("a token bound to no Pod is not a replica: not fenced");

    // What a standby still writes: the Lease (to take it over), the caBundle, the certificate Secret.
    let leases: Api<Lease> = Api::namespaced(b.clone(), SYSTEM);
    let mut lease = leases.get(LEASE).await.expect("replica-b reads the Lease");
    leases
        .replace(LEASE, &dry_post(), &lease)
        .await
        .expect("replica-b may write the Lease");
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(b.clone());
    let config = configs.get(CONFIGURATION).await.expect("get");
    configs
        .replace(CONFIGURATION, &dry_post(), &config)
        .await
        .expect("replica-b may set the caBundle");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(b.clone(), SYSTEM);
    let tls: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "vworkspace-app-operator-webhook-tls", "namespace": SYSTEM},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": "", "tls.key": ""}}))
    .expect("Secret");
    match secrets.create(&dry_post(), &tls).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("replica-b may write the webhook's certificate Secret: {e}"),
    }

    // replica-b takes the Lease over: now replica-a is refused.
    lease
        .spec
        .get_or_insert_with(Default::default)
        .holder_identity = Some("replica-b".into());
    Api::<Lease>::namespaced(env.admin.clone(), SYSTEM)
        .replace(LEASE, &PostParams::default(), &lease)
        .await
        .expect("the Lease taken over");
    wait_for("the fence to follow the Lease", 30, || async {
        dry_run_binding(&a, ns).await.err()
    })
    .await;
    refused_by(
        dry_run_binding(&a, ns).await,
        FENCE_POLICY,
        "replica-a after the takeover",
    );
    dry_run_binding(&b, ns)
        .await
        .expect("the new holder writes");

    // No Lease (deleted; the elector makes it before its first write): admitted, as it must be for
    // everyone else (the API server looks the Lease up before the match conditions).
    delete(
        &env.admin,
        "coordination.k8s.io/v1",
        "Lease",
        Some(SYSTEM),
        LEASE,
    )
    .await;
    wait_for("the fence without a Lease", 30, || async {
        dry_run_binding(&a, ns).await.ok()
    })
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.admin.clone(), ns);
    let admin_secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "admin-secret", "namespace": ns}, "stringData": {"k": "v"}}))
    .expect("Secret");
    secrets
        .create(&dry_post(), &admin_secret)
        .await
        .expect("without a Lease the admin still writes Secrets");
}

/// Issue 23 item 7, the paused leader of `a_leader_paused_mid_pass_writes_nothing_after_its_lease_is_gone`
/// with a token bound to its Pod, as in a Deployment: paused mid-pass, the Lease taken over, resumed;
/// the writes it had in flight reach the API server and are refused there. Zero land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leaders_writes_sent_after_the_takeover_are_refused_by_the_api_server() {
    let Some(env) =
        env("a_paused_leaders_writes_sent_after_the_takeover_are_refused_by_the_api_server").await
    else {
        return;
    };
    let ns = "cp-fence-server-a";
    let intent = Intent::new("cp-fence-server");
    intent.add_instance(ns, "seed", "zero");
    intent.release(&[]);
    intent.commit("release 1");
    let scope = Scope::new(&env, &intent, &[ns]).await;
    delete(
        &env.admin,
        "coordination.k8s.io/v1",
        "Lease",
        Some(SYSTEM),
        LEASE,
    )
    .await;
    let _replicas = Replicas {
        kubeconfig: env.cp.kubeconfig.clone(),
        pods: vec!["replica-a".into()],
    };
    let kubeconfig =
        replica_kubeconfig(&env.admin, &env.cp.kubeconfig, "replica-a", &scope.dir).await;
    let _webhook = webhook_replica(&env, &scope.dir).await;
    let dir = scope.dir.join("leader");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = operator_cmd(&env, &dir);
    cmd.arg("--leader-election")
        .env("POD_NAME", "replica-a")
        .env("KUBECONFIG", &kubeconfig);
    let mut leader = Proc::spawn(&mut cmd, &dir, "leader");
    wait_for("the first release applied by the leader", 90, || async {
        (scope.cluster(&env.admin).await["status"]["lastAppliedSerial"] == 1).then_some(())
    })
    .await;

    let total = 400;
    for i in 0..total {
        intent.add_instance(ns, &format!("app-{i:03}"), "x");
    }
    intent.release(&[]);
    intent.commit("release 2: many instances");
    let audit = Audit::mark(&env.cp.audit_log);
    merge_patch(
        &env.admin,
        OPS,
        "Cluster",
        None,
        &scope.name,
        &json!({"metadata": {"annotations": {"gitops.vworkspace.io/requested-at": "server-fence"}}}),
    )
    .await
    .expect("touch the Cluster");
    wait_for(
        "the leader's pass to start writing instances",
        120,
        || async {
            audit
                .writes_by(OPERATOR_USER)
                .iter()
                .any(|w| w.contains("/applicationinstances/app-"))
                .then_some(())
        },
    )
    .await;
    super::leader::signal_group(&leader, "-STOP");
    hold_lease(&env.admin, "usurper").await;
    // The API server's policy sees the new holder a moment after it is written. Only the fence's
    // own refusal says so: any other error (a timeout, a 429 under load) proves nothing.
    let probe = client_from(&kubeconfig).await;
    wait_for("the fence to see the new holder", 30, || async {
        match dry_run_binding(&probe, ns).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("held by usurper") => {
                Some(())
            }
            _ => None,
        }
    })
    .await;
    // What the old leader had written, once its writes still inside the API server are done (two
    // reads alike, half a second apart): nothing else writes instances here, so any change after
    // this is a write of the old leader that landed.
    let instances = dynamic_api(&env.admin, AI, "ApplicationInstance", Some(ns)).await;
    let before = wait_for("the paused leader's last writes to settle", 30, || async {
        let first = versions(&instances).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        (versions(&instances).await == first).then_some(first)
    })
    .await;
    let resumed = jiff::Timestamp::now();
    super::leader::signal_group(&leader, "-CONT");
    let status = leader.wait_timeout(60);
    println!(
        "the old leader stopped {:?} after the resume",
        jiff::Timestamp::now().duration_since(resumed)
    );
    let stderr = leader.stderr_tail(40);
    assert!(
        status.is_some(),
        "the old leader stops after it lost the Lease; its last lines: {stderr}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late: Vec<(String, i64)> = audit
        .since()
        .iter()
        .filter(|e| e["user"]["username"] == OPERATOR_USER)
        .filter(|e| e["user"]["extra"]["authentication.kubernetes.io/pod-name"][0] == "replica-a")
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
        .filter(|e| super::leader::received(e) >= resumed)
        .filter(|e| {
            !e["objectRef"]["resource"]
                .as_str()
                .is_some_and(|r| r == "leases" || r == "events")
        })
        .map(|e| {
            (
                format!(
                    "{} {} {}",
                    e["requestReceivedTimestamp"].as_str().unwrap_or_default(),
                    e["verb"].as_str().unwrap_or_default(),
                    e["requestURI"].as_str().unwrap_or_default()
                ),
                e["responseStatus"]["code"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    println!("the old leader's writes received after the resume: {late:#?}");
    assert!(
        !late.is_empty(),
        "the old leader sent writes after the takeover (the ones it had in flight at the pause); \
         without them this test proves nothing: its last lines: {stderr}"
    );
    let landed: Vec<&(String, i64)> = late.iter().filter(|(_, code)| *code < 400).collect();
    assert!(
        landed.is_empty(),
        "writes of the old leader admitted after the takeover: {landed:#?}\nits last lines: {stderr}"
    );
    // 403: refused by the fence. 504: still inside the API server when the old leader exited (its
    // connection gone, the API server ends the request); such a write cannot be admitted either,
    // and the instances below show that none landed.
    let otherwise: Vec<&(String, i64)> = late
        .iter()
        .filter(|(_, code)| *code != 403 && *code != 504)
        .collect();
    assert!(
        otherwise.is_empty(),
        "each refused by the fence (403) or cut off by the old leader's exit (504), these were not: {otherwise:#?}"
    );
    assert_eq!(
        versions(&instances).await,
        before,
        "no instance was created or changed after the takeover"
    );
    let holder = Api::<Lease>::namespaced(env.admin.clone(), SYSTEM)
        .get_opt(LEASE)
        .await
        .expect("get Lease")
        .and_then(|l| l.spec?.holder_identity);
    assert_eq!(
        holder.as_deref(),
        Some("usurper"),
        "the Lease is not taken back"
    );
}
