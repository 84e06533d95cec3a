//! What both daemons need around their main loop: logging set-up, the shutdown signal, and
//! systemd notifications. Behind the `runtime` feature, so the simulator does not pull in
//! tracing-subscriber or sd-notify.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    Text,
    /// One JSON object per line (for journald/Loki, and tests).
    Json,
}

/// How every daemon's `run` begins: logging first, then its config. A failure of either is
/// printed (each config problem at its file, line and field) and becomes exit code 2.
pub fn logging_then_config<C>(
    format: LogFormat,
    filter: &str,
    load: impl FnOnce() -> Result<C, crate::diag::Diagnostics>,
) -> Result<C, std::process::ExitCode> {
    if let Err(e) = init_logging(format, filter) {
        eprintln!("{e}");
        return Err(std::process::ExitCode::from(2));
    }
    load().map_err(|d| {
        eprintln!("{d}");
        eprintln!("{} problem(s) found; not starting", d.len());
        std::process::ExitCode::from(2)
    })
}

/// Sets up `tracing` on stderr. `filter` is a comma-separated list of `level` or
/// `target=level` directives (e.g. `info,reading=off`). Also installs the panic hook that
/// aborts on any panic outside contained code ([`crate::panic`]), so both daemons keep
/// `panic = "abort"` behaviour under the unwinding release profile.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    crate::panic::install_hook();
    use tracing_subscriber::prelude::*;
    let targets: tracing_subscriber::filter::Targets = filter
        .parse()
        .map_err(|e| format!("bad --log filter `{filter}`: {e}"))?;
    // Escape codes in journald or a log file are noise (and cost CPU per line).
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

/// SIGTERM and SIGINT, caught from the moment this is made. Make it before telling anyone the
/// daemon is up: a signal that arrives before its handler is installed kills the process with
/// the default action instead of starting the orderly stop.
#[derive(Debug)]
pub struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    /// Installs the handlers (needs a tokio runtime with the signal driver). Where they cannot
    /// be installed, [`Signals::recv`] never resolves and the daemon stops by other means.
    pub fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Signals(Some((term, int))),
            _ => Signals(None),
        }
    }

    /// Resolves with the name of the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> &'static str {
        let Some((term, int)) = &mut self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

impl Default for Signals {
    fn default() -> Signals {
        Signals::new()
    }
}

/// A listener's failed `accept`s (out of file descriptors, EMFILE/ENFILE, and the like): each is
/// counted in `metric`, a WARN goes out at most once per [`AcceptErrors::LOG_EVERY`] with the
/// count since the last one, and the caller pauses for [`AcceptErrors::PAUSE`] instead of
/// spinning (a descriptor shortage does not clear in a microsecond).
#[derive(Debug)]
pub struct AcceptErrors {
    listener: &'static str,
    metric: &'static str,
    log: crate::ratelog::LogLimiter<()>,
    clock: crate::clock::Clock,
}

impl AcceptErrors {
    pub const LOG_EVERY: Duration = Duration::from_secs(10);
    pub const PAUSE: Duration = Duration::from_millis(100);

    pub fn new(listener: &'static str, metric: &'static str) -> AcceptErrors {
        AcceptErrors {
            listener,
            metric,
            log: crate::ratelog::LogLimiter::new(Self::LOG_EVERY, 1),
            clock: crate::clock::Clock::system(),
        }
    }

    /// One failed accept; returns how long to pause before the next.
    pub fn failed(&mut self, error: &std::io::Error) -> Duration {
        metrics::counter!(self.metric).increment(1);
        if let Some(suppressed) = self.log.should_log((), self.clock.instant()) {
            tracing::warn!(
                listener = self.listener,
                error = %error,
                failed_accepts = suppressed + 1,
                "cannot accept connections; retrying"
            );
        }
        Self::PAUSE
    }
}

/// Resolves after `seconds`, or never when `None` (`--duration`).
pub async fn deadline(seconds: Option<f64>) {
    match seconds {
        Some(s) => tokio::time::sleep(Duration::from_secs_f64(s.max(0.0))).await,
        None => std::future::pending().await,
    }
}

/// Tells systemd (`Type=notify`) the service is up. A no-op outside systemd.
pub fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Asks systemd for `d` more before the service must be ready (a one-time long step at start,
/// such as rewriting a store). A no-op outside systemd.
pub fn notify_extend_start(d: Duration) {
    let usec = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(usec)]);
}

/// Tells systemd the service is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Feeds systemd's watchdog (`WatchdogSec`) at half its interval, but only while `healthy`
/// says so — e.g. "a poll or an ack happened since the last check" — so a daemon that is alive
/// but achieves nothing is restarted. Returns at once without a watchdog.
pub async fn watchdog(
    mut healthy: impl FnMut() -> bool,
    cancel: tokio_util::sync::CancellationToken,
) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval / 2) => {}
        }
        if healthy() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::warn!("not feeding the watchdog: no progress since the last check");
        }
    }
}

/// A `healthy` check for [`watchdog`]: true when `counter` moved since the last call.
pub fn progressed(counter: Arc<AtomicU64>) -> impl FnMut() -> bool {
    let mut last = counter.load(Ordering::Relaxed);
    move || {
        let now = counter.load(Ordering::Relaxed);
        let moved = now != last;
        last = now;
        moved
    }
}
