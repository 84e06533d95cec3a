//! The real camera for a [`CameraSpec`].

use std::pin::Pin;
use std::sync::Arc;

use fumegrid_common::clock::Clock;
use fumegrid_common::wire::EVIDENCE_MAX_BYTES;
use url::Url;

use super::http::{Creds, HttpCamera};
use super::onvif::OnvifCamera;
use super::rtsp::RtspCamera;
use super::{Camera, CameraError, CameraSource, CameraSpec, Capture};

/// The camera `spec` describes, taking its pictures with `clock`'s time. Builds nothing on the
/// network: every capture connects afresh (a camera rebooting between captures costs
/// nothing). `max_bytes` is capped at the wire's bound (`EVIDENCE_MAX_BYTES`).
///
/// A spec whose address cannot be used (not a URL, wrong scheme; [`check`] says which, and
/// config validation should have refused it) gives a camera whose every capture fails with
/// [`CameraError::Unsupported`] naming the problem, so a daemon never stops for it.
pub fn open(spec: &CameraSpec, clock: Clock) -> Arc<dyn Camera> {
    let creds = spec.user.as_ref().map(|u| Creds {
        user: u.clone(),
        password: spec.password.clone().unwrap_or_default(),
    });
    let max_bytes = spec.max_bytes.min(EVIDENCE_MAX_BYTES);
    let t = spec.timeout_ms;
    match address(&spec.source) {
        Err(problem) => Arc::new(Unusable {
            id: spec.id.clone(),
            problem,
        }),
        Ok(url) => match &spec.source {
            CameraSource::Rtsp(_) => {
                Arc::new(RtspCamera::new(&spec.id, url, creds, t, max_bytes, clock))
            }
            CameraSource::SnapshotUrl(_) => {
                Arc::new(HttpCamera::new(&spec.id, url, creds, t, max_bytes, clock))
            }
            CameraSource::Onvif(_) => {
                Arc::new(OnvifCamera::new(&spec.id, url, creds, t, max_bytes, clock))
            }
        },
    }
}

/// Whether `source`'s address can be used: a URL with the scheme its kind speaks (`rtsp://`
/// for `rtsp`; `http://` or `https://` for `snapshot_url` and `onvif`). For config validation.
pub fn check(source: &CameraSource) -> Result<(), String> {
    address(source).map(|_| ())
}

fn address(source: &CameraSource) -> Result<Url, String> {
    let (key, text, schemes): (&str, &str, &[&str]) = match source {
        CameraSource::Rtsp(u) => ("rtsp", u, &["rtsp"]),
        CameraSource::SnapshotUrl(u) => ("snapshot_url", u, &["http", "https"]),
        CameraSource::Onvif(u) => ("onvif", u, &["http", "https"]),
    };
    let shown = fumegrid_common::text::clip(text, 100);
    let url = Url::parse(text).map_err(|e| format!("{key} {shown:?} is not a URL: {e}"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "{key} {shown:?}: scheme {:?}, expected {}",
            url.scheme(),
            schemes.join(" or ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{key} {shown:?} has no host"));
    }
    Ok(url)
}

/// A camera whose address cannot be used.
#[derive(Debug)]
struct Unusable {
    id: String,
    problem: String,
}

impl Camera for Unusable {
    fn id(&self) -> &str {
        &self.id
    }

    fn capture(&self) -> Pin<Box<dyn Future<Output = Result<Capture, CameraError>> + Send + '_>> {
        let e = CameraError::Unsupported(self.problem.clone());
        Box::pin(async move { Err(e) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: CameraSource) -> CameraSpec {
        CameraSpec {
            id: "cam1".into(),
            devices: vec!["hood1".into()],
            source,
            user: None,
            password: None,
            timeout_ms: 1000,
            max_bytes: 1000,
            update_every_s: 600,
            schedule_every_s: None,
        }
    }

    #[test]
    fn checks_the_scheme_of_each_kind() {
        assert!(
            check(&CameraSource::Rtsp(
                "rtsp://10.0.0.5/Streaming/Channels/102".into()
            ))
            .is_ok()
        );
        assert!(check(&CameraSource::SnapshotUrl("https://cam/snap.jpg".into())).is_ok());
        assert!(
            check(&CameraSource::Onvif(
                "http://cam/onvif/device_service".into()
            ))
            .is_ok()
        );
        let e = check(&CameraSource::Rtsp("http://cam/x".into())).expect_err("refused");
        assert!(e.contains("expected rtsp"), "{e}");
        let e = check(&CameraSource::SnapshotUrl("cam/snap.jpg".into())).expect_err("refused");
        assert!(e.contains("snapshot_url") && e.contains("not a URL"), "{e}");
    }

    #[tokio::test]
    async fn an_unusable_address_fails_each_capture_clearly() {
        let cam = open(
            &spec(CameraSource::Onvif("ftp://cam/".into())),
            Clock::fixed(0),
        );
        assert_eq!(cam.id(), "cam1");
        let e = cam.capture().await.expect_err("refused");
        assert!(
            matches!(&e, CameraError::Unsupported(m) if m.contains("onvif") && m.contains("ftp")),
            "{e}"
        );
    }

    #[test]
    fn a_spec_parses_from_toml() {
        #[derive(Debug, serde::Deserialize)]
        struct File {
            cameras: Vec<CameraSpec>,
        }
        let f: File = toml::from_str(
            r#"
[[cameras]]
id = "kitchen"
devices = ["hood1"]
rtsp = "rtsp://10.0.0.5/Streaming/Channels/102"
user = "admin"
password = "x"

[[cameras]]
id = "door"
devices = ["hood1", "hood2"]
snapshot_url = "http://10.0.0.6/cgi-bin/snapshot.cgi"
timeout_ms = 3000
"#,
        )
        .expect("parses");
        assert_eq!(
            f.cameras[0].source,
            CameraSource::Rtsp("rtsp://10.0.0.5/Streaming/Channels/102".into())
        );
        assert_eq!(f.cameras[1].timeout_ms, 3000);
        assert_eq!(f.cameras[1].max_bytes, 4 * 1024 * 1024);
    }
}
