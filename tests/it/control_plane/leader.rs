//! Leader election: two replicas, one reconciles; a leader paused mid-pass writes nothing after its
//! Lease is gone.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_leader_election_one_reconciles() {
    scenario!("cp-leader", &["cp-leader-a"])
        .webhook()
        .run(async |env, intent, scope| {
            intent.add_instance("cp-leader-a", "nextcloud", "one");
            intent.release(&[]);
            intent.commit("release 1");
            scope.also_delete(
                "coordination.k8s.io/v1",
                "Lease",
                Some(SYSTEM),
                "vworkspace-app-operator",
            );
            delete(
                &env.admin,
                "coordination.k8s.io/v1",
                "Lease",
                Some(SYSTEM),
                "vworkspace-app-operator",
            )
            .await;
            let mut replicas = Vec::new();
            for name in ["replica-a", "replica-b"] {
                let dir = scope.dir.join(name);
                std::fs::create_dir_all(&dir).expect("mkdir");
                let mut cmd = operator_cmd(env, &dir);
                cmd.arg("--leader-election").env("POD_NAME", name);
                replicas.push((name, Proc::spawn(&mut cmd, &dir, name)));
            }
            let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
                Api::namespaced(env.admin.clone(), SYSTEM);
            let holder = wait_for("a leader", 60, || async {
                leases
                    .get_opt("vworkspace-app-operator")
                    .await
                    .ok()
                    .flatten()?
                    .spec?
                    .holder_identity
            })
            .await;
            wait_for("the Cluster reconciled by the leader", 60, || async {
                let cluster = scope.cluster(&env.admin).await;
                (cluster["status"]["lastAppliedSerial"] == 1).then_some(())
            })
            .await;
            // Let the follower try a few times (it retries every 2 s).
            tokio::time::sleep(Duration::from_secs(5)).await;
            let leading: Vec<&str> = replicas
                .iter()
                .filter(|(_, p)| p.stderr().contains("\"leading\""))
                .map(|(n, _)| *n)
                .collect();
            assert_eq!(leading, vec![holder.as_str()], "exactly one replica leads");

            // The leader stops; the other takes the Lease over once it expires (15 s) and reconciles.
            let (leader_index, _) = replicas
                .iter()
                .enumerate()
                .find(|(_, (n, _))| *n == holder)
                .expect("the holder is a replica");
            let (_, mut leader) = replicas.remove(leader_index);
            leader.stop();
            let (other, follower) = &replicas[0];
            let new_holder = wait_for("the follower to take over", 60, || async {
                let h = leases
                    .get_opt("vworkspace-app-operator")
                    .await
                    .ok()
                    .flatten()?
                    .spec?
                    .holder_identity?;
                (h != holder).then_some(h)
            })
            .await;
            assert_eq!(new_holder, *other);
            wait_for("the new leader to say so", 20, || async {
                follower.stderr().contains("\"leading\"").then_some(())
            })
            .await;
        })
        .await;
}

/// Sends `sig` (`-STOP`, `-CONT`) to a process's whole group.
pub(super) fn signal_group(p: &Proc, sig: &str) {
    let status = Command::new("kill")
        .args([sig, "--", &format!("-{}", p.child.id())])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig}");
}

/// The time the API server received an audit event's request.
pub(super) fn received(event: &Value) -> jiff::Timestamp {
    event["requestReceivedTimestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("requestReceivedTimestamp: {event}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_mid_pass_writes_nothing_after_its_lease_is_gone() {
    let ns = "cp-fence-a";
    scenario!("cp-fence", &[ns])
        .webhook()
        .run(async |env, intent, scope| {
    intent.add_instance(ns, "seed", "zero");
    intent.release(&[]);
    intent.commit("release 1");
    let lease_name = "vworkspace-app-operator";
    scope.also_delete("coordination.k8s.io/v1", "Lease", Some(SYSTEM), lease_name);
    delete(
        &env.admin,
        "coordination.k8s.io/v1",
        "Lease",
        Some(SYSTEM),
        lease_name,
    )
    .await;
    let dir = scope.dir.join("leader");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = operator_cmd(env, &dir);
    cmd.arg("--leader-election").env("POD_NAME", "replica-a");
    let mut leader = Proc::spawn(&mut cmd, &dir, "leader");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.admin.clone(), SYSTEM);
    wait_for("replica-a to lead", 60, || async {
        let holder = leases
            .get_opt(lease_name)
            .await
            .ok()??
            .spec?
            .holder_identity?;
        (holder == "replica-a").then_some(())
    })
    .await;
    wait_for("the first release applied by the leader", 90, || async {
        (scope.cluster(&env.admin).await["status"]["lastAppliedSerial"] == 1).then_some(())
    })
    .await;

    // A release with many instances (applied 16 at a time, apply::WRITE_CONCURRENCY: 400 make a
    // pass long enough to be paused mid-way), and the Cluster touched so that the leader starts it
    // now.
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
        &json!({"metadata": {"annotations": {"gitops.vworkspace.io/requested-at": "fence-test"}}}),
    )
    .await
    .expect("touch the Cluster");
    // Paused the moment its first instance of the pass is written (a process pause, as a long GC
    // or a frozen VM): its renewals stop mid-pass.
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
    signal_group(&leader, "-STOP");
    let paused = jiff::Timestamp::now();
    // Another replica takes the Lease (as a follower does once it saw no renewal for 15 s; here at
    // once, which only makes the old leader's window shorter: it must not write past its fence).
    let now = paused.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    apply(
        &env.admin,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": lease_name, "namespace": SYSTEM},
                "spec": {"holderIdentity": "usurper", "leaseDurationSeconds": 15,
                         "acquireTime": now, "renewTime": now}}),
    )
    .await
    .expect("the Lease taken by another holder");
    // Past the old leader's fence: its last renewal was sent at most 2 s before the pause, and it
    // may write for 10 s after one (RENEW_DEADLINE). A generous margin on a loaded machine.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let written_while_leading = {
        let mut n = 0;
        for i in 0..total {
            if exists(
                &env.admin,
                AI,
                "ApplicationInstance",
                ns,
                &format!("app-{i:03}"),
            )
            .await
            {
                n += 1;
            }
        }
        n
    };
    println!("{written_while_leading} of {total} instances written before the pause");
    assert!(
        written_while_leading < total,
        "the pause came mid-pass ({written_while_leading} of {total} written before it)"
    );
    let resumed = jiff::Timestamp::now();
    signal_group(&leader, "-CONT");
    let status = leader.wait_timeout(60);
    let stderr = leader.stderr();
    assert!(
        status.is_some(),
        "the old leader stops after it lost the Lease: {stderr}"
    );
    // The API server's record of the operator's ServiceAccount after the resume. Nothing the old
    // leader *starts* after its fence reaches the server: no further instance, no status, no Lease
    // write. The applies the pass had handed to the HTTP client just before the pause can still land
    // (the client's connection tasks send them when the process resumes, received a few ms after
    // it): at most apply::WRITE_CONCURRENCY of them, the writes a pass has in flight at once. A fence
    // judged by the leader's own clock cannot recall a request already handed over; only the API
    // server could refuse it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late: Vec<(jiff::Timestamp, String)> = audit
        .since()
        .iter()
        .filter(|e| e["user"]["username"] == OPERATOR_USER)
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
        .filter(|e| received(e) >= resumed)
        .map(|e| {
            (
                received(e),
                format!(
                    "{} {} {} ({})",
                    e["requestReceivedTimestamp"].as_str().unwrap_or_default(),
                    e["verb"].as_str().unwrap_or_default(),
                    e["requestURI"].as_str().unwrap_or_default(),
                    e["responseStatus"]["code"]
                ),
            )
        })
        .collect();
    println!("operator writes received after the resume: {late:#?}");
    // The writes in flight at the pause, sent as soon as the process runs again: the pass's instance
    // applies, and the instance controller's status patches and Events (its reconciles also run
    // 16 at a time, inside the same fence). Anything else, or anything later, was started after
    // the fence. (With a pod-bound token the API server refuses even these:
    // control_plane::policies::a_paused_leaders_writes_sent_after_the_takeover_are_refused_by_the_api_server.)
    let in_flight_at_pause = |(at, w): &(jiff::Timestamp, String)| {
        let instance_write = w.contains(" patch ") && w.contains("/applicationinstances/app-");
        let child_event =
            w.contains(" create ") && w.contains(&format!("/api/v1/namespaces/{ns}/events"));
        (instance_write || child_event)
            && at.duration_since(resumed) < jiff::SignedDuration::from_secs(5)
    };
    assert!(
        late.len() <= 2 * vworkspace_controller::cluster::apply::WRITE_CONCURRENCY
            && late.iter().all(in_flight_at_pause),
        "writes by the old leader after its fence (paused at {paused}, resumed at {resumed}), beyond \
         the applies in flight at the pause: {late:#?}\n{stderr}"
    );
    let mut after = 0;
    for i in 0..total {
        if exists(
            &env.admin,
            AI,
            "ApplicationInstance",
            ns,
            &format!("app-{i:03}"),
        )
        .await
        {
            after += 1;
        }
    }
    assert!(
        after <= written_while_leading + late.len(),
        "no instance started after the resume ({after} now, {written_while_leading} before)"
    );
    let holder = leases
        .get_opt(lease_name)
        .await
        .expect("get Lease")
        .and_then(|l| l.spec?.holder_identity);
    assert_eq!(
        holder.as_deref(),
        Some("usurper"),
        "the Lease is not taken back"
    );
    assert!(
        stderr.contains("not renewed in time") || stderr.contains("lost the leader Lease"),
        "it says why it stopped: {stderr}"
    );
        })
        .await;
}
