//! Cameras: a picture on demand from an RTSP stream's next keyframe or an HTTP snapshot URL
//! (DESIGN.md §12). This module is the seam between the capture code (`http`, `rtsp`, `onvif`)
//! and the evidence pipeline that decides when to take a picture and carries it through the
//! outbox.
//!
//! A capture is bounded in time (`timeout_ms`) and size (`max_bytes`), hashes the original bytes
//! (SHA-256) the moment they are complete, and never retries by itself: the caller decides.
//!
//! - [`open`]: the real camera for a [`CameraSpec`].
//! - [`http`]: HTTP snapshot URLs (Basic/Digest auth, bounded streaming read, JPEG check);
//!   also the one place a [`Capture`] is made (hash, time).
//! - [`onvif`]: `GetSnapshotUri` discovery (WS-Security UsernameToken), then [`http`].
//! - [`rtsp`]: the next keyframe of an RTSP stream (retina), H.264 or H.265, Annex B.
//! - [`jpeg`]: the pure check that bytes are a JPEG, and its dimensions.
//! - [`fuzz`]: fuzz targets of the parsers of what cameras send.

pub mod fuzz;
pub mod http;
pub mod jpeg;
pub mod onvif;
mod open;
pub mod rtsp;

pub use open::{check, open};

use std::future::Future;
use std::pin::Pin;

use fumegrid_common::wire::{Body, EVIDENCE_PART_BYTES, Evidence, EvidenceMeta, Media};
use serde::Deserialize;

/// `[[cameras]]` in the gateway config: one camera and the devices it watches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSpec {
    /// Camera id, unique on this gateway. Required.
    pub id: String,
    /// Ids of the `[[devices]]` this camera watches (their alarms trigger it). Required, at
    /// least one.
    pub devices: Vec<String>,
    /// How the picture is taken. Required.
    #[serde(flatten)]
    pub source: CameraSource,
    /// User name for the camera (RTSP, HTTP, ONVIF). Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// Password. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// Bound on one capture, connect to last byte. Default 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest picture accepted, bytes. Default 4 MiB, at most 8 MiB (the wire's bound).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    // ---- When pictures are taken (the evidence pipeline's; keep these last) ----
    /// While an alarm of a bound device stays open, take a picture on its updates at most this
    /// often (per camera). Default 600 s; at least 10.
    #[serde(default = "default_update_every_s")]
    pub update_every_s: u64,
    /// Audit pictures: take one this often while a bound device is within its opening hours
    /// (`[rules] opening_hours`; a device without them counts as always open). Default: none
    /// (no audit pictures); at least 60.
    #[serde(default)]
    pub schedule_every_s: Option<u64>,
}

fn default_update_every_s() -> u64 {
    600
}

/// Where the picture comes from: exactly one of `rtsp`, `snapshot_url`, `onvif`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraSource {
    /// `rtsp://host[:port]/path` of the main or sub stream; the next keyframe is taken.
    Rtsp(String),
    /// `http(s)://…` URL that answers a GET with one JPEG (Hikvision
    /// `/ISAPI/Streaming/channels/101/picture`, Dahua `/cgi-bin/snapshot.cgi`, …).
    SnapshotUrl(String),
    /// The camera's ONVIF device-service address (`http://host/onvif/device_service`); the
    /// snapshot URL is asked with `GetSnapshotUri` and kept until a capture fails.
    Onvif(String),
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_max_bytes() -> u64 {
    4 * 1024 * 1024
}

/// One picture as the camera gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The original bytes: a JPEG, or an H.264/H.265 keyframe access unit (Annex B, parameter
    /// sets included).
    pub bytes: Vec<u8>,
    pub media: Media,
    /// SHA-256 of `bytes`, taken when they were complete.
    pub sha256: [u8; 32],
    /// Wall-clock time the picture was complete, ms since the epoch.
    pub captured_ms: i64,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl Capture {
    /// The picture's original bytes as [`Body::Evidence`] parts of at most
    /// [`EVIDENCE_PART_BYTES`], each carrying `meta` (how pictures travel: DESIGN.md §12).
    /// Pure.
    pub fn parts(&self, meta: &EvidenceMeta) -> Vec<Body> {
        use base64::Engine as _;
        let sha256 = hex::encode(self.sha256);
        let chunks: Vec<&[u8]> = self.bytes.chunks(EVIDENCE_PART_BYTES).collect();
        let n = chunks.len() as u32;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                Body::Evidence(Evidence {
                    sha256: sha256.clone(),
                    part: i as u32,
                    parts: n,
                    data: base64::engine::general_purpose::STANDARD.encode(c),
                    meta: meta.clone(),
                })
            })
            .collect()
    }
}

/// Why a camera gave no picture. The `Display` form goes into the `camera_failed` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CameraError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("credentials refused")]
    Unauthorized,
    #[error("no picture within {0} ms")]
    Timeout(u64),
    #[error("no keyframe within {0} ms")]
    NoKeyframe(u64),
    #[error("not a picture: {0}")]
    Garbage(String),
    #[error("picture larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("camera answered {0}")]
    Status(u16),
    #[error("breaker open after repeated failures; next try in {0} s")]
    BreakerOpen(u64),
    /// The camera works but offers nothing we can take (an RTSP stream in MPEG-4 or without video, a
    /// URL scheme we do not speak).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl CameraError {
    /// The short name of the failure: the `reason` label of `fumegrid_camera_failures_total`
    /// and the `kind` of `snapshot --json`.
    pub fn kind(&self) -> &'static str {
        match self {
            CameraError::Unreachable(_) => "unreachable",
            CameraError::Unauthorized => "unauthorized",
            CameraError::Timeout(_) => "timeout",
            CameraError::NoKeyframe(_) => "no_keyframe",
            CameraError::Garbage(_) => "garbage",
            CameraError::TooLarge { .. } => "too_large",
            CameraError::Status(_) => "status",
            CameraError::BreakerOpen(_) => "breaker_open",
            CameraError::Unsupported(_) => "unsupported",
        }
    }
}

/// A camera the pipeline can ask for a picture. The real ones are built from a [`CameraSpec`];
/// tests use a fake.
pub trait Camera: Send + Sync + std::fmt::Debug {
    fn id(&self) -> &str;
    fn capture(&self) -> Pin<Box<dyn Future<Output = Result<Capture, CameraError>> + Send + '_>>;
}
