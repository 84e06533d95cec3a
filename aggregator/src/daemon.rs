//! Wiring: store (and evidence blobs) → broker → API → evidence mover → ingest, started in that order and stopped by one
//! cancellation token. Used by `run`, the end-to-end tests and the load benchmark. The one
//! place that names SQLite ([`sqlite::open`]) and makes the process's [`Clock`].
//!
//! # HTTP serving ([`serve_http`])
//!
//! hyper's HTTP/1 connection builder (through hyper-util), not `axum::serve`, which has no
//! header timeout and no connection cap, so 1,100 half-open requests once used up the
//! process's file descriptors and stopped the API and the broker with it:
//!
//! - at most `[api] max_connections` connections are served at once (a semaphore around
//!   `accept`); more wait in the kernel's accept queue and cost us no descriptor;
//! - a client has `[api] header_timeout_ms` to send a request's headers (hyper's
//!   `header_read_timeout`, which also covers an idle keep-alive connection);
//! - body read and answer together have `[api] request_timeout_ms` (tower-http's
//!   `TimeoutLayer`, 408), bodies are capped at `[api] max_body_bytes` (413);
//! - a failing `accept` (EMFILE, ENFILE, …) is retried after a pause and logged at most once
//!   per [`fumegrid_common::runtime::AcceptErrors::LOG_EVERY`] with the count since, never in a tight loop.
//!
//! # Panics
//!
//! A bug in one handler must not take the broker and ingest down: the release profile unwinds,
//! the API's `CatchPanicLayer` answers that request 500, and every panic outside a handler
//! still aborts the process through the hook of [`fumegrid_common::panic`] (so a broken ingest
//! never runs on half-dead; systemd restarts it). See docs/api.md, "Limits and failures".

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::HttpLimits;
use crate::api::{self, AppState, Auth};
use crate::broker::{self, Accounts, BrokerError};
use crate::cases::aerial::places;
use crate::casework::alarms::AlarmCases;
use crate::casework::stats_index::{IndexedReader, StatsIndex};
use crate::casework::{self, Casework, SharedCaseStore};
use crate::config::{BrokerConfig, Config};
use crate::evidence::{Blobs, Evidence};
use crate::ingest::stats::Stats;
use crate::ingest::validate::Limits;
use crate::ingest::{self, IngestSettings, MqttTarget};
use crate::notify::{self, NotifyStats};
use crate::store::{Reader, StoreError, Writer, sqlite, sweep_sql};
use fumegrid_common::clock::Clock;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("HTTP API cannot listen on {addr}: {source}")]
    Api {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Evidence(String),
    #[error("cannot start ingest: {0}")]
    Ingest(std::io::Error),
    #[error("no OS randomness for the ingest client's password")]
    Random,
    #[error("ingest client could not connect and subscribe to the embedded broker at {0} in time")]
    IngestNotReady(String),
}

/// A started aggregator.
#[derive(Debug)]
pub struct Running {
    pub api_addr: SocketAddr,
    /// `host:port` of the MQTT broker gateways talk to.
    pub broker_addr: String,
    /// The embedded broker's listener speaks TLS.
    pub broker_tls: bool,
    pub stats: Arc<Stats>,
    ingest: tokio::task::JoinHandle<()>,
    api: tokio::task::JoinHandle<()>,
    timers: tokio::task::JoinHandle<()>,
    notifier: tokio::task::JoinHandle<()>,
    evidence: tokio::task::JoinHandle<()>,
    aerial: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
    dji: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Waits until everything has stopped after the token was cancelled: the ingest commits
    /// and acks what it had, then the API closes.
    pub async fn stopped(self) {
        let _ = self.ingest.await;
        let _ = self.timers.await;
        let _ = self.notifier.await;
        let _ = self.evidence.await;
        let _ = self.aerial.await;
        let _ = self.sweeper.await;
        if let Some(d) = self.dji {
            let _ = d.await;
        }
        let _ = self.api.await;
    }
}

/// Starts every part; returns when the API listens and the ingest is subscribed.
pub async fn start(cfg: &Config, cancel: CancellationToken) -> Result<Running, StartError> {
    // The one clock of this process, handed to every part.
    let clock = Clock::system();
    // Store first: a bad store must stop us before anything listens.
    let mut writer = sqlite::open(&cfg.store_path, cfg.synchronous)?;
    convert_store_once(&cfg.store_path, &clock)?;
    writer.set_retention(cfg.retention.policy);
    // Case statistics answer from memory; loaded before anything writes a case, then casework
    // appends what it commits (its own changes and, through the alarm hook, ingest's).
    let started = clock.instant();
    let stats_index = Arc::new(StatsIndex::load(&mut writer)?);
    let size = stats_index.size();
    info!(
        cases = size.cases,
        events = size.events,
        mib = size.bytes >> 20,
        ms = (clock.instant() - started).as_millis() as u64,
        "case statistics index loaded"
    );
    let alarm_cases = AlarmCases::new(cfg.catalogue.clone())
        .with_sites(cfg.sites.clone())
        .with_stats_index(stats_index.clone());
    let mut ids: Vec<String> = cfg.keys.ids().map(str::to_string).collect();
    ids.sort_unstable();
    writer.ensure_gateways(&ids)?;
    let reader: Arc<dyn Reader> = Arc::new(IndexedReader {
        inner: Arc::new(sqlite::open_reader(&cfg.store_path)?),
        index: stats_index.clone(),
    });
    info!(store = %cfg.store_path.display(), gateways = ids.len(), "store open");
    // Case changes other than ingest's (API, Open311, timers, notifier) use their own
    // connection; SQLite serialises writers and the case seq detects concurrent changes.
    let case_writer: SharedCaseStore =
        Arc::new(Mutex::new(sqlite::open(&cfg.store_path, cfg.synchronous)?));
    let casework = Arc::new(
        Casework::new(case_writer.clone(), cfg.catalogue.clone(), clock.clone())
            .with_stats_index(stats_index)
            .with_contact_retention(cfg.contact_retention),
    );
    let notify_stats = Arc::new(NotifyStats::default());
    // Evidence: blobs under `[evidence] dir`, its own store connection (mover, retention,
    // uploads, snapshot requests) and reader; commands go out through ingest's MQTT client.
    let blobs = Blobs::local(&cfg.evidence_dir).map_err(StartError::Evidence)?;
    let (commands, command_queue) = ingest::Commands::channel(Arc::new(cfg.keys.clone()));
    let evidence = Arc::new(
        Evidence::new(
            blobs,
            Arc::new(sqlite::open_reader(&cfg.store_path)?),
            Arc::new(Mutex::new(sqlite::open(&cfg.store_path, cfg.synchronous)?)),
            cfg.evidence,
            Some(commands),
            clock.clone(),
        )
        .with_public_url(cfg.public_url.clone()),
    );
    info!(dir = %cfg.evidence_dir.display(), keep_unlinked_days = cfg.evidence.keep_unlinked.as_secs() / 86_400, "evidence store open");

    // The embedded broker's internal listener and secret, for the DJI reader.
    let mut internal: Option<(SocketAddr, String)> = None;
    let (target, broker_addr, embedded, broker_tls) = match &cfg.broker {
        BrokerConfig::Embedded {
            listen,
            users,
            max_payload_bytes,
            tls,
        } => {
            let secret = broker::random_hex(32);
            if secret.len() != 64 {
                return Err(StartError::Random);
            }
            let started = broker::start_embedded(broker::Embedded {
                listen: *listen,
                accounts: Accounts::new(users.clone()).with_dji(cfg.dji.accounts.clone()),
                max_payload_bytes: *max_payload_bytes,
                tls: tls.clone(),
                internal_secret: secret.clone(),
                clock: clock.clone(),
            })?;
            let addr = started.public;
            info!(listen = %addr, tls = started.tls, users = users.len(), dji_logins = cfg.dji.accounts.len(), max_payload_bytes, "embedded MQTT broker listening");
            if !started.tls && !addr.ip().is_loopback() {
                warn!(listen = %addr, "the MQTT listener is not on loopback and has no TLS: passwords and readings cross the network in clear (set broker.tls_cert_file and tls_key_file)");
            }
            // The ingest talks to rumqttd's internal listener, not through the gate: its id is
            // reserved (no account may be named `fumegrid-ingest…`) and the secret is per start.
            internal = Some((started.internal, secret.clone()));
            let ingest_id = format!("fumegrid-ingest-{}", cfg.id);
            let target = MqttTarget {
                host: started.internal.ip().to_string(),
                port: started.internal.port(),
                client_id: ingest_id.clone(),
                username: ingest_id,
                password: secret,
                clean_session: true,
                max_packet_bytes: *max_payload_bytes,
            };
            (target, addr.to_string(), true, started.tls)
        }
        BrokerConfig::External {
            host,
            port,
            username,
            password,
            max_payload_bytes,
        } => (
            MqttTarget {
                host: host.clone(),
                port: *port,
                client_id: format!("fumegrid-aggregator-{}", cfg.id),
                username: username.clone(),
                password: password.clone(),
                clean_session: true,
                max_packet_bytes: *max_payload_bytes,
            },
            format!("{host}:{port}"),
            false,
            false,
        ),
    };

    // Prometheus: the recorder every `metrics::counter!` of this process reports to, rendered by
    // `GET /metrics` on the API.
    fumegrid_common::telemetry::install(
        fumegrid_common::telemetry::PrometheusBuilder::new().build_recorder(),
        crate::telemetry::DEFS,
    );
    let stats = Arc::new(Stats::new(clock.clone()));
    stats.register();
    let listener = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .map_err(|source| StartError::Api {
            addr: cfg.api_listen,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(|source| StartError::Api {
        addr: cfg.api_listen,
        source,
    })?;
    // Drone positions: the map, the track API and the aerial-pass judgment read them.
    let drone_reader: Arc<dyn crate::store::drone::DroneReader> =
        Arc::new(sqlite::open_reader(&cfg.store_path)?);
    let dji_docks = Arc::new(crate::dji::Docks::new(&cfg.dji.registry));
    let router = api::app_with(
        AppState {
            reader,
            stats: stats.clone(),
            catalogue: cfg.catalogue.clone(),
            auth: Arc::new(Auth {
                tokens: cfg.tokens.clone(),
                anonymous_viewer: cfg.anonymous_viewer,
            }),
            casework: Some(casework.clone()),
            notify: notify_stats.clone(),
            clock: fumegrid_common::clock::Clock::system(),
            evidence: Some(evidence.clone()),
            drones: Some(Arc::new(crate::api::drones::DroneMap {
                reader: drone_reader.clone(),
                sites: places(&cfg.sites),
                docks: Some(dji_docks.clone()),
            })),
            sites: Arc::new(cfg.sites.clone()),
        },
        &cfg.http,
    );
    if cfg.tokens.is_empty() && !cfg.anonymous_viewer {
        warn!("no API tokens configured ([api] tokens_file): every /api/v1 request will get 401");
    }
    let aerial = tokio::spawn(casework::aerial::run(
        casework::aerial::Aerial::new(
            casework.clone(),
            drone_reader,
            places(&cfg.sites),
            cfg.aerial,
        ),
        cfg.aerial_interval,
        cancel.clone(),
    ));
    info!(
        places_on_map = places(&cfg.sites).len(),
        pass_distance_m = cfg.aerial.distance_m,
        "aerial passes judged"
    );
    let dji = start_dji(cfg, internal, dji_docks, clock.clone(), cancel.clone())?;
    let timers = tokio::spawn(casework::run_timers(
        casework.clone(),
        cfg.tick_interval,
        cancel.clone(),
    ));
    let endpoints = notify::endpoints(&cfg.catalogue, &cfg.webhook_secrets);
    info!(
        webhooks = endpoints.len(),
        tick_s = cfg.tick_interval.as_secs(),
        "case timers and department notifications running"
    );
    let notifier = notify::Notifier {
        store: case_writer,
        endpoints,
        wake: casework.notify.clone(),
        stats: notify_stats,
        clock: clock.clone(),
        evidence: Some(evidence.clone()),
    };
    let notifier = tokio::spawn(notify::run(notifier, cancel.clone()));
    let api = tokio::spawn(serve_http(listener, router, cfg.http, cancel.clone()));
    let evidence_task = tokio::spawn(crate::evidence::run(
        evidence.clone(),
        clock.clone(),
        cancel.clone(),
    ));
    let r = cfg.retention.policy;
    info!(
        raw_days = r.raw_days,
        minute_days = r.minute_days,
        other_periods_days = r.other_periods_days,
        ten_minute_days = r.ten_minute_days,
        hourly_days = r.hourly_days,
        daily_days = r.daily_days,
        case_margin_s = r.case_margin_s,
        every_s = cfg.retention.interval.as_secs(),
        "retention sweeper running"
    );
    let sweeper_task = tokio::spawn(crate::sweeper::run(
        sweep_sql::open(&cfg.store_path)?,
        cfg.retention,
        clock.clone(),
        cancel.clone(),
        None,
    ));

    let settings = IngestSettings {
        mqtt: target,
        keys: Arc::new(cfg.keys.clone()),
        limits: Limits {
            max_payload_bytes: cfg.broker.max_payload_bytes(),
            max_items: cfg.max_items_per_batch,
        },
        group_max_items: cfg.group_max_items,
        pictures_complete: Some(evidence.wake.clone()),
    };
    let writer: Box<dyn Writer> = Box::new(writer);
    let mut ing = ingest::start(
        settings,
        writer,
        Box::new(alarm_cases),
        Some(command_queue),
        stats.clone(),
        clock,
        cancel.clone(),
    )
    .map_err(StartError::Ingest)?;
    let ready = tokio::time::timeout(Duration::from_secs(10), ing.ready.wait_for(|r| *r)).await;
    if !matches!(ready, Ok(Ok(_))) {
        if embedded {
            cancel.cancel();
            return Err(StartError::IngestNotReady(broker_addr));
        }
        warn!(
            broker = broker_addr,
            "external MQTT broker not reachable yet; retrying in the background"
        );
    }
    Ok(Running {
        api_addr,
        broker_addr,
        broker_tls,
        stats,
        ingest: ing.poll,
        api,
        timers,
        notifier,
        evidence: evidence_task,
        aerial,
        sweeper: sweeper_task,
        dji,
    })
}

/// A store made before schema 14 has `auto_vacuum = NONE`: swept rows would leave free pages
/// in the file forever. Switched once, here, before anything listens: a `VACUUM` rewrites the
/// file (free disk space of about its size needed; about as long as copying it), with systemd's
/// start timeout extended meanwhile. Logged before and after.
fn convert_store_once(path: &std::path::Path, clock: &Clock) -> Result<(), StartError> {
    let conn = sqlite::open_conn(path)?;
    if sweep_sql::auto_vacuum(&conn)? == sweep_sql::AutoVacuum::Incremental {
        return Ok(());
    }
    drop(conn);
    let before = sweep_sql::file_bytes(path);
    warn!(
        store = %path.display(),
        mib = before >> 20,
        "store has auto_vacuum NONE (made before schema 14): one VACUUM switches it to \
         INCREMENTAL so that retention gives space back; it rewrites the file and needs about \
         as much free disk space"
    );
    fumegrid_common::runtime::notify_extend_start(Duration::from_secs(3600));
    let started = clock.instant();
    sweep_sql::convert_to_incremental(path)?;
    info!(
        store = %path.display(),
        mib_before = before >> 20,
        mib_after = sweep_sql::file_bytes(path) >> 20,
        ms = (clock.instant() - started).as_millis() as u64,
        "store switched to auto_vacuum INCREMENTAL"
    );
    Ok(())
}

/// The DJI Cloud API reader (docs/drones.md), when docks are registered: on the embedded
/// broker's internal listener (as `fumegrid-ingest-{id}-dji`, a reserved name, with the
/// per-start secret) when any dock has a login there, and on `[dji.external]` when set; its
/// tracks go to the store on their own connection.
fn start_dji(
    cfg: &Config,
    internal: Option<(SocketAddr, String)>,
    docks: Arc<crate::dji::Docks>,
    clock: Clock,
    cancel: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, StartError> {
    if cfg.dji.registry.is_empty() {
        return Ok(None);
    }
    let mut sources = Vec::new();
    if let Some((addr, secret)) = internal
        && !cfg.dji.accounts.is_empty()
    {
        let id = format!("fumegrid-ingest-{}-dji", cfg.id);
        sources.push(crate::dji::Source {
            name: "embedded",
            host: addr.ip().to_string(),
            port: addr.port(),
            client_id: id.clone(),
            credentials: Some((id, secret)),
            tls_ca_file: None,
        });
    }
    if let Some(e) = &cfg.dji.external {
        sources.push(crate::dji::Source {
            name: "external",
            host: e.host.clone(),
            port: e.port,
            client_id: e.client_id.clone(),
            credentials: e.credentials.clone(),
            tls_ca_file: e.tls_ca_file.clone(),
        });
    }
    let writer = sqlite::open(&cfg.store_path, cfg.synchronous)?;
    let sink = crate::dji::store_sink(Box::new(writer), clock.clone());
    Ok(Some(tokio::spawn(crate::dji::run(
        crate::dji::Settings {
            registry: Arc::new(cfg.dji.registry.clone()),
            docks,
            sources,
            flush_interval: cfg.dji.flush_interval,
        },
        sink,
        clock,
        cancel,
    ))))
}

/// Serves `router` on `listener` until `cancel` (see the module doc), then lets open
/// requests finish for up to 5 s.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    cancel: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut accept_errors =
        fumegrid_common::runtime::AcceptErrors::new("http", crate::telemetry::API_ACCEPT_ERRORS);
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    let pause = accept_errors.failed(&e);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {},
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Header timeouts, resets and the like: the client's problem, not ours.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        warn!("HTTP API: requests still open 5 s after shutdown began; dropping them");
    }
}
