use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Config;
use crate::daemon;
use fumegrid_common::runtime::{self, LogFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Aggregator config file (see `print-default-config`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Stop by itself after this many seconds (tests, benchmarks). Default: run until SIGTERM.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter: a level, or `target=level` pairs. The embedded broker logs under `rumqttd`;
    /// it is off by default because rumqttd reports every client that drops its TCP connection
    /// (routine on 4G) as an ERROR. `--log info,rumqttd=info` shows it.
    #[arg(long, value_name = "FILTER", default_value = "info,rumqttd=off")]
    pub log: String,
}

pub fn run(args: Args) -> ExitCode {
    let cfg = match runtime::logging_then_config(args.log_format, &args.log, || {
        Config::load(&args.config)
    }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(cfg, args.duration))
}

async fn serve(cfg: Config, duration: Option<f64>) -> ExitCode {
    let cancel = CancellationToken::new();
    let mut signals = runtime::Signals::new();
    info!(aggregator = cfg.id, config = %cfg.file.display(), "starting");
    let running = match daemon::start(&cfg, cancel.clone()).await {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start");
            eprintln!("fumegrid-aggregator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let api = format!("http://{}/api/v1", running.api_addr);
    info!(api, broker = running.broker_addr, "ready");
    println!("api: {api}");
    let scheme = if running.broker_tls { "mqtts" } else { "mqtt" };
    println!("broker: {scheme}://{}", running.broker_addr);
    runtime::notify_ready();
    let watchdog = tokio::spawn(runtime::watchdog(
        healthy(running.stats.clone()),
        cancel.clone(),
    ));

    tokio::select! {
        _ = runtime::deadline(duration) => info!("duration reached; stopping"),
        s = signals.recv() => info!(signal = s, "stopping"),
    }
    runtime::notify_stopping();
    cancel.cancel();
    watchdog.abort();
    let stats = running.stats.clone();
    // A second signal exits at once.
    tokio::select! {
        _ = running.stopped() => {}
        s = signals.recv() => {
            info!(signal = s, "second signal; exiting now");
            return ExitCode::FAILURE;
        }
    }
    let s = stats.snapshot();
    info!(
        batches = s.batches_accepted,
        items = s.items_accepted,
        duplicates = s.items_duplicate,
        rejects = s.rejects_total,
        "stopped"
    );
    ExitCode::SUCCESS
}

/// The aggregator can do its job: the ingest is connected to the broker and the store has not
/// failed since the last check (what feeds systemd's watchdog).
fn healthy(stats: std::sync::Arc<crate::ingest::stats::Stats>) -> impl FnMut() -> bool {
    let mut store_errors = stats.store_errors();
    move || {
        let errors = stats.store_errors();
        let ok = stats.is_connected() && errors == store_errors;
        store_errors = errors;
        ok
    }
}
