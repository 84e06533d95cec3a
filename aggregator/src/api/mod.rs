//! The HTTP API (axum): JSON under `/api/v1`, plus `/healthz`.
//!
//! [`app`] builds the router from shared state so tests drive it in process with `oneshot`.
//! Every handler returns `Result<_, ApiError>`; [`ApiError::status`] is the one place that maps
//! errors to HTTP status codes, and internal details (SQL errors) are logged, not returned.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /healthz` | `{"status":"ok","mqtt_connected":true}` |
//! | `GET /api/v1/gateways` | `{"gateways":[{id, online, last_seen_ms, status_ts_ms, version}]}` |
//! | `GET /api/v1/devices` | `{"devices":[{gateway, device, latest:[{metric, value, quality, ts_ms}]}]}` |
//! | `GET /api/v1/devices/{device}/readings?from=&to=&metric=&gateway=&limit=&resolution=` | raw: `{"device", "from", "to", "resolution":"raw", "count", "readings":[{gateway, metric, ts_ms, value, quality}], "periods":[{gateway, metric, unit, start_ms, period_s, polls, count, avg, min, max, last, valid}]}`; `1m`/`10m`/`1h`/`1d` (or picked by `auto`): `{…, "resolution", "count", "points":[{gateway, metric, unit, start_ms, count, polls, avg, min, max, last, valid, valid_share}]}` |
//! | `GET /api/v1/export.csv?device=\|site=&from=&to=&resolution=10m\|1h\|1d&metric=&gateway=&bom=` | CSV (RFC 4180): a device's or a site's 10-minute, hourly or daily averages with HJ 212 flags, streamed ([`export`]) |
//! | `GET /api/v1/alarms?state=&device=&gateway=&kind=&suppressed=&from=&to=&limit=` | `{"state", "from", "to", "count", "alarms":[episode]}`, newest first |
//! | `GET /api/v1/alarms/{gateway}/{id}` | `{"alarm": episode, "transitions":[...]}` |
//! | `GET /api/v1/devices/{device}/alarms?state=&gateway=&kind=&suppressed=&from=&to=&limit=` | `{"device", "state", "from", "to", "count", "alarms":[episode]}` |
//! | `GET /api/v1/stats` | ingest counters, rejects by reason |
//! | `GET /metrics` | Prometheus text of every metric in [`crate::telemetry`] (operator or viewer token) |
//! | `GET /api/v1/cases?state=&category=&department=&device=&from=&to=&limit=&offset=` | `{"total", "offset", "limit", "count", "cases":[case]}`, newest reported first |
//! | `GET /api/v1/cases/{id}` | `{"case": case, "events":[event]}` (timeline oldest first; `contact` for operators and the filing reporter) |
//! | `DELETE /api/v1/cases/{id}/contact` | operators: erase a citizen's contact details |
//! | `GET /api/v1/cases/{id}/evidence` | the case's pictures ([`evidence`]) |
//! | `POST /api/v1/cases/{id}/evidence` | a department's or operator's upload (JPEG/PNG bytes) |
//! | `POST /api/v1/cases/{id}/snapshot` | a sealed snapshot command to the case's gateway; 202 |
//! | `GET /api/v1/evidence/{sha256}[/original\|/view\|/thumb]` | one picture: metadata, bytes |
//! | `GET /api/v1/catalogue` | the catalogue in force: `{calendar, departments, categories}` |
//! | `GET /api/v1/stats/cases?from=&to=` | case statistics of `[from, to)` from the event log |
//! | `GET /api/v1/openapi.json` | this API as OpenAPI 3.1 ([`openapi`]; no token) |
//! | `/open311/v2/…` | Open311 GeoReport v2 for citizen apps and hotlines ([`open311`]; own auth) |

use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use fumegrid_common::text::clip;
use serde_json::{Value, json};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

pub mod drones;
mod error;
pub mod evidence;
pub mod export;
pub(crate) mod open311;
mod openapi;
pub mod params;
mod state;
pub(crate) mod work;

pub use error::{ApiError, MAX_ID_CHARS};
use error::{check_id, limit_in};
pub use params::Params;
use state::blocking;
pub use state::{AppState, Auth};
pub use work::Caller;

use crate::cases::Catalogue;
use crate::cases::stats::Period;
use crate::store::{AlarmQuery, AlarmState, CaseQuery, ReadingQuery, rollup};

/// What the HTTP server grants one client (`[api]`; see `docs/api.md`, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 512,
            header_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Default and largest `limit` of a readings query.
pub const DEFAULT_LIMIT: u32 = 1000;
pub const MAX_LIMIT: u32 = 10_000;

/// The API with the default [`HttpLimits`].
pub fn app(state: AppState) -> Router {
    app_with(state, &HttpLimits::default())
}

/// The API: routes, then the layers every request passes (outermost last):
///
/// 1. `DefaultBodyLimit`: bodies above `max_body_bytes` get 413;
/// 2. [`contain`]: panics while a handler is polled may unwind (see [`fumegrid_common::panic`]);
/// 3. `TimeoutLayer`: a request not answered (body read included) within `request_timeout`
///    gets 408;
/// 4. [`json_errors`]: every 4xx/5xx body is `{"error": "..."}` (axum's own rejections, 405,
///    413, a path that is not UTF-8, … are plain text otherwise);
/// 5. `CatchPanicLayer`: a handler's panic becomes a JSON 500 for that request only.
pub fn app_with(state: AppState, limits: &HttpLimits) -> Router {
    let v1 = Router::new()
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{device}/readings", get(readings))
        .route("/api/v1/devices/{device}/alarms", get(device_alarms))
        .route("/api/v1/export.csv", get(export::export))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/alarms/{gateway}/{id}", get(alarm))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/cases", get(cases))
        .route("/api/v1/cases/{id}", get(case))
        .route("/api/v1/catalogue", get(catalogue))
        .route("/api/v1/stats/cases", get(case_stats))
        .route("/api/v1/cases", post(work::file_case))
        .route("/api/v1/cases/{id}/transitions", post(work::transition))
        .route("/api/v1/cases/{id}/contact", delete(work::erase_contact))
        .route("/api/v1/notifications", get(work::notifications))
        .route(
            "/api/v1/cases/{id}/evidence",
            get(evidence::case_evidence).post(evidence::upload),
        )
        .route("/api/v1/cases/{id}/snapshot", post(evidence::snapshot))
        .route("/api/v1/evidence/{sha256}", get(evidence::picture))
        .route(
            "/api/v1/evidence/{sha256}/original",
            get(evidence::original),
        )
        .route(
            "/api/v1/evidence/{sha256}/view",
            get(evidence::derived_view),
        )
        .route(
            "/api/v1/evidence/{sha256}/thumb",
            get(evidence::derived_view),
        )
        .route("/api/v1/map", get(drones::map))
        .route("/api/v1/drones/{drone}/track", get(drones::track))
        .route("/api/v1/patrol-finds", post(drones::file_patrol_find))
        .route("/metrics", get(prometheus))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            work::authenticate,
        ));
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(crate::dashboard::root))
        .route("/dashboard/", get(crate::dashboard::page))
        .route("/api/v1/openapi.json", get(openapi::document))
        .merge(v1)
        .merge(open311::router())
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path() == "/open311" || uri.path().starts_with("/open311/") {
                open311::no_endpoint(&uri).into_response()
            } else {
                ApiError::NotFound.into_response()
            }
        })
        .with_state(state);
    harden(router, limits)
}

/// The layers of [`app_with`] around any router.
fn harden(router: Router, limits: &HttpLimits) -> Router {
    router
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn(contain))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(json_errors))
        .layer(CatchPanicLayer::custom(panic_response))
}

/// Polls the rest of the request's handling inside [`fumegrid_common::panic::contained`].
async fn contain(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    Contained(Box::pin(next.run(req))).await
}

struct Contained(std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>);

impl std::future::Future for Contained {
    type Output = Response;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Response> {
        fumegrid_common::panic::contained(|| self.0.as_mut().poll(cx))
    }
}

/// Longest error text [`json_errors`] keeps from a plain-text rejection (characters).
const MAX_ERROR_CHARS: usize = 300;

/// Turns an unstructured error response (axum's plain-text rejections, 405, 408, 413) into
/// `{"error": "..."}`. A body that is already JSON, or Open311's XML error list for a `.xml`
/// path, is left as it is.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let structured = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("application/xml"));
    if !(status.is_client_error() || status.is_server_error()) || structured {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let text = clip(text.trim(), MAX_ERROR_CHARS);
    let msg = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.to_string()
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(
        parts,
        axum::body::Body::from(json!({ "error": msg }).to_string()),
    )
}

/// A handler panicked: 500 for this request, logged and counted; the daemon runs on.
fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    metrics::counter!(crate::telemetry::API_PANICS).increment(1);
    tracing::error!(
        panic = clip(what, MAX_ERROR_CHARS),
        "an HTTP handler panicked (a bug); answered 500 and carried on"
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "error": "internal error" })),
    )
        .into_response()
}

async fn healthz(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "mqtt_connected": s.stats.is_connected(),
    }))
}

async fn gateways(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let r = s.reader.clone();
    let rows = blocking(move || r.gateways()).await?;
    Ok(Json(json!({ "gateways": rows })))
}

async fn devices(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let r = s.reader.clone();
    let rows = blocking(move || r.devices()).await?;
    Ok(Json(json!({ "devices": rows })))
}

async fn stats(State(s): State<AppState>) -> Json<Value> {
    let mut v = json!(s.stats.snapshot());
    v["notifications"] = json!(s.notify.snapshot());
    Json(v)
}

/// `GET /metrics`: the Prometheus scrape of this process (see docs/metrics.md). Behind the API's
/// token check like the rest of the read side, for operator and viewer tokens: it names every
/// gateway and department and shows their traffic, which department and reporter tokens do not
/// see either. Prometheus sends the token itself (`authorization: {credentials_file: ...}`).
async fn prometheus(Extension(Caller(actor)): Extension<Caller>) -> Result<Response, ApiError> {
    use crate::cases::Role;
    if !matches!(actor.role, Role::Operator | Role::Viewer | Role::System) {
        return Err(ApiError::Forbidden(
            "/metrics is for operator and viewer tokens".into(),
        ));
    }
    let handle = fumegrid_common::telemetry::handle()
        .ok_or_else(|| ApiError::Unavailable("no metrics recorder in this process".into()))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}

/// `from` (default 0) and `to` (default `i64::MAX`), ms, with `from < to`.
fn time_range(from: Option<i64>, to: Option<i64>) -> Result<(i64, i64), ApiError> {
    let from_ms = from.unwrap_or(0);
    let to_ms = to.unwrap_or(i64::MAX);
    if from_ms >= to_ms {
        return Err(ApiError::BadRequest(format!(
            "`from` ({from_ms}) must be before `to` ({to_ms})"
        )));
    }
    Ok((from_ms, to_ms))
}

fn check_device(device: &str) -> Result<(), ApiError> {
    check_id("device id", device)
}

/// Checks a readings query (typed in [`params::ReadingsParams`]). Pure.
pub fn parse_readings_query(
    device: String,
    p: params::ReadingsParams,
) -> Result<ReadingQuery, ApiError> {
    let (from_ms, to_ms) = time_range(p.from, p.to)?;
    let limit = limit_in(p.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    check_device(&device)?;
    if let Some(g) = &p.gateway {
        check_id("`gateway`", g)?;
    }
    Ok(ReadingQuery {
        device,
        gateway: p.gateway,
        metric: p.metric.map(|m| m.name().to_string()),
        from_ms,
        to_ms,
        limit,
    })
}

/// Checks an alarm list query. `device` is the path's device for `/devices/{device}/alarms`
/// (then `state` defaults to `all`), `None` for `/alarms` (`state` defaults to `open`). Pure.
pub fn parse_alarm_query(
    device: Option<String>,
    p: params::AlarmParams,
) -> Result<AlarmQuery, ApiError> {
    use params::AlarmStateParam as P;
    let (from_ms, to_ms) = time_range(p.from, p.to)?;
    let limit = limit_in(p.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let state = match p.state {
        None if device.is_some() => AlarmState::All,
        None | Some(P::Open) => AlarmState::Open,
        Some(P::Cleared) => AlarmState::Cleared,
        Some(P::All) => AlarmState::All,
    };
    let device = device.or(p.device);
    if let Some(d) = &device {
        check_device(d)?;
    }
    if let Some(g) = &p.gateway {
        check_id("`gateway`", g)?;
    }
    Ok(AlarmQuery {
        state,
        gateway: p.gateway,
        device,
        kind: p.kind.map(|k| k.name().to_string()),
        suppressed: p.suppressed,
        from_ms,
        to_ms,
        limit,
    })
}

/// Longest span `resolution=auto` answers with raw rows: 5 minutes (300 polls at 1 Hz).
pub const AUTO_RAW_SPAN_MS: i64 = 5 * 60_000;
/// Most buckets per metric `resolution=auto` aims at: the finest rollup level whose buckets
/// over the span are at most this many (the day when none is).
pub const AUTO_POINTS: i64 = 500;

/// The rollup level (index into [`rollup::LEVELS`]) a readings query reads, `None` for raw
/// rows. `auto` picks raw for spans up to [`AUTO_RAW_SPAN_MS`], else the finest level with at
/// most [`AUTO_POINTS`] buckets over `[from_ms, to_ms)`; absent is `raw`. Pure.
pub fn pick_resolution(r: Option<params::Resolution>, from_ms: i64, to_ms: i64) -> Option<usize> {
    use params::Resolution as R;
    match r.unwrap_or(R::Raw) {
        R::Raw => None,
        R::M1 => Some(0),
        R::M10 => Some(1),
        R::H1 => Some(2),
        R::D1 => Some(3),
        R::Auto => {
            let span = to_ms.saturating_sub(from_ms);
            if span <= AUTO_RAW_SPAN_MS {
                return None;
            }
            let fits = |res_s: u32| span / (i64::from(res_s) * 1000) <= AUTO_POINTS;
            Some(
                rollup::LEVELS
                    .iter()
                    .position(|&r| fits(r))
                    .unwrap_or(rollup::LEVELS.len() - 1),
            )
        }
    }
}

async fn readings(
    State(s): State<AppState>,
    Path(device): Path<String>,
    Params(p): Params<params::ReadingsParams>,
) -> Result<Json<Value>, ApiError> {
    let resolution = p.resolution;
    let q = parse_readings_query(device, p)?;
    let level = pick_resolution(resolution, q.from_ms, q.to_ms);
    let r = s.reader.clone();
    let (device, from, to) = (q.device.clone(), q.from_ms, q.to_ms);
    if let Some(level) = level {
        let points = blocking(move || r.rollups(&q, level)).await?;
        return Ok(Json(json!({
            "device": device,
            "from": from,
            "to": to,
            "resolution": rollup::LEVEL_NAMES[level],
            "count": points.len(),
            "points": points,
        })));
    }
    let (rows, periods) = blocking(move || Ok((r.readings(&q)?, r.periods(&q)?))).await?;
    Ok(Json(json!({
        "device": device,
        "from": from,
        "to": to,
        "resolution": "raw",
        "count": rows.len(),
        "readings": rows,
        "periods": periods,
    })))
}

async fn alarms(
    State(s): State<AppState>,
    Params(p): Params<params::AlarmParams>,
) -> Result<Json<Value>, ApiError> {
    let q = parse_alarm_query(None, p)?;
    let r = s.reader.clone();
    let (state, from, to) = (q.state.name(), q.from_ms, q.to_ms);
    let rows = blocking(move || r.alarms(&q)).await?;
    Ok(Json(json!({
        "state": state,
        "from": from,
        "to": to,
        "count": rows.len(),
        "alarms": rows,
    })))
}

async fn device_alarms(
    State(s): State<AppState>,
    Path(device): Path<String>,
    Params(p): Params<params::DeviceAlarmParams>,
) -> Result<Json<Value>, ApiError> {
    let q = parse_alarm_query(Some(device), p.into())?;
    let r = s.reader.clone();
    let (device, state, from, to) = (q.device.clone(), q.state.name(), q.from_ms, q.to_ms);
    let rows = blocking(move || r.alarms(&q)).await?;
    Ok(Json(json!({
        "device": device,
        "state": state,
        "from": from,
        "to": to,
        "count": rows.len(),
        "alarms": rows,
    })))
}

async fn alarm(
    State(s): State<AppState>,
    Path((gateway, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let r = s.reader.clone();
    let (g, i) = (gateway.clone(), id.clone());
    match blocking(move || r.alarm(&g, &i)).await? {
        Some(d) => Ok(Json(json!(d))),
        None => Err(ApiError::Missing(format!(
            "no alarm `{id}` from gateway `{gateway}`"
        ))),
    }
}

/// Default and largest `limit` of a case list.
pub const DEFAULT_CASE_LIMIT: u32 = 100;
pub const MAX_CASE_LIMIT: u32 = 1000;

/// Checks a case list query against the catalogue. `from`/`to` bound the time the case was
/// reported; `state=open` is any state but rejected and closed. Pure.
pub fn parse_case_query(
    p: params::CaseParams,
    catalogue: &Catalogue,
) -> Result<CaseQuery, ApiError> {
    let (from_ms, to_ms) = time_range(p.from, p.to)?;
    let limit = limit_in(p.limit, DEFAULT_CASE_LIMIT, MAX_CASE_LIMIT)?;
    let (state, open) = match p.state {
        None => (None, None),
        Some(params::CaseStateParam::Open) => (None, Some(true)),
        Some(params::CaseStateParam::Is(s)) => (Some(s.name().to_string()), None),
    };
    if let Some(c) = &p.category
        && catalogue.category(c).is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "no category `{}` in the catalogue (see /api/v1/catalogue)",
            clip(c, MAX_ID_CHARS)
        )));
    }
    if let Some(d) = &p.department
        && catalogue.department(d).is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "no department `{}` in the catalogue (see /api/v1/catalogue)",
            clip(d, MAX_ID_CHARS)
        )));
    }
    if let Some(d) = &p.device {
        check_device(d)?;
    }
    Ok(CaseQuery {
        state,
        category: p.category,
        department: p.department,
        device: p.device,
        origin: None,
        open,
        from_ms,
        to_ms,
        limit,
        offset: p.offset.unwrap_or(0),
    })
}

async fn cases(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Params(p): Params<params::CaseParams>,
) -> Result<Json<Value>, ApiError> {
    let mut q = parse_case_query(p, &s.catalogue)?;
    if let crate::cases::Role::Department { department: own } = &actor.role {
        match &q.department {
            Some(d) if d != own => {
                return Err(ApiError::Forbidden(format!(
                    "department `{own}` sees the cases that are with it, not `{d}`'s"
                )));
            }
            _ => q.department = Some(own.clone()),
        }
    }
    let r = s.reader.clone();
    let (limit, offset) = (q.limit, q.offset);
    let page = blocking(move || r.cases(&q)).await?;
    Ok(Json(json!({
        "total": page.total,
        "offset": offset,
        "limit": limit,
        "count": page.cases.len(),
        "cases": page.cases,
    })))
}

async fn case(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let r = s.reader.clone();
    let i = id.clone();
    match blocking(move || r.case(&i)).await? {
        Some(d)
            if work::may_see(
                &actor,
                d.case.department.as_deref(),
                d.case.reporter.as_deref(),
            ) =>
        {
            let mut v = json!(d);
            if work::may_see_contact(&actor, d.case.reporter.as_deref()) {
                let r = s.reader.clone();
                let i = d.case.id.clone();
                if let Some(c) = blocking(move || r.contact(&i)).await? {
                    v["contact"] = json!(c);
                }
            }
            if let crate::cases::model::Origin::Alarm {
                gateway, device, ..
            } = &d.case.origin
            {
                v["evidence"] = evidence(&s, gateway, device, d.case.reported_ms).await?;
            }
            Ok(Json(v))
        }
        Some(d) => Err(ApiError::Forbidden(match &d.case.department {
            Some(dep) => format!("case `{id}` is with `{dep}`; {} may not see it", actor.role),
            None => format!("{} may not see case `{id}`", actor.role),
        })),
        None => Err(ApiError::Missing(format!("no case `{id}`"))),
    }
}

/// Evidence window of an alarm case: from this long before it was reported…
pub const EVIDENCE_BEFORE_MS: i64 = 10 * 60_000;
/// …to this long after.
pub const EVIDENCE_AFTER_MS: i64 = 30 * 60_000;

/// The device's readings around the moment an alarm case was reported (every metric, oldest
/// first, at most [`MAX_LIMIT`]).
async fn evidence(
    s: &AppState,
    gateway: &str,
    device: &str,
    reported_ms: i64,
) -> Result<Value, ApiError> {
    let q = ReadingQuery {
        device: device.to_string(),
        gateway: Some(gateway.to_string()),
        metric: None,
        from_ms: reported_ms - EVIDENCE_BEFORE_MS,
        to_ms: reported_ms + EVIDENCE_AFTER_MS,
        limit: MAX_LIMIT,
    };
    let (from, to) = (q.from_ms, q.to_ms);
    let r = s.reader.clone();
    let rows = blocking(move || r.readings(&q)).await?;
    Ok(json!({
        "gateway": gateway,
        "device": device,
        "from": from,
        "to": to,
        "count": rows.len(),
        "readings": rows,
    }))
}

async fn catalogue(State(s): State<AppState>) -> Json<Value> {
    Json(json!(*s.catalogue))
}

/// Statistics of `[from, to)` (default: everything), recomputed from the event log (in memory:
/// [`crate::store::stats_index`]).
async fn case_stats(
    State(s): State<AppState>,
    Params(p): Params<params::PeriodParams>,
) -> Result<Json<Value>, ApiError> {
    let (from_ms, to_ms) = time_range(p.from, p.to)?;
    let r = s.reader.clone();
    let st = blocking(move || r.case_stats(Period { from_ms, to_ms })).await?;
    Ok(Json(json!(st)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use fumegrid_common::clock::Clock;

    use crate::ingest::stats::Stats;
    use axum::body::Body;
    use axum::http::Request;
    use fumegrid_common::metric::Metric;
    use fumegrid_common::reading::{Quality, Reading};
    use fumegrid_common::wire::AlarmKind;
    use fumegrid_common::wire::{Alarm, AlarmPhase, Batch, Body as WBody, Item, State as GwState};
    use tower::ServiceExt;

    use crate::casework::stats_index::StatsIndex;
    use crate::store::episode::phase_name;
    use crate::store::{CaseStore, Synchronous, Writer, sqlite};

    fn state(name: &str) -> AppState {
        let dir = std::env::temp_dir().join(format!("fumegrid-agg-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join(name);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", p.display()));
        }
        let mut w = sqlite::open(&p, Synchronous::Normal).expect("open");
        w.ensure_gateways(&["gw-1".into(), "gw-2".into()])
            .expect("gws");
        let items = (0..20u64)
            .map(|seq| Item {
                seq,
                body: WBody::Reading(Reading {
                    device: "rest-1".into(),
                    unit: None,
                    metric: if seq % 2 == 0 {
                        Metric::FumeMgM3
                    } else {
                        Metric::FanOn
                    },
                    value: Some(seq as f64 / 10.0),
                    quality: if seq == 18 {
                        Quality::OutOfRange
                    } else {
                        Quality::Ok
                    },
                    ts_ms: 1_000 * seq as i64,
                }),
            })
            .collect();
        let b = Batch {
            gateway: "gw-1".into(),
            stream: "s".into(),
            sent_ms: 0,
            items,
        };
        w.commit(&[&b], 42).expect("commit");
        w.commit(&[&alarm_batch()], 44).expect("commit alarms");
        w.set_status("gw-1", GwState::Online, Some(40), None, 43)
            .expect("status");
        AppState {
            reader: Arc::new(sqlite::open_reader(&p).expect("reader")),
            stats: Arc::new(Stats::default()),
            catalogue: Arc::new(Catalogue::builtin().expect("catalogue")),
            auth: Arc::new(Auth {
                tokens: Default::default(),
                anonymous_viewer: true,
            }),
            casework: None,
            notify: Default::default(),
            clock: Clock::system(),
            evidence: None,
            drones: None,
            sites: Default::default(),
        }
    }

    fn transition(
        device: &str,
        kind: AlarmKind,
        phase: AlarmPhase,
        started_ms: i64,
        ts_ms: i64,
        value: Option<f64>,
    ) -> Alarm {
        let metric = (kind == AlarmKind::Exceedance).then_some(Metric::FumeMgM3);
        let id = match metric {
            Some(m) => format!("{device}:{}:{}:{started_ms}", kind.name(), m.name()),
            None => format!("{device}:{}:{started_ms}", kind.name()),
        };
        Alarm {
            id,
            device: device.into(),
            kind,
            metric,
            phase,
            started_ms,
            ts_ms,
            cleared_ms: (phase == AlarmPhase::Cleared).then_some(ts_ms),
            value,
            peak: value,
            peak_ms: value.map(|_| ts_ms),
            limit: metric.map(|_| 2.0),
            suppressed: kind == AlarmKind::DeviceOffline,
            message: format!("{} {}", kind.name(), phase_name(phase)),
        }
    }

    /// rest-1: an open exceedance (raised, updated) and a cleared purifier_idle; rest-2: an
    /// open, suppressed device_offline. The update arrives before the raise.
    fn alarm_batch() -> Batch {
        use AlarmKind::*;
        use AlarmPhase::*;
        let items = [
            transition("rest-1", Exceedance, Updated, 5_000, 7_000, Some(3.1)),
            transition("rest-1", Exceedance, Raised, 5_000, 6_000, Some(2.4)),
            transition("rest-1", PurifierIdle, Raised, 1_000, 2_000, None),
            transition("rest-1", PurifierIdle, Cleared, 1_000, 4_000, None),
            transition("rest-2", DeviceOffline, Raised, 3_000, 3_500, None),
        ];
        Batch {
            gateway: "gw-1".into(),
            stream: "s".into(),
            sent_ms: 0,
            items: items
                .into_iter()
                .enumerate()
                .map(|(i, a)| Item {
                    seq: 100 + i as u64,
                    body: WBody::Alarm(a),
                })
                .collect(),
        }
    }

    fn ids(v: &Value) -> Vec<String> {
        v["alarms"]
            .as_array()
            .expect("alarms")
            .iter()
            .map(|a| a["id"].as_str().expect("id").to_string())
            .collect()
    }

    #[tokio::test]
    async fn open_alarms_by_default_newest_first() {
        let app = app(state("al.sqlite3"));
        let (s, v) = get_json(app.clone(), "/api/v1/alarms").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            (v["state"].as_str(), v["count"].as_u64()),
            (Some("open"), Some(2))
        );
        assert_eq!(
            ids(&v),
            [
                "rest-1:exceedance:fume_mg_m3:5000",
                "rest-2:device_offline:3000"
            ]
        );
        let e = &v["alarms"][0];
        assert_eq!(e["gateway"], "gw-1");
        assert_eq!(
            e["phase"], "updated",
            "the raise arrived late and did not rewind it"
        );
        assert_eq!(
            (e["value"].as_f64(), e["peak"].as_f64()),
            (Some(3.1), Some(3.1))
        );
        assert_eq!(
            (e["peak_ms"].as_i64(), e["limit"].as_f64()),
            (Some(7_000), Some(2.0))
        );
        assert_eq!(
            (e["started_ms"].as_i64(), e["last_ts_ms"].as_i64()),
            (Some(5_000), Some(7_000))
        );
        assert_eq!(e["cleared_ms"], Value::Null);
        assert_eq!(
            (e["updates"].as_i64(), e["first_seen_ms"].as_i64()),
            (Some(2), Some(44))
        );
        assert_eq!(e["metric"], "fume_mg_m3");
        assert_eq!(e["suppressed"], false);
        assert_eq!(v["alarms"][1]["metric"], Value::Null);

        for (q, want) in [
            ("state=cleared", vec!["rest-1:purifier_idle:1000"]),
            (
                "state=all",
                vec![
                    "rest-1:exceedance:fume_mg_m3:5000",
                    "rest-2:device_offline:3000",
                    "rest-1:purifier_idle:1000",
                ],
            ),
            (
                "suppressed=false",
                vec!["rest-1:exceedance:fume_mg_m3:5000"],
            ),
            ("suppressed=true", vec!["rest-2:device_offline:3000"]),
            (
                "state=all&device=rest-1&kind=purifier_idle",
                vec!["rest-1:purifier_idle:1000"],
            ),
            ("state=all&gateway=gw-2", vec![]),
            (
                "state=all&limit=1",
                vec!["rest-1:exceedance:fume_mg_m3:5000"],
            ),
            // Active in [4500, 4800): purifier_idle cleared at 4000, exceedance started at 5000.
            (
                "state=all&from=4500&to=4800",
                vec!["rest-2:device_offline:3000"],
            ),
        ] {
            let (s, v) = get_json(app.clone(), &format!("/api/v1/alarms?{q}")).await;
            assert_eq!(s, StatusCode::OK, "{q}: {v}");
            assert_eq!(ids(&v), want, "{q}");
        }
    }

    #[tokio::test]
    async fn one_alarm_with_its_transitions() {
        let app = app(state("al1.sqlite3"));
        let (s, v) = get_json(
            app.clone(),
            "/api/v1/alarms/gw-1/rest-1:exceedance:fume_mg_m3:5000",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["alarm"]["phase"], "updated");
        let t = v["transitions"].as_array().expect("transitions");
        let seen: Vec<(&str, i64, u64)> = t
            .iter()
            .map(|t| {
                (
                    t["phase"].as_str().expect("phase"),
                    t["ts_ms"].as_i64().expect("ts"),
                    t["seq"].as_u64().expect("seq"),
                )
            })
            .collect();
        assert_eq!(seen, [("raised", 6_000, 101), ("updated", 7_000, 100)]);
        assert_eq!(
            (t[0]["stream"].as_str(), t[0]["received_ms"].as_i64()),
            (Some("s"), Some(44))
        );
        // Percent-encoded ids work too.
        let (s, v) = get_json(
            app.clone(),
            "/api/v1/alarms/gw-1/rest-1%3Apurifier_idle%3A1000",
        )
        .await;
        assert_eq!(
            (s, v["alarm"]["phase"].as_str()),
            (StatusCode::OK, Some("cleared"))
        );
        assert_eq!(v["alarm"]["cleared_ms"], 4_000);
        let (s, v) = get_json(app.clone(), "/api/v1/alarms/gw-2/rest-1:purifier_idle:1000").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(
            v["error"],
            "no alarm `rest-1:purifier_idle:1000` from gateway `gw-2`"
        );
        let (s, _) = get_json(app, "/api/v1/alarms/gw-1").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn device_alarm_history() {
        let app = app(state("al2.sqlite3"));
        let (s, v) = get_json(app.clone(), "/api/v1/devices/rest-1/alarms").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            (v["device"].as_str(), v["state"].as_str()),
            (Some("rest-1"), Some("all"))
        );
        assert_eq!(
            ids(&v),
            [
                "rest-1:exceedance:fume_mg_m3:5000",
                "rest-1:purifier_idle:1000"
            ]
        );
        let (_, v) = get_json(app.clone(), "/api/v1/devices/rest-1/alarms?from=0&to=3000").await;
        assert_eq!(ids(&v), ["rest-1:purifier_idle:1000"]);
        let (_, v) = get_json(
            app.clone(),
            "/api/v1/devices/rest-1/alarms?state=open&limit=5",
        )
        .await;
        assert_eq!(ids(&v), ["rest-1:exceedance:fume_mg_m3:5000"]);
        let (_, v) = get_json(app.clone(), "/api/v1/devices/nobody/alarms").await;
        assert_eq!(v["count"], 0);
        let (s, v) = get_json(app, "/api/v1/devices/rest-1/alarms?device=rest-2").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|m| m.contains("unknown parameter `device`")),
            "{v}"
        );
    }

    #[tokio::test]
    async fn bad_alarm_parameters_are_400_with_a_message() {
        let app = app(state("albad.sqlite3"));
        for (uri, want) in [
            (
                "/api/v1/alarms?state=closed",
                "invalid query parameter `state`: unknown variant `closed`, expected one of `open`, `cleared`, `all`",
            ),
            (
                "/api/v1/alarms?kind=smoke",
                "parameter `kind`: unknown variant `smoke`, expected one of `exceedance`, `purifier_idle`",
            ),
            (
                "/api/v1/alarms?suppressed=yes",
                "invalid query parameter `suppressed`",
            ),
            ("/api/v1/alarms?from=x", "parameter `from`: invalid digit"),
            ("/api/v1/alarms?from=5&to=5", "must be before"),
            (
                "/api/v1/alarms?limit=0",
                "`limit` must be an integer from 1 to 10000",
            ),
            (
                "/api/v1/alarms?device=",
                "device id must be 1..=128 characters",
            ),
            (
                "/api/v1/alarms?phase=open",
                "unknown parameter `phase`, expected one of `state`, `device`",
            ),
            (
                "/api/v1/devices/rest-1/alarms?metric=fume_mg_m3",
                "unknown parameter `metric`",
            ),
        ] {
            let (s, v) = get_json(app.clone(), uri).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
            let msg = v["error"].as_str().expect("error message");
            assert!(msg.contains(want), "{uri}: {msg}");
        }
    }

    /// 2025-11-03 (a Monday) 10:00 at UTC+08:00.
    const T0: i64 = 1_762_135_200_000;

    /// Cases from alarms: exceedances on rest-1 and rest-2 (T0, T0 + 1 min), a purifier_idle on
    /// rest-3 (T0 + 1 h); rest-1's case is then worked through to closed.
    pub(super) fn case_state(name: &str) -> AppState {
        use crate::cases::{Action, Actor, Command, apply};
        let dir = std::env::temp_dir().join(format!("fumegrid-agg-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join(name);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", p.display()));
        }
        let cat = Arc::new(Catalogue::builtin().expect("catalogue"));
        let mut w = sqlite::open(&p, Synchronous::Normal).expect("open");
        let mut hook = crate::casework::alarms::AlarmCases::new(cat.clone());
        let alarms = [
            (
                transition(
                    "rest-1",
                    AlarmKind::Exceedance,
                    AlarmPhase::Raised,
                    T0,
                    T0,
                    Some(3.0),
                ),
                T0,
            ),
            (
                transition(
                    "rest-2",
                    AlarmKind::Exceedance,
                    AlarmPhase::Raised,
                    T0,
                    T0,
                    Some(3.0),
                ),
                T0 + 60_000,
            ),
            (
                transition(
                    "rest-3",
                    AlarmKind::PurifierIdle,
                    AlarmPhase::Raised,
                    T0,
                    T0,
                    None,
                ),
                T0 + 3_600_000,
            ),
        ];
        for (i, (a, now)) in alarms.into_iter().enumerate() {
            let b = Batch {
                gateway: "gw-1".into(),
                stream: "a".into(),
                sent_ms: 0,
                items: vec![Item {
                    seq: i as u64,
                    body: WBody::Alarm(a),
                }],
            };
            w.commit_with(&[&b], now, &mut hook).expect("commit");
        }
        let mut c = w
            .open_cases_for("gw-1", "rest-1", AlarmKind::Exceedance)
            .expect("open")
            .remove(0);
        let dep = c.department.clone().expect("dispatched");
        let steps = [
            (Action::Accept, Actor::department("d-1", &dep)),
            (Action::Handle, Actor::department("d-1", &dep)),
            // rest-1's episode never cleared: the operator checked on site.
            (
                Action::Verify {
                    override_note: Some("checked on site".into()),
                },
                Actor::operator("op-1"),
            ),
            (Action::Close, Actor::operator("op-1")),
        ];
        for (i, (action, who)) in steps.into_iter().enumerate() {
            let now = T0 + 7_200_000 + i as i64 * 60_000;
            let (next, ev, _) =
                apply(&c, Command::new(action), &who, now, &cat).expect("transition");
            w.save_case(&next, &ev, &[], now).expect("save");
            c = next;
        }
        drop(w);
        // As the daemon does: statistics from memory, appended by the case writer.
        let mut case_writer = sqlite::open(&p, Synchronous::Normal).expect("case writer");
        let index = Arc::new(StatsIndex::load(&mut case_writer).expect("index"));
        let cw = crate::casework::Casework::new(
            Arc::new(std::sync::Mutex::new(case_writer)),
            cat.clone(),
            fumegrid_common::clock::Clock::fixed(T0 + 3 * 3_600_000),
        )
        .with_stats_index(index.clone());
        AppState {
            reader: Arc::new(StatsIndex::reader(
                Arc::new(sqlite::open_reader(&p).expect("reader")),
                index,
            )),
            stats: Arc::new(Stats::default()),
            catalogue: cat,
            auth: Arc::new(Auth {
                tokens: crate::auth::Tokens::from_plain([
                    ("tok-op", Actor::operator("desk")),
                    (
                        "tok-view",
                        Actor {
                            id: "leader".into(),
                            role: crate::cases::Role::Viewer,
                        },
                    ),
                    ("tok-epb", Actor::department("epb-duty", "epb")),
                    ("tok-urban", Actor::department("urban-duty", "urban")),
                    (
                        "tok-citizen",
                        Actor {
                            id: "citizen-1".into(),
                            role: crate::cases::Role::Reporter,
                        },
                    ),
                ]),
                anonymous_viewer: true,
            }),
            casework: Some(Arc::new(cw)),
            notify: Default::default(),
            clock: Clock::fixed(T0 + 3 * 3_600_000),
            evidence: Some(Arc::new(crate::evidence::Evidence::new(
                crate::evidence::Blobs::in_memory(),
                Arc::new(sqlite::open_reader(&p).expect("reader")),
                Arc::new(std::sync::Mutex::new(
                    sqlite::open(&p, Synchronous::Normal).expect("evidence writer"),
                )),
                crate::evidence::Settings::default(),
                None,
                Clock::fixed(T0 + 3 * 3_600_000),
            ))),
            drones: None,
            sites: Default::default(),
        }
    }

    fn case_ids(v: &Value) -> Vec<String> {
        v["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_string())
            .collect()
    }

    #[tokio::test]
    async fn cases_list_filters_and_pages() {
        let st = case_state("cases.sqlite3");
        let cat = st.catalogue.clone();
        let dep_exc = cat
            .category_for_alarm(AlarmKind::Exceedance)
            .expect("category")
            .department
            .clone();
        let idle = cat
            .category_for_alarm(AlarmKind::PurifierIdle)
            .expect("category")
            .clone();
        let app = app(st);
        let (s, v) = get_json(app.clone(), "/api/v1/cases").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            (v["total"].as_u64(), v["count"].as_u64()),
            (Some(3), Some(3))
        );
        assert_eq!(
            case_ids(&v),
            ["C20251103-0003", "C20251103-0002", "C20251103-0001"],
            "newest reported first"
        );
        assert_eq!(v["cases"][2]["state"], "closed");
        assert_eq!(v["cases"][1]["department"], dep_exc.as_str());
        let one = |uri: &'static str| {
            let app = app.clone();
            async move {
                let (s, v) = get_json(app, uri).await;
                assert_eq!(s, StatusCode::OK, "{uri}: {v}");
                (v["total"].as_u64().expect("total"), case_ids(&v))
            }
        };
        assert_eq!(
            one("/api/v1/cases?state=closed").await,
            (1, vec!["C20251103-0001".to_string()])
        );
        // `open`: every state but rejected and closed (issue 11, item 12).
        assert_eq!(
            one("/api/v1/cases?state=open").await,
            (
                2,
                vec!["C20251103-0003".to_string(), "C20251103-0002".to_string()]
            )
        );
        assert_eq!(
            one("/api/v1/cases?state=dispatched&device=rest-2").await,
            (1, vec!["C20251103-0002".to_string()])
        );
        let (s, v) = get_json(app.clone(), &format!("/api/v1/cases?category={}", idle.id)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(case_ids(&v), ["C20251103-0003"]);
        let (_, v) = get_json(
            app.clone(),
            &format!("/api/v1/cases?department={}&state=dispatched", dep_exc),
        )
        .await;
        assert!(case_ids(&v).contains(&"C20251103-0002".to_string()), "{v}");
        let (s, v) = get_json(app.clone(), "/api/v1/cases?limit=1&offset=1").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            (
                v["total"].as_u64(),
                v["offset"].as_u64(),
                v["limit"].as_u64()
            ),
            (Some(3), Some(1), Some(1))
        );
        assert_eq!(case_ids(&v), ["C20251103-0002"]);
        let (_, v) = get_json(app.clone(), "/api/v1/cases?offset=3").await;
        assert_eq!(
            (v["total"].as_u64(), v["count"].as_u64()),
            (Some(3), Some(0))
        );
        assert_eq!(
            one("/api/v1/cases?from=1762135200001&to=1762138800001")
                .await
                .1,
            ["C20251103-0003", "C20251103-0002"]
        );
        for (uri, want) in [
            (
                "/api/v1/cases?state=shut",
                "parameter `state`: unknown case state `shut`; expected open, reported",
            ),
            (
                "/api/v1/cases?category=nope",
                "no category `nope` in the catalogue",
            ),
            ("/api/v1/cases?department=nope", "no department `nope`"),
            (
                "/api/v1/cases?offset=-1",
                "parameter `offset`: invalid digit",
            ),
            (
                "/api/v1/cases?limit=0",
                "`limit` must be an integer from 1 to 1000",
            ),
            ("/api/v1/cases?sort=id", "unknown parameter `sort`"),
            (
                "/api/v1/cases?from=5&to=5",
                "`from` (5) must be before `to` (5)",
            ),
        ] {
            let (s, v) = get_json(app.clone(), uri).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
            let msg = v["error"].as_str().expect("error message");
            assert!(msg.contains(want), "{uri}: {msg}");
        }
    }

    #[tokio::test]
    async fn one_case_with_its_timeline_and_the_catalogue() {
        let app = app(case_state("case.sqlite3"));
        let (s, v) = get_json(app.clone(), "/api/v1/cases/C20251103-0001").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["case"]["state"], "closed");
        assert_eq!(v["case"]["origin"]["origin"], "alarm");
        assert_eq!(v["case"]["alarms"][0]["gateway"], "gw-1");
        let kinds: Vec<&str> = v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["kind"].as_str().expect("kind"))
            .collect();
        assert_eq!(
            kinds,
            [
                "reported",
                "registered",
                "dispatched",
                "accepted",
                "handled",
                "verified",
                "closed"
            ]
        );
        assert_eq!(v["events"][0]["actor"]["role"], "system");
        assert_eq!(v["events"][3]["actor"]["role"], "department");
        let (s, v) = get_json(app.clone(), "/api/v1/cases/C19990101-0001").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(v["error"], "no case `C19990101-0001`");
        let (s, v) = get_json(app.clone(), "/api/v1/catalogue").await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            v["departments"]
                .as_array()
                .expect("departments")
                .iter()
                .any(|d| d["id"] == "epb"),
            "{v}"
        );
        assert!(v["categories"].as_array().expect("categories").len() >= 4);
        assert_eq!(v["calendar"]["utc_offset_min"], 480);
    }

    /// The handler answers from memory exactly what the event log in SQLite gives.
    #[tokio::test]
    async fn case_statistics_from_memory_equal_the_stored_log() {
        let st = case_state("cstats-mem.sqlite3");
        let app = app(st.clone());
        for (from, to) in [
            // No parameters: from 0 to the end of time.
            (0, i64::MAX),
            (T0, T0 + 7_200_000),
            (T0 + 60_000, T0 + 7_320_000),
            (0, 1000),
        ] {
            let period = Period {
                from_ms: from,
                to_ms: to,
            };
            let q = match (from, to) {
                (0, i64::MAX) => String::new(),
                _ => format!("?from={from}&to={to}"),
            };
            let (s, v) = get_json(app.clone(), &format!("/api/v1/stats/cases{q}")).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let events = st.reader.case_events_until(to).expect("events");
            let direct = crate::cases::stats::compute(&events, period);
            assert_eq!(v, json!(direct), "{period:?}");
        }
    }

    #[tokio::test]
    async fn case_statistics_of_a_period() {
        let app = app(case_state("cstats.sqlite3"));
        let (s, v) = get_json(app.clone(), "/api/v1/stats/cases").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["total"]["received"], 3);
        assert_eq!(v["total"]["registered"], 3);
        assert_eq!(v["total"]["registration_rate"], 1.0);
        assert_eq!(v["total"]["closed"], 1);
        assert_eq!(v["by_site"]["gw-1"]["received"], 3);
        // Before the close: nothing closed yet; a period before everything: nothing at all.
        let (_, v) = get_json(
            app.clone(),
            &format!("/api/v1/stats/cases?from={T0}&to={}", T0 + 7_200_000),
        )
        .await;
        assert_eq!(
            (
                v["total"]["received"].as_u64(),
                v["total"]["closed"].as_u64()
            ),
            (Some(3), Some(0))
        );
        let (_, v) = get_json(app.clone(), "/api/v1/stats/cases?to=1000").await;
        assert_eq!(v["total"]["received"], 0);
        let (s, v) = get_json(app.clone(), "/api/v1/stats/cases?period=day").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            v["error"]
                .as_str()
                .expect("e")
                .contains("unknown parameter `period`")
        );
    }

    async fn get_json(app: Router, uri: &str) -> (StatusCode, Value) {
        let resp = app
            .oneshot(Request::get(uri).body(Body::empty()).expect("req"))
            .await
            .expect("resp");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn gateways_and_devices() {
        let app = app(state("gd.sqlite3"));
        let (s, v) = get_json(app.clone(), "/api/v1/gateways").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["gateways"][0]["id"], "gw-1");
        assert_eq!(v["gateways"][0]["online"], true);
        assert_eq!(v["gateways"][0]["last_seen_ms"], 43);
        assert_eq!(v["gateways"][1]["id"], "gw-2");
        assert_eq!(v["gateways"][1]["online"], false);
        assert_eq!(v["gateways"][1]["last_seen_ms"], Value::Null);

        let (s, v) = get_json(app.clone(), "/api/v1/devices").await;
        assert_eq!(s, StatusCode::OK);
        let d = &v["devices"][0];
        assert_eq!(
            (d["gateway"].as_str(), d["device"].as_str()),
            (Some("gw-1"), Some("rest-1"))
        );
        let latest = d["latest"].as_array().expect("latest");
        assert_eq!(latest.len(), 2);
        let fume = latest
            .iter()
            .find(|l| l["metric"] == "fume_mg_m3")
            .expect("fume");
        assert_eq!(fume["ts_ms"], 18_000);
        assert_eq!(fume["quality"], "out_of_range");

        let (s, v) = get_json(app.clone(), "/healthz").await;
        assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
        let (s, v) = get_json(app, "/api/v1/stats").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["rejects"]["bad_mac"], 0);
    }

    #[tokio::test]
    async fn readings_range_metric_limit() {
        let app = app(state("rd.sqlite3"));
        let (s, v) = get_json(
            app.clone(),
            "/api/v1/devices/rest-1/readings?from=2000&to=10000&metric=fume_mg_m3",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let ts: Vec<i64> = v["readings"]
            .as_array()
            .expect("arr")
            .iter()
            .map(|r| r["ts_ms"].as_i64().expect("ts"))
            .collect();
        assert_eq!(ts, vec![2000, 4000, 6000, 8000]);
        let (_, v) = get_json(app.clone(), "/api/v1/devices/rest-1/readings?limit=3").await;
        assert_eq!(v["count"], 3);
        let (_, v) = get_json(app.clone(), "/api/v1/devices/nobody/readings").await;
        assert_eq!(v["count"], 0);
    }

    #[tokio::test]
    async fn readings_carry_the_periods_of_the_range() {
        let app = app(state("rdp.sqlite3"));
        let dir = std::env::temp_dir().join(format!("fumegrid-agg-api-{}", std::process::id()));
        let mut w = sqlite::open(&dir.join("rdp.sqlite3"), Synchronous::Normal).expect("open");
        let pm = |count: u32| fumegrid_common::wire::PeriodMetric {
            metric: Metric::FumeMgM3,
            unit: None,
            polls: 60,
            count,
            avg: (count > 0).then_some(1.25),
            min: (count > 0).then_some(1.0),
            max: (count > 0).then_some(2.0),
            last: (count > 0).then_some(1.5),
            valid: count >= 45,
        };
        let items = [(0, 60), (60_000, 0), (120_000, 30)]
            .into_iter()
            .enumerate()
            .map(|(i, (start_ms, count))| Item {
                seq: i as u64,
                body: WBody::Period(fumegrid_common::wire::Period {
                    device: "rest-1".into(),
                    start_ms,
                    period_s: 60,
                    metrics: vec![pm(count)],
                }),
            })
            .collect();
        let b = Batch {
            gateway: "gw-1".into(),
            stream: "p".into(),
            sent_ms: 0,
            items,
        };
        w.commit(&[&b], 50).expect("commit");
        let (s, v) = get_json(
            app.clone(),
            "/api/v1/devices/rest-1/readings?from=0&to=120000&metric=fume_mg_m3",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["count"], 10, "raw readings as before");
        assert_eq!(
            v["periods"],
            json!([
                {"gateway": "gw-1", "metric": "fume_mg_m3", "unit": "mg/m³", "start_ms": 0,
                 "period_s": 60, "polls": 60, "count": 60, "avg": 1.25, "min": 1.0, "max": 2.0,
                 "last": 1.5, "valid": true},
                {"gateway": "gw-1", "metric": "fume_mg_m3", "unit": "mg/m³", "start_ms": 60000,
                 "period_s": 60, "polls": 60, "count": 0, "avg": null, "min": null, "max": null,
                 "last": null, "valid": false},
            ])
        );
        let (_, v) = get_json(app.clone(), "/api/v1/devices/rest-1/readings?metric=fan_on").await;
        assert_eq!(v["periods"], json!([]));
        // Rollups: each minute takes its period, not the raw polls of the first minute (value
        // seq / 10 at seq s): the first is valid, the second has no valid poll, the third too few.
        let (s, v) = get_json(
            app.clone(),
            "/api/v1/devices/rest-1/readings?metric=fume_mg_m3&resolution=1m",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            (v["resolution"].as_str(), v["count"].as_u64()),
            (Some("1m"), Some(3))
        );
        let p = &v["points"];
        assert_eq!(
            (p[0]["start_ms"].as_i64(), p[0]["count"].as_u64()),
            (Some(0), Some(60))
        );
        assert_eq!(
            (p[0]["avg"].as_f64(), p[0]["valid"].as_bool()),
            (Some(1.25), Some(true))
        );
        assert_eq!(
            (p[1]["avg"].clone(), p[1]["valid"].as_bool()),
            (Value::Null, Some(false))
        );
        assert_eq!(
            (p[2]["count"].as_u64(), p[2]["valid"].as_bool()),
            (Some(30), Some(false))
        );
        assert_eq!(p[2]["valid_share"], 0.0);
        // Without the periods, the first minute is its raw polls (seq 18 out of range).
        let (_, v) = get_json(
            app.clone(),
            "/api/v1/devices/rest-1/readings?metric=fan_on&resolution=1m",
        )
        .await;
        let p = &v["points"][0];
        assert_eq!(
            (p["count"].as_u64(), p["polls"].as_u64()),
            (Some(10), Some(10))
        );
        // auto over three minutes reads raw rows; over a year, days.
        let (_, v) = get_json(
            app.clone(),
            "/api/v1/devices/rest-1/readings?from=0&to=180000&resolution=auto",
        )
        .await;
        assert_eq!(v["resolution"], "raw");
        let (_, v) = get_json(
            app.clone(),
            "/api/v1/devices/rest-1/readings?from=0&to=31536000000&resolution=auto&metric=fume_mg_m3",
        )
        .await;
        assert_eq!(
            (v["resolution"].as_str(), v["count"].as_u64()),
            (Some("1d"), Some(1))
        );
        assert_eq!(v["points"][0]["count"], 60 + 30);
    }

    #[test]
    fn auto_resolution_keeps_a_span_to_a_few_hundred_points() {
        use params::Resolution as R;
        let min = 60_000;
        assert_eq!(pick_resolution(None, 0, i64::MAX), None, "absent is raw");
        assert_eq!(pick_resolution(Some(R::H1), 0, 1), Some(2), "explicit wins");
        let auto = |span: i64| pick_resolution(Some(R::Auto), 1_000, 1_000 + span);
        assert_eq!(auto(5 * min), None);
        assert_eq!(auto(5 * min + 1), Some(0));
        assert_eq!(auto(500 * min), Some(0));
        assert_eq!(auto(500 * min + 60_000), Some(1));
        assert_eq!(auto(7 * 24 * 60 * min), Some(2), "a week: 168 hours");
        assert_eq!(auto(365 * 24 * 60 * min), Some(3), "a year: 365 days");
        assert_eq!(pick_resolution(Some(R::Auto), 0, i64::MAX), Some(3));
        for span in [
            6 * min,
            3 * 24 * 60 * min,
            30 * 24 * 60 * min,
            365 * 24 * 60 * min,
        ] {
            let level = auto(span).expect("a rollup");
            let points = span / (i64::from(rollup::LEVELS[level]) * 1000);
            assert!(points <= AUTO_POINTS, "{span}: {points}");
        }
    }

    async fn boom() -> &'static str {
        panic!("a bug")
    }

    /// A handler's panic is a JSON 500 for that request; the service keeps answering.
    #[tokio::test]
    async fn a_panicking_handler_is_a_json_500() {
        let router = harden(
            Router::new()
                .route("/boom", get(boom))
                .route("/ok", get(|| async { "fine" })),
            &HttpLimits::default(),
        );
        let (s, v) = get_json(router.clone(), "/boom").await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(v["error"], "internal error");
        let resp = router
            .oneshot(Request::get("/ok").body(Body::empty()).expect("req"))
            .await
            .expect("resp");
        assert_eq!(resp.status(), StatusCode::OK);
    }

    /// Regression (issue 11, item 3): 413, 405 and a path that is not UTF-8 were plain text.
    #[tokio::test]
    async fn every_error_body_is_json() {
        let app = app(locked("jsonerr.sqlite3"));
        let big = format!(
            r#"{{"action":"comment","note":"{}"}}"#,
            "x".repeat(1_500_000)
        );
        let tr = "/api/v1/cases/C20251103-0002/transitions";
        let (s, v, h) = call(app.clone(), "POST", tr, Some("tok-op"), &big).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        assert!(v["error"].is_string(), "{v}");
        assert_eq!(h["content-type"], "application/json");
        // Under the body limit, over the note limit: 400 naming the field.
        let long = format!(r#"{{"action":"comment","note":"{}"}}"#, "x".repeat(5000));
        let (s, v, _) = call(app.clone(), "POST", tr, Some("tok-op"), &long).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().expect("msg").contains("`note`"), "{v}");
        let (s, v, _) = call(app.clone(), "DELETE", "/api/v1/cases", Some("tok-op"), "").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
        assert!(v["error"].is_string(), "{v}");
        let (s, v, _) = call(
            app.clone(),
            "GET",
            "/api/v1/cases/%FF%FE",
            Some("tok-op"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].is_string(), "{v}");
        let title = "t".repeat(201);
        let (s, v, _) = call(
            app.clone(),
            "POST",
            "/api/v1/cases",
            Some("tok-op"),
            &format!(r#"{{"category":"complaint","title":"{title}"}}"#),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().expect("msg").contains("`title`"), "{v}");
        // Regression (issue 11, item 12): a misspelt field was silently ignored.
        let (s, v, _) = call(
            app.clone(),
            "POST",
            tr,
            Some("tok-op"),
            r#"{"action":"transfer","departmnet":"urban","department":"urban"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["error"]
                .as_str()
                .expect("msg")
                .contains("unknown field `departmnet` for action `transfer`"),
            "{v}"
        );
        // A viewer is refused before its body is read (a broken body is not even parsed).
        let (s, v, _) = call(app, "POST", tr, Some("tok-view"), "{").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    }

    #[tokio::test]
    async fn bad_parameters_are_400_with_a_message() {
        let app = app(state("bad.sqlite3"));
        for (uri, want) in [
            (
                "/api/v1/devices/rest-1/readings?from=yesterday",
                "invalid query parameter `from`: invalid digit found in string",
            ),
            (
                "/api/v1/devices/rest-1/readings?from=10&to=5",
                "must be before",
            ),
            ("/api/v1/devices/rest-1/readings?limit=0", "`limit` must be"),
            (
                "/api/v1/devices/rest-1/readings?limit=99999",
                "`limit` must be",
            ),
            (
                "/api/v1/devices/rest-1/readings?metric=smoke",
                "parameter `metric`: unknown metric `smoke`",
            ),
            (
                "/api/v1/devices/rest-1/readings?form=1",
                "unknown parameter `form`",
            ),
        ] {
            let (s, v) = get_json(app.clone(), uri).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
            let msg = v["error"].as_str().expect("error message");
            assert!(msg.contains(want), "{uri}: {msg}");
        }
        let (s, _) = get_json(app, "/api/v1/nothing").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    pub(super) async fn call(
        app: Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app
            .oneshot(req.body(Body::from(body.to_string())).expect("req"))
            .await
            .expect("resp");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        )
    }

    pub(super) fn locked(name: &str) -> AppState {
        let mut st = case_state(name);
        st.auth = Arc::new(Auth {
            tokens: st.auth.tokens.clone(),
            anonymous_viewer: false,
        });
        st
    }

    #[tokio::test]
    async fn tokens_decide_who_sees_and_moves_a_case() {
        let app = app(locked("auth.sqlite3"));
        // 401: no token, an unknown one, a malformed header; the answer says what to send.
        let (s, v, h) = call(app.clone(), "GET", "/api/v1/cases", None, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(v["error"].as_str().expect("msg").contains("Bearer"), "{v}");
        assert!(h.contains_key("www-authenticate"));
        let (s, _, _) = call(app.clone(), "GET", "/api/v1/devices", Some("nope"), "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _, _) = call(app.clone(), "GET", "/healthz", None, "").await;
        assert_eq!(s, StatusCode::OK, "health needs no token");

        // A department lists only the cases with it; another department's case is 403.
        let (s, v, _) = call(app.clone(), "GET", "/api/v1/cases", Some("tok-urban"), "").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(
            v["cases"]
                .as_array()
                .expect("cases")
                .iter()
                .all(|c| c["department"] == "urban"),
            "{v}"
        );
        let (s, v, _) = call(
            app.clone(),
            "GET",
            "/api/v1/cases?department=epb",
            Some("tok-urban"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let c2 = "/api/v1/cases/C20251103-0002";
        let (s, v, _) = call(app.clone(), "GET", c2, Some("tok-epb"), "").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["case"]["department"], "epb");
        let (s, v, _) = call(app.clone(), "GET", c2, Some("tok-urban"), "").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert!(
            v["error"].as_str().expect("msg").contains("is with `epb`"),
            "{v}"
        );

        let tr = "/api/v1/cases/C20251103-0002/transitions";
        let (s, v, _) = call(
            app.clone(),
            "POST",
            tr,
            Some("tok-urban"),
            r#"{"action":"accept"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, v, _) = call(
            app.clone(),
            "POST",
            tr,
            Some("tok-view"),
            r#"{"action":"accept"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert!(
            v["error"].as_str().expect("msg").contains("read-only"),
            "{v}"
        );

        // 400 with a message that says what is wrong.
        for (body, want) in [
            ("", "needs a JSON body"),
            ("{", "invalid JSON body"),
            (r#"{"action":"fly"}"#, "unknown variant `fly`"),
            (r#"{"action":"transfer"}"#, "missing field `department`"),
            (
                r#"{"action":"rate","satisfaction":9000}"#,
                "integer `9000`, expected u8",
            ),
        ] {
            let (s, v, _) = call(app.clone(), "POST", tr, Some("tok-epb"), body).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
            let msg = v["error"].as_str().expect("msg");
            assert!(msg.contains(want), "{body}: {msg}");
        }
        // The department signs for it and handles it; a repeat is a conflict, not a change.
        let (s, v, _) = call(
            app.clone(),
            "POST",
            tr,
            Some("tok-epb"),
            r#"{"action":"accept","note":"on it"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["case"]["state"], "accepted");
        assert_eq!(v["events"][0]["actor"]["id"], "epb-duty");
        assert_eq!(v["events"][0]["note"], "on it");
        let (s, v, _) = call(
            app.clone(),
            "POST",
            tr,
            Some("tok-epb"),
            r#"{"action":"accept"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert!(
            v["error"]
                .as_str()
                .expect("msg")
                .contains("cannot accept a case that is accepted"),
            "{v}"
        );
        let (s, v, _) = call(
            app.clone(),
            "POST",
            tr,
            Some("tok-epb"),
            r#"{"action":"handle"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v, _) = call(
            app.clone(),
            "POST",
            tr,
            Some("tok-op"),
            r#"{"action":"timer","timer":"escalate"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, v, _) = call(
            app.clone(),
            "POST",
            "/api/v1/cases/C20990101-0001/transitions",
            Some("tok-op"),
            r#"{"action":"close"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

        // Operators file cases; reporters reach only their own cases.
        let (s, v, _) = call(
            app.clone(),
            "POST",
            "/api/v1/cases",
            Some("tok-op"),
            r#"{"category":"complaint","title":"smoke at the night market","site":"market-3"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["case"]["state"], "reported");
        assert_eq!(v["case"]["origin"]["origin"], "operator");
        let (s, v, _) = call(
            app.clone(),
            "POST",
            "/api/v1/cases",
            Some("tok-op"),
            r#"{"category":"nope","title":"x"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, _, _) = call(
            app.clone(),
            "POST",
            "/api/v1/cases",
            Some("tok-epb"),
            r#"{"category":"complaint","title":"x"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, _) = call(
            app.clone(),
            "GET",
            "/api/v1/devices",
            Some("tok-citizen"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, _) = call(app.clone(), "GET", c2, Some("tok-citizen"), "").await;
        assert_eq!(s, StatusCode::FORBIDDEN);

        // The delivery log: the dispatches queued notifications for the departments.
        let (s, v, _) = call(
            app.clone(),
            "GET",
            "/api/v1/notifications",
            Some("tok-epb"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let rows = v["notifications"].as_array().expect("rows");
        assert!(!rows.is_empty(), "{v}");
        assert!(
            rows.iter()
                .all(|n| n["department"] == "epb" && n["state"] == "pending"),
            "{v}"
        );
        let (s, _, _) = call(
            app.clone(),
            "GET",
            "/api/v1/notifications?department=urban",
            Some("tok-epb"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, v, _) = call(
            app.clone(),
            "GET",
            "/api/v1/notifications?state=lost",
            Some("tok-op"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }
}
