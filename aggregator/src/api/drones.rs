//! Drones and the map (issue 15, docs/api.md "Map and drones"):
//!
//! - `GET /api/v1/map?since_ms=`: every site with a position (`[[gateways]] lat, lon`), its
//!   state, open alarms and open cases, and every drone seen since `since_ms` (default: the
//!   last hour) with its newest point and its track since then.
//! - `GET /api/v1/drones/{drone}/track?from=&to=`: one drone's points and photos in a range.
//! - `POST /api/v1/patrol-finds`: an operator (or a drone operator's app with an operator
//!   token) files a case from a drone's observation; its photo is then uploaded to the case
//!   (`POST /api/v1/cases/{id}/evidence`).
//!
//! Roles as the other read endpoints: operators and viewers see everything; a department sees
//! every site and drone but only the open cases that are with it; reporters reach none of it.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, check_id};
use super::params::Params;
use super::state::{AppState, blocking};
use super::work::{Caller, MAX_NOTE_CHARS, MAX_TITLE_CHARS, parse_body};
use crate::cases::aerial;
use crate::cases::model::{Coord, Intake, Origin};
use crate::cases::{Actor, Role};
use crate::casework::aerial::SitePos;
use crate::store::drone::{DroneReader, MAX_TRACK_POINTS};
use crate::store::{AlarmQuery, AlarmState, CaseQuery};

/// What the map and track endpoints read: the drone store and the sites with a position.
pub struct DroneMap {
    pub reader: Arc<dyn DroneReader>,
    pub sites: Vec<SitePos>,
}

impl std::fmt::Debug for DroneMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DroneMap")
            .field("sites", &self.sites.len())
            .finish_non_exhaustive()
    }
}

/// Default window of the map: the last hour.
pub const MAP_WINDOW_MS: i64 = 3_600_000;
/// Most points of one drone's track on the map (thinned evenly beyond).
pub const MAP_TRACK_POINTS: usize = 2_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapParams {
    pub since_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackParams {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: Option<u32>,
}

fn drone_map(s: &AppState) -> Result<Arc<DroneMap>, ApiError> {
    s.drones
        .clone()
        .ok_or_else(|| ApiError::Unavailable("drone positions are not available".into()))
}

fn may_see_case(actor: &Actor, department: Option<&str>) -> bool {
    match &actor.role {
        Role::Operator | Role::Viewer | Role::System => true,
        Role::Department { department: own } => department == Some(own.as_str()),
        Role::Reporter => false,
    }
}

/// `GET /api/v1/map?since_ms=`.
pub async fn map(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Params(p): Params<MapParams>,
) -> Result<Json<Value>, ApiError> {
    let dm = drone_map(&s)?;
    let now = s.clock.now_ms();
    let since = p.since_ms.unwrap_or(now - MAP_WINDOW_MS);
    let r = s.reader.clone();
    let (gateways, alarms, cases) = blocking(move || {
        let gateways = r.gateways()?;
        let alarms = r.alarms(&AlarmQuery {
            state: AlarmState::Open,
            limit: 10_000,
            ..AlarmQuery::default()
        })?;
        let cases = r.cases(&CaseQuery {
            open: Some(true),
            limit: 10_000,
            ..CaseQuery::default()
        })?;
        Ok((gateways, alarms, cases.cases))
    })
    .await?;
    let mut sites = Vec::with_capacity(dm.sites.len());
    for site in &dm.sites {
        let open_alarms: Vec<Value> = alarms
            .iter()
            .filter(|a| a.gateway == site.gateway)
            .map(|a| {
                json!({
                    "id": a.id, "device": a.device, "kind": a.kind, "metric": a.metric,
                    "started_ms": a.started_ms, "value": a.value, "limit": a.limit,
                })
            })
            .collect();
        let open_cases: Vec<Value> =
            aerial::cases_for(&cases, &site.gateway, site.name.as_deref(), i64::MAX)
                .into_iter()
                .filter(|c| may_see_case(&actor, c.department.as_deref()))
                .map(|c| {
                    json!({
                        "id": c.id, "state": c.state, "category": c.category, "title": c.title,
                        "source": c.source, "department": c.department,
                        "reported_ms": c.reported_ms,
                    })
                })
                .collect();
        let online = gateways
            .iter()
            .find(|g| g.id == site.gateway)
            .map(|g| g.online);
        let state = if !open_alarms.is_empty() {
            "alarm"
        } else {
            match online {
                Some(true) => "online",
                Some(false) => "offline",
                None => "unknown",
            }
        };
        sites.push(json!({
            "gateway": site.gateway,
            "site": site.name.as_deref().unwrap_or(&site.gateway),
            "lat": site.lat,
            "lon": site.lon,
            "state": state,
            "open_alarms": open_alarms,
            "open_cases": open_cases,
        }));
    }
    let reader = dm.reader.clone();
    let drones = blocking(move || {
        let mut out = Vec::new();
        for d in reader.drones(since)? {
            let track =
                reader.track(&d.drone, since, now.max(d.last.ts_ms) + 1, MAX_TRACK_POINTS)?;
            out.push((d, track));
        }
        Ok(out)
    })
    .await?;
    let drones: Vec<Value> = drones
        .into_iter()
        .map(|(d, track)| {
            let pts: Vec<Value> = aerial::thin(&track, MAP_TRACK_POINTS)
                .into_iter()
                .map(|p| json!({"ts_ms": p.ts_ms, "lat": p.lat, "lon": p.lon, "alt_m": p.alt_m}))
                .collect();
            json!({
                "drone": d.drone,
                "source": d.source,
                "gateway": d.gateway,
                "last": d.last,
                "last_received_ms": d.last_received_ms,
                "track": pts,
            })
        })
        .collect();
    Ok(Json(json!({
        "since_ms": since,
        "now_ms": now,
        "sites": sites,
        "drones": drones,
    })))
}

/// `GET /api/v1/drones/{drone}/track?from=&to=&limit=`: default the last hour, at most
/// [`MAX_TRACK_POINTS`] points (`limit`, default 1000), oldest first, with the photos taken
/// in the range.
pub async fn track(
    State(s): State<AppState>,
    Path(drone): Path<String>,
    Params(p): Params<TrackParams>,
) -> Result<Json<Value>, ApiError> {
    crate::ingest::validate::check_drone_id(&drone).map_err(ApiError::BadRequest)?;
    let dm = drone_map(&s)?;
    let now = s.clock.now_ms();
    let to = p.to.unwrap_or(now + 1);
    let from = p.from.unwrap_or(to - MAP_WINDOW_MS);
    if from >= to {
        return Err(ApiError::BadRequest(format!(
            "`from` ({from}) must be before `to` ({to})"
        )));
    }
    let limit = super::error::limit_in(p.limit, 1000, MAX_TRACK_POINTS)?;
    let reader = dm.reader.clone();
    let d = drone.clone();
    let (points, photos) = blocking(move || {
        Ok((
            reader.track(&d, from, to, limit)?,
            reader.photos(Some(&d), from, to, 1000)?,
        ))
    })
    .await?;
    Ok(Json(json!({
        "drone": drone,
        "from": from,
        "to": to,
        "count": points.len(),
        "points": points,
        "photos": photos,
    })))
}

/// A patrol find: what a drone saw, where and when.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatrolFind {
    pub category: String,
    /// At most 200 characters, not blank.
    pub title: String,
    /// WGS 84 degrees of what was seen.
    pub lat: f64,
    pub lon: f64,
    /// When the drone saw it, ms since the epoch (not after now).
    pub observed_ms: i64,
    /// Which drone, when known (the drone id rule).
    #[serde(default)]
    pub drone: Option<String>,
    /// The site's name, when it is a known site.
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub grid_cell: Option<String>,
    /// At most 4000 characters.
    #[serde(default)]
    pub note: String,
}

impl PatrolFind {
    /// Checks ranges and lengths. Pure.
    pub fn check(&self, now_ms: i64) -> Result<(), ApiError> {
        if self.title.trim().is_empty() {
            return Err(ApiError::BadRequest("`title` must not be empty".into()));
        }
        if self.title.chars().count() > MAX_TITLE_CHARS {
            return Err(ApiError::BadRequest(format!(
                "`title` is longer than {MAX_TITLE_CHARS} characters"
            )));
        }
        if self.note.chars().count() > MAX_NOTE_CHARS {
            return Err(ApiError::BadRequest(format!(
                "`note` is longer than {MAX_NOTE_CHARS} characters"
            )));
        }
        crate::ingest::validate::check_position(self.lat, self.lon, 0.0, "patrol find")
            .map_err(ApiError::BadRequest)?;
        if self.observed_ms > now_ms + 60_000 {
            return Err(ApiError::BadRequest(format!(
                "`observed_ms` {} is in the future",
                self.observed_ms
            )));
        }
        if let Some(d) = &self.drone {
            crate::ingest::validate::check_drone_id(d).map_err(ApiError::BadRequest)?;
        }
        if let Some(site) = &self.site {
            check_id("`site`", site)?;
        }
        if let Some(cell) = &self.grid_cell {
            check_id("`grid_cell`", cell)?;
        }
        Ok(())
    }
}

/// `POST /api/v1/patrol-finds`: files a case with origin `patrol` and source `drone` (201,
/// `{case, events}`). Operators only; the role is checked before the body is read.
pub async fn file_patrol_find(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    body: Bytes,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    if actor.role != Role::Operator {
        return Err(ApiError::Forbidden(format!(
            "{} may not file patrol finds; an operator (or a drone operator's app with an \
             operator token) does",
            actor.role
        )));
    }
    let f: PatrolFind = parse_body(&body)?;
    f.check(s.clock.now_ms())?;
    let cw = s
        .casework
        .clone()
        .ok_or_else(|| ApiError::Unavailable("case changes are not available".into()))?;
    let intake = Intake {
        category: f.category,
        title: f.title,
        origin: Origin::Patrol {
            drone: f.drone,
            lat: Coord(f.lat),
            lon: Coord(f.lon),
            observed_ms: f.observed_ms,
        },
        site: f.site,
        grid_cell: f.grid_cell,
    };
    let note = f.note;
    let (case, events) = tokio::task::spawn_blocking(move || {
        fumegrid_common::panic::contained(|| cw.file(intake, &actor, &note))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({ "case": case, "events": events })),
    ))
}
