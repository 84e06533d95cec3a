//! One H.264 keyframe → RGB. The input is an access unit in Annex B form (start codes) with its
//! SPS and PPS, as the gateway's RTSP capture hands over a keyframe. OpenH264 (crate openh264,
//! built from its bundled C++ source) decodes; the I420 → RGB conversion is ours (BT.601,
//! limited range, as cameras and x264 send), with checked indexing so that odd sizes and short
//! planes cannot panic.
//!
//! Each call uses a fresh decoder: a keyframe needs no earlier state, and nothing of one
//! camera's stream can leak into another's picture.

use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig};
use openh264::formats::YUVSource;
use openh264::{OpenH264API, nal_units};

use crate::{PictureError, Rgb, check_size, clip_msg};

/// Decodes the first picture of an Annex B access unit (SPS, PPS, IDR slice(s)).
pub fn decode(bytes: &[u8]) -> Result<Rgb, PictureError> {
    if !has_start_code(bytes) {
        return Err(PictureError::H264(
            "no Annex B start code (00 00 01): not an H.264 byte stream".into(),
        ));
    }
    if let Some(idc) = sps_profile(bytes)
        && !DECODED_PROFILES.contains(&idc)
    {
        return Err(PictureError::H264(format!(
            "profile {} ({idc}) is not decoded here: OpenH264 decodes Baseline, Main, Extended and \
             High (8-bit 4:2:0) streams; set the camera's stream to Main or High",
            profile_name(idc)
        )));
    }
    let mut decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
        .map_err(|e| PictureError::H264(format!("decoder did not start: {}", clip_msg(e))))?;
    let mut last_error = None;
    for nal in nal_units(bytes) {
        match decoder.decode(nal) {
            Ok(Some(yuv)) => return to_rgb(&yuv),
            Ok(None) => {}
            // Keep going: a damaged SEI or a unit OpenH264 does not know must not hide the
            // picture that follows.
            Err(e) => last_error = Some(clip_msg(e)),
        }
    }
    match decoder.flush_remaining() {
        Ok(frames) => {
            if let Some(yuv) = frames.first() {
                return to_rgb(yuv);
            }
        }
        Err(e) => last_error = Some(clip_msg(e)),
    }
    Err(PictureError::H264(match last_error {
        Some(e) => format!("no picture decoded ({e})"),
        None => "no picture in the access unit (no SPS/PPS or no IDR slice?)".into(),
    }))
}

/// The `profile_idc` values OpenH264 accepts (its `ParseSps`): Baseline, Main, Scalable
/// Baseline, Scalable High, Extended, High.
const DECODED_PROFILES: [u8; 6] = [66, 77, 83, 86, 88, 100];

/// `profile_idc` of the first SPS (NAL type 7): the byte after its NAL header.
fn sps_profile(bytes: &[u8]) -> Option<u8> {
    let at = bytes
        .windows(4)
        .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1F == 7)?;
    bytes.get(at + 4).copied()
}

fn profile_name(idc: u8) -> &'static str {
    match idc {
        44 => "CAVLC 4:4:4 Intra",
        110 => "High 10",
        122 => "High 4:2:2",
        244 => "High 4:4:4 Predictive",
        _ => "unknown",
    }
}

fn has_start_code(bytes: &[u8]) -> bool {
    bytes.windows(3).any(|w| w == [0, 0, 1])
}

/// I420 → RGB, BT.601 limited range, integer arithmetic.
fn to_rgb(yuv: &DecodedYUV<'_>) -> Result<Rgb, PictureError> {
    let (w, h) = yuv.dimensions();
    let (w64, h64) = (w as u64, h as u64);
    if w == 0 || h == 0 {
        return Err(PictureError::H264("decoded picture of zero size".into()));
    }
    check_size(w64, h64)?;
    let (sy, su, sv) = yuv.strides();
    let (py, pu, pv) = (yuv.y(), yuv.u(), yuv.v());
    let short = || PictureError::H264("decoder returned planes shorter than the picture".into());
    // The planes must hold every row we read; checked once here, then `get` below.
    if py.len() < (h - 1) * sy + w
        || pu.len() < (h.div_ceil(2) - 1) * su + w.div_ceil(2)
        || pv.len() < (h.div_ceil(2) - 1) * sv + w.div_ceil(2)
    {
        return Err(short());
    }
    let mut data = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for col in 0..w {
            let y = i32::from(*py.get(row * sy + col).ok_or_else(short)?) - 16;
            let u = i32::from(*pu.get(row / 2 * su + col / 2).ok_or_else(short)?) - 128;
            let v = i32::from(*pv.get(row / 2 * sv + col / 2).ok_or_else(short)?) - 128;
            let c = 298 * y + 128;
            data.push(((c + 409 * v) >> 8).clamp(0, 255) as u8);
            data.push(((c - 100 * u - 208 * v) >> 8).clamp(0, 255) as u8);
            data.push(((c + 516 * u) >> 8).clamp(0, 255) as u8);
        }
    }
    Ok(Rgb {
        width: w as u32,
        height: h as u32,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SMPTE colour bars from GStreamer's videotestsrc, 320×240, one x264 keyframe
    /// (tests/data/README.md has the command).
    const SMPTE: &[u8] = include_bytes!("../tests/data/smpte-320x240.h264");

    #[test]
    fn decodes_the_smpte_test_vector() {
        let img = decode(SMPTE).expect("x264 keyframe decodes");
        assert_eq!((img.width, img.height), (320, 240));
        // The top two thirds hold seven bars of equal width, in videotestsrc's full-intensity
        // RGB: white, yellow, cyan, green, magenta, red, blue. Sample the middle of each bar,
        // away from its edges (where 4:2:0 chroma blurs).
        let bars: [[f64; 3]; 7] = [
            [255.0, 255.0, 255.0],
            [255.0, 255.0, 0.0],
            [0.0, 255.0, 255.0],
            [0.0, 255.0, 0.0],
            [255.0, 0.0, 255.0],
            [255.0, 0.0, 0.0],
            [0.0, 0.0, 255.0],
        ];
        let bar_w = 320.0 / 7.0;
        for (i, want) in bars.iter().enumerate() {
            let cx = (bar_w * (i as f64 + 0.5)) as u32;
            let got = img.mean(cx - 8, 40, cx + 8, 120);
            for c in 0..3 {
                assert!(
                    (got[c] - want[c]).abs() < 20.0,
                    "bar {i}: got {got:?}, want {want:?}"
                );
            }
        }
        // The bottom row: a white block at x 80..100 and the "-I" block at x 0..30, which
        // videotestsrc writes in I420 as Y 16, U 198, V 21: RGB (0, 60, 141) in BT.601 (its RGB
        // output draws (0, 0, 128) there instead; the encoder saw the I420).
        let white = img.mean(82, 200, 98, 230);
        let navy = img.mean(4, 200, 28, 230);
        for c in 0..3 {
            assert!((white[c] - 255.0).abs() < 20.0, "white block {white:?}");
            assert!(
                (navy[c] - [0.0, 60.0, 141.0][c]).abs() < 20.0,
                "navy block {navy:?}"
            );
        }
    }

    #[test]
    fn unsupported_profiles_are_named() {
        // The same bars as High 4:4:4 Predictive (tests/data/README.md): OpenH264 refuses its
        // SPS; the error says why instead of "no parameter sets".
        let yuv444 = include_bytes!("../tests/data/smpte-64x48-yuv444.h264");
        let e = decode(yuv444).expect_err("4:4:4 is not decoded");
        let msg = e.to_string();
        assert!(msg.contains("High 4:4:4 Predictive (244)"), "{msg}");
        assert_eq!(sps_profile(SMPTE), Some(100), "the 4:2:0 vector is High");
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"\0\0\x01",
            b"\0\0\0\x01\x67",
            b"no start code here",
            &[0u8; 100],
            &[0xFF; 100],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        // The test vector cut short, and with its slice data overwritten: an error or a damaged
        // picture, never a panic.
        let _ = decode(&SMPTE[..SMPTE.len() / 4]);
        let mut broken = SMPTE.to_vec();
        let n = broken.len();
        for b in &mut broken[n / 2..] {
            *b = 0x5A;
        }
        let _ = decode(&broken);
    }
}
