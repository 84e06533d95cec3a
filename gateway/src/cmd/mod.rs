//! One module per subcommand; each returns the process exit code.
//!
//! Exit codes: 0 success, 1 runtime failure (device not answering, port missing), 2 bad
//! config, profile or arguments.

pub mod probe;
pub mod run;
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
    /// Print a commented example config with every key and its default.
    PrintDefaultConfig,
}

pub fn main(command: Command) -> ExitCode {
    match command {
        Command::Run(a) => run::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Probe(a) => probe::run(a),
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
/// `target=level` directives (e.g. `info,reading=off`).
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    use tracing_subscriber::prelude::*;
    let targets: tracing_subscriber::filter::Targets = filter
        .parse()
        .map_err(|e| format!("bad --log filter `{filter}`: {e}"))?;
    use std::io::IsTerminal;
    // Colour only on a terminal: escape codes in journald or a log file are noise (and cost
    // about 13 % of the gateway's CPU when every reading is logged).
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

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Tells systemd (`Type=notify`) the service is up. A no-op outside systemd.
pub fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the service is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Feeds systemd's watchdog (`WatchdogSec`) only while `progress` moves — a poll that read
/// something, or an ack from the aggregator — so a gateway that is alive but achieves nothing
/// gets restarted. Checks at half the watchdog interval; no-op without a watchdog.
pub async fn watchdog(
    progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = interval / 2;
    let mut last = progress.load(std::sync::atomic::Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = progress.load(std::sync::atomic::Ordering::Relaxed);
        if now != last {
            last = now;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::warn!("no poll succeeded and nothing was acked since the last watchdog check");
        }
    }
}
