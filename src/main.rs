//! The `vworkspace-operator` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use vworkspace_operator::cli::{self, Cli, CliError};

fn main() -> anyhow::Result<ExitCode> {
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
