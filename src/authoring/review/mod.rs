//! `diff --base <ref>`: review a pull request without the cluster. The plan of the base against the
//! plan of the head, for one cluster or all: objects created, changed field by field, removed (would
//! be pruned), encrypted values redacted (changed or not, copied from where, bound to what with
//! `--identity`), Operations that would run; the head's signature state as the review goes on (commit
//! signed or not, release signatures k of n and who must still sign, serial and expiry); a change
//! to the trust files as its own section.
//!
//! Trust: the base is judged with the trust files it carries (`trust/`) or the flags; the head
//! always with the base's, never its own. Exit codes as `diff`: 0 no changes, 1 changes, 2 usage,
//! 3 the head is refused.

mod annotations;
mod git;
mod judge;
mod locate;
mod markdown;
pub mod model;
mod render;
mod trust;

use std::io::Write;
use std::path::Path;

use vworkspace_core::limits::Limits;
use vworkspace_core::pipeline::TrustConfig;
use vworkspace_core::repository::{FetchedCommit, LocalRepository};
use vworkspace_core::secrets::Identities;
use vworkspace_core::trust::signers::AllowedSigners;

use super::inputs::{OutputFormat, TrustArgs, discover, io_error, parse_ref, usage};
use super::{CliError, ExitCode};
use model::{Finding, Level, Review, Side};

/// The trust inputs the review judges with, and where they came from.
struct TrustInputs {
    commit_signers: AllowedSigners,
    release_signers: AllowedSigners,
    threshold: std::num::NonZeroUsize,
    source: &'static str,
}

fn signers_from(
    flag: Option<&Path>,
    base: &std::collections::BTreeMap<String, Vec<u8>>,
    file: &str,
    base_ref: &str,
) -> Result<AllowedSigners, CliError> {
    if let Some(path) = flag {
        let text =
            std::fs::read_to_string(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
        return AllowedSigners::parse(&text, &path.display().to_string()).map_err(usage);
    }
    let bytes = base.get(file).ok_or_else(|| {
        usage(format!(
            "the base {base_ref} has no {file}: give the trust inputs with --allowed-signers, --release-signers and --threshold (from the cluster, never from the pull request)"
        ))
    })?;
    AllowedSigners::parse(
        &String::from_utf8_lossy(bytes),
        &format!("{base_ref}:{file}"),
    )
    .map_err(usage)
}

fn trust_inputs(
    args: &TrustArgs,
    base: &std::collections::BTreeMap<String, Vec<u8>>,
    base_ref: &str,
) -> Result<TrustInputs, CliError> {
    let flags = args.allowed_signers.is_some() || args.release_signers.is_some();
    let commit_signers = signers_from(
        args.allowed_signers.as_deref(),
        base,
        trust::COMMIT_SIGNERS,
        base_ref,
    )?;
    let release_signers = signers_from(
        args.release_signers.as_deref(),
        base,
        trust::RELEASE_SIGNERS,
        base_ref,
    )?;
    // A threshold the base carries wins over the flag's default; a flag other than 1 wins over both.
    let threshold = match (args.threshold, base.get(trust::THRESHOLD)) {
        (1, Some(bytes)) if !flags => trust::parse_threshold(bytes).map_err(usage)?,
        (n, _) => n,
    };
    Ok(TrustInputs {
        commit_signers,
        release_signers,
        threshold: std::num::NonZeroUsize::new(threshold)
            .ok_or_else(|| usage("--threshold must be at least 1"))?,
        source: if flags { "flags" } else { "base" },
    })
}

fn resolve(repo: &LocalRepository, reference: &str, flag: &str) -> Result<FetchedCommit, CliError> {
    let id = repo.resolve(&parse_ref(reference)).map_err(|e| {
        usage(format!(
            "{flag} {reference}: {e} (on a shallow CI checkout fetch it first: `git fetch --depth 1 origin <branch>`)"
        ))
    })?;
    repo.read_commit(&id)
        .map_err(|e| usage(format!("{flag} {reference}: {e}")))
}

fn identities(args: &TrustArgs) -> Result<Option<Identities>, CliError> {
    if args.identity.is_empty() {
        return Ok(None);
    }
    let mut texts = Vec::new();
    for path in &args.identity {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("--identity {}: {e}", path.display())))?;
        texts.push((path.display().to_string(), text));
    }
    Identities::parse_many(&texts).map(Some).map_err(usage)
}

fn now(args: &TrustArgs) -> Result<jiff::Timestamp, CliError> {
    match &args.now {
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map_err(|e| usage(format!("--now {text:?}: not an RFC 3339 instant: {e}"))),
        None => Ok(jiff::Timestamp::now()),
    }
}

/// Builds the review of `args.git_ref` against `base`.
pub fn review(args: &TrustArgs, base: &str) -> Result<Review, CliError> {
    if vworkspace_controller::source::is_url(&args.repo) {
        return Err(usage(
            "--base reviews a local checkout: clone the repository and fetch the base first",
        ));
    }
    let root = discover(Path::new(&args.repo));
    let repo = LocalRepository::open(&root).map_err(usage)?;
    let base_commit = resolve(&repo, base, "--base")?;
    let head_commit = resolve(&repo, &args.git_ref, "--ref")?;
    let base_trust = git::trust_files(&root, base_commit.id().as_str())?;
    let head_trust = git::trust_files(&root, head_commit.id().as_str())?;
    let inputs = trust_inputs(args, &base_trust, base)?;
    let identities = identities(args)?;
    let now = now(args)?;
    let config = |cluster: &str| -> TrustConfig {
        TrustConfig::builder(
            cluster,
            inputs.commit_signers.clone(),
            inputs.release_signers.clone(),
            inputs.threshold,
        )
        .identities(identities.clone())
        .require_bound_values(args.require_bound_values)
        .require_chart_digests(args.require_chart_digests)
        .max_validity_days(args.max_release_validity_days)
        .limits(Limits::default())
        .now(now)
        .build()
    };
    let clusters = clusters_to_review(args, &root, &base_commit, &head_commit)?;
    let commit = judge::commit_state(&head_commit, &config(""));
    let judge = judge::Judge {
        repo: &repo,
        base: &base_commit,
        head: &head_commit,
        config: &config,
        identities: identities.as_ref(),
    };
    let approvers: Vec<String> = inputs
        .release_signers
        .entries()
        .iter()
        .filter_map(|e| e.principals.first().cloned())
        .collect();
    let trust_files = trust::changes(&base_trust, &head_trust);
    let mut findings = commit_findings(&commit);
    findings.extend(trust::findings(
        &trust_files,
        &approvers,
        inputs.threshold.get(),
    ));
    let mut reviews = Vec::new();
    for cluster in &clusters {
        let (review, cluster_findings) = judge.cluster(cluster);
        reviews.push(review);
        findings.extend(cluster_findings);
    }
    Ok(Review {
        base: Side {
            reference: base.to_owned(),
            commit: base_commit.id().to_string(),
        },
        head: Side {
            reference: args.git_ref.clone(),
            commit: head_commit.id().to_string(),
        },
        trust_source: inputs.source,
        commit,
        base_release_signers: approvers,
        threshold: inputs.threshold.get(),
        clusters: reviews,
        trust_files,
        findings,
    })
}

/// The cluster `--cluster` names, or every cluster directory of the base or the head.
fn clusters_to_review(
    args: &TrustArgs,
    root: &Path,
    base: &FetchedCommit,
    head: &FetchedCommit,
) -> Result<Vec<String>, CliError> {
    if !args.cluster.is_empty() {
        return Ok(vec![args.cluster.clone()]);
    }
    let mut ids = git::cluster_ids(root, base.id().as_str())?;
    ids.extend(git::cluster_ids(root, head.id().as_str())?);
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn commit_findings(commit: &model::CommitState) -> Vec<Finding> {
    let message = match commit {
        model::CommitState::Signed { .. } => return Vec::new(),
        model::CommitState::Unsigned => {
            "the head commit is not signed: sign it with a key of the base's trust/commit_signers (`git commit -S`, gpg.format=ssh)".to_owned()
        }
        model::CommitState::NotTrusted(why) => format!(
            "the head commit's signature is not trusted by the base's trust/commit_signers: {why}"
        ),
    };
    vec![Finding {
        level: Level::Blocking,
        title: "Commit signature".to_owned(),
        file: String::new(),
        line: None,
        message,
    }]
}

/// Refuses `--base` anywhere but on `diff`, and the review formats anywhere but on `diff --base`.
pub fn check_flags(args: &TrustArgs, is_diff: bool) -> Result<(), CliError> {
    if args.base.is_some() {
        return if is_diff {
            Ok(())
        } else {
            Err(usage(
                "--base is for diff: `diff --base <ref>` reviews a change without the cluster",
            ))
        };
    }
    if matches!(
        args.output,
        OutputFormat::Markdown | OutputFormat::Github | OutputFormat::Gitlab
    ) {
        return Err(usage(
            "-o markdown, github and gitlab are for `diff --base <ref>`; use -o text or json",
        ));
    }
    Ok(())
}

/// `diff --base`: the review, written in the format `-o` asks for.
pub fn diff_base(args: &TrustArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let base = args
        .base
        .as_deref()
        .ok_or_else(|| usage("diff --base needs a ref"))?;
    let review = review(args, base)?;
    let text = match args.output {
        OutputFormat::Text => render::text(&review),
        OutputFormat::Json => render::json(&review),
        OutputFormat::Markdown => markdown::comment(&review),
        OutputFormat::Github => annotations::github(&review),
        OutputFormat::Gitlab => annotations::gitlab(&review),
    };
    out.write_all(text.as_bytes()).map_err(io_error)?;
    Ok(review.exit_code())
}
