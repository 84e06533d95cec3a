//! One module per subcommand; each returns the process exit code.
//!
//! Exit codes: 0 success, 1 runtime failure (device not answering, port missing), 2 bad
//! config, profile or arguments.

pub mod probe;
pub mod run;
pub mod snapshot;
pub mod validate;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Poll every configured device, keep the readings in the outbox and forward them to the
    /// aggregator ([uplink]) until stopped (SIGTERM/Ctrl-C).
    Run(run::Args),
    /// Check a config file and every profile it names (or one profile); report every problem
    /// with file, line and field. Exit 0 when valid, 2 when not.
    Validate(validate::Args),
    /// Read one live device through a profile and print its decoded values: the commissioning
    /// tool. Exit 0 when every register block answered, 1 otherwise.
    Probe(probe::Args),
    /// Take one picture from a camera (of the config, or given by URL) and print its media,
    /// size, dimensions, SHA-256 and the time taken: the camera commissioning tool. Exit 0
    /// with a picture, 1 without (the reason and a hint on stderr), 2 on bad arguments.
    Snapshot(snapshot::Args),
    /// Print a commented example config with every key and its default.
    PrintDefaultConfig,
}

pub fn main(command: Command) -> ExitCode {
    match command {
        Command::Run(a) => run::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Probe(a) => probe::run(a),
        Command::Snapshot(a) => snapshot::run(a),
        Command::PrintDefaultConfig => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out
                .write_all(crate::config::default_config().as_bytes())
                .and_then(|()| out.flush())
            {
                // `print-default-config | head` closed the pipe: not an error of ours.
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cannot write the config: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

pub use fumegrid_common::runtime::{LogFormat, init_logging};

/// The single-threaded runtime of a command; when it cannot start, says so on stderr and
/// gives the exit code to return.
pub fn runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        })
}
