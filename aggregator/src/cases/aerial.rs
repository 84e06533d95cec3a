//! Aerial passes (issue 15), pure: when a drone's track passes a site, and which open cases get
//! the pass on their timeline. Casework (`casework/aerial.rs`) reads the points, calls these
//! and saves the outcome.
//!
//! - [`distance_m`]: the geodesic distance on the WGS 84 ellipsoid (Vincenty's inverse
//!   formula, converged to 1e-12 rad: sub-millimetre), falling back to the great-circle
//!   (haversine) distance on the mean sphere for the nearly antipodal pairs where Vincenty does
//!   not converge (that one is within 0.6 % of the ellipsoid's). A drone is *at* a site when
//!   its horizontal distance is at most [`Settings::distance_m`]; its altitude does not count.
//! - [`segment`]: the passes in one drone's track near one site. A pass is the stretch from the
//!   first point within the distance to the last one, as long as the drone never stays away
//!   for longer than [`Settings::gap_ms`] (a drone circling the site stays one pass). Points are
//!   judged by their own times, so a track that arrives late (after an outage, behind newer
//!   points) gives the same passes as one that arrived live.
//!   A pass is *closed* — final, and added to cases — when the track has a point more than
//!   the gap after its last point within the distance, or the aggregator's clock is
//!   [`Settings::close_after_ms`] past that point (the drone landed or its link dropped).
//! - [`places`], [`Place`]: where passes are judged — each gateway's site and each device
//!   placed on its own (a restaurant on a street of them).
//! - [`cases_for`]: the open cases of the pass's place, reported before it ended or shortly
//!   after ([`BEFORE_REPORT_MS`]).
//! - [`photos_near`], [`thin`]: what of the drone's photos and track the pass carries.

use fumegrid_common::wire::TrackPoint;

use super::model::{Case, Coord, Origin};

/// WGS 84: semi-major axis and flattening.
const WGS84_A: f64 = 6_378_137.0;
const WGS84_F: f64 = 1.0 / 298.257_223_563;
/// Mean radius of the WGS 84 ellipsoid (IUGG R1), for the great-circle fallback.
pub const MEAN_RADIUS_M: f64 = 6_371_008.8;

/// Most points a pass's segment keeps on the case timeline (evenly thinned beyond).
pub const MAX_SEGMENT_POINTS: usize = 200;

/// `[drones]` of the aggregator config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Within this horizontal distance of a site (metres) a drone is passing it. Default 150.
    pub distance_m: f64,
    /// Away for longer than this (ms) ends a pass. Default 120 s.
    pub gap_ms: i64,
    /// A pass with no later point is closed this long (ms) after its last point within the
    /// distance, by the aggregator's clock. Default 300 s.
    pub close_after_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            distance_m: 150.0,
            gap_ms: 120_000,
            close_after_ms: 300_000,
        }
    }
}

/// The great-circle distance in metres on the sphere of [`MEAN_RADIUS_M`].
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * MEAN_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// The geodesic distance in metres between two WGS 84 positions (degrees): Vincenty's inverse
/// formula, or [`haversine_m`] where it does not converge (nearly antipodal points).
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    vincenty_m(lat1, lon1, lat2, lon2).unwrap_or_else(|| haversine_m(lat1, lon1, lat2, lon2))
}

/// Vincenty (1975), inverse problem; `None` when the iteration does not converge.
pub fn vincenty_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> Option<f64> {
    let (a, f) = (WGS84_A, WGS84_F);
    let b = a * (1.0 - f);
    let l = (lon2 - lon1).to_radians();
    let u1 = ((1.0 - f) * lat1.to_radians().tan()).atan();
    let u2 = ((1.0 - f) * lat2.to_radians().tan()).atan();
    let (su1, cu1) = u1.sin_cos();
    let (su2, cu2) = u2.sin_cos();
    let mut lambda = l;
    for _ in 0..200 {
        let (sl, cl) = lambda.sin_cos();
        let sin_sigma = ((cu2 * sl).powi(2) + (cu1 * su2 - su1 * cu2 * cl).powi(2)).sqrt();
        if sin_sigma == 0.0 {
            return Some(0.0);
        }
        let cos_sigma = su1 * su2 + cu1 * cu2 * cl;
        let sigma = sin_sigma.atan2(cos_sigma);
        let sin_alpha = cu1 * cu2 * sl / sin_sigma;
        let cos2_alpha = 1.0 - sin_alpha * sin_alpha;
        // On the equator cos²α = 0 and the term vanishes.
        let cos_2sm = if cos2_alpha == 0.0 {
            0.0
        } else {
            cos_sigma - 2.0 * su1 * su2 / cos2_alpha
        };
        let c = f / 16.0 * cos2_alpha * (4.0 + f * (4.0 - 3.0 * cos2_alpha));
        let prev = lambda;
        lambda = l
            + (1.0 - c)
                * f
                * sin_alpha
                * (sigma
                    + c * sin_sigma * (cos_2sm + c * cos_sigma * (-1.0 + 2.0 * cos_2sm * cos_2sm)));
        if (lambda - prev).abs() < 1e-12 {
            let u_sq = cos2_alpha * (a * a - b * b) / (b * b);
            let big_a =
                1.0 + u_sq / 16384.0 * (4096.0 + u_sq * (-768.0 + u_sq * (320.0 - 175.0 * u_sq)));
            let big_b = u_sq / 1024.0 * (256.0 + u_sq * (-128.0 + u_sq * (74.0 - 47.0 * u_sq)));
            let d_sigma = big_b
                * sin_sigma
                * (cos_2sm
                    + big_b / 4.0
                        * (cos_sigma * (-1.0 + 2.0 * cos_2sm * cos_2sm)
                            - big_b / 6.0
                                * cos_2sm
                                * (-3.0 + 4.0 * sin_sigma * sin_sigma)
                                * (-3.0 + 4.0 * cos_2sm * cos_2sm)));
            return Some(b * big_a * (sigma - d_sigma));
        }
        if !lambda.is_finite() {
            return None;
        }
    }
    None
}

/// One pass of a drone near a site, found by [`segment`].
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// First and last point within the distance (drone time).
    pub start_ms: i64,
    pub end_ms: i64,
    /// Closest approach, metres.
    pub min_distance_m: f64,
    /// Index range `first..=last` into the track of the points from the first to the last
    /// within the distance (points away in between included: the segment is continuous).
    pub first: usize,
    pub last: usize,
    /// Final: a later point more than the gap after `end_ms`, or `now` past `close_after`.
    pub closed: bool,
}

/// The passes of `track` (one drone's points, sorted by `ts_ms`) near the site at
/// `(lat, lon)`, oldest first. Pure.
pub fn segment(track: &[TrackPoint], lat: f64, lon: f64, s: &Settings, now_ms: i64) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    let mut open: Option<Span> = None;
    for (i, p) in track.iter().enumerate() {
        if let Some(o) = &mut open
            && p.ts_ms.saturating_sub(o.end_ms) > s.gap_ms
        {
            o.closed = true;
            out.extend(open.take());
        }
        let d = distance_m(lat, lon, p.lat, p.lon);
        if d > s.distance_m {
            continue;
        }
        match &mut open {
            Some(o) => {
                o.end_ms = p.ts_ms;
                o.last = i;
                o.min_distance_m = o.min_distance_m.min(d);
            }
            None => {
                open = Some(Span {
                    start_ms: p.ts_ms,
                    end_ms: p.ts_ms,
                    min_distance_m: d,
                    first: i,
                    last: i,
                    closed: false,
                });
            }
        }
    }
    if let Some(mut o) = open {
        o.closed = now_ms.saturating_sub(o.end_ms) > s.close_after_ms;
        out.push(o);
    }
    out
}

/// How long before a case was reported a pass still belongs to it: an exceedance is raised
/// only after its rolling average (10 minutes by default) stayed above the limit, and a
/// citizen reports smoke seen a while ago; what a drone saw then is what the case is about.
pub const BEFORE_REPORT_MS: i64 = 30 * 60_000;

/// A place on the map where drone passes are judged: a gateway's site (`[[gateways]] lat,
/// lon`) or one device of it placed on its own (`[[gateways.devices]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub gateway: String,
    /// The device, for a device's own place; none for the gateway's site.
    pub device: Option<String>,
    /// Display name: the device's `name`, else its id; the gateway's `site`, else its id.
    pub name: String,
    /// The gateway's `site` name (what cases filed by name for the site carry).
    pub site: Option<String>,
    pub lat: f64,
    pub lon: f64,
    /// For a gateway's site: its devices placed on their own, whose cases go to their own
    /// place rather than the street's.
    pub placed_apart: Vec<String>,
    /// The case, for an open case's own point (a citizen's `lat`/`long`, a patrol find, an
    /// operator's point: [`Case::position`]); none for configured places.
    pub case: Option<String>,
}

impl Place {
    /// The key passes are recorded under: the gateway id, or `gateway/device` (ids never hold
    /// a `/`).
    pub fn key(&self) -> String {
        match (&self.case, &self.device) {
            (Some(c), _) => format!("case/{c}"),
            (None, Some(d)) => format!("{}/{d}", self.gateway),
            (None, None) => self.gateway.clone(),
        }
    }

    /// The place of an open case's own point, if it has one: only that case is judged there.
    pub fn of_case(case: &Case) -> Option<Place> {
        let p = case.position?;
        Some(Place {
            gateway: String::new(),
            device: None,
            name: format!("the point of case {}", case.id),
            site: case.site.clone(),
            lat: p.lat.0,
            lon: p.lon.0,
            placed_apart: Vec::new(),
            case: Some(case.id.clone()),
        })
    }

    /// Whether an alarm of `device` behind `gateway` belongs to this place.
    pub fn holds_device(&self, gateway: &str, device: &str) -> bool {
        self.case.is_none()
            && gateway == self.gateway
            && match &self.device {
                Some(d) => d == device,
                None => !self.placed_apart.iter().any(|p| p == device),
            }
    }

    /// Whether `case` is about this place: a case with its own point only at that point;
    /// else opened by an alarm of a device it holds, or (the gateway's site only) filed for
    /// the site by its name.
    pub fn holds_case(&self, case: &Case) -> bool {
        if let Some(id) = &self.case {
            return *id == case.id;
        }
        if case.position.is_some() {
            return false;
        }
        match &case.origin {
            Origin::Alarm {
                gateway, device, ..
            } => self.holds_device(gateway, device),
            _ => {
                self.device.is_none()
                    && case.site.is_some()
                    && case.site.as_deref() == Some(self.site.as_deref().unwrap_or(&self.gateway))
            }
        }
    }
}

/// The places of the configured sites, sorted by key: each gateway's site with a position,
/// and each of its devices with a position of its own. Pure.
pub fn places(sites: &std::collections::HashMap<String, super::SiteInfo>) -> Vec<Place> {
    let mut out = Vec::new();
    for (gateway, s) in sites {
        let placed_apart: Vec<String> = s
            .devices
            .iter()
            .filter(|(_, d)| d.position.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        if let Some((lat, lon)) = s.position {
            out.push(Place {
                gateway: gateway.clone(),
                device: None,
                name: s.site.clone().unwrap_or_else(|| gateway.clone()),
                site: s.site.clone(),
                lat: lat.0,
                lon: lon.0,
                placed_apart,
                case: None,
            });
        }
        for (id, d) in &s.devices {
            if let Some((lat, lon)) = d.position {
                out.push(Place {
                    gateway: gateway.clone(),
                    device: Some(id.clone()),
                    name: d.name.clone().unwrap_or_else(|| id.clone()),
                    site: s.site.clone(),
                    lat: lat.0,
                    lon: lon.0,
                    placed_apart: Vec::new(),
                    case: None,
                });
            }
        }
    }
    out.sort_by_key(Place::key);
    out
}

/// The open cases at `place` that a pass ending at `end_ms` belongs to: reported before it
/// ended or at most [`BEFORE_REPORT_MS`] after, and about that place ([`Place::holds_case`]).
/// Pure.
pub fn cases_for<'a>(open_cases: &'a [Case], place: &Place, end_ms: i64) -> Vec<&'a Case> {
    open_cases
        .iter()
        .filter(|c| c.state.is_open() && end_ms >= c.reported_ms.saturating_sub(BEFORE_REPORT_MS))
        .filter(|c| place.holds_case(c))
        .collect()
}

/// The points of `seg` thinned evenly to at most `max` (first and last always kept).
pub fn thin(seg: &[TrackPoint], max: usize) -> Vec<&TrackPoint> {
    if seg.len() <= max || max < 2 {
        return seg.iter().take(max.max(seg.len().min(1))).collect();
    }
    let step = (seg.len() - 1) as f64 / (max - 1) as f64;
    (0..max)
        .map(|i| &seg[((i as f64 * step).round() as usize).min(seg.len() - 1)])
        .collect()
}

/// Whether a photo at `(ts_ms, lat, lon)` belongs to a pass `[start_ms, end_ms]` near the site
/// at `(site_lat, site_lon)`: taken within the gap of the pass and within the distance.
#[allow(clippy::too_many_arguments)] // Two positions, a time and a window: named is clearer.
pub fn photo_near(
    ts_ms: i64,
    lat: f64,
    lon: f64,
    span: &Span,
    site_lat: f64,
    site_lon: f64,
    s: &Settings,
) -> bool {
    ts_ms >= span.start_ms.saturating_sub(s.gap_ms)
        && ts_ms <= span.end_ms.saturating_add(s.gap_ms)
        && distance_m(site_lat, site_lon, lat, lon) <= s.distance_m
}

/// A coordinate for a case event.
pub fn coord(v: f64) -> Coord {
    Coord(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(ts_ms: i64, lat: f64, lon: f64) -> TrackPoint {
        TrackPoint {
            ts_ms,
            lat,
            lon,
            alt_m: 80.0,
            rel_alt_m: None,
            heading_deg: None,
            speed_m_s: None,
            battery_pct: None,
        }
    }

    /// Reference geodesic distances on WGS 84 (closed forms and published values, to the
    /// millimetre), and Vincenty's own test line (Flinders Peak – Buninyong, on GRS 80, which
    /// differs from WGS 84 by far less than the millimetre asserted here).
    const KNOWN: [(f64, f64, f64, f64, f64); 4] = [
        // One degree of longitude on the equator: a·π/180.
        (0.0, 0.0, 0.0, 1.0, 111_319.491),
        // One degree of latitude from the equator.
        (0.0, 0.0, 1.0, 0.0, 110_574.389),
        // A quarter meridian.
        (0.0, 0.0, 90.0, 0.0, 10_001_965.729),
        // Flinders Peak → Buninyong.
        (
            -(37.0 + 57.0 / 60.0 + 3.72030 / 3600.0),
            144.0 + 25.0 / 60.0 + 29.52440 / 3600.0,
            -(37.0 + 39.0 / 60.0 + 10.15610 / 3600.0),
            143.0 + 55.0 / 60.0 + 35.38390 / 3600.0,
            54_972.271,
        ),
    ];

    #[test]
    fn vincenty_matches_known_geodesics_to_the_centimetre() {
        for (a, b, c, d, want) in KNOWN {
            let got = distance_m(a, b, c, d);
            assert!(
                (got - want).abs() < 0.01,
                "({a},{b})→({c},{d}): {got} m, want {want} m"
            );
            // The reverse direction is the same distance.
            assert!((distance_m(c, d, a, b) - want).abs() < 0.01);
        }
    }

    /// splitmix64, as the crate's other property tests (no proptest dependency needed).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.unit()
        }
    }

    /// Property: over random pairs anywhere, the distance is symmetric, zero only for the same
    /// point, agrees with the great circle within 0.6 % (the ellipsoid's flattening bounds the
    /// difference), and obeys the triangle inequality; over random pairs within a city (the
    /// judgment's case) it also agrees with a local flat-earth distance on the ellipsoid's radii
    /// of curvature within 0.1 % + 1 cm.
    #[test]
    fn the_geodesic_distance_behaves_like_one() {
        let mut rng = Rng(0xF00D);
        for _ in 0..20_000 {
            let (a, b) = (rng.range(-89.0, 89.0), rng.range(-180.0, 180.0));
            let (c, d) = (rng.range(-89.0, 89.0), rng.range(-180.0, 180.0));
            let (e, f) = (rng.range(-89.0, 89.0), rng.range(-180.0, 180.0));
            let ab = distance_m(a, b, c, d);
            assert!((ab - distance_m(c, d, a, b)).abs() < 1e-3, "symmetric");
            assert!(ab > 0.0);
            assert_eq!(distance_m(a, b, a, b), 0.0);
            let gc = haversine_m(a, b, c, d);
            assert!(
                (ab - gc).abs() <= 0.006 * gc + 1e-3,
                "({a},{b})→({c},{d}): {ab} vs great circle {gc}"
            );
            let tri = distance_m(a, b, e, f) + distance_m(e, f, c, d);
            assert!(ab <= tri + 1e-3, "triangle");
        }
        for _ in 0..20_000 {
            let (lat, lon) = (rng.range(-70.0, 70.0), rng.range(-179.0, 179.0));
            let (dlat, dlon) = (rng.range(-0.01, 0.01), rng.range(-0.01, 0.01));
            let (lat2, lon2) = (lat + dlat, lon + dlon);
            let phi = ((lat + lat2) / 2.0).to_radians();
            let e2 = WGS84_F * (2.0 - WGS84_F);
            let w = (1.0 - e2 * phi.sin().powi(2)).sqrt();
            let m = WGS84_A * (1.0 - e2) / w.powi(3);
            let n = WGS84_A / w;
            let flat = ((m * dlat.to_radians()).powi(2)
                + (n * phi.cos() * dlon.to_radians()).powi(2))
            .sqrt();
            let got = distance_m(lat, lon, lat2, lon2);
            assert!(
                (got - flat).abs() <= 0.001 * flat + 0.01,
                "({lat},{lon})→({lat2},{lon2}): {got} vs flat {flat}"
            );
        }
    }

    const SITE: (f64, f64) = (39.9, 116.4);
    /// Degrees of latitude per metre here.
    const DEG_PER_M: f64 = 1.0 / 111_000.0;

    /// A point `north_m` metres north of the site at second `t`.
    fn at(t: i64, north_m: f64) -> TrackPoint {
        pt(t * 1000, SITE.0 + north_m * DEG_PER_M, SITE.1)
    }

    fn spans(track: &[TrackPoint], now_s: i64) -> Vec<(i64, i64, bool)> {
        segment(track, SITE.0, SITE.1, &Settings::default(), now_s * 1000)
            .into_iter()
            .map(|s| (s.start_ms / 1000, s.end_ms / 1000, s.closed))
            .collect()
    }

    #[test]
    fn a_straight_pass_is_one_span() {
        // From 1 km south to 2 km north at 10 m/s, a point a second.
        let track: Vec<_> = (0..=300)
            .map(|t| at(t, -1000.0 + 10.0 * t as f64))
            .collect();
        let s = segment(&track, SITE.0, SITE.1, &Settings::default(), 300_000);
        assert_eq!(s.len(), 1);
        // Nominal ±150 m (t = 85, 115) is 150.05 m on the ellipsoid (a degree of latitude is
        // 111 034 m here, not the 111 000 m the test steps by): in from t = 86 to 114.
        assert_eq!((s[0].start_ms, s[0].end_ms), (86_000, 114_000));
        assert!(s[0].min_distance_m < 1.0);
        assert_eq!((s[0].first, s[0].last), (86, 114));
        // A later point more than the gap (120 s) after it: closed; without it, open.
        assert!(s[0].closed);
        let s = segment(
            &track[..=234],
            SITE.0,
            SITE.1,
            &Settings::default(),
            234_000,
        );
        assert!(!s[0].closed);
    }

    #[test]
    fn circling_stays_one_pass_until_away_longer_than_the_gap() {
        // In, out for 100 s (under the 120 s gap), in again: one pass.
        let mut track = vec![at(0, 50.0), at(10, 400.0), at(110, 400.0), at(111, 20.0)];
        assert_eq!(spans(&track, 112), vec![(0, 111, false)]);
        // Away for 121 s: a second pass; the first is closed by the later point.
        track.push(at(200, 500.0));
        track.push(at(232, 10.0));
        assert_eq!(spans(&track, 233), vec![(0, 111, true), (232, 232, false)]);
    }

    #[test]
    fn an_open_pass_closes_by_the_clock_after_close_after() {
        let track = vec![at(0, 500.0), at(10, 0.0), at(20, 0.0)];
        assert_eq!(spans(&track, 320), vec![(10, 20, false)]);
        assert_eq!(spans(&track, 321), vec![(10, 20, true)]);
    }

    #[test]
    fn a_far_track_has_no_pass_and_the_edge_is_in() {
        let far: Vec<_> = (0..100).map(|t| at(t, 151.0 + t as f64)).collect();
        assert!(spans(&far, 1000).is_empty());
        // 149 m east at this latitude.
        let east = 149.0 / (111_320.0 * SITE.0.to_radians().cos());
        let edge = vec![pt(0, SITE.0, SITE.1 + east)];
        assert_eq!(spans(&edge, 1000).len(), 1);
    }

    #[test]
    fn late_points_give_the_same_passes_as_live_ones() {
        // The same flight, judged from its points in time order, whichever arrived first.
        let flight: Vec<_> = (0..=300)
            .map(|t| at(t, -1500.0 + 10.0 * t as f64))
            .collect();
        let whole = spans(&flight, 10_000);
        let mut live_then_backlog = flight[150..].to_vec();
        live_then_backlog.extend_from_slice(&flight[..150]);
        live_then_backlog.sort_by_key(|p| p.ts_ms);
        assert_eq!(spans(&live_then_backlog, 10_000), whole);
        assert_eq!(whole.len(), 1);
    }

    #[test]
    fn a_pass_belongs_to_the_open_cases_of_its_site_reported_up_to_half_an_hour_after_it() {
        use crate::cases::model::{Intake, open};
        use crate::cases::{Actor, Catalogue};
        use fumegrid_common::wire::AlarmKind;
        let cat = Catalogue::builtin().expect("catalogue");
        let t = 1_762_135_200_000;
        let file = |id: &str, origin: Origin, site: Option<&str>| {
            let intake = Intake {
                category: "exceedance".into(),
                title: "smoke".into(),
                origin,
                site: site.map(str::to_string),
                grid_cell: None,
            };
            open(id, intake, &Actor::system(), "", t, &cat)
                .expect("open")
                .0
        };
        let alarm = |gw: &str| Origin::Alarm {
            gateway: gw.into(),
            device: "d".into(),
            kind: AlarmKind::Exceedance,
        };
        let mut closed = file("C4", alarm("gw-1"), None);
        closed.state = crate::cases::State::Closed;
        let cases = vec![
            file("C1", alarm("gw-1"), None),
            file("C2", alarm("gw-2"), None),
            file("C3", Origin::Citizen, Some("food street")),
            closed,
            file("C5", Origin::Citizen, Some("elsewhere")),
        ];
        let street = Place {
            gateway: "gw-1".into(),
            device: None,
            name: "food street".into(),
            site: Some("food street".into()),
            lat: 0.0,
            lon: 0.0,
            placed_apart: Vec::new(),
            case: None,
        };
        let ids = |place: &Place, end: i64| -> Vec<&str> {
            cases_for(&cases, place, end)
                .into_iter()
                .map(|c| c.id.as_str())
                .collect()
        };
        assert_eq!(ids(&street, t + 1), vec!["C1", "C3"]);
        assert_eq!(ids(&street, t - BEFORE_REPORT_MS), vec!["C1", "C3"]);
        assert!(ids(&street, t - BEFORE_REPORT_MS - 1).is_empty());
        // Device `d` placed on its own: its alarm case goes to its place, not the street's;
        // the citizen's report filed for the street by name stays with the street.
        let apart = Place {
            placed_apart: vec!["d".into()],
            ..street.clone()
        };
        let own = Place {
            device: Some("d".into()),
            name: "grill".into(),
            ..street.clone()
        };
        assert_eq!(ids(&apart, t + 1), vec!["C3"]);
        assert_eq!(ids(&own, t + 1), vec!["C1"]);
        let other = Place {
            device: Some("e".into()),
            ..own.clone()
        };
        assert!(ids(&other, t + 1).is_empty());
        assert_eq!(own.key(), "gw-1/d");
        assert_eq!(street.key(), "gw-1");
    }

    #[test]
    fn places_are_each_positioned_site_and_device() {
        use crate::cases::{DevicePlace, SiteInfo};
        let pos = |a: f64, b: f64| Some((Coord(a), Coord(b)));
        let mut devices = std::collections::BTreeMap::new();
        devices.insert(
            "grill".to_string(),
            DevicePlace {
                name: Some("Wang's BBQ".into()),
                position: pos(30.1, 104.1),
            },
        );
        devices.insert(
            "noodles".to_string(),
            DevicePlace {
                name: Some("Noodles".into()),
                position: None,
            },
        );
        let sites: std::collections::HashMap<String, SiteInfo> = [
            (
                "gw-1".to_string(),
                SiteInfo {
                    site: Some("food street".into()),
                    grid_cell: None,
                    position: pos(30.0, 104.0),
                    devices: devices.clone(),
                },
            ),
            (
                "gw-2".to_string(),
                SiteInfo {
                    site: None,
                    grid_cell: None,
                    position: None,
                    devices,
                },
            ),
            ("gw-3".to_string(), SiteInfo::default()),
        ]
        .into_iter()
        .collect();
        let p = places(&sites);
        let keys: Vec<String> = p.iter().map(Place::key).collect();
        assert_eq!(keys, vec!["gw-1", "gw-1/grill", "gw-2/grill"]);
        assert_eq!(p[0].placed_apart, vec!["grill".to_string()]);
        assert_eq!(p[0].name, "food street");
        assert_eq!(p[1].name, "Wang's BBQ");
        assert_eq!((p[1].lat, p[1].lon), (30.1, 104.1));
        // A device without a position stays with its gateway's site.
        assert!(p[0].holds_device("gw-1", "noodles"));
        assert!(!p[0].holds_device("gw-1", "grill"));
        assert!(!p[0].holds_device("gw-2", "noodles"));
    }

    #[test]
    fn thinning_keeps_both_ends() {
        let track: Vec<_> = (0..1000).map(|t| at(t, 0.0)).collect();
        let t = thin(&track, MAX_SEGMENT_POINTS);
        assert_eq!(t.len(), MAX_SEGMENT_POINTS);
        assert_eq!(t[0].ts_ms, 0);
        assert_eq!(t[MAX_SEGMENT_POINTS - 1].ts_ms, 999_000);
        assert_eq!(thin(&track[..3], MAX_SEGMENT_POINTS).len(), 3);
    }
}
