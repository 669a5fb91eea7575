//! Children are compared on their whole spec: a spec field that another field manager wrote and the
//! operator does not declare (a tenant's `targetNamespace`, `serviceAccountName`, `suspend`,
//! `postRenderers` or an extra `values` key on a HelmRelease) is removed, not left beside the
//! declared ones. Server-side apply cannot do it alone: it removes only fields its own manager
//! owned, so the fields are found in `metadata.managedFields` (fields no manager owns, such as the
//! API server's defaults, are left alone) and removed with a JSON merge patch (`null`) under the
//! operator's field manager. The removal is logged and recorded as a Warning Event on the child,
//! naming the fields, never their values.

use serde_json::{Map, Value};

use crate::cluster::apply::FIELD_MANAGER;

/// The Event and condition reason of a removal.
pub use vworkspace_core::reasons::UNDECLARED_FIELDS_REMOVED as REASON_UNDECLARED_FIELDS_REMOVED;

/// Whether children of this kind are compared on their whole spec: Flux's (HelmRelease,
/// HelmRepository, OCIRepository), whose controllers never write their spec. An Operation's child
/// (Velero, Job, Workflow, snapshot) is made once per run, and its own controller may record
/// defaults in its spec (Velero does), which must not be fought over.
pub fn compared_whole(resource: &kube::api::ApiResource) -> bool {
    matches!(
        resource.group.as_str(),
        "helm.toolkit.fluxcd.io" | "source.toolkit.fluxcd.io"
    )
}

/// The spec fields of `live` that another manager (not a status writer) owns and `desired` does not
/// declare, as the merge patch body `{"spec": {...: null}}` that removes them; `None` when there are
/// none. Inside fields both declare, nested objects are walked; lists are atomic (the apply replaces
/// them whole).
pub fn foreign_spec_fields(desired: &Value, live: &Value) -> Option<Value> {
    let mut patch = Map::new();
    for entry in live["metadata"]["managedFields"].as_array()? {
        if entry["manager"].as_str() == Some(FIELD_MANAGER)
            || entry["subresource"].as_str() == Some("status")
        {
            continue;
        }
        if let Some(owned) = entry["fieldsV1"].get("f:spec") {
            collect(owned, &desired["spec"], &live["spec"], &mut patch);
        }
    }
    (!patch.is_empty()).then(|| serde_json::json!({ "spec": patch }))
}

fn collect(owned: &Value, desired: &Value, live: &Value, patch: &mut Map<String, Value>) {
    let Value::Object(owned) = owned else {
        return;
    };
    for (key, inner) in owned {
        // `k:`, `v:` and `i:` name list items: lists are compared and replaced whole.
        let Some(field) = key.strip_prefix("f:") else {
            continue;
        };
        let Some(live_value) = live.get(field) else {
            continue;
        };
        match desired.get(field) {
            None => {
                patch.insert(field.to_owned(), Value::Null);
            }
            Some(declared) if declared.is_object() && live_value.is_object() => {
                if patch.get(field) == Some(&Value::Null) {
                    continue;
                }
                let mut nested = match patch.remove(field) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                collect(inner, declared, live_value, &mut nested);
                if !nested.is_empty() {
                    patch.insert(field.to_owned(), Value::Object(nested));
                }
            }
            Some(_) => {}
        }
    }
}

/// The dotted paths a removal patch removes (`spec.values.extra`), for the log and the Event.
pub fn removed_paths(patch: &Value) -> Vec<String> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    if let Some(spec) = patch.get("spec") {
        walk("spec", spec, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn managed(manager: &str, spec: Value) -> Value {
        json!({"manager": manager, "operation": "Update", "fieldsType": "FieldsV1",
               "fieldsV1": {"f:spec": spec}})
    }

    #[test]
    fn fields_another_manager_added_are_found_and_defaults_are_not() {
        let desired =
            json!({"spec": {"chart": {"spec": {"version": "6.6.4"}}, "values": {"host": "a"}}});
        let live = json!({
            "metadata": {"managedFields": [
                managed(FIELD_MANAGER, json!({"f:chart": {}, "f:values": {"f:host": {}}})),
                managed("kubectl-edit", json!({
                    "f:targetNamespace": {}, "f:serviceAccountName": {}, "f:suspend": {},
                    "f:postRenderers": {}, "f:values": {"f:extra": {}, "f:host": {}},
                    "f:chart": {"f:spec": {"f:version": {}}}})),
                {"manager": "helm-controller", "operation": "Update", "subresource": "status",
                 "fieldsV1": {"f:status": {}}},
            ]},
            "spec": {"chart": {"spec": {"version": "6.6.4"}}, "interval": "10m",
                     "values": {"host": "b", "extra": "x"}, "targetNamespace": "kube-system",
                     "serviceAccountName": "admin", "suspend": true,
                     "postRenderers": [{"kustomize": {}}]}
        });
        let patch = foreign_spec_fields(&desired, &live).expect("foreign fields");
        assert_eq!(
            patch,
            json!({"spec": {"targetNamespace": null, "serviceAccountName": null, "suspend": null,
                            "postRenderers": null, "values": {"extra": null}}})
        );
        assert_eq!(
            removed_paths(&patch),
            [
                "spec.postRenderers",
                "spec.serviceAccountName",
                "spec.suspend",
                "spec.targetNamespace",
                "spec.values.extra"
            ]
        );
        // `interval` (a default no manager owns) and what only we own are left alone.
        let ours_only = json!({"metadata": {"managedFields": [managed(FIELD_MANAGER, json!({"f:interval": {}}))]},
                               "spec": {"interval": "10m"}});
        assert_eq!(foreign_spec_fields(&desired, &ours_only), None);
        // A field already gone needs no patch.
        let gone = json!({"metadata": {"managedFields": [managed("kubectl", json!({"f:suspend": {}}))]},
                          "spec": {}});
        assert_eq!(foreign_spec_fields(&desired, &gone), None);
    }
}
