//! `fumegrid-sim monitor`: one simulated monitor on an RTU line or on Modbus TCP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::serve::{self, RtuTarget};
use super::{CmdError, ServeArgs};
use crate::clock::SimClock;
use crate::fault::Fault;
use crate::rtu::{Engine, EngineConfig, SimSlave};
use crate::stats::{Report, SlaveLabel};
use crate::tcp::{self, Device};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fumegrid-sim monitor --profile device-profiles/tb-compatible.toml --pty /tmp/fume1 --slave 1 --scenario exceedance\n  fumegrid-sim monitor --profile p.toml --tcp 127.0.0.1:5020 --slave 1 --scenario normal --fault no-reply@5\n  fumegrid-sim monitor --profile p.toml --rtu /dev/ttyUSB0 --baud 19200 --parity none --no-line-timing"
)]
#[command(group(clap::ArgGroup::new("transport").required(true).args(["rtu", "pty", "tcp"])))]
pub struct MonitorArgs {
    /// Device profile (TOML) that lays out the registers.
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,
    /// Serve Modbus RTU on an existing serial device or pty end, e.g. /dev/ttyUSB0.
    #[arg(long, value_name = "PATH")]
    pub rtu: Option<PathBuf>,
    /// Serve Modbus RTU on a new pty pair; LINK becomes a symlink to the device to open
    /// (removed on exit). No socat needed.
    #[arg(long, value_name = "LINK")]
    pub pty: Option<PathBuf>,
    /// Serve Modbus TCP on HOST:PORT (port 0 picks a free port, shown in the ready line).
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// Modbus slave id (RTU) or unit id (TCP), 1..=247.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub slave: u8,
    /// Scenario name (see `fumegrid-sim scenarios`).
    #[arg(long, default_value = "normal", value_name = "NAME")]
    pub scenario: String,
    /// Fault to inject: none, no-reply, late:MS, crc, exception:CODE, garbage, truncated,
    /// overlong, bad-count, other-unit, optionally @EVERY (every Nth request), e.g. `crc@10`.
    #[arg(long, default_value = "none", value_name = "SPEC")]
    pub fault: String,
    #[command(flatten)]
    pub serve: ServeArgs,
}

pub fn run(a: MonitorArgs) -> Result<(), CmdError> {
    a.serve.time.check()?;
    super::check_slave_id(a.slave)?;
    let scenario = super::parse_scenario(&a.scenario)?;
    let fault: Fault = a.fault.parse().map_err(CmdError::Config)?;
    a.serve.line.check()?;
    let profile = super::load_profile(&a.profile)?;
    let turnaround = a.serve.line.turnaround();
    let clock = SimClock::new(a.serve.time.start_at, a.serve.time.speed);
    let cameras = a.serve.camera.build(&[(a.slave, scenario)], clock)?;
    if let Some(addr) = &a.tcp {
        return serve_tcp(
            addr,
            a.slave,
            profile,
            scenario,
            fault,
            turnaround,
            clock,
            a.serve.time.duration,
            cameras,
        );
    }
    let target = match (&a.rtu, &a.pty) {
        (Some(p), _) => RtuTarget::Port(p.clone()),
        (_, Some(l)) => RtuTarget::Pty(l.clone()),
        _ => {
            return Err(CmdError::Config(
                "one of --rtu, --pty or --tcp is required".into(),
            ));
        }
    };
    let line = a.serve.line.settings();
    let cfg = EngineConfig {
        line,
        turnaround,
        line_timing: !a.serve.line.no_line_timing,
        clock,
    };
    let engine = Engine::new(cfg, vec![SimSlave::new(a.slave, profile, scenario, fault)]);
    serve::serve_rtu(
        &target,
        line,
        engine,
        a.serve.time.duration,
        cfg.line_timing,
        cameras,
    )
}

#[allow(clippy::too_many_arguments)]
fn serve_tcp(
    addr: &str,
    unit: u8,
    profile: fumegrid_common::profile::Profile,
    scenario: crate::scenario::Scenario,
    fault: Fault,
    turnaround: Duration,
    clock: SimClock,
    duration: Option<f64>,
    cameras: Option<(String, crate::camera::Cameras)>,
) -> Result<(), CmdError> {
    let (host, port) = super::split_host_port(addr)?;
    let rt = serve::runtime()?;
    let profile_id = profile.id.clone();
    let device = Arc::new(Device::new(
        unit,
        Arc::new(profile),
        scenario,
        fault,
        turnaround,
        clock,
    ));
    rt.block_on(async {
        let signals = serve::Signals::install()?;
        let cameras = serve::start_cameras(cameras).await?;
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .map_err(|e| CmdError::Runtime(format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| CmdError::Runtime(format!("cannot listen on {addr}: {e}")))?;
        let report = Report {
            transport: "tcp",
            port: local.to_string(),
            bus: device.server.clone(),
            slaves: vec![SlaveLabel {
                id: unit,
                port: Some(local.port()),
                profile: profile_id,
                scenario: scenario.name().into(),
                fault: fault.to_string(),
                stats: device.stats.clone(),
            }],
        };
        let server = tokio::spawn(tcp::serve(listener, device.clone()));
        serve::ready(&format!("tcp={local} slave={unit}{cameras}"));
        let r = signals
            .wait_for_stop(duration, &report, std::future::pending())
            .await;
        server.abort();
        report.print(true);
        r
    })
}
