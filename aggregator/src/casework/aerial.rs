//! Aerial passes onto case timelines (issue 15): the loop that reads newly arrived drone
//! positions, judges them with the pure [`crate::cases::aerial`], and adds each closed pass near
//! a site with open cases to those cases (an `aerial_pass` event through the engine, the pass
//! recorded, the photos' pictures linked) in one transaction.
//!
//! What it keeps between passes is only a cursor (the arrival order of the last point read) and
//! the drones whose passes are still open, with the time window to look at again. Each round,
//! for every drone with new points, it loads the drone's track around them (the whole window
//! the new points can touch: [`LOOK_AROUND_MS`] either side) and segments it anew, so points
//! arriving late or out of order (a gateway replays its backlog behind live points) are judged
//! by their own times. A closed pass is recorded by [`crate::store::CaseTx::record_pass`],
//! which refuses one overlapping a recorded pass of the same drone and site: a pass judged
//! again (a later round, a restart that starts from `close_after` before now, a late stretch
//! of a pass already added) is never added twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fumegrid_common::wire::TrackPoint;
use tokio_util::sync::CancellationToken;

use super::Casework;
use crate::cases::aerial::{self, Place, Settings, Span};
use crate::cases::model::{AerialPhoto, AerialPoint, AerialRef, Coord};
use crate::cases::{Action, Actor, Command, apply};
use crate::store::StoreError;
use crate::store::drone::{DroneReader, PassRecord};

/// How far around newly arrived points a drone's track is loaded and judged (either side):
/// a pass longer than this (a drone hovering over one site for hours) is cut into several.
pub const LOOK_AROUND_MS: i64 = 2 * 3_600_000;
/// Most points read per round.
const BATCH: u32 = 20_000;

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    pub points: usize,
    /// Passes added to cases now.
    pub passes: usize,
    /// Case events appended.
    pub events: usize,
    /// Passes found again that were already recorded.
    pub known: usize,
}

/// The judgment's state between rounds.
pub struct Aerial {
    casework: Arc<Casework>,
    drones: Arc<dyn DroneReader>,
    sites: Vec<Place>,
    settings: Settings,
    cursor: Option<i64>,
    /// Drone → `[from, to]` (ms, drone time) still to be judged.
    pending: BTreeMap<String, (i64, i64)>,
    /// The open cases at a place seen by the last round: a case not among them is new, and
    /// the passes of the half hour before it was reported are judged again for it.
    known_cases: BTreeSet<String>,
    /// The points of the open cases that have their own ([`Place::of_case`]), as of the last
    /// round.
    case_places: Vec<Place>,
}

impl Aerial {
    pub fn new(
        casework: Arc<Casework>,
        drones: Arc<dyn DroneReader>,
        sites: Vec<Place>,
        settings: Settings,
    ) -> Aerial {
        Aerial {
            casework,
            drones,
            sites,
            settings,
            cursor: None,
            pending: BTreeMap::new(),
            known_cases: BTreeSet::new(),
            case_places: Vec::new(),
        }
    }

    /// One round at the casework clock's now. Blocking.
    pub fn round(&mut self) -> Result<RoundReport, StoreError> {
        let now = self.casework.now_ms();
        let mut report = RoundReport::default();
        // At start, look again at what arrived within the last close_after (+ gap): a pass
        // open at shutdown is judged now; one already recorded is recognised.
        let mut cursor = match self.cursor {
            Some(c) => c,
            None => self.drones.cursor_before(
                now.saturating_sub(self.settings.close_after_ms + self.settings.gap_ms),
            )?,
        };
        loop {
            let points = self.drones.points_after(cursor, BATCH)?;
            for p in &points {
                let t = p.point.ts_ms;
                let w = self.pending.entry(p.drone.clone()).or_insert((t, t));
                w.0 = w.0.min(t);
                w.1 = w.1.max(t);
                cursor = p.cursor;
            }
            report.points += points.len();
            if points.len() < BATCH as usize {
                break;
            }
        }
        self.cursor = Some(cursor);
        self.judge_again_for_new_cases(now)?;
        if self.sites.is_empty() && self.case_places.is_empty() {
            self.pending.clear();
            return Ok(report);
        }
        let pending = std::mem::take(&mut self.pending);
        for (drone, (from, to)) in pending {
            let track = self.drones.track(
                &drone,
                from.saturating_sub(LOOK_AROUND_MS),
                to.saturating_add(LOOK_AROUND_MS + 1),
                crate::store::drone::MAX_TRACK_POINTS * 10,
            )?;
            let mut still_open = false;
            let places: Vec<Place> = self
                .sites
                .iter()
                .chain(&self.case_places)
                .cloned()
                .collect();
            for site in places {
                for span in aerial::segment(&track, site.lat, site.lon, &self.settings, now) {
                    // Only passes that the new points can have changed.
                    if span.end_ms.saturating_add(self.settings.gap_ms) < from
                        || span.start_ms.saturating_sub(self.settings.gap_ms) > to
                    {
                        continue;
                    }
                    if !span.closed {
                        still_open = true;
                        continue;
                    }
                    match self.add_pass(&drone, &site, &track, &span, now) {
                        Ok(Some(0)) => {}
                        Ok(Some(events)) => {
                            report.passes += 1;
                            report.events += events;
                        }
                        Ok(None) => report.known += 1,
                        // A case changed meanwhile (or another round recorded it): judged
                        // again next round.
                        Err(StoreError::Stale(why)) => {
                            tracing::debug!(drone, why, "aerial pass retried next round");
                            still_open = true;
                        }
                        Err(e) => {
                            self.pending.insert(drone.clone(), (from, to));
                            return Err(e);
                        }
                    }
                }
            }
            if still_open {
                self.pending.insert(drone, (from, to));
            }
        }
        Ok(report)
    }

    /// The open cases' own points become places for as long as the cases are open. And a
    /// pass belongs to a case reported up to [`aerial::BEFORE_REPORT_MS`] after it, but a
    /// pass judged while nothing was open at its place is not recorded: when a case appears at
    /// a place, every drone's track from that long before its report is judged again (passes
    /// recorded already are recognised, so judging again adds nothing twice).
    fn judge_again_for_new_cases(&mut self, now: i64) -> Result<(), StoreError> {
        let open = self.casework.lock().open_cases()?;
        self.case_places = open.iter().filter_map(Place::of_case).collect();
        let mut seen = BTreeSet::new();
        let mut from: Option<i64> = None;
        for c in &open {
            if c.position.is_none() && !self.sites.iter().any(|p| p.holds_case(c)) {
                continue;
            }
            seen.insert(c.id.clone());
            if !self.known_cases.contains(&c.id) {
                let f = c.reported_ms.saturating_sub(aerial::BEFORE_REPORT_MS);
                from = Some(from.map_or(f, |x| x.min(f)));
            }
        }
        if let Some(from) = from {
            for d in self.drones.drones(from)? {
                let w = self.pending.entry(d.drone).or_insert((from, now));
                w.0 = w.0.min(from);
                w.1 = w.1.max(now);
            }
        }
        self.known_cases = seen;
        Ok(())
    }

    /// Adds one closed pass to the open cases of its site; the number of events appended (0:
    /// no open case there), or `None` when the pass was recorded before.
    fn add_pass(
        &self,
        drone: &str,
        site: &Place,
        track: &[TrackPoint],
        span: &Span,
        now: i64,
    ) -> Result<Option<usize>, StoreError> {
        let s = &self.settings;
        if !self
            .drones
            .passes(Some(drone), Some(&site.key()), span.start_ms, span.end_ms)?
            .is_empty()
        {
            return Ok(None);
        }
        let photos = self.drones.photos(
            Some(drone),
            span.start_ms.saturating_sub(s.gap_ms),
            span.end_ms.saturating_add(s.gap_ms + 1),
            100,
        )?;
        let photos: Vec<_> = photos
            .into_iter()
            .filter(|p| aerial::photo_near(p.ts_ms, p.lat, p.lon, span, site.lat, site.lon, s))
            .collect();
        let source = self
            .drones
            .drones(i64::MIN)?
            .into_iter()
            .find(|d| d.drone == drone)
            .map_or("mavlink", |d| d.source.name());
        let seg = &track[span.first..=span.last];
        let pass = AerialRef {
            drone: drone.to_string(),
            source: source.to_string(),
            site: site.key(),
            start_ms: span.start_ms,
            end_ms: span.end_ms,
            min_distance_m: Coord((span.min_distance_m * 10.0).round() / 10.0),
            track: aerial::thin(seg, aerial::MAX_SEGMENT_POINTS)
                .into_iter()
                .map(|p| AerialPoint {
                    ts_ms: p.ts_ms,
                    lat: Coord(p.lat),
                    lon: Coord(p.lon),
                    alt_m: Coord(p.alt_m),
                })
                .collect(),
            photos: photos
                .iter()
                .map(|p| AerialPhoto {
                    ts_ms: p.ts_ms,
                    lat: Coord(p.lat),
                    lon: Coord(p.lon),
                    index: p.index,
                    file: p.file.clone(),
                    sha256: p.sha256.clone(),
                })
                .collect(),
        };
        let cw = &self.casework;
        let mut w = cw.lock();
        let open = w.open_cases()?;
        let targets = aerial::cases_for(&open, site, span.end_ms);
        if targets.is_empty() {
            // Nothing open at the site: nothing to add to (and nothing recorded, so a case
            // opened later does not find the pass taken).
            return Ok(Some(0));
        }
        let note = format!(
            "drone {drone} passed within {:.0} m of {}",
            span.min_distance_m, site.name
        );
        let mut outcomes = Vec::new();
        for c in &targets {
            let cmd = Command::note(Action::AerialPass { pass: pass.clone() }, note.clone());
            match apply(c, cmd, &Actor::system(), now, &cw.catalogue) {
                Ok(o) => outcomes.push(o),
                Err(e) => tracing::warn!(case = %c.id, error = %e, "aerial pass not added"),
            }
        }
        let record = PassRecord {
            drone: drone.to_string(),
            site: site.key(),
            start_ms: span.start_ms,
            end_ms: span.end_ms,
            min_distance_m: span.min_distance_m,
            cases: outcomes.iter().map(|o| o.0.id.clone()).collect(),
        };
        let events: Vec<_> = outcomes.iter().flat_map(|o| o.1.iter().cloned()).collect();
        let mut save = || {
            w.case_tx(&mut |tx| {
                if !tx.record_pass(&record, now)? {
                    return Err(StoreError::Stale(format!(
                        "aerial pass of {drone} near {}",
                        record.site
                    )));
                }
                for (case, events, effects) in &outcomes {
                    tx.save_case(case, events, effects, now)?;
                    for p in &photos {
                        if let Some(sha) = &p.sha256 {
                            tx.link_picture(sha, &case.id, &format!("aerial:{drone}"), now)?;
                        }
                    }
                }
                Ok(())
            })
        };
        match cw.stats_index() {
            Some(i) => i.commit(&events, save)?,
            None => save()?,
        }
        drop(w);
        metrics::counter!(crate::telemetry::AERIAL_PASSES).increment(1);
        tracing::info!(
            drone,
            site = %site.key(),
            start_ms = span.start_ms,
            end_ms = span.end_ms,
            min_distance_m = span.min_distance_m.round(),
            cases = ?record.cases,
            photos = photos.len(),
            "aerial pass added to cases"
        );
        if outcomes.iter().any(|o| !o.2.is_empty()) {
            cw.notify.notify_one();
        }
        Ok(Some(events.len()))
    }
}

impl std::fmt::Debug for Aerial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aerial")
            .field("sites", &self.sites.len())
            .field("cursor", &self.cursor)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Runs rounds every `every` until `cancel`.
pub async fn run(aerial: Aerial, every: Duration, cancel: CancellationToken) {
    let aerial = Arc::new(std::sync::Mutex::new(aerial));
    loop {
        let a = aerial.clone();
        let r = tokio::task::spawn_blocking(move || {
            a.lock().unwrap_or_else(|p| p.into_inner()).round()
        })
        .await;
        match r {
            Ok(Ok(r)) if r.passes > 0 => {
                tracing::debug!(
                    points = r.points,
                    passes = r.passes,
                    events = r.events,
                    "aerial round"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "aerial round failed; the next round retries"),
            Err(e) => tracing::error!(error = %e, "aerial round panicked"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use fumegrid_common::clock::Clock;
    use fumegrid_common::metric::Metric;
    use fumegrid_common::wire::{
        Alarm, AlarmKind, AlarmPhase, Batch, Body, DronePhoto, Item, Track,
    };

    use super::*;
    use crate::cases::model::EventKind;
    use crate::cases::{Catalogue, DevicePlace, SiteInfo};
    use crate::casework::SharedCaseStore;
    use crate::casework::alarms::AlarmCases;
    use crate::store::memory::MemoryStore;
    use crate::store::{CaseStore, Writer};

    /// 2025-11-03 (a Monday) 10:00 at UTC+08:00.
    const T0: i64 = 1_762_135_200_000;
    const SITE: (f64, f64) = (39.9289, 116.4160);
    /// Metres per degree of latitude here (near enough for placing test points).
    const M_PER_DEG: f64 = 111_034.0;

    struct World {
        store: MemoryStore,
        hook: AlarmCases,
        clock: Clock,
        aerial: Aerial,
        seq: u64,
    }

    fn world() -> World {
        world_with(Vec::new())
    }

    /// gw-1's site at [`SITE`] ("food street"), with `devices` of it placed on their own.
    fn world_with(devices: Vec<(String, DevicePlace)>) -> World {
        let store = MemoryStore::new();
        let cat = Arc::new(Catalogue::builtin().expect("catalogue"));
        let clock = Clock::fixed(T0);
        let shared: SharedCaseStore = Arc::new(Mutex::new(store.clone()));
        let cw = Arc::new(Casework::new(shared, cat.clone(), clock.clone()));
        let east_2km = SITE.1 + 2000.0 / (M_PER_DEG * SITE.0.to_radians().cos());
        let sites: std::collections::HashMap<String, SiteInfo> = [
            (
                "gw-1".to_string(),
                SiteInfo {
                    site: Some("food street".into()),
                    position: Some((Coord(SITE.0), Coord(SITE.1))),
                    devices: devices.into_iter().collect(),
                    ..SiteInfo::default()
                },
            ),
            // Another site 2 km east, with nothing open.
            (
                "gw-2".to_string(),
                SiteInfo {
                    position: Some((Coord(SITE.0), Coord(east_2km))),
                    ..SiteInfo::default()
                },
            ),
        ]
        .into_iter()
        .collect();
        let sites = aerial::places(&sites);
        let mut aerial = Aerial::new(cw, Arc::new(store.clone()), sites, Settings::default());
        // Running since before anything flew.
        aerial.round().expect("first round");
        World {
            aerial,
            hook: AlarmCases::new(cat),
            store,
            clock,
            seq: 0,
        }
    }

    impl World {
        fn send(&mut self, body: Body) {
            self.seq += 1;
            let b = Batch {
                gateway: "gw-1".into(),
                stream: "s".into(),
                sent_ms: 0,
                items: vec![Item {
                    seq: self.seq,
                    body,
                }],
            };
            let now = self.clock.now_ms();
            self.store
                .commit_with(&[&b], now, &mut self.hook)
                .expect("commit");
        }

        fn open_exceedance(&mut self) -> String {
            self.send(Body::Alarm(Alarm {
                id: format!("rest-1:exceedance:{T0}"),
                device: "rest-1".into(),
                kind: AlarmKind::Exceedance,
                metric: Some(Metric::FumeMgM3),
                phase: AlarmPhase::Raised,
                started_ms: T0,
                ts_ms: T0,
                cleared_ms: None,
                value: Some(2.8),
                peak: Some(2.8),
                peak_ms: Some(T0),
                limit: Some(2.0),
                suppressed: false,
                message: String::new(),
            }));
            let open = self.store.clone().open_cases().expect("open");
            assert_eq!(open.len(), 1, "the alarm opened a case");
            open[0].id.clone()
        }

        /// A flight `north_m(t)` metres north of the site, one point a second for `secs`
        /// seconds from `start`, in items of at most 60 points.
        fn fly(&mut self, drone: &str, start: i64, secs: i64, north_m: impl Fn(i64) -> f64) {
            let points: Vec<TrackPoint> = (0..secs)
                .map(|t| TrackPoint {
                    ts_ms: start + t * 1000,
                    lat: SITE.0 + north_m(t) / M_PER_DEG,
                    lon: SITE.1,
                    alt_m: 90.0,
                    rel_alt_m: Some(40.0),
                    heading_deg: None,
                    speed_m_s: None,
                    battery_pct: None,
                })
                .collect();
            for chunk in points.chunks(60) {
                // It arrives (live) a second after its last point, unless the clock is later.
                let arrives = chunk.last().map_or(0, |p| p.ts_ms + 1000);
                self.clock.set_ms(self.clock.now_ms().max(arrives));
                self.send(Body::Track(Track {
                    drone: drone.into(),
                    points: chunk.to_vec(),
                }));
            }
        }

        fn aerial_events(&self, case: &str) -> Vec<crate::cases::Event> {
            let mut s = self.store.clone();
            let c = s.load_case(case).expect("load").expect("case");
            (1..=c.seq)
                .filter_map(|n| s.case_event(case, n).expect("event"))
                .filter(|e| e.kind == EventKind::AerialPass)
                .collect()
        }

        fn round_at(&mut self, now: i64) -> RoundReport {
            self.clock.set_ms(now);
            self.aerial.round().expect("round")
        }
    }

    #[test]
    fn a_pass_over_a_site_with_an_open_case_is_added_once() {
        let mut w = world();
        let case = w.open_exceedance();
        // 1 km south to 1 km north at 10 m/s, with a photo over the site.
        let start = T0 + 60_000;
        w.fly("m1", start, 200, |t| -1000.0 + 10.0 * t as f64);
        let sha = "ab".repeat(32);
        w.send(Body::DronePhoto(DronePhoto {
            drone: "m1".into(),
            ts_ms: start + 100_000,
            lat: SITE.0,
            lon: SITE.1,
            alt_m: 90.0,
            index: 1,
            file: Some("/DCIM/1.jpg".into()),
            ok: true,
            sha256: Some(sha.clone()),
        }));
        // While the drone may still come back within the gap, the pass is not final.
        let r = w.round_at(start + 200_000);
        assert_eq!(r.passes, 0, "{r:?}");
        assert!(w.aerial_events(&case).is_empty());
        // The clock passes close_after (300 s) after the pass's last point (t = 114 or 115)
        // without another point: the pass is judged.
        let r = w.round_at(start + 116_000 + 300_000);
        assert_eq!((r.passes, r.events), (1, 1), "{r:?}");
        let ev = w.aerial_events(&case);
        assert_eq!(ev.len(), 1);
        let pass = ev[0].aerial.as_ref().expect("the pass");
        assert_eq!((pass.drone.as_str(), pass.site.as_str()), ("m1", "gw-1"));
        assert_eq!(pass.source, "mavlink");
        assert!(pass.min_distance_m.0 < 5.0, "{pass:?}");
        // Within 150 m: ±150 m at 10 m/s is 30 s of flight.
        assert!(
            (29_000..=31_000).contains(&(pass.end_ms - pass.start_ms)),
            "{pass:?}"
        );
        assert_eq!(pass.track.first().map(|p| p.ts_ms), Some(pass.start_ms));
        assert_eq!(pass.photos.len(), 1);
        assert_eq!(pass.photos[0].sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(ev[0].actor, Actor::system());
        // Judged again (later rounds, a restart from scratch): never added twice.
        assert_eq!(w.round_at(start + 1_000_000).passes, 0);
        let cw = w.aerial.casework.clone();
        let mut fresh = Aerial::new(
            cw,
            Arc::new(w.store.clone()),
            w.aerial.sites.clone(),
            Settings::default(),
        );
        fresh.cursor = Some(0);
        let r = fresh.round().expect("round");
        assert_eq!((r.passes, r.known), (0, 1), "{r:?}");
        assert_eq!(w.aerial_events(&case).len(), 1);
    }

    #[test]
    fn circling_is_one_pass_and_leaving_longer_than_the_gap_makes_two() {
        let mut w = world();
        let case = w.open_exceedance();
        let start = T0 + 60_000;
        // Circle: in 20 s, out (300 m) 100 s, in 20 s, out 100 s, in 20 s; then gone 10 min.
        w.fly("m1", start, 260, |t| match t {
            0..20 | 120..140 | 240..260 => 30.0,
            _ => 300.0,
        });
        w.fly("m1", start + 900_000, 10, |_| 2000.0);
        let r = w.round_at(start + 910_000);
        assert_eq!(r.passes, 1, "{r:?}");
        // Away for 200 s between two visits: two passes.
        w.fly("m1", start + 2_000_000, 240, |t| match t {
            0..20 | 220..240 => 30.0,
            _ => 400.0,
        });
        w.fly("m1", start + 3_000_000, 10, |_| 2000.0);
        let r = w.round_at(start + 3_010_000);
        assert_eq!(r.passes, 2, "{r:?}");
        assert_eq!(w.aerial_events(&case).len(), 3);
    }

    #[test]
    fn a_far_pass_and_a_pass_long_before_the_case_add_nothing() {
        let mut w = world();
        // No case open yet: a pass over gw-1 adds nothing, then or when a case opens more
        // than half an hour after it.
        let start = T0 + 60_000;
        w.fly("m1", start, 200, |t| -1000.0 + 10.0 * t as f64);
        let r = w.round_at(start + 1_000_000);
        assert_eq!(r.passes, 0, "{r:?}");
        w.clock
            .set_ms(start + 115_000 + aerial::BEFORE_REPORT_MS + 60_000);
        let case = w.open_exceedance();
        let r = w.round_at(start + 115_000 + aerial::BEFORE_REPORT_MS + 65_000);
        assert_eq!(r.passes, 0, "{r:?}");
        // 600 m north of the site, parallel: never within 150 m.
        let later = start + 2_000_000;
        w.fly("m2", later, 200, |_| 600.0);
        assert_eq!(w.round_at(later + 1_000_000).passes, 0);
        assert!(w.aerial_events(&case).is_empty());
    }

    #[test]
    fn a_late_track_is_judged_by_its_own_times() {
        let mut w = world();
        let case = w.open_exceedance();
        let start = T0 + 60_000;
        // Live points of the second half arrive first, the backlog (first half) an hour
        // later: one pass, as if it had all come live.
        let north = |t: i64| -1000.0 + 10.0 * t as f64;
        w.fly("m1", start + 100_000, 100, |t| north(t + 100));
        w.round_at(start + 200_000);
        // The backlog arrives later than live: the clock is not set back by it.
        let r = w.round_at(start + 500_000);
        let first = r.passes;
        w.fly("m1", start, 100, north);
        let r = w.round_at(start + 3_600_000);
        assert_eq!(first + r.passes, 1, "{r:?}");
        let ev = w.aerial_events(&case);
        assert_eq!(ev.len(), 1);
    }

    #[test]
    fn a_device_placed_on_its_own_gets_the_passes_over_it_not_over_its_street() {
        // rest-1 stands 500 m north of its gateway's site.
        let mut w = world_with(vec![(
            "rest-1".to_string(),
            DevicePlace {
                name: Some("Wang's BBQ".into()),
                position: Some((Coord(SITE.0 + 500.0 / M_PER_DEG), Coord(SITE.1))),
            },
        )]);
        let case = w.open_exceedance();
        // Over the street's point only (from 400 m south to 100 m north and back south).
        let start = T0 + 60_000;
        w.fly("m1", start, 100, |t| -400.0 + 5.0 * t as f64);
        w.fly("m1", start + 900_000, 10, |_| -2000.0);
        let r = w.round_at(start + 910_000);
        assert_eq!(r.passes, 0, "the street's pass is not the grill's: {r:?}");
        assert!(w.aerial_events(&case).is_empty());
        // Over the grill.
        let later = start + 1_000_000;
        w.fly("m1", later, 200, |t| -500.0 + 10.0 * t as f64);
        w.fly("m1", later + 900_000, 10, |_| 3000.0);
        let r = w.round_at(later + 910_000);
        assert_eq!(r.passes, 1, "{r:?}");
        let ev = w.aerial_events(&case);
        assert_eq!(ev.len(), 1);
        let pass = ev[0].aerial.as_ref().expect("the pass");
        assert_eq!(pass.site, "gw-1/rest-1");
        assert!(pass.min_distance_m.0 < 5.0, "{pass:?}");
        assert!(ev[0].note.contains("Wang's BBQ"), "{:?}", ev[0].note);
    }

    #[test]
    fn a_pass_judged_before_its_case_was_reported_joins_the_case_when_it_opens() {
        let mut w = world();
        // The drone passes the street; nothing is open yet, so the judged pass adds nothing.
        let start = T0 + 60_000;
        w.fly("m1", start, 200, |t| -1000.0 + 10.0 * t as f64);
        w.fly("m1", start + 400_000, 10, |_| 3000.0);
        let r = w.round_at(start + 410_000);
        assert_eq!(r.passes, 0, "{r:?}");
        // Ten minutes later the exceedance (averaged over the last ten minutes) opens a
        // case: what the drone saw then belongs to it.
        w.clock.set_ms(start + 115_000 + 600_000);
        let case = w.open_exceedance();
        let r = w.round_at(start + 115_000 + 605_000);
        assert_eq!(r.passes, 1, "{r:?}");
        assert_eq!(w.aerial_events(&case).len(), 1);
        // Later rounds (the case is known now) and a restart add it no second time.
        assert_eq!(w.round_at(start + 115_000 + 700_000).passes, 0);
        let mut fresh = Aerial::new(
            w.aerial.casework.clone(),
            Arc::new(w.store.clone()),
            w.aerial.sites.clone(),
            Settings::default(),
        );
        let r = fresh.round().expect("round");
        assert_eq!((r.passes, r.known), (0, 1), "{r:?}");
        assert_eq!(w.aerial_events(&case).len(), 1);
    }

    #[test]
    fn a_case_with_its_own_point_gets_the_passes_over_that_point_only() {
        use crate::cases::model::{Intake, Origin};
        let mut w = world();
        // A patrol find 1 km north of the street, filed for the street by name.
        let point = (SITE.0 + 1000.0 / M_PER_DEG, SITE.1);
        let (case, _) = w
            .aerial
            .casework
            .file(
                Intake {
                    category: "exceedance".into(),
                    title: "smoke from a rooftop vent".into(),
                    origin: Origin::Patrol {
                        drone: Some("m9".into()),
                        lat: Coord(point.0),
                        lon: Coord(point.1),
                        observed_ms: T0,
                    },
                    site: Some("food street".into()),
                    grid_cell: None,
                },
                &Actor::system(),
                "",
            )
            .expect("file");
        // Over the street only: not the find's (though it names the street).
        let start = T0 + 60_000;
        w.fly("m1", start, 100, |t| -400.0 + 5.0 * t as f64);
        w.fly("m1", start + 900_000, 10, |_| -3000.0);
        let r = w.round_at(start + 910_000);
        assert_eq!(r.passes, 0, "{r:?}");
        assert!(w.aerial_events(&case.id).is_empty());
        // Over the find's point.
        let later = start + 1_000_000;
        w.fly("m1", later, 200, |t| 0.0 + 10.0 * t as f64);
        w.fly("m1", later + 900_000, 10, |_| 5000.0);
        let r = w.round_at(later + 910_000);
        assert_eq!(r.passes, 1, "{r:?}");
        let ev = w.aerial_events(&case.id);
        assert_eq!(ev.len(), 1);
        let pass = ev[0].aerial.as_ref().expect("the pass");
        assert_eq!(pass.site, format!("case/{}", case.id));
        assert!(pass.min_distance_m.0 < 5.0, "{pass:?}");
    }
}
