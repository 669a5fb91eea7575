//! The validating admission webhook over real HTTPS (rustls, certificates made by `openssl`), answering
//! AdmissionReview bodies shaped as the kube-apiserver sends them (admission.k8s.io/v1), allowed and
//! denied, and serving a rotated certificate without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::tls::certificate;
use serde_json::{Value, json};
use vworkspace_controller::children::webhook_server::{self, ReloadingCertificate};

fn client(ca: &Path) -> reqwest::blocking::Client {
    let pem = std::fs::read(ca).expect("ca");
    reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("pem")])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// An AdmissionReview as the kube-apiserver sends it for a CREATE.
fn review(kind: &str, group: &str, resource: &str, object: Value) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": "v1alpha1", "kind": kind},
            "resource": {"group": group, "version": "v1alpha1", "resource": resource},
            "requestKind": {"group": group, "version": "v1alpha1", "kind": kind},
            "requestResource": {"group": group, "version": "v1alpha1", "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": "org-myteam",
            "operation": "CREATE",
            "userInfo": {"username": "alice@example.org", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    })
}

fn instance(values: Value) -> Value {
    review(
        "ApplicationInstance",
        "apps.vworkspace.io",
        "applicationinstances",
        json!({
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": "nextcloud", "namespace": "org-myteam"},
            "spec": {"chart": {"repository": "https://nextcloud.github.io/helm/", "name": "nextcloud", "version": "6.6.4"}, "values": values},
        }),
    )
}

fn operation(template: &str) -> Value {
    review(
        "Operation",
        "ops.vworkspace.io",
        "operations",
        json!({
            "apiVersion": "ops.vworkspace.io/v1alpha1",
            "kind": "Operation",
            "metadata": {"name": "nightly", "namespace": "org-myteam"},
            "spec": {"type": "Backup", "template": template, "target": {"applicationInstance": "nextcloud"}},
        }),
    )
}

fn send(
    client: &reqwest::blocking::Client,
    url: &str,
    body: &Value,
) -> reqwest::Result<reqwest::blocking::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("json"))
        .send()
}

fn post(client: &reqwest::blocking::Client, url: &str, body: &Value) -> Value {
    let response = send(client, url, body).expect("webhook answers");
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&response.bytes().expect("body")).expect("json")
}

#[test]
fn admission_reviews_over_https_allowed_denied_and_a_rotated_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca1, cert1, key1) = certificate(dir.path(), "one");
    let (ca2, cert2, key2) = certificate(dir.path(), "two");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&cert1, &cert).expect("copy");
    std::fs::copy(&key1, &key).expect("copy");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("https://{}/validate", listener.local_addr().expect("addr"));
    let certificate = Arc::new(ReloadingCertificate::new(cert.clone(), key.clone()).expect("load"));
    let config = webhook_server::tls_config(certificate).expect("tls");
    let policy = Arc::new(|namespace: &str| {
        (namespace == "org-myteam").then(|| vec!["velero-namespace-backup".to_owned()])
    });
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let _ = webhook_server::serve(listener, config, policy).await;
    });

    let one = client(&ca1);
    let armored = "-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3YxCg==\n-----END AGE ENCRYPTED FILE-----\n";

    let denied = post(
        &one,
        &url,
        &instance(json!({"db": {"password": "hunter2", "host": "db"}})),
    );
    let response = &denied["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "InlineCredentialInValues");
    let message = response["status"]["message"].as_str().expect("message");
    assert!(message.contains("spec.values.db.password"), "{message}");
    assert!(message.contains("vworkspace-operator encrypt"), "{message}");
    assert!(
        !message.contains("hunter2"),
        "the literal is not echoed back"
    );

    let allowed = post(
        &one,
        &url,
        &instance(
            json!({"db": {"password": armored, "existingSecret": "db"}, "api": {"token": {"secretRef": {"name": "api"}}}}),
        ),
    );
    assert_eq!(allowed["response"]["allowed"], true);
    assert_eq!(allowed["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(allowed["kind"], "AdmissionReview");

    assert_eq!(
        post(&one, &url, &operation("velero-namespace-backup"))["response"]["allowed"],
        true
    );
    let refused = post(&one, &url, &operation("pg-dump"));
    assert_eq!(refused["response"]["allowed"], false);
    assert_eq!(
        refused["response"]["status"]["reason"],
        "OperationTemplateNotAllowedInNamespace"
    );
    assert!(
        refused["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("allowed are [velero-namespace-backup]"))
    );
    let mut delete = operation("pg-dump");
    delete["request"]["operation"] = json!("DELETE");
    assert_eq!(post(&one, &url, &delete)["response"]["allowed"], true);
    let garbage = one.post(&url).body("not json").send().expect("answers");
    let garbage: Value = serde_json::from_slice(&garbage.bytes().expect("body")).expect("json");
    assert_eq!(garbage["response"]["allowed"], false);
    assert_eq!(garbage["response"]["status"]["code"], 400);

    // Rotate: the Secret's files change; the next handshakes present the new certificate.
    std::fs::copy(&cert2, &cert).expect("copy");
    std::fs::copy(&key2, &key).expect("copy");
    let two = client(&ca2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match send(&two, &url, &operation("velero-namespace-backup")) {
            Ok(r) if r.status() == 200 => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("the rotated certificate was not served: {other:?}"),
        }
    }
    assert!(
        send(&client(&ca1), &url, &operation("x")).is_err(),
        "the old certificate is no longer served"
    );
}
