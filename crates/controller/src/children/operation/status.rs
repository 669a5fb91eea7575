//! The `Operation` status of a run: phase, reason, message, start and completion times belong to
//! the run (its id), outputs. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::children::declared;
use crate::children::engines;
use vworkspace_core::crd::{OperationOutputs, OperationPhase, OperationStatus};

/// Whether a final status is a refusal that is judged again (not a run that happened): a template not
/// allowed yet, an Operation not declared, or an altered spec.
pub fn is_refusal(reason: Option<&str>) -> bool {
    matches!(
        reason,
        Some(engines::TEMPLATE_NOT_ALLOWED | declared::NOT_DECLARED | declared::SPEC_DIFFERS)
    )
}

/// The next status of a run: pure, so that phases and timestamps are unit-tested.
pub fn next_status(
    previous: Option<&OperationStatus>,
    run_id: &str,
    phase: OperationPhase,
    reason: String,
    message: String,
    outputs: Option<OperationOutputs>,
    now: jiff::Timestamp,
) -> OperationStatus {
    let same_run = previous.is_some_and(|p| p.run_id.as_deref() == Some(run_id));
    let start_time = previous
        .filter(|_| same_run)
        .and_then(|p| p.start_time.clone())
        .or(Some(Time(now)));
    let completion_time = if engines::is_final(Some(phase)) {
        previous
            .filter(|_| same_run)
            .and_then(|p| p.completion_time.clone())
            .or(Some(Time(now)))
    } else {
        None
    };
    OperationStatus {
        phase: Some(phase),
        run_id: Some(run_id.to_owned()),
        reason: Some(reason),
        message: (!message.is_empty()).then_some(message),
        start_time,
        completion_time,
        outputs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_completion_times_belong_to_the_run() {
        let t = |s| jiff::Timestamp::from_second(s).expect("time");
        let running = next_status(
            None,
            "r1",
            OperationPhase::Running,
            "Active".into(),
            String::new(),
            None,
            t(10),
        );
        assert_eq!(running.start_time, Some(Time(t(10))));
        assert_eq!(running.completion_time, None);
        let done = next_status(
            Some(&running),
            "r1",
            OperationPhase::Succeeded,
            "Complete".into(),
            String::new(),
            None,
            t(20),
        );
        assert_eq!(done.start_time, Some(Time(t(10))));
        assert_eq!(done.completion_time, Some(Time(t(20))));
        let again = next_status(
            Some(&done),
            "r1",
            OperationPhase::Succeeded,
            "Complete".into(),
            String::new(),
            None,
            t(30),
        );
        assert_eq!(again, done, "a finished run's status does not move");
        let next_run = next_status(
            Some(&done),
            "r2",
            OperationPhase::Pending,
            "Created".into(),
            String::new(),
            None,
            t(40),
        );
        assert_eq!(next_run.start_time, Some(Time(t(40))));
        assert_eq!(next_run.completion_time, None);
    }
}
