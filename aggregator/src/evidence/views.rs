//! Derived views of a picture: the captioned JPEG people look at (`view`) and a thumbnail for
//! lists (`thumb`), made from the original; and what an upload is ([`sniff`], [`dimensions`]).
//!
//! The caption band carries the site, the device(s), the capture time in the district's local
//! time when the case calendar gives its offset (else UTC), the trigger and the readings at
//! capture ([`caption_lines`], pure).
//!
//! Decoding: JPEG, and H.264 keyframes, with the `fumegrid-picture` crate. H.265 has no decoder
//! here: such a picture keeps only its original, and the API says that its view is absent.

use bytes::Bytes;

use crate::store::evidence::PictureRow;

/// Blob kinds of the derived views.
pub const VIEW: &str = "view";
pub const THUMB: &str = "thumb";

/// Longest side of a thumbnail, pixels.
pub const THUMB_MAX_SIDE: u32 = 320;

/// The two derived JPEGs of a picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Views {
    pub view: Bytes,
    pub thumb: Bytes,
}

/// Whether pictures of `media` can have derived views here.
pub fn can_derive(_media: &str) -> bool {
    false
}

/// Makes the views of a picture from its original: none when its media cannot be decoded here,
/// an error naming what failed when the bytes do not decode.
pub fn derive(
    _row: &PictureRow,
    _original: &[u8],
    _offset_min: Option<i32>,
) -> Result<Option<Views>, String> {
    Ok(None)
}

/// The caption band's lines: site, device(s) and camera; capture time and trigger; readings.
/// Pure.
pub fn caption_lines(row: &PictureRow, offset_min: Option<i32>) -> Vec<String> {
    let mut out = Vec::new();
    let site = if row.site.is_empty() {
        row.gateway.clone().unwrap_or_default()
    } else {
        row.site.clone()
    };
    let mut first = site;
    if !row.devices.is_empty() {
        first = format!("{first} · {}", row.devices.join(", "));
    }
    if let Some(c) = &row.camera {
        first = format!("{first} · camera {c}");
    }
    out.push(first);
    let offset = offset_min
        .and_then(fumegrid_common::datetime::offset_min)
        .unwrap_or(fumegrid_common::datetime::Offset::UTC);
    let when = fumegrid_common::datetime::w3c(row.captured_ms, offset).replace('T', " ");
    match &row.trigger {
        Some(t) => out.push(format!("{when} · {}", t.replace('_', " "))),
        None => out.push(when),
    }
    if !row.readings.is_empty() {
        let r: Vec<String> = row
            .readings
            .iter()
            .map(|(d, metric, v)| {
                let unit = fumegrid_common::metric::Metric::from_name(metric)
                    .map(|m| m.unit().to_string())
                    .unwrap_or_default();
                let name = metric.strip_suffix("_mg_m3").unwrap_or(metric);
                if row.devices.len() > 1 {
                    format!("{d} {name} {v:.2} {unit}")
                } else {
                    format!("{name} {v:.2} {unit}")
                }
                .trim_end()
                .to_string()
            })
            .collect();
        out.push(r.join(" · "));
    }
    out
}

/// What the bytes of an upload are, from their first bytes: `image/jpeg`, `image/png`, or
/// none. Pure.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else {
        None
    }
}

/// Width and height of a JPEG (its first start-of-frame marker) or PNG (its header), if the
/// bytes say. Pure.
pub fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    match sniff(bytes)? {
        "image/png" => {
            let w = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
            let h = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
            (w > 0 && h > 0).then_some((w, h))
        }
        _ => {
            let mut i = 2;
            while i + 9 < bytes.len() {
                if bytes[i] != 0xff {
                    return None;
                }
                let marker = bytes[i + 1];
                let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
                // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
                if (0xc0..=0xcf).contains(&marker) && ![0xc4, 0xc8, 0xcc].contains(&marker) {
                    let h = u32::from(u16::from_be_bytes([bytes[i + 5], bytes[i + 6]]));
                    let w = u32::from(u16::from_be_bytes([bytes[i + 7], bytes[i + 8]]));
                    return (w > 0 && h > 0).then_some((w, h));
                }
                i += 2 + len;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> PictureRow {
        PictureRow {
            sha256: "ab".repeat(32),
            source: "camera".into(),
            gateway: Some("gw-1".into()),
            camera: Some("cam-1".into()),
            devices: vec!["rest-1".into()],
            captured_ms: 1_762_135_200_123,
            trigger: Some("alarm_raised".into()),
            alarm: None,
            request: None,
            media: "image/jpeg".into(),
            size: 10,
            width: None,
            height: None,
            site: "Food Street 1".into(),
            readings: vec![("rest-1".into(), "fume_mg_m3".into(), 2.845)],
            state: "stored".into(),
            parts: 1,
            parts_held: 1,
            received_ms: 0,
            stored_ms: None,
            uploaded_by: None,
        }
    }

    #[test]
    fn the_caption_names_site_device_local_time_trigger_and_reading() {
        assert_eq!(
            caption_lines(&row(), Some(480)),
            [
                "Food Street 1 · rest-1 · camera cam-1",
                "2025-11-03 10:00:00+08:00 · alarm raised",
                "fume 2.85 mg/m³",
            ]
        );
        let mut r = row();
        (r.site, r.trigger, r.readings) = (String::new(), None, Vec::new());
        assert_eq!(
            caption_lines(&r, None),
            ["gw-1 · rest-1 · camera cam-1", "2025-11-03 02:00:00Z"]
        );
    }

    #[test]
    fn uploads_are_sniffed_and_measured_from_their_bytes() {
        // A PNG header of 3 x 2 pixels, and a JPEG with an APP0 segment before its SOF0.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 2, 8, 2, 0, 0, 0]);
        assert_eq!(
            (sniff(&png), dimensions(&png)),
            (Some("image/png"), Some((3, 2)))
        );
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00];
        jpeg.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08, 0x01, 0xe0, 0x02, 0x80, 3]);
        jpeg.extend_from_slice(&[0; 16]);
        assert_eq!(
            (sniff(&jpeg), dimensions(&jpeg)),
            (Some("image/jpeg"), Some((640, 480)))
        );
        for other in [&b"GIF89a"[..], b"", b"\xff\xd8", b"<svg"] {
            assert_eq!(sniff(other), None, "{other:?}");
        }
    }
}
