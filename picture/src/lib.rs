//! fumegrid-picture: the pictures of fumegrid's evidence. Decodes what cameras send (a JPEG from
//! an HTTP snapshot, an H.264 keyframe from RTSP) into 8-bit RGB, draws the caption band people
//! read (site, device, time, reading), makes thumbnails for lists, encodes JPEG, and tells a
//! picture's type from its bytes.
//!
//! # Layout
//!
//! ```text
//! bytes ─▶ sniff (type from magic bytes) ─▶ decode: jpeg (zune-jpeg) | h264 (OpenH264) ─▶ Rgb
//! Rgb ─▶ caption (band with text, embedded 8×8 font) ─▶ thumbnail (area average) ─▶ jpeg::encode
//! ```
//!
//! - [`jpeg`]: JPEG decoding (pure Rust, zune-jpeg) and encoding (pure Rust, jpeg-encoder).
//! - [`h264`]: one H.264 keyframe access unit (Annex B, SPS and PPS included, as retina hands
//!   it over) → RGB, with OpenH264 built from its bundled source; I420 → RGB (BT.601, limited
//!   range) is ours, with checked indexing.
//! - [`caption`]: the caption band, drawn with the public-domain 8×8 font scaled to the width.
//! - [`thumbnail`]: downscaling by area averaging.
//! - [`captioned_jpeg`]: the three together, camera bytes → the JPEG people see.
//! - [`fuzz`]: the fuzz target body (decoding arbitrary bytes), shared with `fuzz/`.
//!
//! # What is not decoded
//!
//! H.264 in profiles OpenH264 does not decode (High 10, High 4:2:2, High 4:4:4, CAVLC 4:4:4) is
//! refused with an error naming the profile; cameras send Main or High (8-bit 4:2:0).
//!
//! **H.265** (the default stream of many cameras) is not decoded: the Rust ecosystem has no
//! H.265 decoder we can ship (pure Rust ones are incomplete; the usable ones bind to FFmpeg or
//! libde265, system libraries with patent and packaging strings attached). [`decode`] answers
//! [`PictureError::Unsupported`] and the caller keeps the original keyframe, which carries the
//! evidence's hash either way.
//!
//! # Bounds
//!
//! Every decode refuses an input above [`MAX_INPUT_BYTES`] and a picture above [`MAX_PIXELS`] or [`MAX_SIDE`] from its header, before
//! the pixels are allocated, and answers garbage with an error, never a panic (a fuzz target
//! and a bounded run in the tests check it). OpenH264 itself refuses streams above H.264 level
//! 5.2's frame size (36 864 macroblocks, about 9.4 MP), which bounds its own buffers.

use fumegrid_common::wire::Media;

pub mod caption;
pub mod fuzz;
pub mod h264;
pub mod jpeg;
pub mod thumbnail;

pub use caption::caption;
pub use jpeg::encode as encode_jpeg;
pub use thumbnail::thumbnail;

/// The largest picture decoded, in pixels (40 MP: 120 MB of RGB).
pub const MAX_PIXELS: u64 = 40_000_000;
/// The longest side decoded, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// The largest input decoded, in bytes: what one piece of evidence may carry
/// ([`fumegrid_common::wire::EVIDENCE_MAX_BYTES`], 8 MiB).
pub const MAX_INPUT_BYTES: u64 = fumegrid_common::wire::EVIDENCE_MAX_BYTES;

/// An 8-bit RGB picture, row-major, `data.len() == width * height * 3`.
#[derive(Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Rgb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rgb({}×{})", self.width, self.height)
    }
}

impl Rgb {
    /// A picture of one colour.
    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Rgb {
        let data = rgb.repeat(width as usize * height as usize);
        Rgb {
            width,
            height,
            data,
        }
    }

    /// The pixel at (x, y); `None` outside the picture.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        let p = self.data.get(i..i + 3)?;
        Some([p[0], p[1], p[2]])
    }

    /// Sets the pixel at (x, y); nothing outside the picture.
    pub fn set(&mut self, x: u32, y: u32, rgb: [u8; 3]) {
        if x >= self.width || y >= self.height {
            return;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        if let Some(p) = self.data.get_mut(i..i + 3) {
            p.copy_from_slice(&rgb);
        }
    }

    /// Fills the rectangle `[x0, x1) × [y0, y1)` (clipped to the picture).
    pub fn fill_rect(&mut self, x0: u32, y0: u32, x1: u32, y1: u32, rgb: [u8; 3]) {
        let (x1, y1) = (x1.min(self.width), y1.min(self.height));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let w = self.width as usize;
        for y in y0 as usize..y1 as usize {
            let row = (y * w + x0 as usize) * 3..(y * w + x1 as usize) * 3;
            if let Some(row) = self.data.get_mut(row) {
                for p in row.chunks_exact_mut(3) {
                    p.copy_from_slice(&rgb);
                }
            }
        }
    }

    /// Mean colour of the rectangle `[x0, x1) × [y0, y1)` (clipped), as f64 per channel.
    pub fn mean(&self, x0: u32, y0: u32, x1: u32, y1: u32) -> [f64; 3] {
        let (x1, y1) = (x1.min(self.width), y1.min(self.height));
        let mut sum = [0u64; 3];
        let mut n = 0u64;
        let w = self.width as usize;
        for y in y0 as usize..y1 as usize {
            if x0 >= x1 {
                break;
            }
            let row = (y * w + x0 as usize) * 3..(y * w + x1 as usize) * 3;
            for p in self.data.get(row).unwrap_or(&[]).chunks_exact(3) {
                sum[0] += u64::from(p[0]);
                sum[1] += u64::from(p[1]);
                sum[2] += u64::from(p[2]);
                n += 1;
            }
        }
        let n = n.max(1) as f64;
        [sum[0] as f64 / n, sum[1] as f64 / n, sum[2] as f64 / n]
    }
}

/// Why a picture could not be decoded. Messages quote at most a short clip of a decoder's text.
#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    /// No decoder for this media type here (H.265): keep the original bytes.
    #[error("no decoder for this media type here (H.265 is kept as received)")]
    Unsupported,
    /// The header announces a picture above [`MAX_PIXELS`] or [`MAX_SIDE`].
    #[error(
        "picture of {width}×{height} is above the limit ({MAX_PIXELS} pixels, {MAX_SIDE} per side)"
    )]
    TooLarge { width: u64, height: u64 },
    /// The input is above [`MAX_INPUT_BYTES`].
    #[error("{bytes} bytes is above the limit of {MAX_INPUT_BYTES} bytes for a picture")]
    InputTooLarge { bytes: u64 },
    /// Not a decodable JPEG.
    #[error("not a decodable JPEG: {0}")]
    Jpeg(String),
    /// Not a decodable H.264 keyframe.
    #[error("not a decodable H.264 keyframe: {0}")]
    H264(String),
}

/// `Err(TooLarge)` when `width × height` is above the limits.
pub(crate) fn check_size(width: u64, height: u64) -> Result<(), PictureError> {
    if width > u64::from(MAX_SIDE) || height > u64::from(MAX_SIDE) || width * height > MAX_PIXELS {
        return Err(PictureError::TooLarge { width, height });
    }
    Ok(())
}

/// A decoder's message, clipped for our error text (it may quote the input).
pub(crate) fn clip_msg(e: impl std::fmt::Display) -> String {
    fumegrid_common::text::clip(&e.to_string(), 120).to_string()
}

/// Decodes a picture of the given media type into RGB.
///
/// JPEG: any baseline or progressive JPEG, greyscale, YCbCr or CMYK, converted to RGB.
/// H.264: one keyframe access unit in Annex B form with its SPS and PPS. H.265:
/// [`PictureError::Unsupported`] (see the crate doc).
pub fn decode(bytes: &[u8], media: Media) -> Result<Rgb, PictureError> {
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(PictureError::InputTooLarge {
            bytes: bytes.len() as u64,
        });
    }
    match media {
        Media::Jpeg => jpeg::decode(bytes),
        Media::H264 => h264::decode(bytes),
        Media::H265 => Err(PictureError::Unsupported),
    }
}

/// What [`captioned_jpeg`] makes.
#[derive(Clone, PartialEq, Eq)]
pub struct Captioned {
    /// The JPEG a person sees: the picture with the caption band under it.
    pub jpeg: Vec<u8>,
    /// The size of the picture as the camera took it (without the band).
    pub width: u32,
    pub height: u32,
}

impl std::fmt::Debug for Captioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Captioned({}×{}, {} B JPEG)",
            self.width,
            self.height,
            self.jpeg.len()
        )
    }
}

/// The JPEG people see of a camera's picture: `bytes` decoded ([`decode`]), the caption band
/// with `lines` added under it ([`caption`]), encoded at `quality` ([`encode_jpeg`]). The
/// original bytes stay the evidence; this is the view of it.
pub fn captioned_jpeg(
    bytes: &[u8],
    media: Media,
    lines: &[String],
    quality: u8,
) -> Result<Captioned, PictureError> {
    let mut img = decode(bytes, media)?;
    let (width, height) = (img.width, img.height);
    caption(&mut img, lines);
    Ok(Captioned {
        jpeg: encode_jpeg(&img, quality),
        width,
        height,
    })
}

/// The type of an uploaded picture from its first bytes: `image/jpeg` (FF D8 FF) or `image/png`
/// (the 8-byte PNG signature). Anything else: `None`. Uploads are typed by their bytes, never by
/// the header their sender wrote.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    const PNG: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(&PNG) {
        Some("image/png")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_magic_bytes() {
        let jpeg = encode_jpeg(&Rgb::filled(8, 8, [1, 2, 3]), 80);
        assert_eq!(sniff(&jpeg), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(sniff(b"GIF89a"), None);
        assert_eq!(sniff(b"<html>"), None);
        assert_eq!(sniff(&[0xFF, 0xD8]), None, "too short to be a JPEG");
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn captioned_jpeg_keeps_the_picture_and_adds_the_band() {
        let smpte = include_bytes!("../tests/data/smpte-320x240.h264");
        let lines = vec!["Demo street / bbq-grill".to_string()];
        let c = captioned_jpeg(smpte, Media::H264, &lines, 85).expect("decodes");
        assert_eq!((c.width, c.height), (320, 240));
        let seen = decode(&c.jpeg, Media::Jpeg).expect("a JPEG");
        assert_eq!(seen.width, 320);
        assert_eq!(seen.height, 240 + caption::band_height(320, 1));
        // The bars are still there above the band (the first is white), the band is dark.
        assert!(seen.mean(10, 40, 30, 120)[0] > 230.0);
        assert!(seen.mean(0, 242, 320, seen.height)[0] < 80.0);
        assert!(matches!(
            captioned_jpeg(b"junk", Media::Jpeg, &lines, 85),
            Err(PictureError::Jpeg(_))
        ));
    }

    #[test]
    fn h265_is_unsupported() {
        let e = decode(b"\0\0\0\x01\x40\x01", Media::H265).expect_err("no H.265 decoder");
        assert!(matches!(e, PictureError::Unsupported), "{e}");
    }

    #[test]
    fn size_limits() {
        let big = vec![0xFFu8; MAX_INPUT_BYTES as usize + 1];
        for media in [Media::Jpeg, Media::H264] {
            assert!(matches!(
                decode(&big, media),
                Err(PictureError::InputTooLarge { .. })
            ));
        }
        assert!(check_size(4000, 3000).is_ok());
        assert!(check_size(8000, 5000).is_ok());
        assert!(matches!(
            check_size(8192, 8192),
            Err(PictureError::TooLarge { .. })
        ));
        assert!(matches!(
            check_size(20_000, 10),
            Err(PictureError::TooLarge { .. })
        ));
    }
}
