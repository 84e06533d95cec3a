//! Typed query strings: [`Params<T>`] reads `?a=1&b=x` into a serde struct (unknown parameters
//! refused with `deny_unknown_fields`) and answers one JSON 400 that names the bad parameter.
//!
//! It is axum's `Query<T>` (same `serde_urlencoded` reading) with a better rejection: axum's
//! says "Failed to deserialize query string" in plain text; this one goes through
//! `serde_path_to_error`, so the message names the parameter, and it is an [`ApiError`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use fumegrid_common::metric::Metric;
use fumegrid_common::wire::AlarmKind;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::cases::State as CaseState;

/// A query string read into `T` (see the module doc).
#[derive(Debug, Clone)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(Params)
    }
}

/// Reads a query string (without `?`) into `T`. Pure; a fuzz target.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde's messages quote the offending value: keep them short.
        let inner = fumegrid_common::text::clip(&inner, 300);
        if inner.starts_with("unknown field") || inner.starts_with("duplicate field") {
            // "unknown field `x`, expected one of …" / "duplicate field `x`".
            ApiError::BadRequest(format!(
                "invalid query: {}",
                inner.replacen(" field ", " parameter ", 1)
            ))
        } else {
            ApiError::BadRequest(format!(
                "invalid query parameter `{}`: {inner}",
                fumegrid_common::text::clip(&path, 64)
            ))
        }
    })
}

/// `GET /api/v1/devices/{device}/readings`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingsParams {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub metric: Option<Metric>,
    pub gateway: Option<String>,
    pub limit: Option<u32>,
    pub resolution: Option<Resolution>,
}

/// `resolution=` of a readings query: raw rows, a rollup level, or picked for the span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Resolution {
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "1m")]
    M1,
    #[serde(rename = "10m")]
    M10,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "1d")]
    D1,
}

/// Which alarm episodes by phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmStateParam {
    Open,
    Cleared,
    All,
}

/// `GET /api/v1/alarms`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmParams {
    pub state: Option<AlarmStateParam>,
    pub device: Option<String>,
    pub gateway: Option<String>,
    pub kind: Option<AlarmKind>,
    pub suppressed: Option<bool>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: Option<u32>,
}

/// `GET /api/v1/devices/{device}/alarms`: as [`AlarmParams`] without `device` (it is in the
/// path).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAlarmParams {
    pub state: Option<AlarmStateParam>,
    pub gateway: Option<String>,
    pub kind: Option<AlarmKind>,
    pub suppressed: Option<bool>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: Option<u32>,
}

impl From<DeviceAlarmParams> for AlarmParams {
    fn from(p: DeviceAlarmParams) -> AlarmParams {
        AlarmParams {
            state: p.state,
            device: None,
            gateway: p.gateway,
            kind: p.kind,
            suppressed: p.suppressed,
            from: p.from,
            to: p.to,
            limit: p.limit,
        }
    }
}

/// A case list's `state`: `open` (any state but rejected and closed) or one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseStateParam {
    Open,
    Is(CaseState),
}

impl<'de> Deserialize<'de> for CaseStateParam {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "open" {
            return Ok(CaseStateParam::Open);
        }
        match CaseState::ALL.iter().find(|x| x.name() == s) {
            Some(x) => Ok(CaseStateParam::Is(*x)),
            None => {
                let names: Vec<&str> = CaseState::ALL.iter().map(|x| x.name()).collect();
                Err(serde::de::Error::custom(format!(
                    "unknown case state `{}`; expected open, {}",
                    fumegrid_common::text::clip(&s, 64),
                    names.join(", ")
                )))
            }
        }
    }
}

/// `GET /api/v1/cases`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseParams {
    pub state: Option<CaseStateParam>,
    pub category: Option<String>,
    pub department: Option<String>,
    pub device: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// `GET /api/v1/stats/cases`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodParams {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// `GET /api/v1/notifications`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationParams {
    pub department: Option<String>,
    pub case: Option<String>,
    pub state: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: DeserializeOwned + std::fmt::Debug>(q: &str) -> String {
        parse_query::<T>(q).expect_err(q).to_string()
    }

    #[test]
    fn each_bad_parameter_is_named() {
        assert!(err::<ReadingsParams>("limit=abc").contains("parameter `limit`"));
        assert!(err::<ReadingsParams>("from=yesterday").contains("parameter `from`"));
        assert!(err::<ReadingsParams>("metric=smoke").contains("unknown metric `smoke`"));
        assert!(err::<ReadingsParams>("form=1").contains("unknown parameter `form`"));
        assert!(err::<ReadingsParams>("limit=1&limit=2").contains("duplicate parameter `limit`"));
        assert!(err::<AlarmParams>("suppressed=maybe").contains("parameter `suppressed`"));
        assert!(err::<DeviceAlarmParams>("device=x").contains("unknown parameter `device`"));
        assert!(err::<CaseParams>("state=shut").contains("expected open, reported"));
        let p: CaseParams = parse_query("state=open&limit=5").expect("open");
        assert_eq!((p.state, p.limit), (Some(CaseStateParam::Open), Some(5)));
        let p: CaseParams = parse_query("state=closed").expect("closed");
        assert_eq!(p.state, Some(CaseStateParam::Is(CaseState::Closed)));
        let p: ReadingsParams = parse_query("").expect("empty");
        assert!(p.limit.is_none());
        let p: ReadingsParams = parse_query("resolution=10m").expect("10m");
        assert_eq!(p.resolution, Some(Resolution::M10));
        assert!(err::<ReadingsParams>("resolution=5m").contains("expected one of `auto`, `raw`"));
    }
}
