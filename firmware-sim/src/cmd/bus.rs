//! `fumegrid-sim bus`: several simulated monitors on one RS-485 bus (one blocking thread).

use std::path::PathBuf;

use clap::Args;

use super::serve::{self, RtuTarget};
use super::{CmdError, ServeArgs};
use crate::clock::SimClock;
use crate::fault::Fault;
use crate::rtu::{Engine, EngineConfig, SimSlave};
use crate::scenario::Scenario;

#[derive(Debug, Args)]
#[command(
    after_help = "Example (three restaurants on one bus, the second exceeding, the third dead):\n  fumegrid-sim bus --pty /tmp/bus0 --baud 9600 --parity even \\\n      --slave 1:device-profiles/tb-compatible.toml:normal \\\n      --slave 2:device-profiles/tb-compatible.toml:exceedance \\\n      --slave 3:device-profiles/scaled-u16-holding.toml:normal:no-reply"
)]
#[command(group(clap::ArgGroup::new("port").required(true).args(["rtu", "pty"])))]
pub struct BusArgs {
    /// Serve on an existing serial device or pty end, e.g. /dev/ttyUSB0.
    #[arg(long, value_name = "PATH")]
    pub rtu: Option<PathBuf>,
    /// Serve on a new pty pair; LINK becomes a symlink to the device to open (removed on exit).
    #[arg(long, value_name = "LINK")]
    pub pty: Option<PathBuf>,
    /// A slave on the bus: ID:PROFILE:SCENARIO[:FAULT], e.g. `2:p.toml:exceedance:late:500`.
    /// Repeat for each slave; ids must differ. Requests for other ids get no answer.
    #[arg(
        long = "slave",
        value_name = "ID:PROFILE:SCENARIO[:FAULT]",
        required = true
    )]
    pub slaves: Vec<String>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// A parsed `--slave` value.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaveSpec {
    pub id: u8,
    pub profile: PathBuf,
    pub scenario: Scenario,
    pub fault: Fault,
}

/// Parses `ID:PROFILE:SCENARIO[:FAULT]`. The profile path may itself contain `:`; the scenario is
/// the first later field that names one, and everything after it is the fault (which may
/// contain `:` as in `late:500`).
pub fn parse_slave_spec(s: &str) -> Result<SlaveSpec, String> {
    let usage =
        || format!("--slave `{s}`: expected ID:PROFILE:SCENARIO[:FAULT], e.g. 1:p.toml:normal");
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() < 3 {
        return Err(usage());
    }
    let id: u8 = parts[0]
        .trim()
        .parse()
        .map_err(|_| format!("--slave `{s}`: `{}` is not a slave id (1..=247)", parts[0]))?;
    let at = (2..parts.len())
        .find(|&i| parts[i].parse::<Scenario>().is_ok())
        .ok_or_else(|| {
            let last = parts[parts.len() - 1];
            format!(
                "--slave `{s}`: no scenario found ({})",
                last.parse::<Scenario>().err().unwrap_or_default()
            )
        })?;
    let profile = parts[1..at].join(":");
    let scenario = parts[at].parse::<Scenario>().map_err(|_| usage())?;
    let fault = if at + 1 < parts.len() {
        parts[at + 1..]
            .join(":")
            .parse::<Fault>()
            .map_err(|e| format!("--slave `{s}`: {e}"))?
    } else {
        Fault::default()
    };
    Ok(SlaveSpec {
        id,
        profile: PathBuf::from(profile),
        scenario,
        fault,
    })
}

pub fn run(a: BusArgs) -> Result<(), CmdError> {
    a.serve.time.check()?;
    a.serve.line.check()?;
    let mut errors = Vec::new();
    let mut slaves: Vec<SimSlave> = Vec::new();
    for s in &a.slaves {
        let spec = match parse_slave_spec(s) {
            Ok(spec) => spec,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if let Err(e) = super::check_slave_id(spec.id) {
            errors.push(format!("--slave `{s}`: {e}"));
            continue;
        }
        if slaves.iter().any(|x| x.id == spec.id) {
            errors.push(format!("--slave `{s}`: slave id {} is used twice", spec.id));
            continue;
        }
        match super::load_profile(&spec.profile) {
            Ok(p) => slaves.push(SimSlave::new(spec.id, p, spec.scenario, spec.fault)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(CmdError::Config(errors.join("\n")));
    }
    let target = match (&a.rtu, &a.pty) {
        (Some(p), _) => RtuTarget::Port(p.clone()),
        (_, Some(l)) => RtuTarget::Pty(l.clone()),
        _ => return Err(CmdError::Config("one of --rtu or --pty is required".into())),
    };
    let line = a.serve.line.settings();
    let cfg = EngineConfig {
        line,
        turnaround: a.serve.line.turnaround(),
        line_timing: !a.serve.line.no_line_timing,
        clock: SimClock::new(a.serve.time.start_at, a.serve.time.speed),
    };
    let monitors: Vec<_> = slaves.iter().map(|s| (s.id, s.scenario)).collect();
    let cameras = a.serve.camera.build(&monitors, cfg.clock)?;
    serve::serve_rtu(
        &target,
        line,
        Engine::new(cfg, slaves),
        a.serve.time.duration,
        cfg.line_timing,
        cameras,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultKind;
    use std::time::Duration;

    #[test]
    fn slave_specs() {
        let s = parse_slave_spec("2:dir/p.toml:exceedance:late:500").expect("valid");
        assert_eq!(s.id, 2);
        assert_eq!(s.profile, PathBuf::from("dir/p.toml"));
        assert_eq!(s.scenario, Scenario::Exceedance);
        assert_eq!(s.fault.kind, FaultKind::Late(Duration::from_millis(500)));
        let s = parse_slave_spec("7:C:/x:y.toml:normal").expect("valid");
        assert_eq!(s.profile, PathBuf::from("C:/x:y.toml"));
        assert_eq!(s.fault, Fault::default());
        assert!(parse_slave_spec("1:p.toml").is_err());
        assert!(parse_slave_spec("x:p.toml:normal").is_err());
        assert!(parse_slave_spec("1:p.toml:nosuch").is_err());
        assert!(parse_slave_spec("1:p.toml:normal:boom").is_err());
    }
}
