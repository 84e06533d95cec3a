//! `fumegrid-sim drone`: patrol drones sending MAVLink over UDP to a gateway (docs/simulator.md).

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use mavlink::dialects::common::MavMessage;
use mavlink::{MavHeader, MavlinkVersion};

use super::CmdError;
use crate::clock::{instant, wall_us};
use crate::drone::{DEMO_PATROL, Drone, Route, photo_jpeg};

#[derive(Debug, Args)]
#[command(
    after_help = "Example (one drone over the demo street, to a gateway's default drone port, its photos served on port 8090):\n  fumegrid-sim drone --to 127.0.0.1:14550 --photos 127.0.0.1:8090"
)]
pub struct DroneArgs {
    /// Where to send: the gateway's `udpin` address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:14550")]
    pub to: String,
    /// How many drones, system ids `--system-id` onwards, spread evenly along the route.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=64), value_name = "N")]
    pub count: u8,
    /// MAVLink system id of the first drone.
    #[arg(long = "system-id", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=255), value_name = "ID")]
    pub system_id: u8,
    /// Route file (TOML, as firmware-sim/demo-patrol.toml). Default: the demo street.
    #[arg(long, value_name = "FILE")]
    pub route: Option<PathBuf>,
    /// MAVLink version of the frames: 1 or 2.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2), value_name = "1|2")]
    pub mavlink: u8,
    /// Position messages per second (GLOBAL_POSITION_INT); heartbeat and battery go at 1 Hz.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=50), value_name = "HZ")]
    pub rate: u32,
    /// Stop after this many seconds. Default: fly until killed.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Serve the photos the drones take over HTTP here (port 0 picks one), as a camera with a
    /// web interface does: CAMERA_IMAGE_CAPTURED's `file_url` is then the photo's URL,
    /// `http://HOST:PORT/DCIM/{system id}/IMG_0001.JPG` (an unspecified HOST, 0.0.0.0, is
    /// named 127.0.0.1). Default: no server, `file_url` a path on the card.
    #[arg(long, value_name = "HOST:PORT")]
    pub photos: Option<String>,
    /// With `--photos`: every request needs HTTP Basic authentication as this user.
    #[arg(long = "photo-user", value_name = "USER", requires = "photo_password")]
    pub photo_user: Option<String>,
    /// With `--photo-user`: its password.
    #[arg(
        long = "photo-password",
        value_name = "PASSWORD",
        requires = "photo_user"
    )]
    pub photo_password: Option<String>,
}

/// Size of the simulated photos.
const PHOTO_W: u32 = 640;
const PHOTO_H: u32 = 480;

/// Starts the photo server on `addr` in a thread of its own; the base URL of its photos.
fn serve_photos(
    addr: &str,
    auth: Option<(String, String)>,
    photos: crate::camera::Photos,
) -> Result<String, CmdError> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_string(),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| CmdError::Config(format!("--photos `{addr}`: expected HOST:PORT")))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let cameras = crate::camera::Cameras {
        cameras: Default::default(),
        auth,
        width: PHOTO_W,
        height: PHOTO_H,
        photos,
    };
    std::thread::spawn(move || {
        let rt = match super::serve::runtime() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        rt.block_on(async move {
            let listener = match crate::camera::bind(&host, port).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.replace("--cameras", "--photos")));
                    return;
                }
            };
            let _ = tx.send(listener.local_addr().map_err(|e| e.to_string()));
            crate::camera::serve(listener, std::sync::Arc::new(cameras)).await;
        });
    });
    let mut bound = rx
        .recv()
        .map_err(|_| CmdError::Runtime("the photo server did not start".into()))?
        .map_err(CmdError::Runtime)?;
    if bound.ip().is_unspecified() {
        bound.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(format!("http://{bound}/DCIM"))
}

pub fn run(a: DroneArgs) -> Result<(), CmdError> {
    let text = match &a.route {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| CmdError::Config(format!("cannot read {}: {e}", p.display())))?,
        None => DEMO_PATROL.to_string(),
    };
    let route = Route::parse(&text).map_err(|e| {
        CmdError::Config(format!(
            "{}: {e}",
            a.route
                .as_ref()
                .map_or("the demo route".into(), |p| p.display().to_string())
        ))
    })?;
    if u32::from(a.system_id) + u32::from(a.count) - 1 > 255 {
        return Err(CmdError::Config(
            "--system-id + --count runs past 255".into(),
        ));
    }
    let version = if a.mavlink == 1 {
        MavlinkVersion::V1
    } else {
        MavlinkVersion::V2
    };
    let sock = UdpSocket::bind("0.0.0.0:0")
        .map_err(|e| CmdError::Runtime(format!("cannot open a UDP socket: {e}")))?;
    sock.connect(&a.to)
        .map_err(|e| CmdError::Runtime(format!("cannot send to {}: {e}", a.to)))?;
    let photos = crate::camera::Photos::default();
    let base = match &a.photos {
        Some(addr) => Some(serve_photos(
            addr,
            a.photo_user.clone().zip(a.photo_password.clone()),
            photos.clone(),
        )?),
        None => None,
    };
    let spacing = route.loop_m() / f64::from(a.count);
    let mut drones: Vec<(u8, Drone, u8)> = (0..a.count)
        .map(|i| {
            let mut d = Drone::new(route.clone(), spacing * f64::from(i));
            if let Some(base) = &base {
                d.files = format!("{base}/{}", a.system_id + i);
            }
            (a.system_id + i, d, 0u8)
        })
        .collect();
    println!(
        "ready drones={} to={} mavlink={} rate={} photos={}",
        a.count,
        a.to,
        a.mavlink,
        a.rate,
        base.as_deref().unwrap_or("-")
    );
    let start = instant();
    let period = Duration::from_secs_f64(1.0 / f64::from(a.rate));
    let mut tick: u64 = 0;
    let (mut frames, mut bytes, mut taken, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let served = photos;
    let mut send = |sys: u8, seq: &mut u8, msg: &MavMessage| {
        let mut buf = Vec::with_capacity(64);
        let header = MavHeader {
            system_id: sys.into(),
            component_id: 1,
            sequence: *seq,
        };
        *seq = seq.wrapping_add(1);
        if mavlink::write_versioned_msg(&mut buf, version, header, msg).is_err() {
            return;
        }
        match sock.send(&buf) {
            Ok(n) => {
                frames += 1;
                bytes += n as u64;
            }
            // Nobody listening yet (ICMP port unreachable): a drone keeps sending.
            Err(_) => errors += 1,
        }
    };
    loop {
        let t_s = tick as f64 * period.as_secs_f64();
        if a.duration.is_some_and(|d| t_s >= d) {
            break;
        }
        let utc = wall_us();
        for (sys, d, seq) in &mut drones {
            if tick.is_multiple_of(u64::from(a.rate)) {
                for m in Drone::slow(t_s) {
                    send(*sys, seq, &m);
                }
            }
            let (pos, shots) = d.step(t_s, utc);
            send(*sys, seq, &pos);
            // CAMERA_IMAGE_CAPTURED's id (263) does not fit a MAVLink 1 frame.
            if version == MavlinkVersion::V2 {
                for s in &shots {
                    // The photo is on the "card" (served) before the drone says it took it.
                    if base.is_some()
                        && let MavMessage::CAMERA_IMAGE_CAPTURED(c) = s
                        && let Ok(url) = c.file_url.to_str()
                        && let Some(path) = url.trim_end_matches('\0').split_once("/DCIM/")
                    {
                        let jpeg = photo_jpeg(
                            *sys,
                            c.image_index,
                            f64::from(c.lat) / 1e7,
                            f64::from(c.lon) / 1e7,
                            PHOTO_W,
                            PHOTO_H,
                        );
                        served.put(format!("/DCIM/{}", path.1), jpeg);
                    }
                    taken += 1;
                    send(*sys, seq, s);
                }
            }
        }
        tick += 1;
        let next = start + period.mul_f64(tick as f64);
        let now = instant();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    eprintln!(
        "{}",
        serde_json::json!({"frames": frames, "bytes": bytes, "photos": taken, "send_errors": errors})
    );
    Ok(())
}
