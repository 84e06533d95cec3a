//! fumegrid-aggregator: the district centre. Receives gateway batches over MQTT, checks who sent
//! them, stores them once, acks them, and serves what it stored over HTTP.
//!
//! # Layout (follows the data flow)
//!
//! - [`broker`]: the embedded MQTT broker (rumqttd) with required authentication, or nothing
//!   when `[broker] mode = "external"` names another broker.
//! - [`ingest`]: the MQTT client. [`ingest::validate`] is the pure decision on each message
//!   (size, topic, known gateway, HMAC with *that* gateway's key, strict schema, seqs) with one
//!   [`ingest::validate::Reason`] per refusal; [`ingest::stats`] counts (Prometheus and the API's snapshot) and rate-limits logs;
//!   the rest groups good batches, commits them, then publishes sealed acks.
//! - [`store`]: the store stores: the `Writer`/`CaseTx`/`CaseStore`/`Reader` seam, its SQLite
//!   implementation with numbered, forward-only migrations (`store/migrations/`) and an
//!   in-memory one, both held to one contract suite; [`store::episode`] folds alarm transitions
//!   into episodes so that late or repeated delivery never rewinds one; [`store::rollup`] sums
//!   raw readings and gateways' period aggregates up to 1-minute, 10-minute, hourly and daily
//!   buckets (kept inside ingest's commit) without counting anything twice.
//! - [`sweeper`]: retention (`[retention]`): at start and hourly deletes what
//!   [`store::retention`] says is expired, in short chunks ([`store::sweep_sql`]), never a
//!   case's evidence window, and gives the space back to the file system.
//! - [`cases`]: dispatch cases, pure: the case state machine, alarms → cases, the catalogue
//!   and working calendar, time limits and escalation, statistics from the event log.
//! - [`casework`]: the one caller of the case engine and owner of its effects: API transitions
//!   and reports, the timer loop, alarms → cases inside ingest's transaction
//!   ([`casework::alarms`]), the statistics index ([`casework::stats_index`]).
//! - [`evidence`]: camera pictures after ingest verified them (issue 13): the blob store
//!   (`object_store`, local files by default), the mover that writes complete pictures to it
//!   and frees their parts, retention, the captioned view and thumbnail (`fumegrid-picture`),
//!   uploads, and sealed snapshot commands for a case. Parts are stored and hash-checked in
//!   ingest's commit ([`store::evidence`]).
//! - [`notify`]: delivers the queued department notifications (webhooks with backoff).
//! - [`api`]: the HTTP API (axum): gateways, devices with latest values, readings, alarm
//!   episodes (open, per device, one with its transitions), stats. `api/state.rs` (`AppState`,
//!   with its clock) and `api/error.rs` (`ApiError`) sit below the router (`api/mod.rs`) and its
//!   handler files (`work`, `open311`, `params`), which import them and never `mod.rs`.
//! - [`dashboard`]: the live page at `/dashboard/` (one self-contained HTML file) that reads
//!   the API from the browser with the user's token.
//! - [`telemetry`]: every Prometheus metric (name, labels, meaning), served at `/metrics`.
//! - From `fumegrid_common` (below every module here): `clock` (the one clock), `datetime`
//!   (RFC 3339/W3C date-times on jiff), `id` (the id rule), `keys` (HMAC key parsing),
//!   `ratelog` (log the first, then once per interval), `wire`.
//! - [`auth`]: API tokens and roles (who is calling, as a case actor), and the random secrets
//!   that the API's tokens and the broker's per-start internal password are made of.
//! - [`config`]: the strict config file; [`daemon`]: starts and stops the parts in order and
//!   makes the one [`fumegrid_common::clock::Clock`] it hands to every part;
//!   [`cmd`]: one module per subcommand (`run`, `validate`, `print-default-config`);
//!   `main.rs` only parses arguments.
//! - [`fuzz`]: the fuzz targets of every parser of outside input here (API bodies and queries,
//!   Open311 forms, wire payloads, the config, the calendar), run briefly by the test suite and
//!   at length by cargo-fuzz (`fuzz/`).
//!
//! # Who imports whom (no cycles; read off the `use crate::` lines outside tests)
//!
//! `common ← cases ← store ← casework ← {ingest, api} ← daemon ← cmd`, with `config` read by
//! `daemon`, `cmd` and `fuzz` only:
//! `store` → `cases`; `casework`, `notify` → `cases`, `store`; `ingest` → `store` (casework's
//! alarm hook is handed to it as a `store::AlarmHook`); `evidence` → `auth` (random ids),
//! `ingest` (its command sender), `store`; `broker` → `auth`; `api` → `auth`,
//! `cases`, `casework`, `dashboard`, `evidence`, `ingest` (its stats), `notify` (its stats), `store`;
//! `config` → the types it fills (`api::HttpLimits`, `auth::Tokens`, `broker::Secret`,
//! `evidence::Settings`,
//! `cases`, `ingest::validate::Keys`, `store::Synchronous`); `daemon` → all of them;
//! `telemetry` (the metric table) is imported by whoever counts and imports nothing.

pub mod api;
pub mod auth;
pub mod broker;
pub mod cases;
pub mod casework;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod evidence;
pub mod fuzz;
pub mod ingest;
pub mod notify;
pub mod store;
pub mod sweeper;
pub mod telemetry;
