//! Raw Modbus blocks → canonical [`Reading`]s through a device's profile, with a quality flag.
//!
//! Pure: the decoder's only state is the last good value of each point (for `stale`), and time
//! is passed in.

use std::sync::Arc;

use fumegrid_common::profile::{Profile, Table};
use fumegrid_common::reading::{Quality, Reading};

/// One read request: which registers or bits, and which of the profile's points they hold
/// (made by `source::modbus::plan`, which imports it from here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Indices into `profile.points` of the points this block covers.
    pub points: Vec<usize>,
}

/// What one read request returned.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockData {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// Decodes one installed device's polls.
#[derive(Debug)]
pub struct DeviceDecoder {
    device: String,
    profile: Arc<Profile>,
    /// Last good value and its time, per point.
    last_good: Vec<Option<(f64, i64)>>,
    stale_after_ms: i64,
}

impl DeviceDecoder {
    /// A value stays usable as `stale` for `stale_after_ms` after it was read.
    pub fn new(
        device: impl Into<String>,
        profile: Arc<Profile>,
        stale_after_ms: i64,
    ) -> DeviceDecoder {
        let n = profile.points.len();
        DeviceDecoder {
            device: device.into(),
            profile,
            last_good: vec![None; n],
            stale_after_ms,
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// One poll: `results[i]` is what `blocks[i]` returned, `None` if that request failed.
    /// Returns one reading per point, in profile order.
    pub fn decode(
        &mut self,
        blocks: &[Block],
        results: &[Option<BlockData>],
        now_ms: i64,
    ) -> Vec<Reading> {
        let mut out: Vec<Option<Reading>> = vec![None; self.profile.points.len()];
        for (block, result) in blocks.iter().zip(results) {
            for &i in &block.points {
                let point = &self.profile.points[i];
                let raw = result.as_ref().and_then(|data| {
                    let off = usize::from(point.address - block.start);
                    match data {
                        BlockData::Words(w) => w
                            .get(off..off + usize::from(point.width()))
                            .map(|w| point.decode_words(w)),
                        BlockData::Bits(b) => b.get(off).map(|&b| point.decode_bit(b)),
                    }
                });
                let (value, quality) = match raw {
                    Some(v) if point.in_range(v) => {
                        self.last_good[i] = Some((v, now_ms));
                        (Some(v), Quality::Ok)
                    }
                    Some(v) => (v.is_finite().then_some(v), Quality::OutOfRange),
                    None => match self.last_good[i] {
                        Some((v, t)) if now_ms - t <= self.stale_after_ms => {
                            (Some(v), Quality::Stale)
                        }
                        _ => (None, Quality::DeviceError),
                    },
                };
                out[i] = Some(Reading {
                    device: self.device.clone(),
                    unit: point.unit.clone(),
                    metric: point.metric,
                    value,
                    quality,
                    ts_ms: now_ms,
                });
            }
        }
        out.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fumegrid_common::diag::Source;
    use fumegrid_common::metric::Metric;

    fn profile() -> Arc<Profile> {
        let t = "[profile]\nid = \"t\"\n\
                 [[points]]\nmetric = \"fume_mg_m3\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\nvalid = [0.0, 50.0]\n\
                 [[points]]\nmetric = \"fan_current_a\"\ntable = \"holding\"\naddress = 3\ntype = \"u16\"\nscale = 0.01\n\
                 [[points]]\nmetric = \"fan_on\"\ntable = \"coil\"\naddress = 0\ntype = \"bool\"\n";
        Arc::new(Profile::from_source(&Source::new("t.toml", t)).expect("valid"))
    }

    /// The requests that read [`profile`]: holding 0..=3 (fume, gap, current), coil 0.
    fn plan(_: &Profile) -> Vec<Block> {
        let block = |table, start, count, points| Block {
            table,
            start,
            count,
            points,
        };
        vec![
            block(Table::Holding, 0, 4, vec![0, 1]),
            block(Table::Coil, 0, 1, vec![2]),
        ]
    }

    fn words(fume: f32, current: u16) -> BlockData {
        let b = fume.to_bits();
        BlockData::Words(vec![(b >> 16) as u16, b as u16, 0, current])
    }

    #[test]
    fn decodes_every_point_with_quality() {
        let p = profile();
        let blocks = plan(&p);
        let mut d = DeviceDecoder::new("dev", p, 5000);
        let r = d.decode(
            &blocks,
            &[Some(words(1.25, 320)), Some(BlockData::Bits(vec![true]))],
            1000,
        );
        let got: Vec<(Metric, Option<f64>, Quality)> =
            r.iter().map(|r| (r.metric, r.value, r.quality)).collect();
        assert_eq!(
            got,
            vec![
                (Metric::FumeMgM3, Some(1.25), Quality::Ok),
                (Metric::FanCurrentA, Some(3.2), Quality::Ok),
                (Metric::FanOn, Some(1.0), Quality::Ok),
            ]
        );
        let r = d.decode(
            &blocks,
            &[Some(words(9999.0, 320)), Some(BlockData::Bits(vec![false]))],
            2000,
        );
        assert_eq!(
            (r[0].value, r[0].quality),
            (Some(9999.0), Quality::OutOfRange)
        );
    }

    #[test]
    fn failed_block_is_stale_then_device_error() {
        let p = profile();
        let blocks = plan(&p);
        let mut d = DeviceDecoder::new("dev", p, 5000);
        d.decode(
            &blocks,
            &[Some(words(0.5, 100)), Some(BlockData::Bits(vec![true]))],
            0,
        );
        let r = d.decode(&blocks, &[None, Some(BlockData::Bits(vec![true]))], 3000);
        assert_eq!((r[0].value, r[0].quality), (Some(0.5), Quality::Stale));
        assert_eq!(
            r[2].quality,
            Quality::Ok,
            "the block that answered is still ok"
        );
        let r = d.decode(&blocks, &[None, None], 6000);
        assert_eq!((r[0].value, r[0].quality), (None, Quality::DeviceError));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn short_block_is_a_device_error_not_a_panic() {
        let p = profile();
        let blocks = plan(&p);
        let mut d = DeviceDecoder::new("dev", p, 0);
        let r = d.decode(
            &blocks,
            &[
                Some(BlockData::Words(vec![1])),
                Some(BlockData::Bits(vec![])),
            ],
            0,
        );
        assert!(r.iter().all(|r| r.quality == Quality::DeviceError));
    }
}
