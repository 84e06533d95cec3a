//! `fumegrid-sim fleet`: N identical Modbus TCP monitors on consecutive ports, one process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::serve;
use super::{CmdError, TimeArgs};
use crate::clock::SimClock;
use crate::fault::Fault;
use crate::stats::{BusStats, Report, SlaveLabel};
use crate::tcp::{self, Device};

#[derive(Debug, Args)]
#[command(
    after_help = "Example (32 monitors on ports 5020..5051):\n  fumegrid-sim fleet --tcp 127.0.0.1:5020 --count 32 --profile device-profiles/tb-compatible.toml --scenario normal"
)]
pub struct FleetArgs {
    /// HOST:BASEPORT; device i listens on BASEPORT + i. With port 0 every device gets a free
    /// port (all listed in the ready line).
    #[arg(long, value_name = "HOST:BASEPORT")]
    pub tcp: String,
    /// Number of devices, 1..=1000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
    /// Device profile (TOML) shared by all devices.
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,
    /// Scenario shared by all devices (see `fumegrid-sim scenarios`).
    #[arg(long, default_value = "normal", value_name = "NAME")]
    pub scenario: String,
    /// Unit id every device answers to, 1..=247.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub slave: u8,
    /// Fault injected on every device (see `monitor --help`).
    #[arg(long, default_value = "none", value_name = "SPEC")]
    pub fault: String,
    /// Device processing time before each reply, ms.
    #[arg(long = "turnaround-ms", default_value_t = 0.0, value_name = "MS")]
    pub turnaround_ms: f64,
    #[command(flatten)]
    pub time: TimeArgs,
}

pub fn run(a: FleetArgs) -> Result<(), CmdError> {
    a.time.check()?;
    super::check_slave_id(a.slave)?;
    let scenario = super::parse_scenario(&a.scenario)?;
    let fault: Fault = a.fault.parse().map_err(CmdError::Config)?;
    super::check_turnaround(a.turnaround_ms)?;
    let (host, base) = super::split_host_port(&a.tcp)?;
    if base != 0 && u32::from(base) + u32::from(a.count) - 1 > u32::from(u16::MAX) {
        return Err(CmdError::Config(format!(
            "ports {base}..{base}+{} run past 65535",
            a.count
        )));
    }
    let profile = Arc::new(super::load_profile(&a.profile)?);
    let clock = SimClock::new(a.time.start_at, a.time.speed);
    let turnaround = Duration::from_secs_f64(a.turnaround_ms / 1000.0);
    let server = Arc::new(BusStats::default());
    let rt = serve::runtime()?;
    rt.block_on(async {
        let signals = serve::Signals::install()?;
        let mut labels = Vec::new();
        let mut ports = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..a.count {
            let port = if base == 0 { 0 } else { base + i };
            let listener = tokio::net::TcpListener::bind((host.as_str(), port))
                .await
                .map_err(|e| CmdError::Runtime(format!("cannot listen on {host}:{port}: {e}")))?;
            let local = listener
                .local_addr()
                .map_err(|e| CmdError::Runtime(format!("cannot listen on {host}:{port}: {e}")))?;
            let device = Arc::new(
                Device::new(a.slave, profile.clone(), scenario, fault, turnaround, clock)
                    .sharing(server.clone()),
            );
            labels.push(SlaveLabel {
                id: a.slave,
                port: Some(local.port()),
                profile: profile.id.clone(),
                scenario: scenario.name().into(),
                fault: fault.to_string(),
                stats: device.stats.clone(),
            });
            ports.push(local.port());
            tasks.push(tokio::spawn(tcp::serve(listener, device)));
        }
        let first = format!("{host}:{}", ports[0]);
        let report = Report {
            transport: "tcp",
            port: first.clone(),
            bus: server.clone(),
            slaves: labels,
        };
        let consecutive = ports.windows(2).all(|w| w[1] == w[0] + 1);
        let list = if consecutive {
            format!("{}-{}", ports[0], ports[ports.len() - 1])
        } else {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        serve::ready(&format!(
            "tcp={first} count={} ports={list} slave={}",
            a.count, a.slave
        ));
        let r = signals
            .wait_for_stop(a.time.duration, &report, std::future::pending())
            .await;
        for t in tasks {
            t.abort();
        }
        report.print(true);
        r
    })
}
