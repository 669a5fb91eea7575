//! What the engine of an Operation reads besides the Operation: the RunCommand template
//! (a ConfigMap in the operator's namespace) and, after the run, the newest pod of a Job or
//! Workflow for `status.outputs.logsRef`.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::ListParams;

use crate::children::engines::{self, JobTemplate, RUN_COMMAND_TEMPLATE_PREFIX};
use crate::children::{ChildContext, kube_error};
use crate::error::Error;

/// The RunCommand template `template`, when its ConfigMap exists.
pub(super) async fn job_template(
    ctx: &ChildContext,
    template: &str,
) -> Result<Option<JobTemplate>, Error> {
    let name = format!("{RUN_COMMAND_TEMPLATE_PREFIX}{template}");
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(map) = api.get_opt(&name).await.map_err(kube_error(format!(
        "get ConfigMap {}/{name}",
        ctx.namespace
    )))?
    else {
        return Ok(None);
    };
    let data = map.data.unwrap_or_default();
    let source = format!("ConfigMap {}/{name}", ctx.namespace);
    engines::job_template(
        data.get("image").map(String::as_str),
        data.get("command").map(String::as_str),
        &source,
    )
    .map(Some)
    .map_err(|e| Error::Operation(e.into()))
}

/// The newest pod matching `selector`, as `namespace/name`.
pub(super) async fn latest_pod(
    ctx: &ChildContext,
    namespace: &str,
    selector: &str,
) -> Result<Option<String>, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(kube_error(format!("list pods in {namespace} ({selector})")))?;
    Ok(pods
        .items
        .iter()
        .max_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        })
        .and_then(|p| p.metadata.name.clone())
        .map(|n| format!("{namespace}/{n}")))
}
