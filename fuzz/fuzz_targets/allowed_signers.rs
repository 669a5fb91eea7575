//! git's allowed_signers format.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vworkspace_core::trust::signers::AllowedSigners::parse(text, "fuzz");
    }
});
