//! Who is calling (token auth) and the endpoints that change cases.
//!
//! Every `/api/v1` request passes [`authenticate`]: `Authorization: Bearer <token>` names an
//! actor ([`crate::auth`]); without a token the request is refused with 401 unless
//! `[api] anonymous = "viewer"`. Roles decide the rest, in one place each:
//! reporters reach only the cases they filed (and the catalogue); a department sees and acts on
//! the cases that are with it; viewers read; operators do everything the case engine allows
//! them. Whether a transition is allowed is the engine's decision ([`crate::cases::model`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, MAX_ID_CHARS, check_id, limit_in};
use super::params::{NotificationParams, Params};
use super::state::{AppState, blocking};
use crate::cases::model::{Intake, Origin, Position};
use crate::cases::{Actor, Command, Role};
use crate::store::cases_sql::Contact;
use crate::store::notify_sql::{self, NotificationQuery};
use fumegrid_common::text::clip;

/// The authenticated caller, put in the request's extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(msg: &str) -> Response {
    let mut r = ApiError::Unauthorized(msg.to_string()).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"fumegrid\""),
    );
    r
}

/// Resolves the caller; 401 without a valid token, 403 for a reporter outside its cases.
pub async fn authenticate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let actor = match bearer(&req) {
        Some(t) => match s.auth.tokens.actor(t) {
            Some(a) => a.clone(),
            None => return unauthorized("unknown API token"),
        },
        None if req.headers().contains_key(header::AUTHORIZATION) => {
            return unauthorized("the Authorization header must be `Bearer <token>`");
        }
        None if s.auth.anonymous_viewer => Actor {
            id: "anonymous".into(),
            role: Role::Viewer,
        },
        None => {
            return unauthorized(
                "this API needs a token: send `Authorization: Bearer <token>` \
                 (tokens are made with `fumegrid-aggregator new-token`)",
            );
        }
    };
    if actor.role == Role::Reporter {
        let p = req.uri().path();
        // Pictures: the handler lets a reporter see those of the cases it filed only.
        if !(p.starts_with("/api/v1/cases/")
            || p.starts_with("/api/v1/evidence/")
            || p == "/api/v1/catalogue")
        {
            return ApiError::Forbidden(
                "a reporter token reaches only the cases it filed (and their pictures) and the \
                 catalogue"
                    .into(),
            )
            .into_response();
        }
    }
    req.extensions_mut().insert(Caller(actor));
    next.run(req).await
}

/// Whether `actor` may see a case that is with `department` and was filed by `reporter`.
pub fn may_see(actor: &Actor, department: Option<&str>, reporter: Option<&str>) -> bool {
    match &actor.role {
        Role::Operator | Role::Viewer | Role::System => true,
        Role::Department { department: own } => department == Some(own.as_str()),
        Role::Reporter => reporter == Some(actor.id.as_str()),
    }
}

/// Whether `actor` may see the contact details of a case filed by `reporter`: operators, and
/// the reporter who filed it. Never viewers, departments or anonymous callers.
pub fn may_see_contact(actor: &Actor, reporter: Option<&str>) -> bool {
    match &actor.role {
        Role::Operator => true,
        Role::Reporter => reporter == Some(actor.id.as_str()),
        Role::Department { .. } | Role::Viewer | Role::System => false,
    }
}

/// `DELETE /api/v1/cases/{id}/contact`: an operator erases the contact details of a case (a
/// citizen's request to be forgotten). `{"case", "erased": bool}`; erased data leaves the
/// database file and its WAL.
pub async fn erase_contact(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if actor.role != Role::Operator {
        return Err(ApiError::Forbidden(format!(
            "{} may not erase contact details; an operator does",
            actor.role
        )));
    }
    let cw = casework(&s)?;
    let i = id.clone();
    let erased = tokio::task::spawn_blocking(move || cw.erase_contact(&i, &actor))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({ "case": id, "erased": erased })))
}

fn casework(s: &AppState) -> Result<std::sync::Arc<crate::casework::Casework>, ApiError> {
    s.casework
        .clone()
        .ok_or_else(|| ApiError::Unavailable("case changes are not available".into()))
}

/// Parses a JSON body into `T` with a message that says what is wrong and where.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request needs a JSON body".into()));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        // serde's messages quote the offending value: keep them short.
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let (path, inner) = (clip(&path, 100), clip(&inner, 300));
        if path == "." || path.is_empty() {
            ApiError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::BadRequest(format!("invalid JSON body at `{path}`: {inner}"))
        }
    })
}

/// Longest case title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest note (of a transition or a filed case), in characters.
pub const MAX_NOTE_CHARS: usize = 4000;

pub(crate) fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n > max {
        return Err(ApiError::BadRequest(format!(
            "`{field}` is {n} characters long; at most {max}"
        )));
    }
    Ok(())
}

/// `POST /api/v1/cases/{id}/transitions` with a command, e.g. `{"action": "accept",
/// "note": "on my way"}` or `{"action": "transfer", "department": "urban"}`.
///
/// The body is taken as bytes and interpreted only after the caller is known to be one that
/// may act on this case at all (not a viewer; it can see the case): a parser bug is then not
/// reachable by every token holder.
pub async fn transition(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if actor.role == Role::Viewer {
        return Err(ApiError::Forbidden(
            "viewers have read-only access; a transition needs an operator, department or \
             reporter token"
                .into(),
        ));
    }
    check_id("case id", &id)?;
    let cw = casework(&s)?;
    let r = s.reader.clone();
    let i = id.clone();
    let case = blocking(move || r.case(&i)).await?;
    match case {
        None => return Err(ApiError::Missing(format!("no case `{id}`"))),
        Some(d)
            if !may_see(
                &actor,
                d.case.department.as_deref(),
                d.case.reporter.as_deref(),
            ) =>
        {
            return Err(ApiError::Forbidden(format!(
                "{} may not act on case `{id}`",
                actor.role
            )));
        }
        Some(_) => {}
    }
    let cmd: Command = parse_body(&body)?;
    check_len("note", &cmd.note, MAX_NOTE_CHARS)?;
    if matches!(
        cmd.action,
        crate::cases::Action::LinkAlarm { .. }
            | crate::cases::Action::AerialPass { .. }
            | crate::cases::Action::Timer { .. }
    ) {
        return Err(ApiError::Forbidden(format!(
            "`{}` is done by the system only",
            cmd.action.name()
        )));
    }
    let (case, events) = tokio::task::spawn_blocking(move || {
        fumegrid_common::panic::contained(|| cw.transition(&id, cmd, &actor))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({ "case": case, "events": events })))
}

/// A case filed by hand.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCase {
    pub category: String,
    /// At most [`MAX_TITLE_CHARS`] characters, not blank.
    pub title: String,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub grid_cell: Option<String>,
    /// The case's own point, WGS 84 degrees (both or neither): it is drawn on the map.
    #[serde(default)]
    pub lat: Option<f64>,
    #[serde(default)]
    pub lon: Option<f64>,
    /// At most [`MAX_NOTE_CHARS`] characters.
    #[serde(default)]
    pub note: String,
}

impl NewCase {
    /// The point it is filed at, when `lat` and `lon` are both sent (after [`Self::check`]).
    pub fn position(&self) -> Option<Position> {
        Some(Position::new(self.lat?, self.lon?))
    }

    /// Checks lengths and blanks. Pure.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.title.trim().is_empty() {
            return Err(ApiError::BadRequest("`title` must not be empty".into()));
        }
        check_len("title", &self.title, MAX_TITLE_CHARS)?;
        check_len("note", &self.note, MAX_NOTE_CHARS)?;
        check_len("category", &self.category, MAX_ID_CHARS)?;
        if let Some(site) = &self.site {
            check_id("`site`", site)?;
        }
        if let Some(cell) = &self.grid_cell {
            check_id("`grid_cell`", cell)?;
        }
        match (self.lat, self.lon) {
            (Some(lat), Some(lon)) => {
                crate::ingest::validate::check_position(lat, lon, 0.0, "case")
                    .map_err(ApiError::BadRequest)?
            }
            (None, None) => {}
            _ => {
                return Err(ApiError::BadRequest(
                    "`lat` and `lon` must be sent together".into(),
                ));
            }
        }
        Ok(())
    }
}

/// `POST /api/v1/cases`: an operator files a case (state `reported`). The role is checked
/// before the body is read.
pub async fn file_case(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    body: Bytes,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let origin = match actor.role {
        Role::Operator => Origin::Operator,
        _ => {
            return Err(ApiError::Forbidden(format!(
                "{} may not file cases here (citizens use Open311)",
                actor.role
            )));
        }
    };
    let n: NewCase = parse_body(&body)?;
    n.check()?;
    let position = n.position();
    let intake = Intake {
        category: n.category,
        title: n.title,
        origin,
        site: n.site,
        grid_cell: n.grid_cell,
    };
    let cw = casework(&s)?;
    let (case, events) = tokio::task::spawn_blocking(move || {
        fumegrid_common::panic::contained(|| {
            cw.file_at(intake, position, &actor, &n.note, &Contact::default())
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({ "case": case, "events": events })),
    ))
}

/// `GET /api/v1/notifications?department=&case=&state=&limit=&offset=`: the webhook delivery
/// log, newest first. A department sees its own.
pub async fn notifications(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Params(p): Params<NotificationParams>,
) -> Result<Json<Value>, ApiError> {
    let mut department = p.department;
    if let Role::Department { department: own } = &actor.role {
        match &department {
            Some(d) if d != own => {
                return Err(ApiError::Forbidden(format!(
                    "department `{own}` sees its own notifications, not `{}`'s",
                    clip(d, MAX_ID_CHARS)
                )));
            }
            _ => department = Some(own.clone()),
        }
    }
    if let Some(st) = &p.state
        && !notify_sql::STATES.contains(&st.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "unknown notification state `{}`; expected one of {}",
            clip(st, MAX_ID_CHARS),
            notify_sql::STATES.join(", ")
        )));
    }
    let limit = limit_in(p.limit, 100, 1000)?;
    let offset = p.offset.unwrap_or(0);
    let q = NotificationQuery {
        department,
        case_id: p.case,
        state: p.state,
        limit,
        offset,
    };
    let r = s.reader.clone();
    let (total, rows) = blocking(move || r.notifications(&q)).await?;
    Ok(Json(json!({
        "total": total,
        "offset": offset,
        "limit": limit,
        "count": rows.len(),
        "notifications": rows,
    })))
}
