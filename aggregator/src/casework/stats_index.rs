//! What case statistics read, kept in memory so that `GET /api/v1/stats/cases` answers over a
//! million cases in well under a second (BENCHMARKS.md, "Dispatch cases").
//!
//! Not a store concern: a fold over the saved case events that casework keeps. A compact log:
//! one 32-byte record per case event (time, deadline, case number, kind, state, rating, and the
//! four dimensions interned to small ids), loaded from the store's events, grouped by case in
//! seq order, when the aggregator starts ([`StatsIndex::load`]) and appended by casework after
//! each transaction that saved case events commits ([`StatsIndex::commit`], both casework's own
//! and ingest's through [`super::alarms::AlarmCases`]: the commit and the append happen under
//! the index lock, so appends come in commit order and the events of a case stay in seq order
//! even when both writers touch it). The figures themselves are [`stats::Tally`]'s, the same
//! code [`stats::compute`] runs over stored events. The API reads them through
//! [`IndexedReader`].
//!
//! The records loaded at start (`base`) are sorted by case; later ones go to `tail` in commit
//! order and are merged into `base` once the tail grows past a quarter of it. A value that does
//! not fit (more than 65 535 names of one dimension, a rating of 255) turns the index off: the
//! reader then answers from the store's events as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cases::model::{Event, EventKind, Source, State};
use crate::cases::stats::{self, Fact, Period, Stats};
use crate::store::{self as store, CaseStore, Reader, StoreError};

#[derive(Debug, Clone, Copy)]
struct Rec {
    ts_ms: i64,
    /// `NO_DEADLINE`: none.
    deadline_ms: i64,
    /// Number of the case, in order of first sight.
    case: u32,
    kind: EventKind,
    to_state: State,
    source: Source,
    /// `NO_RATING`: none.
    rating: u8,
    /// category, department, site, grid cell: 0 = none, else 1 + index into the names.
    dims: [u16; 4],
}

const NO_DEADLINE: i64 = i64::MIN;
const NO_RATING: u8 = u8::MAX;

impl Rec {
    fn fact(&self) -> Fact<u16> {
        let d = |i: usize| (self.dims[i] != 0).then_some(self.dims[i]);
        Fact {
            ts_ms: self.ts_ms,
            kind: self.kind,
            to_state: self.to_state,
            deadline_ms: (self.deadline_ms != NO_DEADLINE).then_some(self.deadline_ms),
            rating: (self.rating != NO_RATING).then_some(self.rating),
            category: self.dims[0],
            source: self.source,
            department: d(1),
            site: d(2),
            grid_cell: d(3),
        }
    }
}

/// The event fields [`Rec`] is made from, borrowed from an [`Event`] or a row.
struct Row<'a> {
    case_id: &'a str,
    ts_ms: i64,
    kind: EventKind,
    to_state: State,
    source: Source,
    deadline_ms: Option<i64>,
    rating: Option<u8>,
    dims: [Option<&'a str>; 4],
}

#[derive(Debug, Default)]
struct Inner {
    cases: HashMap<Box<str>, u32>,
    /// Per dimension: names (id - 1 → name) and name → id.
    names: [Vec<Arc<str>>; 4],
    ids: [HashMap<Arc<str>, u16>; 4],
    /// Sorted by case, each case's records in seq order.
    base: Arc<Vec<Rec>>,
    /// Appended since, in commit order.
    tail: Vec<Rec>,
    /// A value did not fit: statistics come from SQLite.
    off: bool,
}

impl Inner {
    fn push(&mut self, r: &Row<'_>) -> Option<Rec> {
        let n = self.cases.len() as u32;
        let case = *self.cases.entry(r.case_id.into()).or_insert(n);
        let mut dims = [0u16; 4];
        for (i, v) in r.dims.iter().enumerate() {
            if let Some(v) = v {
                dims[i] = match self.ids[i].get(*v) {
                    Some(&id) => id,
                    None => {
                        let id = u16::try_from(self.names[i].len() + 1).ok()?;
                        let name: Arc<str> = Arc::from(*v);
                        self.names[i].push(name.clone());
                        self.ids[i].insert(name, id);
                        id
                    }
                };
            }
        }
        if r.rating == Some(NO_RATING) || r.deadline_ms == Some(NO_DEADLINE) {
            return None;
        }
        Some(Rec {
            ts_ms: r.ts_ms,
            deadline_ms: r.deadline_ms.unwrap_or(NO_DEADLINE),
            case,
            kind: r.kind,
            to_state: r.to_state,
            source: r.source,
            rating: r.rating.unwrap_or(NO_RATING),
            dims,
        })
    }

    fn append(&mut self, events: &[Event]) {
        if self.off {
            return;
        }
        for e in events {
            let row = Row {
                case_id: &e.case_id,
                ts_ms: e.ts_ms,
                kind: e.kind,
                to_state: e.to_state,
                source: e.source,
                deadline_ms: e.deadline_ms,
                rating: e.rating,
                dims: [
                    Some(e.category.as_str()),
                    e.department.as_deref(),
                    e.site.as_deref(),
                    e.grid_cell.as_deref(),
                ],
            };
            match self.push(&row) {
                Some(r) => self.tail.push(r),
                None => return self.turn_off(),
            }
        }
    }

    fn turn_off(&mut self) {
        tracing::warn!(
            "case statistics index off (a value does not fit); statistics are read from the store"
        );
        *self = Inner {
            off: true,
            ..Inner::default()
        };
    }
}

/// The statistics' inputs in memory; shared by the writers (append) and the reader (query).
#[derive(Debug, Default)]
pub struct StatsIndex {
    inner: Mutex<Inner>,
}

/// Bytes the index holds, roughly (records, case numbers, names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSize {
    pub cases: usize,
    pub events: usize,
    pub bytes: usize,
}

impl StatsIndex {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads every stored case event (only the fields statistics need, grouped by case).
    pub fn load(store: &mut dyn CaseStore) -> Result<StatsIndex, StoreError> {
        let mut inner = Inner::default();
        let mut base = Vec::new();
        store.scan_case_events(&mut |f| {
            if inner.off {
                return;
            }
            let row = Row {
                case_id: f.case_id,
                ts_ms: f.ts_ms,
                kind: f.kind,
                to_state: f.to_state,
                source: f.source,
                deadline_ms: f.deadline_ms,
                rating: f.rating.map(|x| u8::try_from(x).unwrap_or(NO_RATING)),
                dims: [f.category, f.department, f.site, f.grid_cell],
            };
            match inner.push(&row) {
                Some(rec) => base.push(rec),
                None => {
                    inner.turn_off();
                    base = Vec::new();
                }
            }
        })?;
        base.shrink_to_fit();
        inner.base = Arc::new(base);
        Ok(StatsIndex {
            inner: Mutex::new(inner),
        })
    }

    /// Runs `commit` (the transaction that saved `events`) and appends `events` if it
    /// succeeded, under the index lock: appends come in commit order.
    pub fn commit<E>(
        &self,
        events: &[Event],
        commit: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut g = self.lock();
        commit()?;
        g.append(events);
        Ok(())
    }

    /// Statistics of `period` ([`stats::compute`]'s figures); `None` when the index is off.
    pub fn stats(&self, period: Period) -> Option<Stats> {
        let (base, mut tail, names) = {
            let g = self.lock();
            if g.off {
                return None;
            }
            (g.base.clone(), g.tail.clone(), g.names.clone())
        };
        let merged_tail = tail.len();
        // Stable: each case's records stay in commit (= seq) order.
        tail.sort_by_key(|r| r.case);
        let mut tally = stats::Tally::new(period);
        let mut run: Vec<Fact<u16>> = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < base.len() || j < tail.len() {
            let case = match (base.get(i), tail.get(j)) {
                (Some(a), Some(b)) => a.case.min(b.case),
                (Some(a), None) => a.case,
                (None, Some(b)) => b.case,
                (None, None) => break,
            };
            run.clear();
            take_run(&base, &mut i, case, period, &mut run);
            take_run(&tail, &mut j, case, period, &mut run);
            tally.case(&run);
        }
        let out = tally.finish(|d, id| &names[d][usize::from(id) - 1]);
        if merged_tail > 4096 && merged_tail > base.len() / 4 {
            self.compact(&base, &tail, merged_tail);
        }
        Some(out)
    }

    /// Merges the first `n` tail records (`sorted`: those, sorted by case) into the base.
    fn compact(&self, base: &Arc<Vec<Rec>>, sorted: &[Rec], n: usize) {
        let mut merged = Vec::with_capacity(base.len() + sorted.len());
        let (mut i, mut j) = (0, 0);
        while i < base.len() || j < sorted.len() {
            let take_base = match (base.get(i), sorted.get(j)) {
                (Some(a), Some(b)) => a.case <= b.case,
                (Some(_), None) => true,
                _ => false,
            };
            if take_base {
                merged.push(base[i]);
                i += 1;
            } else {
                merged.push(sorted[j]);
                j += 1;
            }
        }
        let mut g = self.lock();
        // Another query compacted first: leave it.
        if Arc::ptr_eq(&g.base, base) && g.tail.len() >= n && !g.off {
            g.base = Arc::new(merged);
            g.tail.drain(..n);
        }
    }

    /// `inner` answering case statistics from this index ([`IndexedReader`]).
    pub fn reader(inner: Arc<dyn Reader>, index: Arc<StatsIndex>) -> IndexedReader {
        IndexedReader { inner, index }
    }

    pub fn size(&self) -> IndexSize {
        let g = self.lock();
        let events = g.base.len() + g.tail.len();
        let names: usize = g.names.iter().flatten().map(|n| n.len() + 48).sum();
        let case_key: usize = g.cases.keys().map(|k| k.len()).sum();
        IndexSize {
            cases: g.cases.len(),
            events,
            bytes: (g.base.capacity() + g.tail.capacity()) * std::mem::size_of::<Rec>()
                // hashbrown: (key, value) = 24 bytes + 1 control byte per bucket, ~7/8 full
                + g.cases.capacity() * 25 * 8 / 7
                + case_key
                + names,
        }
    }
}

/// Appends the facts before `period`'s end of the records of `case` at `recs[*k..]`.
fn take_run(recs: &[Rec], k: &mut usize, case: u32, period: Period, run: &mut Vec<Fact<u16>>) {
    while let Some(r) = recs.get(*k).filter(|r| r.case == case) {
        if r.ts_ms < period.to_ms {
            run.push(r.fact());
        }
        *k += 1;
    }
}

/// A [`Reader`] that answers case statistics from a [`StatsIndex`] (while it is on) and
/// everything else from the store's reader: what the API is given when casework keeps an index.
pub struct IndexedReader {
    pub inner: Arc<dyn Reader>,
    pub index: Arc<StatsIndex>,
}

impl std::fmt::Debug for IndexedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexedReader")
    }
}

impl Reader for IndexedReader {
    fn gateways(&self) -> Result<Vec<store::GatewayRow>, StoreError> {
        self.inner.gateways()
    }
    fn devices(&self) -> Result<Vec<store::DeviceRow>, StoreError> {
        self.inner.devices()
    }
    fn readings(&self, q: &store::ReadingQuery) -> Result<Vec<store::ReadingRow>, StoreError> {
        self.inner.readings(q)
    }
    fn periods(&self, q: &store::ReadingQuery) -> Result<Vec<store::PeriodRow>, StoreError> {
        self.inner.periods(q)
    }
    fn rollups(
        &self,
        q: &store::ReadingQuery,
        level: usize,
    ) -> Result<Vec<store::RollupRow>, StoreError> {
        self.inner.rollups(q, level)
    }
    fn alarms(&self, q: &store::AlarmQuery) -> Result<Vec<store::AlarmRow>, StoreError> {
        self.inner.alarms(q)
    }
    fn alarm(&self, gateway: &str, id: &str) -> Result<Option<store::AlarmDetail>, StoreError> {
        self.inner.alarm(gateway, id)
    }
    fn case(&self, id: &str) -> Result<Option<store::CaseDetail>, StoreError> {
        self.inner.case(id)
    }
    fn contact(&self, case_id: &str) -> Result<Option<store::cases_sql::Contact>, StoreError> {
        self.inner.contact(case_id)
    }
    fn cases(&self, q: &store::CaseQuery) -> Result<store::CasePage, StoreError> {
        self.inner.cases(q)
    }
    fn case_events_until(&self, to_ms: i64) -> Result<Vec<Event>, StoreError> {
        self.inner.case_events_until(to_ms)
    }
    fn case_stats(&self, period: Period) -> Result<Stats, StoreError> {
        match self.index.stats(period) {
            Some(s) => Ok(s),
            None => self.inner.case_stats(period),
        }
    }
    fn notifications(
        &self,
        q: &store::notify_sql::NotificationQuery,
    ) -> Result<(u64, Vec<store::notify_sql::Notification>), StoreError> {
        self.inner.notifications(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::model::tests::{T0, cat};
    use crate::cases::stats::compute;
    use crate::cases::stats::tests::simulate;
    use crate::store::{Synchronous, sqlite};

    const H: i64 = 3_600_000;

    fn periods() -> Vec<Period> {
        let mut v = vec![Period::all()];
        for a in (0..400).step_by(37) {
            for len in [1, 24, 200] {
                let from_ms = T0 + a * H;
                v.push(Period {
                    from_ms,
                    to_ms: from_ms + len * H,
                });
            }
        }
        v
    }

    /// Half the cases are stored before the index is loaded, the rest after through a writer
    /// that appends: the index answers exactly what `compute` over the whole log answers.
    #[test]
    fn statistics_from_the_index_equal_compute_over_the_log() {
        let catalogue = cat();
        let dir = std::env::temp_dir().join(format!("fumegrid-sidx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for seed in 0..40u64 {
            let (cases, events, _) = simulate(seed, &catalogue);
            let p = dir.join(format!("s{seed}.sqlite3"));
            for s in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{s}", p.display()));
            }
            let mut w = sqlite::open(&p, Synchronous::Normal).expect("open");
            let of = |c: &crate::cases::Case| {
                let mut e: Vec<Event> = events
                    .iter()
                    .filter(|e| e.case_id == c.id)
                    .cloned()
                    .collect();
                e.sort_by_key(|e| e.seq);
                e
            };
            let (before, after) = cases.split_at(cases.len() / 2);
            for c in before {
                w.save_case(c, &of(c), &[], T0).expect("save");
            }
            let index = Arc::new(StatsIndex::load(&mut w).expect("load"));
            // As casework saves: under the index, which appends what committed.
            for c in after {
                index
                    .commit(&of(c), || w.save_case(c, &of(c), &[], T0))
                    .expect("save");
            }
            // A save that fails appends nothing.
            if let Some(c) = after.first() {
                assert!(
                    index
                        .commit(&of(c), || w.save_case(c, &of(c), &[], T0))
                        .is_err()
                );
            }
            assert_eq!(index.size().events, events.len(), "seed {seed}");
            for p in periods() {
                assert_eq!(
                    index.stats(p).expect("on"),
                    compute(&events, p),
                    "seed {seed} {p:?}"
                );
            }
        }
    }

    /// Appends in commit order, merged into the base once the tail is long; same figures.
    #[test]
    fn appended_and_compacted_index_gives_the_same_figures() {
        let catalogue = cat();
        let index = StatsIndex::default();
        let mut all = Vec::new();
        for seed in 0..60u64 {
            let (_, mut events, _) = simulate(seed, &catalogue);
            // simulate returns the log reversed; append it in the order it was written, with
            // case ids of their own per seed.
            events.reverse();
            for e in &mut events {
                e.case_id = format!("{seed}-{}", e.case_id);
            }
            for chunk in events.chunks(7) {
                index.commit(chunk, || Ok::<(), ()>(())).expect("commit");
            }
            index
                .commit(&events[..1], || Err(()))
                .expect_err("rolled back");
            all.extend(events);
            if seed % 20 == 19 {
                let before = index.lock().tail.len();
                for p in periods() {
                    assert_eq!(index.stats(p).expect("on"), compute(&all, p), "{p:?}");
                }
                // The first query merged the tail into the base.
                assert!(index.lock().tail.len() < before || before <= 4096);
            }
        }
        assert!(index.lock().base.len() > 4096, "compaction ran");
    }

    #[test]
    fn rec_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Rec>(), 32);
    }
}
