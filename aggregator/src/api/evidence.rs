//! Evidence endpoints: a case's pictures, one picture's metadata and bytes, a department's
//! upload, and "take a picture now" (docs/api.md, "Evidence").
//!
//! Who sees a picture is who may read a case it belongs to ([`super::work::may_see`]): the
//! operators and viewers, the department the case is with, the reporter who filed it. A
//! picture that belongs to no case (yet) is for operators only. Uploads and snapshot requests
//! are for operators and the department the case is with; the role (and the case) is checked
//! before the body is read.

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::{ApiError, check_id};
use super::state::{AppState, blocking};
use super::work::{Caller, may_see};
use crate::cases::model::Origin;
use crate::cases::{Actor, Role};
use crate::evidence::{Evidence, SnapshotError, UploadError, views};
use crate::store::evidence::{self as ev, PictureRow};

fn service(s: &AppState) -> Result<std::sync::Arc<Evidence>, ApiError> {
    s.evidence
        .clone()
        .ok_or_else(|| ApiError::Unavailable("evidence is not available".into()))
}

/// The API's links of a picture.
fn base(sha: &str) -> String {
    format!("/api/v1/evidence/{sha}")
}

/// One picture as the API shows it.
pub fn item(p: &PictureRow) -> Value {
    let stored = p.state == ev::STORED;
    let derivable = stored && views::can_derive(&p.media);
    let link = |tail: &str, ok: bool| ok.then(|| format!("{}/{tail}", base(&p.sha256)));
    let mut v = json!({
        "sha256": p.sha256,
        "source": p.source,
        "camera": p.camera,
        "gateway": p.gateway,
        "devices": p.devices,
        "captured_ms": p.captured_ms,
        "captured_at": rfc3339(p.captured_ms),
        "trigger": p.trigger,
        "alarm": p.alarm,
        "request": p.request,
        "media": p.media,
        "size": p.size,
        "width": p.width,
        "height": p.height,
        "state": if stored { "stored" } else { "arriving" },
        "parts": p.parts,
        "parts_held": p.parts_held,
        "received_ms": p.received_ms,
        "uploaded_by": p.uploaded_by,
        "links": {
            "self": base(&p.sha256),
            "original": link("original", stored),
            "view": link("view", derivable),
            "thumb": link("thumb", derivable),
        },
    });
    if stored && !derivable {
        v["views_absent"] = json!(format!(
            "no decoder for {} here: only the original is served",
            p.media
        ));
    }
    v
}

/// RFC 3339 UTC with milliseconds.
fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default()
}

/// The case `id` if `actor` may read it.
async fn readable_case(
    s: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<crate::cases::Case, ApiError> {
    check_id("case id", id)?;
    let r = s.reader.clone();
    let i = id.to_string();
    match blocking(move || r.case(&i)).await? {
        None => Err(ApiError::Missing(format!("no case `{id}`"))),
        Some(d)
            if may_see(
                actor,
                d.case.department.as_deref(),
                d.case.reporter.as_deref(),
            ) =>
        {
            Ok(d.case)
        }
        Some(_) => Err(ApiError::Forbidden(format!(
            "{} may not see case `{id}`",
            actor.role
        ))),
    }
}

/// What `actor` may do with the evidence of `case` (the same rules as [`upload`], [`snapshot`]
/// and the `handle` transition), so a client shows only the buttons that work for its user.
fn may(case: &crate::cases::Case, actor: &Actor) -> Value {
    let works = match &actor.role {
        Role::Operator => true,
        Role::Department { department } => case.department.as_deref() == Some(department),
        _ => false,
    };
    let handle = case.state == crate::cases::State::Accepted
        && crate::cases::model::check_permission(case, &crate::cases::Action::Handle, actor)
            .is_ok();
    json!({
        "upload": works,
        "snapshot": works && matches!(case.origin, Origin::Alarm { .. }),
        "handle": handle,
    })
}

/// `GET /api/v1/cases/{id}/evidence`: the case's pictures, oldest capture first, the snapshot
/// requests sent for it, and what the caller may do (`may`).
pub async fn case_evidence(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let case = readable_case(&s, &actor, &id).await?;
    let e = service(&s)?;
    let (r, i) = (e.reader.clone(), id.clone());
    let rows = blocking(move || r.case_pictures(&i)).await?;
    let (r, i) = (e.reader.clone(), id.clone());
    let requests = blocking(move || r.case_requests(&i)).await?;
    Ok(Json(json!({
        "case": id,
        "count": rows.len(),
        "evidence": rows.iter().map(item).collect::<Vec<_>>(),
        "requests": requests,
        "may": may(&case, &actor),
    })))
}

/// The picture `sha` if `actor` may see it, with the cases it belongs to that `actor` sees.
async fn visible(
    s: &AppState,
    actor: &Actor,
    sha: &str,
) -> Result<(std::sync::Arc<Evidence>, PictureRow, Vec<String>), ApiError> {
    if !ev::is_sha256(sha) {
        return Err(ApiError::BadRequest(
            "a picture is named by its SHA-256: 64 lowercase hex digits".into(),
        ));
    }
    let e = service(s)?;
    let (r, h) = (e.reader.clone(), sha.to_string());
    let Some(row) = blocking(move || r.picture(&h)).await? else {
        return Err(ApiError::Missing(format!("no picture {sha}")));
    };
    let (r, h) = (e.reader.clone(), sha.to_string());
    let cases = blocking(move || r.picture_cases(&h)).await?;
    if cases.is_empty() {
        return match actor.role {
            Role::Operator | Role::System => Ok((e, row, cases)),
            _ => Err(ApiError::Forbidden(format!(
                "picture {sha} belongs to no case; only operators see it"
            ))),
        };
    }
    let mut seen = Vec::new();
    for id in cases {
        let r = s.reader.clone();
        let i = id.clone();
        if let Some(d) = blocking(move || r.case(&i)).await?
            && may_see(
                actor,
                d.case.department.as_deref(),
                d.case.reporter.as_deref(),
            )
        {
            seen.push(id);
        }
    }
    if seen.is_empty() {
        return Err(ApiError::Forbidden(format!(
            "{} may not see the cases picture {sha} belongs to",
            actor.role
        )));
    }
    Ok((e, row, seen))
}

/// `GET /api/v1/evidence/{sha256}`: one picture's metadata and the cases (that the caller
/// sees) it belongs to.
pub async fn picture(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(sha): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, row, cases) = visible(&s, &actor, &sha).await?;
    let mut v = item(&row);
    v["cases"] = json!(cases);
    v["site"] = json!(row.site);
    v["readings"] = json!(row.readings);
    Ok(Json(v))
}

/// Bytes with their type, a strong ETag (content-addressed: the bytes never change) and a
/// private, long cache lifetime; `304` when the client has them.
fn bytes_response(headers: &HeaderMap, etag: String, media: &str, bytes: bytes::Bytes) -> Response {
    let etag = format!("\"{etag}\"");
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, bytes).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(media) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `GET /api/v1/evidence/{sha256}/original`: the bytes as the camera (or uploader) gave them.
pub async fn original(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (e, row, _) = visible(&s, &actor, &sha).await?;
    if row.state != ev::STORED {
        return Err(ApiError::Conflict(format!(
            "picture {sha} is still arriving ({} of {} parts)",
            row.parts_held, row.parts
        )));
    }
    let bytes = e
        .original(&sha)
        .await
        .map_err(|err| ApiError::Internal(err.to_string()))?
        .ok_or_else(|| ApiError::Missing(format!("the bytes of picture {sha} are missing")))?;
    Ok(bytes_response(&headers, sha, &row.media, bytes))
}

async fn derived(
    s: AppState,
    actor: Actor,
    sha: String,
    headers: HeaderMap,
    kind: &str,
) -> Result<Response, ApiError> {
    let (e, row, _) = visible(&s, &actor, &sha).await?;
    if row.state != ev::STORED {
        return Err(ApiError::Conflict(format!(
            "picture {sha} is still arriving ({} of {} parts)",
            row.parts_held, row.parts
        )));
    }
    if !views::can_derive(&row.media) {
        return Err(ApiError::Missing(format!(
            "picture {sha} has no {kind}: no decoder for {} here (its original is served)",
            row.media
        )));
    }
    let bytes = e
        .derived(&row, kind)
        .await
        .map_err(|err| ApiError::Internal(err.to_string()))?
        .ok_or_else(|| {
            ApiError::Missing(format!(
                "picture {sha} has no {kind}: its bytes do not decode"
            ))
        })?;
    Ok(bytes_response(
        &headers,
        format!("{sha}-{kind}"),
        "image/jpeg",
        bytes,
    ))
}

/// `GET /api/v1/evidence/{sha256}/view` (the captioned JPEG) and `…/thumb` (the thumbnail for
/// lists): one handler, the route says which.
pub async fn derived_view(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(sha): Path<String>,
    route: axum::extract::MatchedPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = if route.as_str().ends_with("/thumb") {
        views::THUMB
    } else {
        views::VIEW
    };
    derived(s, actor, sha, headers, kind).await
}

/// The case `id` if `actor` may add evidence to it or ask for a picture: an operator, or the
/// department the case is with.
async fn workable_case(
    s: &AppState,
    actor: &Actor,
    id: &str,
    what: &str,
) -> Result<crate::cases::Case, ApiError> {
    if !matches!(actor.role, Role::Operator | Role::Department { .. }) {
        return Err(ApiError::Forbidden(format!(
            "{} may not {what}; an operator or the case's department does",
            actor.role
        )));
    }
    readable_case(s, actor, id).await.map_err(|e| match e {
        ApiError::Forbidden(_) => ApiError::Forbidden(format!(
            "{} may not {what} for case `{id}`: it is not with them",
            actor.role
        )),
        other => other,
    })
}

/// `POST /api/v1/cases/{id}/evidence` with the picture's bytes as the body (`Content-Type:
/// image/jpeg` or `image/png`): a handler's proof of rectification. `201` with the picture.
pub async fn upload(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(id): Path<String>,
    req: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let case = workable_case(&s, &actor, &id, "add evidence").await?;
    let e = service(&s)?;
    let max = e.settings.max_upload_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::UnsupportedMedia(
                "send the picture with `Content-Type: image/jpeg` or `image/png`".into(),
            )
        })?;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = announced.filter(|n| *n > max) {
        return Err(ApiError::TooLarge(format!(
            "the picture is {n} bytes; at most {max} are accepted"
        )));
    }
    let body: Body = req.into_body();
    let bytes = axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::TooLarge(format!(
            "the picture is over {max} bytes; at most {max} are accepted"
        ))
    })?;
    let row = e
        .upload(&case.id, &actor.id, bytes, &declared)
        .await
        .map_err(|err| match err {
            UploadError::TooLarge { .. } => ApiError::TooLarge(err.to_string()),
            UploadError::NotAPicture | UploadError::TypeMismatch { .. } => {
                ApiError::UnsupportedMedia(err.to_string())
            }
            UploadError::Empty => ApiError::BadRequest(err.to_string()),
            UploadError::Evidence(crate::evidence::EvidenceError::Store(st)) => ApiError::Store(st),
            UploadError::Evidence(other) => ApiError::Internal(other.to_string()),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "case": case.id, "evidence": item(&row) })),
    ))
}

/// `POST /api/v1/cases/{id}/snapshot`: asks the gateway of the case's device for a picture
/// now (a sealed `cmd`, expiring after `[evidence] snapshot_expiry_s`). `202` with the request
/// ids; the pictures join the case when they arrive. No body is read.
pub async fn snapshot(
    State(s): State<AppState>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let case = workable_case(&s, &actor, &id, "ask for a picture").await?;
    let e = service(&s)?;
    let Origin::Alarm {
        gateway, device, ..
    } = &case.origin
    else {
        return Err(ApiError::Conflict(format!(
            "case `{id}` has no device to photograph (it was not opened by an alarm)"
        )));
    };
    // A gateway whose own status says it is offline (its Last Will) cannot take the picture
    // before the command expires: say so now rather than leave a request that will expire.
    let (gw, r) = (gateway.clone(), s.reader.clone());
    let row = blocking(move || Ok(r.gateways()?.into_iter().find(|g| g.id == gw))).await?;
    if let Some(g) = row.filter(|g| !g.online && g.status_ts_ms.is_some()) {
        let since = g
            .last_seen_ms
            .map(|t| format!(" (last heard from at {t} ms)"))
            .unwrap_or_default();
        return Err(ApiError::Conflict(format!(
            "gateway `{gateway}` is offline{since}: it cannot take a picture now; ask again \
             when it is back online"
        )));
    }
    // The picture joins the case's latest episode of that gateway, if any.
    let alarm = case
        .alarms
        .iter()
        .filter(|a| &a.gateway == gateway)
        .max_by_key(|a| a.ts_ms)
        .map(|a| a.id.clone());
    let req = e
        .request_snapshot(&case.id, gateway, Some(device), alarm.as_deref(), &actor.id)
        .await
        .map_err(|err| match err {
            SnapshotError::Unavailable => ApiError::Unavailable(err.to_string()),
            SnapshotError::Command(c) => ApiError::Unavailable(c.to_string()),
            SnapshotError::Store(st) => ApiError::Store(st),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "case": case.id, "requests": [req] })),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use fumegrid_common::metric::Metric;
    use fumegrid_common::wire::{Batch, Body as WBody, EvidenceMeta, Item, Media, Trigger};
    use serde_json::Value;
    use tower::ServiceExt;

    use crate::api::app;
    use crate::api::tests::case_state;
    use crate::store::evidence::split;
    use crate::store::{Synchronous, Writer, sqlite};

    /// 2025-11-03 10:00 at UTC+08:00, as in the API tests.
    const T0: i64 = 1_762_135_200_000;
    /// Case C20251103-0002: rest-2's exceedance, with department epb.
    const CASE: &str = "C20251103-0002";

    fn meta(alarm: Option<String>) -> EvidenceMeta {
        EvidenceMeta {
            camera: "cam-1".into(),
            devices: vec!["rest-2".into()],
            captured_ms: T0 + 5_000,
            trigger: Trigger::AlarmRaised,
            alarm,
            request: None,
            media: Media::Jpeg,
            size: 0,
            width: Some(2),
            height: Some(2),
            site: "Food Street".into(),
            readings: vec![("rest-2".into(), Metric::FumeMgM3, 3.0)],
        }
    }

    async fn send(
        app: axum::Router,
        method: &str,
        uri: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("response");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .expect("body");
        (status, headers, bytes.to_vec())
    }

    fn json(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap_or(Value::Null)
    }

    /// A case's pictures are seen by whoever may read the case and by nobody else; a picture
    /// of no case by operators only; bytes come with their type and a content-addressed ETag.
    #[tokio::test]
    async fn roles_decide_who_sees_a_cases_pictures() {
        let name = "evidence-roles.sqlite3";
        let state = case_state(name);
        let p = std::env::temp_dir()
            .join(format!("fumegrid-agg-api-{}", std::process::id()))
            .join(name);
        let episode = format!("rest-2:exceedance:fume_mg_m3:{T0}");
        let linked: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
        let loose: Vec<u8> = (0..100u32).map(|i| i as u8).collect();
        let mut items: Vec<Item> = Vec::new();
        for (i, e) in split(&linked, meta(Some(episode)))
            .into_iter()
            .chain(split(&loose, meta(None)))
            .enumerate()
        {
            items.push(Item {
                seq: i as u64 + 1,
                body: WBody::Evidence(e),
            });
        }
        let mut w = sqlite::open(&p, Synchronous::Normal).expect("writer");
        w.commit(
            &[&Batch {
                gateway: "gw-1".into(),
                stream: "pics".into(),
                sent_ms: T0,
                items,
            }],
            T0 + 6_000,
        )
        .expect("commit");
        let ev = state.evidence.clone().expect("evidence");
        assert_eq!(ev.move_pending().await.expect("moved"), 2);
        let (sha, loose_sha) = (
            crate::store::evidence::sha256_hex(&linked),
            crate::store::evidence::sha256_hex(&loose),
        );
        let app = app(state);
        let list = format!("/api/v1/cases/{CASE}/evidence");
        for token in ["tok-op", "tok-view", "tok-epb"] {
            let (s, _, b) = send(app.clone(), "GET", &list, token, &[], vec![]).await;
            assert_eq!(s, StatusCode::OK, "{token}: {}", json(&b));
            let v = json(&b);
            assert_eq!(v["count"], 1, "{token}: {v}");
            let p = &v["evidence"][0];
            assert_eq!(p["sha256"], sha.as_str());
            assert_eq!(p["state"], "stored");
            assert_eq!(p["captured_at"], "2025-11-03T02:00:05.000Z");
            assert_eq!(
                p["links"]["original"],
                format!("/api/v1/evidence/{sha}/original")
            );
        }
        for token in ["tok-urban", "tok-citizen"] {
            let (s, _, b) = send(app.clone(), "GET", &list, token, &[], vec![]).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{token}: {}", json(&b));
            for tail in ["", "/original"] {
                let uri = format!("/api/v1/evidence/{sha}{tail}");
                let (s, _, b) = send(app.clone(), "GET", &uri, token, &[], vec![]).await;
                assert_eq!(s, StatusCode::FORBIDDEN, "{token} {uri}: {}", json(&b));
            }
        }
        // The original, byte for byte, with its type and ETag; again: 304.
        let uri = format!("/api/v1/evidence/{sha}/original");
        let (s, h, b) = send(app.clone(), "GET", &uri, "tok-epb", &[], vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, linked);
        assert_eq!(h["content-type"], "image/jpeg");
        assert_eq!(h["etag"], format!("\"{sha}\"").as_str());
        assert!(
            h["cache-control"]
                .to_str()
                .expect("ascii")
                .contains("private")
        );
        let etag = format!("\"{sha}\"");
        let (s, _, b) = send(
            app.clone(),
            "GET",
            &uri,
            "tok-epb",
            &[("if-none-match", &etag)],
            vec![],
        )
        .await;
        assert_eq!((s, b.len()), (StatusCode::NOT_MODIFIED, 0));
        let (s, _, b) = send(
            app.clone(),
            "GET",
            &format!("/api/v1/evidence/{sha}"),
            "tok-view",
            &[],
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(json(&b)["cases"], serde_json::json!([CASE]));
        // A picture of no case: operators only.
        let loose_uri = format!("/api/v1/evidence/{loose_sha}");
        let (s, _, _) = send(app.clone(), "GET", &loose_uri, "tok-view", &[], vec![]).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, b) = send(app.clone(), "GET", &loose_uri, "tok-op", &[], vec![]).await;
        assert_eq!(s, StatusCode::OK, "{}", json(&b));
        let (s, _, b) = send(
            app.clone(),
            "GET",
            "/api/v1/evidence/ABC",
            "tok-op",
            &[],
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{}", json(&b));
        let (s, _, _) = send(
            app.clone(),
            "GET",
            &format!("/api/v1/evidence/{}", "0".repeat(64)),
            "tok-op",
            &[],
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    /// A PNG header of `w` x `h` pixels (enough for sniffing and dimensions).
    fn png(w: u32, h: u32, extra: usize) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 2, 0, 0, 0]);
        b.extend(std::iter::repeat_n(0u8, extra));
        b
    }

    /// `may` in a case's evidence list says what the caller's role can do with it, by the same
    /// rules as the endpoints and the `handle` transition (the dashboard's buttons follow it).
    #[tokio::test]
    async fn the_list_says_what_each_role_may_do() {
        let app = app(case_state("evidence-may.sqlite3"));
        let list = format!("/api/v1/cases/{CASE}/evidence");
        let may = |app: axum::Router, token: &'static str| {
            let list = list.clone();
            async move {
                let (s, _, b) = send(app, "GET", &list, token, &[], vec![]).await;
                assert_eq!(s, StatusCode::OK, "{token}: {}", json(&b));
                json(&b)["may"].clone()
            }
        };
        let all = |u: bool, s: bool, h: bool| serde_json::json!({"upload": u, "snapshot": s, "handle": h});
        // Dispatched to the EPB, not yet accepted: nobody may mark it handled.
        assert_eq!(may(app.clone(), "tok-op").await, all(true, true, false));
        assert_eq!(may(app.clone(), "tok-view").await, all(false, false, false));
        assert_eq!(may(app.clone(), "tok-epb").await, all(true, true, false));
        let (s, _, b) = send(
            app.clone(),
            "POST",
            &format!("/api/v1/cases/{CASE}/transitions"),
            "tok-epb",
            &[("content-type", "application/json")],
            br#"{"action":"accept"}"#.to_vec(),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{}", json(&b));
        // Accepted: its department may mark it handled, the operator still may not.
        assert_eq!(may(app.clone(), "tok-epb").await, all(true, true, true));
        assert_eq!(may(app.clone(), "tok-op").await, all(true, true, false));
        assert_eq!(may(app.clone(), "tok-view").await, all(false, false, false));
    }

    #[tokio::test]
    async fn the_cases_department_uploads_proof_and_others_cannot() {
        let mut state = case_state("evidence-upload.sqlite3");
        if let Some(e) = &state.evidence {
            let mut settings = e.settings;
            settings.max_upload_bytes = 4096;
            state.evidence = Some(Arc::new(crate::evidence::Evidence::new(
                e.blobs.clone(),
                e.reader.clone(),
                Arc::new(std::sync::Mutex::new(
                    sqlite::open(
                        &std::env::temp_dir()
                            .join(format!("fumegrid-agg-api-{}", std::process::id()))
                            .join("evidence-upload.sqlite3"),
                        Synchronous::Normal,
                    )
                    .expect("writer"),
                )),
                settings,
                None,
                fumegrid_common::clock::Clock::fixed(T0),
            )));
        }
        let app = app(state);
        let uri = format!("/api/v1/cases/{CASE}/evidence");
        let png_ct = [("content-type", "image/png")];
        // Roles first: a viewer, a reporter and another department are refused whatever the
        // body (here: over the limit).
        for token in ["tok-view", "tok-citizen", "tok-urban"] {
            let (s, _, b) =
                send(app.clone(), "POST", &uri, token, &png_ct, png(1, 1, 10_000)).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{token}: {}", json(&b));
        }
        let (s, _, b) = send(
            app.clone(),
            "POST",
            &uri,
            "tok-epb",
            &png_ct,
            png(1, 1, 10_000),
        )
        .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{}", json(&b));
        let (s, _, b) = send(
            app.clone(),
            "POST",
            &uri,
            "tok-epb",
            &[("content-type", "image/jpeg")],
            png(1, 1, 10),
        )
        .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(
            json(&b)["error"]
                .as_str()
                .expect("msg")
                .contains("image/png"),
            "{}",
            json(&b)
        );
        let (s, _, _) = send(
            app.clone(),
            "POST",
            &uri,
            "tok-epb",
            &[("content-type", "image/gif")],
            b"GIF89a....".to_vec(),
        )
        .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (s, _, _) = send(app.clone(), "POST", &uri, "tok-epb", &[], png(1, 1, 10)).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "no Content-Type");
        let proof = png(40, 30, 100);
        let (s, _, b) = send(app.clone(), "POST", &uri, "tok-epb", &png_ct, proof.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{}", json(&b));
        let v = json(&b);
        let sha = crate::store::evidence::sha256_hex(&proof);
        assert_eq!(v["evidence"]["sha256"], sha.as_str());
        assert_eq!(
            (
                v["evidence"]["source"].as_str(),
                v["evidence"]["uploaded_by"].as_str(),
                v["evidence"]["width"].as_u64()
            ),
            (Some("upload"), Some("epb-duty"), Some(40))
        );
        let (s, _, b) = send(app.clone(), "GET", &uri, "tok-view", &[], vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(json(&b)["evidence"][0]["sha256"], sha.as_str());
        let (s, h, b) = send(
            app.clone(),
            "GET",
            &format!("/api/v1/evidence/{sha}/original"),
            "tok-epb",
            &[],
            vec![],
        )
        .await;
        assert_eq!((s, b), (StatusCode::OK, proof));
        assert_eq!(h["content-type"], "image/png");
        // Snapshot: roles first, then 503 without an MQTT client here.
        let snap = format!("/api/v1/cases/{CASE}/snapshot");
        for token in ["tok-view", "tok-urban", "tok-citizen"] {
            let (s, _, _) = send(app.clone(), "POST", &snap, token, &[], vec![]).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{token}");
        }
        let (s, _, b) = send(app.clone(), "POST", &snap, "tok-op", &[], vec![]).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{}", json(&b));
    }

    #[tokio::test]
    async fn a_snapshot_of_an_offline_gateway_is_refused_naming_it() {
        let st = case_state("snap-offline.sqlite3");
        let p = std::env::temp_dir()
            .join(format!("fumegrid-agg-api-{}", std::process::id()))
            .join("snap-offline.sqlite3");
        let mut w = sqlite::open(&p, Synchronous::Normal).expect("writer");
        // Its Last Will: offline.
        w.set_status(
            "gw-1",
            fumegrid_common::wire::State::Offline,
            Some(T0),
            None,
            T0,
        )
        .expect("status");
        let app = app(st);
        let snap = format!("/api/v1/cases/{CASE}/snapshot");
        let (s, _, b) = send(app.clone(), "POST", &snap, "tok-op", &[], vec![]).await;
        assert_eq!(s, StatusCode::CONFLICT, "{}", json(&b));
        let msg = json(&b)["error"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("gateway `gw-1` is offline"), "{msg}");
        // Back online: the request goes on (to 503 here, where no MQTT client runs).
        w.set_status(
            "gw-1",
            fumegrid_common::wire::State::Online,
            Some(T0 + 1),
            None,
            T0 + 1,
        )
        .expect("status");
        let (s, _, b) = send(app, "POST", &snap, "tok-op", &[], vec![]).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{}", json(&b));
    }
}
