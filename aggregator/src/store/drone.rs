//! Drones (issue 15, docs/drones.md) as the store keeps them, the same for every
//! implementation: the row types and the two traits of the drone side.
//!
//! - Positions: every point of every drone, identified by `(drone, ts_ms)` — a resend, a
//!   replay after an outage or a second route to the same position is stored once (the first
//!   wins). A gateway's MAVLink track arrives as wire `Track` items and is stored inside
//!   ingest's commit (source `mavlink`, with the gateway); a DJI dock's telemetry is stored by
//!   the DJI intake through [`DroneWriter::store_track`] (source `dji`, no gateway). Both end in
//!   the same rows, so the map, the track API and the aerial-pass judgment do not care where a
//!   drone's positions came from.
//! - Photos: what a drone reported taking (wire `DronePhoto`), identified by
//!   `(drone, ts_ms, index)`. The photo's bytes, when they travel, are a picture of the
//!   evidence store ([`super::evidence`]) with the same SHA-256.
//! - Arrival order: every stored point gets a cursor (increasing with arrival, not with
//!   `ts_ms`), so the aerial-pass judgment (`casework/aerial.rs`) reads what arrived since it
//!   last looked ([`DroneReader::points_after`]) and judges each point by its own time — late
//!   points after an outage included.
//! - Aerial passes: each pass judged near a site is recorded ([`PassRecord`], through
//!   [`super::CaseTx`] in the transaction that adds it to its cases), so a pass judged again
//!   (after a restart) is recognised and not added twice.

use fumegrid_common::wire::{DronePhoto, Track, TrackPoint};
use serde::Serialize;

use super::StoreError;

/// Where a drone's positions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DroneSource {
    /// A gateway's MAVLink source (wire `Track` / `DronePhoto` items).
    Mavlink,
    /// A DJI dock or DJI Pilot 2 through the DJI Cloud API (`thing/product/{sn}/osd`).
    Dji,
}

impl DroneSource {
    pub fn name(self) -> &'static str {
        match self {
            DroneSource::Mavlink => "mavlink",
            DroneSource::Dji => "dji",
        }
    }

    pub fn from_name(s: &str) -> Option<DroneSource> {
        match s {
            "mavlink" => Some(DroneSource::Mavlink),
            "dji" => Some(DroneSource::Dji),
            _ => None,
        }
    }
}

/// What one [`DroneWriter::store_track`] stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackStored {
    /// Points stored now.
    pub new: u64,
    /// Points already held for that drone and time (kept as they were).
    pub duplicates: u64,
}

/// A drone with its newest position (by `ts_ms`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DroneRow {
    pub drone: String,
    pub source: DroneSource,
    /// The gateway that forwarded the newest point (MAVLink); none for DJI.
    pub gateway: Option<String>,
    pub last: TrackPoint,
    /// Aggregator clock when the newest point arrived.
    pub last_received_ms: i64,
}

/// One stored point with its arrival cursor, as the aerial-pass judgment reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrivedPoint {
    /// Increases with arrival (not with `ts_ms`).
    pub cursor: i64,
    pub drone: String,
    pub source: DroneSource,
    pub point: TrackPoint,
}

/// One stored drone photo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhotoRow {
    pub drone: String,
    pub source: DroneSource,
    pub gateway: Option<String>,
    pub ts_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub alt_m: f64,
    pub index: i32,
    pub file: Option<String>,
    pub ok: bool,
    pub sha256: Option<String>,
    pub received_ms: i64,
}

impl PhotoRow {
    pub fn of(
        p: &DronePhoto,
        source: DroneSource,
        gateway: Option<&str>,
        received_ms: i64,
    ) -> PhotoRow {
        PhotoRow {
            drone: p.drone.clone(),
            source,
            gateway: gateway.map(str::to_string),
            ts_ms: p.ts_ms,
            lat: p.lat,
            lon: p.lon,
            alt_m: p.alt_m,
            index: p.index,
            file: p.file.clone(),
            ok: p.ok,
            sha256: p.sha256.clone(),
            received_ms,
        }
    }
}

/// A pass of a drone near a site, recorded when casework adds it to the site's cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassRecord {
    pub drone: String,
    /// The place's key ([`crate::cases::aerial::Place::key`]): the gateway id of a site, or
    /// `gateway/device` for a device placed on its own.
    pub site: String,
    /// First and last point within the distance (drone time).
    pub start_ms: i64,
    pub end_ms: i64,
    pub min_distance_m: f64,
    /// The cases it was added to (may be none: an open alarm without a case).
    pub cases: Vec<String>,
}

/// Most points one track query returns.
pub const MAX_TRACK_POINTS: u32 = 10_000;

/// The writing side: the DJI intake (its own connection) stores tracks and photos here; ingest
/// stores a gateway's `Track` and `DronePhoto` items inside its own commit with the same rules.
pub trait DroneWriter: Send {
    /// Stores `track`'s points for `track.drone` from `source` (forwarded by `gateway`, if
    /// any), in one transaction: a point whose `(drone, ts_ms)` is already held is kept as it
    /// was and counted as a duplicate. The caller has checked the track
    /// (`ingest::validate::check_track`).
    fn store_track(
        &mut self,
        source: DroneSource,
        gateway: Option<&str>,
        track: &Track,
        now_ms: i64,
    ) -> Result<TrackStored, StoreError>;
    /// Stores a photo report; `false` when `(drone, ts_ms, index)` was already held. The caller
    /// has checked it (`ingest::validate::check_photo`).
    fn store_photo(
        &mut self,
        source: DroneSource,
        gateway: Option<&str>,
        photo: &DronePhoto,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
}

/// The reading side: the map and track API, and the aerial-pass judgment.
pub trait DroneReader: Send + Sync {
    /// Every drone with a point at or after `since_ms`, with its newest point; by drone id.
    fn drones(&self, since_ms: i64) -> Result<Vec<DroneRow>, StoreError>;
    /// The points of `drone` with `from_ms <= ts_ms < to_ms`, oldest first, at most `limit`.
    fn track(
        &self,
        drone: &str,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<TrackPoint>, StoreError>;
    /// The photos (of `drone`, or of every drone) with `from_ms <= ts_ms < to_ms`, oldest
    /// first, at most `limit`.
    fn photos(
        &self,
        drone: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<PhotoRow>, StoreError>;
    /// Points that arrived after `cursor` (0: from the first), in arrival order, at most
    /// `limit`.
    fn points_after(&self, cursor: i64, limit: u32) -> Result<Vec<ArrivedPoint>, StoreError>;
    /// The cursor of the first point that arrived at or after `received_ms`, minus one (where
    /// a judgment starting afresh begins): 0 when none arrived before.
    fn cursor_before(&self, received_ms: i64) -> Result<i64, StoreError>;
    /// Recorded passes of `drone` near `site` that overlap `[from_ms, to_ms]`.
    fn passes(
        &self,
        drone: Option<&str>,
        site: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PassRecord>, StoreError>;
}
