//! The one error type of the API and the checks of what a request names: [`ApiError::status`]
//! is the one place that maps errors to HTTP status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// The one error type of the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no such endpoint")]
    NotFound,
    /// The endpoint exists, the thing asked for does not (e.g. an unknown alarm episode).
    #[error("{0}")]
    Missing(String),
    /// No or an unknown token.
    #[error("{0}")]
    Unauthorized(String),
    /// Known caller, not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// Not possible in the current state (illegal transition, changed meanwhile).
    #[error("{0}")]
    Conflict(String),
    /// A part that is not running (e.g. case changes without a store writer).
    #[error("{0}")]
    Unavailable(String),
    /// A body over its limit (an upload).
    #[error("{0}")]
    TooLarge(String),
    /// A body of a type the endpoint does not take (an upload that is not JPEG or PNG).
    #[error("{0}")]
    UnsupportedMedia(String),
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
            ApiError::NotFound | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Store(StoreError::Stale(_)) => StatusCode::CONFLICT,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::casework::CaseworkError> for ApiError {
    fn from(e: crate::casework::CaseworkError) -> ApiError {
        use crate::cases::CaseError as C;
        use crate::casework::CaseworkError as W;
        match e {
            W::NotFound(id) => ApiError::Missing(format!("no case `{id}`")),
            W::Case(c @ C::Forbidden { .. }) => ApiError::Forbidden(c.to_string()),
            W::Case(
                c @ (C::IllegalTransition { .. }
                | C::SameDepartment(_)
                | C::AlreadyRated
                | C::NotDue { .. }
                | C::AlarmStillRaised { .. }
                | C::DeadlineTooFar { .. }
                | C::BeyondHorizon(_)),
            ) => ApiError::Conflict(c.to_string()),
            W::Case(c) => ApiError::BadRequest(c.to_string()),
            W::Store(StoreError::Stale(id)) => ApiError::Conflict(format!(
                "case {id} was changed meanwhile; reload it and retry"
            )),
            W::Store(e) => ApiError::Store(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Store(StoreError::Stale(_)) => {}
            ApiError::Store(e) => tracing::error!(error = %e, "API store error"),
            ApiError::Internal(e) => tracing::error!(error = %e, "API internal error"),
            _ => {}
        }
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// `limit` in `1..=max`, default `dflt`.
pub(crate) fn limit_in(limit: Option<u32>, dflt: u32, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(dflt),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "`limit` must be an integer from 1 to {max}, not `{n}`"
        ))),
    }
}

/// Longest id (device, gateway, case, category, department) a query or path may name.
pub const MAX_ID_CHARS: usize = 128;

pub(crate) fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
        return Err(ApiError::BadRequest(format!(
            "{what} must be 1..={MAX_ID_CHARS} characters"
        )));
    }
    Ok(())
}
