//! Signature extraction from raw commit objects (gpgsig headers, continuation lines).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vworkspace_core::repository::FetchedCommit;
use vworkspace_core::trust::signers::AllowedSigners;

fuzz_target!(|data: &[u8]| {
    // The commit reader (id, tree, parents, committer date) and, on what it accepts, the
    // signature extraction.
    let Ok(commit) = FetchedCommit::from_raw(data.to_vec()) else {
        return;
    };
    let _ = vworkspace_core::trust::commit_signature::verify_commit(
        &commit,
        &AllowedSigners::default(),
        jiff::Timestamp::UNIX_EPOCH,
    );
});
