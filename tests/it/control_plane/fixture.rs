//! The intent repository of a real-server test: [`vworkspace_testkit::IntentRepo`] with a key nobody
//! trusts (commits it signs must be refused), the cluster id and namespaces chosen by the test (tests
//! share one API server).

pub const BIN: &str = env!("CARGO_BIN_EXE_vworkspace-operator");

#[allow(unused_imports)]
pub use crate::common::run;

/// A real-server test's signed intent repository; everything else is [`IntentRepo`]'s, through
/// `Deref`.
pub struct Intent(IntentRepo);

pub use vworkspace_testkit::IntentRepo;

impl Intent {
    /// Keys (an untrusted one too), signer lists, an age identity and an empty repository for
    /// cluster `cluster`.
    pub fn new(cluster: &str) -> Intent {
        Intent(IntentRepo::builder(BIN, cluster).untrusted_key().build())
    }

    /// An intent of `scale`, generated, released from the work tree and committed.
    pub fn generated(cluster: &str, scale: vworkspace_testkit::Scale) -> Intent {
        Intent(
            IntentRepo::builder(BIN, cluster)
                .untrusted_key()
                .release_from(vworkspace_testkit::ReleaseFrom::WorkTree)
                .generated(scale)
                .build(),
        )
    }
}

impl std::ops::Deref for Intent {
    type Target = IntentRepo;

    fn deref(&self) -> &IntentRepo {
        &self.0
    }
}
