//! What `verify` and `demo` print for a passing and a refused ref.

use std::io::Write;

use vworkspace_core::pipeline::{self, TrustConfig};

/// Writes the lines `verify` prints for a passing ref.
pub fn report_pass(
    verified: &pipeline::VerifiedIntent,
    config: &TrustConfig,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let commit = verified.commit();
    let release = verified.release();
    let intent = verified.intent();
    writeln!(
        out,
        "ok      commit {} signed by {} ({})",
        commit.id(),
        commit.signer().principal,
        commit.signer().fingerprint
    )?;
    let signers: Vec<&str> = release
        .signers()
        .iter()
        .map(|s| s.principal.as_str())
        .collect();
    writeln!(
        out,
        "ok      release serial {} for cluster {}, expires {}, signed by {} of {} required keys: {}",
        release.serial(),
        config.cluster,
        release.expires(),
        signers.len(),
        config.release.threshold,
        signers.join(", ")
    )?;
    writeln!(
        out,
        "ok      intent: {} ApplicationInstance(s), {} Operation(s), {} files covered by the release",
        intent.application_instances.len(),
        intent.operations.len(),
        release.manifest().files.len()
    )?;
    if config.identities.is_some() {
        writeln!(
            out,
            "ok      values: {} encrypted value(s) decrypt",
            verified.values_checked()
        )?;
    } else {
        writeln!(
            out,
            "skipped values: no --identity given; encrypted values were checked for form only"
        )?;
    }
    for note in verified.notes() {
        writeln!(out, "note    {note}")?;
    }
    Ok(())
}

/// A refused ref, as `verify` reports it: a bounded reason and one finding a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reason, as in the `Ready` condition (`CommitSignatureInvalid`).
    pub reason: &'static str,
    /// What was refused, one finding a line.
    pub findings: Vec<String>,
}

impl From<&pipeline::PassError> for Refusal {
    fn from(refused: &pipeline::PassError) -> Self {
        Refusal {
            reason: refused.reason(),
            findings: refused.findings(),
        }
    }
}

impl From<&vworkspace_controller::Error> for Refusal {
    fn from(refused: &vworkspace_controller::Error) -> Self {
        Refusal {
            reason: refused.reason(),
            findings: refused.findings(),
        }
    }
}

/// Writes the lines `verify` prints for a refused ref: one finding a line.
pub fn report_refusal(refused: &Refusal, out: &mut dyn Write) -> std::io::Result<()> {
    for finding in &refused.findings {
        writeln!(out, "refused {}: {finding}", refused.reason)?;
    }
    Ok(())
}
