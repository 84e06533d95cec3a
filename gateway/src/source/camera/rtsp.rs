//! RTSP cameras: the next keyframe of a stream, with retina.
//!
//! One capture is one RTSP session over one TCP connection: `DESCRIBE` (retina answers a
//! Digest or Basic challenge with the camera's credentials), `SETUP` of the first video stream
//! with RTP interleaved on the same connection (no UDP ports to open through a shop's router),
//! `PLAY`, then frames until one is a random-access point (an IDR picture), then `TEARDOWN`.
//!
//! retina yields access units, not images (STYLE.md): the keyframe is kept as received, in
//! Annex B form with its parameter sets (H.264 SPS and PPS; H.265 VPS, SPS and PPS) in front
//! (retina's `FrameFormat::SIMPLE`), so the bytes decode on their own. The aggregator turns an
//! H.264 keyframe into a JPEG (openh264); H.265 is kept as received (docs/cameras.md).
//!
//! Bounds: the whole capture within `timeout_ms`. Running out before `PLAY` answered is
//! [`CameraError::Timeout`]; running out while frames (or nothing) arrive without a keyframe is
//! [`CameraError::NoKeyframe`]. A keyframe larger than `max_bytes` is
//! [`CameraError::TooLarge`] (retina assembles a frame before handing it over, so the memory
//! bound while receiving is the link rate times the timeout).

use fumegrid_common::clock::Clock;
use fumegrid_common::wire::Media;
use futures_util::StreamExt;
use retina::client::{
    Credentials, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use url::Url;

use super::http::{Creds, capture};
use super::{CameraError, Capture};

/// A camera whose picture is the next keyframe of an RTSP stream.
#[derive(Debug)]
pub struct RtspCamera {
    id: String,
    url: Url,
    creds: Option<Creds>,
    timeout_ms: u64,
    max_bytes: u64,
    clock: Clock,
}

impl RtspCamera {
    /// Credentials written in the URL (`rtsp://user:pass@host/…`, as many camera manuals show
    /// them) are taken out of it and used when `creds` is `None`; retina refuses URLs that
    /// carry them.
    pub fn new(
        id: &str,
        mut url: Url,
        creds: Option<Creds>,
        timeout_ms: u64,
        max_bytes: u64,
        clock: Clock,
    ) -> RtspCamera {
        let in_url = (!url.username().is_empty()).then(|| Creds {
            user: percent_decode(url.username()),
            password: percent_decode(url.password().unwrap_or("")),
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        RtspCamera {
            id: id.to_string(),
            url,
            creds: creds.or(in_url),
            timeout_ms,
            max_bytes,
            clock,
        }
    }

    async fn take(&self) -> Result<Capture, CameraError> {
        let deadline =
            self.clock.tokio_instant() + std::time::Duration::from_millis(self.timeout_ms);
        let timeout = CameraError::Timeout(self.timeout_ms);
        let options = SessionOptions::default()
            .creds(self.creds.as_ref().map(|c| Credentials {
                username: c.user.clone(),
                password: c.password.clone(),
            }))
            .user_agent(concat!("fumegrid-gateway/", env!("CARGO_PKG_VERSION")).to_string());
        let (demuxed, stream_i, media) = tokio::time::timeout_at(deadline, async {
            let mut session = Session::describe(self.url.clone(), options)
                .await
                .map_err(|e| rtsp_error(&e))?;
            let (stream_i, media) = pick_video(session.streams())?;
            session
                .setup(
                    stream_i,
                    SetupOptions::default()
                        .transport(Transport::Tcp(TcpTransportOptions::default()))
                        .frame_format(FrameFormat::SIMPLE),
                )
                .await
                .map_err(|e| rtsp_error(&e))?;
            let playing = session
                .play(PlayOptions::default())
                .await
                .map_err(|e| rtsp_error(&e))?;
            let demuxed = playing.demuxed().map_err(|e| rtsp_error(&e))?;
            Ok::<_, CameraError>((demuxed, stream_i, media))
        })
        .await
        .map_err(|_| timeout)??;
        let mut demuxed = Box::pin(demuxed);
        let frame = tokio::time::timeout_at(deadline, async {
            loop {
                match demuxed.next().await {
                    Some(Ok(CodecItem::VideoFrame(f)))
                        if f.stream_id() == stream_i && f.is_random_access_point() =>
                    {
                        return Ok(f);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(rtsp_error(&e)),
                    None => {
                        return Err(CameraError::Unreachable(
                            "the camera ended the stream before a keyframe".into(),
                        ));
                    }
                }
            }
        })
        .await
        .map_err(|_| CameraError::NoKeyframe(self.timeout_ms))??;
        let dims = demuxed
            .streams()
            .get(stream_i)
            .and_then(|s| match s.parameters() {
                Some(ParametersRef::Video(v)) => Some(v.pixel_dimensions()),
                _ => None,
            });
        let bytes = frame.into_data();
        if bytes.len() as u64 > self.max_bytes {
            return Err(CameraError::TooLarge {
                max: self.max_bytes,
            });
        }
        // Dropping the session sends TEARDOWN (retina's default policy over TCP) and closes
        // the connection.
        drop(demuxed);
        Ok(capture(bytes, media, dims, &self.clock))
    }
}

impl super::Camera for RtspCamera {
    fn id(&self) -> &str {
        &self.id
    }

    fn capture(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Capture, CameraError>> + Send + '_>> {
        Box::pin(self.take())
    }
}

/// The first video stream retina can depacketize, and what its keyframes become.
fn pick_video(streams: &[retina::client::Stream]) -> Result<(usize, Media), CameraError> {
    let mut seen = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        if s.media() != "video" {
            continue;
        }
        match s.encoding_name() {
            "h264" => return Ok((i, Media::H264)),
            "h265" => return Ok((i, Media::H265)),
            other => seen.push(fumegrid_common::text::clip(other, 40).to_string()),
        }
    }
    Err(CameraError::Unsupported(if seen.is_empty() {
        "the RTSP stream has no video".into()
    } else {
        format!(
            "video encoded as {}: only H.264 and H.265 keyframes are taken (set the camera's \
             stream to H.264 or H.265, or use its snapshot URL)",
            seen.join(", ")
        )
    }))
}

/// A retina error as the operator acts on it: credentials, an RTSP status, nothing listening,
/// or a peer that does not speak RTSP.
fn rtsp_error(e: &retina::Error) -> CameraError {
    // retina's messages span lines (connection and packet context); keep the first.
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let msg = fumegrid_common::text::clip(first, 300).to_string();
    match e.status_code() {
        Some(401) => return CameraError::Unauthorized,
        Some(code) if code >= 300 => return CameraError::Status(code),
        _ => {}
    }
    if msg.starts_with("Unable to connect")
        || msg.starts_with("Error reading from RTSP peer")
        || msg.starts_with("Error writing to RTSP peer")
    {
        CameraError::Unreachable(msg)
    } else if msg.starts_with("Unsupported") {
        CameraError::Unsupported(msg)
    } else {
        CameraError::Garbage(msg)
    }
}

/// `%xx` escapes in a URL's user or password decoded (`p%40ss` is `p@ss`); bytes that are not
/// UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_taken_out_of_it() {
        let url =
            Url::parse("rtsp://admin:p%40ss@192.0.2.1:554/Streaming/Channels/101").expect("url");
        let cam = RtspCamera::new("c", url, None, 1000, 1000, Clock::fixed(0));
        assert_eq!(
            cam.url.as_str(),
            "rtsp://192.0.2.1:554/Streaming/Channels/101"
        );
        assert_eq!(
            cam.creds,
            Some(Creds {
                user: "admin".into(),
                password: "p@ss".into()
            })
        );
        // Configured credentials win over the URL's.
        let url = Url::parse("rtsp://a:b@h/x").expect("url");
        let given = Creds {
            user: "u".into(),
            password: "p".into(),
        };
        let cam = RtspCamera::new("c", url, Some(given.clone()), 1, 1, Clock::fixed(0));
        assert_eq!(cam.creds, Some(given));
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
