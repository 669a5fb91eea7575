//! `check`: is this cluster ready for the operator, and is the operator's install whole (like
//! `flux check --pre`)? One line a check, `ok`, `warn` (optional, the consequence said) or `FAIL`
//! (needed); exit 1 when a check fails.
//!
//! Checks, with the caller's kubeconfig (`--as` impersonates, e.g. the operator's ServiceAccount, to
//! check its rights rather than yours): the API server's version (1.30+, for the admission
//! policies), the CRDs (the operator's and Flux's needed; Velero's, CSI snapshots' and Argo
//! Workflows' optional, each naming the Operation types that cannot run without it), the operator's
//! rights (SelfSubjectAccessReviews for each request it makes), the webhook (configured, with a CA
//! bundle, and answering through the API server: a dry-run that it must deny), and each `Cluster`'s
//! trust ConfigMaps and identity Secret (present and parseable) and its Git source (fetched).

use std::io::Write;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use crate::authoring::inputs::io_error;
use crate::authoring::{CliError, ExitCode};
use vworkspace_core::crd::{Cluster, GitSourceRef};

/// The oldest Kubernetes the operator supports (ValidatingAdmissionPolicy v1).
pub const MIN_MINOR: u32 = 30;

/// `check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The operator's namespace (its Secrets, ConfigMaps, Lease).
    #[arg(long, default_value = "vworkspace-system")]
    pub namespace: String,
    /// The operator's ValidatingWebhookConfiguration.
    #[arg(long, default_value = "vworkspace-app-operator")]
    pub webhook_configuration: String,
    /// The Secret holding the webhook's own certificate (deploy/'s `--webhook-cert-secret`).
    #[arg(long, default_value = "vworkspace-app-operator-webhook-tls")]
    pub webhook_cert_secret: String,
    /// Where Velero runs.
    #[arg(long, default_value = "velero")]
    pub velero_namespace: String,
    /// Check as this user (impersonation, as `kubectl --as`), e.g.
    /// system:serviceaccount:vworkspace-system:vworkspace-app-operator.
    #[arg(long = "as")]
    pub as_user: Option<String>,
    /// Only what can be checked before installing: version, CRDs (no rights, webhook or Clusters).
    #[arg(long)]
    pub pre: bool,
    /// Time limit of each Git fetch: seconds.
    #[arg(long, default_value_t = 60)]
    pub fetch_timeout: u64,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Ok,
    /// Optional and missing: the line says what then cannot run.
    Warn,
    /// Needed and missing.
    Fail,
}

struct Report<'a> {
    out: &'a mut dyn Write,
    failed: bool,
}

impl Report<'_> {
    fn line(&mut self, outcome: Outcome, what: &str, detail: &str) -> Result<(), CliError> {
        let mark = match outcome {
            Outcome::Ok => "ok  ",
            Outcome::Warn => "warn",
            Outcome::Fail => {
                self.failed = true;
                "FAIL"
            }
        };
        writeln!(self.out, "{mark} {what}: {detail}").map_err(io_error)
    }
}

/// Parses the `minor` the API server reports ("30", "30+").
pub fn minor_version(minor: &str) -> Option<u32> {
    let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A CRD the operator uses: its name, and what cannot run without it (`None`: needed).
pub const CRDS: &[(&str, Option<&str>)] = &[
    ("applicationinstances.apps.vworkspace.io", None),
    ("operations.ops.vworkspace.io", None),
    ("clusters.ops.vworkspace.io", None),
    ("helmreleases.helm.toolkit.fluxcd.io", None),
    ("helmrepositories.source.toolkit.fluxcd.io", None),
    ("ocirepositories.source.toolkit.fluxcd.io", None),
    (
        "backups.velero.io",
        Some("Operations of type Backup cannot run (install Velero)"),
    ),
    (
        "restores.velero.io",
        Some("Operations of type Restore cannot run (install Velero)"),
    ),
    (
        "volumesnapshots.snapshot.storage.k8s.io",
        Some(
            "Operations of type Snapshot cannot run (install the CSI snapshot CRDs and controller)",
        ),
    ),
    (
        "workflows.argoproj.io",
        Some("Operations of type Workflow cannot run (install Argo Workflows)"),
    ),
    (
        "workflowtemplates.argoproj.io",
        Some("Operations of type Workflow cannot run (install Argo Workflows)"),
    ),
];

/// One request the operator makes: (verb, API group, resource, namespace, name, needed).
type Right = (
    &'static str,
    &'static str,
    &'static str,
    Option<String>,
    Option<String>,
    bool,
);

fn rights(args: &CheckArgs) -> Vec<Right> {
    const OPS: &str = "ops.vworkspace.io";
    const RBAC: &str = "rbac.authorization.k8s.io";
    let any = |verb, group, resource| (verb, group, resource, None, None, true);
    let here = |verb, group, resource| {
        (
            verb,
            group,
            resource,
            Some(args.namespace.clone()),
            None,
            true,
        )
    };
    let named = |verb, group, resource, name: &str| {
        (verb, group, resource, None, Some(name.to_owned()), true)
    };
    let mut rights: Vec<Right> = Vec::new();
    for resource in ["clusters", "operations"] {
        for verb in ["list", "watch", "patch"] {
            rights.push(any(verb, OPS, resource));
        }
    }
    rights.push(any("patch", OPS, "clusters/status"));
    for verb in ["list", "watch", "create", "patch", "delete"] {
        rights.push(any(verb, "apps.vworkspace.io", "applicationinstances"));
    }
    rights.push(any(
        "get",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
    ));
    rights.push(any("watch", "", "namespaces"));
    rights.push(here("create", "", "events"));
    for verb in ["get", "create", "update"] {
        rights.push(here(verb, "coordination.k8s.io", "leases"));
    }
    rights.push(here("get", "", "secrets"));
    rights.push(here("get", "", "configmaps"));
    rights.push(here("create", "", "secrets"));
    let mut cert_secret = here("update", "", "secrets");
    cert_secret.4 = Some(args.webhook_cert_secret.clone());
    rights.push(cert_secret);
    for verb in ["get", "update"] {
        rights.push(named(
            verb,
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            &args.webhook_configuration,
        ));
    }
    rights.push(any("create", RBAC, "rolebindings"));
    rights.push(named(
        "bind",
        RBAC,
        "clusterroles",
        "vworkspace-app-operator-namespace",
    ));
    rights.push(any("create", "", "serviceaccounts"));
    // Optional: Velero's Role (the Velero component).
    let velero = Some(args.velero_namespace.clone());
    rights.push(("create", "velero.io", "backups", velero, None, false));
    rights
}

fn git_ref(reference: &GitSourceRef) -> vworkspace_core::repository::GitRef {
    use vworkspace_core::repository::GitRef;
    match reference {
        GitSourceRef::Branch(b) => GitRef::Branch(b.clone()),
        GitSourceRef::Tag(t) => GitRef::Tag(t.clone()),
        GitSourceRef::Commit(c) => GitRef::Commit(c.to_ascii_lowercase()),
    }
}

/// `check`: a client from the caller's kubeconfig (impersonating `--as`), then [`check_with_client`].
pub fn check(args: &CheckArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    // Two rustls crypto providers are compiled in: choose one, or the first TLS client panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_error)?;
    runtime.block_on(async {
        let mut config = kube::Config::infer().await.map_err(|e| {
            CliError::Io(format!(
                "cannot find a kubeconfig or in-cluster config: {e}"
            ))
        })?;
        if let Some(user) = &args.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        let client = Client::try_from(config)
            .map_err(|e| CliError::Io(format!("cannot build a client: {e}")))?;
        check_with_client(args, client, out).await
    })
}

/// Runs every check with `client`, one line each; exit 1 when a needed one fails.
pub async fn check_with_client(
    args: &CheckArgs,
    client: Client,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let mut report = Report { out, failed: false };
    let r = &mut report;
    if !api_server(&client, r).await? {
        return Ok(1);
    }
    crds(&client, r).await?;
    if args.pre {
        return Ok(if report.failed { 1 } else { 0 });
    }
    operator_rights(args, &client, r).await?;
    webhook(args, &client, r).await?;
    // Each Cluster: trust inputs and Git source.
    let clusters: Api<Cluster> = Api::all(client.clone());
    match clusters.list(&ListParams::default()).await {
        Ok(list) if list.items.is_empty() => {
            r.line(
                Outcome::Ok,
                "Clusters",
                "none yet (docs/operating.md, first hour)",
            )?;
        }
        Ok(list) => {
            for cluster in list.items {
                cluster_checks(args, &client, &cluster, r).await?;
            }
        }
        Err(e) => r.line(Outcome::Fail, "Clusters", &format!("cannot list: {e}"))?,
    }
    Ok(if report.failed { 1 } else { 0 })
}

/// The API server and its version; false when it cannot be reached (nothing else is checked).
async fn api_server(client: &Client, r: &mut Report<'_>) -> Result<bool, CliError> {
    match client.apiserver_version().await {
        Ok(info) => {
            let minor = minor_version(&info.minor);
            let supported = info.major == "1" && minor.is_some_and(|m| m >= MIN_MINOR);
            r.line(
                if supported {
                    Outcome::Ok
                } else {
                    Outcome::Fail
                },
                "Kubernetes version",
                &format!("{} (needs 1.{MIN_MINOR} or newer)", info.git_version),
            )?;
            Ok(true)
        }
        Err(e) => {
            r.line(Outcome::Fail, "API server", &format!("unreachable: {e}"))?;
            Ok(false)
        }
    }
}

async fn crds(client: &Client, r: &mut Report<'_>) -> Result<(), CliError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (name, without) in CRDS {
        let (outcome, detail) = match crds.get_opt(name).await {
            Ok(Some(_)) => (Outcome::Ok, "present".to_owned()),
            Ok(None) => match without {
                None => (Outcome::Fail, "missing: the operator needs it".to_owned()),
                Some(consequence) => (Outcome::Warn, format!("missing: {consequence}")),
            },
            Err(e) => (Outcome::Fail, format!("cannot read: {e}")),
        };
        r.line(outcome, &format!("CRD {name}"), &detail)?;
    }
    Ok(())
}

/// The access review of one right.
fn review_of(right: &Right) -> SelfSubjectAccessReview {
    let (verb, group, resource, namespace, name, _) = right;
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some((*verb).into()),
                group: Some((*group).into()),
                resource: Some(resource.split('/').next().unwrap_or(resource).into()),
                subresource: resource.split_once('/').map(|(_, s)| s.to_owned()),
                namespace: namespace.clone(),
                name: name.clone(),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    }
}

/// One right in words: `get secrets in vworkspace-system`.
fn described(right: &Right) -> String {
    let (verb, group, resource, namespace, name, _) = right;
    format!(
        "{verb} {resource}{}{}{}",
        if group.is_empty() { "" } else { "." },
        group,
        match (namespace, name) {
            (Some(ns), Some(n)) => format!(" {ns}/{n}"),
            (Some(ns), None) => format!(" in {ns}"),
            (None, Some(n)) => format!(" {n}"),
            (None, None) => String::new(),
        }
    )
}

/// Asks the API server, one access review per right, whether the caller may make every kind of
/// request the operator makes.
async fn operator_rights(
    args: &CheckArgs,
    client: &Client,
    r: &mut Report<'_>,
) -> Result<(), CliError> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let who = args.as_user.as_deref().unwrap_or("you");
    let mut missing = Vec::new();
    let mut missing_optional = Vec::new();
    let mut checked = 0;
    for right in rights(args) {
        let described = described(&right);
        checked += 1;
        match reviews
            .create(&PostParams::default(), &review_of(&right))
            .await
        {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) if right.5 => missing.push(described),
            Ok(_) => missing_optional.push(described),
            Err(e) => missing.push(format!("{described} (cannot ask: {e})")),
        }
    }
    if missing.is_empty() {
        r.line(
            Outcome::Ok,
            "operator rights",
            &format!(
                "{who} may make all {} kinds of request the operator makes",
                checked - missing_optional.len()
            ),
        )?;
    } else {
        r.line(
            Outcome::Fail,
            "operator rights",
            &format!("{who} may not: {} (apply deploy/; check with --as system:serviceaccount:{}:vworkspace-app-operator)", missing.join(", "), args.namespace),
        )?;
    }
    if !missing_optional.is_empty() {
        r.line(
            Outcome::Warn,
            "Velero rights",
            &format!(
                "{who} may not {}: Backup and Restore Operations cannot run (apply deploy/components/velero)",
                missing_optional.join(", ")
            ),
        )?;
    }
    Ok(())
}

async fn webhook(args: &CheckArgs, client: &Client, r: &mut Report<'_>) -> Result<(), CliError> {
    let what = format!("webhook {}", args.webhook_configuration);
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let config = match configs.get_opt(&args.webhook_configuration).await {
        Ok(Some(config)) => config,
        Ok(None) => {
            return r.line(
                Outcome::Fail,
                &what,
                "not installed (kubectl apply -k deploy/)",
            );
        }
        Err(e) => return r.line(Outcome::Fail, &what, &format!("cannot read: {e}")),
    };
    let hooks = config.webhooks.unwrap_or_default();
    let Some(first) = hooks.first().filter(|_| {
        hooks.iter().all(|h| {
            h.client_config
                .ca_bundle
                .as_ref()
                .is_some_and(|b| !b.0.is_empty())
        })
    }) else {
        return r.line(
            Outcome::Fail,
            &what,
            "no caBundle yet: the operator writes it when it starts (is it running? kubectl -n vworkspace-system logs deploy/vworkspace-app-operator)",
        );
    };
    // Answering through the API server: a dry run of what it must deny, in a managed namespace.
    let namespace = match probe_namespace(client).await {
        Ok(namespace) => namespace,
        Err(e) => {
            return r.line(
                Outcome::Fail,
                &what,
                &format!("cannot list namespaces: {e}"),
            );
        }
    };
    let Some(namespace) = namespace else {
        return r.line(
            Outcome::Warn,
            &what,
            "caBundle set; not probed: no managed namespace yet",
        );
    };
    probe_webhook(args, client, &first.name, &namespace, &what, r).await
}

/// A managed namespace to probe in; a namespace being deleted refuses every create before any
/// webhook is asked.
async fn probe_namespace(client: &Client) -> Result<Option<String>, kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let list = namespaces
        .list(
            &ListParams::default()
                .labels("app.vworkspace.io/managed-by=vworkspace")
                .limit(50),
        )
        .await?;
    Ok(list
        .items
        .into_iter()
        .find(|n| {
            n.metadata.deletion_timestamp.is_none()
                && n.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
        })
        .and_then(|n| n.metadata.name))
}

/// A dry-run create of what the webhook `hook` must deny (a literal credential in values).
async fn probe_webhook(
    args: &CheckArgs,
    client: &Client,
    hook: &str,
    namespace: &str,
    what: &str,
    r: &mut Report<'_>,
) -> Result<(), CliError> {
    let probe: vworkspace_core::crd::ApplicationInstance = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps.vworkspace.io/v1alpha1", "kind": "ApplicationInstance",
        "metadata": {"name": "vworkspace-check-probe", "namespace": namespace},
        "spec": {"chart": {"repository": "https://charts.example.org/", "name": "probe", "version": "0.0.0"},
                 "values": {"probe": {"password": "not-a-secret"}}}
    }))
    .map_err(|e| CliError::Io(format!("the webhook probe: {e}")))?;
    let api: Api<vworkspace_core::crd::ApplicationInstance> =
        Api::namespaced(client.clone(), namespace);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&dry_run, &probe).await {
        Err(e) if e.to_string().contains(hook) && !e.to_string().contains("failed calling webhook") => r.line(
            Outcome::Ok,
            what,
            &format!("answers through the API server (denied a dry-run probe in {namespace})"),
        ),
        Err(e) if e.to_string().contains("vworkspace-managed-from-git") => r.line(
            Outcome::Warn,
            what,
            &format!("caBundle set; not probed: the admission policy refuses you first in {namespace} (check with --as system:serviceaccount:{}:vworkspace-app-operator)", args.namespace),
        ),
        Err(e) => r.line(Outcome::Fail, what, &format!("not answering: {e}")),
        Ok(_) => r.line(
            Outcome::Fail,
            what,
            &format!("admitted a dry-run literal credential in {namespace}: the webhook is not in force"),
        ),
    }
}

async fn cluster_checks(
    args: &CheckArgs,
    client: &Client,
    cluster: &Cluster,
    r: &mut Report<'_>,
) -> Result<(), CliError> {
    let name = kube::ResourceExt::name_any(cluster);
    let spec = &cluster.spec;
    let what = format!("Cluster {name} trust inputs");
    let inputs =
        match vworkspace_controller::cluster::trust::read_inputs(client, &args.namespace, spec)
            .await
        {
            Ok(inputs) => inputs,
            Err(e) => return r.line(Outcome::Fail, &what, &format!("{e}")),
        };
    let trust = match vworkspace_controller::cluster::trust::trust_config(
        spec,
        cluster.status.as_ref(),
        &inputs,
        jiff::Timestamp::now(),
        &vworkspace_core::limits::Limits::default(),
    ) {
        Ok(trust) => {
            r.line(
                Outcome::Ok,
                &what,
                "signer ConfigMaps and identity Secret present and parseable",
            )?;
            trust
        }
        Err(e) => return r.line(Outcome::Fail, &what, &format!("{e}")),
    };
    let what = format!("Cluster {name} Git source");
    let url = spec.source.url.clone();
    let reference = git_ref(&spec.source.git_ref);
    let timeout = Duration::from_secs(args.fetch_timeout.max(1));
    let shown = vworkspace_controller::source::redact_url(&url);
    let fetched = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut options = vworkspace_controller::source::FetchOptions {
            auth: trust.auth,
            timeout,
            ..Default::default()
        };
        let ca_path = dir.path().join("ca.pem");
        if let Some(ca) = &trust.ca_bundle {
            std::fs::write(&ca_path, ca).map_err(|e| e.to_string())?;
            options.ca_bundle = Some(ca_path);
        }
        vworkspace_controller::source::fetch(&url, &reference, &dir.path().join("cache"), &options)
            .map(|f| f.commit)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| CliError::Io(format!("the fetch task: {e}")))?;
    match fetched {
        Ok(commit) => r.line(Outcome::Ok, &what, &format!("{shown} fetched ({commit})")),
        Err(e) => r.line(Outcome::Fail, &what, &format!("{shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_versions_as_api_servers_report_them() {
        assert_eq!(minor_version("30"), Some(30));
        assert_eq!(minor_version("31+"), Some(31));
        assert_eq!(minor_version(""), None);
    }

    #[test]
    fn every_optional_crd_names_the_operation_types_it_stops() {
        use vworkspace_core::crd::OperationType;
        for (kind, crd) in [
            (OperationType::Backup, "backups.velero.io"),
            (OperationType::Restore, "restores.velero.io"),
            (
                OperationType::Snapshot,
                "volumesnapshots.snapshot.storage.k8s.io",
            ),
            (OperationType::Workflow, "workflows.argoproj.io"),
        ] {
            let (_, without) = CRDS.iter().find(|(n, _)| *n == crd).expect("listed");
            assert!(
                without.is_some_and(|w| w.contains(&format!("type {kind:?} "))),
                "{crd}: {without:?}"
            );
        }
    }
}
