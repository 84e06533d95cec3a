//! JPEG in and out, both pure Rust: zune-jpeg decodes (baseline and progressive; greyscale,
//! YCbCr and CMYK become RGB), jpeg-encoder encodes (baseline, 4:2:0).

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::{MAX_SIDE, PictureError, Rgb, check_size, clip_msg};

/// Decodes a JPEG into RGB. The size is checked from the frame header before any pixel is
/// allocated.
pub fn decode(bytes: &[u8]) -> Result<Rgb, PictureError> {
    let options = DecoderOptions::default()
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        // Progressive JPEGs with hundreds of scans are a known way to burn CPU.
        .jpeg_set_max_scans(64);
    let mut d = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    d.decode_headers()
        .map_err(|e| PictureError::Jpeg(clip_msg(e)))?;
    let info = d
        .info()
        .ok_or_else(|| PictureError::Jpeg("no frame header".into()))?;
    let (w, h) = (u64::from(info.width), u64::from(info.height));
    if w == 0 || h == 0 {
        return Err(PictureError::Jpeg("frame of zero size".into()));
    }
    check_size(w, h)?;
    let want = (w * h * 3) as usize;
    let len = d
        .output_buffer_size()
        .ok_or_else(|| PictureError::Jpeg("no frame header".into()))?;
    if len != want {
        return Err(PictureError::Jpeg(format!(
            "decoder output of {len} bytes for a {w}×{h} RGB picture"
        )));
    }
    let mut data = vec![0u8; want];
    d.decode_into(&mut data)
        .map_err(|e| PictureError::Jpeg(clip_msg(e)))?;
    Ok(Rgb {
        width: w as u32,
        height: h as u32,
        data,
    })
}

/// Encodes RGB as a baseline JPEG. `quality` 1..=100 (clamped). A picture whose `data` is shorter
/// than its size says is padded with black (and extra bytes ignored), so this never fails; sides
/// above JPEG's 65 535 are scaled down first.
pub fn encode(img: &Rgb, quality: u8) -> Vec<u8> {
    if img.width > u32::from(u16::MAX) || img.height > u32::from(u16::MAX) {
        return encode(
            &crate::thumbnail(&shrink_tall(img), u32::from(u16::MAX)),
            quality,
        );
    }
    if img.width == 0 || img.height == 0 {
        return encode(&Rgb::filled(1, 1, [0, 0, 0]), quality);
    }
    let want = img.width as usize * img.height as usize * 3;
    let fixed;
    let data = if img.data.len() == want {
        &img.data
    } else {
        let mut d = img.data.clone();
        d.resize(want, 0);
        fixed = d;
        &fixed
    };
    let mut out = Vec::with_capacity(want / 8 + 1024);
    let encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    // Cannot fail: sizes are within u16 and `data` has exactly width × height × 3 bytes.
    if encoder
        .encode(
            data,
            img.width as u16,
            img.height as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .is_err()
    {
        out.clear();
    }
    out
}

/// A picture taller than JPEG allows, with its height cut to 65 535 rows (only reached for
/// pictures no decoder here produces).
fn shrink_tall(img: &Rgb) -> Rgb {
    let h = img.height.min(u32::from(u16::MAX));
    let len = (img.width as usize * h as usize * 3).min(img.data.len());
    Rgb {
        width: img.width,
        height: h,
        data: img.data.get(..len).unwrap_or(&[]).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four quadrants of known colours.
    fn quadrants(w: u32, h: u32) -> Rgb {
        let mut img = Rgb::filled(w, h, [0, 0, 0]);
        img.fill_rect(0, 0, w / 2, h / 2, [220, 30, 30]);
        img.fill_rect(w / 2, 0, w, h / 2, [30, 200, 40]);
        img.fill_rect(0, h / 2, w / 2, h, [20, 40, 210]);
        img.fill_rect(w / 2, h / 2, w, h, [240, 240, 240]);
        img
    }

    #[test]
    fn round_trip_keeps_size_and_colours() {
        for (w, h) in [(320, 240), (33, 17), (1, 1)] {
            let img = quadrants(w, h);
            let bytes = encode(&img, 90);
            let back = decode(&bytes).expect("our own JPEG decodes");
            assert_eq!((back.width, back.height), (w, h));
            if w < 8 {
                continue;
            }
            // The middle of each quadrant (away from edges, where 4:2:0 blurs colours).
            for (x0, y0, x1, y1) in [
                (w / 8, h / 8, w * 3 / 8, h * 3 / 8),
                (w * 5 / 8, h / 8, w * 7 / 8, h * 3 / 8),
                (w / 8, h * 5 / 8, w * 3 / 8, h * 7 / 8),
                (w * 5 / 8, h * 5 / 8, w * 7 / 8, h * 7 / 8),
            ] {
                let a = img.mean(x0, y0, x1, y1);
                let b = back.mean(x0, y0, x1, y1);
                for c in 0..3 {
                    assert!(
                        (a[c] - b[c]).abs() < 8.0,
                        "{w}×{h} region {x0},{y0}: {a:?} vs {b:?}"
                    );
                }
            }
        }
    }

    /// Mean colour of the middle of each of the seven SMPTE bars (the top two thirds).
    fn bar_means(img: &Rgb) -> Vec<[f64; 3]> {
        let (w, h) = (img.width, img.height);
        let hw = (w / 40).max(1);
        (0..7)
            .map(|i| {
                let cx = (f64::from(w) / 7.0 * (f64::from(i) + 0.5)) as u32;
                img.mean(cx - hw, h / 6, cx + hw, h / 2)
            })
            .collect()
    }

    #[test]
    fn decodes_jpegs_of_another_encoder() {
        // GStreamer's jpegenc (tests/data/README.md). The expected bar colours are what
        // GStreamer's own jpegdec (libjpeg-turbo) reads from the same files.
        type Bars = [[f64; 3]; 7];
        let cases: [(&[u8], u32, u32, Bars); 2] = [
            (
                include_bytes!("../tests/data/smpte-320x240.jpg"),
                320,
                240,
                [
                    [234.0, 234.0, 234.0],
                    [235.0, 235.0, 10.0],
                    [12.0, 237.0, 235.0],
                    [11.0, 236.0, 14.0],
                    [237.0, 11.0, 234.0],
                    [238.0, 12.0, 15.0],
                    [17.0, 14.0, 240.0],
                ],
            ),
            (
                include_bytes!("../tests/data/smpte-64x48-gray.jpg"),
                64,
                48,
                [
                    [234.0; 3], [210.0; 3], [170.0; 3], [144.0; 3], [105.0; 3], [80.0; 3],
                    [41.0; 3],
                ],
            ),
        ];
        for (bytes, w, h, want) in cases {
            let img = decode(bytes).expect("decodes");
            assert_eq!((img.width, img.height), (w, h));
            for (i, (got, want)) in bar_means(&img).iter().zip(want).enumerate() {
                for c in 0..3 {
                    assert!(
                        (got[c] - want[c]).abs() < 12.0,
                        "{w}×{h} bar {i}: {got:?} vs {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_large_pictures_from_the_header() {
        // A real 16×16 JPEG with its frame header patched to 10000×9000 (90 MP): refused
        // before decoding, without allocating 270 MB.
        let mut bytes = encode(&Rgb::filled(16, 16, [9, 9, 9]), 80);
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("baseline SOF0");
        bytes[sof + 5..sof + 7].copy_from_slice(&9000u16.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&10000u16.to_be_bytes());
        let e = decode(&bytes).expect_err("too large");
        assert!(
            matches!(
                e,
                PictureError::TooLarge {
                    width: 10000,
                    height: 9000
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [&b""[..], b"\xFF\xD8\xFF", b"not a jpeg at all", &[0xFF; 64]] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let good = encode(&Rgb::filled(64, 64, [100, 50, 25]), 80);
        let cut = &good[..good.len() / 3];
        // A truncated JPEG may decode partially (grey rest) or fail; it must not panic.
        let _ = decode(cut);
    }

    #[test]
    fn encodes_odd_input() {
        let short = Rgb {
            width: 4,
            height: 4,
            data: vec![255; 10],
        };
        let back = decode(&encode(&short, 80)).expect("padded");
        assert_eq!((back.width, back.height), (4, 4));
        let empty = Rgb {
            width: 0,
            height: 0,
            data: vec![],
        };
        assert!(decode(&encode(&empty, 80)).is_ok());
    }
}
