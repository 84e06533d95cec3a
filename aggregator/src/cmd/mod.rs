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
}

pub fn main(command: Command) -> ExitCode {
    match command {
        Command::Run(a) => run::run(a),
        Command::Validate(a) => validate::run(a),
        Command::PrintDefaultConfig => {
            print!("{}", crate::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald/Loki, and tests).
    Json,
}

/// Sets up `tracing` on stderr. `filter` is a comma-separated list of `level` or
/// `target=level` directives (e.g. `info,rumqttd=warn`).
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    use tracing_subscriber::prelude::*;
    let targets: tracing_subscriber::filter::Targets = filter
        .parse()
        .map_err(|e| format!("bad --log filter `{filter}`: {e}"))?;
    use std::io::IsTerminal;
    // Colour only on a terminal, not in journald or log files.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(targets);
    match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    }
    .map_err(|e| e.to_string())
}
