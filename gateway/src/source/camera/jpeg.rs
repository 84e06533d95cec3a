//! Is this a JPEG, and how large is its picture? A scan of the markers up to the frame header
//! (SOFn), pure and bounded by the input: the bytes come from a camera and are not trusted.

/// Width and height from a JPEG's frame header; `None` when the header leaves them to a later
/// DNL marker (height 0) or says 0.
pub type Dimensions = Option<(u32, u32)>;

/// Checks that `bytes` begin like a JPEG (SOI, then well-formed marker segments up to a frame
/// header) and returns the frame's dimensions. The error says what was wrong and where.
pub fn scan(bytes: &[u8]) -> Result<Dimensions, String> {
    if bytes.get(..2) != Some(&[0xFF, 0xD8]) {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02X}")).collect();
        return Err(format!(
            "does not start with a JPEG SOI marker (FF D8), starts with [{}]",
            head.join(" ")
        ));
    }
    let mut i = 2;
    loop {
        // A marker is 0xFF, any number of 0xFF fill bytes, then the marker code.
        if bytes.get(i) != Some(&0xFF) {
            return Err(format!("expected a marker at byte {i}"));
        }
        while bytes.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return Err("ends inside a marker, before the frame header".into());
        };
        i += 1;
        match code {
            // Stand-alone markers without a length: TEM, RSTn.
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 => return Err(format!("a second SOI at byte {}", i - 2)),
            0xD9 => return Err("ends (EOI) before any frame header".into()),
            0xDA => return Err("scan data (SOS) before any frame header".into()),
            _ => {}
        }
        let len = match bytes.get(i..i + 2) {
            Some(&[a, b]) => usize::from(u16::from_be_bytes([a, b])),
            _ => return Err(format!("ends inside the length of marker FF {code:02X}")),
        };
        if len < 2 {
            return Err(format!("marker FF {code:02X} at byte {i} has length {len}"));
        }
        let segment = bytes
            .get(i + 2..i + len)
            .ok_or_else(|| format!("ends inside segment FF {code:02X} (length {len})"))?;
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if matches!(code, 0xC0..=0xCF) && !matches!(code, 0xC4 | 0xC8 | 0xCC) {
            let (h, w) = match segment {
                [_precision, h1, h2, w1, w2, ..] => (
                    u32::from(u16::from_be_bytes([*h1, *h2])),
                    u32::from(u16::from_be_bytes([*w1, *w2])),
                ),
                _ => return Err(format!("frame header FF {code:02X} too short ({len})")),
            };
            return Ok((w > 0 && h > 0).then_some((w, h)));
        }
        i += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, APP0 (JFIF), DQT stub, SOF0 640x360, SOS, EOI.
    fn tiny(width: u16, height: u16) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend([0xFF, 0xE0, 0x00, 0x10]);
        v.extend(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        v.extend([0xFF, 0xFF, 0xC0, 0x00, 0x11, 0x08]); // a fill byte before SOF0
        v.extend(height.to_be_bytes());
        v.extend(width.to_be_bytes());
        v.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        v.extend([0xFF, 0xDA, 0x00, 0x02, 0x12, 0x34, 0xFF, 0xD9]);
        v
    }

    #[test]
    fn finds_the_frame_size() {
        assert_eq!(scan(&tiny(640, 360)), Ok(Some((640, 360))));
        assert_eq!(scan(&tiny(640, 0)), Ok(None));
    }

    #[test]
    fn refuses_what_is_not_a_jpeg() {
        assert!(
            scan(b"<html>401</html>")
                .expect_err("refused")
                .contains("[3C 68 74 6D]")
        );
        assert!(scan(&[]).is_err());
        assert!(
            scan(&[0xFF, 0xD8, 0xFF, 0xD9])
                .expect_err("refused")
                .contains("EOI")
        );
        let j = tiny(640, 360);
        for cut in 0..30 {
            assert!(scan(&j[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_len = tiny(1, 1);
        bad_len[5] = 1;
        assert!(scan(&bad_len).expect_err("refused").contains("length 1"));
    }

    #[test]
    fn a_real_encoder_s_jpeg() {
        // The lighttpd camera peer's picture (GStreamer jpegenc, 640x360 SMPTE bars).
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/peers/camera.jpg");
        let bytes = std::fs::read(path).expect("tests/peers/camera.jpg");
        assert_eq!(scan(&bytes), Ok(Some((640, 360))));
    }
}
