//! The operator at scale on the real API server (issue 14; method and results in
//! docs/performance.md). One scenario per size: N ApplicationInstances in N / 10 managed namespaces,
//! each with one bound encrypted value, released 2-of-2 and committed signed; then, as the operator's
//! ServiceAccount:
//!
//! 1. `run --once` on a fresh process: the first apply (time, peak RSS, write requests);
//! 2. `run --once` again, [`NOOP_RUNS`] times: the no-op pass (median time, peak RSS, write
//!    requests: 0 expected); with `VWS_SCALE_BASELINE_BIN` (an operator binary of another commit)
//!    that binary's no-op pass runs after each of ours, and both medians are printed;
//! 3. the long-running `run`: time until every child (values Secret, HelmRepository, HelmRelease)
//!    exists, peak RSS, and RSS at rest after that;
//! 4. the Cluster object's size (compact JSON) and its inventory's share.
//!
//! `scale_smoke` runs the scenario at 40 instances in 40 namespaces inside the test command (so the bench cannot rot)
//! and asserts only what must hold at any size (everything applied, every child created, the no-op
//! pass writes nothing), never a time. `scale_bench` (ignored; `scripts/scale.sh` runs it) runs the
//! sizes of `VWS_SCALE_SIZES` and prints the table.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::json;
use vworkspace_testkit::Scale;

use super::fixture::{BIN, Intent};
use super::server::{OPERATOR_USER, Proc, apply, resource, skipped, wait_for};
use super::{Env, Scope, env, operator_cmd, test_name, webhook_replica};

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
}

/// The CPU time (user and system) `pid` has used so far, from `/proc/<pid>/stat` (fields 14 and
/// 15, in clock ticks).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|hz| *hz > 0)?;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// Peak (`VmHWM`) and current (`VmRSS`) resident set of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    Some((status_kib(pid, "VmHWM:")?, status_kib(pid, "VmRSS:")?))
}

/// What one size measured.
#[derive(Debug, Default, Clone)]
struct Row {
    instances: usize,
    first_apply: Duration,
    first_apply_peak_kib: u64,
    first_apply_writes: usize,
    noop: Duration,
    noop_peak_kib: u64,
    noop_writes: usize,
    children: Option<Duration>,
    run_peak_kib: u64,
    run_rest_kib: u64,
    run_requests: usize,
    /// HelmRelease Ready -> instance Ready, per sampled instance (sorted).
    ready_latency: Vec<Duration>,
    /// The long-running process's no-op pass: its duration (from its log), the RSS it added above
    /// rest, and its write requests.
    rest_pass: Option<Duration>,
    rest_pass_added_kib: u64,
    rest_pass_writes: usize,
    cluster_bytes: usize,
    inventory_bytes: usize,
    /// TCP connections the long-running process holds to the API server at rest.
    api_connections: usize,
    /// The long-running process's requests kube-apiserver answered 429 (too many in flight).
    throttled: usize,
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| instances | first apply | peak | writes | no-op pass | peak | writes | all children | run peak | run at rest | run requests | Ready mirrored (median / max) | no-op pass, long-running | its RSS above rest | its writes | Cluster object | inventory | connections to the API server at rest | run requests answered 429 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let latency = match (
            r.ready_latency.get(r.ready_latency.len() / 2),
            r.ready_latency.last(),
        ) {
            (Some(median), Some(max)) => {
                format!("{} / {} ms", median.as_millis(), max.as_millis())
            }
            _ => "not measured".to_owned(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} B | {} B | {} | {} |\n",
            r.instances,
            secs(r.first_apply),
            mib(r.first_apply_peak_kib),
            r.first_apply_writes,
            secs(r.noop),
            mib(r.noop_peak_kib),
            r.noop_writes,
            r.children.map_or("not all".to_owned(), secs),
            mib(r.run_peak_kib),
            mib(r.run_rest_kib),
            r.run_requests,
            latency,
            r.rest_pass.map_or("not measured".to_owned(), |d| format!("{} ms", d.as_millis())),
            mib(r.rest_pass_added_kib),
            r.rest_pass_writes,
            r.cluster_bytes,
            r.inventory_bytes,
            r.api_connections,
            r.throttled,
        ));
    }
    out
}

/// N instances in N / 10 namespaces, one bound encrypted value each.
fn scale_of(instances: usize) -> Scale {
    Scale {
        namespaces: instances.div_ceil(10),
        instances,
        operations: 0,
        values: instances,
    }
}

/// The API server's port, from the `server:` line of `kubeconfig`.
fn api_server_port(kubeconfig: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(kubeconfig).ok()?;
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))?;
    server
        .trim()
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// Established TCP connections from process `pid` to `port`: the sockets among its open files,
/// matched by inode in the kernel's connection tables.
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let remote = format!(":{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // remote address, state (01: established), inode
            fields.len() > 9
                && fields[2].ends_with(&remote)
                && fields[3] == "01"
                && inodes.contains(fields[9])
        })
        .count()
}

/// Creates the managed namespaces, 16 at a time; each is deleted with the scope.
async fn namespaces(env: &Env, scope: &mut Scope, names: &[String]) {
    for chunk in names.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for ns in chunk {
            let admin = env.admin.clone();
            let object = json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"app.vworkspace.io/managed-by": "vworkspace"}}});
            set.spawn(async move { apply(&admin, &object).await.map(drop) });
        }
        while let Some(done) = set.join_next().await {
            done.expect("task").expect("apply a namespace");
        }
        for ns in chunk {
            scope.also_delete("v1", "Namespace", None, ns);
        }
    }
}

/// Removes the operator's ValidatingWebhookConfiguration. The guard puts the shared one back when it
/// is dropped, also when the bench fails before that.
async fn without_webhook(env: &Env) -> super::admission::RestoreWebhook {
    let shared = super::webhook_configuration(env.shared.webhook_port, Some(&env.shared.ca_bundle));
    let name = shared["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let restore = super::admission::RestoreWebhook {
        kubeconfig: env.cp.kubeconfig.clone(),
        shared,
    };
    super::server::delete(
        &env.admin,
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        None,
        &name,
    )
    .await;
    eprintln!("the first apply runs without the admission webhook (VWS_SCALE_WITHOUT_WEBHOOK)");
    restore
}

/// How many fresh `run --once` no-op passes the bench times (their median is the row's).
const NOOP_RUNS: usize = 5;

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// `cmd` with another program: `VWS_SCALE_BASELINE_BIN`, an operator binary built from another
/// commit, timed on the same estate beside ours.
fn with_program(cmd: &Command, program: &str) -> Command {
    relaunched(cmd, program.as_ref(), [])
}

/// `cmd`'s arguments, environment and directory under `program`, after `leading` arguments.
fn relaunched<'a>(
    cmd: &Command,
    program: &std::ffi::OsStr,
    leading: impl IntoIterator<Item = &'a std::ffi::OsStr>,
) -> Command {
    let mut other = Command::new(program);
    other.args(leading).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => other.env(key, value),
            None => other.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        other.current_dir(dir);
    }
    other
}

/// Runs `cmd` to its end, sampling its peak RSS: (exit ok, wall time, peak KiB).
fn timed_once(cmd: &mut Command, dir: &Path, tag: &str) -> (bool, Duration, u64, Proc) {
    let started = Instant::now();
    let mut proc = Proc::spawn(cmd, dir, tag);
    let pid = proc.child.id();
    let mut peak = 0;
    let status = loop {
        if let Some((hwm, _)) = rss_kib(pid) {
            peak = peak.max(hwm);
        }
        if let Some(status) = proc.wait_timeout(0) {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{tag} ends within 30 min"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.success(), started.elapsed(), peak, proc)
}

/// `cmd` run under the program of `VWS_SCALE_RUN_WRAPPER` when it is set (say `heaptrack -o
/// /tmp/run`, to see what holds the long-running process's memory), else `cmd` itself. The RSS then
/// measured is the wrapper's child's only when the wrapper `exec`s it. heaptrack sees only what
/// goes through libc's malloc: the binary's own allocator (mimalloc, src/main.rs) does not, so its
/// profile names the libc allocations alone.
fn wrapped(cmd: Command) -> Command {
    let Ok(wrapper) = std::env::var("VWS_SCALE_RUN_WRAPPER") else {
        return cmd;
    };
    let mut words = wrapper.split_whitespace();
    let Some(program) = words.next() else {
        return cmd;
    };
    let leading = words.map(std::ffi::OsStr::new).chain([cmd.get_program()]);
    relaunched(&cmd, program.as_ref(), leading)
}

/// `cmd` with the operator binary of `VWS_SCALE_OPERATOR_BIN` (scripts/scale.sh builds the one the
/// image ships, profile `deploy`) when it is set, else the test build's.
fn shipped(cmd: Command) -> Command {
    match std::env::var_os("VWS_SCALE_OPERATOR_BIN") {
        Some(bin) => relaunched(&cmd, &bin, std::iter::empty()),
        None => cmd,
    }
}

/// Stops the long-running process. Under a wrapper (`VWS_SCALE_RUN_WRAPPER`, say heaptrack) the
/// operator alone gets SIGTERM first, and the wrapper gets time to write what it recorded: stopping
/// the whole process group at once killed heaptrack's writer too, and left an empty profile.
fn stop_run(run: &mut Proc) {
    if std::env::var_os("VWS_SCALE_RUN_WRAPPER").is_some() {
        let group = run.child.id().to_string();
        // VWS_SCALE_RUN_STOP_SIGNAL=KILL: the operator ends without freeing what it holds, so
        // heaptrack reports everything it held at rest as "leaked", with where it was allocated.
        let signal = std::env::var("VWS_SCALE_RUN_STOP_SIGNAL").unwrap_or_else(|_| "TERM".into());
        // `-x` matches the process name, the first 15 bytes of the executable's file name.
        let _ = Command::new("pkill")
            .args([&format!("-{signal}"), "-g", &group, "-x", "vworkspace-oper"])
            .status();
        let _ = run.wait_timeout(600);
    }
    run.stop();
}

/// How many objects of a kind live in the namespaces of this run (metadata-only list, as the admin).
async fn count(admin: &Client, api_version: &str, kind: &str, prefix: &str) -> usize {
    let (resource, _) = resource(admin, api_version, kind).await;
    let api: Api<DynamicObject> = Api::all_with(admin.clone(), &resource);
    api.list_metadata(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|o| {
                    o.metadata
                        .namespace
                        .as_deref()
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Requests (all verbs) by the operator in the audit log since `mark`, and how many of them were
/// answered 429.
fn requests_by_operator(audit: &super::server::Audit) -> (usize, usize) {
    let events = audit.since();
    let ours: Vec<_> = events
        .iter()
        .filter(|e| e["user"]["username"] == OPERATOR_USER)
        .collect();
    let throttled = ours
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 429)
        .count();
    (ours.len(), throttled)
}

/// The whole scenario at one size; `rest` is how long the long-running `run` is watched after every
/// child exists.
async fn scenario(env: &Env, scale: Scale, rest: Duration) -> Row {
    let instances = scale.instances;
    let cluster = format!("scale-{instances}");
    let started = Instant::now();
    let intent = Intent::generated(&cluster, scale);
    let names = intent.generated_namespaces().to_vec();
    eprintln!(
        "scale {instances}: intent generated in {}",
        secs(started.elapsed())
    );
    let mut scope = Scope::new(env, &intent, &[]).await;
    namespaces(env, &mut scope, &names).await;
    let webhook = webhook_replica(env, &scope.dir).await;
    let mut row = Row {
        instances,
        ..Row::default()
    };

    let audit = super::server::Audit::mark(&env.cp.audit_log);
    let mut cmd = shipped(operator_cmd(env, &scope.dir));
    cmd.arg("--once").env("RUST_LOG", STEP_LOG);
    // VWS_SCALE_WITHOUT_WEBHOOK: the first apply with the admission webhook's configuration removed
    // (put back after it), to measure the webhook's share of the Write step. A measurement only: a
    // cluster runs with the webhook.
    let without = match std::env::var_os("VWS_SCALE_WITHOUT_WEBHOOK") {
        Some(_) => Some(without_webhook(env).await),
        None => None,
    };
    let (ok, took, peak, proc) = timed_once(&mut cmd, &scope.dir, "first");
    drop(without);
    assert!(ok, "first pass: {}\n{}", proc.stdout(), proc.stderr());
    eprintln!(
        "{instances}: first apply, by step: {}",
        step_times(&proc.stderr())
    );
    row.first_apply = took;
    row.first_apply_peak_kib = peak;
    row.first_apply_writes = audit.writes_by(OPERATOR_USER).len();
    assert_eq!(
        reused_verdict(&proc.stderr()),
        Some(false),
        "the first apply decrypts every value"
    );
    let ai = count(&env.admin, super::AI, "ApplicationInstance", &cluster).await;
    assert_eq!(ai, instances, "every declared instance is applied");

    let audit = super::server::Audit::mark(&env.cp.audit_log);
    let mut cmd = shipped(operator_cmd(env, &scope.dir));
    cmd.arg("--once").env("RUST_LOG", STEP_LOG);
    let baseline = std::env::var("VWS_SCALE_BASELINE_BIN").ok();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..NOOP_RUNS {
        let (ok, took, peak, proc) = timed_once(&mut cmd, &scope.dir, &format!("noop-{run}"));
        assert!(ok, "no-op pass: {}\n{}", proc.stdout(), proc.stderr());
        eprintln!(
            "{instances}: no-op pass {run}: {} ms, by step: {}",
            took.as_millis(),
            step_times(&proc.stderr())
        );
        // The objects are as the first apply left them: their metadata gives the settled record it
        // made, so the pass ends there, nothing parsed, decrypted or read whole.
        assert_eq!(
            last_step(&proc.stderr()).as_deref(),
            Some("ReuseSettled"),
            "a new process finds the objects settled: {}",
            proc.stderr()
        );
        assert_eq!(reused_verdict(&proc.stderr()), None, "nothing is parsed");
        ours.push(took);
        row.noop_peak_kib = row.noop_peak_kib.max(peak);
        // Interleaved with ours on the same estate, so that the machine's swings hit both alike.
        if let Some(program) = &baseline {
            let mut other = with_program(&cmd, program);
            let (ok, took, _, proc) = timed_once(&mut other, &scope.dir, &format!("base-{run}"));
            assert!(ok, "baseline no-op pass: {}", proc.stderr());
            theirs.push(took);
        }
    }
    row.noop = median(&mut ours);
    if !theirs.is_empty() {
        eprintln!(
            "{instances}: no-op pass, median of {NOOP_RUNS}: {} ms; {program}: {} ms",
            row.noop.as_millis(),
            median(&mut theirs).as_millis(),
            program = baseline.as_deref().unwrap_or_default()
        );
    }
    row.noop_writes = audit.writes_by(OPERATOR_USER).len();
    repaired_by_a_fresh_process(env, &scope.dir, &names[0], instances).await;

    let cluster_object = super::server::get(&env.admin, super::OPS, "Cluster", None, &cluster)
        .await
        .expect("Cluster")
        .data;
    row.cluster_bytes = serde_json::to_vec(&cluster_object).expect("json").len();
    row.inventory_bytes = serde_json::to_vec(&cluster_object["status"]["compactInventory"])
        .expect("json")
        .len();

    if env.shared.thirdparty.is_some() {
        let audit = super::server::Audit::mark(&env.cp.audit_log);
        let mut cmd = wrapped(shipped(operator_cmd(env, &scope.dir)));
        // The pass's own log line carries its duration (the no-op pass below).
        cmd.env("RUST_LOG", "warn,vworkspace_controller::cluster=info");
        let started = Instant::now();
        let mut run = Proc::spawn(&mut cmd, &scope.dir, "run");
        let pid = run.child.id();
        let deadline = Duration::from_secs(120 + instances as u64 / 20);
        let mut last_count = Instant::now() - Duration::from_secs(10);
        let mut children = None;
        while started.elapsed() < deadline {
            if let Some((hwm, rss)) = rss_kib(pid) {
                row.run_peak_kib = row.run_peak_kib.max(hwm);
                row.run_rest_kib = rss;
            }
            assert!(
                run.wait_timeout(0).is_none(),
                "run exited: {}",
                run.stderr()
            );
            if last_count.elapsed() >= Duration::from_secs(2) {
                last_count = Instant::now();
                let releases = count(
                    &env.admin,
                    "helm.toolkit.fluxcd.io/v2",
                    "HelmRelease",
                    &cluster,
                )
                .await;
                if releases >= instances {
                    let sources = count(
                        &env.admin,
                        "source.toolkit.fluxcd.io/v1",
                        "HelmRepository",
                        &cluster,
                    )
                    .await;
                    let values = count(&env.admin, "v1", "Secret", &cluster).await;
                    if sources >= instances && values >= instances {
                        children = Some(started.elapsed());
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        row.children = children;
        if children.is_some() {
            row.ready_latency = mirror_readiness(env, &names, &scale).await;
        }
        let resting = Instant::now();
        while resting.elapsed() < rest {
            if let Some((hwm, rss)) = rss_kib(pid) {
                row.run_peak_kib = row.run_peak_kib.max(hwm);
                row.run_rest_kib = rss;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // What the resting RSS is made of: the heap and stacks (anonymous) against the binary's
        // own pages mapped from its file.
        if let (Some(anon), Some(file)) = (status_kib(pid, "RssAnon:"), status_kib(pid, "RssFile:"))
        {
            // And the CPU it used to get there (every child created, each allocator setting's
            // cost shows here).
            eprintln!(
                "{instances}: run at rest: {} = {} anonymous + {} from files; CPU used since its start: {}",
                mib(row.run_rest_kib),
                mib(anon),
                mib(file),
                cpu_time(pid).map_or("not read".to_owned(), secs)
            );
        }
        row.api_connections =
            api_server_port(&env.cp.kubeconfig).map_or(0, |port| connections_to(pid, port));
        if children.is_some() {
            let audit = super::server::Audit::mark(&env.cp.audit_log);
            let (took, added) = poked_pass(env, &cluster, &run, 1).await;
            row.rest_pass = took;
            row.rest_pass_added_kib = added;
            row.rest_pass_writes = audit.writes_by(OPERATOR_USER).len();
            repaired_by_a_pass(env, &cluster, &names[0], &run).await;
        }
        if let Some((hwm, _)) = rss_kib(pid) {
            row.run_peak_kib = row.run_peak_kib.max(hwm);
        }
        stop_run(&mut run);
        (row.run_requests, row.throttled) = requests_by_operator(&audit);
    }
    drop(webhook);
    drop(scope);
    eprintln!("{}", table(std::slice::from_ref(&row)));
    row
}

/// Plays Flux's helm-controller on a sample of HelmReleases (none runs here): marks each `Ready`,
/// then times until its instance's status says `Ready=True`. Sorted latencies.
async fn mirror_readiness(env: &Env, namespaces: &[String], scale: &Scale) -> Vec<Duration> {
    let sample: Vec<usize> = (0..10).map(|k| k * scale.instances / 10).collect();
    let (release_resource, _) =
        resource(&env.admin, "helm.toolkit.fluxcd.io/v2", "HelmRelease").await;
    let mut marked = Vec::new();
    for i in sample {
        let ns = &namespaces[scale.namespace_of(i)];
        let name = Scale::instance_name(i);
        let api: Api<DynamicObject> =
            Api::namespaced_with(env.admin.clone(), ns, &release_resource);
        // As helm-controller reports an install: for the HelmRelease's current generation, with its
        // reconcile request (the values Secret's version) handled.
        let live = api
            .get(&name)
            .await
            .expect("the HelmRelease the operator wrote");
        let generation = live.metadata.generation.unwrap_or(1);
        let requested = live
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("reconcile.fluxcd.io/requestedAt"))
            .cloned();
        let status = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "status": {"observedGeneration": generation, "lastHandledReconcileAt": requested,
                "conditions": [{
                "type": "Ready", "status": "True", "reason": "InstallSucceeded",
                "observedGeneration": generation,
                "message": "Helm install succeeded (played by the scale bench)",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        api.patch_status(
            &name,
            &kube::api::PatchParams::apply("vws-scale-bench-flux").force(),
            &kube::api::Patch::Apply(&status),
        )
        .await
        .expect("mark a HelmRelease Ready");
        marked.push((ns.clone(), name, Instant::now()));
    }
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marked.is_empty() && Instant::now() < deadline {
        let mut waiting = Vec::new();
        for (ns, name, at) in marked {
            let instance = super::server::get(
                &env.admin,
                super::AI,
                "ApplicationInstance",
                Some(&ns),
                &name,
            )
            .await
            .map(|o| o.data["status"]["conditions"].clone());
            let ready = instance.and_then(|c| {
                c.as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .map(|c| c["status"] == "True")
            });
            if ready == Some(true) {
                latencies.push(at.elapsed());
            } else {
                waiting.push((ns, name, at));
            }
        }
        marked = waiting;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        marked.is_empty(),
        "Ready mirrored into every sampled instance within 120 s; not: {:?}",
        marked.iter().map(|m| &m.1).collect::<Vec<_>>()
    );
    latencies.sort();
    latencies
}

/// How many passes of the long-running `run` have logged their end so far, with the last one's
/// duration.
fn passes_logged(run: &Proc) -> (usize, Option<Duration>) {
    let log = run.stderr();
    let ends: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("pass succeeded"))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last = ends
        .last()
        .and_then(|e| e["duration_ms"].as_u64())
        .map(Duration::from_millis);
    (ends.len(), last)
}

/// Touches the Cluster (an annotation: its watch triggers a pass) and waits for that pass to log its
/// end: (its duration, the largest RSS it added above the RSS before it, in KiB).
async fn poked_pass(env: &Env, cluster: &str, run: &Proc, poke: u32) -> (Option<Duration>, u64) {
    let pid = run.child.id();
    let (before, _) = passes_logged(run);
    let resting = rss_kib(pid).map_or(0, |(_, rss)| rss);
    super::server::merge_patch(
        &env.admin,
        super::OPS,
        "Cluster",
        None,
        cluster,
        &json!({"metadata": {"annotations": {"bench.vworkspace.io/poke": poke.to_string()}}}),
    )
    .await
    .expect("poke the Cluster");
    let started = Instant::now();
    let mut added = 0;
    while started.elapsed() < Duration::from_secs(300) {
        if let Some((_, rss)) = rss_kib(pid) {
            added = added.max(rss.saturating_sub(resting));
        }
        let (now, took) = passes_logged(run);
        if now > before {
            return (took, added);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no pass of the long-running run after the poke: {}",
        run.stderr()
    );
}

/// A spec changed by hand (break glass, so admission lets it through) is put back by a fresh
/// process: its generation moved, so the settled record no longer holds and the whole pass runs,
/// the release parsed (its values verdict reused: no value decrypted) and the objects read whole;
/// one instance written.
async fn repaired_by_a_fresh_process(env: &Env, dir: &Path, namespace: &str, instances: usize) {
    let name = edited_by_hand(env, namespace).await;
    let audit = super::server::Audit::mark(&env.cp.audit_log);
    let mut cmd = shipped(operator_cmd(env, dir));
    cmd.arg("--once").env("RUST_LOG", STEP_LOG);
    let (ok, took, _, proc) = timed_once(&mut cmd, dir, "repair");
    assert!(ok, "repairing pass: {}\n{}", proc.stdout(), proc.stderr());
    eprintln!(
        "{instances}: a fresh process repairs one edited instance: {} ms, by step: {}",
        took.as_millis(),
        step_times(&proc.stderr())
    );
    assert_eq!(
        last_step(&proc.stderr()).as_deref(),
        Some("Publish"),
        "the whole pass runs: {}",
        proc.stderr()
    );
    assert_eq!(
        reused_verdict(&proc.stderr()),
        Some(true),
        "a new process reuses the values verdict the first apply recorded: {}",
        proc.stderr()
    );
    declared_back(env, namespace, &name, "the fresh process").await;
    let writes: Vec<String> = audit
        .writes_by(OPERATOR_USER)
        .iter()
        .filter(|w| w.contains("applicationinstances"))
        .cloned()
        .collect();
    // Its apply, and the merge patch that removes the field added by hand.
    assert!(
        writes.len() == 2
            && writes.iter().all(|w| w
                .split([' ', '?'])
                .nth(1)
                .is_some_and(|path| path.ends_with(&format!("/applicationinstances/{name}")))),
        "only the edited instance is written: {writes:?}"
    );
}

/// A spec changed by hand (break glass, so admission lets it through) is put back by the next pass
/// of the long-running process, which reads the live objects from its watch: there it knows the
/// spec by digest only, and learns of the field added by hand from its apply's answer.
async fn repaired_by_a_pass(env: &Env, cluster: &str, namespace: &str, run: &Proc) {
    let name = edited_by_hand(env, namespace).await;
    // The watch must have delivered the edit before the pass reads the store.
    wait_for("the edit to be visible", 30, || async {
        let live = super::server::get(
            &env.admin,
            super::AI,
            "ApplicationInstance",
            Some(namespace),
            &name,
        )
        .await?;
        (live.data["spec"]["values"]["host"] == "changed-by-hand.example.org").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    poked_pass(env, cluster, run, 2).await;
    declared_back(env, namespace, &name, "the long-running pass").await;
}

/// Changes the first instance's spec by hand (break glass, so admission lets it through); its name.
async fn edited_by_hand(env: &Env, namespace: &str) -> String {
    let hand = super::server::break_glass_client(&env.admin, &env.cp.kubeconfig).await;
    let name = Scale::instance_name(0);
    super::server::merge_patch(
        &hand,
        super::AI,
        "ApplicationInstance",
        Some(namespace),
        &name,
        // A declared field changed, and one the release does not declare added: server-side
        // apply puts the first back; the second needs the merge patch that removes it.
        &json!({"spec": {"values": {"host": "changed-by-hand.example.org", "addedByHand": "x"}}}),
    )
    .await
    .expect("break-glass edit");
    name
}

/// Asserts that `who` put the declared spec of the instance [`edited_by_hand`] back.
async fn declared_back(env: &Env, namespace: &str, name: &str, who: &str) {
    let live = super::server::get(
        &env.admin,
        super::AI,
        "ApplicationInstance",
        Some(namespace),
        name,
    )
    .await
    .expect("the instance");
    assert_eq!(
        live.data["spec"]["values"]["host"],
        json!(format!("{name}.example.org")),
        "{who} put the declared spec back"
    );
    assert_eq!(
        live.data["spec"]["values"].get("addedByHand"),
        None,
        "{who} removed the field the release does not declare"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_smoke() {
    let test = test_name!();
    let Some(env) = env(test).await else {
        return;
    };
    if env.shared.thirdparty.is_none() {
        skipped(test, "../shared/thirdparty-crds is absent (the Flux CRDs)");
        return;
    }
    // One instance a namespace, so that the HelmRelease watches (one per namespace) outnumber every
    // other connection the process may hold.
    let namespaces = 40;
    let scale = Scale {
        namespaces,
        ..scale_of(namespaces)
    };
    let row = scenario(&env, scale, Duration::from_secs(1)).await;
    assert_eq!(row.noop_writes, 0, "an unchanged pass writes nothing");
    assert!(row.first_apply_writes >= 20, "{row:?}");
    assert!(row.children.is_some(), "every child is created: {row:?}");
    assert_eq!(row.ready_latency.len(), 10, "Ready mirrored: {row:?}");
    assert!(
        row.rest_pass.is_some(),
        "the long-running pass ran: {row:?}"
    );
    assert_eq!(
        row.rest_pass_writes, 0,
        "the long-running no-op pass writes nothing"
    );
    assert!(row.run_peak_kib > 0 && row.cluster_bytes > row.inventory_bytes);
    assert_eq!(
        row.throttled, 0,
        "nothing the process sent was answered 429: {row:?}"
    );
    // HTTP/2: the 40 watches share a connection (over HTTP/1.1 each held one of its own).
    assert!(
        row.api_connections > 0 && row.api_connections < namespaces,
        "the HelmRelease watches share connections: {} to the API server for {namespaces} namespaces",
        row.api_connections
    );
    // The bench's own plumbing: the binary it runs is the one under test.
    assert!(Path::new(BIN).is_file());
}

/// The sizes of `VWS_SCALE_SIZES` (comma-separated; default 1000), each after the last one's
/// namespaces are gone. Run by `scripts/scale.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the scale bench: scripts/scale.sh runs it against the real control plane"]
async fn scale_bench() {
    let Some(env) = env(test_name!()).await else {
        return;
    };
    let sizes: Vec<usize> = std::env::var("VWS_SCALE_SIZES")
        .unwrap_or_else(|_| "1000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("VWS_SCALE_SIZES: numbers"))
        .collect();
    let rest = Duration::from_secs(
        std::env::var("VWS_SCALE_REST_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let mut rows = Vec::new();
    let last = sizes.len().saturating_sub(1);
    for (at, size) in sizes.into_iter().enumerate() {
        rows.push(scenario(&env, scale_of(size), rest).await);
        if at == last {
            // Nothing runs after it: no need to wait for its namespaces to go.
            break;
        }
        let prefix = format!("scale-{size}-");
        wait_for("the last size's namespaces to be gone", 1800, || async {
            let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.admin.clone());
            let names = api.list_metadata(&ListParams::default()).await.ok()?;
            let any = names.items.iter().any(|n| {
                n.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(&prefix))
            });
            (!any).then_some(())
        })
        .await;
    }
    let out = table(&rows);
    println!("{out}");
    if let Ok(path) = std::env::var("VWS_SCALE_OUT") {
        std::fs::write(path, &out).expect("write the table");
    }
}

/// The `run --once` processes' log filter: warnings, and the pass's time per step.
const STEP_LOG: &str = "warn,vworkspace_controller::cluster::pass=debug";

/// `Step ms, Step ms, …` from the "pass step ended" lines of a JSON log.
/// Whether the pass logged in `log` took the values verdict from the status (`None`: not logged).
fn reused_verdict(log: &str) -> Option<bool> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|l| l["message"] == "values checked")
        .and_then(|l| l["reused_verdict"].as_bool())
}

/// The last step a pass logged in `log` ("pass step ended").
fn last_step(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|l| l["message"] == "pass step ended")
        .find_map(|l| l["step"].as_str().map(str::to_owned))
}

fn step_times(log: &str) -> String {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|l| l["message"] == "pass step ended")
        .map(|l| {
            format!(
                "{} {} ms",
                l["step"].as_str().unwrap_or("?"),
                l["duration_ms"]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
