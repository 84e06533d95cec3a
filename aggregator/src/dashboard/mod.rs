//! The live dashboard: one static page served by the aggregator itself.
//!
//! [`PAGE`] (`index.html`) carries its HTML, CSS and script inline and loads nothing from
//! elsewhere, so the policy it is served with ([`CONTENT_SECURITY_POLICY`]) allows this origin
//! and inline code only. The page needs no token; its script reads the JSON API (`/api/v1`)
//! from the browser with the bearer token the user pastes in (kept in `localStorage`, cleared by
//! "sign out", asked for again on a 401), every 5 s while the tab is visible. Data reaches the
//! page as text only (`textContent`, appended strings), never as markup.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | `303 See Other` to `/dashboard/` |
//! | `GET /dashboard/` | the page: site plan (gateways with their devices, coloured ok / over the limit / alarm / offline, with the last hour of fume readings against the limit), a warning on a device whose purifier is off while its fan runs, a map drawn in the page (SVG in a local projection around the sites' and tracks' bounding box, no tiles, works offline: sites from `GET /api/v1/map` coloured ok / open alarm / open case / offline with their alarm and case counts, the last hour of drone tracks, a scale bar), open alarms, cases by state, overdue cases, open cases (id, site, category, department, state, deadline, overdue; a click, or `#case=<id>`, opens one case with its details and a timeline of its events, snapshot requests and pictures: thumbnails fetched with the token as `blob:` URLs, a click for the captioned view with capture time, trigger, camera and SHA-256; "take a picture now" and a handler's photo on "mark handled" for the roles that may), case statistics of today and this month, ingest counters, an "export CSV" form (a site or a device, from/to dates, 10-minute/hourly/daily averages: `export.csv` fetched with the token and saved as a file) |

use axum::http::header;
use axum::response::{IntoResponse, Redirect};

/// The page, HTML + CSS + script in one file.
pub const PAGE: &str = include_str!("index.html");

/// Only this origin, and inline script and style since the page is all inline; pictures also
/// from `blob:` (fetched with the token); no frames, no plugins, no form posts, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'unsafe-inline' 'self'; \
     style-src 'unsafe-inline' 'self'; img-src 'self' data: blob:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the dashboard is the aggregator's front page.
pub async fn root() -> Redirect {
    Redirect::to("/dashboard/")
}

/// `GET /dashboard/`: the page. `no-cache`: a browser revalidates, so an upgraded aggregator
/// serves its own page, not a cached one that may not match its API.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{HeaderMap, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::api::{AppState, Auth, app};
    use crate::cases::{Actor, Catalogue, Role};
    use crate::ingest::stats::Stats;
    use crate::store::Synchronous;
    use crate::store::sqlite;

    /// An empty store behind an API that needs a token (`tok-view`, a viewer).
    fn locked(name: &str) -> AppState {
        let dir = std::env::temp_dir().join(format!("fumegrid-agg-dash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join(name);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", p.display()));
        }
        drop(sqlite::open(&p, Synchronous::Normal).expect("open"));
        AppState {
            reader: Arc::new(sqlite::open_reader(&p).expect("reader")),
            stats: Arc::new(Stats::default()),
            catalogue: Arc::new(Catalogue::builtin().expect("catalogue")),
            auth: Arc::new(Auth {
                tokens: crate::auth::Tokens::from_plain([(
                    "tok-view",
                    Actor {
                        id: "wall".into(),
                        role: Role::Viewer,
                    },
                )]),
                anonymous_viewer: false,
            }),
            casework: None,
            notify: Default::default(),
            clock: fumegrid_common::clock::Clock::system(),
            evidence: None,
            drones: None,
            sites: Default::default(),
        }
    }

    async fn get(
        app: axum::Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            headers,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    /// The ids the script looks up with `$('…')`.
    #[allow(
        clippy::string_slice,
        reason = "every index comes from find/match_indices/char_indices on the same text: a char boundary"
    )]
    fn ids_used_by_script(page: &str) -> BTreeSet<&str> {
        page.match_indices("$('")
            .filter_map(|(at, m)| {
                let rest = &page[at + m.len()..];
                rest.find("')").map(|end| &rest[..end])
            })
            .collect()
    }

    #[tokio::test]
    async fn the_page_needs_no_token_and_is_served_with_a_strict_policy() {
        let app = app(locked("page.sqlite3"));
        let (s, h, body) = get(app.clone(), "GET", "/dashboard/", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let csp = h["content-security-policy"].to_str().expect("ascii");
        for directive in [
            "default-src 'self'",
            "script-src 'unsafe-inline' 'self'",
            "style-src 'unsafe-inline' 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} missing from {csp}");
        }
        assert!(!csp.contains("http") && !csp.contains('*'), "{csp}");
        // Pictures are fetched with the token and shown as blob: URLs; nothing wider.
        let img: Vec<&str> = csp
            .split(';')
            .map(str::trim)
            .filter(|d| d.starts_with("img-src"))
            .collect();
        assert_eq!(img, ["img-src 'self' data: blob:"], "{csp}");
        assert_eq!(body, PAGE);

        // Every element the script looks up is in the page, once.
        let ids = ids_used_by_script(PAGE);
        for id in [
            "plan",
            "alarms",
            "case-states",
            "overdue",
            "case-stats",
            "ingest",
            "updated",
            "conn",
            "error",
            "signin",
            "signin-form",
            "token",
            "signout",
        ] {
            assert!(ids.contains(id), "the script no longer uses #{id}: {ids:?}");
        }
        for id in &ids {
            let n = PAGE.matches(&format!("id=\"{id}\"")).count();
            assert_eq!(n, 1, "the script uses #{id}; the page has it {n} times");
        }
        // Self-contained (whatever the page refers to is inline `data:`), and data never
        // parsed as markup.
        for attr in ["src=\"", "href=\""] {
            for (at, _) in PAGE.match_indices(attr) {
                let value = PAGE.get(at + attr.len()..).expect("after a match");
                let shown: String = value.chars().take(40).collect();
                assert!(value.starts_with("data:"), "{attr}{shown}");
            }
        }
        for banned in [
            "rel=\"stylesheet\"",
            "@import",
            "url(",
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!PAGE.contains(banned), "the page contains `{banned}`");
        }
        assert_eq!(PAGE.matches("<script").count(), 1);

        let (s, h, body) = get(app, "HEAD", "/dashboard/", None).await;
        assert_eq!(
            (s, h["content-type"].to_str().ok(), body.as_str()),
            (StatusCode::OK, Some("text/html; charset=utf-8"), "")
        );
    }

    #[tokio::test]
    async fn the_front_page_redirects_to_the_dashboard() {
        let app = app(locked("root.sqlite3"));
        let (s, h, _) = get(app.clone(), "GET", "/", None).await;
        assert_eq!(s, StatusCode::SEE_OTHER);
        assert_eq!(h["location"], "/dashboard/");
        // Only the two routes: no directory listing or other files under /dashboard/.
        let (s, _, _) = get(app, "GET", "/dashboard/index.html", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_api_the_page_reads_still_needs_a_token() {
        let app = app(locked("token.sqlite3"));
        for uri in [
            "/api/v1/gateways",
            "/api/v1/devices",
            "/api/v1/alarms",
            "/api/v1/cases?state=dispatched&limit=1",
            "/api/v1/stats/cases",
        ] {
            let (s, h, _) = get(app.clone(), "GET", uri, None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
            assert!(h.contains_key("www-authenticate"), "{uri}");
            let (s, _, body) = get(app.clone(), "GET", uri, Some("tok-view")).await;
            assert_eq!(s, StatusCode::OK, "{uri}: {body}");
        }
        let export = "/api/v1/export.csv?site=gw-1&from=2026-11-01&to=2026-11-30";
        let (s, _, _) = get(app.clone(), "GET", export, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
}
