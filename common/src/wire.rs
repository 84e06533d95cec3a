//! The MQTT wire contract between gateways and the aggregator (DESIGN.md §3), version `v1`.
//!
//! Topics under `fumegrid/v1/{gateway}/`: `up` (batches, gateway → aggregator, QoS 1),
//! `status` (retained online/offline, Last Will), `ack` (seq ranges durably stored, aggregator →
//! gateway), `cmd` (commands to the gateway).
//!
//! Payloads are JSON with unknown fields rejected. `up`, `status` and `ack` payloads are sealed: the JSON
//! object ends with `,"mac":"<64 hex>"}`, an HMAC-SHA256 with the gateway's key over the same
//! object without that member (`{...}`). The receiver checks the MAC over the exact bytes it got
//! before it parses anything, so no canonical re-serialisation is involved, and the payload stays
//! plain JSON for `mosquitto_sub`.
//!
//! An `up` batch may travel gzip-compressed (issue 14, [`compress`]): the sealed JSON, then
//! gzip (RFC 1952) over it. The receiver tells the two apart by the first bytes (`{` or the
//! gzip magic `1f 8b`), inflates with a hard bound on the output ([`inflate`]) and then checks
//! the seal over the inflated bytes exactly as for a plain payload. `mosquitto_sub -N ... |
//! gunzip` shows the JSON (docs/wire.md).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::reading::Reading;

pub const TOPIC_ROOT: &str = "fumegrid/v1";

/// Which topic of a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Up,
    Status,
    Ack,
    Cmd,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Up => "up",
            Channel::Status => "status",
            Channel::Ack => "ack",
            Channel::Cmd => "cmd",
        }
    }
}

pub fn topic(gateway: &str, channel: Channel) -> String {
    format!("{TOPIC_ROOT}/{gateway}/{}", channel.name())
}

/// `fumegrid/v1/{gateway}/{channel}` → `(gateway, channel)`.
pub fn parse_topic(topic: &str) -> Option<(&str, Channel)> {
    let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?;
    let (gw, ch) = rest.split_once('/')?;
    if gw.is_empty() || gw.contains(['+', '#', '/']) {
        return None;
    }
    let ch = match ch {
        "up" => Channel::Up,
        "status" => Channel::Status,
        "ack" => Channel::Ack,
        "cmd" => Channel::Cmd,
        _ => return None,
    };
    Some((gw, ch))
}

/// One outbox item as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Monotonic per stream; never reused.
    pub seq: u64,
    pub body: Body,
}

/// What an item carries: `{"seq":7,"body":{"kind":"reading","data":{...}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Body {
    Reading(Reading),
    Alarm(Alarm),
    Event(Event),
    /// One part of a camera picture (DESIGN.md §12). A picture of `size` bytes travels as
    /// `parts` items of at most [`EVIDENCE_PART_BYTES`] each, every one with its own seq, so a
    /// batch stays under the broker's packet limit and a 4G link resends one part, not the whole
    /// picture. Every part carries the whole [`EvidenceMeta`], so any part tells the aggregator
    /// what the picture is.
    Evidence(Evidence),
    /// One device's metrics aggregated over one period aligned to the wall clock (DESIGN.md
    /// §13, issue 14): what a gateway on the `period` report strategy sends in place of every
    /// poll. One item carries all of the device's metrics of that period.
    Period(Period),
    /// A stretch of one drone's flight, decimated at the gateway (issue 15, docs/drones.md).
    Track(Track),
    /// A photo a drone reported taking (MAVLink `CAMERA_IMAGE_CAPTURED`): where, when, which
    /// file. The photo's bytes, when they can be had, travel as [`Evidence`] on their own.
    DronePhoto(DronePhoto),
}

impl Body {
    /// Alarms and events go ahead of readings and pictures, and are dropped last when the
    /// outbox is full (never for a reading or a picture).
    pub fn is_priority(&self) -> bool {
        matches!(self, Body::Alarm(_) | Body::Event(_))
    }

    /// When the item happened: a reading's or a transition's time, a picture's capture.
    pub fn ts_ms(&self) -> i64 {
        match self {
            Body::Reading(r) => r.ts_ms,
            Body::Alarm(a) => a.ts_ms,
            Body::Event(e) => e.ts_ms,
            Body::Evidence(e) => e.meta.captured_ms,
            Body::Period(p) => p.start_ms,
            Body::Track(t) => t.points.first().map_or(0, |p| p.ts_ms),
            Body::DronePhoto(p) => p.ts_ms,
        }
    }

    /// A part of a picture: kept under the outbox's own evidence budget.
    pub fn is_evidence(&self) -> bool {
        matches!(self, Body::Evidence(_))
    }
}

/// Shortest and longest period a [`Period`] may cover: 1 s … 1 day.
pub const PERIOD_S_RANGE: std::ops::RangeInclusive<u32> = 1..=86_400;

/// One device's metrics over `[start_ms, start_ms + period_s * 1000)`, HJ 212-2017 minute data
/// in spirit: per metric the average, minimum, maximum and last of the valid polls, how many polls
/// were taken and how many were valid, and whether that was enough.
///
/// `start_ms` is aligned to the wall clock: a multiple of `period_s * 1000` since the Unix epoch
/// (UTC), so two gateways' periods line up and rollups at the aggregator add them without
/// splitting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// Installed device id from the gateway config.
    pub device: String,
    /// Start of the period, ms since the Unix epoch (UTC), a multiple of `period_s * 1000`.
    pub start_ms: i64,
    /// Length of the period in seconds ([`PERIOD_S_RANGE`]).
    pub period_s: u32,
    /// One entry per metric of the device, each metric at most once.
    pub metrics: Vec<PeriodMetric>,
}

/// One metric's aggregate over a [`Period`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodMetric {
    pub metric: crate::metric::Metric,
    /// Unit of an `x_` metric, as on a [`Reading`]; absent for canonical metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Polls of this metric taken in the period (answered or not).
    pub polls: u32,
    /// Of those, how many gave a valid value (quality `ok`): `count <= polls`.
    pub count: u32,
    /// Average, minimum, maximum and last of the valid values; all absent when `count == 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<f64>,
    /// Enough valid polls for the average to stand (the gateway's `min_valid` share of the polls
    /// the period should have had): HJ 212's validity flag. An invalid period is still sent and
    /// stored, flagged, never silently dropped.
    pub valid: bool,
}

/// Most points one [`Track`] item carries: a gateway cuts a longer stretch into several items.
pub const TRACK_MAX_POINTS: usize = 600;

/// A stretch of one drone's flight: positions in time order, already decimated (by time and
/// distance) at the gateway, so an hour of 10 Hz telemetry costs a few hundred points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Track {
    /// Drone id from the gateway config (for a DJI dock, its serial number at the aggregator).
    pub drone: String,
    /// 1 ..= [`TRACK_MAX_POINTS`] points, `ts_ms` strictly increasing.
    pub points: Vec<TrackPoint>,
}

/// One position of a drone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackPoint {
    /// When the drone was there, ms since the Unix epoch (UTC): the gateway's receive time.
    pub ts_ms: i64,
    /// WGS 84 latitude and longitude in degrees (MAVLink's 1e-7 degree integers, divided).
    pub lat: f64,
    pub lon: f64,
    /// Altitude above mean sea level, metres.
    pub alt_m: f64,
    /// Height above the home (take-off) point, metres, when the drone says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_alt_m: Option<f64>,
    /// Heading, degrees 0 ..< 360, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
    /// Ground speed, m/s, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_m_s: Option<f64>,
    /// Battery remaining, percent 0 ..= 100, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
}

/// A photo a drone took: MAVLink `CAMERA_IMAGE_CAPTURED`, or a DJI media report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DronePhoto {
    pub drone: String,
    /// When it was taken (the drone's UTC time when it gives one, else the receive time).
    pub ts_ms: i64,
    /// Where it was taken (WGS 84 degrees, metres above mean sea level).
    pub lat: f64,
    pub lon: f64,
    pub alt_m: f64,
    /// The drone's image index (MAVLink `image_index`): tells photos of one flight apart.
    pub index: i32,
    /// The file as the drone names it (MAVLink `file_url`), when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Whether the drone says the capture succeeded.
    pub ok: bool,
    /// SHA-256 of the photo's bytes when the gateway fetched them and sent them as
    /// [`Evidence`] (so the aggregator links the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Largest decoded `data` of one [`Evidence`] part: 48 KiB (64 KiB as base64), so a batch of
/// one part stays well under the embedded broker's packet limit and a lost part costs one resend
/// of 64 KiB over 4G.
pub const EVIDENCE_PART_BYTES: usize = 48 * 1024;

/// Largest picture the wire carries (and the gateway keeps): 8 MiB. A camera that serves more is
/// refused at capture with a `camera_failed` event.
pub const EVIDENCE_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// One part of a picture's original bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// SHA-256 of the whole picture's original bytes, taken at capture (64 lowercase hex): the
    /// picture's identity and its chain of custody.
    pub sha256: String,
    /// 0-based index of this part; `part < parts`.
    pub part: u32,
    pub parts: u32,
    /// This part's bytes, standard base64 with padding.
    pub data: String,
    pub meta: EvidenceMeta,
}

/// What a picture is; the same in every part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceMeta {
    /// Camera id from the gateway config.
    pub camera: String,
    /// Devices the camera is bound to.
    pub devices: Vec<String>,
    pub captured_ms: i64,
    pub trigger: Trigger,
    /// The alarm episode (`Alarm::id`) the picture belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
    /// The `Command::id` that asked for it (trigger `request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    pub media: Media,
    /// Size of the whole picture in bytes.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// For the caption band: the site (gateway config) ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub site: String,
    /// ... and the last readings of the bound devices at capture: `(device, metric, value)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readings: Vec<(String, crate::metric::Metric, f64)>,
}

/// Why a picture was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// An alarm of a bound device was raised.
    AlarmRaised,
    /// An open alarm was updated (at most every `update_every_s` per camera).
    AlarmUpdated,
    /// The camera's schedule (audit pictures within opening hours).
    Schedule,
    /// A sealed `cmd` from the aggregator.
    Request,
    /// A drone's camera took it (MAVLink `CAMERA_IMAGE_CAPTURED`); the gateway fetched the
    /// bytes. `camera` and the one entry of `devices` are the drone id; the `drone_photo` item
    /// names the picture by its `sha256`.
    Drone,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::AlarmRaised => "alarm_raised",
            Trigger::AlarmUpdated => "alarm_updated",
            Trigger::Schedule => "schedule",
            Trigger::Request => "request",
            Trigger::Drone => "drone",
        }
    }
}

/// What a picture's original bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Media {
    /// A JPEG as the camera served it (HTTP snapshot).
    #[serde(rename = "image/jpeg")]
    Jpeg,
    /// An H.264 keyframe access unit in Annex B form, SPS and PPS included (RTSP).
    #[serde(rename = "video/h264")]
    H264,
    /// An H.265 keyframe access unit in Annex B form, VPS, SPS and PPS included (RTSP).
    #[serde(rename = "video/h265")]
    H265,
}

impl Media {
    pub fn mime(self) -> &'static str {
        match self {
            Media::Jpeg => "image/jpeg",
            Media::H264 => "video/h264",
            Media::H265 => "video/h265",
        }
    }
}

/// A command from the aggregator on `.../cmd`, sealed with the gateway's key like an `ack`.
/// The gateway refuses one that is expired (`expires_ms` before its clock), issued further in
/// the future than the allowed skew, or whose `id` it has already carried out, and reports the
/// refusal as a `command_refused` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Unique id (the aggregator's), carried into what the command produces.
    pub id: String,
    pub gateway: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Take a picture now with `camera`, or with every camera bound to `device`, or with every
    /// camera when both are absent; `alarm` is carried into the picture's metadata.
    Snapshot {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        camera: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alarm: Option<String>,
    },
}

/// One transition of an alarm episode, judged at the edge (DESIGN.md §5). An episode has a
/// stable `id` and goes `raised` → `updated`* → `cleared`; every transition carries the whole
/// picture so far, so the last one received is the episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alarm {
    /// Stable episode id, unique per gateway: `{device}:{kind}[:{metric}]:{started_ms}`.
    pub id: String,
    pub device: String,
    pub kind: AlarmKind,
    /// The metric judged (exceedance, sensor faults); none for purifier and offline alarms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<crate::metric::Metric>,
    pub phase: AlarmPhase,
    /// When the condition started (the first window that counted towards raising).
    pub started_ms: i64,
    /// When this transition was judged.
    pub ts_ms: i64,
    /// Set with `phase = cleared`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_ms: Option<i64>,
    /// The judged value now (e.g. the rolling average), and the worst so far in the episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<f64>,
    /// When the peak was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_ms: Option<i64>,
    /// The limit the value was judged against (exceedance), in the metric's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// The condition happened inside opening-hours or maintenance suppression: recorded, not
    /// alarmed (no case, no notification).
    #[serde(default)]
    pub suppressed: bool,
    /// One line for people, e.g. "10-min average 2.84 mg/m³ over the 2.0 limit (GB 18483-2001)".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// Fume, particulate or NMHC over the standard's limit (rolling average, fan running).
    Exceedance,
    /// Fan running but the purifier off or drawing no current: installed but not used.
    PurifierIdle,
    /// Purifier current or removal efficiency degrading, or fume rising while it runs: used
    /// but not cleaned.
    PurifierDirty,
    /// No valid response from the monitor for the configured time.
    DeviceOffline,
    /// Out of valid range, stuck, or impossible jumps.
    SensorFault,
    /// A technician's own limit on one metric (the gateway's `thresholds`; the only rule that
    /// judges a vendor `x_` metric), crossed for its `after_s`.
    Threshold,
}

impl AlarmKind {
    pub fn name(self) -> &'static str {
        match self {
            AlarmKind::Exceedance => "exceedance",
            AlarmKind::PurifierIdle => "purifier_idle",
            AlarmKind::PurifierDirty => "purifier_dirty",
            AlarmKind::DeviceOffline => "device_offline",
            AlarmKind::SensorFault => "sensor_fault",
            AlarmKind::Threshold => "threshold",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmPhase {
    Raised,
    Updated,
    Cleared,
}

/// Something the gateway itself reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub ts_ms: i64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// For `gap`: how many items were dropped, and the time span they covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The gateway started (after boot, crash or upgrade).
    Started,
    /// The outbox was full and dropped items (readings first).
    Gap,
    /// The outbox store was corrupt at start-up and was moved aside; or it came back older
    /// than what had been handed out (a restored copy, a torn file) and new items were
    /// renumbered past every seq already used (`dropped`: seqs handed out before that neither
    /// the outbox nor the aggregator holds).
    StoreReset,
    /// A camera gave no picture (unreachable, credentials refused, no keyframe within the bound,
    /// garbage, too large, breaker open); `message` names the camera and why.
    CameraFailed,
    /// A command on `cmd` was refused (expired, replayed, unknown camera); `message` says which.
    CommandRefused,
    /// A drone's telemetry stopped: the configured number of heartbeats were missed; `message`
    /// begins with the drone id.
    DroneLinkLost,
    /// A drone's telemetry came back after [`EventKind::DroneLinkLost`].
    DroneLinkRestored,
    /// Written by the aggregator, never by a gateway: an item of a good batch that the
    /// aggregator could not read or that broke the contract is stored as this event in its
    /// place (`message`: why, and the item's body as sent), counted, and acked with its batch,
    /// so one bad item never holds up the items behind it (docs/wire.md "Refused items").
    ItemRefused,
}

/// `up`: items `seq_first..` of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub gateway: String,
    /// Random id minted when the gateway's outbox was created.
    pub stream: String,
    pub sent_ms: i64,
    pub items: Vec<Item>,
}

/// `ack`: seq ranges (inclusive) of `stream` the aggregator has committed.
///
/// The answer to a [`Hello`] is an `Ack` with no ranges and `high`/`held` set. Those two
/// fields are only ever sent in that answer, so a gateway that never says hello (an older
/// one, whose parser refuses unknown fields) never sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub stream: String,
    pub ranges: Vec<(u64, u64)>,
    /// Answer to a hello: the highest seq of `stream` the aggregator holds (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<u64>,
    /// Answer to a hello: how many seqs in `from_seq..=high` the aggregator holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<u64>,
}

impl Ack {
    /// A plain ack of `ranges`.
    pub fn of(stream: String, ranges: Vec<(u64, u64)>) -> Ack {
        Ack {
            stream,
            ranges,
            high: None,
            held: None,
        }
    }
}

/// `up`, before a gateway sends anything new after it starts: "what do you hold of my
/// stream?" The aggregator answers on `ack` with `high` and `held` (see [`Ack`]), so that a
/// gateway whose outbox came back older than what was already delivered (a restored copy, a
/// torn file) never reuses a seq. Sealed like a batch; told apart from one by `from_seq` in
/// place of `items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub gateway: String,
    pub stream: String,
    pub sent_ms: i64,
    /// The lowest seq the gateway may have handed out before and lost since (its outbox's
    /// next seq as recovered at open); the answer's `held` counts from here.
    pub from_seq: u64,
}

/// `status` (retained, sealed with the gateway's key): `online` with the time on connect,
/// `offline` on a clean stop, and `offline` without a time as the Last Will. The aggregator keeps
/// the newest by `ts_ms` (one without a time always wins) and refuses a time further ahead of its
/// own clock than a small skew allowance, so a forged far-future status cannot pin the flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Online,
    Offline,
}

/// Length of the sealed suffix `,"mac":"<64 hex>"}`.
const SUFFIX_LEN: usize = 8 + 64 + 2;

/// Why a sealed payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not a sealed payload (no trailing \"mac\" member)")]
    NoMac,
    #[error("bad MAC: not signed with this gateway's key")]
    BadMac,
    #[error("malformed JSON: {0}")]
    Json(String),
}

fn mac_of(key: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the error case cannot happen.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(body);
    m
}

/// Serialises `value` (a JSON object) and appends its MAC as the last member.
pub fn seal<T: Serialize>(value: &T, key: &[u8]) -> Vec<u8> {
    seal_bytes(serde_json::to_vec(value).unwrap_or_default(), key)
}

/// Seals bytes that are meant to be a JSON object ending in `}` (not checked: tests use it to
/// forge well-signed garbage).
pub fn seal_bytes(mut body: Vec<u8>, key: &[u8]) -> Vec<u8> {
    let tag = mac_of(key, &body).finalize().into_bytes();
    body.pop(); // the closing brace
    body.extend_from_slice(b",\"mac\":\"");
    body.extend_from_slice(hex::encode(tag).as_bytes());
    body.extend_from_slice(b"\"}");
    body
}

/// Checks the MAC over the exact bytes received, then parses. Unknown fields are refused.
pub fn open<T: for<'de> Deserialize<'de>>(payload: &[u8], key: &[u8]) -> Result<T, SealError> {
    let signed = open_raw(payload, key)?;
    serde_json::from_slice(&signed).map_err(|e| SealError::Json(e.to_string()))
}

/// The JSON object a sealed payload carries, without its `mac` member, once the MAC is
/// verified; unparsed (for a reader that reads it its own way).
pub fn open_raw(payload: &[u8], key: &[u8]) -> Result<Vec<u8>, SealError> {
    let (body, suffix) = split_sealed(payload)?;
    let tag_hex = &suffix[8..8 + 64];
    let mut tag = [0u8; 32];
    hex::decode_to_slice(tag_hex, &mut tag).map_err(|_| SealError::NoMac)?;
    let mut signed = body.to_vec();
    signed.push(b'}');
    mac_of(key, &signed)
        .verify_slice(&tag)
        .map_err(|_| SealError::BadMac)?;
    Ok(signed)
}

/// Splits a sealed payload into the object without its last member, and the `mac` suffix.
fn split_sealed(payload: &[u8]) -> Result<(&[u8], &[u8]), SealError> {
    if payload.len() < SUFFIX_LEN + 2 {
        return Err(SealError::NoMac);
    }
    let (body, suffix) = payload.split_at(payload.len() - SUFFIX_LEN);
    if !suffix.starts_with(b",\"mac\":\"") || !suffix.ends_with(b"\"}") {
        return Err(SealError::NoMac);
    }
    Ok((body, suffix))
}

/// The first two bytes of a gzip member (RFC 1952): a compressed `up` payload. A plain one is a
/// JSON object and starts with `{`.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A sealed payload, gzip-compressed (miniz_oxide, default level 6; sizes in BENCHMARKS.md,
/// "Data lifecycle (issue 14) — the gateway side").
pub fn compress(sealed: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(sealed.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(sealed);
    enc.finish().unwrap_or_default()
}

/// True if `payload` is gzip (see [`GZIP_MAGIC`]).
pub fn is_compressed(payload: &[u8]) -> bool {
    payload.starts_with(&GZIP_MAGIC)
}

/// Why a compressed payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates to more than the bound (a zip bomb, or a batch too large): stopped there.
    #[error("inflates to more than {limit} bytes")]
    TooLarge { limit: usize },
    /// Not a whole, intact gzip member (bad header, bad deflate data, CRC or length mismatch),
    /// or bytes after it.
    #[error("not a valid gzip payload: {0}")]
    Corrupt(String),
}

/// Inflates one gzip member, reading at most `max_out` bytes of output (never more, whatever
/// the input claims), and refuses anything after the member.
pub fn inflate(payload: &[u8], max_out: usize) -> Result<Vec<u8>, InflateError> {
    use std::io::Read;
    let mut dec = flate2::bufread::GzDecoder::new(payload);
    let mut out = Vec::with_capacity((payload.len() * 4).min(max_out));
    let limit = u64::try_from(max_out).unwrap_or(u64::MAX).saturating_add(1);
    (&mut dec)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| InflateError::Corrupt(e.to_string()))?;
    if out.len() > max_out {
        return Err(InflateError::TooLarge { limit: max_out });
    }
    if !dec.into_inner().is_empty() {
        return Err(InflateError::Corrupt("bytes after the gzip member".into()));
    }
    Ok(out)
}

/// An `up` payload as sealed JSON: a plain one as it is, a compressed one inflated with the
/// bound `max_out`.
pub fn decode_up(
    payload: &[u8],
    max_out: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, InflateError> {
    if is_compressed(payload) {
        inflate(payload, max_out).map(std::borrow::Cow::Owned)
    } else {
        Ok(std::borrow::Cow::Borrowed(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;
    use crate::reading::Quality;

    fn batch() -> Batch {
        Batch {
            gateway: "gw-1".into(),
            stream: "s1".into(),
            sent_ms: 5,
            items: vec![
                Item {
                    seq: 1,
                    body: Body::Reading(Reading {
                        device: "d".into(),
                        unit: None,
                        metric: Metric::FumeMgM3,
                        value: Some(0.5),
                        quality: Quality::Ok,
                        ts_ms: 4,
                    }),
                },
                Item {
                    seq: 2,
                    body: Body::Event(Event {
                        ts_ms: 4,
                        kind: EventKind::Gap,
                        message: String::new(),
                        dropped: Some(3),
                        from_ms: Some(1),
                        to_ms: Some(2),
                    }),
                },
            ],
        }
    }

    #[test]
    fn a_period_reads_as_documented_and_leaves_out_what_it_does_not_have() {
        let text = r#"{"seq":9,"body":{"kind":"period","data":{"device":"grill-1","start_ms":1765000020000,"period_s":60,
            "metrics":[{"metric":"fume_mg_m3","polls":60,"count":58,"avg":1.2,"min":0.9,"max":2.5,"last":1.1,"valid":true},
                       {"metric":"x_fan_hz","unit":"Hz","polls":60,"count":0,"valid":false}]}}}"#;
        let item: Item = serde_json::from_str(text).expect("the documented shape");
        let Body::Period(p) = &item.body else {
            panic!("not a period: {item:?}")
        };
        assert_eq!(
            (p.device.as_str(), p.start_ms, p.period_s),
            ("grill-1", 1_765_000_020_000, 60)
        );
        assert_eq!(item.body.ts_ms(), p.start_ms);
        assert!(!item.body.is_priority() && !item.body.is_evidence());
        assert_eq!(
            (p.metrics[0].count, p.metrics[0].avg, p.metrics[0].valid),
            (58, Some(1.2), true)
        );
        assert_eq!(
            (p.metrics[1].unit.as_deref(), p.metrics[1].avg),
            (Some("Hz"), None)
        );
        let back = serde_json::to_string(&item).expect("serialises");
        assert!(
            !back.contains("\"avg\":null"),
            "absent aggregates are left out: {back}"
        );
        assert_eq!(
            serde_json::from_str::<Item>(&back).expect("round trip"),
            item
        );
        let unknown = text.replace("\"valid\":true", "\"valid\":true,\"median\":1");
        assert!(
            serde_json::from_str::<Item>(&unknown).is_err(),
            "unknown fields refused"
        );
    }

    #[test]
    fn sealed_batch_round_trips_and_is_plain_json() {
        let b = batch();
        let payload = seal(&b, b"key");
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("valid JSON");
        assert_eq!(v["items"][0]["body"]["kind"], "reading");
        assert_eq!(v["mac"].as_str().map(str::len), Some(64));
        assert_eq!(open::<Batch>(&payload, b"key"), Ok(b));
    }

    #[test]
    fn wrong_key_tampering_and_unknown_fields_are_refused() {
        let payload = seal(&batch(), b"key");
        assert_eq!(open::<Batch>(&payload, b"other"), Err(SealError::BadMac));
        let tampered = String::from_utf8(payload.clone())
            .expect("utf8")
            .replace("0.5", "0.1");
        assert_eq!(
            open::<Batch>(tampered.as_bytes(), b"key"),
            Err(SealError::BadMac)
        );
        assert_eq!(open::<Batch>(b"{}", b"key"), Err(SealError::NoMac));
        // Correctly signed but with a field the contract does not know.
        let extra = serde_json::json!({"gateway": "g", "stream": "s", "sent_ms": 1, "items": [], "extra": 1});
        assert!(matches!(
            open::<Batch>(&seal(&extra, b"key"), b"key"),
            Err(SealError::Json(_))
        ));
    }

    /// Regression: the tag was read pair by pair with `u8::from_str_radix`, which takes a sign,
    /// so `+a` read as `0a` and one batch had many valid spellings. Only hex digits are a tag.
    #[test]
    fn a_tag_is_hex_digits_only() {
        // The first key whose tag has a pair `0x` (most do).
        let (key, text, i) = (0..100)
            .find_map(|n| {
                let key = format!("key{n}");
                let text = String::from_utf8(seal(&batch(), key.as_bytes())).expect("utf8");
                let tag_at = text.len() - 66;
                let i = (tag_at..text.len() - 2)
                    .step_by(2)
                    .find(|&i| text.as_bytes()[i] == b'0')?;
                Some((key, text, i))
            })
            .expect("a tag with a 0x pair");
        assert!(open::<Batch>(text.as_bytes(), key.as_bytes()).is_ok());
        let mut respelled = text.into_bytes();
        respelled[i] = b'+';
        assert_eq!(
            open::<Batch>(&respelled, key.as_bytes()),
            Err(SealError::NoMac)
        );
    }

    /// Seal, then compress: the receiver inflates and opens the very same sealed bytes; a plain
    /// payload passes through untouched.
    #[test]
    fn a_compressed_batch_inflates_to_the_sealed_bytes() {
        let sealed = seal(&batch(), b"key");
        let packed = compress(&sealed);
        assert!(is_compressed(&packed) && !is_compressed(&sealed));
        let back = decode_up(&packed, 1 << 20).expect("inflates");
        assert_eq!(&*back, &sealed[..]);
        assert_eq!(open::<Batch>(&back, b"key"), Ok(batch()));
        assert!(matches!(
            decode_up(&sealed, 10),
            Ok(std::borrow::Cow::Borrowed(_))
        ));
    }

    /// A zip bomb stops at the bound: 64 MiB of zeros packs into ~64 KiB and is refused after
    /// `max_out` bytes of output, never inflated whole.
    #[test]
    fn a_zip_bomb_is_refused_at_the_bound() {
        let bomb = compress(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
        assert_eq!(
            inflate(&bomb, 1 << 20),
            Err(InflateError::TooLarge { limit: 1 << 20 })
        );
        // Exactly at the bound is fine.
        let exact = compress(&[b'x'; 1000]);
        assert_eq!(inflate(&exact, 1000).map(|v| v.len()), Ok(1000));
        assert!(inflate(&exact, 999).is_err());
    }

    #[test]
    fn corrupt_or_trailing_gzip_is_refused() {
        let mut packed = compress(&seal(&batch(), b"key"));
        let n = packed.len();
        packed[n - 6] ^= 0xff; // the CRC
        assert!(matches!(
            inflate(&packed, 1 << 20),
            Err(InflateError::Corrupt(_))
        ));
        let mut trailing = compress(&seal(&batch(), b"key"));
        trailing.extend_from_slice(b"{}");
        assert!(matches!(
            inflate(&trailing, 1 << 20),
            Err(InflateError::Corrupt(_))
        ));
        assert!(matches!(
            inflate(&GZIP_MAGIC, 1 << 20),
            Err(InflateError::Corrupt(_))
        ));
    }

    #[test]
    fn topics_round_trip() {
        assert_eq!(topic("gw-1", Channel::Up), "fumegrid/v1/gw-1/up");
        assert_eq!(
            parse_topic("fumegrid/v1/gw-1/ack"),
            Some(("gw-1", Channel::Ack))
        );
        assert_eq!(parse_topic("fumegrid/v1/gw-1/other"), None);
        assert_eq!(parse_topic("fumegrid/v2/gw-1/up"), None);
    }
}
