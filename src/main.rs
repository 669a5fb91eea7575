//! The `vworkspace-operator` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use vworkspace_operator::cli::{self, Cli, CliError};

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // Diagnostics go to stderr (RUST_LOG); stdout carries the command's report. The operator logs
    // JSON lines at info, the authoring commands plain text at warn.
    let operator = matches!(cli.command, cli::Command::Run(_));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if operator { "info" } else { "warn" })
    });
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if operator {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
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
