//! The whole pass at scale, side by side with the stock tools.
//!
//! A generator builds an intent repository with N namespaces, M ApplicationInstances, K Operations and
//! V encrypted values, a commit signed by the real `git commit -S` and a 2-of-2 release (ours plus a
//! co-signature by `ssh-keygen -Y sign`). The bench then times, as medians:
//! the full pass up to the finished plan; the pass on an unchanged commit; each stage alone; raw
//! sha2/ed25519 throughput on the same bytes; the same verification done by the stock tools
//! (`git verify-commit`, `ssh-keygen -Y verify`, `sha256sum -c`, `age -d` per value); and the peak RSS
//! of one pass in a fresh process. It repeats the full pass at several sizes to show how cost grows.
//!
//! `cargo bench --bench pass` runs the scale (1,000 / 10,000 / 2,000 / 5,000); without
//! `--bench` (as `cargo test --all-targets` runs it) a small size runs once.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vworkspace_core::pipeline::{self, PassMemo, TrustConfig};
use vworkspace_core::repository::{GitRef, LocalRepository};
use vworkspace_core::secrets::{self, Identities};
use vworkspace_core::trust::signers::AllowedSigners;
use vworkspace_testkit::{IntentRepo, ReleaseFrom, Scale};

const BIN: &str = env!("CARGO_BIN_EXE_vworkspace-operator");

/// The generated repository of cluster `bench` (vworkspace-testkit: keys from `ssh-keygen`, values
/// bound to their place, a commit signed by `git commit -S`, a release by our `release` co-signed by
/// `ssh-keygen -Y sign`), and the trust inputs read back from its files.
struct Generated {
    intent: IntentRepo,
    config: TrustConfig,
}

impl std::ops::Deref for Generated {
    type Target = IntentRepo;

    fn deref(&self) -> &IntentRepo {
        &self.intent
    }
}

fn cmd(dir: &Path, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn ok(mut c: Command) {
    let status = c.status().expect("runs");
    assert!(status.success(), "{c:?}");
}

fn generate(scale: Scale) -> Generated {
    let intent = IntentRepo::builder(BIN, "bench")
        .release_from(ReleaseFrom::WorkTree)
        .generated(scale)
        .build();
    let config = trust_config(&intent.root);
    Generated { intent, config }
}

/// The cluster-side inputs of the generated repository, read back from the files `generate` wrote.
fn trust_config(root: &Path) -> TrustConfig {
    let signers = |f: &str| {
        AllowedSigners::parse(&std::fs::read_to_string(root.join(f)).expect("read"), f)
            .expect("signers")
    };
    let identity = std::fs::read_to_string(root.join("cluster.agekey")).expect("identity");
    TrustConfig::builder(
        "bench",
        signers("commit_signers"),
        signers("release_signers"),
        std::num::NonZeroUsize::MIN.saturating_add(1),
    )
    .identities(Some(
        Identities::parse(&identity, "cluster.agekey").expect("identity"),
    ))
    .build()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn full_pass(g: &Generated, repo: &LocalRepository, head: &str) -> usize {
    let verified = pipeline::verify_commit_id(repo, head, &g.config).expect("pass");
    vworkspace_core::plan::desired(&verified)
        .expect("plan")
        .objects()
        .len()
}

/// Peak RSS of one full pass in a fresh process (this bench re-executed), in KiB.
fn peak_rss_kib(g: &Generated) -> u64 {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .env("VW_BENCH_CHILD", &g.root)
        .output()
        .expect("child");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn child_pass(root: &Path) {
    let config = trust_config(root);
    let repo = LocalRepository::open(&root.join("repo")).expect("open");
    let verified =
        pipeline::verify_ref(&repo, &GitRef::Branch("main".into()), &config).expect("pass");
    std::hint::black_box(vworkspace_core::plan::desired(&verified).expect("plan"));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0");
    println!("{hwm}");
}

/// The same verification with the stock tools, one process per check as a shell script would do it.
fn stock(g: &Generated, head: &str) -> Duration {
    let start = Instant::now();
    let mut c = cmd(
        &g.repo,
        "git",
        &[
            "-c",
            "gpg.ssh.allowedSignersFile=../commit_signers",
            "verify-commit",
            head,
        ],
    );
    ok(std::mem::replace(&mut c, Command::new("true")));
    for (signer, file) in [("odoo", "odoo-release.sig"), ("alice", "engineer.sig")] {
        let mut verify = cmd(
            &g.repo,
            "ssh-keygen",
            &[
                "-Y",
                "verify",
                "-f",
                "../release_signers",
                "-I",
                signer,
                "-n",
                "vworkspace-release",
                "-s",
                &format!("clusters/bench/release.sigs/{file}"),
            ],
        );
        verify.stdin(
            std::fs::File::open(g.repo.join("clusters/bench/release.yaml")).expect("manifest"),
        );
        ok(verify);
    }
    // sha256sum -c over every listed file (the manifest rewritten as a checklist).
    let manifest =
        std::fs::read_to_string(g.repo.join("clusters/bench/release.yaml")).expect("manifest");
    let checklist: String = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split_once("\": sha256:"))
        .map(|(path, hex)| format!("{hex}  {path}\n"))
        .collect();
    let mut sha = cmd(
        &g.repo.join("clusters/bench"),
        "sha256sum",
        &["-c", "--quiet", "-"],
    );
    sha.stdin(Stdio::piped());
    let mut child = sha.spawn().expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(checklist.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success());
    for armored in g.generated_values() {
        let mut age = cmd(&g.root, "age", &["-d", "-i", "cluster.agekey"]);
        age.stdin(Stdio::piped());
        let mut child = age.spawn().expect("age");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(armored.as_bytes())
            .expect("write");
        assert!(child.wait().expect("wait").success());
    }
    start.elapsed()
}

fn main() {
    if let Ok(root) = std::env::var("VW_BENCH_CHILD") {
        child_pass(Path::new(&root));
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let runs = if full { 5 } else { 1 };
    let main_scale = if full {
        Scale {
            namespaces: 1_000,
            instances: 10_000,
            operations: 2_000,
            values: 5_000,
        }
    } else {
        Scale {
            namespaces: 5,
            instances: 20,
            operations: 4,
            values: 10,
        }
    };

    let g = generate(main_scale);
    let repo = LocalRepository::open(&g.repo).expect("open");
    let head = repo.resolve(&GitRef::Branch("main".into())).expect("head");
    let files = main_scale.instances + main_scale.operations;
    let objects = full_pass(&g, &repo, &head);
    assert_eq!(objects, files);

    let pass = time(runs, || full_pass(&g, &repo, &head));
    let mut memo = PassMemo::default();
    memo.verify_ref(&repo, &GitRef::Branch("main".into()), &g.config)
        .expect("memo");
    let unchanged = time(runs.max(5), || {
        memo.verify_ref(&repo, &GitRef::Branch("main".into()), &g.config)
            .expect("memo")
    });

    // Stages alone.
    let fetched = repo.read_commit(&head).expect("commit");
    let t_commit = time(runs, || {
        vworkspace_core::trust::commit_signature::verify_commit(
            &fetched,
            &g.config.commit_signers,
            g.config.now,
        )
        .expect("commit")
    });
    let verified_commit = vworkspace_core::trust::commit_signature::verify_commit(
        &fetched,
        &g.config.commit_signers,
        g.config.now,
    )
    .expect("commit");
    let t_tree = time(runs, || {
        verified_commit
            .read_cluster_tree(&repo, "bench", &g.config.limits)
            .expect("tree")
    });
    let tree = verified_commit
        .read_cluster_tree(&repo, "bench", &g.config.limits)
        .expect("tree");
    let t_release = time(runs, || {
        vworkspace_core::trust::release::verify(
            verified_commit.clone(),
            tree.clone(),
            &g.config.release,
            g.config.now,
            &g.config.limits,
        )
        .expect("release")
    });
    let t_clone = time(runs, || (verified_commit.clone(), tree.clone()));
    let t_intent = time(runs, || {
        vworkspace_core::intent::parse_tree(&tree, &g.config.limits).expect("intent")
    });
    let intent = vworkspace_core::intent::parse_tree(&tree, &g.config.limits).expect("intent");
    let identities = g.config.identities.clone().expect("identities");
    let t_values = time(runs, || {
        let mut n = 0;
        for item in &intent.application_instances {
            let instance = item.resource.get().expect("read back");
            if let Some(values) = &instance.spec.values {
                let at = secrets::ValueContext {
                    cluster: "bench".into(),
                    namespace: item.namespace.clone(),
                    instance: item.name.clone(),
                };
                n += secrets::decrypt_values(
                    values,
                    &at,
                    &identities,
                    &secrets::ValuesPolicy {
                        require_bound: true,
                    },
                    &g.config.limits,
                )
                .expect("values")
                .len();
            }
        }
        n
    });
    let verified = pipeline::verify_commit_id(&repo, &head, &g.config).expect("pass");
    let t_plan = time(runs, || {
        vworkspace_core::plan::desired(&verified).expect("plan")
    });

    // Raw crate throughput on the same bytes: SHA-256 of every file, and two ed25519 verifications.
    use sha2::Digest as _;
    let blobs: Vec<&Vec<u8>> = tree
        .entries()
        .values()
        .filter_map(|e| match e {
            vworkspace_core::repository::TreeEntry::File(b) => Some(b),
            _ => None,
        })
        .collect();
    let bytes: usize = blobs.iter().map(|b| b.len()).sum();
    let t_sha_raw = time(runs.max(5), || {
        blobs
            .iter()
            .map(|b| sha2::Sha256::digest(b)[0])
            .fold(0u8, |a, b| a ^ b)
    });
    let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .expect("key");

    // The same crypto through our code paths: file digests as the release check computes them, and
    // the SSHSIG verification the release check runs, against the raw crates above.
    let t_sha_ours = time(runs.max(5), || {
        blobs
            .iter()
            .map(|b| vworkspace_core::trust::release::sha256_digest(b).len())
            .sum::<usize>()
    });
    let manifest = match tree.entries().get("release.yaml") {
        Some(vworkspace_core::repository::TreeEntry::File(b)) => b.clone(),
        _ => Vec::new(),
    };
    let ours_sig =
        vworkspace_core::trust::sshsig::sign(&manifest, "vworkspace-release", &key).expect("sign");
    let own_signers = AllowedSigners::parse(
        &format!("k {}\n", key.public_key().to_openssh().expect("pub")),
        "k",
    )
    .expect("signers");
    let raw_sig: ssh_key::SshSig = ours_sig.parse().expect("sig");
    let t_ed_ours = time(runs.max(5), || {
        (0..3).all(|_| {
            vworkspace_core::trust::sshsig::verify(
                ours_sig.as_bytes(),
                &manifest,
                "vworkspace-release",
                &own_signers,
                g.config.now,
            )
            .is_ok()
        })
    });
    let t_ed_raw = time(runs.max(5), || {
        (0..3).all(|_| {
            key.public_key()
                .verify("vworkspace-release", &manifest, &raw_sig)
                .is_ok()
        })
    });

    let rss = peak_rss_kib(&g);
    let t_stock = stock(&g, &head);

    println!(
        "pass benchmark: {} namespaces, {} ApplicationInstances, {} Operations, {} encrypted values; median of {runs} run(s)",
        main_scale.namespaces, main_scale.instances, main_scale.operations, main_scale.values
    );
    println!("| measure | median |");
    println!("|---|---|");
    println!(
        "| full pass to the finished plan | {} ({:.0} files/s) |",
        ms(pass),
        files as f64 / pass.as_secs_f64()
    );
    println!(
        "| unchanged commit (PassMemo) | {:.3} ms |",
        unchanged.as_secs_f64() * 1e3
    );
    println!("| verify commit signature | {} |", ms(t_commit));
    println!("| read cluster tree (gix) | {} |", ms(t_tree));
    println!(
        "| verify release (2 signatures + SHA-256 of {bytes} bytes) | {} (of which cloning inputs {}) |",
        ms(t_release),
        ms(t_clone)
    );
    println!("| parse + validate intent (all cores) | {} |", ms(t_intent));
    println!(
        "| decrypt + check {} values (one core; the pass uses all) | {} |",
        main_scale.values,
        ms(t_values)
    );
    println!("| plan | {} |", ms(t_plan));
    println!(
        "| peak RSS of one pass (fresh process) | {:.1} MiB |",
        rss as f64 / 1024.0
    );
    println!(
        "| stock tools (git verify-commit, ssh-keygen -Y verify x2, sha256sum -c, age -d x{}) | {} |",
        main_scale.values,
        ms(t_stock)
    );
    println!(
        "| ratio ours / stock | {:.3} ({:.1}x faster) |",
        pass.as_secs_f64() / t_stock.as_secs_f64(),
        t_stock.as_secs_f64() / pass.as_secs_f64()
    );
    println!(
        "| SHA-256 of every file: ours (digest strings) / raw sha2 | {:.2}x ({} / {}) |",
        t_sha_ours.as_secs_f64() / t_sha_raw.as_secs_f64(),
        ms(t_sha_ours),
        ms(t_sha_raw)
    );
    println!(
        "| 3 SSHSIG verifications of release.yaml: ours / raw ssh-key | {:.2}x ({:.3} ms / {:.3} ms) |",
        t_ed_ours.as_secs_f64() / t_ed_raw.as_secs_f64(),
        t_ed_ours.as_secs_f64() * 1e3,
        t_ed_raw.as_secs_f64() * 1e3
    );
    drop(g);

    if full {
        println!();
        println!("| instances | operations | values | full pass | per instance |");
        println!("|---|---|---|---|---|");
        for instances in [100, 1_000, 10_000] {
            let scale = Scale {
                namespaces: (instances / 10).max(1),
                instances,
                operations: instances / 5,
                values: instances / 2,
            };
            let g = generate(scale);
            let repo = LocalRepository::open(&g.repo).expect("open");
            let head = repo.resolve(&GitRef::Branch("main".into())).expect("head");
            let t = time(3, || full_pass(&g, &repo, &head));
            println!(
                "| {instances} | {} | {} | {} | {:.1} µs |",
                scale.operations,
                scale.values,
                ms(t),
                t.as_secs_f64() * 1e6 / instances as f64
            );
        }
    }
}
