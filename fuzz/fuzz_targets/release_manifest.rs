//! release.yaml parsing.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vworkspace_core::trust::release::parse_manifest(
        data,
        "demo",
        &vworkspace_core::limits::Limits::default(),
    );
});
