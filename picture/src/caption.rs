//! The caption band: lines of text (site, device, time, reading) in a black band added under the
//! picture, so nothing the camera saw is covered. The font is the public-domain 8×8 bitmap font
//! (crate font8x8), compiled in: no font file at run time. ASCII only; any other character is
//! drawn as `?`.
//!
//! The glyphs are scaled by `max(1, width / 400)`: 1× (40 columns) on a 320 px picture, 4× (60
//! columns) on 1920 px. Lines longer than the band wraps onto the next row; at most
//! [`MAX_ROWS`] rows are drawn, the last one ending in `~` when text was left out.

use crate::Rgb;

/// The most text rows a band holds.
pub const MAX_ROWS: usize = 12;
/// Glyph cell size at scale 1 (the font is 8×8; one pixel of spacing is inside each glyph).
const CELL: u32 = 8;

const BAND: [u8; 3] = [0, 0, 0];
const INK: [u8; 3] = [255, 255, 255];

/// The glyph scale for a picture `width` pixels wide.
pub fn scale_for(width: u32) -> u32 {
    (width / 400).max(1)
}

/// Height of the band [`caption`] adds for `rows` rows of text on a picture `width` wide.
pub fn band_height(width: u32, rows: usize) -> u32 {
    let s = scale_for(width);
    let rows = rows.clamp(1, MAX_ROWS) as u32;
    // Half a cell of margin above and below, and 2 px (scaled) between rows.
    rows * (CELL * s + 2 * s) + CELL * s
}

/// Adds a band under `img` with `lines` written in it, one or more rows each (long lines wrap).
/// The picture above the band is left exactly as it was.
pub fn caption(img: &mut Rgb, lines: &[String]) {
    if img.width == 0 {
        return;
    }
    let s = scale_for(img.width);
    let margin = CELL * s / 2;
    let cols = ((img.width.saturating_sub(2 * margin)) / (CELL * s)).max(1) as usize;
    let mut rows = wrap(lines, cols);
    if rows.len() > MAX_ROWS {
        rows.truncate(MAX_ROWS);
        if let Some(last) = rows.last_mut() {
            if last.len() >= cols {
                last.pop();
            }
            last.push('~');
        }
    }
    let top = img.height;
    let band = band_height(img.width, rows.len());
    img.height += band;
    img.data
        .resize(img.width as usize * img.height as usize * 3, 0);
    img.fill_rect(0, top, img.width, img.height, BAND);
    for (i, row) in rows.iter().enumerate() {
        let y = top + margin + i as u32 * (CELL * s + 2 * s);
        draw_text(img, margin, y, s, row, INK);
    }
}

/// Splits `lines` into rows of at most `cols` characters (at spaces when it can).
fn wrap(lines: &[String], cols: usize) -> Vec<String> {
    let mut rows = Vec::new();
    for line in lines {
        let chars: Vec<char> = line.chars().collect();
        if chars.is_empty() {
            rows.push(String::new());
            continue;
        }
        let mut start = 0;
        while start < chars.len() {
            let mut end = (start + cols).min(chars.len());
            if end < chars.len()
                && let Some(sp) = chars[start..end].iter().rposition(|c| *c == ' ')
                && sp > 0
            {
                end = start + sp + 1;
            }
            let row: String = chars[start..end].iter().collect();
            // A continuation row starts at its first word, not at the spaces between words.
            let row = if start > 0 {
                row.trim()
            } else {
                row.trim_end()
            };
            rows.push(row.to_string());
            start = end;
        }
        if rows.len() > MAX_ROWS {
            break;
        }
    }
    rows
}

/// Draws `text` with its top-left corner at (x, y), each font pixel `scale`×`scale`, in
/// `colour`; the background is left as it is. Clipped to the picture.
pub fn draw_text(img: &mut Rgb, x: u32, y: u32, scale: u32, text: &str, colour: [u8; 3]) {
    let scale = scale.max(1);
    for (i, ch) in text.chars().enumerate() {
        let glyph = glyph(ch);
        let gx = x.saturating_add((i as u32).saturating_mul(CELL * scale));
        if gx >= img.width {
            break;
        }
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                // Bit 0 is the leftmost pixel of the row.
                if bits >> col & 1 == 1 {
                    let px = gx + col * scale;
                    let py = y.saturating_add(row as u32 * scale);
                    img.fill_rect(px, py, px + scale, py.saturating_add(scale), colour);
                }
            }
        }
    }
}

fn glyph(ch: char) -> [u8; 8] {
    let table = &font8x8::legacy::BASIC_LEGACY;
    let c = if (' '..='~').contains(&ch) { ch } else { '?' };
    table[c as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn band_is_added_under_and_the_picture_is_untouched() {
        for w in [320u32, 1920] {
            let h = w * 3 / 4;
            let mut img = Rgb::filled(w, h, [40, 120, 200]);
            let before = img.clone();
            let text = lines(&["Demo street / bbq-grill", "2026-12-06 10:00:00 fume 3.12"]);
            caption(&mut img, &text);
            assert_eq!(img.width, w);
            assert!(img.height > h, "a band was added");
            let n = (w * h * 3) as usize;
            assert_eq!(
                img.data[..n],
                before.data[..n],
                "the picture above is untouched"
            );
            assert_eq!(img.data.len(), (w * img.height * 3) as usize);
            // The band is black with white text: both colours occur, nothing else of the
            // picture's blue.
            let mut white = 0;
            let mut black = 0;
            for y in h..img.height {
                for x in 0..w {
                    match img.pixel(x, y) {
                        Some([255, 255, 255]) => white += 1,
                        Some([0, 0, 0]) => black += 1,
                        p => panic!("unexpected colour {p:?} in the band"),
                    }
                }
            }
            assert!(white > 100 * scale_for(w).pow(2), "text drawn: {white}");
            assert!(black > white, "mostly band");
            // Scaled to the width: a glyph on 1920 px is 4× as tall.
            assert_eq!(img.height - h, band_height(w, 2), "two rows fit at {w} px");
        }
        assert_eq!(scale_for(320), 1);
        assert_eq!(scale_for(1920), 4);
    }

    #[test]
    fn text_is_what_was_asked() {
        // Rendering "I" at a known place lights its column; a space lights nothing.
        let mut img = Rgb::filled(320, 240, [0, 0, 0]);
        draw_text(&mut img, 0, 0, 1, " ", [255, 255, 255]);
        assert_eq!(img.mean(0, 0, 8, 8), [0.0; 3]);
        draw_text(&mut img, 0, 0, 1, "I", [255, 255, 255]);
        assert!(img.mean(0, 0, 8, 8)[0] > 20.0);
        // Non-ASCII is drawn as '?'.
        let mut a = Rgb::filled(64, 8, [0, 0, 0]);
        let mut b = a.clone();
        draw_text(&mut a, 0, 0, 1, "é", [255, 0, 0]);
        draw_text(&mut b, 0, 0, 1, "?", [255, 0, 0]);
        assert_eq!(a, b);
    }

    #[test]
    fn long_lines_wrap_and_rows_are_bounded() {
        let rows = wrap(&lines(&["aaaa bbbb cccc"]), 10);
        assert_eq!(rows, vec!["aaaa bbbb", "cccc"]);
        let rows = wrap(&lines(&["  aaaa  bbbb  cccc"]), 10);
        assert_eq!(rows, vec!["  aaaa", "bbbb  cccc"]);
        let rows = wrap(&lines(&["x".repeat(25).as_str()]), 10);
        assert_eq!(rows.len(), 3);
        let many: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let mut img = Rgb::filled(320, 10, [0, 0, 0]);
        caption(&mut img, &many);
        assert_eq!(img.height, 10 + band_height(320, MAX_ROWS));
        // Narrow pictures still get a band.
        let mut tiny = Rgb::filled(3, 3, [9, 9, 9]);
        caption(&mut tiny, &lines(&["hello"]));
        assert!(tiny.height > 3);
        let mut empty = Rgb::filled(0, 0, [0, 0, 0]);
        caption(&mut empty, &lines(&["x"]));
        assert_eq!(empty.height, 0);
    }
}
