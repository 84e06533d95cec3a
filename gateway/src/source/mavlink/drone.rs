//! One drone's state (pure): MAVLink messages and the passing of time in, items for the outbox
//! out. No sockets, no clock: every call is handed `now_ms` (wall time, for the items) and `now`
//! (monotonic, for the link judgment).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fumegrid_common::wire::{Body, DronePhoto, Event, EventKind, TrackPoint};
use mavlink::dialects::common::MavMessage;

use super::track::{Decimation, Decimator, Fate};

/// One configured drone, as the source needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct DroneCfg {
    pub id: String,
    /// The MAVLink system id whose traffic is this drone's.
    pub system_id: u8,
    pub decimation: Decimation,
    /// How often the drone sends HEARTBEAT (MAVLink's default is 1 Hz).
    pub heartbeat_interval_ms: u64,
    /// The link is lost when this many heartbeats in a row did not come.
    pub missed_heartbeats: u32,
}

/// A change of the link's state, judged from heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Silent for `silent` (more than the allowed missed heartbeats).
    Lost { silent: Duration },
    /// A heartbeat came back after `silent` without one.
    Restored { silent: Duration },
}

/// The link judgment (pure): lost when no heartbeat came for more than `missed ×
/// interval`; restored by the next heartbeat. Before the first heartbeat there is no link to
/// lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub limit: Duration,
    last: Option<Instant>,
    lost: bool,
}

impl Link {
    pub fn new(interval: Duration, missed: u32) -> Link {
        Link {
            limit: interval.saturating_mul(missed),
            last: None,
            lost: false,
        }
    }

    pub fn heartbeat(&mut self, now: Instant) -> Option<Change> {
        let back = match (self.lost, self.last) {
            (true, Some(last)) => Some(Change::Restored {
                silent: now.saturating_duration_since(last),
            }),
            _ => None,
        };
        self.last = Some(now);
        self.lost = false;
        back
    }

    pub fn check(&mut self, now: Instant) -> Option<Change> {
        let last = self.last?;
        let silent = now.saturating_duration_since(last);
        if !self.lost && silent > self.limit {
            self.lost = true;
            return Some(Change::Lost { silent });
        }
        None
    }

    /// Up: a heartbeat came and the link is not judged lost.
    pub fn up(&self) -> bool {
        self.last.is_some() && !self.lost
    }
}

/// What one message was, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Heartbeat,
    Position(Fate),
    Battery,
    /// A photo; `false` when its image index was already reported (a resend).
    Photo(bool),
    /// A message of the dialect this source does not use.
    Other,
}

impl Seen {
    pub fn name(self) -> &'static str {
        match self {
            Seen::Heartbeat => "heartbeat",
            Seen::Position(_) => "position",
            Seen::Battery => "battery",
            Seen::Photo(_) => "photo",
            Seen::Other => "other",
        }
    }
}

/// How many photo indices are remembered to drop resent `CAMERA_IMAGE_CAPTURED`s.
const PHOTOS_REMEMBERED: usize = 64;
/// Longest `file_url` kept (MAVLink's field holds 205 bytes).
const FILE_MAX_CHARS: usize = 205;
/// 2000-01-01 in ms: a `time_utc` before this is a clock that was never set.
const Y2000_MS: i64 = 946_684_800_000;

/// One drone (see the module doc).
#[derive(Debug, Clone)]
pub struct Drone {
    cfg: DroneCfg,
    track: Decimator,
    link: Link,
    battery: Option<u8>,
    photos: VecDeque<i32>,
}

impl Drone {
    pub fn new(cfg: DroneCfg) -> Drone {
        Drone {
            track: Decimator::new(&cfg.id, cfg.decimation),
            link: Link::new(
                Duration::from_millis(cfg.heartbeat_interval_ms),
                cfg.missed_heartbeats,
            ),
            battery: None,
            photos: VecDeque::new(),
            cfg,
        }
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    pub fn system_id(&self) -> u8 {
        self.cfg.system_id
    }

    pub fn link_up(&self) -> bool {
        self.link.up()
    }

    /// One message of this drone's system, received at `now_ms` / `now`.
    pub fn on_message(&mut self, msg: &MavMessage, now_ms: i64, now: Instant) -> (Seen, Vec<Body>) {
        let mut out = Vec::new();
        let seen = match msg {
            MavMessage::HEARTBEAT(_) => {
                if let Some(c) = self.link.heartbeat(now) {
                    out.push(self.event(c, now_ms));
                }
                Seen::Heartbeat
            }
            MavMessage::GLOBAL_POSITION_INT(p) => {
                let point = TrackPoint {
                    ts_ms: now_ms,
                    lat: f64::from(p.lat) / 1e7,
                    lon: f64::from(p.lon) / 1e7,
                    alt_m: f64::from(p.alt) / 1000.0,
                    rel_alt_m: Some(f64::from(p.relative_alt) / 1000.0),
                    // UINT16_MAX: unknown.
                    heading_deg: (p.hdg != u16::MAX).then(|| f64::from(p.hdg % 36_000) / 100.0),
                    speed_m_s: Some(
                        (f64::from(p.vx).hypot(f64::from(p.vy)) / 100.0 * 100.0).round() / 100.0,
                    ),
                    battery_pct: self.battery,
                };
                let (fate, full, _) = self.track.offer(point);
                out.extend(full.map(Body::Track));
                Seen::Position(fate)
            }
            MavMessage::SYS_STATUS(s) => {
                self.set_battery(i16::from(s.battery_remaining));
                Seen::Battery
            }
            MavMessage::BATTERY_STATUS(b) => {
                self.set_battery(i16::from(b.battery_remaining));
                Seen::Battery
            }
            MavMessage::CAMERA_IMAGE_CAPTURED(c) => {
                if self.photos.contains(&c.image_index) {
                    Seen::Photo(false)
                } else {
                    if self.photos.len() == PHOTOS_REMEMBERED {
                        self.photos.pop_front();
                    }
                    self.photos.push_back(c.image_index);
                    let utc_ms = i64::try_from(c.time_utc / 1000).unwrap_or(0);
                    // A drone clock that was never set, or that is more than a day ahead.
                    let ts_ms = if (Y2000_MS..=now_ms.saturating_add(86_400_000)).contains(&utc_ms)
                    {
                        utc_ms
                    } else {
                        now_ms
                    };
                    let file = c.file_url.to_str().ok().map(|s| {
                        fumegrid_common::text::clip(s.trim(), FILE_MAX_CHARS)
                            .chars()
                            .filter(|ch| !ch.is_control())
                            .collect::<String>()
                    });
                    out.push(Body::DronePhoto(DronePhoto {
                        drone: self.cfg.id.clone(),
                        ts_ms,
                        lat: f64::from(c.lat) / 1e7,
                        lon: f64::from(c.lon) / 1e7,
                        alt_m: f64::from(c.alt) / 1000.0,
                        index: c.image_index,
                        file: file.filter(|f| !f.is_empty()),
                        // MAVLink: 1 success, 0 failure, -1 unknown.
                        ok: c.capture_result.bits() == 1,
                        sha256: None,
                    }));
                    Seen::Photo(true)
                }
            }
            _ => Seen::Other,
        };
        (seen, out)
    }

    /// The passing of time: a link loss, a stretch that is due.
    pub fn tick(&mut self, now_ms: i64, now: Instant) -> Vec<Body> {
        let mut out = Vec::new();
        if let Some(c) = self.link.check(now) {
            // The stretch up to the loss goes first; the next position starts a new one.
            out.extend(self.track.cut().map(Body::Track));
            self.track.forget_last();
            out.push(self.event(c, now_ms));
        }
        out.extend(self.track.due(now_ms).map(Body::Track));
        out
    }

    /// At the stop: whatever is gathered.
    pub fn stop(&mut self) -> Vec<Body> {
        self.track.cut().map(Body::Track).into_iter().collect()
    }

    fn set_battery(&mut self, remaining: i16) {
        // -1: unknown.
        self.battery = u8::try_from(remaining).ok().filter(|p| *p <= 100);
    }

    fn event(&self, c: Change, now_ms: i64) -> Body {
        let (kind, message) = match c {
            Change::Lost { silent } => (
                EventKind::DroneLinkLost,
                format!(
                    "{}: no heartbeat for {:.1} s ({} missed at {} ms)",
                    self.cfg.id,
                    silent.as_secs_f64(),
                    self.cfg.missed_heartbeats,
                    self.cfg.heartbeat_interval_ms
                ),
            ),
            Change::Restored { silent } => (
                EventKind::DroneLinkRestored,
                format!(
                    "{}: heartbeat back after {:.1} s without",
                    self.cfg.id,
                    silent.as_secs_f64()
                ),
            ),
        };
        Body::Event(Event {
            ts_ms: now_ms,
            kind,
            message,
            dropped: None,
            from_ms: None,
            to_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use mavlink::dialects::common::{
        CAMERA_IMAGE_CAPTURED_DATA, GLOBAL_POSITION_INT_DATA, HEARTBEAT_DATA, SYS_STATUS_DATA,
    };
    use proptest::prelude::*;

    use super::*;

    fn cfg() -> DroneCfg {
        DroneCfg {
            id: "uav-1".into(),
            system_id: 1,
            decimation: Decimation::default(),
            heartbeat_interval_ms: 1000,
            missed_heartbeats: 3,
        }
    }

    #[test]
    fn link_is_lost_after_the_missed_heartbeats_and_restored_by_the_next() {
        let t0 = fumegrid_common::clock::Clock::system().instant();
        let mut l = Link::new(Duration::from_secs(1), 3);
        assert_eq!(l.check(t0 + Duration::from_secs(100)), None, "never up");
        assert_eq!(l.heartbeat(t0), None);
        assert_eq!(l.check(t0 + Duration::from_millis(3000)), None);
        let lost = l.check(t0 + Duration::from_millis(3001));
        assert_eq!(
            lost,
            Some(Change::Lost {
                silent: Duration::from_millis(3001)
            })
        );
        assert_eq!(l.check(t0 + Duration::from_secs(9)), None, "once");
        assert!(!l.up());
        assert_eq!(
            l.heartbeat(t0 + Duration::from_secs(10)),
            Some(Change::Restored {
                silent: Duration::from_secs(10)
            })
        );
        assert!(l.up());
    }

    proptest! {
        /// Over any sequence of heartbeat gaps: lost and restored alternate, starting with lost,
        /// and a loss is judged exactly when a gap is longer than the limit.
        #[test]
        fn link_events_alternate(gaps in proptest::collection::vec(0u64..6_000, 1..60)) {
            let t0 = fumegrid_common::clock::Clock::system().instant();
            let mut l = Link::new(Duration::from_secs(1), 3);
            let mut t = t0;
            l.heartbeat(t);
            let mut changes = Vec::new();
            for g in &gaps {
                // Checked every 100 ms through the gap, then the next heartbeat.
                let mut k = 0;
                while k + 100 < *g { k += 100; changes.extend(l.check(t + Duration::from_millis(k))); }
                t += Duration::from_millis(*g);
                changes.extend(l.heartbeat(t));
            }
            let expected_losses = gaps.iter().filter(|g| { let mut k = 0; let mut lost = false; while k + 100 < **g { k += 100; if k > 3000 { lost = true; } } lost }).count();
            let losses = changes.iter().filter(|c| matches!(c, Change::Lost { .. })).count();
            prop_assert_eq!(losses, expected_losses);
            for w in changes.windows(2) {
                let alternate = matches!((w[0], w[1]), (Change::Lost { .. }, Change::Restored { .. }) | (Change::Restored { .. }, Change::Lost { .. }));
                prop_assert!(alternate, "{:?}", w);
            }
            let first_is_loss = changes.first().is_none_or(|c| matches!(c, Change::Lost { .. }));
            prop_assert!(first_is_loss, "{:?}", changes);
        }
    }

    #[test]
    fn positions_carry_battery_and_photos_their_place() {
        let t0 = fumegrid_common::clock::Clock::system().instant();
        let mut d = Drone::new(cfg());
        let (s, _) = d.on_message(
            &MavMessage::SYS_STATUS(SYS_STATUS_DATA {
                battery_remaining: 87,
                ..Default::default()
            }),
            1_000,
            t0,
        );
        assert_eq!(s, Seen::Battery);
        let pos = GLOBAL_POSITION_INT_DATA {
            lat: 306_574_000,
            lon: 1_040_658_000,
            alt: 512_300,
            relative_alt: 60_000,
            vx: 300,
            vy: 400,
            hdg: 9_000,
            ..Default::default()
        };
        let (s, out) = d.on_message(&MavMessage::GLOBAL_POSITION_INT(pos), 1_100, t0);
        assert_eq!((s, out.len()), (Seen::Position(Fate::Kept), 0));
        let out = d.stop();
        let [Body::Track(t)] = out.as_slice() else {
            panic!("{out:?}")
        };
        let p = &t.points[0];
        assert_eq!(
            (p.ts_ms, p.lat, p.lon, p.alt_m),
            (1_100, 30.6574, 104.0658, 512.3)
        );
        assert_eq!(
            (p.rel_alt_m, p.heading_deg, p.speed_m_s, p.battery_pct),
            (Some(60.0), Some(90.0), Some(5.0), Some(87))
        );

        let mut url = [0u8; 205];
        url[..14].copy_from_slice(b"/DCIM/0001.JPG");
        let shot = MavMessage::CAMERA_IMAGE_CAPTURED(CAMERA_IMAGE_CAPTURED_DATA {
            time_utc: 1_795_456_800_123_000,
            lat: 306_574_100,
            lon: 1_040_658_200,
            alt: 512_000,
            image_index: 4,
            capture_result: mavlink::dialects::common::MavBool::MAV_BOOL_TRUE,
            file_url: url.into(),
            ..Default::default()
        });
        let (s, out) = d.on_message(&shot, 1_795_456_801_000, t0);
        assert_eq!(s, Seen::Photo(true));
        let [Body::DronePhoto(ph)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(ph.ts_ms, 1_795_456_800_123);
        assert_eq!((ph.lat, ph.lon, ph.alt_m), (30.6574100, 104.0658200, 512.0));
        assert_eq!(
            (ph.index, ph.file.as_deref(), ph.ok),
            (4, Some("/DCIM/0001.JPG"), true)
        );
        let (s, out) = d.on_message(&shot, 1_795_456_802_000, t0);
        assert_eq!((s, out.len()), (Seen::Photo(false), 0), "a resend");
    }

    #[test]
    fn a_loss_cuts_the_stretch_and_names_the_drone() {
        let t0 = fumegrid_common::clock::Clock::system().instant();
        let mut d = Drone::new(cfg());
        d.on_message(&MavMessage::HEARTBEAT(HEARTBEAT_DATA::default()), 0, t0);
        let pos = GLOBAL_POSITION_INT_DATA {
            lat: 306_574_000,
            lon: 1_040_658_000,
            ..Default::default()
        };
        d.on_message(&MavMessage::GLOBAL_POSITION_INT(pos), 10, t0);
        assert!(d.tick(2_000, t0 + Duration::from_secs(2)).is_empty());
        let out = d.tick(3_500, t0 + Duration::from_millis(3_500));
        assert!(
            matches!(out.as_slice(), [Body::Track(_), Body::Event(e)]
            if e.kind == EventKind::DroneLinkLost && e.message.starts_with("uav-1: ")),
            "{out:?}"
        );
        let (_, out) = d.on_message(
            &MavMessage::HEARTBEAT(HEARTBEAT_DATA::default()),
            9_000,
            t0 + Duration::from_secs(9),
        );
        assert!(
            matches!(out.as_slice(), [Body::Event(e)]
            if e.kind == EventKind::DroneLinkRestored && e.message.starts_with("uav-1: ")),
            "{out:?}"
        );
    }
}
