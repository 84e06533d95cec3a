//! The pure decision on one MQTT message: `(topic, payload, keys) → Batch | Reject`.
//!
//! Order matters for security and cost: size first (cheap), then the topic names a known gateway,
//! then the MAC with *that* gateway's key over the exact bytes (so gateway A cannot publish as
//! B, and nothing unauthenticated is parsed further), then the strict JSON schema, then the
//! contents (body gateway = topic gateway, stream, seqs, then each item: [`check_alarm`] for
//! alarm transitions).

use std::collections::{HashMap, HashSet};

use fumegrid_common::wire::{
    self, Alarm, AlarmPhase, Batch, Body, Channel, Event, EventKind, Hello, Item, SealError, Status,
};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The per-gateway HMAC keys. `Debug` never prints a key.
#[derive(Clone, Default)]
pub struct Keys(HashMap<String, Vec<u8>>);

impl Keys {
    pub fn new(keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Keys {
        Keys(keys.into_iter().collect())
    }
    pub fn get(&self, gateway: &str) -> Option<&[u8]> {
        self.0.get(gateway).map(Vec::as_slice)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&str> = self.ids().collect();
        ids.sort_unstable();
        write!(f, "Keys({ids:?})")
    }
}

/// Why a message was refused. The `name` is the counter key in `/api/v1/stats` and the `reason`
/// field of the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Payload larger than `broker.max_payload_bytes`.
    Oversized,
    /// Topic is not `fumegrid/v1/{gateway}/up|status`.
    BadTopic,
    /// No key for the topic's gateway.
    UnknownGateway,
    /// Not a sealed payload (no trailing `"mac"` member).
    NoMac,
    /// MAC does not verify with the topic gateway's key.
    BadMac,
    /// Signed, but not valid JSON of the expected shape.
    Malformed,
    /// Signed, but with a field the contract does not know.
    UnknownField,
    /// `batch.gateway` differs from the topic's gateway.
    GatewayMismatch,
    /// `stream` empty or longer than 128 characters.
    BadStream,
    /// No items, a seq twice in one batch, or too many items.
    BadSeq,
    /// An item of a good batch whose body cannot be read, or whose contents break the
    /// contract; counted per item (the rest of the batch is stored, the item is kept as an
    /// `item_refused` event, see [`refuse_item`]): a device id empty or longer than 128
    /// characters; a picture part that [`check_evidence`] refuses; a period that
    /// [`check_period`] refuses; an alarm with an id empty or longer than 256, `started_ms` after `ts_ms`,
    /// `cleared_ms` missing with `cleared` (or present without it, or before `started_ms`), or
    /// a value, peak or limit that is not finite; a drone track or photo that [`check_track`]
    /// or [`check_photo`] refuses.
    BadItem,
    /// A sealed `status` message that is not a `Status` document, or whose time is further
    /// ahead of the aggregator's clock than the allowed skew.
    BadStatus,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Oversized,
        Reason::BadTopic,
        Reason::UnknownGateway,
        Reason::NoMac,
        Reason::BadMac,
        Reason::Malformed,
        Reason::UnknownField,
        Reason::GatewayMismatch,
        Reason::BadStream,
        Reason::BadSeq,
        Reason::BadItem,
        Reason::BadStatus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Oversized => "oversized",
            Reason::BadTopic => "bad_topic",
            Reason::UnknownGateway => "unknown_gateway",
            Reason::NoMac => "no_mac",
            Reason::BadMac => "bad_mac",
            Reason::Malformed => "malformed",
            Reason::UnknownField => "unknown_field",
            Reason::GatewayMismatch => "gateway_mismatch",
            Reason::BadStream => "bad_stream",
            Reason::BadSeq => "bad_seq",
            Reason::BadItem => "bad_item",
            Reason::BadStatus => "bad_status",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A refused message: why, which gateway the topic named (if any), and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Reject {
    pub reason: Reason,
    pub gateway: Option<String>,
    pub detail: String,
}

fn reject(reason: Reason, gateway: Option<&str>, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        gateway: gateway.map(str::to_string),
        detail: detail.into(),
    }
}

/// Limits applied before and after parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_items: usize,
}

/// Longest stream or device id accepted.
const MAX_ID: usize = 128;
/// Longest alarm episode id accepted (`{device}:{kind}[:{metric}]:{started_ms}` fits).
const MAX_ALARM_ID: usize = 256;

/// Validates one `up` message. Pure.
pub fn validate_up(
    topic: &str,
    payload: &[u8],
    keys: &Keys,
    limits: Limits,
) -> Result<Batch, Reject> {
    if payload.len() > limits.max_payload_bytes {
        return Err(reject(
            Reason::Oversized,
            wire::parse_topic(topic)
                .map(|(g, _)| g)
                .filter(|g| keys.get(g).is_some()),
            format!(
                "{} bytes, limit {}",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    let gw = match wire::parse_topic(topic) {
        Some((gw, Channel::Up)) => gw,
        _ => {
            return Err(reject(
                Reason::BadTopic,
                None,
                format!("`{}` is not fumegrid/v1/{{gateway}}/up", truncate(topic)),
            ));
        }
    };
    let Some(key) = keys.get(gw) else {
        return Err(unknown_gateway(gw));
    };
    let (mut batch, unreadable) = match wire::open(payload, key) {
        Ok(b) => (b, HashSet::new()),
        // Sealed, but not a batch as this aggregator reads one: maybe only some items are
        // unreadable (a newer gateway's item kind, one corrupt body) — then the envelope reads
        // item by item and those items are refused alone.
        Err(SealError::Json(m)) => loose_batch(payload, key).ok_or_else(|| {
            if m.contains("unknown field") {
                reject(Reason::UnknownField, Some(gw), m)
            } else {
                reject(Reason::Malformed, Some(gw), m)
            }
        })?,
        Err(e @ SealError::NoMac) => return Err(reject(Reason::NoMac, Some(gw), e.to_string())),
        Err(e @ SealError::BadMac) => {
            return Err(reject(Reason::BadMac, Some(gw), e.to_string()));
        }
    };
    if batch.gateway != gw {
        return Err(reject(
            Reason::GatewayMismatch,
            Some(gw),
            format!(
                "batch says gateway `{}`, topic says `{gw}`",
                truncate(&batch.gateway)
            ),
        ));
    }
    if batch.stream.is_empty() || batch.stream.len() > MAX_ID {
        return Err(reject(
            Reason::BadStream,
            Some(gw),
            format!("stream id must be 1..={MAX_ID} characters"),
        ));
    }
    if batch.items.is_empty() {
        return Err(reject(Reason::BadSeq, Some(gw), "batch has no items"));
    }
    if batch.items.len() > limits.max_items {
        return Err(reject(
            Reason::BadSeq,
            Some(gw),
            format!("{} items, limit {}", batch.items.len(), limits.max_items),
        ));
    }
    // Seqs usually arrive ascending; only then is the cheap check enough.
    let ascending = batch.items.windows(2).all(|w| w[0].seq < w[1].seq);
    if !ascending {
        let mut seen = HashSet::with_capacity(batch.items.len());
        if let Some(dup) = batch.items.iter().find(|i| !seen.insert(i.seq)) {
            return Err(reject(
                Reason::BadSeq,
                Some(gw),
                format!("seq {} appears twice in one batch", dup.seq),
            ));
        }
    }
    let sent_ms = batch.sent_ms;
    for item in &mut batch.items {
        if unreadable.contains(&item.seq) {
            continue; // refused already, by `loose_batch`
        }
        let bad = match &item.body {
            Body::Reading(r) => check_reading(r).err(),
            Body::Alarm(a) => check_alarm(a).err(),
            Body::Event(e) if e.kind == EventKind::ItemRefused => {
                Some("`item_refused` is the aggregator's own event kind".to_string())
            }
            Body::Event(_) => None,
            Body::Evidence(e) => check_evidence(e).err(),
            Body::Period(p) => check_period(p).err(),
            Body::Track(t) => check_track(t).err(),
            Body::DronePhoto(p) => check_photo(p).err(),
        };
        if let Some(why) = bad {
            let body = serde_json::to_string(&item.body).unwrap_or_default();
            *item = refuse_item(item.seq, sent_ms, &why, &body);
        }
    }
    Ok(batch)
}

/// Most bytes of a refused item's body kept in its `item_refused` event.
pub const REFUSED_BODY_BYTES: usize = 64 * 1024;

/// The `item_refused` event stored in place of item `seq` (why, and its body as sent, at most
/// [`REFUSED_BODY_BYTES`]): the item is acked with its batch, so a gateway never resends it
/// forever and the items behind it go on; nothing is silent — it is counted
/// ([`Reason::BadItem`]), logged and kept for an operator to read.
pub fn refuse_item(seq: u64, sent_ms: i64, why: &str, body: &str) -> Item {
    Item {
        seq,
        body: Body::Event(Event {
            ts_ms: sent_ms,
            kind: EventKind::ItemRefused,
            message: format!(
                "item seq {seq} refused: {}; its body as sent: {}",
                fumegrid_common::text::clip(why, 512),
                fumegrid_common::text::clip(body, REFUSED_BODY_BYTES)
            ),
            dropped: None,
            from_ms: None,
            to_ms: None,
        }),
    }
}

/// The items of a batch that [`refuse_item`] replaced: `(seq, message)`.
pub fn refused_items(batch: &Batch) -> impl Iterator<Item = (u64, &str)> {
    batch.items.iter().filter_map(|i| match &i.body {
        Body::Event(e) if e.kind == EventKind::ItemRefused => Some((i.seq, e.message.as_str())),
        _ => None,
    })
}

/// A batch's envelope exactly as [`Batch`], each item's body left unread.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LooseBatch<'a> {
    gateway: String,
    stream: String,
    sent_ms: i64,
    #[serde(borrow)]
    items: Vec<LooseItem<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LooseItem<'a> {
    seq: u64,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// A sealed payload whose envelope is a batch but some of whose bodies [`Body`] cannot read:
/// the batch with those items refused ([`refuse_item`]), and their seqs. `None` when the
/// envelope itself is not a batch. Only reached after the strict parse failed, so a good batch
/// is parsed once.
fn loose_batch(payload: &[u8], key: &[u8]) -> Option<(Batch, HashSet<u64>)> {
    let json = wire::open_raw(payload, key).ok()?;
    let loose: LooseBatch = serde_json::from_slice(&json).ok()?;
    let mut unreadable = HashSet::new();
    let items = loose
        .items
        .into_iter()
        .map(|i| match serde_json::from_str::<Body>(i.body.get()) {
            Ok(body) => Item { seq: i.seq, body },
            Err(e) => {
                unreadable.insert(i.seq);
                let why = format!("cannot read its body: {e}");
                refuse_item(i.seq, loose.sent_ms, &why, i.body.get())
            }
        })
        .collect();
    let batch = Batch {
        gateway: loose.gateway,
        stream: loose.stream,
        sent_ms: loose.sent_ms,
        items,
    };
    Some((batch, unreadable))
}

/// A valid `up` message: a batch, or a gateway's hello (see [`wire::Hello`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Up {
    Batch(Batch),
    Hello(Hello),
}

/// [`validate_up`], and when the payload is not a batch because it has a field a batch does
/// not know, a [`Hello`] with the same checks (gateway = topic, stream). Pure.
pub fn validate_up_or_hello(
    topic: &str,
    payload: &[u8],
    keys: &Keys,
    limits: Limits,
) -> Result<Up, Reject> {
    let refused = match validate_up(topic, payload, keys, limits) {
        Ok(b) => return Ok(Up::Batch(b)),
        Err(r) if r.reason == Reason::UnknownField => r,
        Err(r) => return Err(r),
    };
    // The MAC was verified by `validate_up`, which got as far as the schema.
    let Some((gw, key)) = wire::parse_topic(topic).and_then(|(g, _)| Some((g, keys.get(g)?)))
    else {
        return Err(refused);
    };
    let Ok(hello) = wire::open::<Hello>(payload, key) else {
        return Err(refused);
    };
    if hello.gateway != gw {
        return Err(reject(
            Reason::GatewayMismatch,
            Some(gw),
            format!(
                "hello says gateway `{}`, topic says `{gw}`",
                truncate(&hello.gateway)
            ),
        ));
    }
    if hello.stream.is_empty() || hello.stream.len() > MAX_ID {
        return Err(reject(
            Reason::BadStream,
            Some(gw),
            format!("stream id must be 1..={MAX_ID} characters"),
        ));
    }
    Ok(Up::Hello(hello))
}

/// A reading's device id, and the unit that must come with an `x_` metric (and only with one;
/// gateways that predate custom metrics never send a unit).
fn check_reading(r: &fumegrid_common::reading::Reading) -> Result<(), String> {
    check_device(&r.device)?;
    match (&r.unit, r.metric.is_custom()) {
        (Some(u), true) => fumegrid_common::metric::check_unit(u)
            .map_err(|e| format!("reading of `{}`: {e}", r.metric)),
        (None, true) => Err(format!(
            "reading of custom metric `{}` carries no unit",
            r.metric
        )),
        (Some(_), false) => Err(format!(
            "reading of canonical metric `{}` carries a unit; only `x_` metrics do",
            r.metric
        )),
        (None, false) => Ok(()),
    }
}

fn check_device(device: &str) -> Result<(), String> {
    if device.is_empty() || device.len() > MAX_ID {
        return Err(format!("device id must be 1..={MAX_ID} characters"));
    }
    Ok(())
}

/// Longest drone id accepted.
pub const MAX_DRONE_ID: usize = 64;
/// Altitudes accepted, metres above mean sea level: the Dead Sea shore to well above any
/// airspace a district drone may use.
pub const ALT_M_RANGE: std::ops::RangeInclusive<f64> = -500.0..=10_000.0;

/// The drone id rule: 1..=[`MAX_DRONE_ID`] ASCII letters (either case: DJI serial numbers are
/// upper case), digits, `-` or `_`.
pub fn check_drone_id(drone: &str) -> Result<(), String> {
    let ok = !drone.is_empty()
        && drone.len() <= MAX_DRONE_ID
        && drone
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "drone id `{}` must be 1..={MAX_DRONE_ID} ASCII letters, digits, `-` or `_`",
            truncate(drone)
        ))
    }
}

/// A WGS 84 position: latitude -90..=90, longitude -180..=180, altitude in [`ALT_M_RANGE`],
/// all finite. `at` names the point in the message.
pub fn check_position(lat: f64, lon: f64, alt_m: f64, at: &str) -> Result<(), String> {
    crate::cases::model::Position::checked(lat, lon).map_err(|e| format!("{at}: {e}"))?;
    if !(alt_m.is_finite() && ALT_M_RANGE.contains(&alt_m)) {
        return Err(format!(
            "{at}: alt_m {alt_m} is outside {} ..= {} m",
            ALT_M_RANGE.start(),
            ALT_M_RANGE.end()
        ));
    }
    Ok(())
}

/// A stretch of a drone's track: the drone id rule, 1..=[`wire::TRACK_MAX_POINTS`] points with
/// `ts_ms` strictly increasing, each a valid position ([`check_position`]) with finite optional
/// values in range (relative altitude within ±10 000 m, heading 0 ..< 360, speed 0 ..= 200
/// m/s, battery 0 ..= 100 %). Pure; the message names the point by index and time.
pub fn check_track(t: &wire::Track) -> Result<(), String> {
    check_drone_id(&t.drone)?;
    let d = truncate(&t.drone);
    if t.points.is_empty() || t.points.len() > wire::TRACK_MAX_POINTS {
        return Err(format!(
            "track of `{d}`: {} points, must be 1..={}",
            t.points.len(),
            wire::TRACK_MAX_POINTS
        ));
    }
    for (i, p) in t.points.iter().enumerate() {
        let at = format!("track of `{d}` point {i} at {}", p.ts_ms);
        if i > 0 && p.ts_ms <= t.points[i - 1].ts_ms {
            return Err(format!(
                "{at}: ts_ms is not after the previous point's {}",
                t.points[i - 1].ts_ms
            ));
        }
        check_position(p.lat, p.lon, p.alt_m, &at)?;
        let bad = |name: &str, v: Option<f64>, lo: f64, hi: f64, hi_open: bool| {
            v.filter(|v| !(v.is_finite() && *v >= lo && (if hi_open { *v < hi } else { *v <= hi })))
                .map(|v| format!("{at}: {name} {v} is outside {lo} .. {hi}"))
        };
        if let Some(e) = bad("rel_alt_m", p.rel_alt_m, -10_000.0, 10_000.0, false)
            .or_else(|| bad("heading_deg", p.heading_deg, 0.0, 360.0, true))
            .or_else(|| bad("speed_m_s", p.speed_m_s, 0.0, 200.0, false))
        {
            return Err(e);
        }
        if p.battery_pct.is_some_and(|b| b > 100) {
            return Err(format!("{at}: battery_pct is more than 100"));
        }
    }
    Ok(())
}

/// A drone's photo report: the drone id rule, a valid position, a `file` of at most 512
/// characters and a `sha256` of 64 lowercase hex digits when present. Pure.
pub fn check_photo(p: &wire::DronePhoto) -> Result<(), String> {
    check_drone_id(&p.drone)?;
    let at = format!(
        "photo {} of `{}` at {}",
        p.index,
        truncate(&p.drone),
        p.ts_ms
    );
    check_position(p.lat, p.lon, p.alt_m, &at)?;
    if p.file.as_ref().is_some_and(|f| f.chars().count() > 512) {
        return Err(format!("{at}: file name longer than 512 characters"));
    }
    if p.sha256
        .as_ref()
        .is_some_and(|h| !crate::store::evidence::is_sha256(h))
    {
        return Err(format!("{at}: sha256 is not 64 lowercase hex digits"));
    }
    Ok(())
}

/// The contents of one alarm transition: ids, time order, `cleared_ms` with `cleared` only,
/// finite numbers. Pure; the message says which rule and the values involved.
pub fn check_alarm(a: &Alarm) -> Result<(), String> {
    if a.id.is_empty() || a.id.len() > MAX_ALARM_ID {
        return Err(format!(
            "alarm id must be 1..={MAX_ALARM_ID} characters, got {}",
            a.id.len()
        ));
    }
    check_device(&a.device).map_err(|e| format!("alarm `{}`: {e}", truncate(&a.id)))?;
    let id = truncate(&a.id);
    if a.started_ms > a.ts_ms {
        return Err(format!(
            "alarm `{id}`: started_ms {} is after ts_ms {}",
            a.started_ms, a.ts_ms
        ));
    }
    match (a.phase, a.cleared_ms) {
        (AlarmPhase::Cleared, None) => {
            return Err(format!("alarm `{id}`: phase cleared without cleared_ms"));
        }
        (AlarmPhase::Cleared, Some(c)) if c < a.started_ms => {
            return Err(format!(
                "alarm `{id}`: cleared_ms {c} is before started_ms {}",
                a.started_ms
            ));
        }
        (AlarmPhase::Raised | AlarmPhase::Updated, Some(_)) => {
            return Err(format!(
                "alarm `{id}`: cleared_ms is only allowed with phase cleared"
            ));
        }
        _ => {}
    }
    for (name, v) in [("value", a.value), ("peak", a.peak), ("limit", a.limit)] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err(format!("alarm `{id}`: {name} is not a finite number"));
        }
    }
    Ok(())
}

/// One device's period aggregates: the device id, `period_s` in [`wire::PERIOD_S_RANGE`],
/// `start_ms` aligned to it, and per metric: each metric once, the unit rule of a reading,
/// `count <= polls`, the aggregates present exactly when `count > 0`, finite, and
/// `min <= avg <= max`, `min <= last <= max`. Pure; the message names the metric and the values.
pub fn check_period(p: &wire::Period) -> Result<(), String> {
    check_device(&p.device).map_err(|e| format!("period: {e}"))?;
    if !wire::PERIOD_S_RANGE.contains(&p.period_s) {
        return Err(format!(
            "period of `{}`: period_s {} must be {}..={}",
            truncate(&p.device),
            p.period_s,
            wire::PERIOD_S_RANGE.start(),
            wire::PERIOD_S_RANGE.end()
        ));
    }
    let at = format!("period of `{}` at {}", truncate(&p.device), p.start_ms);
    if p.start_ms.rem_euclid(i64::from(p.period_s) * 1000) != 0 {
        return Err(format!(
            "{at}: start_ms is not a multiple of period_s {} × 1000",
            p.period_s
        ));
    }
    if p.metrics.is_empty() {
        return Err(format!("{at}: no metrics"));
    }
    let mut seen = HashSet::with_capacity(p.metrics.len());
    for m in &p.metrics {
        let name = m.metric.name();
        if !seen.insert(name) {
            return Err(format!("{at}: metric `{name}` appears twice"));
        }
        match (&m.unit, m.metric.is_custom()) {
            (Some(u), true) => fumegrid_common::metric::check_unit(u)
                .map_err(|e| format!("{at}: metric `{name}`: {e}"))?,
            (None, true) => {
                return Err(format!("{at}: custom metric `{name}` carries no unit"));
            }
            (Some(_), false) => {
                return Err(format!(
                    "{at}: canonical metric `{name}` carries a unit; only `x_` metrics do"
                ));
            }
            (None, false) => {}
        }
        if m.count > m.polls {
            return Err(format!(
                "{at}: metric `{name}`: count {} is more than polls {}",
                m.count, m.polls
            ));
        }
        let aggs = [
            ("avg", m.avg),
            ("min", m.min),
            ("max", m.max),
            ("last", m.last),
        ];
        match (m.avg, m.min, m.max, m.last) {
            (None, None, None, None) if m.count == 0 => {}
            (Some(avg), Some(min), Some(max), Some(last)) if m.count > 0 => {
                if let Some((n, _)) = aggs.iter().find(|(_, v)| v.is_some_and(|v| !v.is_finite())) {
                    return Err(format!("{at}: metric `{name}`: {n} is not a finite number"));
                }
                if !(min <= avg && avg <= max) {
                    return Err(format!(
                        "{at}: metric `{name}`: avg {avg} is not within min {min} … max {max}"
                    ));
                }
                if !(min <= last && last <= max) {
                    return Err(format!(
                        "{at}: metric `{name}`: last {last} is not within min {min} … max {max}"
                    ));
                }
            }
            _ if m.count == 0 => {
                return Err(format!(
                    "{at}: metric `{name}`: count is 0 but avg/min/max/last are present"
                ));
            }
            _ => {
                let missing: Vec<&str> = aggs
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(n, _)| *n)
                    .collect();
                return Err(format!(
                    "{at}: metric `{name}`: count {} but {} absent",
                    m.count,
                    missing.join("/")
                ));
            }
        }
    }
    Ok(())
}

/// Most devices one picture names, and most readings its caption carries.
const MAX_PICTURE_DEVICES: usize = 32;
const MAX_PICTURE_READINGS: usize = 64;
/// Longest site name and snapshot request id accepted in a picture's metadata.
const MAX_SITE: usize = 128;

/// One part of a picture: the SHA-256, the part numbering against the size, the data's length,
/// and the metadata (camera id rule, devices, times, ids, caption). Pure; the message names the
/// field and the values involved. The hash itself is checked when the last part is in
/// ([`crate::store::evidence`]).
pub fn check_evidence(e: &wire::Evidence) -> Result<(), String> {
    use crate::store::evidence::{is_sha256, part_len, parts_for};
    if !is_sha256(&e.sha256) {
        return Err(format!(
            "evidence sha256 `{}` is not 64 lowercase hex digits",
            truncate(&e.sha256)
        ));
    }
    let at = format!(
        "evidence {}… part {}/{}",
        e.sha256.get(..12).unwrap_or(""),
        e.part,
        e.parts
    );
    let m = &e.meta;
    if m.size == 0 || m.size > wire::EVIDENCE_MAX_BYTES {
        return Err(format!(
            "{at}: meta.size {} must be 1..={}",
            m.size,
            wire::EVIDENCE_MAX_BYTES
        ));
    }
    let want_parts = parts_for(m.size);
    if u64::from(e.parts) != want_parts {
        return Err(format!(
            "{at}: parts {} but meta.size {} needs {want_parts} parts of at most {} bytes",
            e.parts,
            m.size,
            wire::EVIDENCE_PART_BYTES
        ));
    }
    if e.part >= e.parts {
        return Err(format!(
            "{at}: part {} is not below parts {}",
            e.part, e.parts
        ));
    }
    let want = part_len(m.size, e.part);
    // Standard base64 with padding: 4 characters per 3 bytes, so the length is known before
    // anything is decoded.
    let encoded = want.div_ceil(3) * 4;
    if e.data.len() as u64 != encoded {
        return Err(format!(
            "{at}: data is {} base64 characters, a part of {want} bytes has {encoded}",
            e.data.len()
        ));
    }
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(e.data.as_bytes()) {
        Ok(b) if b.len() as u64 == want => {}
        Ok(b) => {
            return Err(format!(
                "{at}: data decodes to {} bytes, expected {want}",
                b.len()
            ));
        }
        Err(err) => return Err(format!("{at}: data is not standard base64: {err}")),
    }
    if !fumegrid_common::id::valid_id(&m.camera) {
        return Err(format!(
            "{at}: meta.camera `{}`: use 1..64 lowercase letters, digits, `-` or `_`",
            truncate(&m.camera)
        ));
    }
    if m.devices.is_empty() || m.devices.len() > MAX_PICTURE_DEVICES {
        return Err(format!(
            "{at}: meta.devices has {} entries; 1..={MAX_PICTURE_DEVICES}",
            m.devices.len()
        ));
    }
    for d in &m.devices {
        check_device(d).map_err(|why| format!("{at}: meta.devices: {why}"))?;
    }
    if m.captured_ms <= 0 {
        return Err(format!(
            "{at}: meta.captured_ms {} is not a time after 1970",
            m.captured_ms
        ));
    }
    if let Some(a) = &m.alarm
        && (a.is_empty() || a.len() > MAX_ALARM_ID)
    {
        return Err(format!(
            "{at}: meta.alarm must be 1..={MAX_ALARM_ID} characters"
        ));
    }
    match (&m.request, m.trigger) {
        (Some(r), _) if r.is_empty() || r.len() > MAX_ID => {
            return Err(format!(
                "{at}: meta.request must be 1..={MAX_ID} characters"
            ));
        }
        (None, wire::Trigger::Request) => {
            return Err(format!("{at}: meta.trigger request without meta.request"));
        }
        _ => {}
    }
    for (name, v) in [("width", m.width), ("height", m.height)] {
        if v.is_some_and(|v| v == 0 || v > 65_535) {
            return Err(format!("{at}: meta.{name} must be 1..=65535"));
        }
    }
    if m.site.chars().count() > MAX_SITE {
        return Err(format!(
            "{at}: meta.site is longer than {MAX_SITE} characters"
        ));
    }
    if m.readings.len() > MAX_PICTURE_READINGS {
        return Err(format!(
            "{at}: meta.readings has {} entries; at most {MAX_PICTURE_READINGS}",
            m.readings.len()
        ));
    }
    for (d, metric, v) in &m.readings {
        check_device(d).map_err(|why| format!("{at}: meta.readings: {why}"))?;
        if !v.is_finite() {
            return Err(format!(
                "{at}: meta.readings: {metric} of `{}` is not finite",
                truncate(d)
            ));
        }
    }
    Ok(())
}

/// How far ahead of the aggregator's clock a status time may be (clock skew): a later one
/// would win over every real status until then (the store keeps the newest).
pub const MAX_STATUS_AHEAD_MS: i64 = 300_000;

/// A topic naming a gateway without a key: the name is made up by whoever published, so it is
/// neither a log key (`gateway` is none) nor quoted in full.
fn unknown_gateway(gw: &str) -> Reject {
    reject(
        Reason::UnknownGateway,
        None,
        format!("no key configured for gateway `{}`", truncate(gw)),
    )
}

/// Validates one `status` message: sealed with the gateway's key like `up` (the Last Will too,
/// sealed when the gateway connects), and not timed further than [`MAX_STATUS_AHEAD_MS`] after
/// `now_ms`. Returns the gateway and its status. Pure.
pub fn validate_status<'t>(
    topic: &'t str,
    payload: &[u8],
    keys: &Keys,
    now_ms: i64,
) -> Result<(&'t str, Status), Reject> {
    if payload.len() > 4096 {
        return Err(reject(Reason::Oversized, None, "status over 4096 bytes"));
    }
    let gw = match wire::parse_topic(topic) {
        Some((gw, Channel::Status)) => gw,
        _ => {
            return Err(reject(
                Reason::BadTopic,
                None,
                format!(
                    "`{}` is not fumegrid/v1/{{gateway}}/status",
                    truncate(topic)
                ),
            ));
        }
    };
    let Some(key) = keys.get(gw) else {
        return Err(unknown_gateway(gw));
    };
    let status: Status = wire::open(payload, key).map_err(|e| match e {
        SealError::NoMac => reject(Reason::NoMac, Some(gw), format!("status: {e}")),
        SealError::BadMac => reject(Reason::BadMac, Some(gw), format!("status: {e}")),
        SealError::Json(m) => reject(Reason::BadStatus, Some(gw), m),
    })?;
    if let Some(ts) = status.ts_ms
        && ts > now_ms.saturating_add(MAX_STATUS_AHEAD_MS)
    {
        return Err(reject(
            Reason::BadStatus,
            Some(gw),
            format!(
                "status time {ts} is {} s ahead of the aggregator's clock (at most {} s allowed)",
                (ts - now_ms) / 1000,
                MAX_STATUS_AHEAD_MS / 1000
            ),
        ));
    }
    Ok((gw, status))
}

/// Inclusive ranges covering `seqs`, merged: `[1,2,3,5]` → `[(1,3),(5,5)]`.
pub fn ranges(seqs: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut v: Vec<u64> = seqs.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in v {
        match out.last_mut() {
            Some((_, to)) if to.checked_add(1) == Some(s) => *to = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn truncate(s: &str) -> &str {
    fumegrid_common::text::clip(s, 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fumegrid_common::metric::Metric;
    use fumegrid_common::reading::{Quality, Reading};
    use fumegrid_common::wire::{Item, State, seal, topic};

    fn good_track(n: usize) -> wire::Track {
        wire::Track {
            drone: "DJI-M30_1".into(),
            points: (0..n)
                .map(|i| wire::TrackPoint {
                    ts_ms: 1_000 + i as i64 * 100,
                    lat: 39.9,
                    lon: 116.4,
                    alt_m: 60.0,
                    rel_alt_m: Some(-3.0),
                    heading_deg: Some(359.9),
                    speed_m_s: Some(0.0),
                    battery_pct: Some(100),
                })
                .collect(),
        }
    }

    #[test]
    fn tracks_are_checked_point_by_point() {
        assert_eq!(check_track(&good_track(1)), Ok(()));
        assert_eq!(check_track(&good_track(wire::TRACK_MAX_POINTS)), Ok(()));
        let e = check_track(&good_track(wire::TRACK_MAX_POINTS + 1)).expect_err("refused");
        assert!(e.contains("601 points"), "{e}");
        assert!(
            check_track(&good_track(0))
                .expect_err("refused")
                .contains("0 points")
        );
        type Edit = fn(&mut wire::Track);
        let cases: [(Edit, &str); 12] = [
            (|t| t.drone = String::new(), "drone id ``"),
            (|t| t.drone = "a/b".into(), "drone id `a/b`"),
            (|t| t.drone = "x".repeat(65), "must be 1..=64"),
            (
                |t| t.points[2].ts_ms = t.points[1].ts_ms,
                "point 2 at 1100: ts_ms is not after",
            ),
            (
                |t| t.points[1].ts_ms = 0,
                "point 1 at 0: ts_ms is not after the previous point's 1000",
            ),
            (
                |t| t.points[0].lat = 90.5,
                "point 0 at 1000: lat 90.5 is not a latitude",
            ),
            (|t| t.points[0].lon = f64::NAN, "lon NaN is not a longitude"),
            (|t| t.points[0].lon = -180.1, "lon -180.1"),
            (
                |t| t.points[2].alt_m = 12_000.0,
                "point 2 at 1200: alt_m 12000",
            ),
            (|t| t.points[0].heading_deg = Some(360.0), "heading_deg 360"),
            (|t| t.points[0].speed_m_s = Some(-1.0), "speed_m_s -1"),
            (|t| t.points[0].battery_pct = Some(101), "battery_pct"),
        ];
        for (edit, want) in cases {
            let mut t = good_track(3);
            edit(&mut t);
            let e = check_track(&t).expect_err(want);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        // Edges are in.
        let mut t = good_track(1);
        t.points[0].lat = -90.0;
        t.points[0].lon = 180.0;
        t.points[0].alt_m = -500.0;
        t.points[0].heading_deg = Some(0.0);
        assert_eq!(check_track(&t), Ok(()));
    }

    #[test]
    fn photos_are_checked() {
        let good = wire::DronePhoto {
            drone: "m1".into(),
            ts_ms: 5,
            lat: 39.9,
            lon: 116.4,
            alt_m: 50.0,
            index: 7,
            file: Some("/DCIM/7.jpg".into()),
            ok: true,
            sha256: Some("0f".repeat(32)),
        };
        assert_eq!(check_photo(&good), Ok(()));
        let bad_hash = wire::DronePhoto {
            sha256: Some("0F".repeat(32)),
            ..good.clone()
        };
        assert!(
            check_photo(&bad_hash)
                .expect_err("refused")
                .contains("photo 7 of `m1` at 5: sha256")
        );
        let bad_lat = wire::DronePhoto {
            lat: -91.0,
            ..good.clone()
        };
        assert!(
            check_photo(&bad_lat)
                .expect_err("refused")
                .contains("lat -91")
        );
        let long_file = wire::DronePhoto {
            file: Some("f".repeat(513)),
            ..good.clone()
        };
        assert!(
            check_photo(&long_file)
                .expect_err("refused")
                .contains("512")
        );
        let bad_id = wire::DronePhoto {
            drone: "m 1".into(),
            ..good
        };
        assert!(
            check_photo(&bad_id)
                .expect_err("refused")
                .contains("drone id")
        );
    }

    #[test]
    fn a_batch_with_a_bad_track_is_refused_naming_the_item() {
        let mut t = good_track(2);
        t.points[1].lat = 100.0;
        let b = Batch {
            gateway: "gw-a".into(),
            stream: "s".into(),
            sent_ms: 0,
            items: vec![
                Item {
                    seq: 1,
                    body: Body::Track(good_track(2)),
                },
                Item {
                    seq: 2,
                    body: Body::Track(t),
                },
            ],
        };
        let payload = seal(&b, KEY_A);
        let limits = Limits {
            max_payload_bytes: 1 << 20,
            max_items: 100,
        };
        let m = refused_at(
            validate_up(&topic("gw-a", Channel::Up), &payload, &keys(), limits),
            2,
        );
        assert!(
            m.starts_with("item seq 2 refused: track of `DJI-M30_1` point 1"),
            "{m}"
        );
        let ok = Batch {
            items: vec![b.items[0].clone()],
            ..b
        };
        let payload = seal(&ok, KEY_A);
        assert!(validate_up(&topic("gw-a", Channel::Up), &payload, &keys(), limits).is_ok());
    }

    const KEY_A: &[u8] = b"key-of-gateway-a-32-bytes-long!!";
    const KEY_B: &[u8] = b"key-of-gateway-b-32-bytes-long!!";

    fn keys() -> Keys {
        Keys::new([
            ("gw-a".to_string(), KEY_A.to_vec()),
            ("gw-b".to_string(), KEY_B.to_vec()),
        ])
    }

    const LIMITS: Limits = Limits {
        max_payload_bytes: 64 * 1024,
        max_items: 100,
    };

    fn batch(gw: &str, seqs: &[u64]) -> Batch {
        Batch {
            gateway: gw.into(),
            stream: "s1".into(),
            sent_ms: 1,
            items: seqs
                .iter()
                .map(|&seq| Item {
                    seq,
                    body: Body::Reading(Reading {
                        device: "rest-1".into(),
                        unit: None,
                        metric: Metric::FumeMgM3,
                        value: Some(1.5),
                        quality: Quality::Ok,
                        ts_ms: 1000 + seq as i64,
                    }),
                })
                .collect(),
        }
    }

    fn up(gw: &str) -> String {
        topic(gw, Channel::Up)
    }

    fn reason(r: Result<Batch, Reject>) -> Reason {
        r.expect_err("should be rejected").reason
    }

    /// The batch was accepted with exactly item `seq` refused: its `item_refused` message.
    fn refused_at(r: Result<Batch, Reject>, seq: u64) -> String {
        let b = r.expect("a batch with a bad item is accepted, the item refused alone");
        let refused: Vec<(u64, &str)> = refused_items(&b).collect();
        assert_eq!(refused.len(), 1, "one item refused: {refused:?}");
        assert_eq!(refused[0].0, seq);
        assert!(
            refused[0]
                .1
                .starts_with(&format!("item seq {seq} refused: ")),
            "{}",
            refused[0].1
        );
        refused[0].1.to_string()
    }

    #[test]
    fn an_unreadable_item_is_refused_alone_and_the_rest_of_its_batch_stands() {
        let good = batch("gw-a", &[1, 3]);
        let mut v = serde_json::to_value(&good).expect("json");
        // A newer gateway's item kind, and a reading whose value is text.
        let items = v["items"].as_array_mut().expect("items");
        items.insert(
            1,
            serde_json::json!({"seq": 2, "body": {"kind": "hovercraft", "data": {"x": 1}}}),
        );
        items[2]["body"]["data"]["value"] = serde_json::json!("high");
        let b = validate_up(&up("gw-a"), &seal(&v, KEY_A), &keys(), LIMITS).expect("accepted");
        assert_eq!(b.items.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(b.items[0], good.items[0], "the good item is untouched");
        let refused: Vec<(u64, &str)> = refused_items(&b).collect();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].1.contains("cannot read its body"), "{refused:?}");
        assert!(
            refused[0].1.contains("hovercraft"),
            "its body is kept: {refused:?}"
        );
        assert!(refused[1].1.contains("\"high\""), "{refused:?}");
        // The envelope itself is still all or nothing.
        let mut v = serde_json::to_value(&good).expect("json");
        v["items"][0]["sequence"] = serde_json::json!(1);
        assert_eq!(
            reason(validate_up(&up("gw-a"), &seal(&v, KEY_A), &keys(), LIMITS)),
            Reason::UnknownField
        );
        // A gateway may not write the aggregator's own refusal.
        let mut b = batch("gw-a", &[1]);
        b.items[0] = refuse_item(1, 1, "forged", "{}");
        let m = refused_at(
            validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS),
            1,
        );
        assert!(m.contains("aggregator's own event kind"), "{m}");
    }

    #[test]
    fn good_batch_is_accepted() {
        let b = batch("gw-a", &[1, 2, 3]);
        let got = validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS);
        assert_eq!(got, Ok(b));
    }

    #[test]
    fn unknown_gateway() {
        let b = batch("gw-x", &[1]);
        let r = validate_up(&up("gw-x"), &seal(&b, KEY_A), &keys(), LIMITS);
        assert_eq!(reason(r.clone()), Reason::UnknownGateway);
        let r = r.expect_err("rejected");
        // The name is made up by whoever published: named in the detail, not a log key.
        assert_eq!(r.gateway, None);
        assert!(r.detail.contains("`gw-x`"), "{}", r.detail);
    }

    #[test]
    fn bad_mac_and_no_mac() {
        let b = batch("gw-a", &[1]);
        let mut p = seal(&b, KEY_A);
        let n = p.len();
        p[n - 5] = if p[n - 5] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            reason(validate_up(&up("gw-a"), &p, &keys(), LIMITS)),
            Reason::BadMac
        );
        let plain = serde_json::to_vec(&b).expect("json");
        assert_eq!(
            reason(validate_up(&up("gw-a"), &plain, &keys(), LIMITS)),
            Reason::NoMac
        );
    }

    #[test]
    fn gateway_a_cannot_publish_as_b() {
        // A seals with its own key but publishes on B's topic (body says A or B): B's key fails.
        for body_gw in ["gw-a", "gw-b"] {
            let p = seal(&batch(body_gw, &[1]), KEY_A);
            assert_eq!(
                reason(validate_up(&up("gw-b"), &p, &keys(), LIMITS)),
                Reason::BadMac
            );
        }
        // A on its own topic, claiming to be B in the body.
        let p = seal(&batch("gw-b", &[1]), KEY_A);
        assert_eq!(
            reason(validate_up(&up("gw-a"), &p, &keys(), LIMITS)),
            Reason::GatewayMismatch
        );
    }

    #[test]
    fn malformed_json_and_unknown_field() {
        let junk =
            serde_json::json!({"gateway": "gw-a", "stream": "s", "items": "nope", "sent_ms": 1});
        assert_eq!(
            reason(validate_up(
                &up("gw-a"),
                &seal(&junk, KEY_A),
                &keys(),
                LIMITS
            )),
            Reason::Malformed
        );
        let extra = serde_json::json!({"gateway": "gw-a", "stream": "s", "sent_ms": 1, "items": [], "extra": 1});
        assert_eq!(
            reason(validate_up(
                &up("gw-a"),
                &seal(&extra, KEY_A),
                &keys(),
                LIMITS
            )),
            Reason::UnknownField
        );
        assert_eq!(
            reason(validate_up(
                &up("gw-a"),
                b"\xff\x00garbage",
                &keys(),
                LIMITS
            )),
            Reason::NoMac
        );
    }

    #[test]
    fn oversized_topic_stream_seq_item() {
        let big = batch("gw-a", &(0..99).collect::<Vec<_>>());
        let p = seal(&big, KEY_A);
        let small = Limits {
            max_payload_bytes: 1000,
            ..LIMITS
        };
        assert_eq!(
            reason(validate_up(&up("gw-a"), &p, &keys(), small)),
            Reason::Oversized
        );
        let ok = seal(&batch("gw-a", &[1]), KEY_A);
        assert_eq!(
            reason(validate_up("fumegrid/v1/gw-a/ack", &ok, &keys(), LIMITS)),
            Reason::BadTopic
        );
        assert_eq!(
            reason(validate_up("x/y", &ok, &keys(), LIMITS)),
            Reason::BadTopic
        );
        let mut s = batch("gw-a", &[1]);
        s.stream.clear();
        assert_eq!(
            reason(validate_up(&up("gw-a"), &seal(&s, KEY_A), &keys(), LIMITS)),
            Reason::BadStream
        );
        for seqs in [&[][..], &[3, 1, 3][..]] {
            let b = batch("gw-a", seqs);
            assert_eq!(
                reason(validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS)),
                Reason::BadSeq
            );
        }
        let b = batch("gw-a", &(0..101).collect::<Vec<_>>());
        assert_eq!(
            reason(validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS)),
            Reason::BadSeq
        );
        let mut d = batch("gw-a", &[1]);
        if let Body::Reading(r) = &mut d.items[0].body {
            r.device.clear();
        }
        let m = refused_at(
            validate_up(&up("gw-a"), &seal(&d, KEY_A), &keys(), LIMITS),
            1,
        );
        assert!(m.contains("device"), "{m}");
        // Out of order but unique is fine.
        let b = batch("gw-a", &[5, 1, 3]);
        assert!(validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS).is_ok());
    }

    fn alarm(phase: AlarmPhase) -> Alarm {
        Alarm {
            id: "rest-1:exceedance:fume_mg_m3:1000".into(),
            device: "rest-1".into(),
            kind: fumegrid_common::wire::AlarmKind::Exceedance,
            metric: Some(Metric::FumeMgM3),
            phase,
            started_ms: 1000,
            ts_ms: 5000,
            cleared_ms: (phase == AlarmPhase::Cleared).then_some(5000),
            value: Some(2.5),
            peak: Some(2.8),
            peak_ms: Some(3000),
            limit: Some(2.0),
            suppressed: false,
            message: "10-min average 2.5 mg/m³ over the 2.0 limit".into(),
        }
    }

    fn with_alarm(a: Alarm) -> Batch {
        let mut b = batch("gw-a", &[1, 2]);
        b.items[1].body = Body::Alarm(a);
        b
    }

    #[test]
    fn good_alarms_are_accepted() {
        for phase in [AlarmPhase::Raised, AlarmPhase::Updated, AlarmPhase::Cleared] {
            let b = with_alarm(alarm(phase));
            let got = validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS);
            assert_eq!(got, Ok(b), "{phase:?}");
        }
        // Optional numbers absent, started = ts, no metric (device_offline).
        let mut a = alarm(AlarmPhase::Raised);
        a.kind = fumegrid_common::wire::AlarmKind::DeviceOffline;
        (a.metric, a.value, a.peak, a.peak_ms, a.limit) = (None, None, None, None, None);
        a.started_ms = a.ts_ms;
        a.id = "x".repeat(256);
        assert!(check_alarm(&a).is_ok());
    }

    #[test]
    fn custom_metrics_come_with_their_unit() {
        let x = Metric::parse("x_run_hours").expect("valid");
        let with = |metric: Metric, unit: Option<&str>| {
            let mut b = batch("gw-a", &[1]);
            if let Body::Reading(r) = &mut b.items[0].body {
                r.metric = metric;
                r.unit = unit.map(String::from);
            }
            validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS)
        };
        let ok = with(x, Some("h")).expect("accepted");
        let Body::Reading(r) = &ok.items[0].body else {
            panic!("a reading");
        };
        assert_eq!(
            (r.metric.name(), r.unit.as_deref()),
            ("x_run_hours", Some("h"))
        );
        // What a gateway from before custom metrics sends is unchanged, and still accepted.
        let old = seal(&batch("gw-a", &[1]), KEY_A);
        assert!(!String::from_utf8_lossy(&old).contains("\"unit\""));
        assert!(validate_up(&up("gw-a"), &old, &keys(), LIMITS).is_ok());
        for (metric, unit, want) in [
            (x, None, "carries no unit"),
            (x, Some(""), "the unit is empty"),
            (Metric::FumeMgM3, Some("h"), "carries a unit"),
        ] {
            let m = refused_at(with(metric, unit), 1);
            assert!(m.contains(want), "{m}");
        }
    }

    #[test]
    fn bad_alarms_are_bad_item_with_a_detail() {
        let cases: Vec<(Alarm, &str)> = vec![
            (
                Alarm {
                    id: String::new(),
                    ..alarm(AlarmPhase::Raised)
                },
                "alarm id must be 1..=256 characters",
            ),
            (
                Alarm {
                    id: "x".repeat(257),
                    ..alarm(AlarmPhase::Raised)
                },
                "alarm id must be 1..=256 characters, got 257",
            ),
            (
                Alarm {
                    device: String::new(),
                    ..alarm(AlarmPhase::Raised)
                },
                "device id must be 1..=128 characters",
            ),
            (
                Alarm {
                    device: "d".repeat(129),
                    ..alarm(AlarmPhase::Updated)
                },
                "device id must be 1..=128 characters",
            ),
            (
                Alarm {
                    started_ms: 6000,
                    ..alarm(AlarmPhase::Raised)
                },
                "started_ms 6000 is after ts_ms 5000",
            ),
            (
                Alarm {
                    cleared_ms: None,
                    ..alarm(AlarmPhase::Cleared)
                },
                "phase cleared without cleared_ms",
            ),
            (
                Alarm {
                    cleared_ms: Some(500),
                    ..alarm(AlarmPhase::Cleared)
                },
                "cleared_ms 500 is before started_ms 1000",
            ),
            (
                Alarm {
                    cleared_ms: Some(5000),
                    ..alarm(AlarmPhase::Updated)
                },
                "cleared_ms is only allowed with phase cleared",
            ),
            (
                Alarm {
                    value: Some(f64::NAN),
                    ..alarm(AlarmPhase::Raised)
                },
                "value is not a finite number",
            ),
            (
                Alarm {
                    peak: Some(f64::INFINITY),
                    ..alarm(AlarmPhase::Raised)
                },
                "peak is not a finite number",
            ),
            (
                Alarm {
                    limit: Some(f64::NEG_INFINITY),
                    ..alarm(AlarmPhase::Raised)
                },
                "limit is not a finite number",
            ),
        ];
        for (a, want) in cases {
            let why = check_alarm(&a).expect_err(want);
            assert!(why.contains(want), "{why} does not say {want}");
            // Non-finite numbers cannot be written as JSON; the others go through validate_up.
            if !want.contains("finite") {
                let r = validate_up(&up("gw-a"), &seal(&with_alarm(a), KEY_A), &keys(), LIMITS);
                let m = refused_at(r, 2);
                assert!(m.contains(want), "{m}");
            }
        }
    }

    fn picture_meta() -> wire::EvidenceMeta {
        wire::EvidenceMeta {
            camera: "cam-1".into(),
            devices: vec!["rest-1".into()],
            captured_ms: 1_000,
            trigger: wire::Trigger::AlarmRaised,
            alarm: Some("rest-1:exceedance:1000".into()),
            request: None,
            media: wire::Media::Jpeg,
            size: 0,
            width: Some(640),
            height: Some(480),
            site: "Food Street".into(),
            readings: vec![("rest-1".into(), Metric::FumeMgM3, 2.5)],
        }
    }

    #[test]
    fn good_picture_parts_are_accepted() {
        let bytes: Vec<u8> = (0..(wire::EVIDENCE_PART_BYTES + 7))
            .map(|i| i as u8)
            .collect();
        let parts = crate::store::evidence::split(&bytes, picture_meta());
        let mut b = batch("gw-a", &[1, 2, 3]);
        b.items[0].body = Body::Evidence(parts[0].clone());
        b.items[2].body = Body::Evidence(parts[1].clone());
        let limits = Limits {
            max_payload_bytes: 1 << 20,
            ..LIMITS
        };
        assert_eq!(
            validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), limits),
            Ok(b)
        );
    }

    #[test]
    fn bad_picture_parts_are_bad_item_naming_the_field() {
        let bytes = vec![7u8; 100];
        let good = crate::store::evidence::split(&bytes, picture_meta()).remove(0);
        assert_eq!(check_evidence(&good), Ok(()));
        let with = |f: &dyn Fn(&mut wire::Evidence)| {
            let mut e = good.clone();
            f(&mut e);
            e
        };
        let cases: Vec<(wire::Evidence, &str)> = vec![
            (
                with(&|e| e.sha256 = e.sha256.to_uppercase()),
                "not 64 lowercase hex",
            ),
            (with(&|e| e.sha256.push('0')), "not 64 lowercase hex"),
            (with(&|e| e.meta.size = 0), "meta.size 0"),
            (
                with(&|e| e.meta.size = wire::EVIDENCE_MAX_BYTES + 1),
                "meta.size 8388609",
            ),
            (with(&|e| e.parts = 2), "needs 1 parts"),
            (
                with(&|e| {
                    e.parts = 2;
                    e.part = 2;
                    e.meta.size = wire::EVIDENCE_PART_BYTES as u64 + 1;
                }),
                "part 2 is not below parts 2",
            ),
            (
                with(&|e| e.data.push_str("AAAA")),
                "data is 140 base64 characters",
            ),
            (
                with(&|e| e.data.replace_range(0..4, "!!!!")),
                "not standard base64",
            ),
            (with(&|e| e.meta.size = 99), "a part of 99 bytes"),
            (with(&|e| e.meta.camera = "Cam 1".into()), "meta.camera"),
            (with(&|e| e.meta.devices.clear()), "meta.devices has 0"),
            (
                with(&|e| e.meta.devices = vec![String::new()]),
                "meta.devices: device id",
            ),
            (with(&|e| e.meta.captured_ms = 0), "meta.captured_ms 0"),
            (with(&|e| e.meta.alarm = Some(String::new())), "meta.alarm"),
            (
                with(&|e| e.meta.trigger = wire::Trigger::Request),
                "without meta.request",
            ),
            (
                with(&|e| e.meta.request = Some("r".repeat(129))),
                "meta.request",
            ),
            (with(&|e| e.meta.width = Some(0)), "meta.width"),
            (with(&|e| e.meta.site = "s".repeat(129)), "meta.site"),
            (
                with(&|e| e.meta.readings[0].2 = f64::NAN),
                "meta.readings: fume_mg_m3",
            ),
        ];
        for (e, want) in cases {
            let why = check_evidence(&e).expect_err(want);
            assert!(why.contains(want), "{why} does not say {want}");
            assert!(why.len() < 300, "bounded: {why}");
            if e.meta.readings.iter().all(|r| r.2.is_finite()) {
                let mut b = batch("gw-a", &[1, 2]);
                b.items[1].body = Body::Evidence(e);
                let r = validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS);
                let m = refused_at(r, 2);
                assert!(m.contains(want), "{m}");
            }
        }
    }

    fn period() -> wire::Period {
        wire::Period {
            device: "rest-1".into(),
            start_ms: 1_765_000_020_000,
            period_s: 60,
            metrics: vec![
                wire::PeriodMetric {
                    metric: Metric::FumeMgM3,
                    unit: None,
                    polls: 60,
                    count: 58,
                    avg: Some(1.2),
                    min: Some(0.9),
                    max: Some(2.5),
                    last: Some(1.1),
                    valid: true,
                },
                wire::PeriodMetric {
                    metric: Metric::parse("x_fan_hz").expect("valid"),
                    unit: Some("Hz".into()),
                    polls: 60,
                    count: 0,
                    avg: None,
                    min: None,
                    max: None,
                    last: None,
                    valid: false,
                },
            ],
        }
    }

    fn with_period(p: wire::Period) -> Result<Batch, Reject> {
        let mut b = batch("gw-a", &[1]);
        b.items[0].body = Body::Period(p);
        validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS)
    }

    #[test]
    fn good_periods_are_accepted() {
        let ok = with_period(period()).expect("accepted");
        assert!(matches!(&ok.items[0].body, Body::Period(p) if p.metrics.len() == 2));
        // A day-long period at midnight UTC; a one-second one anywhere; equal bounds.
        let mut p = period();
        (p.start_ms, p.period_s) = (1_764_979_200_000, 86_400);
        assert!(check_period(&p).is_ok());
        (p.start_ms, p.period_s) = (1_764_979_200_001, 1);
        assert!(check_period(&p).is_err(), "ms are not aligned to 1 s");
        p.start_ms = 1_764_979_201_000;
        let m = &mut p.metrics[0];
        (m.avg, m.min, m.max, m.last, m.count, m.polls) =
            (Some(2.0), Some(2.0), Some(2.0), Some(2.0), 1, 1);
        assert!(check_period(&p).is_ok());
    }

    #[test]
    fn bad_periods_are_bad_item_naming_the_rule() {
        type Edit = fn(&mut wire::Period);
        let cases: Vec<(Edit, &str)> = vec![
            (|p| p.device = String::new(), "device id must be 1..=128"),
            (|p| p.period_s = 0, "period_s 0 must be 1..=86400"),
            (|p| p.period_s = 86_401, "period_s 86401 must be 1..=86400"),
            (
                |p| p.start_ms += 1000,
                "start_ms is not a multiple of period_s 60",
            ),
            (|p| p.metrics.clear(), "no metrics"),
            (
                |p| p.metrics.push(p.metrics[0].clone()),
                "metric `fume_mg_m3` appears twice",
            ),
            (
                |p| p.metrics[1].unit = None,
                "custom metric `x_fan_hz` carries no unit",
            ),
            (
                |p| p.metrics[0].unit = Some("mg".into()),
                "canonical metric `fume_mg_m3` carries a unit",
            ),
            (
                |p| p.metrics[0].count = 61,
                "count 61 is more than polls 60",
            ),
            (
                |p| p.metrics[0].avg = Some(f64::NAN),
                "avg is not a finite number",
            ),
            (
                |p| p.metrics[0].max = Some(f64::INFINITY),
                "max is not a finite number",
            ),
            (
                |p| p.metrics[0].avg = Some(3.0),
                "avg 3 is not within min 0.9 … max 2.5",
            ),
            (
                |p| p.metrics[0].last = Some(0.5),
                "last 0.5 is not within min 0.9 … max 2.5",
            ),
            (
                |p| p.metrics[0].min = Some(2.6),
                "avg 1.2 is not within min 2.6",
            ),
            (|p| p.metrics[0].last = None, "count 58 but last absent"),
            (
                |p| (p.metrics[0].avg, p.metrics[0].min) = (None, None),
                "count 58 but avg/min absent",
            ),
            (
                |p| p.metrics[1].avg = Some(1.0),
                "count is 0 but avg/min/max/last are present",
            ),
        ];
        for (edit, want) in cases {
            let mut p = period();
            edit(&mut p);
            let e = check_period(&p).expect_err(want);
            assert!(
                e.starts_with("period") && e.contains(want),
                "want `{want}` in `{e}`"
            );
            // JSON has no NaN or infinity (serde_json writes them as null): on the wire those
            // arrive as an absent aggregate, refused as such.
            let m = refused_at(with_period(p), 1);
            assert!(m.starts_with("item seq 1 refused: period"), "{m}");
        }
    }

    #[test]
    fn status_documents_are_sealed_and_not_from_the_future() {
        let t = topic("gw-a", Channel::Status);
        let now = 1_700_000_000_000;
        let online = |ts: i64| serde_json::json!({"state": "online", "ts_ms": ts});
        let (gw, s) = validate_status(&t, &seal(&online(now), KEY_A), &keys(), now).expect("valid");
        assert_eq!((gw, s.state), ("gw-a", State::Online));
        // The Last Will: sealed, without a time.
        let will = seal(&serde_json::json!({"state": "offline"}), KEY_A);
        assert!(validate_status(&t, &will, &keys(), now).is_ok());
        let r = |p: &[u8]| validate_status(&t, p, &keys(), now).expect_err("refused");
        assert_eq!(r(br#"{"state":"online","ts_ms":5}"#).reason, Reason::NoMac);
        assert_eq!(r(&seal(&online(now), KEY_B)).reason, Reason::BadMac);
        assert_eq!(
            r(&seal(&serde_json::json!({"state": "sleepy"}), KEY_A)).reason,
            Reason::BadStatus
        );
        // Within the skew allowance, and beyond it.
        assert!(
            validate_status(
                &t,
                &seal(&online(now + MAX_STATUS_AHEAD_MS), KEY_A),
                &keys(),
                now
            )
            .is_ok()
        );
        let far = r(&seal(&online(4_102_444_800_000), KEY_A));
        assert_eq!(far.reason, Reason::BadStatus);
        assert!(far.detail.contains("ahead"), "{}", far.detail);
        let unknown = validate_status(
            &topic(&"z".repeat(30_000), Channel::Status),
            b"{}",
            &keys(),
            now,
        )
        .expect_err("unknown");
        assert_eq!(unknown.reason, Reason::UnknownGateway);
        assert_eq!(unknown.gateway, None, "a made-up name is not a log key");
        assert!(unknown.detail.len() < 200, "{}", unknown.detail);
    }

    #[test]
    fn ranges_merge() {
        assert_eq!(ranges([5, 1, 2, 3, 3, 7, 8]), vec![(1, 3), (5, 5), (7, 8)]);
        assert_eq!(ranges([]), Vec::<(u64, u64)>::new());
        assert_eq!(
            ranges([u64::MAX, u64::MAX - 1]),
            vec![(u64::MAX - 1, u64::MAX)]
        );
    }

    #[test]
    fn reason_indices_match_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
