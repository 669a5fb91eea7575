//! The signed intent repository of the tests and benches, built once: a real git repository whose
//! commits are signed by the real `git commit -S` (gpg.format=ssh) with keys from `ssh-keygen`,
//! signer lists, an age identity from `age-keygen`, values encrypted by the stock `age` or by the
//! operator's `encrypt` (bound to where they are used), and a 2-of-2 release written by the
//! operator's `release` and co-signed by `ssh-keygen -Y sign`.
//!
//! [`IntentRepo::builder`] covers the cases the users differ on: an untrusted key (commits it signs
//! must be refused), `release --unchecked` (tests of the verifier's refusals sign hostile intent),
//! a release written from the work tree instead of git's index (fast at thousands of files), and a
//! generated intent of a given [`Scale`] (the bench and the scale test).
#![forbid(unsafe_code)]

mod generate;
mod repo;
mod tools;

pub use generate::Scale;
pub use repo::{Builder, IntentRepo, ReleaseFrom};
pub use tools::{age_encrypt, age_keygen, run, run_with_stdin, ssh_keygen, stdout};
