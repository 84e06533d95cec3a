//! Open311 GeoReport v2 (<http://wiki.open311.org/GeoReport_v2>), JSON only: citizen apps and
//! hotline systems file and follow requests through the same case engine as everything else.
//!
//! | GeoReport v2 | here |
//! |---|---|
//! | service | a catalogue category (`service_code` = category id) |
//! | service request | a case with origin `citizen` (`service_request_id` = case id) |
//! | `status` `open` / `closed` | every state but `closed` and `rejected` / those two |
//! | `agency_responsible` | the department the case is with, else the category's |
//! | `expected_datetime` | the handling deadline |
//! | `api_key` | an API token ([`crate::auth`]) of role `reporter` or `operator` |
//!
//! The read methods need no key (as the spec says), so they show only what a citizen may see:
//! the contact fields sent with a request (`email`, `phone`, `first_name`, `last_name`,
//! `account_id`, `device_id`) are stored apart from the case timeline, shown only to operators
//! and the reporter who filed the request (`GET /api/v1/cases/{id}`) and never here; the
//! description reaches the timeline (and its first line the case title) with the personal data
//! in it redacted ([`crate::cases::privacy::redact`]: phone, e-mail, ID and other long numbers,
//! names after "my name is"), its text as sent kept with the contact details; and
//! `status_notes` is the note of the latest state change only when that note is written for
//! the citizen (register, reject, handle, close; [`note_is_public`]), redacted the same way —
//! never the notes staff write to each other (dispatch, accept, return, transfer, verify,
//! extend) nor a comment.
//!
//! Paths end in `.json` as in the spec; the same paths without a suffix work too. Errors are
//! the spec's array `[{"code", "description"}]` with the HTTP status of [`ApiError::status`],
//! on every path under `/open311` (unknown paths through the app's fallback, [`no_endpoint`];
//! a wrong method, 405): a path asking for another format is 404 "JSON only", as the spec's
//! XML error list when it ends in `.xml`.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use fumegrid_common::datetime::{self, Precision};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::{AppState, blocking};
use super::work::parse_body;
use crate::cases::calendar::WorkAmount;
use crate::cases::catalogue::Category;
use crate::cases::model::{Intake, Origin, Position};
use crate::cases::privacy::redact;
use crate::cases::{Actor, Catalogue, EventKind, Role, State as CaseState};
use crate::store::cases_sql::{Contact, OPEN311_MARK};
use crate::store::{CaseDetail, CaseQuery};

/// GeoReport v2 limits a description to 4,000 characters.
pub const MAX_DESCRIPTION: usize = 4000;
pub use crate::cases::privacy::title_of;
/// "Default query limit is a span of 90 days or first 1000 requests returned, whichever is
/// smallest" (GeoReport v2, GET Service Requests).
pub const MAX_SPAN_MS: i64 = 90 * 86_400_000;
pub const MAX_REQUESTS: usize = 1000;
/// Starts the block of Open311 details after the description in the `reported` event's note.
const CONTACT_MARK: &str = OPEN311_MARK;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/open311/v2/services.json", get(services))
        .route("/open311/v2/services", get(services))
        .route("/open311/v2/services/{service_code}", get(service))
        .route(
            "/open311/v2/requests.json",
            get(requests).post(post_request),
        )
        .route("/open311/v2/requests", get(requests).post(post_request))
        .route("/open311/v2/requests/{service_request_id}", get(request))
        .method_not_allowed_fallback(method_not_allowed)
}

/// An answer in the spec's error format: `[{"code": 400, "description": "..."}]`, one entry per
/// problem (the spec allows several). The HTTP status is the entries' status when they agree,
/// else 400. A path that asks for the XML format gets the same list as XML
/// (`<errors><error><code/><description/></error></errors>`), saying that only JSON is served.
#[derive(Debug)]
pub enum Open311Error {
    Json(Vec<ApiError>),
    Xml(Vec<ApiError>),
    /// The path exists, not with this method (405, with `Allow` from axum's method router).
    MethodNotAllowed(Method),
}

impl From<ApiError> for Open311Error {
    fn from(e: ApiError) -> Open311Error {
        Open311Error::Json(vec![e])
    }
}

/// Longest part of a request path echoed in an error description (characters).
const ECHO_CHARS: usize = 120;

fn echo(s: &str) -> String {
    let mut out: String = s.chars().take(ECHO_CHARS).collect();
    if s.chars().count() > ECHO_CHARS {
        out.push('…');
    }
    out
}

impl IntoResponse for Open311Error {
    fn into_response(self) -> Response {
        let (errors, xml) = match self {
            Open311Error::Json(e) => (e, false),
            Open311Error::Xml(e) => (e, true),
            Open311Error::MethodNotAllowed(m) => {
                let body = json!([{
                    "code": 405,
                    "description": format!("method {} is not allowed here", echo(m.as_str())),
                }]);
                return (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response();
            }
        };
        let mut status = errors
            .first()
            .map_or(StatusCode::BAD_REQUEST, ApiError::status);
        if errors.iter().any(|e| e.status() != status) {
            status = StatusCode::BAD_REQUEST;
        }
        let entries: Vec<(u16, String)> = errors
            .into_iter()
            .map(|e| {
                let entry = (e.status().as_u16(), e.to_string());
                // ApiError's own response logs store and internal failures; its body is not used.
                drop(e.into_response());
                entry
            })
            .collect();
        if xml {
            let mut body = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<errors>");
            for (code, d) in entries {
                body.push_str(&format!(
                    "<error><code>{code}</code><description>{}</description></error>",
                    fumegrid_common::text::xml_escape(&d)
                ));
            }
            body.push_str("</errors>\n");
            return (
                status,
                [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                body,
            )
                .into_response();
        }
        let body: Vec<Value> = entries
            .into_iter()
            .map(|(code, d)| json!({ "code": code, "description": d }))
            .collect();
        (status, Json(body)).into_response()
    }
}

/// "Only JSON": the answer to a path ending in another format's suffix (404: no such
/// resource here), as XML for `.xml`.
fn format_not_served(format: &str) -> Open311Error {
    let e = ApiError::Missing(format!(
        "format `{}` is not served: this server answers Open311 in JSON only (`.json`)",
        echo(format)
    ));
    if format.eq_ignore_ascii_case("xml") {
        Open311Error::Xml(vec![e])
    } else {
        Open311Error::Json(vec![e])
    }
}

/// `{code}.json` → `code`; no suffix is fine; another format is refused ([`format_not_served`]).
fn strip_format(segment: &str) -> Result<&str, Open311Error> {
    match segment.rsplit_once('.') {
        None => Ok(segment),
        Some((name, "json")) => Ok(name),
        Some((_, other)) => Err(format_not_served(other)),
    }
}

/// Every other path under `/open311` (the app's fallback hands them here): 404 in the spec's
/// format (XML for an `.xml` path).
pub fn no_endpoint(uri: &Uri) -> Open311Error {
    let path = uri.path();
    if let Some((_, ext)) = path
        .rsplit('/')
        .next()
        .and_then(|last| last.rsplit_once('.'))
        && !ext.eq_ignore_ascii_case("json")
    {
        return format_not_served(ext);
    }
    Open311Error::Json(vec![ApiError::Missing(format!(
        "no Open311 endpoint `{}`; this server serves /open311/v2/services.json, \
         /open311/v2/services/{{service_code}}.json, /open311/v2/requests.json and \
         /open311/v2/requests/{{service_request_id}}.json",
        echo(path)
    ))])
}

async fn method_not_allowed(method: Method) -> Open311Error {
    Open311Error::MethodNotAllowed(method)
}

/// A path segment that is not valid (e.g. bad percent-encoding), in the spec's format.
fn bad_path(e: PathRejection) -> Open311Error {
    ApiError::BadRequest(e.body_text()).into()
}

fn work_amount(a: WorkAmount) -> String {
    match a {
        WorkAmount::Hours(1) => "1 working hour".into(),
        WorkAmount::Hours(n) => format!("{n} working hours"),
        WorkAmount::Days(1) => "1 working day".into(),
        WorkAmount::Days(n) => format!("{n} working days"),
    }
}

fn department_name<'a>(catalogue: &'a Catalogue, id: &'a str) -> &'a str {
    catalogue.department(id).map_or(id, |d| d.name.as_str())
}

/// What happens to a request of this service (the spec's `service_notice`), with `department`
/// (the category's, until the case is dispatched elsewhere).
fn service_notice(c: &Category, department: &str, catalogue: &Catalogue) -> String {
    format!(
        "The dispatch centre registers the request and dispatches it to {}, which handles it \
         within {} of dispatch. Closing standard: {}",
        department_name(catalogue, department),
        work_amount(c.handle),
        c.closing_standard
    )
}

/// One entry of GET Service List.
pub fn service_json(c: &Category, catalogue: &Catalogue) -> Value {
    // A sub-category is grouped under its parent, a top-level one under itself.
    let group = c
        .parent
        .as_deref()
        .and_then(|p| catalogue.category(p))
        .map_or(c.name.as_str(), |p| p.name.as_str());
    let mut keywords = vec![c.id.clone()];
    if let Some(en) = &c.name_en {
        // `keywords` is comma separated: a comma inside a name would split it.
        keywords.push(en.replace(',', ""));
    }
    json!({
        "service_code": c.id,
        "service_name": c.name,
        "description": c.closing_standard,
        "metadata": false,
        "type": "realtime",
        "keywords": keywords.join(", "),
        "group": group,
    })
}

/// `GET /open311/v2/services.json`
async fn services(State(s): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = s
        .catalogue
        .categories
        .iter()
        .map(|c| service_json(c, &s.catalogue))
        .collect();
    Json(Value::Array(list))
}

/// `GET /open311/v2/services/{service_code}.json`: no service asks for extra attributes.
async fn service(
    State(s): State<AppState>,
    segment: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Open311Error> {
    let Path(segment) = segment.map_err(bad_path)?;
    let code = strip_format(&segment)?;
    match s.catalogue.category(code) {
        Some(c) => Ok(Json(json!({ "service_code": c.id, "attributes": [] }))),
        None => Err(ApiError::Missing(format!(
            "no service_code `{code}` (see /open311/v2/services.json)"
        ))
        .into()),
    }
}

/// The fields of a POST, form-encoded (as the spec says) or a JSON object. Empty values count as
/// absent: "a null parameter should be treated as equivalent to a non-declared parameter". The
/// first of repeated fields wins; fields we do not use (`jurisdiction_id`, `attribute[…]`) are
/// ignored.
///
/// A `multipart/form-data` POST carries the same fields as text parts and may carry a photo as
/// the file part `media` ([`multipart_fields`]), read up to `max_photo` bytes (none: this
/// server takes no photos).
async fn post_fields(
    req: Request,
    max_photo: Option<usize>,
) -> Result<(RequestForm, Option<SentPhoto>), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "multipart/form-data" {
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let limits = MultipartLimits::new(max_photo);
        if let Some(n) = announced.filter(|n| *n > limits.whole) {
            return Err(ApiError::BadRequest(format!(
                "the request is {n} bytes; a request with a photo may have at most {} \
                 (the photo at most {} of them)",
                limits.whole, limits.photo
            )));
        }
        let (pairs, photo) =
            multipart_fields(&content_type, req.into_body().into_data_stream(), limits).await?;
        return Ok((RequestForm::from_pairs(pairs)?, photo));
    }
    let json_body = mime == "application/json";
    let pairs: Vec<(String, String)> = if json_body {
        let body = Bytes::from_request(req, &())
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let map: serde_json::Map<String, Value> = parse_body(&body)?;
        let mut pairs = Vec::with_capacity(map.len());
        for (k, v) in map {
            let v = match v {
                Value::Null => continue,
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(ApiError::BadRequest(format!(
                        "`{k}` must be a string or a number"
                    )));
                }
            };
            pairs.push((k, v));
        }
        pairs
    } else {
        let Form(pairs) = Form::<Vec<(String, String)>>::from_request(req, &())
            .await
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "{} (or send a JSON object with `Content-Type: application/json`)",
                    e.body_text()
                ))
            })?;
        pairs
    };
    Ok((RequestForm::from_pairs(pairs)?, None))
}

/// Most bytes the text fields of a multipart POST may take, each and together (the photo
/// aside): as much as a form-encoded POST may carry by default.
pub const MAX_FIELDS_BYTES: u64 = 64 * 1024;

/// What a multipart POST may carry: each text part and all of them at most
/// [`MAX_FIELDS_BYTES`], the photo `photo` bytes, the whole body `whole`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartLimits {
    /// Largest `media` part; 0: no photo is taken here.
    pub photo: u64,
    pub whole: u64,
}

impl MultipartLimits {
    /// For photos of at most `max_photo` bytes (none: no photos).
    pub fn new(max_photo: Option<usize>) -> MultipartLimits {
        let photo = max_photo.map_or(0, |m| m as u64);
        MultipartLimits {
            photo,
            whole: photo + MAX_FIELDS_BYTES,
        }
    }
}

/// A photo sent as the `media` part of a multipart POST: its bytes and the type its part
/// declared (none when it declared none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentPhoto {
    pub bytes: Bytes,
    pub declared: Option<String>,
}

/// A multipart parse error as a 400 naming what is wrong (multer's own texts may quote
/// unbounded input; these quote at most [`ECHO_CHARS`] characters of it).
fn multipart_error(e: multer::Error, limits: MultipartLimits) -> ApiError {
    use multer::Error as E;
    let field = |f: &Option<String>| f.as_deref().map_or("(unnamed)".to_string(), echo);
    ApiError::BadRequest(match e {
        E::NoBoundary => "invalid multipart/form-data body: the Content-Type names no \
                          `boundary`"
            .into(),
        E::NoMultipart | E::DecodeContentType(_) => {
            "invalid multipart/form-data body: the Content-Type is not multipart/form-data".into()
        }
        E::FieldSizeExceeded { field_name, .. } if field_name.as_deref() == Some("media") => {
            if limits.photo == 0 {
                "photos are not taken here (no evidence store); send a `media_url`".into()
            } else {
                format!(
                    "the `media` photo is over {} bytes; at most {} are accepted",
                    limits.photo, limits.photo
                )
            }
        }
        E::FieldSizeExceeded { limit, field_name } => {
            format!("the part `{}` is over {limit} bytes", field(&field_name))
        }
        E::StreamSizeExceeded { limit } => format!(
            "the request is over {limit} bytes; a request with a photo may have at most {limit} \
             (the photo at most {} of them)",
            limits.photo
        ),
        E::IncompleteStream => "invalid multipart/form-data body: it ends before its closing \
                                boundary (truncated?)"
            .into(),
        E::IncompleteFieldData { field_name } => format!(
            "invalid multipart/form-data body: the part `{}` ends before its boundary \
             (truncated?)",
            field(&field_name)
        ),
        E::IncompleteHeaders | E::ReadHeaderFailed(_) => {
            "invalid multipart/form-data body: a part's headers are incomplete or malformed".into()
        }
        E::DecodeHeaderName { .. } | E::DecodeHeaderValue { .. } => {
            "invalid multipart/form-data body: a part has a header that is not valid".into()
        }
        E::StreamReadFailed(_) => "the request body could not be read to its end".into(),
        other => format!(
            "invalid multipart/form-data body: {}",
            echo(&other.to_string())
        ),
    })
}

/// Reads a `multipart/form-data` body (`content_type` the request's header, with its
/// boundary): every part but `media` as a text field, `media` as the photo, within `limits`.
/// Parsing is multer's; what this adds is the limits, one photo, UTF-8 fields and errors that
/// name the problem ([`multipart_error`]). Never panics on any input (fuzz target `open311`).
pub async fn multipart_fields(
    content_type: &str,
    body: axum::body::BodyDataStream,
    limits: MultipartLimits,
) -> Result<(Vec<(String, String)>, Option<SentPhoto>), ApiError> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| multipart_error(e, limits))?;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limits.whole)
            .per_field(MAX_FIELDS_BYTES)
            .for_field("media", limits.photo),
    );
    let mut mp = multer::Multipart::with_constraints(body, boundary, constraints);
    let mut pairs = Vec::new();
    let mut photo: Option<SentPhoto> = None;
    let mut text_bytes = 0u64;
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limits))?
    {
        let name = field.name().unwrap_or("").to_string();
        if name == "media" {
            if photo.is_some() {
                return Err(ApiError::BadRequest(
                    "send one `media` photo per request".into(),
                ));
            }
            let declared = field.content_type().map(|m| m.essence_str().to_string());
            let bytes = field
                .bytes()
                .await
                .map_err(|e| multipart_error(e, limits))?;
            if limits.photo == 0 {
                return Err(multipart_error(
                    multer::Error::FieldSizeExceeded {
                        limit: 0,
                        field_name: Some(name),
                    },
                    limits,
                ));
            }
            photo = Some(SentPhoto { bytes, declared });
            continue;
        }
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e, limits))?;
        text_bytes += bytes.len() as u64;
        if text_bytes > MAX_FIELDS_BYTES {
            return Err(ApiError::BadRequest(format!(
                "the fields besides `media` are over {MAX_FIELDS_BYTES} bytes together"
            )));
        }
        let value = String::from_utf8(bytes.to_vec()).map_err(|_| {
            ApiError::BadRequest(format!(
                "the part `{}` is not UTF-8 text (only `media` may be a file)",
                echo(&name)
            ))
        })?;
        pairs.push((name, value));
    }
    Ok((pairs, photo))
}

/// The type of a photo sent with a request, sniffed from its bytes (JPEG or PNG, as
/// [`fumegrid_picture::sniff`] tells); the type its part declared must agree, unless it
/// declared none or `application/octet-stream`. Every refusal is a 400 naming the problem
/// (GeoReport v2 answers a bad request with 400). Pure.
pub fn photo_type(photo: &SentPhoto) -> Result<&'static str, ApiError> {
    if photo.bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "the `media` photo is empty (0 bytes)".into(),
        ));
    }
    let Some(sniffed) = fumegrid_picture::sniff(&photo.bytes) else {
        // The first bytes name most formats (`%PDF-1.7`, `GIF89a`, `<html>`): quote the
        // printable ones.
        let head: String = photo
            .bytes
            .iter()
            .take(8)
            .take_while(|b| b.is_ascii_graphic() || **b == b' ')
            .map(|b| char::from(*b))
            .collect();
        let seen = if head.is_empty() {
            String::new()
        } else {
            format!(" (its bytes begin `{head}`)")
        };
        return Err(ApiError::BadRequest(format!(
            "the `media` photo is not a JPEG or PNG picture{seen}; its type is read from its \
             bytes, not from its name"
        )));
    };
    let declared = photo
        .declared
        .as_deref()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if declared.is_empty() || declared == "application/octet-stream" || declared == sniffed {
        Ok(sniffed)
    } else {
        Err(ApiError::BadRequest(format!(
            "the `media` photo is declared `{}` but its bytes are {sniffed}",
            echo(&declared)
        )))
    }
}

/// The fields of a POST Service Request this server reads (GeoReport v2), typed. Every value is
/// trimmed and an empty one is absent; `lat` and `long` stay text so that an error can quote
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RequestForm {
    pub api_key: Option<String>,
    pub service_code: Option<String>,
    pub description: Option<String>,
    pub lat: Option<String>,
    pub long: Option<String>,
    pub address_string: Option<String>,
    pub address_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub account_id: Option<String>,
    pub device_id: Option<String>,
    pub media_url: Option<String>,
    /// Fields sent (read or not) longer than [`MAX_DESCRIPTION`] characters, by name.
    #[serde(skip)]
    pub too_long: Vec<String>,
}

impl RequestForm {
    /// From the fields as sent: the first of repeated fields wins, fields this server does not
    /// read (`jurisdiction_id`, `attribute[…]`) are ignored. Pure.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<RequestForm, ApiError> {
        let mut fields = serde_json::Map::new();
        for (k, v) in pairs {
            let v = v.trim();
            if !v.is_empty() && !fields.contains_key(&k) {
                fields.insert(k, Value::String(v.to_string()));
            }
        }
        let mut too_long: Vec<String> = fields
            .iter()
            .filter(|(_, v)| {
                v.as_str()
                    .is_some_and(|v| v.chars().count() > MAX_DESCRIPTION)
            })
            .map(|(k, _)| k.clone())
            .collect();
        too_long.sort_unstable();
        let mut form: RequestForm = serde_json::from_value(Value::Object(fields))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        form.too_long = too_long;
        Ok(form)
    }
}

/// Who files: the token in `api_key`. "403 for errors because of wrong or missing api_key"
/// (GeoReport v2, Errors).
fn filer(s: &AppState, form: &RequestForm) -> Result<Actor, ApiError> {
    let Some(key) = &form.api_key else {
        return Err(ApiError::Forbidden(
            "`api_key` is required to file a request: a reporter or operator token".into(),
        ));
    };
    match s.auth.tokens.actor(key) {
        None => Err(ApiError::Forbidden("invalid api_key".into())),
        Some(a) if matches!(a.role, Role::Reporter | Role::Operator) => Ok(a.clone()),
        Some(a) => Err(ApiError::Forbidden(format!(
            "the api_key of {} may not file requests; use a reporter or operator token",
            a.role
        ))),
    }
}

/// Longest `media_url` taken (characters).
pub const MAX_MEDIA_URL: usize = 2000;

/// A `media_url` as the server keeps and shows it: an absolute `http` or `https` URL with a
/// host and without credentials, normalised (percent-encoded). The server never fetches it
/// (fetching what a client names would let anyone make it request internal addresses); it is
/// shown back as given. Pure.
pub fn media_url(sent: &str) -> Result<String, ApiError> {
    let bad = |why: &str| {
        ApiError::BadRequest(format!(
            "`media_url` must be an http or https URL of a picture ({why}): `{}`",
            echo(sent)
        ))
    };
    if sent.chars().count() > MAX_MEDIA_URL {
        return Err(bad(&format!("at most {MAX_MEDIA_URL} characters")));
    }
    if sent.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("no spaces"));
    }
    let u = reqwest::Url::parse(sent).map_err(|e| bad(&e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad(&format!("not `{}`", echo(u.scheme()))));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("no user name or password in it"));
    }
    Ok(u.to_string())
}

/// A validated POST: the case to open, the note of its `reported` event (description and the
/// request's non-personal details) and the filer's contact details (stored apart, private).
#[derive(Debug, Clone, PartialEq)]
pub struct NewRequest {
    pub intake: Intake,
    /// The request's `lat`/`long`, kept on the case (`Case::position`).
    pub position: Option<Position>,
    pub note: String,
    pub contact: Contact,
    pub account_id: Option<String>,
}

fn coordinate(v: &str, k: &str, max: f64) -> Result<f64, ApiError> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x.abs() <= max => Ok(x),
        _ => Err(ApiError::BadRequest(format!(
            "`{k}` must be a WGS84 degree from -{max} to {max}, not `{v}`"
        ))),
    }
}

/// Checks a POST's fields against the catalogue; every problem is reported (the spec's error
/// answer is an array). Pure.
pub fn parse_request(
    form: &RequestForm,
    catalogue: &Catalogue,
) -> Result<NewRequest, Vec<ApiError>> {
    let mut errors = Vec::new();
    for k in &form.too_long {
        errors.push(ApiError::BadRequest(format!(
            "`{k}` is limited to {MAX_DESCRIPTION} characters"
        )));
    }
    let category = match &form.service_code {
        None => {
            errors.push(ApiError::BadRequest(
                "`service_code` is required (see /open311/v2/services.json)".into(),
            ));
            None
        }
        Some(code) => match catalogue.category(code) {
            Some(c) => Some(c.id.clone()),
            // "404 - service_code or jurisdiction_id was not found" (POST Service Request).
            None => {
                errors.push(ApiError::Missing(format!(
                    "no service_code `{code}` (see /open311/v2/services.json)"
                )));
                None
            }
        },
    };
    let description = match &form.description {
        Some(d) => d.as_str(),
        None => {
            errors.push(ApiError::BadRequest(
                "`description` is required: say what is wrong and where".into(),
            ));
            ""
        }
    };
    let sent_point = form.lat.is_some() || form.long.is_some();
    let point = match (&form.lat, &form.long) {
        (Some(lat), Some(long)) => match (
            coordinate(lat, "lat", 90.0),
            coordinate(long, "long", 180.0),
        ) {
            (Ok(lat), Ok(long)) => Some((lat, long)),
            (lat, long) => {
                errors.extend(lat.err());
                errors.extend(long.err());
                None
            }
        },
        (None, None) => None,
        _ => {
            errors.push(ApiError::BadRequest(
                "`lat` and `long` must be sent together".into(),
            ));
            None
        }
    };
    let address = form.address_string.as_ref();
    let address_id = form.address_id.as_ref();
    let site = match (address, point, address_id) {
        (Some(a), _, _) => Some(a.clone()),
        (None, Some((lat, long)), _) => Some(format!("{lat},{long}")),
        (None, None, Some(id)) => Some(id.clone()),
        // A bad or half point was reported above.
        (None, None, None) if sent_point => None,
        // "A full location parameter must be submitted" (POST Service Request).
        (None, None, None) => {
            errors.push(ApiError::BadRequest(
                "a location is required: `lat` and `long`, or `address_string`, or \
                 `address_id`"
                    .into(),
            ));
            None
        }
    };
    let media = form.media_url.as_deref().and_then(|u| match media_url(u) {
        Ok(u) => Some(u),
        Err(e) => {
            errors.push(e);
            None
        }
    });
    let Some(category) = category.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let name: Vec<&str> = [&form.first_name, &form.last_name]
        .into_iter()
        .filter_map(|n| n.as_deref())
        .collect();
    // The description goes public (title, timeline, Open311 reads) without the personal data
    // in it; the text as sent stays with the contact details, private and erasable.
    let redacted = redact(description);
    let contact = Contact {
        email: form.email.clone(),
        phone: form.phone.clone(),
        name: (!name.is_empty()).then(|| name.join(" ")),
        account_id: form.account_id.clone(),
        device_id: form.device_id.clone(),
        description: redacted.changed().then(|| description.to_string()),
    };
    let description = redacted.text.as_str();
    // What the event log may keep: nothing that identifies the citizen.
    let mut details = Vec::new();
    for (v, label) in [(&form.address_id, "address_id"), (&media, "media")] {
        if let Some(v) = v {
            details.push(format!("{label} {v}"));
        }
    }
    if let (Some((lat, long)), Some(_)) = (point, address) {
        details.push(format!("lat,long {lat},{long}"));
    }
    let mut note = format!("{description}{CONTACT_MARK}");
    if !details.is_empty() {
        note.push_str(": ");
        note.push_str(&details.join(" · "));
    }
    Ok(NewRequest {
        position: point.map(|(lat, long)| Position::new(lat, long)),
        intake: Intake {
            category,
            title: title_of(description),
            origin: Origin::Citizen,
            site,
            grid_cell: None,
        },
        note,
        contact,
        account_id: form.account_id.clone(),
    })
}

/// `POST /open311/v2/requests.json`. The spec names no success status; a request that creates
/// a resource answers `201 Created` with its `Location` (RFC 9110 §15.3.2), as
/// `POST /api/v1/cases` does. The body is the spec's `[{service_request_id, service_notice,
/// account_id}]`.
///
/// A photo sent as the `media` part of a multipart POST is checked with the other fields
/// (nothing is filed when anything is wrong), then stored through the evidence store as an
/// upload to the new case by its filer ([`crate::evidence::Evidence::upload`]); the read
/// methods show its view as `media_url`.
async fn post_request(State(s): State<AppState>, req: Request) -> Result<Response, Open311Error> {
    let max_photo = s.evidence.as_ref().map(|e| e.settings.max_upload_bytes);
    let (form, photo) = post_fields(req, max_photo).await?;
    let actor = filer(&s, &form)?;
    let mut errors = Vec::new();
    let photo = match photo.map(|p| photo_type(&p).map(|media| (media, p.bytes))) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    if photo.is_some() && form.media_url.is_some() {
        errors.push(ApiError::BadRequest(
            "send a picture either as `media_url` or as the `media` photo, not both".into(),
        ));
    }
    let new = match parse_request(&form, &s.catalogue) {
        Ok(new) if errors.is_empty() => new,
        Ok(_) => return Err(Open311Error::Json(errors)),
        Err(mut e) => {
            e.extend(errors);
            return Err(Open311Error::Json(e));
        }
    };
    let cw = s
        .casework
        .clone()
        .ok_or_else(|| ApiError::Unavailable("filing requests is not available".into()))?;
    let NewRequest {
        intake,
        position,
        note,
        contact,
        account_id,
    } = new;
    let by = actor.id.clone();
    let (case, _) =
        tokio::task::spawn_blocking(move || cw.file_at(intake, position, &actor, &note, &contact))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::from)?;
    let mut notice = s
        .catalogue
        .category(&case.category)
        .map(|c| service_notice(c, &c.department, &s.catalogue));
    if let (Some((media, bytes)), Some(e)) = (photo, &s.evidence) {
        // The request is filed: a photo that cannot be stored (blob store or disk down) is
        // said in the answer and the log, never silently dropped, and the request stands
        // (failing it would make the app file it twice).
        if let Err(err) = e.upload(&case.id, &by, bytes, media).await {
            tracing::warn!(case = %case.id, error = %err, "Open311 request filed without its photo");
            let said = format!(
                "Your photo could not be stored ({err}); the request was filed without it."
            );
            notice = Some(match notice {
                Some(n) => format!("{said} {n}"),
                None => said,
            });
        }
    }
    let location = format!("/open311/v2/requests/{}.json", case.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(json!([{
            "service_request_id": case.id,
            "service_notice": notice,
            "account_id": account_id,
        }])),
    )
        .into_response())
}

/// An instant in the spec's W3C format at the catalogue calendar's UTC offset, whole seconds:
/// `2025-11-03T10:00:00+08:00` (`Z` at offset 0).
pub fn w3c(ms: i64, utc_offset_min: i32) -> String {
    let offset = datetime::offset_min(utc_offset_min).unwrap_or(datetime::Offset::UTC);
    datetime::w3c(ms, offset)
}

/// Parses a W3C date-time (<https://www.w3.org/TR/NOTE-datetime>): `YYYY-MM-DD` (a day on the
/// catalogue's calendar) or `YYYY-MM-DDThh:mm[:ss[.s…]]` with `Z` or `±hh:mm`
/// ([`datetime::parse`], which also reads a space for `T`). A `+` sent unencoded in a query
/// arrives as a space and is read as `+`. Returns the first instant (ms) and how long the value
/// lasts (a day, a minute, a second, a millisecond), so that an end date includes all of itself.
pub fn parse_w3c(s: &str, utc_offset_min: i32) -> Option<(i64, i64)> {
    let plus = match s.len().checked_sub(6) {
        Some(i) if s.as_bytes()[i] == b' ' && s.len() > 16 => {
            format!("{}+{}", s.get(..i)?, s.get(i + 1..)?)
        }
        _ => s.to_string(),
    };
    let w = datetime::parse(&plus).ok()?;
    let default = match w.precision {
        // A date-time without its offset is not W3C.
        Precision::Day => datetime::offset_min(utc_offset_min)?,
        _ => w.offset?,
    };
    Some((w.to_ms(default).ok()?, w.precision.lasts_ms()))
}

/// What a GET Service Requests selects (unless it names `service_request_id`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Empty: every service.
    pub service_codes: Vec<String>,
    /// `Some(true)`: open only; none: both.
    pub open: Option<bool>,
    /// `requested_datetime` in `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
}

/// What one `status` parameter may say (the `enum` of `openapi.json`).
const STATUS_VALUES: [&str; 5] = ["", "open", "closed", "open,closed", "closed,open"];

/// A GET Service Requests query, read by `Query<RequestsQuery>`. Its parameters "can be declared
/// multiple times, comma delimited", which a derived struct cannot take (serde_urlencoded
/// refuses a repeated field), so every occurrence is kept, in order; `values` splits them.
/// Parameters this server does not use (`jurisdiction_id`, `api_key`, …) are ignored, as clients
/// send them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestsQuery {
    pub service_request_id: Vec<String>,
    pub service_code: Vec<String>,
    pub status: Vec<String>,
    pub start_date: Vec<String>,
    pub end_date: Vec<String>,
}

impl RequestsQuery {
    fn push(&mut self, name: &str, value: String) {
        let list = match name {
            "service_request_id" => &mut self.service_request_id,
            "service_code" => &mut self.service_code,
            "status" => &mut self.status,
            "start_date" => &mut self.start_date,
            "end_date" => &mut self.end_date,
            _ => return,
        };
        list.push(value);
    }
}

impl FromIterator<(String, String)> for RequestsQuery {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> RequestsQuery {
        let mut q = RequestsQuery::default();
        for (k, v) in pairs {
            q.push(&k, v);
        }
        q
    }
}

impl<'de> Deserialize<'de> for RequestsQuery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RequestsQuery, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = RequestsQuery;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("query parameters")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RequestsQuery, A::Error> {
                let mut q = RequestsQuery::default();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    q.push(&k, v);
                }
                Ok(q)
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// The values of a parameter that "can be declared multiple times, comma delimited": split,
/// blanks and repeats dropped.
fn values(sent: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in sent {
        for x in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            if !out.iter().any(|o| o == x) {
                out.push(x.to_string());
            }
        }
    }
    out
}

/// Parses a GET Service Requests query. Without dates the window is the 90 days before `now_ms`
/// (and anything later); with one date it is the 90 days from `start_date` or up to `end_date`;
/// with both they "may not span more than 90 days". Pure.
pub fn parse_selection(
    params: &RequestsQuery,
    catalogue: &Catalogue,
    now_ms: i64,
) -> Result<Selection, Vec<ApiError>> {
    let offset = catalogue.calendar.utc_offset_min;
    let mut errors = Vec::new();
    let service_codes = values(&params.service_code);
    for c in &service_codes {
        if catalogue.category(c).is_none() {
            errors.push(ApiError::BadRequest(format!(
                "no service_code `{c}` (see /open311/v2/services.json)"
            )));
        }
    }
    let mut open = None;
    // Each occurrence exactly as the OpenAPI document's enum says; empty is "not given", as
    // clients that send every field leave it.
    for v in &params.status {
        if !STATUS_VALUES.contains(&v.as_str()) {
            errors.push(ApiError::BadRequest(format!(
                "`status` must be open or closed (or open,closed), not `{}`",
                echo(v)
            )));
        }
    }
    let statuses = values(&params.status);
    if statuses.len() == 1 {
        open = Some(statuses[0] == "open");
    }
    let mut date = |k: &str, sent: &[String]| -> Option<(i64, i64)> {
        let v = values(sent).into_iter().next()?;
        let d = parse_w3c(&v, offset);
        if d.is_none() {
            errors.push(ApiError::BadRequest(format!(
                "`{k}` must be a W3C date-time such as 2025-11-03T09:30:00+08:00 or \
                 2025-11-03T01:30:00Z, or a date 2025-11-03; not `{v}`"
            )));
        }
        d
    };
    let start = date("start_date", &params.start_date);
    let end = date("end_date", &params.end_date);
    let (from_ms, to_ms) = match (start, end) {
        (Some((s, _)), Some((e, lasts))) => {
            if e < s {
                errors.push(ApiError::BadRequest(
                    "`end_date` is before `start_date`".into(),
                ));
            } else if e - s > MAX_SPAN_MS {
                errors.push(ApiError::BadRequest(
                    "`start_date` and `end_date` may not span more than 90 days".into(),
                ));
            }
            (s, e + lasts)
        }
        (Some((s, _)), None) => (s, s + MAX_SPAN_MS),
        (None, Some((e, lasts))) => (e + lasts - MAX_SPAN_MS, e + lasts),
        (None, None) => (now_ms - MAX_SPAN_MS, i64::MAX),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Selection {
        service_codes,
        open,
        from_ms,
        to_ms,
    })
}

/// The description sent with the request, redacted (without the Open311 block), else the title.
fn description_of(d: &CaseDetail) -> String {
    d.events
        .iter()
        .find(|e| e.kind == EventKind::Reported)
        .and_then(|e| e.note.rfind(CONTACT_MARK).and_then(|i| e.note.get(..i)))
        .map(str::to_string)
        .unwrap_or_else(|| d.case.title.clone())
}

/// The `media_url` sent with the request (kept in the Open311 block of the `reported` event):
/// the last `media` part, written after the free-text `address_id` (which could imitate one),
/// and only if it is an http(s) URL (older versions kept any text).
fn media_url_of(d: &CaseDetail) -> Option<String> {
    let reported = d.events.iter().find(|e| e.kind == EventKind::Reported)?;
    let (_, block) = crate::store::cases_sql::split_open311_note(&reported.note);
    let sent = block
        .strip_prefix(CONTACT_MARK)?
        .strip_prefix(": ")?
        .split(" · ")
        .filter_map(|part| part.strip_prefix("media "))
        .last()?;
    media_url(sent).ok()
}

/// Whether the note of a state change of kind `kind` is written for the citizen who filed the
/// request: why it was registered or rejected, what the department did, how it was closed.
/// The notes of the steps between staff (dispatch, accept, return, transfer, verify, failed
/// verification, extend) are instructions and remarks among them, never shown. Pure.
pub fn note_is_public(kind: EventKind) -> bool {
    use EventKind as K;
    matches!(kind, K::Registered | K::Rejected | K::Handled | K::Closed)
}

/// The spec's `status_notes`: the note of the latest state change if it is one written for the
/// citizen ([`note_is_public`]), with the personal data in it redacted as in a description
/// ([`redact`]: staff write "owner Zhang, 139 0000 1234" as readily as citizens do), else what
/// the state means.
fn status_notes(d: &CaseDetail, catalogue: &Catalogue) -> String {
    use EventKind as K;
    let latest = d.events.iter().rev().find(|e| {
        matches!(
            e.kind,
            K::Registered
                | K::Rejected
                | K::Dispatched
                | K::Accepted
                | K::Returned
                | K::Transferred
                | K::Handled
                | K::Verified
                | K::VerificationFailed
                | K::Closed
                | K::Extended
        )
    });
    if let Some(e) = latest.filter(|e| note_is_public(e.kind) && !e.note.trim().is_empty()) {
        return redact(&e.note).text;
    }
    let dept = d
        .case
        .department
        .as_deref()
        .map_or("the department", |id| department_name(catalogue, id));
    match d.case.state {
        CaseState::Reported => "received; waiting to be registered".into(),
        CaseState::Registered => "registered as a case; waiting to be dispatched".into(),
        CaseState::Rejected => "not registered as a case".into(),
        CaseState::Dispatched => format!("dispatched to {dept}"),
        CaseState::Accepted => format!("{dept} is dealing with it"),
        CaseState::Handled => format!("{dept} reports it dealt with; waiting for verification"),
        CaseState::Verified => "verified; waiting to be closed".into(),
        CaseState::Closed => "closed".into(),
    }
}

/// The link of the photo sent with request `d` (the `media` part of its POST): the view of the
/// first picture its filer (the actor of its `reported` event) uploaded to it
/// ([`crate::evidence::Evidence::link`]): only Open311 filing uploads as a reporter, and an
/// operator who filed through Open311 and uploads later comes after the request's own photo.
/// None without an evidence store.
async fn sent_photo(s: &AppState, d: &CaseDetail) -> Result<Option<String>, ApiError> {
    let filer = d
        .events
        .iter()
        .find(|e| e.kind == EventKind::Reported)
        .map(|e| e.actor.id.clone());
    let (Some(e), Some(filer)) = (&s.evidence, filer) else {
        return Ok(None);
    };
    let (r, id) = (e.reader.clone(), d.case.id.clone());
    let pictures = blocking(move || r.case_pictures(&id)).await?;
    Ok(pictures
        .iter()
        .filter(|p| {
            p.source == crate::store::evidence::UPLOAD
                && p.state == crate::store::evidence::STORED
                && p.uploaded_by.as_deref() == Some(filer.as_str())
        })
        .min_by_key(|p| (p.received_ms, p.sha256.clone()))
        .map(|p| e.link(&p.sha256, crate::evidence::views::VIEW)))
}

/// The requests `details` as GET Service Request(s) shows them.
async fn requests_json(s: &AppState, details: &[CaseDetail]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(details.len());
    for d in details.iter().filter(|d| d.case.origin == Origin::Citizen) {
        let photo = sent_photo(s, d).await?;
        out.push(request_json(d, &s.catalogue, photo));
    }
    Ok(out)
}

/// One service request as GET Service Request(s) shows it; `photo`: the link of the photo
/// sent with it ([`sent_photo`]), which is its `media_url`.
pub fn request_json(d: &CaseDetail, catalogue: &Catalogue, photo: Option<String>) -> Value {
    let c = &d.case;
    let offset = catalogue.calendar.utc_offset_min;
    let category = catalogue.category(&c.category);
    let department = c
        .department
        .as_deref()
        .or(category.map(|x| x.department.as_str()));
    // "For requests with status=closed, this will be the date the request was closed."
    let updated = c
        .closed_ms
        .filter(|_| c.state == CaseState::Closed)
        .or(d.events.last().map(|e| e.ts_ms))
        .unwrap_or(c.reported_ms);
    let mut v = json!({
        "service_request_id": c.id,
        "status": if c.state.is_open() { "open" } else { "closed" },
        "status_notes": status_notes(d, catalogue),
        "service_name": category.map_or(c.category.as_str(), |x| x.name.as_str()),
        "service_code": c.category,
        "description": description_of(d),
        "agency_responsible": department.map(|d| department_name(catalogue, d)),
        "service_notice": category.zip(department).map(|(x, d)| service_notice(x, d, catalogue)),
        "requested_datetime": w3c(c.reported_ms, offset),
        "updated_datetime": w3c(updated, offset),
        "expected_datetime": c.handle_deadline_ms.map(|t| w3c(t, offset)),
        "address": c.site,
        "media_url": photo.or_else(|| media_url_of(d)),
    });
    if let Some(p) = c.position {
        v["lat"] = json!(p.lat.0);
        v["long"] = json!(p.lon.0);
    }
    v
}

/// `GET /open311/v2/requests.json?service_request_id=&service_code=&start_date=&end_date=&status=`:
/// citizen requests, newest first, at most [`MAX_REQUESTS`].
async fn requests(
    State(s): State<AppState>,
    query: Result<Query<RequestsQuery>, QueryRejection>,
) -> Result<Json<Value>, Open311Error> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let r = s.reader.clone();
    // Every parameter is checked even when ids are named: a malformed `status` or date is
    // refused, not silently dropped (the OpenAPI document declares their form).
    let sel =
        parse_selection(&params, &s.catalogue, s.clock.now_ms()).map_err(Open311Error::Json)?;
    // "This overrides all other arguments."
    let mut ids = values(&params.service_request_id);
    let details: Vec<CaseDetail> = if !ids.is_empty() {
        ids.truncate(MAX_REQUESTS);
        blocking(move || {
            let mut out = Vec::new();
            for id in ids {
                out.extend(r.case(&id)?);
            }
            Ok(out)
        })
        .await?
    } else {
        let categories: Vec<Option<String>> = if sel.service_codes.is_empty() {
            vec![None]
        } else {
            sel.service_codes.iter().cloned().map(Some).collect()
        };
        blocking(move || {
            let mut cases = Vec::new();
            for category in categories {
                let q = CaseQuery {
                    category,
                    origin: Some("citizen".into()),
                    open: sel.open,
                    from_ms: sel.from_ms,
                    to_ms: sel.to_ms,
                    limit: MAX_REQUESTS as u32,
                    ..CaseQuery::default()
                };
                cases.extend(r.cases(&q)?.cases);
            }
            cases.sort_by(|a, b| (b.reported_ms, &b.id).cmp(&(a.reported_ms, &a.id)));
            cases.truncate(MAX_REQUESTS);
            let mut out = Vec::with_capacity(cases.len());
            for c in cases {
                out.extend(r.case(&c.id)?);
            }
            Ok(out)
        })
        .await?
    };
    Ok(Json(Value::Array(requests_json(&s, &details).await?)))
}

/// `GET /open311/v2/requests/{service_request_id}.json`: an array of one.
async fn request(
    State(s): State<AppState>,
    segment: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Open311Error> {
    let Path(segment) = segment.map_err(bad_path)?;
    let id = strip_format(&segment)?.to_string();
    let r = s.reader.clone();
    let i = id.clone();
    match blocking(move || r.case(&i)).await? {
        Some(d) if d.case.origin == Origin::Citizen => {
            Ok(Json(Value::Array(requests_json(&s, &[d]).await?)))
        }
        _ => Err(ApiError::Missing(format!("no service request `{id}`")).into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{HeaderMap, Request};
    use tower::ServiceExt;

    use super::*;
    use crate::api::app;
    use crate::api::tests::{call, case_state, locked};

    /// 2025-11-03T02:00:00Z, as in `api::tests`; the case clock there is T0 + 3 h.
    const T0: i64 = 1_762_135_200_000;
    const FILED: &str = "2025-11-03T13:00:00+08:00";

    pub(crate) async fn send(
        app: Router,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value, HeaderMap) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = app
            .oneshot(req.body(Body::from(body.to_string())).expect("request"))
            .await
            .expect("response");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v, headers)
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
        let (s, v, _) = send(app.clone(), "GET", uri, None, "").await;
        (s, v)
    }

    async fn form(app: &Router, body: &str) -> (StatusCode, Value, HeaderMap) {
        send(
            app.clone(),
            "POST",
            "/open311/v2/requests.json",
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            body,
        )
        .await
    }

    async fn act(app: &Router, id: &str, token: &str, command: &str) {
        let (s, v, _) = call(
            app.clone(),
            "POST",
            &format!("/api/v1/cases/{id}/transitions"),
            Some(token),
            command,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{command}: {v}");
    }

    fn ids(v: &Value) -> Vec<&str> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|r| r["service_request_id"].as_str().expect("id"))
            .collect()
    }

    /// The description of an Open311 error answer, which must be one entry of `code`.
    fn only_error(v: &Value, code: u16) -> &str {
        let a = v.as_array().expect("error array");
        assert_eq!(a.len(), 1, "{v}");
        assert_eq!(a[0]["code"], code, "{v}");
        a[0]["description"].as_str().expect("description")
    }

    #[tokio::test]
    async fn a_citizen_request_from_filing_to_closure() {
        let app = app(case_state("o311-flow.sqlite3"));

        // The services are the catalogue's categories.
        let (s, v) = get(&app, "/open311/v2/services.json").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let services = v.as_array().expect("services");
        assert_eq!(
            services.len(),
            Catalogue::builtin().expect("cat").categories.len()
        );
        let complaint = services
            .iter()
            .find(|x| x["service_code"] == "complaint")
            .expect("complaint");
        assert_eq!(complaint["service_name"], "群众投诉（油烟扰民）");
        assert_eq!(
            (complaint["metadata"].as_bool(), complaint["type"].as_str()),
            (Some(false), Some("realtime"))
        );
        assert!(
            complaint["description"]
                .as_str()
                .expect("d")
                .contains("complainant told the outcome")
        );
        let idle = services
            .iter()
            .find(|x| x["service_code"] == "purifier_idle")
            .expect("purifier_idle");
        assert_eq!(idle["group"], "油烟净化设施", "grouped under its parent");
        assert_eq!(
            idle["keywords"],
            "purifier_idle, Purifier installed but not running"
        );
        let (s, same) = get(&app, "/open311/v2/services").await;
        assert_eq!((s, &same), (StatusCode::OK, &v), "the suffix is optional");
        for uri in [
            "/open311/v2/services/complaint.json",
            "/open311/v2/services/complaint",
        ] {
            let (s, v) = get(&app, uri).await;
            assert_eq!(s, StatusCode::OK, "{uri}: {v}");
            assert_eq!(v, json!({"service_code": "complaint", "attributes": []}));
        }

        // A citizen app files a request with its reporter token, form-encoded as in the spec.
        let (s, v, h) = form(
            &app,
            "api_key=tok-citizen&jurisdiction_id=city.example&service_code=complaint\
             &description=Smoke+from+the+noodle+shop+kitchen+every+evening%0D%0AIt+smells+of+burnt+oil.\
             &address_string=12+Xinhua+Road&lat=30.25&long=120.17&email=li.wei%40example.cn\
             &first_name=Li&last_name=Wei&phone=&attribute%5BWHISPAWN%5D=1",
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v[0]["service_request_id"].as_str().expect("id").to_string();
        assert!(id.starts_with("C20251103-"), "{id}");
        assert_eq!(h["location"], format!("/open311/v2/requests/{id}.json"));
        assert_eq!(v[0]["account_id"], Value::Null);
        let notice = v[0]["service_notice"].as_str().expect("notice");
        assert!(
            notice.contains("街道办事处（社区）") && notice.contains("5 working days"),
            "{notice}"
        );

        // Following it: open, with what was sent and nothing private.
        let one = format!("/open311/v2/requests/{id}.json");
        let (s, v) = get(&app, &one).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let r = &v[0];
        assert_eq!(r["service_request_id"], id.as_str());
        assert_eq!(r["status"], "open");
        assert_eq!(r["status_notes"], "received; waiting to be registered");
        assert_eq!(r["service_code"], "complaint");
        assert_eq!(r["service_name"], "群众投诉（油烟扰民）");
        assert_eq!(
            r["description"],
            "Smoke from the noodle shop kitchen every evening\r\nIt smells of burnt oil."
        );
        assert_eq!(r["address"], "12 Xinhua Road");
        // The point sent with the address is the request's own, kept on the case.
        assert_eq!(
            (r["lat"].as_f64(), r["long"].as_f64()),
            (Some(30.25), Some(120.17))
        );
        assert_eq!(r["agency_responsible"], "街道办事处（社区）");
        assert_eq!(r["requested_datetime"], FILED);
        assert_eq!(r["updated_datetime"], FILED);
        assert_eq!(r["expected_datetime"], Value::Null, "not dispatched yet");
        let text = v.to_string();
        assert!(
            !text.contains("li.wei") && !text.contains("Wei"),
            "contact details stay private: {text}"
        );
        let (_, bare) = get(&app, &format!("/open311/v2/requests/{id}")).await;
        assert_eq!(bare, v);

        // Operators see the request as a case: citizen origin, filed by the reporter; the contact
        // details beside the timeline, never in it.
        let case_uri = format!("/api/v1/cases/{id}");
        let (s, c, _) = call(app.clone(), "GET", &case_uri, Some("tok-op"), "").await;
        assert_eq!(s, StatusCode::OK, "{c}");
        assert_eq!(c["case"]["origin"]["origin"], "citizen");
        assert_eq!(c["case"]["reporter"], "citizen-1");
        assert_eq!(c["case"]["site"], "12 Xinhua Road");
        assert_eq!(c["case"]["position"], json!({"lat": 30.25, "lon": 120.17}));
        assert_eq!(
            c["case"]["title"],
            "Smoke from the noodle shop kitchen every evening"
        );
        assert_eq!(
            c["contact"],
            json!({"email": "li.wei@example.cn", "name": "Li Wei"})
        );
        let note = c["events"][0]["note"].as_str().expect("note");
        assert!(
            note.ends_with("\n\n— Open311: lat,long 30.25,120.17")
                && !note.contains("li.wei")
                && !note.contains("Li Wei"),
            "{note}"
        );
        assert_eq!(c["events"][0]["actor"]["role"], "reporter");
        let (s, _, _) = call(app.clone(), "GET", &case_uri, Some("tok-citizen"), "").await;
        assert_eq!(s, StatusCode::OK, "the reporter reaches the case it filed");

        // Worked through with the JSON API.
        act(&app, &id, "tok-op", r#"{"action":"register"}"#).await;
        act(
            &app,
            &id,
            "tok-op",
            r#"{"action":"dispatch","department":"epb"}"#,
        )
        .await;
        let (_, v) = get(&app, &one).await;
        assert_eq!(
            (v[0]["status"].as_str(), v[0]["status_notes"].as_str()),
            (Some("open"), Some("dispatched to 生态环境局"))
        );
        assert_eq!(v[0]["agency_responsible"], "生态环境局");
        assert!(
            v[0]["service_notice"]
                .as_str()
                .expect("notice")
                .contains("dispatches it to 生态环境局"),
            "{v}"
        );
        assert_eq!(v[0]["expected_datetime"], "2025-11-10T13:00:00+08:00");
        act(&app, &id, "tok-epb", r#"{"action":"accept"}"#).await;
        act(
            &app,
            &id,
            "tok-epb",
            r#"{"action":"handle","note":"Hood cleaned, owner warned."}"#,
        )
        .await;
        act(
            &app,
            &id,
            "tok-epb",
            r#"{"action":"comment","note":"internal"}"#,
        )
        .await;
        let (_, v) = get(&app, &one).await;
        assert_eq!(
            (v[0]["status"].as_str(), v[0]["status_notes"].as_str()),
            (Some("open"), Some("Hood cleaned, owner warned.")),
            "a comment is not a status note"
        );
        act(&app, &id, "tok-op", r#"{"action":"verify"}"#).await;
        act(&app, &id, "tok-op", r#"{"action":"close"}"#).await;
        let (s, v) = get(&app, &one).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            (v[0]["status"].as_str(), v[0]["status_notes"].as_str()),
            (Some("closed"), Some("closed"))
        );
        assert_eq!(v[0]["updated_datetime"], FILED, "when it was closed");

        // Listing: citizen requests only (the alarm cases are not requests), filtered.
        for (q, want) in [
            ("", vec![id.as_str()]),
            ("?status=closed", vec![id.as_str()]),
            ("?status=open", vec![]),
            ("?status=open,closed", vec![id.as_str()]),
            ("?service_code=exceedance", vec![]),
            ("?service_code=exceedance,complaint", vec![id.as_str()]),
            (
                "?service_code=exceedance&service_code=complaint",
                vec![id.as_str()],
            ),
            (
                "?start_date=2025-11-03&end_date=2025-11-03",
                vec![id.as_str()],
            ),
            ("?start_date=2025-11-03T13:00:01%2B08:00", vec![]),
            ("?end_date=2025-11-03T05:00:00Z", vec![id.as_str()]),
            ("?end_date=2025-11-03T04:59:59Z", vec![]),
            ("?start_date=2025-11-03T13:00:00+08:00", vec![id.as_str()]),
            (
                "?jurisdiction_id=city.example&api_key=whatever",
                vec![id.as_str()],
            ),
        ] {
            for base in ["/open311/v2/requests.json", "/open311/v2/requests"] {
                let (s, v) = get(&app, &format!("{base}{q}")).await;
                assert_eq!(s, StatusCode::OK, "{q}: {v}");
                assert_eq!(ids(&v), want, "{base}{q}");
            }
        }
        // By id, overriding everything else; an alarm case is not a request.
        let (s, v) = get(
            &app,
            &format!(
                "/open311/v2/requests.json?service_request_id=C20251103-0001,{id}&status=open"
            ),
        )
        .await;
        assert_eq!((s, ids(&v)), (StatusCode::OK, vec![id.as_str()]));
        let (s, v) = get(&app, "/open311/v2/requests/C20251103-0001.json").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(only_error(&v, 404), "no service request `C20251103-0001`");

        // An operator files by JSON too; a point becomes the site and comes back as lat/long.
        let (s, v, _) = send(
            app.clone(),
            "POST",
            "/open311/v2/requests",
            Some("application/json"),
            r#"{"api_key":"tok-op","service_code":"exceedance","description":"black smoke","lat":30.1,"long":120.2,"account_id":"hotline-7"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v[0]["account_id"], "hotline-7");
        let id2 = v[0]["service_request_id"].as_str().expect("id");
        let (_, v) = get(&app, &format!("/open311/v2/requests/{id2}.json")).await;
        assert_eq!(
            (
                v[0]["address"].as_str(),
                v[0]["lat"].as_f64(),
                v[0]["long"].as_f64()
            ),
            (Some("30.1,120.2"), Some(30.1), Some(120.2))
        );
        assert_eq!(v[0]["agency_responsible"], "生态环境局");
        let (_, c, _) = call(
            app.clone(),
            "GET",
            &format!("/api/v1/cases/{id2}"),
            Some("tok-op"),
            "",
        )
        .await;
        assert_eq!(
            (
                c["case"]["reporter"].clone(),
                c["case"]["origin"]["origin"].clone()
            ),
            (Value::Null, json!("citizen"))
        );
    }

    /// Without dates, GET requests lists the 90 days before the API's clock (`AppState::clock`,
    /// the daemon's one clock): the same request is listed at T0 + 3 h and not 91 days later.
    #[tokio::test]
    async fn the_default_window_is_read_from_the_api_clock() {
        let mut st = case_state("o311-clock.sqlite3");
        let app_then = app(st.clone());
        let (s, v, _) = form(
            &app_then,
            "api_key=tok-citizen&service_code=complaint&description=smoke&address_string=here",
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v[0]["service_request_id"].as_str().expect("id").to_string();
        let (_, v) = get(&app_then, "/open311/v2/requests.json").await;
        assert_eq!(ids(&v), [id.as_str()], "{v}");
        st.clock = fumegrid_common::clock::Clock::fixed(T0 + 3 * 3_600_000 + 91 * 86_400_000);
        let (s, v) = get(&app(st), "/open311/v2/requests.json").await;
        assert_eq!((s, ids(&v).len()), (StatusCode::OK, 0), "{v}");
    }

    #[tokio::test]
    async fn refusals_in_the_open311_error_format() {
        // Locked: the JSON API needs a token; Open311 reading does not, filing needs api_key.
        let app = app(locked("o311-errors.sqlite3"));
        let (s, _) = get(&app, "/open311/v2/services.json").await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = get(&app, "/open311/v2/requests.json").await;
        assert_eq!(s, StatusCode::OK);

        let ok = "service_code=complaint&description=smoke&address_string=here";
        for (body, want) in [
            (ok.to_string(), "`api_key` is required"),
            (format!("api_key=&{ok}"), "`api_key` is required"),
            (format!("api_key=nope&{ok}"), "invalid api_key"),
            (format!("api_key=tok-view&{ok}"), "a viewer may not file"),
            (
                format!("api_key=tok-epb&{ok}"),
                "department `epb` may not file",
            ),
        ] {
            let (s, v, _) = form(&app, &body).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{body}: {v}");
            assert!(only_error(&v, 403).contains(want), "{body}: {v}");
        }

        let key = "api_key=tok-citizen";
        for (body, status, want) in [
            (
                format!("{key}&service_code=fire&description=smoke&address_string=here"),
                StatusCode::NOT_FOUND,
                "no service_code `fire`",
            ),
            (
                format!("{key}&service_code=complaint&description=smoke"),
                StatusCode::BAD_REQUEST,
                "a location is required",
            ),
            (
                format!("{key}&service_code=complaint&description=smoke&lat=30.1"),
                StatusCode::BAD_REQUEST,
                "`lat` and `long` must be sent together",
            ),
            (
                format!("{key}&service_code=complaint&description=smoke&lat=91&long=120"),
                StatusCode::BAD_REQUEST,
                "`lat` must be a WGS84 degree",
            ),
            (
                format!("{key}&service_code=complaint&address_string=here"),
                StatusCode::BAD_REQUEST,
                "`description` is required",
            ),
            (
                format!(
                    "{key}&service_code=complaint&address_string=here&description={}",
                    "x".repeat(MAX_DESCRIPTION + 1)
                ),
                StatusCode::BAD_REQUEST,
                "`description` is limited to 4000 characters",
            ),
        ] {
            let (s, v, _) = form(&app, &body).await;
            assert_eq!(s, status, "{body}: {v}");
            let d = only_error(&v, status.as_u16());
            assert!(d.contains(want), "{body}: {d}");
        }
        // Every problem at once; mixed kinds answer 400.
        let (s, v, _) = form(&app, &format!("{key}&service_code=fire")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let codes: Vec<u64> = v
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["code"].as_u64().expect("code"))
            .collect();
        assert_eq!(codes, [404, 400, 400], "{v}");
        let (s, v, _) = form(&app, key).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v.as_array().expect("errors").len(), 3, "{v}");

        // Bodies that are neither a form nor a JSON object.
        let (s, v, _) = send(
            app.clone(),
            "POST",
            "/open311/v2/requests.json",
            Some("text/plain"),
            "api_key=tok-citizen",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(only_error(&v, 400).contains("application/x-www-form-urlencoded"));
        let (s, v, _) = send(
            app.clone(),
            "POST",
            "/open311/v2/requests.json",
            Some("application/json"),
            r#"{"api_key":"tok-citizen","service_code":["complaint"]}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(only_error(&v, 400).contains("`service_code` must be a string"));

        for (uri, status, want) in [
            (
                "/open311/v2/services/fire.json",
                StatusCode::NOT_FOUND,
                "no service_code `fire`",
            ),
            (
                "/open311/v2/requests/C20990101-0001.json",
                StatusCode::NOT_FOUND,
                "no service request",
            ),
            (
                "/open311/v2/requests.json?status=pending",
                StatusCode::BAD_REQUEST,
                "`status` must be open or closed",
            ),
            (
                // Naming ids overrides the selection, not the checks on the other parameters.
                "/open311/v2/requests.json?service_request_id=C20251103-0001&status=pending",
                StatusCode::BAD_REQUEST,
                "`status` must be open or closed",
            ),
            (
                "/open311/v2/requests.json?service_request_id=C20251103-0001&end_date=soon",
                StatusCode::BAD_REQUEST,
                "`end_date` must be a W3C date-time",
            ),
            (
                "/open311/v2/requests.json?service_code=fire",
                StatusCode::BAD_REQUEST,
                "no service_code `fire`",
            ),
            (
                "/open311/v2/requests.json?start_date=yesterday",
                StatusCode::BAD_REQUEST,
                "`start_date` must be a W3C date-time",
            ),
            (
                "/open311/v2/requests.json?start_date=2025-01-01&end_date=2025-06-01",
                StatusCode::BAD_REQUEST,
                "may not span more than 90 days",
            ),
        ] {
            let (s, v) = get(&app, uri).await;
            assert_eq!(s, status, "{uri}: {v}");
            let d = only_error(&v, status.as_u16());
            assert!(d.contains(want), "{uri}: {d}");
        }
    }

    /// Every byte sequence `needle` in the store's files (database, WAL).
    fn in_store_files(name: &str, needle: &[u8]) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!("fumegrid-agg-api-{}", std::process::id()));
        let mut hits = Vec::new();
        for suffix in ["", "-wal"] {
            let p = dir.join(format!("{name}{suffix}"));
            let bytes = std::fs::read(&p).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
        hits
    }

    /// Issue 11 item 4: contact details reach operators and the reporter who filed, nobody
    /// else, and erasure removes their bytes from the database file and its WAL.
    #[tokio::test]
    async fn contact_details_are_private_and_erased_from_the_files() {
        let name = "o311-private.sqlite3";
        let st = case_state(name);
        let app = app(st.clone());
        let (s, v, _) = form(
            &app,
            "api_key=tok-citizen&service_code=complaint&description=Smoke+at+night\
             &address_string=3+Gulou+Lane&email=wang.fang%40example.cn&phone=%2B86-139-0000-1234\
             &first_name=Fang&last_name=Wang&account_id=acct-77&device_id=phone-9",
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v[0]["service_request_id"].as_str().expect("id").to_string();
        let secrets = [
            "wang.fang@example.cn",
            "+86-139-0000-1234",
            "Fang Wang",
            "phone-9",
        ];
        // Dispatched to epb, so the department reaches the case itself.
        act(&app, &id, "tok-op", r#"{"action":"register"}"#).await;
        act(
            &app,
            &id,
            "tok-op",
            r#"{"action":"dispatch","department":"epb"}"#,
        )
        .await;

        let case_uri = format!("/api/v1/cases/{id}");
        let see = |token: Option<&'static str>| {
            let app = app.clone();
            let uri = case_uri.clone();
            async move {
                let (s, v, _) = call(app, "GET", &uri, token, "").await;
                assert_eq!(s, StatusCode::OK, "{token:?}: {v}");
                v
            }
        };
        // Viewers, the department, anonymous callers (`anonymous = "viewer"` here): the case,
        // never the contact.
        for token in [Some("tok-view"), Some("tok-epb"), None] {
            let v = see(token).await;
            let text = v.to_string();
            for secret in secrets {
                assert!(!text.contains(secret), "{token:?} sees {secret}: {text}");
            }
            assert!(v.get("contact").is_none(), "{token:?}: {v}");
        }
        // Lists, Open311 reads: never.
        for (uri, token) in [
            ("/api/v1/cases".to_string(), Some("tok-view")),
            ("/api/v1/cases".to_string(), None),
            (format!("/open311/v2/requests/{id}.json"), None),
            ("/open311/v2/requests.json".to_string(), None),
        ] {
            let (_, v, _) = call(app.clone(), "GET", &uri, token, "").await;
            let text = v.to_string();
            assert!(
                !text.contains("wang.fang") && !text.contains("139-0000"),
                "{uri}: {text}"
            );
        }
        // The operator and the reporter who filed it see it.
        for token in ["tok-op", "tok-citizen"] {
            let v = see(Some(token)).await;
            assert_eq!(
                v["contact"],
                json!({"email": "wang.fang@example.cn", "phone": "+86-139-0000-1234",
                       "name": "Fang Wang", "account_id": "acct-77", "device_id": "phone-9"}),
                "{token}"
            );
        }
        // Only an operator erases; then nobody sees it and its bytes are gone from the files.
        let erase = format!("/api/v1/cases/{id}/contact");
        for token in ["tok-view", "tok-epb", "tok-citizen"] {
            let (s, v, _) = call(app.clone(), "DELETE", &erase, Some(token), "").await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{token}: {v}");
        }
        let (s, v, _) = call(
            app.clone(),
            "DELETE",
            "/api/v1/cases/C20990101-0001/contact",
            Some("tok-op"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        assert!(
            !in_store_files(name, b"wang.fang@example.cn").is_empty(),
            "stored before erasure"
        );
        let (s, v, _) = call(app.clone(), "DELETE", &erase, Some("tok-op"), "").await;
        assert_eq!((s, &v["erased"]), (StatusCode::OK, &json!(true)), "{v}");
        assert!(see(Some("tok-op")).await.get("contact").is_none());
        for secret in secrets {
            let hits = in_store_files(name, secret.as_bytes());
            assert!(hits.is_empty(), "{secret} still in {hits:?}");
        }
        let (_, v, _) = call(app.clone(), "DELETE", &erase, Some("tok-op"), "").await;
        assert_eq!(v["erased"], json!(false), "nothing left to erase");
    }

    /// Contact details outlive their case's closure by the retention period, then the timer
    /// pass erases them.
    #[tokio::test]
    async fn contact_details_are_erased_after_the_retention_period() {
        let name = "o311-retention.sqlite3";
        let st = case_state(name);
        let app = app(st.clone());
        let (s, v, _) = form(
            &app,
            "api_key=tok-citizen&service_code=complaint&description=smoke\
             &address_string=here&email=zhao.lei%40example.cn",
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v[0]["service_request_id"].as_str().expect("id").to_string();
        act(
            &app,
            &id,
            "tok-op",
            r#"{"action":"reject","note":"not ours"}"#,
        )
        .await;
        let cw = st.casework.clone().expect("casework");
        // Closed (rejected) at T0 + 3 h: kept 180 days, not a day less.
        let at = |now: fn() -> i64| {
            let w = cw.writer().clone();
            let clock = fumegrid_common::clock::Clock::fixed(now());
            crate::casework::Casework::new(w, cw.catalogue().clone(), clock)
        };
        let r = at(|| T0 + 3 * 3_600_000 + 179 * 86_400_000)
            .tick()
            .expect("tick");
        assert_eq!(r.contacts_erased, 0);
        assert!(!in_store_files(name, b"zhao.lei@example.cn").is_empty());
        let r = at(|| T0 + 3 * 3_600_000 + 180 * 86_400_000 + 1)
            .tick()
            .expect("tick");
        assert_eq!(r.contacts_erased, 1);
        assert!(in_store_files(name, b"zhao.lei@example.cn").is_empty());
        let (_, v, _) = call(
            app.clone(),
            "GET",
            &format!("/api/v1/cases/{id}"),
            Some("tok-op"),
            "",
        )
        .await;
        assert!(v.get("contact").is_none(), "{v}");
        // A configured retention applies.
        let short = at(|| T0 + 3 * 3_600_000 + 2 * 86_400_000)
            .with_contact_retention(std::time::Duration::from_secs(86_400));
        assert_eq!(
            short.tick().expect("tick").contacts_erased,
            0,
            "nothing left"
        );
    }

    /// Issue 11 item 12: every path under /open311/ answers in Open311's error shape; an
    /// `.xml` path gets the error list as XML saying only JSON is served.
    #[tokio::test]
    async fn every_open311_path_answers_errors_in_open311_shape() {
        let app = app(case_state("o311-shape.sqlite3"));
        let raw = |method: &'static str, uri: &'static str| {
            let app = app.clone();
            async move {
                let resp = app
                    .oneshot(
                        Request::builder()
                            .method(method)
                            .uri(uri)
                            .body(Body::empty())
                            .expect("req"),
                    )
                    .await
                    .expect("resp");
                let status = resp.status();
                let ct = resp
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or("").to_string())
                    .unwrap_or_default();
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .expect("body");
                (status, ct, String::from_utf8_lossy(&bytes).to_string())
            }
        };
        let (s, ct, _) = raw("POST", "/open311/v2/requests.xml").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(ct.starts_with("application/xml"), "{ct}");
        for uri in [
            "/open311/v2/requests.xml",
            "/open311/v2/services.xml",
            "/open311/v2/services/complaint.xml",
            "/open311/v2/requests/C20251103-0001.xml",
            "/open311/v2/discovery.xml",
        ] {
            let (s, ct, body) = raw("GET", uri).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{uri}: {body}");
            assert!(ct.starts_with("application/xml"), "{uri}: {ct}");
            assert!(
                body.starts_with("<?xml")
                    && body.contains("<errors><error><code>404</code><description>")
                    && body.contains("JSON only"),
                "{uri}: {body}"
            );
        }
        for (method, uri, status) in [
            ("GET", "/open311/v2/nope.json", StatusCode::NOT_FOUND),
            ("GET", "/open311/v3/services.json", StatusCode::NOT_FOUND),
            ("GET", "/open311", StatusCode::NOT_FOUND),
            ("GET", "/open311/", StatusCode::NOT_FOUND),
            ("GET", "/open311/v2/services.csv", StatusCode::NOT_FOUND),
            (
                "DELETE",
                "/open311/v2/requests.json",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                "POST",
                "/open311/v2/services.json",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                "GET",
                "/open311/v2/services/%FF.json",
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let (s, ct, body) = raw(method, uri).await;
            assert_eq!(s, status, "{method} {uri}: {body}");
            assert!(ct.starts_with("application/json"), "{method} {uri}: {ct}");
            let v: Value = serde_json::from_str(&body).expect("json");
            only_error(&v, status.as_u16());
        }
        // The XML answer is one the OpenAPI document declares (schemathesis checks it).
        let doc: Value = serde_json::from_str(crate::api::openapi::DOCUMENT).expect("doc");
        assert!(
            doc["components"]["responses"]["Open311NotFound"]["content"]["application/xml"]
                .is_object(),
            "openapi.json does not declare the XML 404"
        );
        // Outside /open311 the API's own shape stays.
        let (s, _, body) = raw("GET", "/nope").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(body.contains("\"error\""), "{body}");
    }

    #[test]
    fn w3c_date_times_both_ways() {
        assert_eq!(w3c(T0, 480), "2025-11-03T10:00:00+08:00");
        assert_eq!(w3c(T0 + 999, 0), "2025-11-03T02:00:00Z");
        assert_eq!(w3c(T0, -300), "2025-11-02T21:00:00-05:00");
        assert_eq!(w3c(-1, 0), "1969-12-31T23:59:59Z");
        for off in [480, 0, -300, 345] {
            assert_eq!(parse_w3c(&w3c(T0, off), off), Some((T0, 1000)), "{off}");
        }
        for (s, want) in [
            ("2025-11-03T10:00:00+08:00", Some((T0, 1000))),
            ("2025-11-03T10:00:00 08:00", Some((T0, 1000))),
            ("2025-11-03t02:00:00z", Some((T0, 1000))),
            ("2025-11-03T02:00Z", Some((T0, 60_000))),
            ("2025-11-03T02:00:00.5Z", Some((T0 + 500, 1))),
            ("2025-11-03T02:00:00.123456Z", Some((T0 + 123, 1))),
            // A date is a day on the calendar (here UTC+08:00): it starts at 16:00Z before.
            ("2025-11-03", Some((T0 - 10 * 3_600_000, 86_400_000))),
            ("2025-11-03T02:00:00", None),
            ("2025-11-03T02:00:00+0800", None),
            ("2025-11-03T24:00:00Z", None),
            ("2025-11-03T02:60:00Z", None),
            ("2025-11-03T02:00:00.Z", None),
            ("2025-02-30", None),
            ("2025-11-3", None),
            ("yesterday", None),
            ("", None),
            ("2025-11-03T０2:00:00Z", None),
        ] {
            assert_eq!(parse_w3c(s, 480), want, "{s:?}");
        }
    }

    /// Issue 13: a `media_url` is an http(s) URL, refused otherwise (never fetched, so no
    /// `file:` or credentials either), kept, and shown back by the read methods.
    #[tokio::test]
    async fn a_media_url_is_checked_kept_and_shown() {
        let app = app(case_state("o311-media-url.sqlite3"));
        let post = |media: &str| {
            let body = json!({"api_key": "tok-citizen", "service_code": "complaint",
                              "description": "smoke", "address_string": "here",
                              "media_url": media})
            .to_string();
            let app = app.clone();
            async move {
                send(
                    app,
                    "POST",
                    "/open311/v2/requests.json",
                    Some("application/json"),
                    &body,
                )
                .await
            }
        };
        for bad in [
            "file:///etc/passwd",
            "ftp://example.cn/p.jpg",
            "gopher://127.0.0.1:70/x",
            "http://",
            "https://user:secret@example.cn/p.jpg",
            "example.cn/p.jpg",
            "https://example.cn/a b.jpg",
            &format!("https://example.cn/{}", "a".repeat(MAX_MEDIA_URL)),
        ] {
            let (s, v, _) = post(bad).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
            assert!(only_error(&v, 400).contains("`media_url`"), "{bad}: {v}");
        }
        let (s, v, _) = post("https://img.example.cn/p/油烟.jpg?n=1").await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v[0]["service_request_id"].as_str().expect("id").to_string();
        let (_, v) = get(&app, &format!("/open311/v2/requests/{id}.json")).await;
        assert_eq!(
            v[0]["media_url"],
            "https://img.example.cn/p/%E6%B2%B9%E7%83%9F.jpg?n=1"
        );
        let (_, v, _) = form(
            &app,
            "api_key=tok-citizen&service_code=complaint&description=smoke&address_string=here",
        )
        .await;
        let id = v[0]["service_request_id"].as_str().expect("id").to_string();
        let (_, v) = get(&app, &format!("/open311/v2/requests/{id}.json")).await;
        assert_eq!(v[0]["media_url"], Value::Null);
        // An `address_id` that imitates a media part shows no URL, nor wins over a real one.
        for (extra, want) in [
            ("", Value::Null),
            (
                "&media_url=https%3A%2F%2Fok.example.cn%2Fp.jpg",
                json!("https://ok.example.cn/p.jpg"),
            ),
        ] {
            let (s, v, _) = form(
                &app,
                &format!(
                    "api_key=tok-citizen&service_code=complaint&description=smoke\
                     &address_id=A7+%C2%B7+media+javascript%3Aalert(1){extra}"
                ),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            let id = v[0]["service_request_id"].as_str().expect("id").to_string();
            let (_, v) = get(&app, &format!("/open311/v2/requests/{id}.json")).await;
            assert_eq!(v[0]["media_url"], want, "{extra}");
        }
    }

    /// Issue 13: a photo's type is read from its bytes; a declared type must agree; each
    /// refusal names the problem.
    #[test]
    fn a_photo_is_typed_by_its_bytes() {
        let jpeg = Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 16]);
        let png = Bytes::from_static(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
        let photo = |bytes: &Bytes, declared: Option<&str>| SentPhoto {
            bytes: bytes.clone(),
            declared: declared.map(str::to_string),
        };
        for declared in [None, Some("image/jpeg"), Some("application/octet-stream")] {
            assert_eq!(photo_type(&photo(&jpeg, declared)).ok(), Some("image/jpeg"));
        }
        assert_eq!(photo_type(&photo(&png, None)).ok(), Some("image/png"));
        let said = |p: SentPhoto| photo_type(&p).expect_err("refused").to_string();
        let pdf = Bytes::from_static(b"%PDF-1.7\n\xe2\xe3");
        assert!(
            said(photo(&pdf, Some("image/jpeg"))).contains("its bytes begin `%PDF-1.7`"),
            "{}",
            said(photo(&pdf, Some("image/jpeg")))
        );
        assert!(said(photo(&png, Some("image/jpeg"))).contains("declared `image/jpeg`"));
        assert!(said(photo(&Bytes::new(), None)).contains("empty"));
    }

    /// Issue 13: the multipart body's problems are 400s that say what is wrong.
    #[tokio::test]
    async fn a_broken_multipart_body_is_named() {
        let limits = MultipartLimits::new(Some(1024));
        let parse = |ct: &'static str, body: Vec<u8>| async move {
            multipart_fields(ct, Body::from(body).into_data_stream(), limits).await
        };
        let part = |name: &str, value: &str| {
            format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
        };
        let whole = format!(
            "{}{}--B\r\nContent-Disposition: form-data; name=\"media\"; filename=\"p.jpg\"\r\n\
             Content-Type: image/jpeg\r\n\r\n\u{7f}\r\n--B--\r\n",
            part("api_key", "k"),
            part("service_code", "complaint")
        );
        let (pairs, photo) = parse(
            "multipart/form-data; boundary=B",
            whole.clone().into_bytes(),
        )
        .await
        .expect("parsed");
        assert_eq!(pairs.len(), 2);
        let photo = photo.expect("photo");
        assert_eq!(
            (photo.bytes.as_ref(), photo.declared.as_deref()),
            (&b"\x7f"[..], Some("image/jpeg"))
        );
        let cut = whole.as_bytes()[..whole.len() - 12].to_vec();
        let big = format!(
            "{}{}--B--\r\n",
            part("api_key", "k"),
            part("media", &"x".repeat(2000))
        );
        let two = format!("{}{}--B--\r\n", part("media", "a"), part("media", "b"));
        for (ct, body, want) in [
            (
                "multipart/form-data",
                whole.clone().into_bytes(),
                "boundary",
            ),
            ("multipart/form-data; boundary=B", cut, "truncated"),
            (
                "multipart/form-data; boundary=B",
                big.into_bytes(),
                "over 1024 bytes",
            ),
            (
                "multipart/form-data; boundary=B",
                two.into_bytes(),
                "one `media`",
            ),
            (
                "multipart/form-data; boundary=B",
                b"garbage".to_vec(),
                "multipart",
            ),
        ] {
            let e = parse(ct, body).await.expect_err(want);
            assert!(
                matches!(e, ApiError::BadRequest(_)) && e.to_string().contains(want),
                "{want}: {e}"
            );
        }
    }

    /// Issue 11: staff notes reach the public `status_notes` only when they are written for the
    /// citizen (register, reject, handle, close), and then with the personal data in them
    /// redacted as in a description; the notes staff write to each other (dispatch, accept,
    /// return, transfer, verify, extend) are never shown.
    #[tokio::test]
    async fn staff_notes_reach_the_public_only_when_meant_for_it_and_redacted() {
        let app = app(case_state("o311-staff-notes.sqlite3"));
        let (s, v, _) = form(
            &app,
            "api_key=tok-citizen&service_code=complaint&description=smoke&address_string=here",
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v[0]["service_request_id"].as_str().expect("id").to_string();
        let one = format!("/open311/v2/requests/{id}.json");
        let notes = || {
            let app = app.clone();
            let one = one.clone();
            async move {
                let (s, v) = get(&app, &one).await;
                assert_eq!(s, StatusCode::OK, "{v}");
                v[0]["status_notes"].as_str().expect("notes").to_string()
            }
        };
        for (token, command, want) in [
            (
                "tok-op",
                r#"{"action":"register","note":"Registered; the owner is Zhang Wei, 139-0000-1234"}"#,
                "Registered; the owner is Zhang Wei, [phone]",
            ),
            (
                "tok-op",
                r#"{"action":"dispatch","department":"epb","note":"owner's cousin works at the bureau, careful"}"#,
                "dispatched to 生态环境局",
            ),
            (
                "tok-epb",
                r#"{"action":"accept","note":"inspector Wang, mobile 13800001111"}"#,
                "生态环境局 is dealing with it",
            ),
            (
                "tok-op",
                r#"{"action":"extend","by":"2d","note":"the owner is abroad until Friday"}"#,
                "生态环境局 is dealing with it",
            ),
            (
                "tok-epb",
                r#"{"action":"handle","note":"Hood cleaned; owner reachable at zhang@noodles.example.cn, ID 11010119900307123X"}"#,
                "Hood cleaned; owner reachable at [email], ID [ID number]",
            ),
            (
                "tok-op",
                r#"{"action":"verify","note":"checked by phone with the complainant on 13900001234"}"#,
                "verified; waiting to be closed",
            ),
        ] {
            act(&app, &id, token, command).await;
            assert_eq!(notes().await, want, "after {command}");
        }
        // The timeline keeps the notes as written, for staff.
        let (_, c, _) = call(
            app.clone(),
            "GET",
            &format!("/api/v1/cases/{id}"),
            Some("tok-op"),
            "",
        )
        .await;
        assert!(c.to_string().contains("139-0000-1234"), "{c}");
    }

    /// Issue 11: personal data in a description never reaches the title or the event note;
    /// the text as sent goes with the contact details.
    #[test]
    fn a_description_goes_public_redacted_and_private_as_sent() {
        let cat = Catalogue::builtin().expect("catalogue");
        let sent = "油烟很大 call 139-0000-1234\nor li.wei@example.cn, 我叫李伟";
        let form = RequestForm::from_pairs(vec![
            ("service_code".into(), "complaint".into()),
            ("description".into(), sent.into()),
            ("address_string".into(), "12 Xinhua Road".into()),
        ])
        .expect("form");
        let new = parse_request(&form, &cat).expect("request");
        assert_eq!(new.intake.title, "油烟很大 call [phone]");
        assert!(
            new.note
                .starts_with("油烟很大 call [phone]\nor [email], 我叫[name]\n\n— Open311"),
            "{}",
            new.note
        );
        for secret in ["139-0000-1234", "li.wei", "李伟"] {
            assert!(!new.note.contains(secret) && !new.intake.title.contains(secret));
        }
        assert_eq!(new.contact.description.as_deref(), Some(sent));
        // Nothing personal: nothing kept apart.
        let form = RequestForm::from_pairs(vec![
            ("service_code".into(), "complaint".into()),
            ("description".into(), "smoke at 19:30".into()),
            ("address_string".into(), "here".into()),
        ])
        .expect("form");
        let new = parse_request(&form, &cat).expect("request");
        assert_eq!(new.contact, Contact::default());
        assert_eq!(new.intake.title, "smoke at 19:30");
    }

    /// The server takes exactly the `status` values the OpenAPI document lists (schemathesis
    /// found `status=` accepted while the enum did not list it).
    #[test]
    fn status_values_are_the_documented_enum() {
        let doc: Value = serde_json::from_str(crate::api::openapi::DOCUMENT).expect("doc");
        let params = doc["components"]["pathItems"]["Open311Requests"]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let status = params
            .iter()
            .find(|p| p["name"] == "status")
            .expect("status");
        let documented: Vec<&str> = status["schema"]["enum"]
            .as_array()
            .expect("enum")
            .iter()
            .map(|v| v.as_str().expect("string"))
            .collect();
        let cat = Catalogue::builtin().expect("catalogue");
        for v in [
            "",
            "open",
            "closed",
            "open,closed",
            "closed,open",
            "open,",
            ",closed",
            "open,,closed",
            " open",
            "open, closed",
            "open,open",
            "OPEN",
            "pending",
        ] {
            let q = RequestsQuery {
                status: vec![v.to_string()],
                ..RequestsQuery::default()
            };
            assert_eq!(
                parse_selection(&q, &cat, T0).is_ok(),
                documented.contains(&v),
                "status={v:?} (documented: {documented:?})"
            );
        }
    }

    /// Repeated parameters all arrive (a derived struct would refuse the second), unknown ones
    /// are ignored.
    #[test]
    fn a_requests_query_keeps_every_occurrence() {
        let q: RequestsQuery = serde_urlencoded::from_str(
            "service_code=a&jurisdiction_id=x&service_code=b,c&status=open&end_date=2025-11-03",
        )
        .expect("query");
        assert_eq!(q.service_code, ["a", "b,c"]);
        assert_eq!(values(&q.service_code), ["a", "b", "c"]);
        assert_eq!((q.status.len(), q.end_date.len()), (1, 1));
        assert!(q.service_request_id.is_empty() && q.start_date.is_empty());
    }

    #[test]
    fn request_windows_follow_the_spec() {
        let cat = Catalogue::builtin().expect("catalogue");
        let p = |q: &[(&str, &str)]| {
            let v: RequestsQuery = q
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            parse_selection(&v, &cat, T0)
        };
        let all = p(&[]).expect("default");
        assert_eq!(
            (all.from_ms, all.to_ms, all.open, all.service_codes.len()),
            (T0 - MAX_SPAN_MS, i64::MAX, None, 0),
            "the last 90 days"
        );
        let s = p(&[("start_date", "2025-11-03T02:00:00Z")]).expect("start");
        assert_eq!((s.from_ms, s.to_ms), (T0, T0 + MAX_SPAN_MS));
        let e = p(&[("end_date", "2025-11-03T02:00:00Z")]).expect("end");
        assert_eq!((e.from_ms, e.to_ms), (T0 + 1000 - MAX_SPAN_MS, T0 + 1000));
        let st = p(&[
            ("status", "closed"),
            ("status", ""),
            ("jurisdiction_id", "x"),
        ]);
        assert_eq!(st.expect("status").open, Some(false));
        let errs = p(&[
            ("status", "lost"),
            ("service_code", "fire"),
            ("end_date", "2025-11-02"),
            ("start_date", "2025-11-03"),
        ])
        .expect_err("all wrong");
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[2].contains("before `start_date`"), "{msgs:?}");
    }
}
