//! SSHSIG armor and blob parsing and verification, against a fixed trusted key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vworkspace_core::trust::signers::AllowedSigners;

const SIGNERS: &str =
    "alice ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkKRaHHpI7DSMDqmnlQa5sUVQtHTXlrpxunuSIzUgOF\n";

fuzz_target!(|data: &[u8]| {
    let Ok(signers) = AllowedSigners::parse(SIGNERS, "fuzz") else {
        return;
    };
    let _ = vworkspace_core::trust::sshsig::verify(
        data,
        b"message",
        "git",
        &signers,
        jiff::Timestamp::UNIX_EPOCH,
    );
});
