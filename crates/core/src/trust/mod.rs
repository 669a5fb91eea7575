//! Trust: who signed what. SSHSIG (`sshsig`), git's `allowed_signers` format (`signers`), the
//! commit's signature (`commit_signature`), its place in history (`history`) and the signed release
//! manifest (`release`). Each step takes what the step before it verified.

pub mod chart_keys;
pub mod commit_signature;
pub mod history;
pub mod release;
pub mod signers;
pub mod sshsig;
