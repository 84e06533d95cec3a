//! Subcommands, one module each; `main.rs` parses [`Cli`] and calls [`run`].

use std::fmt;
use std::path::Path;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fumegrid_common::profile::Profile;

use crate::rtu::{LineSettings, Parity};
use crate::scenario::Scenario;

pub mod bus;
pub mod drone;
pub mod fleet;
pub mod monitor;
pub mod serve;
pub mod values;

/// Simulated oil-fume monitors for fumegrid: Modbus RTU on a pty or serial port, Modbus TCP,
/// driven by device profiles and scenarios.
///
/// Every serving command prints one `ready ...` line on stdout when it accepts requests, and one
/// JSON stats line on stderr when it stops (SIGINT, SIGTERM or --duration; also on SIGUSR1).
#[derive(Debug, Parser)]
#[command(name = "fumegrid-sim", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate one monitor on an RTU line (--rtu or --pty) or on Modbus TCP (--tcp).
    Monitor(monitor::MonitorArgs),
    /// Simulate several monitors sharing one RS-485 bus (distinct slave ids).
    Bus(bus::BusArgs),
    /// Simulate N identical Modbus TCP monitors on consecutive ports (load tests).
    Fleet(fleet::FleetArgs),
    /// Print what a monitor reports at a scenario time: decoded values and raw registers.
    Values(values::ValuesArgs),
    /// Simulate patrol drones sending MAVLink over UDP (a PX4-like message mix).
    Drone(drone::DroneArgs),
    /// List the scenarios with a one-line description each.
    Scenarios,
}

/// What every served monitor takes: its serial line, its clock and its cameras (`bus` and
/// `monitor`).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub line: LineArgs,
    #[command(flatten)]
    pub time: TimeArgs,
    #[command(flatten)]
    pub camera: serve::CameraArgs,
}

/// Serial line options.
#[derive(Debug, Clone, Args)]
pub struct LineArgs {
    /// Baud rate (also sets the emulated line timing on a pty).
    #[arg(long, default_value_t = 9600, value_name = "N")]
    pub baud: u32,
    /// Parity: even, odd or none.
    #[arg(long, default_value = "even", value_name = "even|odd|none")]
    pub parity: Parity,
    /// Stop bits: 1 or 2.
    #[arg(long = "stop-bits", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2), value_name = "1|2")]
    pub stop_bits: u8,
    /// Device processing time between the end of a request and the start of the reply, ms.
    #[arg(long = "turnaround-ms", default_value_t = 5.0, value_name = "MS")]
    pub turnaround_ms: f64,
    /// Reply as soon as the turnaround has passed instead of emulating character times and
    /// 3.5-character silences. Use it on a real serial port, whose UART already takes that time.
    #[arg(long = "no-line-timing")]
    pub no_line_timing: bool,
}

impl LineArgs {
    pub fn check(&self) -> Result<(), CmdError> {
        if !(300..=921_600).contains(&self.baud) {
            return Err(CmdError::Config(format!(
                "--baud {} is not a usable baud rate (300..=921600)",
                self.baud
            )));
        }
        check_turnaround(self.turnaround_ms)
    }

    pub fn turnaround(&self) -> Duration {
        Duration::from_secs_f64(self.turnaround_ms / 1000.0)
    }

    pub fn settings(&self) -> LineSettings {
        LineSettings {
            baud: self.baud,
            parity: self.parity,
            stop_bits: self.stop_bits,
        }
    }
}

/// Scenario time and run length.
#[derive(Debug, Clone, Args)]
pub struct TimeArgs {
    /// Scenario seconds per wall-clock second (60 = one scenario minute per second; 0 freezes).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub speed: f64,
    /// Scenario time at start, seconds (e.g. 600 to start inside an exceedance).
    #[arg(
        long = "start-at",
        default_value_t = 0.0,
        value_name = "SECS",
        allow_negative_numbers = true
    )]
    pub start_at: f64,
    /// Stop after this many wall-clock seconds. Default: run until SIGINT or SIGTERM.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
}

impl TimeArgs {
    pub fn check(&self) -> Result<(), CmdError> {
        if !(self.speed.is_finite() && self.speed >= 0.0) {
            return Err(CmdError::Config(format!(
                "--speed must be a finite number >= 0, got {}",
                self.speed
            )));
        }
        if !self.start_at.is_finite() {
            return Err(CmdError::Config("--start-at must be finite".into()));
        }
        if let Some(d) = self.duration
            && !(d.is_finite() && (0.0..1e9).contains(&d))
        {
            return Err(CmdError::Config(format!(
                "--duration must be a number of seconds >= 0, got {d}"
            )));
        }
        Ok(())
    }
}

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub enum CmdError {
    /// Bad arguments, profile or scenario: exit code 2.
    Config(String),
    /// Something failed while running (port, socket): exit code 1.
    Runtime(String),
}

impl CmdError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CmdError::Config(_) => 2,
            CmdError::Runtime(_) => 1,
        }
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdError::Config(m) | CmdError::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CmdError {}

/// `--turnaround-ms`: 0..=60000.
pub fn check_turnaround(ms: f64) -> Result<(), CmdError> {
    if ms.is_finite() && (0.0..=60_000.0).contains(&ms) {
        Ok(())
    } else {
        Err(CmdError::Config(format!(
            "--turnaround-ms must be 0..=60000, got {ms}"
        )))
    }
}

/// Loads a profile; every problem is reported as `file:line:col: field: message`.
pub fn load_profile(path: &Path) -> Result<Profile, CmdError> {
    Profile::load(path).map_err(|d| CmdError::Config(d.to_string()))
}

pub fn parse_scenario(name: &str) -> Result<Scenario, CmdError> {
    name.parse().map_err(CmdError::Config)
}

pub fn check_slave_id(id: u8) -> Result<(), CmdError> {
    if (1..=247).contains(&id) {
        Ok(())
    } else {
        Err(CmdError::Config(format!(
            "slave id {id} is not usable: Modbus slave ids are 1..=247"
        )))
    }
}

/// `HOST:PORT` → (host, port).
pub fn split_host_port(s: &str) -> Result<(String, u16), CmdError> {
    let bad = || CmdError::Config(format!("`{s}` is not HOST:PORT (e.g. 127.0.0.1:5020)"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Runs one subcommand.
pub fn run(cli: Cli) -> Result<(), CmdError> {
    match cli.command {
        Command::Monitor(a) => monitor::run(a),
        Command::Bus(a) => bus::run(a),
        Command::Fleet(a) => fleet::run(a),
        Command::Values(a) => values::run(a),
        Command::Drone(a) => drone::run(a),
        Command::Scenarios => {
            for s in Scenario::ALL {
                println!("{:<14} {}", s.name(), s.description());
            }
            Ok(())
        }
    }
}
