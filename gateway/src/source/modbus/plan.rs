//! Which requests read a profile's points: contiguous points of one table are merged into one
//! block, reading through unused gaps up to `max_gap`, as long as the block stays within the
//! firmware's per-read limit. Pure: a function of the profile only.

use fumegrid_common::profile::{Profile, Table};

pub use crate::decode::Block;

/// The blocks that read every point of `profile`, in table then address order.
pub fn plan(profile: &Profile) -> Vec<Block> {
    let mut blocks = Vec::new();
    for table in [Table::Holding, Table::Input, Table::Coil, Table::Discrete] {
        let limit = u32::from(if table.is_bits() {
            profile.modbus.max_bits_per_read
        } else {
            profile.modbus.max_registers_per_read
        })
        .max(1);
        let gap = u32::from(profile.modbus.max_gap);
        let mut idx: Vec<usize> = (0..profile.points.len())
            .filter(|&i| profile.points[i].table == table)
            .collect();
        idx.sort_by_key(|&i| (profile.points[i].address, profile.points[i].end()));
        let mut cur: Option<(u32, u32, Vec<usize>)> = None; // start, end inclusive, points
        for i in idx {
            let p = &profile.points[i];
            let (s, e) = (u32::from(p.address), p.end());
            cur = match cur.take() {
                Some((cs, ce, mut pts)) if s <= ce + 1 + gap && e.max(ce) - cs < limit => {
                    pts.push(i);
                    Some((cs, ce.max(e), pts))
                }
                Some(done) => {
                    blocks.push(block(table, done));
                    Some((s, e, vec![i]))
                }
                None => Some((s, e, vec![i])),
            };
        }
        if let Some(done) = cur {
            blocks.push(block(table, done));
        }
    }
    blocks
}

fn block(table: Table, (start, end, points): (u32, u32, Vec<usize>)) -> Block {
    // Profile validation keeps every point inside 0..=65535 and within one request's limit.
    Block {
        table,
        start: start as u16,
        count: (end - start + 1) as u16,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fumegrid_common::diag::Source;
    use proptest::prelude::*;

    fn profile(points: &[(&str, &str, u16, &str)], max_regs: u16, gap: u16) -> Profile {
        let mut t = format!(
            "[profile]\nid = \"t\"\n[modbus]\nmax_registers_per_read = {max_regs}\nmax_gap = {gap}\n"
        );
        for (m, table, a, ty) in points {
            t += &format!(
                "[[points]]\nmetric = \"{m}\"\ntable = \"{table}\"\naddress = {a}\ntype = \"{ty}\"\n"
            );
        }
        Profile::from_source(&Source::new("t.toml", t)).expect("valid profile")
    }

    #[test]
    fn contiguous_points_make_one_block() {
        let p = profile(
            &[
                ("fume_mg_m3", "holding", 0, "f32"),
                ("particulate_mg_m3", "holding", 2, "f32"),
                ("fan_on", "holding", 6, "u16"),
            ],
            32,
            4,
        );
        let b = plan(&p);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].start, b[0].count, b[0].points.len()), (0, 7, 3));
    }

    #[test]
    fn gap_larger_than_max_gap_splits() {
        let p = profile(
            &[
                ("fume_mg_m3", "input", 0, "f32"),
                ("fan_on", "input", 10, "u16"),
            ],
            32,
            4,
        );
        let b = plan(&p);
        assert_eq!(
            b.iter().map(|b| (b.start, b.count)).collect::<Vec<_>>(),
            vec![(0, 2), (10, 1)]
        );
        let p = profile(
            &[
                ("fume_mg_m3", "input", 0, "f32"),
                ("fan_on", "input", 6, "u16"),
            ],
            32,
            4,
        );
        assert_eq!(
            plan(&p).len(),
            1,
            "a gap of exactly max_gap is read through"
        );
    }

    #[test]
    fn per_read_limit_splits_and_tables_never_mix() {
        let p = profile(
            &[
                ("fume_mg_m3", "holding", 0, "f32"),
                ("particulate_mg_m3", "holding", 2, "f32"),
                ("fan_on", "coil", 0, "bool"),
            ],
            3,
            4,
        );
        let b = plan(&p);
        assert_eq!(
            b.iter()
                .map(|b| (b.table, b.start, b.count))
                .collect::<Vec<_>>(),
            vec![
                (Table::Holding, 0, 2),
                (Table::Holding, 2, 2),
                (Table::Coil, 0, 1)
            ]
        );
    }

    proptest! {
        /// Every point is read by exactly one block that fully contains it, and no block breaks
        /// the per-read limit.
        #[test]
        fn blocks_cover_points_within_limits(addrs in proptest::collection::btree_set(0u16..200, 1..8), max_regs in 2u16..40, gap in 0u16..8) {
            let metrics = ["fume_mg_m3", "particulate_mg_m3", "nmhc_mg_m3", "flow_m3_h", "temperature_c", "humidity_pct", "fan_current_a", "purifier_current_a"];
            // Space points two registers apart so f32s never overlap.
            let pts: Vec<(&str, &str, u16, &str)> = addrs.iter().enumerate().map(|(i, a)| (metrics[i], "holding", a * 2, "f32")).collect();
            let p = profile(&pts, max_regs, gap);
            let blocks = plan(&p);
            let mut seen = vec![0; p.points.len()];
            for b in &blocks {
                prop_assert!(b.count <= max_regs);
                for &i in &b.points {
                    seen[i] += 1;
                    let pt = &p.points[i];
                    prop_assert!(pt.address >= b.start && pt.end() < u32::from(b.start) + u32::from(b.count));
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
