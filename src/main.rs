//! The `vworkspace-operator` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use vworkspace_operator::cli::{self, Cli, CliError};

/// The process's allocator. A pass over 10,000 objects allocates a few hundred MiB for seconds;
/// glibc's malloc keeps most of those pages after they are freed (with tokio's worker threads the
/// resting RSS stayed near the peak, measured in docs/performance.md), mimalloc gives them back to
/// the OS shortly after, so the resting RSS follows what the process holds. The `system-allocator`
/// feature leaves libc's malloc in place, for heaptrack (which sees only it).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics go to stderr (RUST_LOG); stdout carries the command's report. The operator logs
    // JSON lines at info, the authoring commands plain text at warn.
    let operator = matches!(cli.command, cli::Command::Run(_));
    if operator {
        let subscriber = vworkspace_controller::telemetry::json_subscriber(
            std::io::stderr,
            vworkspace_controller::telemetry::filter("info"),
        );
        if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
            eprintln!("error: cannot set up logging: {e}");
            return ExitCode::from(2);
        }
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(vworkspace_controller::telemetry::filter("warn"))
            .init();
    }
    let mut stdout = std::io::stdout().lock();
    // Every error is one line on stderr: no `Error:` prefix, no backtrace, whatever
    // RUST_BACKTRACE says (they are for panics).
    match cli::run(cli, &mut stdout) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let _ = std::io::Write::flush(&mut stdout);
            eprintln!("error: {error}");
            ExitCode::from(CliError::exit_code(&error))
        }
    }
}
