//! The `vworkspace-operator` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use vworkspace_operator::cli::{self, Cli, CliError};

fn main() -> anyhow::Result<ExitCode> {
    // Diagnostics go to stderr (RUST_LOG, default warn); stdout carries the command's report.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match cli::run(cli, &mut stdout) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(CliError::Usage(message)) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(2))
        }
        Err(other) => Err(anyhow::Error::new(other)),
    }
}
