use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fumegrid_common::profile::Profile;
use fumegrid_common::reading::Quality;
use serde::Serialize;

use crate::decode::{BlockData, DeviceDecoder};
use crate::source::modbus::breaker::Breaker;
use crate::source::modbus::link::{Line, Parity};
use crate::source::modbus::link::{Link, RtuLink, TcpLink};
use crate::source::modbus::{Slot, poll_once};
use fumegrid_common::clock::Clock;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("transport").required(true).args(["rtu", "tcp"])))]
pub struct Args {
    /// Device profile of the monitor model.
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,
    /// Serial port of the RS-485 bus (Modbus RTU), e.g. /dev/ttyUSB0.
    #[arg(long, value_name = "PATH")]
    pub rtu: Option<PathBuf>,
    /// Modbus TCP device, e.g. 192.168.1.50:502.
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// Serial baud rate (RTU).
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// Serial parity (RTU): even, odd or none.
    #[arg(long, default_value = "even")]
    pub parity: Parity,
    /// Serial data bits (RTU): 7 or 8.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(7..=8))]
    pub data_bits: u8,
    /// Serial stop bits (RTU): 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop_bits: u8,
    /// Modbus slave (unit) id of the device, 1..=247.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=247))]
    pub slave: u8,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read this many times (watch values change while the kitchen runs).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Pause between reads when --count > 1.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interval_ms: u64,
}

#[derive(Debug, Serialize)]
struct ProbeValue {
    metric: String,
    value: Option<f64>,
    unit: String,
    quality: Quality,
    table: &'static str,
    address: u16,
    raw: Vec<u16>,
}

#[derive(Debug, Serialize)]
struct ProbeError {
    table: &'static str,
    start: u16,
    count: u16,
    kind: &'static str,
    error: String,
    hint: &'static str,
}

#[derive(Debug, Serialize)]
struct ProbeResult {
    profile: String,
    target: String,
    slave: u8,
    requests: usize,
    elapsed_ms: f64,
    values: Vec<ProbeValue>,
    errors: Vec<ProbeError>,
}

pub fn run(args: Args) -> ExitCode {
    let profile = match Profile::load(&args.profile) {
        Ok(p) => Arc::new(p),
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::from(2);
        }
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // The one clock of this command.
    let clock = Clock::system();
    rt.block_on(async {
        let mut all_ok = true;
        let mut output = Ok(());
        if let Some(path) = &args.rtu {
            let line = Line {
                baud: args.baud,
                parity: args.parity,
                data_bits: args.data_bits,
                stop_bits: args.stop_bits,
            };
            let target = format!(
                "{} ({} {}{}{})",
                path.display(),
                line.baud,
                line.data_bits,
                line.parity
                    .name()
                    .to_uppercase()
                    .chars()
                    .next()
                    .unwrap_or('N'),
                line.stop_bits
            );
            let mut link = RtuLink::new(path.clone(), line, None, clock.clone());
            let p = Probe {
                profile: &profile,
                args: &args,
                target: &target,
                clock: &clock,
            };
            (all_ok, output) = probe_times(&mut link, &p).await;
        } else if let Some(addr) = &args.tcp {
            let mut link = TcpLink::new(addr.clone());
            let p = Probe {
                profile: &profile,
                args: &args,
                target: addr,
                clock: &clock,
            };
            (all_ok, output) = probe_times(&mut link, &p).await;
        }
        match output {
            Ok(()) => {}
            // The reader went away (`probe ... | head -1`): nothing more to say to anyone; the
            // exit code still tells whether the reads made so far succeeded.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                eprintln!("cannot write the probe's output: {e}");
                return ExitCode::FAILURE;
            }
        }
        if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

/// One probe run: what to read, how often, and where the output names the device.
struct Probe<'a> {
    profile: &'a Arc<Profile>,
    args: &'a Args,
    target: &'a str,
    clock: &'a Clock,
}

/// Probes `args.count` times; stops early when the output cannot be written.
async fn probe_times<L: Link>(link: &mut L, p: &Probe<'_>) -> (bool, std::io::Result<()>) {
    let args = p.args;
    let mut all_ok = true;
    for i in 0..args.count {
        let (ok, written) = probe_once(link, p).await;
        all_ok &= ok;
        if written.is_err() {
            return (all_ok, written);
        }
        if i + 1 < args.count {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    (all_ok, Ok(()))
}

/// Reads the device once and prints what it got. Returns whether every block was read, and
/// whether the output could be written.
async fn probe_once<L: Link>(link: &mut L, p: &Probe<'_>) -> (bool, std::io::Result<()>) {
    let Probe {
        profile,
        args,
        target,
        clock,
    } = *p;
    let decoder = DeviceDecoder::new("probe", profile.clone(), 0);
    let mut slot = Slot::new(
        "probe",
        args.slave,
        decoder,
        Breaker::new(1, Duration::ZERO),
        Duration::ZERO,
        clock.tokio_instant(),
    );
    let t0 = clock.instant();
    let (results, errors) = poll_once(link, &mut slot, clock).await;
    let elapsed_ms = clock.instant().duration_since(t0).as_secs_f64() * 1000.0;
    let readings = slot.decoder.decode(&slot.blocks, &results, clock.now_ms());
    let mut values = Vec::new();
    // Readings come back in profile order; find each point's raw words in its block.
    for (i, (point, r)) in profile.points.iter().zip(&readings).enumerate() {
        let raw = slot
            .blocks
            .iter()
            .zip(&results)
            .find(|(b, _)| b.points.contains(&i))
            .and_then(|(b, data)| {
                let off = usize::from(point.address - b.start);
                match data {
                    Some(BlockData::Words(w)) => w
                        .get(off..off + usize::from(point.width()))
                        .map(<[u16]>::to_vec),
                    Some(BlockData::Bits(bits)) => bits.get(off).map(|&v| vec![u16::from(v)]),
                    None => None,
                }
            })
            .unwrap_or_default();
        values.push(ProbeValue {
            metric: point.metric.name().to_string(),
            value: r.value,
            unit: point.unit().to_string(),
            quality: r.quality,
            table: point.table.name(),
            address: point.address,
            raw,
        });
    }
    let errors: Vec<ProbeError> = errors
        .iter()
        .map(|(i, e)| {
            let b = &slot.blocks[*i];
            ProbeError {
                table: b.table.name(),
                start: b.start,
                count: b.count,
                kind: e.kind(),
                error: e.to_string(),
                hint: e.hint(link.transport()),
            }
        })
        .collect();
    let ok = errors.is_empty();
    let result = ProbeResult {
        profile: profile.id.clone(),
        target: target.to_string(),
        slave: args.slave,
        requests: slot.blocks.len(),
        elapsed_ms,
        values,
        errors,
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer(&mut out, &result)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        print_table(&mut out, &result)
    }
    .and_then(|()| out.flush());
    (ok, written)
}

fn print_table(out: &mut impl Write, r: &ProbeResult) -> std::io::Result<()> {
    writeln!(
        out,
        "slave {} on {} — profile `{}`, {} request(s) in {:.1} ms",
        r.slave, r.target, r.profile, r.requests, r.elapsed_ms
    )?;
    writeln!(
        out,
        "{:<20} {:>12} {:<7} {:<13} {:<16} raw",
        "metric", "value", "unit", "quality", "register"
    )?;
    for v in &r.values {
        let value = v
            .value
            .map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "—".into());
        let raw: Vec<String> = v.raw.iter().map(|w| format!("0x{w:04X}")).collect();
        writeln!(
            out,
            "{:<20} {:>12} {:<7} {:<13} {:<16} {}",
            v.metric,
            value,
            v.unit,
            v.quality.name(),
            format!("{} {}", v.table, v.address),
            raw.join(" ")
        )?;
    }
    for e in &r.errors {
        writeln!(
            out,
            "error: {} {}..+{}: {} — {}",
            e.table, e.start, e.count, e.error, e.hint
        )?;
    }
    Ok(())
}
