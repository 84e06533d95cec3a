//! Drones and the map (issue 15, docs/api.md "Map and drones"):
//!
//! - `GET /api/v1/map?since_ms=`: every site with a position (`[[gateways]] lat, lon`), its
//!   state, open alarms and open cases; every open case with its own point (`cases`); every
//!   registered DJI dock with its last position and whether it is online (`docks`); and
//!   every drone seen since `since_ms` (default: the last hour) with its newest point and its
//!   track since then.
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
use crate::store::drone::MAX_TRACK_POINTS;

pub use super::state::DroneMap;
use crate::store::{AlarmQuery, AlarmState, CaseQuery};

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
    let since = p.since_ms.unwrap_or(now.saturating_sub(MAP_WINDOW_MS));
    let r = s.reader.clone();
    let drones_reader = dm.reader.clone();
    let passes =
        blocking(move || drones_reader.passes(None, None, since, now.saturating_add(1))).await?;
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
            .filter(|a| site.holds_device(&a.gateway, &a.device))
            .map(|a| {
                json!({
                    "id": a.id, "device": a.device, "kind": a.kind, "metric": a.metric,
                    "started_ms": a.started_ms, "value": a.value, "limit": a.limit,
                })
            })
            .collect();
        let open_cases: Vec<Value> = aerial::cases_for(&cases, site, i64::MAX)
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
        let key = site.key();
        // A department sees the ids of the cases with it only.
        let sees_all = may_see_case(&actor, None);
        let recent_passes: Vec<Value> = passes
            .iter()
            .filter(|p| p.site == key)
            .map(|p| {
                let cases: Vec<&String> = p
                    .cases
                    .iter()
                    .filter(|id| {
                        sees_all
                            || cases.iter().any(|c| {
                                &&c.id == id && may_see_case(&actor, c.department.as_deref())
                            })
                    })
                    .collect();
                json!({
                    "place": key, "cases": cases, "drone": p.drone, "start_ms": p.start_ms,
                    "end_ms": p.end_ms, "min_distance_m": (p.min_distance_m * 10.0).round() / 10.0,
                })
            })
            .collect();
        sites.push(json!({
            "key": key,
            "passes": recent_passes,
            "gateway": site.gateway,
            "device": site.device,
            "site": site.name,
            "lat": site.lat,
            "lon": site.lon,
            "state": state,
            "open_alarms": open_alarms,
            "open_cases": open_cases,
        }));
    }
    // Open cases with their own point (a citizen's report, a patrol find, an operator's),
    // whichever site they may also name.
    let positioned: Vec<Value> = cases
        .iter()
        .filter(|c| may_see_case(&actor, c.department.as_deref()))
        .filter_map(|c| {
            let p = c.position?;
            Some(json!({
                "id": c.id, "lat": p.lat, "lon": p.lon, "state": c.state,
                "category": c.category, "source": c.source, "title": c.title,
                "site": c.site, "reported_ms": c.reported_ms,
            }))
        })
        .collect();
    let reader = dm.reader.clone();
    let drones = blocking(move || {
        let mut out = Vec::new();
        for d in reader.drones(since)? {
            let track = reader.track(
                &d.drone,
                since,
                now.max(d.last.ts_ms).saturating_add(1),
                MAX_TRACK_POINTS,
            )?;
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
    let docks = dm.docks.as_ref().map(|d| d.view(now)).unwrap_or_default();
    Ok(Json(json!({
        "since_ms": since,
        "now_ms": now,
        "sites": sites,
        "cases": positioned,
        "docks": docks,
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
    let to = p.to.unwrap_or(now.saturating_add(1));
    // Any i64 is a valid `to` (schemathesis sends i64::MIN): never overflow on it.
    let from = p.from.unwrap_or(to.saturating_sub(MAP_WINDOW_MS));
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
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
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

/// The body of `POST /api/v1/patrol-finds` parsed and checked: what the handler files, or the
/// 400 it answers. Pure (`now_ms` is the API clock's); fuzzed ([`crate::fuzz::patrol_find`]).
pub fn parse_patrol_find(body: &[u8], now_ms: i64) -> Result<PatrolFind, ApiError> {
    let f: PatrolFind = parse_body(body)?;
    f.check(now_ms)?;
    Ok(f)
}

impl PatrolFind {
    /// Checks ranges and lengths. Pure.
    pub fn check(&self, now_ms: i64) -> Result<(), ApiError> {
        super::work::check_len("category", &self.category, super::error::MAX_ID_CHARS)?;
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
        if self.observed_ms > now_ms.saturating_add(60_000) {
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
    let f = parse_patrol_find(&body, s.clock.now_ms())?;
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use fumegrid_common::wire::{Track, TrackPoint};

    use super::*;
    use crate::api::app;
    use crate::api::tests::{call, case_state};
    use crate::cases::model::Coord;
    use crate::store::drone::{DroneSource, DroneWriter};
    use crate::store::{Synchronous, sqlite};

    const T0: i64 = 1_762_135_200_000;
    const NOW: i64 = T0 + 3 * 3_600_000;

    fn state(name: &str) -> AppState {
        let mut st = case_state(name);
        let p = std::env::temp_dir()
            .join(format!("fumegrid-agg-api-{}", std::process::id()))
            .join(name);
        // A DJI dock flew over the site 10 minutes ago; a MAVLink drone two hours ago.
        let mut w = sqlite::open(&p, Synchronous::Normal).expect("writer");
        let track = |drone: &str, start: i64, n: i64| Track {
            drone: drone.into(),
            points: (0..n)
                .map(|i| TrackPoint {
                    ts_ms: start + i * 1000,
                    lat: 39.9 + i as f64 * 1e-5,
                    lon: 116.4,
                    alt_m: 80.0,
                    rel_alt_m: None,
                    heading_deg: None,
                    speed_m_s: None,
                    battery_pct: Some(70),
                })
                .collect(),
        };
        w.store_track(
            DroneSource::Dji,
            None,
            &track("DOCK7", NOW - 600_000, 30),
            NOW,
        )
        .expect("dji");
        use crate::store::CaseStore;
        w.case_tx(&mut |tx| {
            tx.record_pass(
                &crate::store::drone::PassRecord {
                    drone: "DOCK7".into(),
                    site: "gw-1/rest-9".into(),
                    start_ms: NOW - 590_000,
                    end_ms: NOW - 580_000,
                    min_distance_m: 12.34,
                    cases: vec![],
                },
                NOW,
            )
            .map(|_| ())
        })
        .expect("pass");
        w.store_track(
            DroneSource::Mavlink,
            Some("gw-1"),
            &track("m1", NOW - 7_200_000, 5),
            NOW,
        )
        .expect("mavlink");
        st.drones = Some(Arc::new(DroneMap {
            reader: Arc::new(sqlite::open_reader(&p).expect("reader")),
            sites: vec![
                crate::cases::aerial::Place {
                    gateway: "gw-1".into(),
                    device: None,
                    name: "gw-1".into(),
                    site: None,
                    lat: 39.9,
                    lon: 116.4,
                    placed_apart: vec!["rest-9".into()],
                    case: None,
                },
                // A device of gw-1 placed on its own, with nothing open; the DJI dock passed it.
                crate::cases::aerial::Place {
                    gateway: "gw-1".into(),
                    device: Some("rest-9".into()),
                    name: "Wang's BBQ".into(),
                    site: None,
                    lat: 39.901,
                    lon: 116.4,
                    placed_apart: Vec::new(),
                    case: None,
                },
            ],
            docks: Some(Arc::new(crate::dji::Docks::new(
                &crate::dji::Registry::new([crate::dji::Dock {
                    sn: "DOCK7".into(),
                    aircraft: vec![],
                }]),
            ))),
        }));
        st
    }

    fn find(lat: f64) -> String {
        json!({
            "category": "exceedance",
            "title": "smoke over the grill",
            "lat": lat,
            "lon": 116.41,
            "observed_ms": NOW - 60_000,
            "drone": "DOCK7",
            "note": "seen on patrol"
        })
        .to_string()
    }

    #[tokio::test]
    async fn patrol_finds_are_cases_from_drones_and_statistics_count_by_source() {
        let app = app(state("patrol.sqlite3"));
        // Only operators file them; bad input is a 400 naming the field.
        let (s, _, _) = call(
            app.clone(),
            "POST",
            "/api/v1/patrol-finds",
            Some("tok-view"),
            &find(39.9),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, _) = call(
            app.clone(),
            "POST",
            "/api/v1/patrol-finds",
            Some("tok-epb"),
            &find(39.9),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, v, _) = call(
            app.clone(),
            "POST",
            "/api/v1/patrol-finds",
            Some("tok-op"),
            &find(91.0),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["error"].as_str().expect("error").contains("lat 91"),
            "{v}"
        );
        let (s, v, _) = call(
            app.clone(),
            "POST",
            "/api/v1/patrol-finds",
            Some("tok-op"),
            r#"{"category":"exceedance","title":"x","lat":1,"lon":1,"observed_ms":0,"photo":"y"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, v, _) = call(
            app.clone(),
            "POST",
            "/api/v1/patrol-finds",
            Some("tok-op"),
            &find(39.9),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let case = &v["case"];
        assert_eq!(case["source"], "drone");
        assert_eq!(case["origin"]["origin"], "patrol");
        assert_eq!(case["origin"]["drone"], "DOCK7");
        assert_eq!(case["origin"]["lat"], 39.9);
        assert_eq!(case["origin"]["observed_ms"], NOW - 60_000);
        assert_eq!(v["events"][0]["source"], "drone");
        let id = case["id"].as_str().expect("id").to_string();
        // The case reads back the same, and is listed.
        let (s, v, _) = call(
            app.clone(),
            "GET",
            &format!("/api/v1/cases/{id}"),
            Some("tok-op"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["case"]["source"], "drone");
        // An operator's own case counts as an inspector's.
        let (s, _, _) = call(
            app.clone(),
            "POST",
            "/api/v1/cases",
            Some("tok-op"),
            r#"{"category":"exceedance","title":"seen on the grid round"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, v, _) = call(
            app.clone(),
            "GET",
            "/api/v1/stats/cases",
            Some("tok-view"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let by = &v["by_source"];
        assert_eq!(by["sensor"]["received"], 3, "{by}");
        assert_eq!(by["drone"]["received"], 1, "{by}");
        assert_eq!(by["inspector"]["received"], 1, "{by}");
        assert_eq!(by["citizen"]["received"], 0, "{by}");
        assert_eq!(v["total"]["received"], 5);
    }

    /// The body's parse and check is one pure function (the fuzz target's): every refusal
    /// names its field, and nothing from outside comes back unbounded.
    #[test]
    fn a_patrol_find_body_is_parsed_and_checked_purely() {
        let ok = parse_patrol_find(find(39.9).as_bytes(), NOW).expect("a find");
        assert_eq!((ok.lat, ok.drone.as_deref()), (39.9, Some("DOCK7")));
        let long = "x".repeat(5000);
        for (body, says) in [
            (String::new(), "needs a JSON body".to_string()),
            (
                json!({"category": long, "title": "t", "lat": 1, "lon": 1, "observed_ms": 0})
                    .to_string(),
                "`category` is 5000 characters long; at most 128".into(),
            ),
            (
                json!({"category": "exceedance", "title": "t", "lat": 1, "lon": 1,
                       "observed_ms": NOW + 60_001})
                .to_string(),
                "in the future".into(),
            ),
            (
                json!({"category": "exceedance", "title": "t", "lat": 1, "lon": 1,
                       "observed_ms": 0, "drone": "a.b"})
                .to_string(),
                "a.b".into(),
            ),
        ] {
            match parse_patrol_find(body.as_bytes(), NOW) {
                Err(ApiError::BadRequest(m)) => {
                    assert!(m.contains(&says), "{m}");
                    assert!(m.len() < 400, "{m}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // now_ms at the end of time does not overflow.
        assert!(parse_patrol_find(find(39.9).as_bytes(), i64::MAX).is_ok());
    }

    #[tokio::test]
    async fn the_map_shows_sites_with_their_cases_and_the_last_hour_of_drones() {
        let app = app(state("map.sqlite3"));
        let (s, v, _) = call(app.clone(), "GET", "/api/v1/map", Some("tok-view"), "").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["since_ms"], NOW - 3_600_000);
        let site = &v["sites"][0];
        assert_eq!(
            (site["gateway"].as_str(), site["site"].as_str()),
            (Some("gw-1"), Some("gw-1"))
        );
        assert_eq!(site["lat"], 39.9);
        // rest-2's and rest-3's alarms are open, and their cases (rest-1's was closed).
        assert_eq!(site["state"], "alarm");
        assert_eq!(
            site["open_alarms"].as_array().expect("alarms").len(),
            3,
            "{site}"
        );
        assert_eq!(
            site["open_cases"].as_array().expect("cases").len(),
            2,
            "{site}"
        );
        assert_eq!(site["key"], "gw-1");
        assert_eq!(site["passes"].as_array().map(Vec::len), Some(0), "{site}");
        // The device placed on its own: its own marker, its name, the dock's pass over it.
        let own = &v["sites"][1];
        assert_eq!(
            (
                own["key"].as_str(),
                own["device"].as_str(),
                own["site"].as_str()
            ),
            (Some("gw-1/rest-9"), Some("rest-9"), Some("Wang's BBQ"))
        );
        // Its gateway's state (offline here), not the street's alarms of other devices.
        assert_eq!(own["state"], "offline", "{own}");
        assert_eq!(own["open_cases"].as_array().map(Vec::len), Some(0));
        let pass = &own["passes"][0];
        assert_eq!(
            (
                pass["drone"].as_str(),
                pass["min_distance_m"].as_f64(),
                pass["place"].as_str()
            ),
            (Some("DOCK7"), Some(12.3), Some("gw-1/rest-9")),
            "{own}"
        );
        // The registered dock, not heard from yet.
        assert_eq!(
            v["docks"],
            json!([{"sn": "DOCK7", "lat": null, "lon": null, "height_m": null,
                    "position_ms": null, "online": false, "last_seen_ms": null}])
        );
        // Only the DJI dock flew in the last hour; its whole track is there.
        let drones = v["drones"].as_array().expect("drones");
        assert_eq!(drones.len(), 1, "{v}");
        assert_eq!(drones[0]["drone"], "DOCK7");
        assert_eq!(drones[0]["source"], "dji");
        assert_eq!(drones[0]["track"].as_array().expect("track").len(), 30);
        assert_eq!(drones[0]["last"]["ts_ms"], NOW - 600_000 + 29_000);
        assert_eq!(drones[0]["last"]["battery_pct"], 70);
        // A longer window shows both.
        let (_, v, _) = call(
            app.clone(),
            "GET",
            &format!("/api/v1/map?since_ms={}", NOW - 3 * 3_600_000),
            Some("tok-view"),
            "",
        )
        .await;
        assert_eq!(v["drones"].as_array().expect("drones").len(), 2);
        // A department sees the sites but only the cases that are with it.
        let (_, v, _) = call(app.clone(), "GET", "/api/v1/map", Some("tok-urban"), "").await;
        let cases = v["sites"][0]["open_cases"].as_array().expect("cases");
        assert!(
            cases.iter().all(|c| c["department"] == "urban"),
            "{cases:?}"
        );
        // Reporters do not reach it; unknown parameters are refused.
        let (s, _, _) = call(app.clone(), "GET", "/api/v1/map", Some("tok-citizen"), "").await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, _) = call(
            app.clone(),
            "GET",
            "/api/v1/map?since=1",
            Some("tok-view"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }

    /// Issue 15: cases with their own point — a patrol find, an operator's case filed at a
    /// point, a citizen's Open311 request with `lat`/`long` — are on the map; a case without
    /// one is not, and a department sees only those with it.
    #[tokio::test]
    async fn the_map_shows_open_cases_at_their_own_points() {
        let app = app(state("map-cases.sqlite3"));
        let post = |uri: &'static str, tok: &'static str, body: String| {
            let app = app.clone();
            async move {
                let (s, v, _) = call(app, "POST", uri, Some(tok), &body).await;
                (s, v)
            }
        };
        let (s, v) = post("/api/v1/patrol-finds", "tok-op", find(39.91)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let patrol = v["case"]["id"].as_str().expect("id").to_string();
        assert_eq!(v["case"]["position"], json!({"lat": 39.91, "lon": 116.41}));
        let at = r#"{"category":"exceedance","title":"seen on the grid round","lat":39.92,"lon":116.42}"#;
        let (s, v) = post("/api/v1/cases", "tok-op", at.into()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let operator = v["case"]["id"].as_str().expect("id").to_string();
        let (s, v) = post(
            "/api/v1/cases",
            "tok-op",
            r#"{"category":"exceedance","title":"no point"}"#.into(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["case"]["position"], Value::Null);
        for (bad, says) in [
            (r#""lat":39.92"#, "together"),
            (r#""lat":39.92,"lon":181"#, "lon 181"),
        ] {
            let body = format!(r#"{{"category":"exceedance","title":"x",{bad}}}"#);
            let (s, v) = post("/api/v1/cases", "tok-op", body).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
            assert!(v["error"].as_str().expect("error").contains(says), "{v}");
        }
        let (s, v, _) = crate::api::open311::tests::send(
            app.clone(),
            "POST",
            "/open311/v2/requests.json",
            Some("application/json"),
            r#"{"api_key":"tok-citizen","service_code":"complaint","description":"smoke","lat":39.93,"long":116.43}"#,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let citizen = v[0]["service_request_id"].as_str().expect("id").to_string();

        let (s, v, _) = call(app.clone(), "GET", "/api/v1/map", Some("tok-view"), "").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let got: Vec<(String, f64, f64, String)> = v["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().expect("id").to_string(),
                    c["lat"].as_f64().expect("lat"),
                    c["lon"].as_f64().expect("lon"),
                    c["source"].as_str().expect("source").to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (citizen, 39.93, 116.43, "citizen".into()),
                (operator, 39.92, 116.42, "inspector".into()),
                (patrol.clone(), 39.91, 116.41, "drone".into()),
            ],
            "newest first"
        );
        assert_eq!(v["cases"][2]["state"], "reported");
        assert_eq!(v["cases"][2]["title"], "smoke over the grill");
        assert_eq!(v["cases"][2]["category"], "exceedance");
        // None is with a department yet.
        let (_, v, _) = call(app.clone(), "GET", "/api/v1/map", Some("tok-urban"), "").await;
        assert_eq!(v["cases"], json!([]), "{v}");
        // A closed (rejected) case leaves the map.
        let (s, v, _) = call(
            app.clone(),
            "POST",
            &format!("/api/v1/cases/{patrol}/transitions"),
            Some("tok-op"),
            r#"{"action":"reject","note":"a barbecue permit"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (_, v, _) = call(app.clone(), "GET", "/api/v1/map", Some("tok-view"), "").await;
        assert_eq!(v["cases"].as_array().expect("cases").len(), 2, "{v}");
    }

    #[tokio::test]
    async fn a_drone_track_by_range() {
        let app = app(state("track.sqlite3"));
        let (s, v, _) = call(
            app.clone(),
            "GET",
            "/api/v1/drones/DOCK7/track",
            Some("tok-view"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["count"], 30);
        assert_eq!(v["points"][0]["ts_ms"], NOW - 600_000);
        let uri = format!(
            "/api/v1/drones/m1/track?from={}&to={}&limit=2",
            NOW - 7_200_000,
            NOW
        );
        let (_, v, _) = call(app.clone(), "GET", &uri, Some("tok-view"), "").await;
        assert_eq!(v["count"], 2);
        let (s, _, _) = call(
            app.clone(),
            "GET",
            "/api/v1/drones/a.b/track",
            Some("tok-view"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        // Found by schemathesis: `to` = i64::MIN without `from` overflowed into a 500.
        let (s, v, _) = call(
            app.clone(),
            "GET",
            "/api/v1/drones/0/track?to=-9223372036854775808",
            Some("tok-view"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, _, _) = call(
            app.clone(),
            "GET",
            "/api/v1/drones/m1/track?from=5&to=5",
            Some("tok-view"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let _ = Coord(0.0);
    }
}
