//! The `vworkspace-operator` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use vworkspace_operator::cli::{self, Cli, CliError};

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // Diagnostics go to stderr (RUST_LOG); stdout carries the command's report. The operator logs
    // JSON lines at info, the authoring commands plain text at warn.
    let operator = matches!(cli.command, cli::Command::Run(_));
    if operator {
        let subscriber = vworkspace_controller::telemetry::json_subscriber(
            std::io::stderr,
            vworkspace_controller::telemetry::filter("info"),
        );
        tracing::subscriber::set_global_default(subscriber)?;
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(vworkspace_controller::telemetry::filter("warn"))
            .init();
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
