//! AdmissionReview bodies: the webhook's decision on whatever a client manages to send (the objects
//! in a review are written by users). It must answer every body, never panic, and stay bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = |namespace: &str| (namespace == "org-a").then(|| vec!["backup".to_owned()]);
    let answer = vworkspace_core::admission::review(data, &policy);
    assert_eq!(answer["kind"], "AdmissionReview");
    assert!(answer["response"]["allowed"].is_boolean());
});
