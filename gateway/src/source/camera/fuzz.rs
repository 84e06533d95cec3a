//! Fuzz targets of the parsers of what cameras send (`fuzz/fuzz_targets/camera_*.rs`; the
//! workspace's tests run them over `fuzz/seeds/camera_*` with bounded proptest runs). Retina's
//! own RTSP/RTP parsers are fuzzed upstream (its `fuzz/` directory).

use super::http::{Creds, answer_challenge};
use super::{jpeg, onvif};

/// A body that claims to be a JPEG.
pub fn camera_jpeg(data: &[u8]) {
    let _ = jpeg::scan(data);
}

/// `WWW-Authenticate` header values (one per line) answered with credentials.
pub fn camera_digest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let creds = Creds {
        user: "admin".into(),
        password: "12345".into(),
    };
    let _ = answer_challenge(text.lines(), &creds, "GET", "/snap.jpg?ch=1", b"");
}

/// An answer to any of the ONVIF requests we send.
pub fn camera_onvif(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = onvif::camera_utc_ms(&text);
    let _ = onvif::media_xaddr(&text);
    let _ = onvif::first_profile(&text);
    let _ = onvif::snapshot_uri(&text);
}

#[cfg(test)]
mod tests {
    use fumegrid_common::fuzz::{config, seeded, seeds};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seeds_pass() {
        for s in seeds("camera_jpeg") {
            camera_jpeg(&s);
        }
        for s in seeds("camera_digest") {
            camera_digest(&s);
        }
        for s in seeds("camera_onvif") {
            camera_onvif(&s);
        }
    }

    proptest! {
        #![proptest_config(config())]
        #[test]
        fn camera_jpeg_bounded(d in seeded("camera_jpeg")) { camera_jpeg(&d) }
        #[test]
        fn camera_digest_bounded(d in seeded("camera_digest")) { camera_digest(&d) }
        #[test]
        fn camera_onvif_bounded(d in seeded("camera_onvif")) { camera_onvif(&d) }
    }
}
