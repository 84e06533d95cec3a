//! Dedupe state per stream (issue 14 item 4, DESIGN.md §3): what is held, as a watermark plus a
//! small window — not a row per item forever. Pure; both stores keep it by these rules.
//!
//! - **What is held** is a set of seq ranges ([`Held`]): every seq up to the first range's end
//!   (the stream's *floor*: every seq ≤ floor from its first one is held), then one range per run
//!   of seqs above it that arrived out of order (live items ahead of a backlog being drained).
//!   Arrivals extend and merge ranges, so a stream delivered in order is one range whatever its
//!   length. A hole stays a hole — seqs a full outbox dropped (reported by its `gap` event) are
//!   never sent — and costs one range, not a row per item after it. Membership decides: a seq in
//!   a range is a duplicate (acked again, stored nothing), any other is new. The hello's `high`
//!   and `held` are read off the ranges ([`Held::high`], [`Held::count_from`]).
//! - **The conflict window**: the content digest of the last [`WINDOW`] seqs below the highest
//!   one held is kept (SQLite: `items`, migration 0007's `digest`), so a resend of a recent seq
//!   with other content is still caught as a conflict (kept in `conflicts`, counted, logged).
//!   An older seq is a duplicate by the ranges alone; its content can no longer be compared. A
//!   gateway whose outbox went back further than that is caught by its hello instead
//!   (docs/wire.md, "An outbox that goes back in time").

use std::collections::BTreeMap;

/// Seqs below `high − WINDOW` lose their digest row. At one item per device and minute, 4096
/// seqs are about 7 hours of a 10-device gateway.
pub const WINDOW: u64 = 4096;

/// The seqs of one stream held by the store: disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held(BTreeMap<u64, u64>);

impl Held {
    /// From stored `(first, last)` ranges (merged if they overlap or touch).
    pub fn from_ranges(r: impl IntoIterator<Item = (u64, u64)>) -> Held {
        let mut v: Vec<(u64, u64)> = r.into_iter().filter(|(a, b)| a <= b).collect();
        v.sort_unstable();
        let mut out = BTreeMap::new();
        let mut cur: Option<(u64, u64)> = None;
        for (a, b) in v {
            cur = match cur {
                Some((ca, cb)) if a <= cb.saturating_add(1) => Some((ca, cb.max(b))),
                Some((ca, cb)) => {
                    out.insert(ca, cb);
                    Some((a, b))
                }
                None => Some((a, b)),
            };
        }
        if let Some((a, b)) = cur {
            out.insert(a, b);
        }
        Held(out)
    }

    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().map(|(&a, &b)| (a, b))
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.0
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &last)| seq <= last)
    }

    /// Adds `seq`; `false` when it was held already.
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        // Extend the range ending just below, or start one.
        let below = self
            .0
            .range(..seq)
            .next_back()
            .filter(|(_, last)| seq.checked_sub(1) == Some(**last))
            .map(|(&first, _)| first);
        let first = match below {
            Some(f) => {
                self.0.insert(f, seq);
                f
            }
            None => {
                self.0.insert(seq, seq);
                seq
            }
        };
        self.merge_at(first);
        true
    }

    /// Merges the range starting at `first` with the one right after it if they touch.
    fn merge_at(&mut self, first: u64) {
        let Some(&last) = self.0.get(&first) else {
            return;
        };
        let Some(next) = last.checked_add(1) else {
            return;
        };
        if let Some(next_last) = self.0.remove(&next) {
            self.0.insert(first, next_last.max(last));
        }
    }

    /// The highest seq held, 0 when none.
    pub fn high(&self) -> u64 {
        self.0.values().next_back().copied().unwrap_or(0)
    }

    /// The floor: the end of the first range (every seq from the stream's first one to it is
    /// held); `None` when nothing is.
    pub fn floor(&self) -> Option<u64> {
        self.0.values().next().copied()
    }

    /// How many seqs in `from..=high` are held (the hello's `held`).
    pub fn count_from(&self, from: u64) -> u64 {
        self.0
            .iter()
            .filter(|&(_, &last)| last >= from)
            .map(|(&first, &last)| last - first.max(from) + 1)
            .sum()
    }

    /// Seqs at or below this lose their digest, for a conflict window of `window` seqs
    /// ([`WINDOW`] in production; tests make it small).
    pub fn window_floor(&self, window: u64) -> Option<u64> {
        self.high().checked_sub(window)
    }

    /// Ranges of `self` not in `other` (what to delete / insert when `other` is stored).
    pub fn minus<'a>(&'a self, other: &'a Held) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.ranges()
            .filter(move |(a, b)| other.0.get(a) != Some(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_extend_merge_and_answer_a_hello() {
        let mut h = Held::default();
        assert_eq!((h.high(), h.floor(), h.count_from(1)), (0, None, 0));
        for s in [1, 2, 3, 8, 9, 5] {
            assert!(h.insert(s));
        }
        assert!(!h.insert(2), "held already");
        assert_eq!(h.ranges().collect::<Vec<_>>(), [(1, 3), (5, 5), (8, 9)]);
        assert!(h.insert(4));
        assert_eq!(h.ranges().collect::<Vec<_>>(), [(1, 5), (8, 9)]);
        assert_eq!((h.high(), h.floor()), (9, Some(5)));
        assert_eq!(
            (
                h.count_from(1),
                h.count_from(4),
                h.count_from(7),
                h.count_from(10)
            ),
            (7, 4, 2, 0)
        );
        assert!(!h.contains(0) && h.contains(5) && !h.contains(6));
        let stored = Held::from_ranges([(1, 3), (8, 9)]);
        assert_eq!(h.minus(&stored).collect::<Vec<_>>(), [(1, 5)]);
        assert_eq!(stored.minus(&h).collect::<Vec<_>>(), [(1, 3)]);
        assert_eq!(Held::from_ranges(h.ranges()), h);
    }

    proptest! {
        /// The ranges hold exactly the set of seqs inserted, in any order.
        #[test]
        fn ranges_are_the_set_of_seqs_inserted(seqs in proptest::collection::vec(0u64..200, 0..300)) {
            let mut h = Held::default();
            let mut set = std::collections::BTreeSet::new();
            for s in &seqs {
                prop_assert_eq!(h.insert(*s), set.insert(*s));
            }
            for s in 0..210 {
                prop_assert_eq!(h.contains(s), set.contains(&s));
            }
            prop_assert_eq!(h.high(), set.iter().next_back().copied().unwrap_or(0));
            for from in [0, 1, 50, 150, 250] {
                prop_assert_eq!(h.count_from(from), set.range(from..).count() as u64);
            }
            // Disjoint and non-adjacent.
            let r: Vec<_> = h.ranges().collect();
            for w in r.windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0, "{:?}", r);
            }
            prop_assert_eq!(Held::from_ranges(r.iter().copied()), h);
        }
    }
}
