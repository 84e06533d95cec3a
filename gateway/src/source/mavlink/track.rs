//! Track decimation (pure): which of a drone's positions go up, and when a stretch of them is cut
//! into a [`Track`] item.
//!
//! A position is kept when, since the last kept one,
//! - at least `min_interval_ms` passed **and** the drone moved at least `min_distance_m`
//!   (horizontal and vertical together) or turned at least `turn_deg`; or
//! - `max_interval_ms` passed (a hovering drone still shows up now and then).
//!
//! The first position of a flight (and the first after a link loss) is always kept. Kept points
//! gather in a stretch that is cut into one item every `item_every_ms` (the oldest point's age),
//! at [`TRACK_MAX_POINTS`], at a link loss and at the stop. So a position is at most
//! `item_every_ms` old when it enters the outbox, and an hour of flight is a few dozen items.

use fumegrid_common::wire::{TRACK_MAX_POINTS, Track, TrackPoint};

/// The decimation parameters (`[[drones]]` keys of the same names; defaults in docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decimation {
    pub min_interval_ms: u64,
    pub min_distance_m: f64,
    pub turn_deg: f64,
    pub max_interval_ms: u64,
    pub item_every_ms: u64,
}

impl Default for Decimation {
    /// 10 m/s cruise: a point every 5 s (50 m apart); hovering: one a minute; an item a minute.
    fn default() -> Self {
        Decimation {
            min_interval_ms: 5_000,
            min_distance_m: 20.0,
            turn_deg: 30.0,
            max_interval_ms: 60_000,
            item_every_ms: 60_000,
        }
    }
}

/// What became of one offered position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Kept,
    /// Too soon or too close to the last kept one.
    Decimated,
    /// Not a usable position (out of range, not finite, no fix at 0°/0°) or not after the last
    /// kept one in time.
    Invalid,
}

/// One drone's decimation state.
#[derive(Debug, Clone)]
pub struct Decimator {
    drone: String,
    cfg: Decimation,
    last: Option<TrackPoint>,
    stretch: Vec<TrackPoint>,
}

/// Great-circle distance in metres (haversine on a sphere of the WGS 84 mean radius: within
/// 0.5 % of the ellipsoid, plenty for "moved 20 m").
pub fn distance_m(a_lat: f64, a_lon: f64, b_lat: f64, b_lon: f64) -> f64 {
    const R: f64 = 6_371_008.8;
    let (p1, p2) = (a_lat.to_radians(), b_lat.to_radians());
    let dp = p2 - p1;
    let dl = (b_lon - a_lon).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * R * h.sqrt().min(1.0).asin()
}

/// Smallest angle between two headings, degrees 0 ..= 180.
fn turn(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(360.0);
    d.min(360.0 - d)
}

/// A position the wire can carry.
pub fn usable(p: &TrackPoint) -> bool {
    p.lat.is_finite()
        && p.lon.is_finite()
        && p.alt_m.is_finite()
        && (-90.0..=90.0).contains(&p.lat)
        && (-180.0..=180.0).contains(&p.lon)
        && !(p.lat == 0.0 && p.lon == 0.0)
        && p.alt_m.abs() < 100_000.0
}

impl Decimator {
    pub fn new(drone: &str, cfg: Decimation) -> Decimator {
        Decimator {
            drone: drone.to_string(),
            cfg,
            last: None,
            stretch: Vec::new(),
        }
    }

    /// Offers one position (its `ts_ms` is the receive time); returns its fate and, when the
    /// stretch is full, the item to send.
    pub fn offer(&mut self, p: TrackPoint) -> (Fate, Option<Track>, &'static str) {
        if !usable(&p) {
            return (Fate::Invalid, None, "unusable");
        }
        let keep = match &self.last {
            None => true,
            Some(l) if p.ts_ms <= l.ts_ms => return (Fate::Invalid, None, "time went back"),
            Some(l) => {
                let dt = u64::try_from(p.ts_ms - l.ts_ms).unwrap_or(0);
                let flat = distance_m(l.lat, l.lon, p.lat, p.lon);
                let moved = flat.hypot(p.alt_m - l.alt_m);
                let turned = match (l.heading_deg, p.heading_deg) {
                    (Some(a), Some(b)) => turn(a, b),
                    _ => 0.0,
                };
                dt >= self.cfg.max_interval_ms
                    || (dt >= self.cfg.min_interval_ms
                        && (moved >= self.cfg.min_distance_m || turned >= self.cfg.turn_deg))
            }
        };
        if !keep {
            return (Fate::Decimated, None, "");
        }
        self.last = Some(p.clone());
        self.stretch.push(p);
        let full = if self.stretch.len() >= TRACK_MAX_POINTS {
            self.cut()
        } else {
            None
        };
        (Fate::Kept, full, "")
    }

    /// The stretch as an item when its oldest point is `item_every_ms` old at `now_ms`.
    pub fn due(&mut self, now_ms: i64) -> Option<Track> {
        let first = self.stretch.first()?.ts_ms;
        let age = u64::try_from(now_ms.saturating_sub(first)).unwrap_or(0);
        if age >= self.cfg.item_every_ms {
            self.cut()
        } else {
            None
        }
    }

    /// Whatever is gathered, as an item now (link loss, stop).
    pub fn cut(&mut self) -> Option<Track> {
        let points = std::mem::take(&mut self.stretch);
        (!points.is_empty()).then(|| Track {
            drone: self.drone.clone(),
            points,
        })
    }

    /// After a link loss the next position is kept whatever it is: the gap shows on the map.
    pub fn forget_last(&mut self) {
        self.last = None;
    }

    /// Points gathered and not yet cut.
    pub fn pending(&self) -> usize {
        self.stretch.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    pub fn pt(ts_ms: i64, lat: f64, lon: f64) -> TrackPoint {
        TrackPoint {
            ts_ms,
            lat,
            lon,
            alt_m: 50.0,
            rel_alt_m: None,
            heading_deg: None,
            speed_m_s: None,
            battery_pct: None,
        }
    }

    #[test]
    fn distance_of_known_points() {
        // One degree of latitude: 111.2 km on the mean sphere.
        assert!((distance_m(30.0, 120.0, 31.0, 120.0) - 111_195.0).abs() < 10.0);
        // Chengdu Tianfu Square → Chunxi Road: about 1.1 km.
        let d = distance_m(30.6574, 104.0658, 30.6562, 104.0772);
        assert!((1_050.0..1_150.0).contains(&d), "{d}");
        assert_eq!(distance_m(30.0, 104.0, 30.0, 104.0), 0.0);
    }

    #[test]
    fn ten_hz_cruise_keeps_a_point_every_five_seconds() {
        let mut d = Decimator::new("u", Decimation::default());
        let mut kept = 0;
        // 10 m/s north for 60 s at 10 Hz: 1e-5 degrees latitude is 1.11 m.
        for i in 0..600 {
            let (f, _, _) = d.offer(pt(1_000 + i * 100, 30.0 + i as f64 * 0.9e-5, 104.0));
            if f == Fate::Kept {
                kept += 1;
            }
        }
        assert_eq!(kept, 12, "the first, then one every 5 s");
    }

    #[test]
    fn hovering_keeps_one_a_minute_and_a_turn_is_kept() {
        let mut d = Decimator::new("u", Decimation::default());
        let kept: usize = (0..1200)
            .filter(|i| d.offer(pt(i * 100, 30.0, 104.0)).0 == Fate::Kept)
            .count();
        assert_eq!(kept, 2, "t = 0 and t = 60 s");
        let mut d = Decimator::new("u", Decimation::default());
        let mut a = pt(0, 30.0, 104.0);
        a.heading_deg = Some(350.0);
        assert_eq!(d.offer(a).0, Fate::Kept);
        let mut b = pt(6_000, 30.0, 104.0);
        b.heading_deg = Some(30.0);
        assert_eq!(d.offer(b).0, Fate::Kept, "turned 40°");
    }

    #[test]
    fn bad_positions_and_time_going_back_are_invalid() {
        let mut d = Decimator::new("u", Decimation::default());
        assert_eq!(d.offer(pt(0, 0.0, 0.0)).0, Fate::Invalid);
        assert_eq!(d.offer(pt(0, 91.0, 0.0)).0, Fate::Invalid);
        assert_eq!(d.offer(pt(0, f64::NAN, 0.0)).0, Fate::Invalid);
        assert_eq!(d.offer(pt(10, 30.0, 104.0)).0, Fate::Kept);
        assert_eq!(d.offer(pt(10, 31.0, 104.0)).0, Fate::Invalid);
        assert_eq!(d.offer(pt(9, 31.0, 104.0)).0, Fate::Invalid);
    }

    #[test]
    fn a_stretch_is_cut_when_its_oldest_point_is_due() {
        let mut d = Decimator::new("u", Decimation::default());
        d.offer(pt(1_000, 30.0, 104.0));
        assert!(d.due(60_999).is_none());
        let t = d.due(61_000).expect("due");
        assert_eq!((t.drone.as_str(), t.points.len()), ("u", 1));
        assert!(d.due(200_000).is_none(), "nothing gathered");
    }

    proptest! {
        /// Whatever the input: kept points are usable, strictly increasing in time, never closer
        /// in time than `min_interval_ms` (after the first), and no item is over the limit.
        #[test]
        fn kept_points_obey_the_rules(
            steps in proptest::collection::vec((0i64..3_000, -1e-3f64..1e-3, -1e-3f64..1e-3, 0.0f64..360.0), 1..400),
            min_interval_ms in 0u64..10_000,
            min_distance_m in 0.0f64..100.0,
        ) {
            let cfg = Decimation { min_interval_ms, min_distance_m, turn_deg: 30.0, max_interval_ms: 60_000, item_every_ms: 60_000 };
            let mut d = Decimator::new("u", cfg);
            let (mut t, mut lat, mut lon) = (0i64, 30.0f64, 104.0f64);
            let mut out: Vec<TrackPoint> = Vec::new();
            for (dt, dlat, dlon, hdg) in steps {
                t += dt; lat += dlat; lon += dlon;
                let mut p = pt(t, lat, lon);
                p.heading_deg = Some(hdg);
                let (_, full, _) = d.offer(p);
                if let Some(tr) = full { prop_assert!(tr.points.len() <= TRACK_MAX_POINTS); out.extend(tr.points); }
                if let Some(tr) = d.due(t) { out.extend(tr.points); }
            }
            if let Some(tr) = d.cut() { out.extend(tr.points); }
            for w in out.windows(2) {
                prop_assert!(w[1].ts_ms > w[0].ts_ms);
                prop_assert!(u64::try_from(w[1].ts_ms - w[0].ts_ms).unwrap_or(0) >= min_interval_ms.min(60_000));
            }
            prop_assert!(out.iter().all(usable));
        }
    }
}
