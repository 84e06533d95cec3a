//! Derived views of a picture: the captioned JPEG people look at (`view`) and a thumbnail for
//! lists (`thumb`), made from the original; and what an upload is ([`sniff`], [`dimensions`]).
//!
//! The caption band carries the site, the device(s), the capture time in the district's local
//! time when the case calendar gives its offset (else UTC), the trigger and the readings at
//! capture ([`caption_lines`], pure).
//!
//! Decoding: JPEG, and H.264 keyframes, with the `fumegrid-picture` crate. H.265 has no decoder
//! here (nor PNG, which only uploads are): such a picture keeps only its original, and the API
//! says that its view is absent.

use bytes::Bytes;
use fumegrid_common::wire::Media;

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

/// The wire media of a MIME type that [`fumegrid_picture::decode`] decodes.
fn decodable(media: &str) -> Option<Media> {
    match media {
        "image/jpeg" => Some(Media::Jpeg),
        "video/h264" => Some(Media::H264),
        // H.265: no decoder here; PNG (uploads): no decoder in fumegrid-picture.
        _ => None,
    }
}

/// Whether pictures of `media` can have derived views here.
pub fn can_derive(media: &str) -> bool {
    decodable(media).is_some()
}

/// JPEG quality of the view and of the thumbnail.
const VIEW_QUALITY: u8 = 85;
const THUMB_QUALITY: u8 = 75;

/// Makes the views of a picture from its original: none when its media cannot be decoded here,
/// an error naming what failed when the bytes do not decode. The view is the whole picture
/// with the caption band under it; the thumbnail is the picture alone, at most
/// [`THUMB_MAX_SIDE`] wide.
pub fn derive(
    row: &PictureRow,
    original: &[u8],
    offset_min: Option<i32>,
) -> Result<Option<Views>, String> {
    let Some(media) = decodable(&row.media) else {
        return Ok(None);
    };
    let img = fumegrid_picture::decode(original, media).map_err(|e| e.to_string())?;
    let thumb = fumegrid_picture::thumbnail(&img, THUMB_MAX_SIDE);
    let thumb = fumegrid_picture::encode_jpeg(&thumb, THUMB_QUALITY);
    let mut view = img;
    fumegrid_picture::caption(&mut view, &caption_lines(row, offset_min));
    let view = fumegrid_picture::encode_jpeg(&view, VIEW_QUALITY);
    Ok(Some(Views {
        view: Bytes::from(view),
        thumb: Bytes::from(thumb),
    }))
}

/// The caption band's lines: site, device(s) and camera; capture time and trigger; readings.
/// ASCII (the band's font has no other glyphs; a site name in another script shows as `?`).
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
        first = format!("{first} | {}", row.devices.join(", "));
    }
    if let Some(c) = &row.camera {
        first = format!("{first} | camera {c}");
    }
    out.push(first);
    let offset = offset_min
        .and_then(fumegrid_common::datetime::offset_min)
        .unwrap_or(fumegrid_common::datetime::Offset::UTC);
    let when = fumegrid_common::datetime::w3c(row.captured_ms, offset).replace('T', " ");
    match &row.trigger {
        Some(t) => out.push(format!("{when} | {}", t.replace('_', " "))),
        None => out.push(when),
    }
    if !row.readings.is_empty() {
        let r: Vec<String> = row
            .readings
            .iter()
            .map(|(d, metric, v)| {
                let unit = fumegrid_common::metric::Metric::from_name(metric)
                    .map(|m| m.unit().replace('³', "3").replace('µ', "u"))
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
        out.push(r.join(" | "));
    }
    out
}

/// What the bytes of an upload are, from their first bytes: `image/jpeg`, `image/png`, or
/// none ([`fumegrid_picture::sniff`]). Pure.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    fumegrid_picture::sniff(bytes)
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
                "Food Street 1 | rest-1 | camera cam-1",
                "2025-11-03 10:00:00+08:00 | alarm raised",
                "fume 2.85 mg/m3",
            ]
        );
        let mut r = row();
        (r.site, r.trigger, r.readings) = (String::new(), None, Vec::new());
        assert_eq!(
            caption_lines(&r, None),
            ["gw-1 | rest-1 | camera cam-1", "2025-11-03 02:00:00Z"]
        );
    }

    /// A JPEG of a known pattern: the view is the picture with a band under it, unchanged
    /// above it; the thumbnail is the picture alone, scaled down.
    #[test]
    fn views_of_a_jpeg_carry_the_caption_and_a_thumbnail() {
        use fumegrid_picture::Rgb;
        let mut img = Rgb::filled(640, 480, [200, 30, 30]);
        img.fill_rect(0, 0, 320, 480, [20, 20, 220]);
        let jpeg = fumegrid_picture::encode_jpeg(&img, 90);
        let v = derive(&row(), &jpeg, Some(480))
            .expect("decodes")
            .expect("a JPEG has views");
        let view = fumegrid_picture::decode(&v.view, Media::Jpeg).expect("view is a JPEG");
        assert_eq!(view.width, 640);
        assert!(view.height > 480, "a band is added: {}", view.height);
        let left = view.mean(10, 10, 300, 470);
        let right = view.mean(340, 10, 630, 470);
        assert!(left[2] > 180.0 && left[0] < 60.0, "{left:?}");
        assert!(right[0] > 170.0 && right[2] < 70.0, "{right:?}");
        let band = view.mean(0, 481, 640, view.height);
        assert!(
            band.iter().all(|c| *c < 120.0),
            "a dark band with light text: {band:?}"
        );
        let thumb = fumegrid_picture::decode(&v.thumb, Media::Jpeg).expect("thumb is a JPEG");
        assert_eq!((thumb.width, thumb.height), (THUMB_MAX_SIDE, 240));
        // H.265 and PNG: no views; garbage: an error naming the decoder's complaint.
        let mut r = row();
        r.media = "video/h265".into();
        assert_eq!(derive(&r, &jpeg, None), Ok(None));
        r.media = "image/png".into();
        assert_eq!(derive(&r, &jpeg, None), Ok(None));
        let err = derive(&row(), b"\xff\xd8\xffgarbage", None).expect_err("garbage");
        assert!(err.contains("JPEG"), "{err}");
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
