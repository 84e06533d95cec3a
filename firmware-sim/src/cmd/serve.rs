//! What every serving command shares: the runtime, signals, `--duration`, the ready line, stats
//! printing, opening an RTU line (a serial port, or a pty pair we create ourselves), and the
//! simulated snapshot cameras (`--cameras`, [`CameraArgs`]).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use serialport::{SerialPort, TTYPort};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;

use super::CmdError;
use crate::camera::{self, Camera, CameraFault, Cameras};
use crate::clock::SimClock;
use crate::rtu::{Engine, LineSettings, run_bus};
use crate::scenario::Scenario;
use crate::stats::Report;

/// Where an RTU bus is served.
#[derive(Debug, Clone)]
pub enum RtuTarget {
    /// An existing serial device or pty end (e.g. one made by socat).
    Port(PathBuf),
    /// A pty pair we create; a symlink at this path points to its slave end.
    Pty(PathBuf),
}

/// A current-thread runtime: the simulator's async parts are light.
pub fn runtime() -> Result<tokio::runtime::Runtime, CmdError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CmdError::Runtime(format!("cannot start the async runtime: {e}")))
}

/// Prints the ready line and flushes it, so a test waiting for it sees it at once.
pub fn ready(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {line}");
    let _ = out.flush();
}

/// SIGINT, SIGTERM and SIGUSR1 handlers. Install them before printing the ready line, so that a
/// test which signals right after `ready` still gets the stats line and the link cleanup.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    usr1: Signal,
}

impl Signals {
    /// Must be called inside the runtime.
    pub fn install() -> Result<Signals, CmdError> {
        let sig = |k: SignalKind| {
            signal(k).map_err(|e| CmdError::Runtime(format!("cannot install signal handler: {e}")))
        };
        Ok(Signals {
            term: sig(SignalKind::terminate())?,
            int: sig(SignalKind::interrupt())?,
            usr1: sig(SignalKind::user_defined1())?,
        })
    }

    /// Waits for SIGINT, SIGTERM, `duration`, or `failed` (a serving part that died, with its
    /// error). Prints the stats line on SIGUSR1.
    pub async fn wait_for_stop(
        mut self,
        duration: Option<f64>,
        report: &Report,
        failed: impl Future<Output = Option<String>>,
    ) -> Result<(), CmdError> {
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(Duration::from_secs_f64(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timer);
        tokio::pin!(failed);
        loop {
            tokio::select! {
                _ = self.term.recv() => return Ok(()),
                _ = self.int.recv() => return Ok(()),
                _ = &mut timer => return Ok(()),
                _ = self.usr1.recv() => report.print(false),
                e = &mut failed => {
                    return match e {
                        Some(e) => Err(CmdError::Runtime(e)),
                        None => Ok(()),
                    };
                }
            }
        }
    }
}

/// A pty pair we made: the slave end stays open in this process (so the master never sees a
/// hang-up between gateway connections) and the symlink is removed on drop.
#[derive(Debug)]
struct PtyGuard {
    link: PathBuf,
    device: String,
    _slave: TTYPort,
}

impl Drop for PtyGuard {
    fn drop(&mut self) {
        // Only remove the link if it is still ours.
        if std::fs::read_link(&self.link).is_ok_and(|t| t == Path::new(&self.device)) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

fn open_port(path: &Path, line: LineSettings) -> Result<TTYPort, CmdError> {
    let builder = serialport::new(path.to_string_lossy(), line.baud)
        .data_bits(serialport::DataBits::Eight)
        .parity(line.parity.to_serialport())
        .stop_bits(if line.stop_bits == 2 {
            serialport::StopBits::Two
        } else {
            serialport::StopBits::One
        })
        .timeout(Duration::from_millis(2));
    TTYPort::open(&builder).map_err(|e| {
        let hint = match e.kind() {
            serialport::ErrorKind::NoDevice
            | serialport::ErrorKind::Io(std::io::ErrorKind::NotFound) => {
                " — does the device exist?"
            }
            serialport::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => {
                " — is this user in group dialout?"
            }
            _ => "",
        };
        CmdError::Runtime(format!("cannot open {}: {e}{hint}", path.display()))
    })
}

fn open_pty(link: &Path) -> Result<(TTYPort, PtyGuard), CmdError> {
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => {
            // A stale link from an earlier run that was killed.
            std::fs::remove_file(link).map_err(|e| {
                CmdError::Runtime(format!("cannot replace old link {}: {e}", link.display()))
            })?;
        }
        Ok(_) => {
            return Err(CmdError::Config(format!(
                "--pty {}: exists and is not a symlink; refusing to replace it",
                link.display()
            )));
        }
        Err(_) => {}
    }
    let (master, slave) =
        TTYPort::pair().map_err(|e| CmdError::Runtime(format!("cannot create a pty pair: {e}")))?;
    let device = slave
        .name()
        .ok_or_else(|| CmdError::Runtime("the new pty has no device name".into()))?;
    std::os::unix::fs::symlink(&device, link).map_err(|e| {
        CmdError::Runtime(format!(
            "cannot create symlink {} -> {device}: {e}",
            link.display()
        ))
    })?;
    let guard = PtyGuard {
        link: link.to_path_buf(),
        device,
        _slave: slave,
    };
    Ok((master, guard))
}

/// Simulated HTTP snapshot cameras, one per monitor (see [`crate::camera`]).
#[derive(Debug, Clone, Default, Args)]
pub struct CameraArgs {
    /// Serve a simulated HTTP snapshot camera for each monitor on HOST:PORT (port 0 picks a
    /// free port, shown as `cameras=ADDR` in the ready line): `GET /camera/SLAVE.jpg` (and
    /// /camera/NAME.jpg for names given with --camera) answers a JPEG of the kitchen as the
    /// scenario has it now: smoke haze following the fume value, the purifier lamp, the values.
    #[arg(long, value_name = "HOST:PORT")]
    pub cameras: Option<String>,
    /// Also serve the camera of slave SLAVE as /camera/NAME.jpg (e.g. the gateway's device id,
    /// `bbq-grill=2`); NAME is shown in the picture. Repeat for each.
    #[arg(long = "camera", value_name = "NAME=SLAVE", requires = "cameras")]
    pub names: Vec<String>,
    /// Require HTTP basic authentication with this user name (with --camera-password).
    #[arg(long = "camera-user", value_name = "USER", requires_all = ["cameras", "camera_password"])]
    pub camera_user: Option<String>,
    /// The password of --camera-user.
    #[arg(
        long = "camera-password",
        value_name = "PASSWORD",
        requires = "camera_user"
    )]
    pub camera_password: Option<String>,
    /// Make camera NAME (a name given with --camera, or a slave id) misbehave: slow:MS,
    /// status:CODE (400..=599), garbage, truncated or huge:MB (1..=256). Repeat for each.
    #[arg(long = "camera-fault", value_name = "NAME=FAULT", requires = "cameras")]
    pub faults: Vec<String>,
    /// Picture size, WIDTHxHEIGHT, 160x120..=1920x1080.
    #[arg(long = "camera-size", default_value = "640x480", value_name = "WxH")]
    pub camera_size: String,
}

impl CameraArgs {
    /// The cameras for `monitors` (slave id and scenario) on `clock`, with the address to
    /// serve them on; `None` without --cameras. Reports every bad value at once.
    pub fn build(
        &self,
        monitors: &[(u8, Scenario)],
        clock: SimClock,
    ) -> Result<Option<(String, Cameras)>, CmdError> {
        let Some(addr) = &self.cameras else {
            return Ok(None);
        };
        let mut errors = Vec::new();
        if let Err(e) = super::split_host_port(addr) {
            errors.push(format!("--cameras: {e}"));
        }
        let (width, height) = match parse_size(&self.camera_size) {
            Ok(wh) => wh,
            Err(e) => {
                errors.push(e);
                (640, 480)
            }
        };
        let mut cameras = std::collections::BTreeMap::new();
        for (id, scenario) in monitors {
            cameras.insert(
                id.to_string(),
                Camera {
                    name: format!("slave {id}"),
                    scenario: *scenario,
                    clock,
                    fault: CameraFault::None,
                },
            );
        }
        for spec in &self.names {
            let Some((name, slave)) = spec.split_once('=') else {
                errors.push(format!(
                    "--camera `{spec}`: expected NAME=SLAVE, e.g. bbq-grill=2"
                ));
                continue;
            };
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !name.chars().all(|c| c.is_ascii_digit());
            if !valid {
                errors.push(format!(
                    "--camera `{spec}`: NAME must be 1..=64 of A-Z a-z 0-9 - _ . and not a number"
                ));
                continue;
            }
            let Some((_, scenario)) = monitors
                .iter()
                .find(|(id, _)| slave.trim().parse::<u8>().ok() == Some(*id))
            else {
                errors.push(format!(
                    "--camera `{spec}`: no simulated monitor with slave id `{slave}`"
                ));
                continue;
            };
            if cameras.contains_key(name) {
                errors.push(format!("--camera `{spec}`: camera `{name}` is named twice"));
                continue;
            }
            cameras.insert(
                name.to_string(),
                Camera {
                    name: name.to_string(),
                    scenario: *scenario,
                    clock,
                    fault: CameraFault::None,
                },
            );
        }
        for spec in &self.faults {
            let Some((name, fault)) = spec.split_once('=') else {
                errors.push(format!(
                    "--camera-fault `{spec}`: expected NAME=FAULT, e.g. bbq-grill=slow:5000"
                ));
                continue;
            };
            let fault = match fault.parse::<CameraFault>() {
                Ok(f) => f,
                Err(e) => {
                    errors.push(format!("--camera-fault `{spec}`: {e}"));
                    continue;
                }
            };
            match cameras.get_mut(name) {
                Some(cam) => cam.fault = fault,
                None => errors.push(format!("--camera-fault `{spec}`: no camera `{name}`")),
            }
        }
        if !errors.is_empty() {
            return Err(CmdError::Config(errors.join("\n")));
        }
        let auth = self.camera_user.clone().zip(self.camera_password.clone());
        Ok(Some((
            addr.clone(),
            Cameras {
                cameras,
                auth,
                width,
                height,
                photos: camera::Photos::default(),
            },
        )))
    }
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--camera-size `{s}`: expected WIDTHxHEIGHT within 160x120..=1920x1080");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if !(160..=1920).contains(&w) || !(120..=1080).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

/// Starts the cameras (inside the runtime); returns ` cameras=ADDR` for the ready line.
pub async fn start_cameras(cameras: Option<(String, Cameras)>) -> Result<String, CmdError> {
    let Some((addr, cams)) = cameras else {
        return Ok(String::new());
    };
    let (host, port) = super::split_host_port(&addr)?;
    let listener = camera::bind(&host, port).await.map_err(CmdError::Runtime)?;
    let local = listener
        .local_addr()
        .map_err(|e| CmdError::Runtime(format!("--cameras {addr}: {e}")))?;
    tokio::spawn(camera::serve(listener, Arc::new(cams)));
    Ok(format!(" cameras={local}"))
}

/// Serves `engine` on `target` until a signal or `duration`, then prints the final stats.
pub fn serve_rtu(
    target: &RtuTarget,
    line: LineSettings,
    mut engine: Engine,
    duration: Option<f64>,
    line_timing: bool,
    cameras: Option<(String, Cameras)>,
) -> Result<(), CmdError> {
    let rt = runtime()?;
    let (mut port, guard, name) = match target {
        RtuTarget::Port(path) => (open_port(path, line)?, None, path.display().to_string()),
        RtuTarget::Pty(link) => {
            let (master, guard) = open_pty(link)?;
            let name = guard.device.clone();
            (master, Some(guard), name)
        }
    };
    let ids: Vec<String> = engine.slaves().iter().map(|s| s.id.to_string()).collect();
    let report = Report {
        transport: "rtu",
        port: name.clone(),
        bus: engine.bus.clone(),
        slaves: engine
            .slaves()
            .iter()
            .map(|s| crate::stats::SlaveLabel {
                id: s.id,
                port: None,
                profile: s.profile.id.clone(),
                scenario: s.scenario.name().into(),
                fault: s.fault.to_string(),
                stats: s.stats.clone(),
            })
            .collect(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = oneshot::channel::<Option<String>>();
    let result = rt.block_on(async {
        let signals = Signals::install()?;
        let cameras = start_cameras(cameras).await?;
        let stop2 = stop.clone();
        let port_name = name.clone();
        let thread = std::thread::Builder::new()
            .name("rtu-bus".into())
            .spawn(move || {
                let r = run_bus(&mut engine, &mut port, &stop2);
                let _ = tx.send(
                    r.err()
                        .map(|e| format!("serial line {port_name} failed: {e}")),
                );
            })
            .map_err(|e| CmdError::Runtime(format!("cannot start the bus thread: {e}")))?;
        let link = match &guard {
            Some(g) => format!(" link={}", g.link.display()),
            None => String::new(),
        };
        ready(&format!(
            "rtu={name}{link} slaves={} line={} timing={}{cameras}",
            ids.join(","),
            line.describe().replace(' ', "-"),
            if line_timing { "on" } else { "off" }
        ));
        let failed = async { rx.await.ok().flatten() };
        let r = signals.wait_for_stop(duration, &report, failed).await;
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
        r
    });
    report.print(true);
    drop(guard);
    result
}
