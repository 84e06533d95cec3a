//! fumegrid-gateway: the edge box. Polls oil-fume monitors and turns registers into readings.
//!
//! # Layout (follows the data flow: source → decode → rules → outbox → uplink)
//!
//! - [`source`]: where readings come from. [`source::modbus`]: `plan` (registers → requests,
//!   pure), `breaker` (dead slaves, pure), `link` (the I/O seam: the [`source::modbus::link::Link`]
//!   trait, its RTU and TCP implementations with timeouts and recovery, and the serial line
//!   settings), `run_channel` (the per-bus scheduler; tested against a fake link).
//!   [`source::mavlink`]: drones (issue 15): `frame` (MAVLink 1/2 framing and CRC, pure),
//!   `track` (decimation, pure), `drone` (one drone's state and the heartbeat link judgment,
//!   pure), `port` (one task per UDP/TCP/serial connection: frames to drones by system id,
//!   tracks, photos and link events appended to the outbox, everything unusable counted).
//! - [`decode`]: raw blocks → [`fumegrid_common::reading::Reading`] with a quality flag (pure);
//!   owns the request and reply types (`Block`, `BlockData`) that the source fills.
//! - [`rules`]: the alarm rule engine (pure): readings + now → alarm episodes (exceedance,
//!   purifier idle/dirty, offline, sensor faults), with per-site/per-device parameters
//!   (`rules::config`); [`rules::sink`] is its I/O shell: readings in, rules run, alarms and
//!   readings appended to the outbox, rule state saved, refused items counted.
//! - [`report`]: what of each poll goes up, after the rules judged it (pure): `raw`, `period`
//!   (clock-aligned aggregates, the default) or `on_change`, per device and metric, with raw
//!   windows around alarms; [`rules::sink`] runs it and saves its state.
//! - [`outbox`]: the durable sled outbox (seq-numbered, bounded by bytes, drops readings first)
//!   and its in-memory model `MemOutbox`.
//! - [`uplink`]: MQTT to the aggregator; items leave the outbox only when acked (`plan` decides
//!   what goes next: alarms, live readings, pictures, then backlog at a bounded rate, in batches
//!   bounded by bytes; pure, with `now` passed in); sealed commands on `cmd` (`command`, pure).
//! - [`evidence`]: the camera pipeline: when to take a picture (alarm raised/updated,
//!   schedule, a sealed `cmd`; `evidence::plan`, pure), captures through the
//!   [`source::camera::Camera`] seam, pictures appended to the outbox as parts.
//! - [`telemetry`]: every Prometheus metric (name, labels, meaning) and the opt-in listener of
//!   `[metrics] listen`; the events count where they happen.
//! - [`config`]: the gateway config file (buses, devices → profile + transport), strict, with
//!   every problem reported at file:line. Read by `cmd` only.
//! - From `fumegrid_common`: `clock` (the one clock), `datetime` (RFC 3339 on jiff, for
//!   maintenance windows), `id` (the id rule), `keys` (HMAC key parsing), `wire`, `profile`.
//! - [`cmd`]: one module per subcommand (`run`, `validate`, `probe`, `snapshot`,
//!   `print-default-config`); wiring only. `run` makes the one [`fumegrid_common::clock::Clock`] and hands it to every
//!   part; `main.rs` only parses arguments.
//! - [`fuzz`]: the fuzz target of the config parser (MAVLink's is `source::mavlink::fuzz`).
//!
//! # Who imports whom (no cycles, nothing imports `cmd`)
//!
//! `cmd` → everything; `config` → `rules::config`, `source::modbus::link` (line settings);
//! `source` → `decode`; `source::mavlink` → `outbox` (drones skip the rules: nothing to
//! judge); `rules::sink` → `outbox`, `evidence`, `report`; `uplink` → `outbox`, `evidence`;
//! `evidence` → `outbox`, `source::camera`, `source::modbus::breaker`, `config` (camera rules); `source`, `rules::sink`,
//! `outbox`, `uplink` → `telemetry`; `decode`, `telemetry` and the pure cores import nothing of
//! the crate. The stages meet only where `cmd::run` joins them: a channel of readings from the
//! sources to the sink, and the shared outbox between the sink and the uplink.

pub mod cmd;
pub mod config;
pub mod decode;
pub mod evidence;
pub mod fuzz;
pub mod outbox;
pub mod report;
pub mod rules;
pub mod source;
pub mod telemetry;
pub mod uplink;
