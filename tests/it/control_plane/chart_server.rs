//! The test's own chart server, on loopback over HTTPS: a Helm repository (`/index.yaml`,
//! `/charts/<name>-<version>.tgz`) and the OCI distribution API (`/v2/...`: manifests by tag and
//! blobs by digest, read-only), both serving the charts the test publishes. The archives are built
//! here ([`chart_archive`], with the `tar` and `flate2` crates): a tiny chart whose ConfigMap renders
//! an inline value (`host`) and an encrypted one (`mail.password`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The chart's ConfigMap: `<release>-rendered`, with the values it was given and its own version.
const TEMPLATE: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-rendered
data:
  host: {{ .Values.host | quote }}
  password: {{ .Values.mail.password | quote }}
  chartVersion: {{ .Chart.Version | quote }}
  build: {{ .Values.build | quote }}
"#;

/// The media types of a Helm chart stored as an OCI artifact.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// A `.tgz` chart archive: `<name>/Chart.yaml`, `<name>/values.yaml`, `<name>/templates/configmap.yaml`.
pub fn chart_archive(name: &str, version: &str) -> Vec<u8> {
    chart_build(name, version, "original")
}

/// [`chart_archive`] whose `build` default is `build`: other bytes under the same name and version
/// (a re-pushed tag).
pub fn chart_build(name: &str, version: &str, build: &str) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(encoder);
    let files = [
        (
            "Chart.yaml",
            format!("apiVersion: v2\nname: {name}\nversion: {version}\ntype: application\n"),
        ),
        (
            "values.yaml",
            format!("host: unset\nbuild: {build}\nmail:\n  password: unset\n"),
        ),
        ("templates/configmap.yaml", TEMPLATE.to_owned()),
    ];
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        archive
            .append_data(&mut header, format!("{name}/{path}"), contents.as_bytes())
            .expect("tar entry");
    }
    archive.into_inner().expect("tar").finish().expect("gzip")
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Default)]
struct Published {
    /// (name, version) -> archive.
    charts: BTreeMap<(String, String), Vec<u8>>,
    /// Artifacts whose tag moved on ([`ChartServer::repush`]): still served by digest, as a registry
    /// keeps a manifest until it is garbage-collected.
    untagged: Vec<((String, String), Vec<u8>)>,
    /// Requests served, by path (what the Flux controllers fetched).
    served: Vec<String>,
}

/// The running server; stopped when dropped.
pub struct ChartServer {
    pub port: u16,
    /// The CA that signed the server's certificate (PEM file): the Flux controllers trust it
    /// through `SSL_CERT_FILE`.
    pub ca: PathBuf,
    published: Arc<Mutex<Published>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChartServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChartServer {
    /// Starts on a free loopback port, with a certificate for 127.0.0.1 under `dir`.
    pub async fn start(dir: &Path) -> ChartServer {
        let (ca, cert, key) = crate::support::tls::certificate(dir, "charts");
        let certificate = Arc::new(
            vworkspace_controller::children::webhook_server::ReloadingCertificate::new(cert, key)
                .expect("chart server certificate"),
        );
        let config = vworkspace_controller::children::webhook_server::tls_config(certificate)
            .expect("tls config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let published = Arc::new(Mutex::new(Published::default()));
        let shared = published.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, published) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let published = published.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(serve(&published, port, request))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        ChartServer {
            port,
            ca,
            published,
            task,
        }
    }

    /// The Helm repository URL (`https://127.0.0.1:<port>/`).
    pub fn helm_url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    /// The OCI repository URL (`oci://127.0.0.1:<port>/charts`).
    pub fn oci_url(&self) -> String {
        format!("oci://127.0.0.1:{}/charts", self.port)
    }

    /// Publishes chart `name` at `version` (both APIs).
    pub fn publish(&self, name: &str, version: &str) {
        let archive = chart_archive(name, version);
        let mut published = self.published.lock().expect("lock");
        published
            .charts
            .insert((name.to_owned(), version.to_owned()), archive);
    }

    /// Pushes other bytes (`build`) under `name`:`version`: the tag moves to the new artifact, the
    /// old one stays reachable by its digest.
    pub fn repush(&self, name: &str, version: &str, build: &str) {
        let archive = chart_build(name, version, build);
        let key = (name.to_owned(), version.to_owned());
        let mut published = self.published.lock().expect("lock");
        if let Some(old) = published.charts.insert(key.clone(), archive) {
            published.untagged.push((key, old));
        }
    }

    /// The OCI manifest digest (`sha256:<hex>`) the tag `name`:`version` points to now.
    pub fn manifest_digest(&self, name: &str, version: &str) -> String {
        let published = self.published.lock().expect("lock");
        let archive = &published.charts[&(name.to_owned(), version.to_owned())];
        sha256(&oci_artifact(name, version, archive).0)
    }

    /// The paths served so far.
    pub fn served(&self) -> Vec<String> {
        self.published.lock().expect("lock").served.clone()
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

fn not_found() -> Response<Full<Bytes>> {
    respond(StatusCode::NOT_FOUND, "text/plain", b"not found".to_vec())
}

/// The Helm repository index of everything published.
fn index(published: &Published, port: u16) -> Vec<u8> {
    let mut entries: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for ((name, version), archive) in &published.charts {
        entries.entry(name).or_default().push(json!({
            "apiVersion": "v2", "name": name, "version": version, "type": "application",
            "created": "2026-01-01T00:00:00Z",
            "digest": sha256(archive).trim_start_matches("sha256:"),
            "urls": [format!("https://127.0.0.1:{port}/charts/{name}-{version}.tgz")],
        }));
    }
    // JSON is YAML.
    serde_json::to_vec(
        &json!({"apiVersion": "v1", "entries": entries, "generated": "2026-01-01T00:00:00Z"}),
    )
    .unwrap_or_default()
}

/// The OCI artifact of one chart: (manifest, config blob).
fn oci_artifact(name: &str, version: &str, archive: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let config = serde_json::to_vec(&json!({"apiVersion": "v2", "name": name, "version": version}))
        .unwrap_or_default();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": HELM_LAYER, "digest": sha256(archive), "size": archive.len()}],
    }))
    .unwrap_or_default();
    (manifest, config)
}

fn serve(
    published: &Mutex<Published>,
    port: u16,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let mut published = published.lock().expect("lock");
    published
        .served
        .push(format!("{} {path}", request.method()));
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", Vec::new());
    }
    if path == "/index.yaml" {
        return respond(
            StatusCode::OK,
            "application/x-yaml",
            index(&published, port),
        );
    }
    if let Some(file) = path.strip_prefix("/charts/") {
        let found = published
            .charts
            .iter()
            .find(|((n, v), _)| format!("{n}-{v}.tgz") == file);
        return match found {
            Some((_, archive)) => respond(StatusCode::OK, "application/gzip", archive.clone()),
            None => not_found(),
        };
    }
    if path == "/v2/" || path == "/v2" {
        return respond(StatusCode::OK, "application/json", b"{}".to_vec());
    }
    // /v2/charts/<name>/manifests/<tag> and /v2/charts/<name>/blobs/<digest>
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["v2", "charts", name, what, reference] = parts.as_slice() else {
        return not_found();
    };
    let tagged = published.charts.iter().map(|(k, a)| (k, a, true));
    let untagged = published.untagged.iter().map(|(k, a)| (k, a, false));
    for ((n, v), archive, by_tag) in tagged.chain(untagged) {
        if n != name {
            continue;
        }
        let (manifest, config) = oci_artifact(n, v, archive);
        let mut response = match *what {
            "manifests"
                if (by_tag && *reference == v.as_str()) || *reference == sha256(&manifest) =>
            {
                let digest = sha256(&manifest);
                let mut r = respond(StatusCode::OK, OCI_MANIFEST, manifest);
                if let Ok(value) = http::HeaderValue::from_str(&digest) {
                    r.headers_mut().insert("docker-content-digest", value);
                }
                r
            }
            "blobs" if *reference == sha256(&config) => {
                respond(StatusCode::OK, "application/octet-stream", config)
            }
            "blobs" if *reference == sha256(archive) => {
                respond(StatusCode::OK, "application/octet-stream", archive.clone())
            }
            _ => continue,
        };
        if request.method() == Method::HEAD {
            let length = response.body().size_hint_exact();
            *response.body_mut() = Full::new(Bytes::new());
            if let Some(length) = length
                && let Ok(value) = http::HeaderValue::from_str(&length.to_string())
            {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, value);
            }
        }
        return response;
    }
    not_found()
}

trait ExactSize {
    fn size_hint_exact(&self) -> Option<u64>;
}

impl ExactSize for Full<Bytes> {
    fn size_hint_exact(&self) -> Option<u64> {
        hyper::body::Body::size_hint(self).exact()
    }
}
