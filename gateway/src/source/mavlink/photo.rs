//! Drone photos' bytes (docs/drones.md "Photos"): a `drone_photo` item of a drone with
//! `photo_url` waits for its photo to be fetched over HTTP, bounded in time and size, and then
//! goes into the outbox together with the picture, as [`Evidence`](fumegrid_common::wire::Evidence)
//! parts exactly as a camera's pictures travel ([`Capture::parts`]), its `sha256` naming
//! them. A fetch that fails (or cannot start) sends the item without `sha256`, at once: the
//! metadata is never held back for longer than the fetch's own bound, and never lost.
//!
//! The fetch is a camera's HTTP snapshot ([`crate::source::camera::http::snapshot`]: Basic or
//! Digest authentication answered only when asked, the body abandoned past `photo_max_bytes`,
//! a JPEG check, the SHA-256 taken when the bytes are complete). Every failure is counted
//! (`fumegrid_drone_photo_fetch_failures_total`, by the camera failure kinds plus `busy`,
//! `no_file`, `bad_url` and `stopped`).
//!
//! [`expand`] (pure) makes the URL from the template: `{file}` is `file_url` as the drone gave
//! it without leading `/` (`photo_url = "{file}"` takes a `file_url` that is itself an
//! `http(s)://` URL), `{name}` its last path segment, `{index}` the image index.

use std::collections::HashMap;
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::wire::{Body, DronePhoto, EVIDENCE_MAX_BYTES, EvidenceMeta, Trigger};
use tokio::task::JoinSet;
use tracing::{info, warn};
use url::Url;

use crate::source::camera::http::{self, Creds};
use crate::source::camera::{CameraError, Capture};
use crate::telemetry as m;

/// Fetches running at once on one connection (an edge box has one uplink, a drone one radio).
pub const MAX_FETCHING: usize = 2;
/// Photos waiting for a fetch beyond those running; more go up without their bytes (`busy`).
pub const MAX_WAITING: usize = 16;
/// Added to `photo_timeout_ms` as the source's own bound, should the fetch not bound itself.
const MARGIN: Duration = Duration::from_secs(2);

/// How one drone's photos are fetched (`[[drones]] photo_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoCfg {
    /// The URL template (`{file}`, `{name}`, `{index}`).
    pub url: String,
    pub creds: Option<Creds>,
    /// Bound on one fetch, connect to last byte.
    pub timeout_ms: u64,
    /// Largest photo fetched, bytes (at most the wire's `EVIDENCE_MAX_BYTES`).
    pub max_bytes: u64,
}

/// Why a photo's URL cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoUrl {
    /// The template uses `{file}` or `{name}` and the drone gave no `file_url`.
    NoFile,
    /// What came out is not an `http(s)://` URL with a host.
    Bad(String),
}

/// The photo's URL from `template`. Pure.
pub fn expand(template: &str, file: Option<&str>, index: i32) -> Result<Url, NoUrl> {
    let needs_file = template.contains("{file}") || template.contains("{name}");
    let file = file.map(|f| f.trim_start_matches('/'));
    let file = match file {
        Some(f) if !f.is_empty() => f,
        _ if needs_file => return Err(NoUrl::NoFile),
        _ => "",
    };
    let name = file.rsplit('/').next().unwrap_or(file);
    let text = template
        .replace("{file}", file)
        .replace("{name}", name)
        .replace("{index}", &index.to_string());
    let shown = || fumegrid_common::text::clip(&text, 100).to_string();
    let url = Url::parse(&text).map_err(|e| NoUrl::Bad(format!("{:?}: {e}", shown())))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(NoUrl::Bad(format!(
            "{:?}: scheme {:?}, expected http or https",
            shown(),
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(NoUrl::Bad(format!("{:?} has no host", shown())));
    }
    Ok(url)
}

/// Whether `template` can give URLs (config validation): tried with a typical `file_url` (an
/// `http://` URL when the template starts with `{file}`, a path otherwise).
pub fn check_template(template: &str) -> Result<(), String> {
    let file = if template.starts_with("{file}") {
        "http://192.168.144.25/DCIM/100MEDIA/IMG_0001.JPG"
    } else {
        "/DCIM/100MEDIA/IMG_0001.JPG"
    };
    match expand(template, Some(file), 1) {
        Ok(_) => Ok(()),
        Err(NoUrl::NoFile) => Err("cannot be expanded".into()),
        Err(NoUrl::Bad(why)) => Err(format!(
            "does not give an http(s) URL (tried with file_url {file:?}): {why}"
        )),
    }
}

/// Whether `template` fixes the host it fetches from, whatever `file_url` a drone reports: not
/// so when the drone's `file_url` makes the host (`"{file}"`, `"http://{file}"`). MAVLink is
/// not authenticated, so credentials are only ever sent to a host the config names. Pure.
pub fn host_is_fixed(template: &str) -> bool {
    let host = |f: &str| {
        expand(template, Some(f), 1)
            .ok()
            .map(|u| u.host_str().map(str::to_owned))
    };
    // Every part of the file_url (host, path, last segment) differs between the probes.
    let a = host("http://a.example/a.example");
    a.is_some() && a == host("https://b.example/b/b.example") && a == host("c.example")
}

/// The evidence parts and the item of a fetched photo (the item's `sha256` set). Pure.
pub fn with_picture(mut photo: DronePhoto, cap: &Capture, site: &str) -> Vec<Body> {
    let meta = EvidenceMeta {
        camera: photo.drone.clone(),
        devices: vec![photo.drone.clone()],
        // The drone's time of the photo, as on the item (the fetch came later).
        captured_ms: photo.ts_ms,
        trigger: Trigger::Drone,
        alarm: None,
        request: None,
        media: cap.media,
        size: cap.bytes.len() as u64,
        width: cap.width,
        height: cap.height,
        site: site.to_string(),
        readings: Vec::new(),
    };
    let mut out = cap.parts(&meta);
    photo.sha256 = Some(hex::encode(cap.sha256));
    out.push(Body::DronePhoto(photo));
    out
}

#[derive(Debug)]
struct Source {
    cfg: PhotoCfg,
    client: Result<reqwest::Client, String>,
}

/// The photo fetches of one connection (see the module doc).
#[derive(Debug)]
pub struct Fetcher {
    by_drone: HashMap<String, Source>,
    site: String,
    clock: Clock,
    running: JoinSet<Result<Capture, CameraError>>,
    /// The photo each running or waiting fetch is for.
    jobs: HashMap<tokio::task::Id, DronePhoto>,
    sem: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Fetcher {
    /// `drones`: `(drone id, how its photos are fetched)`; drones without are left out.
    pub fn new(
        drones: impl IntoIterator<Item = (String, PhotoCfg)>,
        site: String,
        clock: Clock,
    ) -> Fetcher {
        let by_drone = drones
            .into_iter()
            .map(|(id, cfg)| {
                let client = http::client(Duration::from_millis(cfg.timeout_ms));
                if let Err(e) = &client {
                    warn!(drone = id, error = %e, "no HTTP client: this drone's photos go up without their bytes");
                }
                for r in REASONS {
                    metrics::counter!(m::DRONE_PHOTO_FETCH_FAILURES, "drone" => id.clone(), "reason" => r)
                        .absolute(0);
                }
                (id, Source { cfg, client })
            })
            .collect();
        Fetcher {
            by_drone,
            site,
            clock,
            running: JoinSet::new(),
            jobs: HashMap::new(),
            sem: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_FETCHING)),
        }
    }

    /// Whether any drone's photos are fetched.
    pub fn is_empty(&self) -> bool {
        self.by_drone.is_empty()
    }

    /// Fetches running or waiting.
    pub fn pending(&self) -> usize {
        self.jobs.len()
    }

    /// Takes the successful photos of drones with `photo_url` out of `out` and starts their
    /// fetches; a photo whose fetch cannot start stays in `out` without `sha256` (counted).
    pub fn take(&mut self, out: &mut Vec<Body>) {
        if self.by_drone.is_empty() {
            return;
        }
        let items = std::mem::take(out);
        for b in items {
            match b {
                Body::DronePhoto(p) if p.ok && self.by_drone.contains_key(&p.drone) => {
                    if let Some(p) = self.start(p) {
                        out.push(Body::DronePhoto(p));
                    }
                }
                other => out.push(other),
            }
        }
    }

    /// Starts `p`'s fetch, or gives it back when it cannot start.
    fn start(&mut self, p: DronePhoto) -> Option<DronePhoto> {
        let Some(src) = self.by_drone.get(&p.drone) else {
            return Some(p);
        };
        if self.jobs.len() >= MAX_FETCHING + MAX_WAITING {
            failed(
                &p,
                "busy",
                &format!("{} photo fetches already pending", self.jobs.len()),
            );
            return Some(p);
        }
        let url = match expand(&src.cfg.url, p.file.as_deref(), p.index) {
            Ok(u) => u,
            Err(NoUrl::NoFile) => {
                failed(&p, "no_file", "the drone named no file for it");
                return Some(p);
            }
            Err(NoUrl::Bad(why)) => {
                failed(&p, "bad_url", &why);
                return Some(p);
            }
        };
        let client = match &src.client {
            Ok(c) => c.clone(),
            Err(e) => {
                failed(&p, "unreachable", e);
                return Some(p);
            }
        };
        let creds = src.cfg.creds.clone();
        let (timeout_ms, max_bytes) = (
            src.cfg.timeout_ms,
            src.cfg.max_bytes.min(EVIDENCE_MAX_BYTES),
        );
        let clock = self.clock.clone();
        let sem = self.sem.clone();
        let bound = Duration::from_millis(timeout_ms) + MARGIN;
        let handle = self.running.spawn(async move {
            let _permit = sem.acquire_owned().await;
            // The time bound starts when the fetch does, not while it waits for its turn.
            let fetch = http::bounded(
                timeout_ms,
                http::snapshot(&client, &url, creds.as_ref(), max_bytes, &clock),
            );
            match tokio::time::timeout(bound, fetch).await {
                Ok(r) => r,
                Err(_) => Err(CameraError::Timeout(bound.as_millis() as u64)),
            }
        });
        self.jobs.insert(handle.id(), p);
        None
    }

    /// The next finished fetch: the picture's parts and the item, or the item alone. Pending
    /// forever while nothing runs (for `select!`).
    pub async fn next(&mut self) -> Vec<Body> {
        loop {
            let Some(done) = self.running.join_next_with_id().await else {
                std::future::pending::<()>().await;
                continue;
            };
            let (id, result) = match done {
                Ok((id, r)) => (id, r),
                Err(e) => (
                    e.id(),
                    Err(CameraError::Garbage(format!("fetch task failed: {e}"))),
                ),
            };
            let Some(p) = self.jobs.remove(&id) else {
                continue;
            };
            return match result {
                Ok(cap) if cap.bytes.is_empty() => {
                    failed(&p, "garbage", "an empty photo");
                    vec![Body::DronePhoto(p)]
                }
                Ok(cap) => {
                    let id = p.drone.clone();
                    metrics::counter!(m::DRONE_PHOTOS_FETCHED, "drone" => id.clone()).increment(1);
                    metrics::counter!(m::DRONE_PHOTO_BYTES, "drone" => id.clone())
                        .increment(cap.bytes.len() as u64);
                    info!(
                        drone = id,
                        index = p.index,
                        bytes = cap.bytes.len(),
                        sha256 = hex::encode(cap.sha256),
                        "drone photo fetched"
                    );
                    with_picture(p, &cap, &self.site)
                }
                Err(e) => {
                    failed(&p, e.kind(), &e.to_string());
                    vec![Body::DronePhoto(p)]
                }
            };
        }
    }

    /// At the stop: the fetches still pending are abandoned; their items go up without bytes.
    pub fn abandon(&mut self) -> Vec<Body> {
        self.running.abort_all();
        let mut out: Vec<DronePhoto> = self.jobs.drain().map(|(_, p)| p).collect();
        out.sort_by_key(|p| (p.ts_ms, p.index));
        for p in &out {
            failed(p, "stopped", "the gateway is stopping");
        }
        out.into_iter().map(Body::DronePhoto).collect()
    }
}

/// The `reason` labels of `fumegrid_drone_photo_fetch_failures_total`.
pub const REASONS: [&str; 11] = [
    "unreachable",
    "unauthorized",
    "timeout",
    "status",
    "garbage",
    "too_large",
    "unsupported",
    "busy",
    "no_file",
    "bad_url",
    "stopped",
];

fn failed(p: &DronePhoto, reason: &'static str, why: &str) {
    metrics::counter!(m::DRONE_PHOTO_FETCH_FAILURES, "drone" => p.drone.clone(), "reason" => reason)
        .increment(1);
    warn!(
        drone = p.drone,
        index = p.index,
        reason,
        error = fumegrid_common::text::clip(why, 300),
        "drone photo not fetched: it goes up without its bytes"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand() {
        let u = |t: &str, f: Option<&str>, i| expand(t, f, i).map(|u| u.to_string());
        assert_eq!(
            u(
                "http://192.168.144.25/DCIM/{file}",
                Some("/100MEDIA/IMG_0004.JPG"),
                4
            ),
            Ok("http://192.168.144.25/DCIM/100MEDIA/IMG_0004.JPG".into())
        );
        assert_eq!(
            u(
                "http://cam/photos/{name}",
                Some("/DCIM/100MEDIA/IMG_0004.JPG"),
                4
            ),
            Ok("http://cam/photos/IMG_0004.JPG".into())
        );
        assert_eq!(
            u("{file}", Some("http://10.0.0.5:8080/DCIM/IMG_0004.JPG"), 4),
            Ok("http://10.0.0.5:8080/DCIM/IMG_0004.JPG".into())
        );
        assert_eq!(
            u("https://cam/cgi-bin/photo?n={index}", None, 17),
            Ok("https://cam/cgi-bin/photo?n=17".into())
        );
        // A space in a file name is encoded, not refused.
        assert_eq!(
            u("http://cam/{file}", Some("DCIM/IMG 1.JPG"), 1),
            Ok("http://cam/DCIM/IMG%201.JPG".into())
        );
        assert_eq!(u("http://cam/{file}", None, 1), Err(NoUrl::NoFile));
        assert_eq!(u("http://cam/{name}", Some("/"), 1), Err(NoUrl::NoFile));
        // `{file}` that is a path on the drone's card, not a URL.
        assert!(matches!(
            u("{file}", Some("/DCIM/IMG_0001.JPG"), 1),
            Err(NoUrl::Bad(_))
        ));
        // A drone naming another scheme.
        assert!(matches!(
            u("{file}", Some("file:///etc/passwd"), 1),
            Err(NoUrl::Bad(m)) if m.contains("scheme")
        ));
    }

    #[test]
    fn templates_are_checked_for_the_config() {
        for ok in [
            "{file}",
            "http://192.168.144.25/DCIM/{file}",
            "http://cam/{name}",
            "https://cam/p?i={index}",
        ] {
            assert_eq!(check_template(ok), Ok(()), "{ok}");
        }
        for bad in ["", "ftp://cam/{file}", "/DCIM/{file}", "cam/{name}"] {
            assert!(check_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_fetched_photo_is_evidence_parts_and_the_item_names_them() {
        let bytes: Vec<u8> = (0..(fumegrid_common::wire::EVIDENCE_PART_BYTES + 10))
            .map(|i| i as u8)
            .collect();
        let cap = http::capture(
            bytes.clone(),
            fumegrid_common::wire::Media::Jpeg,
            Some((640, 480)),
            &Clock::fixed(5),
        );
        let photo = DronePhoto {
            drone: "uav-1".into(),
            ts_ms: 1_700_000_000_000,
            lat: 30.6,
            lon: 104.0,
            alt_m: 560.0,
            index: 3,
            file: Some("http://x/IMG_0003.JPG".into()),
            ok: true,
            sha256: None,
        };
        let out = with_picture(photo, &cap, "Demo street");
        assert_eq!(out.len(), 3, "two parts and the item");
        let sha = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let mut joined = Vec::new();
        for b in &out[..2] {
            let Body::Evidence(e) = b else {
                panic!("{b:?}")
            };
            assert_eq!(e.sha256, sha);
            assert_eq!(e.meta.camera, "uav-1");
            assert_eq!(e.meta.devices, ["uav-1"]);
            assert_eq!(e.meta.trigger, Trigger::Drone);
            assert_eq!(e.meta.captured_ms, 1_700_000_000_000, "the drone's time");
            assert_eq!(e.meta.site, "Demo street");
            use base64::Engine as _;
            joined.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(&e.data)
                    .expect("base64"),
            );
        }
        assert_eq!(joined, bytes);
        let Body::DronePhoto(p) = &out[2] else {
            panic!()
        };
        assert_eq!(p.sha256.as_deref(), Some(sha.as_str()));
    }
}
