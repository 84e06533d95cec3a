//! A simulated patrol drone (pure): a route of waypoints flown in a loop at constant speed and
//! height, and the MAVLink 2 messages a PX4 autopilot would send about it: HEARTBEAT and
//! SYS_STATUS/BATTERY_STATUS at 1 Hz, GLOBAL_POSITION_INT at 10 Hz, CAMERA_IMAGE_CAPTURED when
//! it passes over a site. `cmd::drone` sends them over UDP.
//!
//! The default route ([`DEMO_PATROL`], `firmware-sim/demo-patrol.toml`) flies over the demo's
//! five sites on one street of Jinjiang District, Chengdu; the same file gives the sites'
//! coordinates to whoever needs them (docs/drones.md).

use mavlink::dialects::common::{
    BATTERY_STATUS_DATA, CAMERA_IMAGE_CAPTURED_DATA, GLOBAL_POSITION_INT_DATA, HEARTBEAT_DATA,
    MavAutopilot, MavBool, MavMessage, MavState, MavType, SYS_STATUS_DATA,
};
use serde::Deserialize;

/// The demo's patrol route and sites.
pub const DEMO_PATROL: &str = include_str!("../demo-patrol.toml");

/// A point on the ground (WGS 84 degrees).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// A site a drone photographs when it passes over.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// The device installed there (a `[[devices]] id` of the demo gateway).
    pub device: String,
    pub lat: f64,
    pub lon: f64,
}

/// A route file (see `demo-patrol.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Take-off point; `home_alt_m` is its height above mean sea level.
    pub home: LatLon,
    pub home_alt_m: f64,
    /// Flight height above home, metres.
    pub height_m: f64,
    /// Ground speed, m/s.
    pub speed_m_s: f64,
    /// A photo is taken when the drone comes this close to a site (horizontally).
    pub photo_radius_m: f64,
    /// Flown in order, then back to the first, again and again.
    pub waypoints: Vec<LatLon>,
    #[serde(default)]
    pub sites: Vec<Site>,
}

impl Route {
    pub fn parse(text: &str) -> Result<Route, String> {
        let r: Route = toml::from_str(text).map_err(|e| e.to_string())?;
        if r.waypoints.len() < 2 {
            return Err("a route needs at least 2 waypoints".into());
        }
        if !(r.speed_m_s.is_finite() && r.speed_m_s > 0.0 && r.speed_m_s <= 50.0) {
            return Err("speed_m_s must be in (0, 50]".into());
        }
        let all = r
            .waypoints
            .iter()
            .copied()
            .chain([r.home])
            .chain(r.sites.iter().map(|s| LatLon {
                lat: s.lat,
                lon: s.lon,
            }));
        for p in all {
            if !((-90.0..=90.0).contains(&p.lat) && (-180.0..=180.0).contains(&p.lon)) {
                return Err(format!("{}, {} is not a WGS 84 position", p.lat, p.lon));
            }
        }
        Ok(r)
    }

    /// Length of one loop, metres.
    pub fn loop_m(&self) -> f64 {
        let w = &self.waypoints;
        (0..w.len())
            .map(|i| distance_m(w[i], w[(i + 1) % w.len()]))
            .sum()
    }

    /// Where the drone is after `flown_m` metres along the loop, and its heading (degrees).
    pub fn at(&self, flown_m: f64) -> (LatLon, f64) {
        let w = &self.waypoints;
        let total = self.loop_m().max(1e-9);
        let mut d = flown_m.rem_euclid(total);
        for i in 0..w.len() {
            let (a, b) = (w[i], w[(i + 1) % w.len()]);
            let leg = distance_m(a, b);
            if d <= leg || i == w.len() - 1 {
                let f = if leg > 0.0 { (d / leg).min(1.0) } else { 0.0 };
                let p = LatLon {
                    lat: a.lat + (b.lat - a.lat) * f,
                    lon: a.lon + (b.lon - a.lon) * f,
                };
                return (p, bearing_deg(a, b));
            }
            d -= leg;
        }
        (w[0], 0.0)
    }
}

/// Haversine distance, metres (mean Earth radius).
pub fn distance_m(a: LatLon, b: LatLon) -> f64 {
    const R: f64 = 6_371_008.8;
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let h = ((p2 - p1) / 2.0).sin().powi(2)
        + p1.cos() * p2.cos() * ((b.lon - a.lon).to_radians() / 2.0).sin().powi(2);
    2.0 * R * h.sqrt().min(1.0).asin()
}

/// Initial bearing from `a` to `b`, degrees 0 ..< 360.
pub fn bearing_deg(a: LatLon, b: LatLon) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dl = (b.lon - a.lon).to_radians();
    let y = dl.sin() * p2.cos();
    let x = p1.cos() * p2.sin() - p1.sin() * p2.cos() * dl.cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

/// One simulated drone: its place on the route and what it has photographed.
#[derive(Debug, Clone)]
pub struct Drone {
    pub route: Route,
    /// Metres along the loop at t = 0 (drones of one fleet start apart).
    pub offset_m: f64,
    /// Sites within the photo radius at the last step (a pass photographs each site once).
    inside: Vec<bool>,
    pub photos: i32,
    /// Where its photos are, as `file_url` names them: `{files}/IMG_0001.JPG`. Default
    /// `/DCIM/100MEDIA` (a path on the drone's card); `drone --photos` makes it an `http://`
    /// URL the simulator serves.
    pub files: String,
}

impl Drone {
    pub fn new(route: Route, offset_m: f64) -> Drone {
        let inside = vec![false; route.sites.len()];
        Drone {
            route,
            offset_m,
            inside,
            photos: 0,
            files: "/DCIM/100MEDIA".into(),
        }
    }

    /// GLOBAL_POSITION_INT at `t_s` seconds of flight, and the photos taken since the last call
    /// (`utc_us`: the drone's clock, for `time_utc`).
    pub fn step(&mut self, t_s: f64, utc_us: u64) -> (MavMessage, Vec<MavMessage>) {
        let r = &self.route;
        let (p, hdg) = r.at(self.offset_m + t_s * r.speed_m_s);
        let boot_ms = (t_s * 1000.0) as u32;
        let alt_mm = ((r.home_alt_m + r.height_m) * 1000.0) as i32;
        let rel_mm = (r.height_m * 1000.0) as i32;
        let (vx, vy) = (
            r.speed_m_s * hdg.to_radians().cos() * 100.0,
            r.speed_m_s * hdg.to_radians().sin() * 100.0,
        );
        let pos = MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
            time_boot_ms: boot_ms,
            lat: (p.lat * 1e7).round() as i32,
            lon: (p.lon * 1e7).round() as i32,
            alt: alt_mm,
            relative_alt: rel_mm,
            vx: vx.round() as i16,
            vy: vy.round() as i16,
            vz: 0,
            hdg: (hdg * 100.0).round() as u16 % 36_000,
        });
        let mut shots = Vec::new();
        for (i, s) in r.sites.iter().enumerate() {
            let near = distance_m(
                p,
                LatLon {
                    lat: s.lat,
                    lon: s.lon,
                },
            ) <= r.photo_radius_m;
            if near && !self.inside[i] {
                self.photos += 1;
                let mut url = [0u8; 205];
                let name = format!("{}/IMG_{:04}.JPG", self.files, self.photos);
                let n = name.len().min(url.len());
                url[..n].copy_from_slice(&name.as_bytes()[..n]);
                shots.push(MavMessage::CAMERA_IMAGE_CAPTURED(
                    CAMERA_IMAGE_CAPTURED_DATA {
                        time_boot_ms: boot_ms,
                        time_utc: utc_us,
                        camera_id: 1,
                        lat: (p.lat * 1e7).round() as i32,
                        lon: (p.lon * 1e7).round() as i32,
                        alt: alt_mm,
                        relative_alt: rel_mm,
                        q: [1.0, 0.0, 0.0, 0.0],
                        image_index: self.photos,
                        capture_result: MavBool::MAV_BOOL_TRUE,
                        file_url: url.into(),
                    },
                ));
            }
            self.inside[i] = near;
        }
        (pos, shots)
    }

    /// Battery remaining at `t_s`: 100 % at take-off, 1 % less every 30 s, never under 5 %.
    pub fn battery_pct(t_s: f64) -> i8 {
        (100.0 - t_s / 30.0).clamp(5.0, 100.0) as i8
    }

    /// The 1 Hz messages: HEARTBEAT (a PX4 quadrotor, active), SYS_STATUS and BATTERY_STATUS.
    pub fn slow(t_s: f64) -> Vec<MavMessage> {
        let pct = Self::battery_pct(t_s);
        vec![
            MavMessage::HEARTBEAT(HEARTBEAT_DATA {
                mavtype: MavType::MAV_TYPE_QUADROTOR,
                autopilot: MavAutopilot::MAV_AUTOPILOT_PX4,
                system_status: MavState::MAV_STATE_ACTIVE,
                mavlink_version: 3,
                ..Default::default()
            }),
            MavMessage::SYS_STATUS(SYS_STATUS_DATA {
                voltage_battery: 15_200,
                current_battery: 1_200,
                battery_remaining: pct,
                ..Default::default()
            }),
            MavMessage::BATTERY_STATUS(BATTERY_STATUS_DATA {
                battery_remaining: pct,
                ..Default::default()
            }),
        ]
    }
}

/// The JPEG of a simulated photo: a street seen from above, and a caption naming the drone,
/// the photo and where it was taken (so that every photo's bytes differ).
pub fn photo_jpeg(system_id: u8, index: i32, lat: f64, lon: f64, w: u32, h: u32) -> Vec<u8> {
    use fumegrid_picture::Rgb;
    let mut img = Rgb::filled(w, h, [96, 120, 80]);
    // The street, roofs along it, and the site below the drone (a grill's smoke).
    img.fill_rect(0, h * 2 / 5, w, h * 3 / 5, [70, 70, 75]);
    for i in 0..6 {
        let x = w * i / 6 + w / 40;
        img.fill_rect(x, h / 5, x + w / 8, h * 2 / 5 - 4, [150, 90, 70]);
        img.fill_rect(x, h * 3 / 5 + 4, x + w / 8, h * 4 / 5, [140, 140, 150]);
    }
    img.fill_rect(w * 2 / 5, h / 4, w * 3 / 5, h * 3 / 4, [170, 170, 165]);
    let s = fumegrid_picture::caption::scale_for(w);
    let lines = [
        format!("UAV {system_id} IMG_{index:04}"),
        format!("{lat:.6} {lon:.6}"),
    ];
    for (i, l) in lines.iter().enumerate() {
        fumegrid_picture::caption::draw_text(
            &mut img,
            2 * s,
            2 * s + 10 * s * i as u32,
            s,
            l,
            [255, 255, 255],
        );
    }
    fumegrid_picture::encode_jpeg(&img, 85)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_route_loops_over_every_site_and_photographs_each_once_per_loop() {
        let r = Route::parse(DEMO_PATROL).expect("demo route");
        assert_eq!(r.sites.len(), 5);
        let loop_s = r.loop_m() / r.speed_m_s;
        // Starting on the way back (leg 3), so that no pass is split by the loop's end.
        let mut d = Drone::new(r, 500.0);
        let mut shots = 0;
        let steps = (loop_s * 10.0).ceil() as usize;
        for i in 0..steps {
            shots += d.step(i as f64 / 10.0, 0).1.len();
        }
        assert_eq!(shots, 5, "one photo per site per loop");
    }

    #[test]
    fn photos_are_named_under_their_files_and_differ() {
        let r = Route::parse(DEMO_PATROL).expect("demo route");
        let mut d = Drone::new(r, 0.0);
        d.files = "http://127.0.0.1:8080/DCIM/1".into();
        let shot = (0..2000)
            .find_map(|i| d.step(f64::from(i) / 10.0, 0).1.pop())
            .expect("a photo");
        let MavMessage::CAMERA_IMAGE_CAPTURED(c) = shot else {
            panic!("{shot:?}")
        };
        assert_eq!(
            c.file_url.to_str().expect("utf-8").trim_end_matches('\0'),
            "http://127.0.0.1:8080/DCIM/1/IMG_0001.JPG"
        );
        let a = photo_jpeg(1, 1, 30.6552, 104.0801, 320, 240);
        let b = photo_jpeg(1, 2, 30.6552, 104.0801, 320, 240);
        assert_eq!(&a[..2], &[0xFF, 0xD8], "a JPEG");
        assert_ne!(a, b);
    }

    #[test]
    fn positions_follow_the_route_at_its_speed() {
        let r = Route::parse(DEMO_PATROL).expect("demo route");
        let (a, _) = r.at(0.0);
        let (b, _) = r.at(100.0);
        assert!((distance_m(a, b) - 100.0).abs() < 1.0);
        let w = r.waypoints.clone();
        let (p, hdg) = r.at(1.0);
        assert!((hdg - bearing_deg(w[0], w[1])).abs() < 1e-9);
        assert!(distance_m(p, w[0]) < 1.1);
    }
}
