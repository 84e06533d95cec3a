//! fumegrid-sim: simulated oil-fume monitors that speak Modbus RTU (on a pty or a serial port) and
//! Modbus TCP, driven by the same device profiles the gateway reads and by a scenario over time.
//!
//! # Layout
//!
//! Data flows from scenario time to bytes on the line:
//!
//! ```text
//! clock (wall → scenario seconds) ─▶ scenario (metric values, pure in t) ─▶ regmap (profile encode
//! → register image) ─▶ pdu (Modbus request → response PDU) ─▶ rtu (framing, CRC, line timing,
//! faults, one blocking thread per bus) | tcp (MBAP framing, tokio, single device or fleet)
//! ```
//!
//! - [`scenario`]: named timelines (`normal`, `exceedance`, ...) as pure functions of scenario time.
//!   Other crates compute test expectations from them, so every timeline is documented there.
//! - [`regmap`]: a profile plus metric values → a [`regmap::RegisterImage`]; [`regmap::expected`]
//!   gives what a correct gateway must decode (including integer quantisation).
//! - [`pdu`]: the function codes shared by RTU and TCP (reads 1–4 served, writes refused with
//!   exception 01).
//! - [`fault`]: per-slave fault injection (`no-reply`, `late:MS`, `crc`, `exception:N`,
//!   `garbage`, each optionally `@EVERY`th request).
//! - [`rtu`]: CRC-16/Modbus, incremental frame detection with resynchronisation, the line-timing
//!   model of `tools/rtu_budget.py`, and the [`rtu::Engine`] state machine (no I/O) driven by
//!   [`rtu::run_bus`] over a [`rtu::Line`] (the I/O seam: a pty master or a serial port).
//! - [`tcp`]: Modbus TCP servers on tokio, one unit id per port; a fleet of N devices in one process.
//! - [`stats`]: per-slave counters, printed as one JSON line on stderr.
//! - [`clock`]: maps wall time to scenario time (`--speed`, `--start-at`).
//! - [`camera`]: simulated HTTP snapshot cameras (`--cameras`): a JPEG per monitor showing its
//!   scenario's smoke, purifier state and values, rendered with fumegrid-picture.
//! - [`drone`]: a simulated patrol drone (route, position, photos over sites; pure), sent as
//!   MAVLink 2 over UDP by `cmd::drone`.
//! - [`cmd`]: one module per subcommand; `main.rs` only parses and dispatches.

pub mod camera;
pub mod clock;
pub mod cmd;
pub mod drone;
pub mod fault;
pub mod fuzz;
pub mod pdu;
pub mod regmap;
pub mod rtu;
pub mod scenario;
pub mod stats;
pub mod tcp;
