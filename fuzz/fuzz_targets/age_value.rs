//! age armor and headers in a value leaf: form checks and decryption with a fixed identity.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vworkspace_core::limits::Limits;
use vworkspace_core::secrets::{self, Identities, ValueContext};

fn identities() -> &'static Option<Identities> {
    static IDS: OnceLock<Option<Identities>> = OnceLock::new();
    IDS.get_or_init(|| {
        let (identity, _) = secrets::generate();
        Identities::parse(identity.expose_str().unwrap_or_default(), "fuzz").ok()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let leaf = format!("{}\n{text}", secrets::ARMOR_BEGIN);
    let values = serde_json::json!({ "v": leaf });
    let at = ValueContext {
        cluster: "demo".into(),
        namespace: "org-a".into(),
        instance: "app".into(),
    };
    let _ = secrets::check_values_form(&values, &at, &Limits::default());
    if let Some(ids) = identities() {
        let _ = secrets::decrypt(&leaf, ids, &Limits::default());
    }
});
