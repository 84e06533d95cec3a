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
//! | `GET /api/v1/devices/{device}/readings?from=&to=&metric=&gateway=&limit=` | `{"device", "from", "to", "count", "readings":[{gateway, metric, ts_ms, value, quality}]}` |
//! | `GET /api/v1/stats` | ingest counters, rejects by reason |

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fumegrid_common::metric::Metric;
use serde_json::{Value, json};

use crate::ingest::stats::Stats;
use crate::store::{Reader, ReadingQuery, StoreError};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub reader: Arc<dyn Reader>,
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Default and largest `limit` of a readings query.
pub const DEFAULT_LIMIT: u32 = 1000;
pub const MAX_LIMIT: u32 = 10_000;

/// The one error type of the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no such endpoint")]
    NotFound,
    #[error("store unavailable")]
    Store(#[from] StoreError),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The one mapping from error kind to HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Store(e) => tracing::error!(error = %e, "API store error"),
            ApiError::Internal(e) => tracing::error!(error = %e, "API internal error"),
            _ => {}
        }
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{device}/readings", get(readings))
        .route("/api/v1/stats", get(stats))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// Runs a blocking store call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

async fn healthz(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "mqtt_connected": s.stats.mqtt_connected.load(Relaxed),
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
    Json(json!(s.stats.snapshot()))
}

/// Parses the readings query: every parameter checked, unknown ones refused. Pure.
pub fn parse_readings_query(
    device: String,
    params: &HashMap<String, String>,
) -> Result<ReadingQuery, ApiError> {
    const KNOWN: [&str; 5] = ["from", "to", "metric", "gateway", "limit"];
    let mut unknown: Vec<&str> = params
        .keys()
        .map(String::as_str)
        .filter(|k| !KNOWN.contains(k))
        .collect();
    unknown.sort_unstable();
    if let Some(k) = unknown.first() {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter `{k}`; expected from, to, metric, gateway, limit"
        )));
    }
    let int = |k: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(k)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "`{k}` must be a timestamp in milliseconds since the Unix epoch, not `{v}`"
                    ))
                })
            })
            .transpose()
    };
    let from_ms = int("from")?.unwrap_or(0);
    let to_ms = int("to")?.unwrap_or(i64::MAX);
    if from_ms >= to_ms {
        return Err(ApiError::BadRequest(format!(
            "`from` ({from_ms}) must be before `to` ({to_ms})"
        )));
    }
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "`limit` must be an integer from 1 to {MAX_LIMIT}, not `{v}`"
                )));
            }
        },
    };
    let metric = match params.get("metric") {
        None => None,
        Some(m) => match Metric::ALL.iter().find(|x| x.name() == m) {
            Some(x) => Some(x.name().to_string()),
            None => {
                let names: Vec<&str> = Metric::ALL.iter().map(|x| x.name()).collect();
                return Err(ApiError::BadRequest(format!(
                    "unknown metric `{m}`; expected one of {}",
                    names.join(", ")
                )));
            }
        },
    };
    if device.is_empty() || device.len() > 128 {
        return Err(ApiError::BadRequest(
            "device id must be 1..=128 characters".into(),
        ));
    }
    Ok(ReadingQuery {
        device,
        gateway: params.get("gateway").cloned(),
        metric,
        from_ms,
        to_ms,
        limit,
    })
}

async fn readings(
    State(s): State<AppState>,
    Path(device): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let q = parse_readings_query(device, &params)?;
    let r = s.reader.clone();
    let (device, from, to) = (q.device.clone(), q.from_ms, q.to_ms);
    let rows = blocking(move || r.readings(&q)).await?;
    Ok(Json(json!({
        "device": device,
        "from": from,
        "to": to,
        "count": rows.len(),
        "readings": rows,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use fumegrid_common::reading::{Quality, Reading};
    use fumegrid_common::wire::{Batch, Body as WBody, Item, State as GwState};
    use tower::ServiceExt;

    use crate::config::Synchronous;
    use crate::store::{Writer, sqlite};

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
        w.set_status("gw-1", GwState::Online, Some(40), None, 43)
            .expect("status");
        AppState {
            reader: Arc::new(sqlite::open_reader(&p).expect("reader")),
            stats: Arc::new(Stats::default()),
        }
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
    async fn bad_parameters_are_400_with_a_message() {
        let app = app(state("bad.sqlite3"));
        for (uri, want) in [
            (
                "/api/v1/devices/rest-1/readings?from=yesterday",
                "`from` must be a timestamp",
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
                "unknown metric `smoke`",
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
}
