//! Authoring: what the people and systems who write intent run (`release`, `keygen`, `demo`) and
//! what they read (`report`). Below the command line: nothing here imports `cli`.

pub mod agent;
pub mod checkout;
pub mod demo;
pub mod diff;
pub mod duration;
pub mod encrypt;
pub mod inputs;
pub mod keygen;
pub mod recipient;
pub mod release;
pub mod report;
pub mod review;

/// The outcome of a command: the process exit code.
pub type ExitCode = u8;

/// Why a command could not run (as opposed to a refused ref, which is a normal outcome).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A bad flag value or an unreadable input: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Writing output failed.
    #[error("{0}")]
    Io(String),
    /// The operator could not run (no API server, a listener that cannot bind).
    #[error("{0}")]
    Operator(String),
}

impl CliError {
    /// The process exit code: 2 for a usage or I/O error (the command could not do its work), 1
    /// when the operator could not run (as `run --once` reports a failed pass).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) | CliError::Io(_) => 2,
            CliError::Operator(_) => 1,
        }
    }
}
