//! One module per subcommand; each returns the process exit code.
//!
//! Exit codes: 0 success, 1 runtime failure (port busy, store unusable), 2 bad config or
//! arguments.

pub mod run;
pub mod validate;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the broker, ingest, store and HTTP API; run until SIGTERM/SIGINT (or --duration).
    Run(run::Args),
    /// Check a config file and every file it names (credentials, keys, password, store);
    /// report every problem with file, line and field. Exit 0 when valid, 2 when not.
    Validate(validate::Args),
    /// Print a commented example config with every key and its default.
    PrintDefaultConfig,
    /// Print the built-in case catalogue (categories, departments, time limits, working
    /// calendar), to copy, adapt and name in `[cases] catalogue`.
    PrintDefaultCatalogue,
}

pub fn main(command: Command) -> ExitCode {
    match command {
        Command::Run(a) => run::run(a),
        Command::Validate(a) => validate::run(a),
        Command::PrintDefaultConfig => {
            print!("{}", crate::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::PrintDefaultCatalogue => {
            print!("{}", crate::cases::catalogue::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
    }
}
