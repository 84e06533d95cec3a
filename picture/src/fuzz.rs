//! Fuzz target body: arbitrary bytes through every decoder. Each must answer a picture within
//! the limits or an error, never panic; a decoded picture must also survive caption, thumbnail
//! and encoding.

use fumegrid_common::wire::Media;

use crate::{MAX_PIXELS, Rgb};

/// Decodes `data` as JPEG and as H.264 (and H.265, which is refused).
pub fn picture(data: &[u8]) {
    for media in [Media::Jpeg, Media::H264, Media::H265] {
        if let Ok(img) = crate::decode(data, media) {
            check(&img);
        }
    }
    let _ = crate::sniff(data);
}

fn check(img: &Rgb) {
    let pixels = u64::from(img.width) * u64::from(img.height);
    assert!(pixels > 0 && pixels <= MAX_PIXELS, "{img:?}");
    assert_eq!(img.data.len() as u64, pixels * 3);
    // Keep the rest cheap: the decoders are what is fuzzed.
    let mut small = crate::thumbnail(img, 64);
    crate::caption(&mut small, &["fuzz".to_string()]);
    assert!(!crate::encode_jpeg(&small, 50).is_empty());
}

#[cfg(test)]
mod tests {
    use fumegrid_common::fuzz::{config, seeded, seeds};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seeds_pass() {
        let seeds = seeds("picture");
        assert!(seeds.len() >= 2, "seed corpus fuzz/seeds/picture");
        for s in seeds {
            picture(&s);
        }
    }

    proptest! {
        #![proptest_config(config())]
        #[test]
        fn picture_bounded(d in seeded("picture")) { picture(&d) }
    }
}
