//! `snapshot`: take one picture from a camera and say what came back — the commissioning tool
//! for cameras, as `probe` is for monitors.

use std::path::PathBuf;
use std::process::ExitCode;

use fumegrid_common::clock::Clock;

use crate::source::camera::http::Creds;
use crate::source::camera::onvif::OnvifCamera;
use crate::source::camera::{Camera, CameraError, CameraSource, CameraSpec, Capture};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("camera_source").required(true)
    .args(["camera", "rtsp", "url", "onvif"])))]
pub struct Args {
    /// Gateway config whose `[[cameras]]` names the camera (with --camera).
    #[arg(long, value_name = "FILE", requires = "camera")]
    pub config: Option<PathBuf>,
    /// Id of a camera in the config's `[[cameras]]`.
    #[arg(long, value_name = "ID", requires = "config")]
    pub camera: Option<String>,
    /// Or an RTSP stream: its next keyframe, e.g. rtsp://192.168.1.64/Streaming/Channels/102.
    #[arg(long, value_name = "URL")]
    pub rtsp: Option<String>,
    /// Or an HTTP snapshot URL, e.g. http://192.168.1.64/ISAPI/Streaming/channels/101/picture.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Or an ONVIF device-service address, e.g. http://192.168.1.64/onvif/device_service.
    #[arg(long, value_name = "URL")]
    pub onvif: Option<String>,
    /// User name (with --rtsp/--url/--onvif).
    #[arg(long, conflicts_with = "camera")]
    pub user: Option<String>,
    /// Password (with --rtsp/--url/--onvif).
    #[arg(long, conflicts_with = "camera")]
    pub password: Option<String>,
    /// Bound on the capture (with --rtsp/--url/--onvif).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 10_000,
        conflicts_with = "camera"
    )]
    pub timeout_ms: u64,
    /// Largest picture accepted (with --rtsp/--url/--onvif).
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024, conflicts_with = "camera")]
    pub max_bytes: u64,
    /// Write the picture's bytes (as received) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print JSON instead of a line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> ExitCode {
    let spec = match spec_of(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = crate::source::camera::check(&spec.source) {
        eprintln!("camera {}: {e}", spec.id);
        return ExitCode::from(2);
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let clock = Clock::system();
    let (result, elapsed_ms, found) = rt.block_on(async {
        let t0 = clock.instant();
        let (result, found) = match &spec.source {
            // Built here rather than through `open` to show the URL the camera named.
            CameraSource::Onvif(u) => match url::Url::parse(u) {
                Ok(device) => {
                    let cam = OnvifCamera::new(
                        &spec.id,
                        device,
                        spec.user.as_ref().map(|user| Creds {
                            user: user.clone(),
                            password: spec.password.clone().unwrap_or_default(),
                        }),
                        spec.timeout_ms,
                        spec.max_bytes
                            .min(fumegrid_common::wire::EVIDENCE_MAX_BYTES),
                        clock.clone(),
                    );
                    let r = cam.capture().await;
                    let found = cam.found().map(|u| u.to_string());
                    (r, found)
                }
                Err(e) => (Err(CameraError::Unsupported(e.to_string())), None),
            },
            _ => (
                crate::source::camera::open(&spec, clock.clone())
                    .capture()
                    .await,
                None,
            ),
        };
        let elapsed = clock.instant().duration_since(t0).as_secs_f64() * 1000.0;
        (result, elapsed, found)
    });
    match result {
        Ok(c) => {
            if let Some(path) = &args.out
                && let Err(e) = std::fs::write(path, &c.bytes)
            {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            print_ok(&spec.id, &c, elapsed_ms, found.as_deref(), &args);
            ExitCode::SUCCESS
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "camera": spec.id, "ok": false, "error": e.to_string(),
                        "kind": e.kind(), "hint": hint(&e), "elapsed_ms": elapsed_ms,
                    })
                );
            } else {
                eprintln!(
                    "camera {}: {e} after {elapsed_ms:.0} ms — {}",
                    spec.id,
                    hint(&e)
                );
            }
            ExitCode::FAILURE
        }
    }
}

fn spec_of(args: &Args) -> Result<CameraSpec, String> {
    if let (Some(path), Some(id)) = (&args.config, &args.camera) {
        // The whole file is validated as the daemon validates it: a camera taken here is
        // exactly the one the daemon would use.
        let cfg = crate::config::GatewayConfig::load(path)
            .map_err(|d| format!("{d}\n{} problem(s) found", d.len()))?;
        let ids: Vec<&str> = cfg.cameras.iter().map(|c| c.id.as_str()).collect();
        return cfg
            .cameras
            .iter()
            .find(|c| &c.id == id)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{}: no camera {id:?} in [[cameras]] (there: {})",
                    path.display(),
                    if ids.is_empty() {
                        "none".into()
                    } else {
                        ids.join(", ")
                    }
                )
            });
    }
    let source = match (&args.rtsp, &args.url, &args.onvif) {
        (Some(u), None, None) => CameraSource::Rtsp(u.clone()),
        (None, Some(u), None) => CameraSource::SnapshotUrl(u.clone()),
        (None, None, Some(u)) => CameraSource::Onvif(u.clone()),
        _ => return Err("give one of --camera, --rtsp, --url, --onvif".into()),
    };
    Ok(CameraSpec {
        id: "snapshot".into(),
        devices: Vec::new(),
        source,
        user: args.user.clone(),
        password: args.password.clone(),
        timeout_ms: args.timeout_ms,
        max_bytes: args.max_bytes,
        // Triggers do not apply to a one-off picture.
        update_every_s: 600,
        schedule_every_s: None,
    })
}

fn print_ok(id: &str, c: &Capture, elapsed_ms: f64, found: Option<&str>, args: &Args) {
    let sha = hex::encode(c.sha256);
    let dims = match (c.width, c.height) {
        (Some(w), Some(h)) => format!("{w}x{h}"),
        _ => "unknown size".into(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "camera": id, "ok": true, "media": c.media.mime(), "size": c.bytes.len(),
                "width": c.width, "height": c.height, "sha256": sha,
                "captured_ms": c.captured_ms, "elapsed_ms": elapsed_ms,
                "snapshot_uri": found,
                "out": args.out.as_ref().map(|p| p.display().to_string()),
            })
        );
    } else {
        println!(
            "camera {id}: {}, {} bytes, {dims}, sha256 {sha}, in {elapsed_ms:.0} ms",
            c.media.mime(),
            c.bytes.len()
        );
        if let Some(u) = found {
            println!("  ONVIF snapshot URI: {u}");
        }
        if let Some(p) = &args.out {
            println!("  written to {}", p.display());
        }
    }
}

/// What a technician can do about `e`.
pub fn hint(e: &CameraError) -> &'static str {
    match e {
        CameraError::Unreachable(_) => {
            "check the address and port, and that the camera is powered and on this network"
        }
        CameraError::Unauthorized => {
            "check user and password (many cameras lock the account for a while after a few \
             wrong tries); ONVIF also needs the user enabled in the camera's ONVIF user list"
        }
        CameraError::Timeout(_) => {
            "the camera accepted the connection but did not answer in time: check the port is \
             the camera's (not another service), or raise timeout_ms"
        }
        CameraError::NoKeyframe(_) => {
            "the stream sent no keyframe in time: shorten the camera's I-frame interval (GOP) \
             to 1–2 s, use the sub stream, or raise timeout_ms"
        }
        CameraError::Garbage(_) => {
            "the address answers, but not with a picture: check the URL path and port"
        }
        CameraError::TooLarge { .. } => {
            "lower the picture's resolution or quality in the camera, or raise max_bytes (at \
             most 8 MiB)"
        }
        CameraError::Status(_) => {
            "the camera refused the request: check the URL path (404) or the user's rights (403)"
        }
        CameraError::BreakerOpen(_) => "the camera failed repeatedly; it is tried again later",
        CameraError::Unsupported(_) => "use a source the gateway supports (docs/cameras.md)",
    }
}
