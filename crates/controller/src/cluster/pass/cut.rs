//! The report of a pass cut before it finished: at its deadline, or because the process stops.

use vworkspace_core::crd::Cluster;
use vworkspace_core::reasons as reason;

use crate::cluster::apply;
use crate::cluster::status::PassReport;

/// Why a pass was cut before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// It hit [`crate::cluster::Settings::pass_timeout`].
    Deadline,
    /// The process is stopping ([`crate::cluster::Context::stopping`]).
    Stopping,
}

/// The report of a pass cut before it finished. Whatever it sent is recorded in the inventory (it
/// carries our labels; if the next release drops it, it is pruned). A deadline hit while fetching
/// is the Git server's doing (`FetchFailed`), anywhere else the API server's (`ApiRequestFailed`); a
/// stop is `Interrupted`.
pub(crate) fn deadline_report(
    cluster: &Cluster,
    pass_timeout: std::time::Duration,
    progress: &apply::Progress,
    cut: Cut,
) -> PassReport {
    let (reason, message) = match cut {
        Cut::Stopping => (
            reason::INTERRUPTED,
            "the operator stopped before the pass finished; the next process takes it up"
                .to_owned(),
        ),
        Cut::Deadline => {
            let (reason, culprit) = if progress.fetching() {
                (reason::FETCH_FAILED, "the Git server stalled")
            } else {
                (reason::API_REQUEST_FAILED, "the API server stalled")
            };
            (
                reason,
                format!(
                    "the pass did not finish within {} s ({culprit})",
                    pass_timeout.as_secs()
                ),
            )
        }
    };
    let mut report = PassReport::refused(reason, message, None);
    if progress.wrote() {
        let previous = cluster
            .status
            .as_ref()
            .map(|s| s.inventory.clone())
            .unwrap_or_default();
        report.inventory = Some(progress.inventory(&previous));
    }
    report
}
