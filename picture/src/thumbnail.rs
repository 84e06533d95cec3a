//! Thumbnails: downscaling by area averaging (each output pixel is the mean of the source pixels
//! it covers), which keeps fine detail from aliasing the way point sampling does.

use crate::Rgb;

/// `img` scaled to at most `max_width` pixels wide (at least 1), keeping its aspect ratio. A
/// picture already that narrow is returned as it is (never scaled up).
pub fn thumbnail(img: &Rgb, max_width: u32) -> Rgb {
    let max_width = max_width.max(1);
    if img.width <= max_width || img.height == 0 {
        return img.clone();
    }
    let (sw, sh) = (u64::from(img.width), u64::from(img.height));
    let tw = u64::from(max_width);
    let th = (sh * tw + sw / 2).checked_div(sw).unwrap_or(1).max(1);
    let mut data = Vec::with_capacity((tw * th * 3) as usize);
    for oy in 0..th {
        let y0 = oy * sh / th;
        let y1 = ((oy + 1) * sh / th).max(y0 + 1);
        for ox in 0..tw {
            let x0 = ox * sw / tw;
            let x1 = ((ox + 1) * sw / tw).max(x0 + 1);
            let m = img.mean(x0 as u32, y0 as u32, x1 as u32, y1 as u32);
            data.extend(m.iter().map(|c| c.round().clamp(0.0, 255.0) as u8));
        }
    }
    Rgb {
        width: tw as u32,
        height: th as u32,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_the_aspect_ratio() {
        let img = Rgb::filled(1920, 1080, [10, 20, 30]);
        let t = thumbnail(&img, 320);
        assert_eq!((t.width, t.height), (320, 180));
        assert_eq!(t.data.len(), 320 * 180 * 3);
        assert_eq!(t.pixel(100, 100), Some([10, 20, 30]));
        let t = thumbnail(&Rgb::filled(1000, 3, [0, 0, 0]), 10);
        assert_eq!((t.width, t.height), (10, 1));
        let small = Rgb::filled(100, 50, [1, 1, 1]);
        assert_eq!(thumbnail(&small, 320), small, "never scaled up");
        assert_eq!(thumbnail(&small, 0).width, 1);
    }

    #[test]
    fn averages_the_area() {
        // A fine black-and-white checkerboard averages to grey, not to one of its colours.
        let mut img = Rgb::filled(64, 64, [0, 0, 0]);
        for y in 0..64 {
            for x in 0..64 {
                if (x + y) % 2 == 0 {
                    img.set(x, y, [255, 255, 255]);
                }
            }
        }
        let t = thumbnail(&img, 8);
        for y in 0..t.height {
            for x in 0..t.width {
                let p = t.pixel(x, y).expect("inside");
                assert!((126..=129).contains(&p[0]), "{p:?}");
            }
        }
    }
}
