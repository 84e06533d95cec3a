//! The pure decision on one DJI Cloud API message: `(topic, payload, registry, now)` → what it
//! says, or why it is ignored. No I/O, no clock; fuzzed ([`crate::fuzz::dji`]).
//!
//! Shapes (DJI Cloud API, docs/drones.md "DJI Cloud API" cites the pages): every message is a
//! JSON object `{tid, bid, timestamp, gateway, data}` (plus `method` on `status`); an aircraft's
//! `thing/product/{sn}/osd` `data` carries `latitude`, `longitude` (degrees), `height` (metres
//! above the ellipsoid), `elevation` (metres above the take-off point), `attitude_head`
//! (degrees, −180 … 180 from true north), `horizontal_speed` (m/s) and
//! `battery.capacity_percent`; a dock's own osd carries its `latitude`, `longitude`, `height`;
//! `sys/product/{gateway_sn}/status` with `method = "update_topo"` lists `data.sub_devices[].sn`;
//! `thing/product/{gateway_sn}/events` carries `method` and `need_reply`.
//!
//! Replies (DJI's "status_reply" and "events_reply" structs): an `update_topo` is answered on
//! `sys/product/{gateway_sn}/status_reply`, an event with `need_reply: 1` on
//! `thing/product/{gateway_sn}/events_reply`, each `{tid, bid, timestamp, method,
//! data: {result: 0}}` with the message's own `tid`, `bid` and `method` (a dock matches the
//! reply by them, and a dock that is not answered repeats its `update_topo`).

use std::collections::BTreeMap;

use fumegrid_common::wire::TrackPoint;
use serde_json::{Map, Value};

/// Largest payload read (an aircraft's osd with its cameras and payloads is a few KB).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Most sub-devices read from one `update_topo` (a dock has one aircraft, a remote controller
/// one; DJI's multi-dock setups a handful).
pub const MAX_SUB_DEVICES: usize = 16;
/// A device timestamp this far from the receive time is not believed: the point takes the
/// receive time instead (a dock whose clock was never set reports 1970).
pub const MAX_CLOCK_SKEW_MS: i64 = 10 * 60 * 1000;

/// The envelope keys DJI documents; others are counted ([`Parsed::unknown_fields`]).
const ENVELOPE_KEYS: [&str; 7] = [
    "tid",
    "bid",
    "timestamp",
    "gateway",
    "data",
    "method",
    "need_reply",
];

/// A registered DJI gateway device (a dock, or the remote controller DJI Pilot 2 runs on) and
/// the aircraft registered under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dock {
    pub sn: String,
    pub aircraft: Vec<String>,
}

/// Which serial numbers are known: docks (gateways) and aircraft, each aircraft under one dock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// dock sn → its aircraft.
    docks: BTreeMap<String, Vec<String>>,
    /// aircraft sn → its dock.
    aircraft: BTreeMap<String, String>,
}

impl Registry {
    /// From the configured docks; the config has already refused duplicates.
    pub fn new(docks: impl IntoIterator<Item = Dock>) -> Registry {
        let mut r = Registry::default();
        for d in docks {
            for a in &d.aircraft {
                r.aircraft.insert(a.clone(), d.sn.clone());
            }
            r.docks.insert(d.sn, d.aircraft);
        }
        r
    }

    pub fn is_empty(&self) -> bool {
        self.docks.is_empty()
    }

    pub fn docks(&self) -> usize {
        self.docks.len()
    }

    /// The dock an aircraft is registered under.
    pub fn dock_of(&self, aircraft: &str) -> Option<&str> {
        self.aircraft.get(aircraft).map(String::as_str)
    }

    /// The registered docks' serial numbers, in order.
    pub fn dock_sns(&self) -> impl Iterator<Item = &str> {
        self.docks.keys().map(String::as_str)
    }

    pub fn is_dock(&self, sn: &str) -> bool {
        self.docks.contains_key(sn)
    }

    /// The aircraft registered under `dock`.
    pub fn aircraft_of(&self, dock: &str) -> &[String] {
        self.docks.get(dock).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// A serial number as DJI prints them: 1 to 64 ASCII letters and digits.
pub fn valid_sn(sn: &str) -> bool {
    !sn.is_empty() && sn.len() <= 64 && sn.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// Where a dock stands, from its own osd (`latitude`, `longitude`, `height`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DockPosition {
    pub lat: f64,
    pub lon: f64,
    /// Metres above the ellipsoid, as DJI reports it.
    pub height_m: Option<f64>,
    /// The message's time (see [`MAX_CLOCK_SKEW_MS`]).
    pub ts_ms: i64,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An aircraft's position: a point of its track (`drone` is its serial number).
    Aircraft { drone: String, point: TrackPoint },
    /// A dock's own osd: where it stands when the message says it (DJI's docks send their
    /// position in one of their osd messages; the others carry none).
    Dock {
        sn: String,
        position: Option<DockPosition>,
    },
    /// An event of a registered dock (`thing/product/{sn}/events`): not read beyond its
    /// `method`, answered when it asks for a reply.
    Event { gateway: String, method: String },
    /// `update_topo`: the gateway and the serial numbers of the sub-devices it reports online.
    Topology {
        gateway: String,
        sub_devices: Vec<String>,
    },
}

/// A message to publish back to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A message understood, with the count of envelope keys DJI does not document.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub message: Message,
    /// What the device expects back (module doc), if anything.
    pub reply: Option<Reply>,
    pub unknown_fields: usize,
    /// The device's timestamp was not believed (see [`MAX_CLOCK_SKEW_MS`]).
    pub clock_skew: bool,
}

/// Why a message was ignored. `name` is the `outcome` label of `fumegrid_dji_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ignored {
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    TooBig,
    /// A topic this aggregator does not read (`state`, `events`, `requests`, …, or not DJI's).
    Topic,
    /// The topic's serial number is not registered (or not registered as that kind of device).
    UnknownSerial,
    /// The envelope's `gateway` is not the dock the aircraft is registered under.
    Gateway,
    /// Not a JSON object, or `data` missing or not an object.
    Json,
    /// A `status` whose `method` is not `update_topo`.
    Method,
    /// An aircraft osd without a usable position (no fix: DJI sends 0, 0; or values out of
    /// range, or of the wrong type).
    NoPosition,
}

impl Ignored {
    pub const ALL: [Ignored; 7] = [
        Ignored::TooBig,
        Ignored::Topic,
        Ignored::UnknownSerial,
        Ignored::Gateway,
        Ignored::Json,
        Ignored::Method,
        Ignored::NoPosition,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Ignored::TooBig => "too_big",
            Ignored::Topic => "topic",
            Ignored::UnknownSerial => "unknown_serial",
            Ignored::Gateway => "gateway",
            Ignored::Json => "json",
            Ignored::Method => "method",
            Ignored::NoPosition => "no_position",
        }
    }
}

/// The topics read: `thing/product/{sn}/osd`, `thing/product/{sn}/events` and
/// `sys/product/{sn}/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    Osd(&'a str),
    Events(&'a str),
    Status(&'a str),
}

/// The topic filters a reader subscribes to.
pub const SUBSCRIPTIONS: [&str; 3] = [
    "thing/product/+/osd",
    "thing/product/+/events",
    "sys/product/+/status",
];

/// `thing/product/{sn}/osd`, `thing/product/{sn}/events` or `sys/product/{sn}/status`, else
/// `None`.
pub fn parse_topic(topic: &str) -> Option<Topic<'_>> {
    let mut parts = topic.split('/');
    let (a, b, sn, leaf, rest) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next(),
    );
    if b != "product" || rest.is_some() || !valid_sn(sn) {
        return None;
    }
    match (a, leaf) {
        ("thing", "osd") => Some(Topic::Osd(sn)),
        ("thing", "events") => Some(Topic::Events(sn)),
        ("sys", "status") => Some(Topic::Status(sn)),
        _ => None,
    }
}

/// Decides what one message says (module doc). `now_ms` is the receive time.
pub fn parse(topic: &str, payload: &[u8], reg: &Registry, now_ms: i64) -> Result<Parsed, Ignored> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Ignored::TooBig);
    }
    let topic = parse_topic(topic).ok_or(Ignored::Topic)?;
    // The serial number first: nothing from an unregistered device is even parsed.
    match topic {
        Topic::Osd(sn) if reg.dock_of(sn).is_none() && !reg.is_dock(sn) => {
            return Err(Ignored::UnknownSerial);
        }
        Topic::Status(sn) | Topic::Events(sn) if !reg.is_dock(sn) => {
            return Err(Ignored::UnknownSerial);
        }
        _ => {}
    }
    let Ok(Value::Object(env)) = serde_json::from_slice::<Value>(payload) else {
        return Err(Ignored::Json);
    };
    let unknown_fields = env
        .keys()
        .filter(|k| !ENVELOPE_KEYS.contains(&k.as_str()))
        .count();
    let Some(Value::Object(data)) = env.get("data") else {
        return Err(Ignored::Json);
    };
    let gateway = env.get("gateway").and_then(Value::as_str);
    let (ts_ms, clock_skew) = match env.get("timestamp").and_then(Value::as_i64) {
        Some(t) if (t - now_ms).abs() <= MAX_CLOCK_SKEW_MS => (t, false),
        _ => (now_ms, true),
    };
    let mut reply = None;
    let message = match topic {
        Topic::Osd(sn) => match reg.dock_of(sn) {
            Some(dock) => {
                // DJI sets `gateway` to the dock (or remote controller) that relays the
                // aircraft; when it says another one, the aircraft is not where we registered it.
                if gateway.is_some_and(|g| g != dock) {
                    return Err(Ignored::Gateway);
                }
                Message::Aircraft {
                    drone: sn.to_string(),
                    point: aircraft_point(data, ts_ms).ok_or(Ignored::NoPosition)?,
                }
            }
            None => {
                if gateway.is_some_and(|g| g != sn) {
                    return Err(Ignored::Gateway);
                }
                Message::Dock {
                    sn: sn.to_string(),
                    position: dock_position(data, ts_ms),
                }
            }
        },
        Topic::Events(sn) => {
            if gateway.is_some_and(|g| g != sn) {
                return Err(Ignored::Gateway);
            }
            let method = env.get("method").and_then(Value::as_str).unwrap_or("");
            if env.get("need_reply").and_then(Value::as_i64) == Some(1) {
                reply = Some(reply_to(
                    &env,
                    format!("thing/product/{sn}/events_reply"),
                    Some(sn),
                    now_ms,
                ));
            }
            Message::Event {
                gateway: sn.to_string(),
                method: method.chars().take(64).collect(),
            }
        }
        Topic::Status(sn) => {
            if env.get("method").and_then(Value::as_str) != Some("update_topo") {
                return Err(Ignored::Method);
            }
            let sub_devices = match data.get("sub_devices") {
                Some(Value::Array(subs)) => subs
                    .iter()
                    .take(MAX_SUB_DEVICES)
                    .filter_map(|s| s.get("sn").and_then(Value::as_str))
                    .filter(|s| valid_sn(s))
                    .map(str::to_string)
                    .collect(),
                None => Vec::new(),
                Some(_) => return Err(Ignored::Json),
            };
            reply = Some(reply_to(
                &env,
                format!("sys/product/{sn}/status_reply"),
                None,
                now_ms,
            ));
            Message::Topology {
                gateway: sn.to_string(),
                sub_devices,
            }
        }
    };
    Ok(Parsed {
        message,
        reply,
        unknown_fields,
        clock_skew,
    })
}

/// The reply DJI documents for a message (module doc): its `tid`, `bid` and `method` back,
/// the cloud's time, `result` 0; `gateway` when the reply struct names it (events).
fn reply_to(env: &Map<String, Value>, topic: String, gateway: Option<&str>, now_ms: i64) -> Reply {
    let echo = |k: &str| env.get(k).cloned().unwrap_or(Value::String(String::new()));
    let mut v = serde_json::json!({
        "tid": echo("tid"),
        "bid": echo("bid"),
        "timestamp": now_ms,
        "method": echo("method"),
        "data": {"result": 0},
    });
    if let Some(g) = gateway {
        v["gateway"] = Value::String(g.to_string());
    }
    Reply {
        topic,
        payload: serde_json::to_vec(&v).unwrap_or_default(),
    }
}

/// A dock's own position, when its osd `data` has one (not DJI's 0, 0 of no fix).
fn dock_position(data: &Map<String, Value>, ts_ms: i64) -> Option<DockPosition> {
    let lat = num(data, "latitude", -90.0, 90.0)?;
    let lon = num(data, "longitude", -180.0, 180.0)?;
    if lat == 0.0 && lon == 0.0 {
        return None;
    }
    Some(DockPosition {
        lat,
        lon,
        height_m: num(data, "height", -10_000.0, 100_000.0),
        ts_ms,
    })
}

/// A finite number in `lo ..= hi`.
fn num(data: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Option<f64> {
    data.get(key)
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite() && (lo..=hi).contains(v))
}

/// The track point of an aircraft's osd `data`, or `None` without a usable position.
fn aircraft_point(data: &Map<String, Value>, ts_ms: i64) -> Option<TrackPoint> {
    let lat = num(data, "latitude", -90.0, 90.0)?;
    let lon = num(data, "longitude", -180.0, 180.0)?;
    // No fix: DJI reports 0, 0 (DJI's own samples of an aircraft in its dock).
    if lat == 0.0 && lon == 0.0 {
        return None;
    }
    let alt = crate::ingest::validate::ALT_M_RANGE;
    let alt_m = num(data, "height", *alt.start(), *alt.end())?;
    let heading_deg = num(data, "attitude_head", -360.0, 360.0).map(|h| h.rem_euclid(360.0));
    let battery_pct = data
        .get("battery")
        .and_then(|b| b.get("capacity_percent"))
        .and_then(Value::as_u64)
        .filter(|p| *p <= 100)
        .map(|p| p as u8);
    Some(TrackPoint {
        ts_ms,
        lat,
        lon,
        alt_m,
        rel_alt_m: num(data, "elevation", -10_000.0, 10_000.0),
        heading_deg,
        speed_m_s: num(data, "horizontal_speed", 0.0, 200.0),
        battery_pct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCK: &str = "4TADKAQ000002J";
    const AIRCRAFT: &str = "1581F5BKD225D00BP891";
    const NOW: i64 = 1_667_220_880_000;

    fn reg() -> Registry {
        Registry::new([Dock {
            sn: DOCK.into(),
            aircraft: vec![AIRCRAFT.into()],
        }])
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dji")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn topics() {
        assert_eq!(
            parse_topic("thing/product/ABC1/osd"),
            Some(Topic::Osd("ABC1"))
        );
        assert_eq!(
            parse_topic("sys/product/ABC1/status"),
            Some(Topic::Status("ABC1"))
        );
        assert_eq!(
            parse_topic("thing/product/ABC1/events"),
            Some(Topic::Events("ABC1"))
        );
        for t in [
            "thing/product/ABC1/state",
            "thing/product/ABC1/osd/x",
            "thing/product/+/osd",
            "thing/product//osd",
            "thing/products/ABC1/osd",
            "sys/product/ABC1/osd",
            "fumegrid/v1/gw/up",
            "",
        ] {
            assert_eq!(parse_topic(t), None, "{t}");
        }
    }

    #[test]
    fn an_aircraft_osd_sample_becomes_a_point() {
        let p = parse(
            &format!("thing/product/{AIRCRAFT}/osd"),
            &fixture("aircraft-osd.json"),
            &reg(),
            NOW,
        )
        .expect("accepted");
        let Message::Aircraft { drone, point } = p.message else {
            panic!("{p:?}")
        };
        assert_eq!(drone, AIRCRAFT);
        assert_eq!(point.ts_ms, 1_667_220_881_576);
        assert_eq!((point.lat, point.lon), (22.908_1, 113.702_9));
        assert_eq!(point.alt_m, 134.5);
        assert_eq!(point.rel_alt_m, Some(100.2));
        assert_eq!(point.heading_deg, Some(270.0)); // attitude_head −90
        assert_eq!(point.speed_m_s, Some(8.5));
        assert_eq!(point.battery_pct, Some(76));
        assert_eq!(p.unknown_fields, 0);
        assert!(!p.clock_skew);
    }

    #[test]
    fn dock_osd_and_topology_samples() {
        let p = parse(
            &format!("thing/product/{DOCK}/osd"),
            &fixture("dock-osd.json"),
            &reg(),
            NOW,
        )
        .expect("dock osd");
        assert_eq!(
            p.message,
            Message::Dock {
                sn: DOCK.into(),
                position: Some(DockPosition {
                    lat: 22.907809968,
                    lon: 113.703482143,
                    height_m: Some(34.174_125_671_386_72),
                    ts_ms: 1_667_220_916_697,
                })
            }
        );
        assert_eq!(p.reply, None, "osd is not answered");
        let p = parse(
            &format!("sys/product/{DOCK}/status"),
            &fixture("dock-status-update-topo.json"),
            &reg(),
            NOW,
        )
        .expect("status");
        assert_eq!(
            p.message,
            Message::Topology {
                gateway: DOCK.into(),
                sub_devices: vec![AIRCRAFT.into()]
            }
        );
        // DJI's status_reply struct, with the message's own tid and bid.
        let reply = p.reply.expect("update_topo is answered");
        assert_eq!(reply.topic, format!("sys/product/{DOCK}/status_reply"));
        let v: Value = serde_json::from_slice(&reply.payload).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"tid": "tid001", "bid": "bid001", "timestamp": NOW,
                "method": "update_topo", "data": {"result": 0}})
        );
        // A dock osd without a fix (another of its osd messages) has no position.
        let p = parse(
            &format!("thing/product/{DOCK}/osd"),
            br#"{"tid":"t","bid":"b","timestamp":1667220881576,"data":{"flighttask_step_code":255},"gateway":"4TADKAQ000002J"}"#,
            &reg(),
            NOW,
        )
        .expect("dock osd");
        assert_eq!(
            p.message,
            Message::Dock {
                sn: DOCK.into(),
                position: None
            }
        );
    }

    #[test]
    fn events_asking_for_a_reply_are_answered() {
        let p = parse(
            &format!("thing/product/{DOCK}/events"),
            &fixture("dock-event-need-reply.json"),
            &reg(),
            NOW,
        )
        .expect("event");
        assert_eq!(
            p.message,
            Message::Event {
                gateway: DOCK.into(),
                method: "flighttask_progress".into()
            }
        );
        let reply = p.reply.expect("need_reply 1 is answered");
        assert_eq!(reply.topic, format!("thing/product/{DOCK}/events_reply"));
        let v: Value = serde_json::from_slice(&reply.payload).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"tid": "c9a5ac6c-5b0b-4d1c-a3a8-0e8f3a2b1d10",
                "bid": "0b1e7a6e-2f0a-4f39-9c53-2e1f9b7d8a44", "timestamp": NOW,
                "gateway": DOCK, "method": "flighttask_progress", "data": {"result": 0}})
        );
        let text = String::from_utf8(fixture("dock-event-need-reply.json")).expect("utf-8");
        let no_reply = text.replace("\"need_reply\": 1", "\"need_reply\": 0");
        assert_ne!(no_reply, text);
        let p = parse(
            &format!("thing/product/{DOCK}/events"),
            no_reply.as_bytes(),
            &reg(),
            NOW,
        )
        .expect("event");
        assert_eq!(p.reply, None);
        assert_eq!(
            parse(
                &format!("thing/product/{AIRCRAFT}/events"),
                text.as_bytes(),
                &reg(),
                NOW
            ),
            Err(Ignored::UnknownSerial),
            "events come from the gateway (the dock)"
        );
    }

    #[test]
    fn refusals_name_their_reason() {
        let osd = fixture("aircraft-osd.json");
        let t = format!("thing/product/{AIRCRAFT}/osd");
        let r = reg();
        assert_eq!(
            parse("thing/product/UNKNOWN1/osd", &osd, &r, NOW),
            Err(Ignored::UnknownSerial)
        );
        assert_eq!(
            parse(&format!("sys/product/{AIRCRAFT}/status"), &osd, &r, NOW),
            Err(Ignored::UnknownSerial)
        );
        assert_eq!(
            parse(&format!("thing/product/{AIRCRAFT}/state"), &osd, &r, NOW),
            Err(Ignored::Topic)
        );
        assert_eq!(
            parse(&t, &vec![b' '; MAX_PAYLOAD_BYTES + 1], &r, NOW),
            Err(Ignored::TooBig)
        );
        for bad in [&b"[1]"[..], b"{", b"{\"data\": 3}", b"\xff\xfe", b""] {
            assert_eq!(parse(&t, bad, &r, NOW), Err(Ignored::Json), "{bad:?}");
        }
        let text = String::from_utf8(osd).expect("utf-8");
        let other_gw = text.replace(&format!("\"gateway\": \"{DOCK}\""), "\"gateway\": \"X9\"");
        assert_ne!(other_gw, text);
        assert_eq!(
            parse(&t, other_gw.as_bytes(), &r, NOW),
            Err(Ignored::Gateway)
        );
        let no_fix = text
            .replace("\"latitude\": 22.9081", "\"latitude\": 0")
            .replace("\"longitude\": 113.7029", "\"longitude\": 0");
        assert_ne!(no_fix, text);
        assert_eq!(
            parse(&t, no_fix.as_bytes(), &r, NOW),
            Err(Ignored::NoPosition)
        );
        let wrong_type = text.replace("\"latitude\": 22.9081", "\"latitude\": \"22.9\"");
        assert_eq!(
            parse(&t, wrong_type.as_bytes(), &r, NOW),
            Err(Ignored::NoPosition)
        );
        let status = String::from_utf8(fixture("dock-status-update-topo.json")).expect("utf-8");
        let other = status.replace("update_topo", "some_method");
        assert_eq!(
            parse(
                &format!("sys/product/{DOCK}/status"),
                other.as_bytes(),
                &r,
                NOW
            ),
            Err(Ignored::Method)
        );
    }

    #[test]
    fn unknown_envelope_fields_are_counted_and_a_bad_clock_is_not_believed() {
        let body = br#"{"tid":"t","bid":"b","timestamp":5,"data":{"latitude":22.9,"longitude":113.7,"height":50},"extra":1,"more":{}}"#;
        let p = parse(&format!("thing/product/{AIRCRAFT}/osd"), body, &reg(), NOW).expect("ok");
        assert_eq!(p.unknown_fields, 2);
        assert!(p.clock_skew);
        let Message::Aircraft { point, .. } = p.message else {
            panic!()
        };
        assert_eq!(point.ts_ms, NOW);
        assert_eq!(point.heading_deg, None);
        assert_eq!(point.battery_pct, None);
    }
}
