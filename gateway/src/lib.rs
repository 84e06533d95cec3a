//! fumegrid-gateway: the edge box. Polls oil-fume monitors and turns registers into readings.
//!
//! # Layout (follows the data flow)
//!
//! - [`config`]: the gateway config file (buses, devices → profile + transport), strict, with
//!   every problem reported at file:line.
//! - [`source::modbus`]: acquisition. `plan` (registers → requests), `link` (timeouts, recovery;
//!   the I/O seam), `breaker` (dead slaves), `run_channel` (the per-bus scheduler).
//! - [`decode`]: raw blocks → [`fumegrid_common::reading::Reading`] with a quality flag (pure).
//! - [`rules`]: the alarm rule engine (pure): readings + now → alarm episodes (exceedance,
//!   purifier idle/dirty, offline, sensor faults), with per-site/per-device parameters.
//! - [`outbox`]: the durable sled outbox (seq-numbered, bounded by bytes, drops readings first).
//! - [`uplink`]: MQTT to the aggregator; items leave the outbox only when acked (`plan` decides
//!   what goes next: alarms, live, then backlog at a bounded rate).
//! - [`telemetry`]: every Prometheus metric (name, labels, meaning) and the opt-in listener of
//!   `[metrics] listen`; the events count where they happen.
//! - From `fumegrid_common`: `clock` (the one clock), `datetime` (RFC 3339 on jiff, for
//!   maintenance windows), `id` (the id rule), `keys` (HMAC key parsing), `wire`, `profile`.
//! - [`cmd`]: one module per subcommand (`run`, `validate`, `probe`, `print-default-config`);
//!   `main.rs` only parses arguments.

pub mod cmd;
pub mod config;
pub mod decode;
pub mod fuzz;
pub mod outbox;
pub mod rules;
pub mod source;
pub mod telemetry;
pub mod uplink;
