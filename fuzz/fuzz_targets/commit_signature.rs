//! Signature extraction from raw commit objects (gpgsig headers, continuation lines).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vworkspace_core::repository::FetchedCommit;
use vworkspace_core::trust::signers::AllowedSigners;

fuzz_target!(|data: &[u8]| {
    let commit = FetchedCommit {
        id: "fuzz".into(),
        raw: data.to_vec(),
        tree: String::new(),
        parents: Vec::new(),
        committer_time: jiff::Timestamp::UNIX_EPOCH,
    };
    let _ = vworkspace_core::trust::commit_signature::verify_commit(
        &commit,
        &AllowedSigners::default(),
        jiff::Timestamp::UNIX_EPOCH,
    );
});
