//! The OpenAPI 3.1 description of every route of [`super::app`] (`openapi.json`, written by
//! hand), served at `GET /api/v1/openapi.json` without a token. The tests hold it to the router
//! both ways: every route registered in the source is documented, and every documented route
//! answers.

use axum::http::header;
use axum::response::IntoResponse;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::DOCUMENT;
    use crate::api::app;
    use crate::api::tests::case_state;
    use crate::cases::{Command, EventKind, State};

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// Resolves a local `$ref` (`#/components/...`).
    fn resolve<'a>(doc: &'a Value, r: &str) -> Option<&'a Value> {
        doc.pointer(r.strip_prefix('#')?)
    }

    /// `(method, path)` of every operation in the document, path items' `$ref`s followed.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let item = match item.get("$ref").and_then(Value::as_str) {
                Some(r) => resolve(doc, r).unwrap_or_else(|| panic!("{path}: bad $ref {r}")),
                None => item,
            };
            for m in METHODS {
                if item.get(m).is_some() {
                    out.insert((m.to_string(), path.clone()));
                }
            }
        }
        out
    }

    /// Every `.rs` file under `dir`, recursively.
    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).expect("read src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("read source");
                out.push((p.display().to_string(), text));
            }
        }
    }

    /// `(method, path)` of every `.route("…", get(…).post(…))` outside test code in the
    /// crate's sources. Other ways to add routes are refused, so that this list stays complete.
    #[allow(
        clippy::string_slice,
        reason = "every index comes from find/match_indices/char_indices on the same text: a char boundary"
    )]
    fn registered() -> BTreeSet<(String, String)> {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut out = BTreeSet::new();
        for (file, text) in files {
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            for other in [".nest(", ".route_service(", ".nest_service("] {
                assert!(
                    !code.contains(other),
                    "{file} adds routes with `{other}`: teach this test to read them"
                );
            }
            for (at, _) in code.match_indices(".route(") {
                let rest = code[at + ".route(".len()..].trim_start();
                let rest = rest.strip_prefix('"').expect("a route path literal");
                let end = rest.find('"').expect("end of the path");
                let path = &rest[..end];
                // The handler expression: up to the `)` closing `.route(`.
                let mut depth = 1;
                let mut close = rest.len();
                for (i, c) in rest[end + 1..].char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        close = end + 1 + i;
                        break;
                    }
                }
                let handlers = &rest[end + 1..close];
                let mut found = false;
                for m in METHODS {
                    let call = format!("{m}(");
                    // `get(…)` or a chained `….post(…)`, not `x.get(…)` or `other_get(…)`.
                    let named = handlers.match_indices(&call).any(|(i, _)| {
                        let before = handlers[..i].trim_end();
                        match before.strip_suffix('.') {
                            Some(b) => b.trim_end().ends_with(')'),
                            None => {
                                !before.ends_with(|c: char| c.is_alphanumeric() || "_:".contains(c))
                            }
                        }
                    });
                    if named {
                        out.insert((m.to_string(), path.to_string()));
                        found = true;
                    }
                }
                assert!(found, "{file}: no method found for route {path}");
            }
        }
        out
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_is_routed() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let documented = documented(&doc);
        let registered = registered();
        let undocumented: Vec<_> = registered.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&registered).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from aggregator/src/api/openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "documented routes the source does not register: {unrouted:?}"
        );
        // The known set, so that a scan that silently finds nothing cannot pass.
        for (m, p) in [
            ("get", "/healthz"),
            ("get", "/api/v1/openapi.json"),
            ("get", "/api/v1/cases"),
            ("post", "/api/v1/cases"),
            ("post", "/api/v1/cases/{id}/transitions"),
            ("get", "/api/v1/notifications"),
            ("get", "/open311/v2/services.json"),
            ("post", "/open311/v2/requests.json"),
            ("get", "/open311/v2/requests/{service_request_id}"),
        ] {
            assert!(
                registered.contains(&(m.to_string(), p.to_string())),
                "{m} {p} not found in the source"
            );
        }
        assert!(registered.len() >= 24, "{registered:?}");
    }

    #[tokio::test]
    async fn every_documented_route_answers() {
        let app = app(case_state("openapi.sqlite3"));
        for (method, path) in documented(&doc()) {
            let uri = path
                .replace("{device}", "rest-1")
                .replace("{gateway}", "gw-1")
                .replace("{id}", "C20251103-0001")
                .replace("{service_code}", "complaint.json")
                .replace("{service_request_id}", "C20251103-0001.json");
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header("authorization", "Bearer tok-op")
                .body(Body::empty())
                .expect("request");
            let resp = app.clone().oneshot(req).await.expect("response");
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .expect("body");
            let text = String::from_utf8_lossy(&body);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(
                !(status == StatusCode::NOT_FOUND && text.contains("no such endpoint")),
                "{method} {uri} fell through to the fallback"
            );
        }
    }

    #[tokio::test]
    async fn the_document_is_served_without_a_token() {
        let app = app(crate::api::tests::locked("openapi-served.sqlite3"));
        let resp = app
            .oneshot(
                Request::get("/api/v1/openapi.json")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v, doc());
    }

    /// Every `$ref` resolves, security is declared where the middleware applies, and the
    /// enumerations match the case engine.
    #[test]
    fn the_document_is_consistent_with_itself_and_the_engine() {
        let doc = doc();
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        match (k.as_str(), x) {
                            ("$ref", Value::String(r)) => out.push(r.clone()),
                            _ => refs(x, out),
                        }
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 50);
        for r in &all {
            assert!(resolve(&doc, r).is_some(), "unresolved $ref {r}");
        }

        for (method, path) in documented(&doc) {
            let item = &doc["paths"][&path];
            let item = match item.get("$ref").and_then(Value::as_str) {
                Some(r) => resolve(&doc, r).expect("path item"),
                None => item,
            };
            let op = &item[&method];
            let public = op.get("security") == Some(&Value::Array(vec![]));
            let behind_token = (path.starts_with("/api/v1/") && path != "/api/v1/openapi.json")
                || path == "/metrics";
            assert_eq!(public, !behind_token, "{method} {path}: security");
            if behind_token {
                assert!(op["responses"].get("401").is_some(), "{method} {path}: 401");
            }
        }

        let schemas = &doc["components"]["schemas"];
        let states: Vec<&str> = schemas["CaseState"]["enum"]
            .as_array()
            .expect("states")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let want: Vec<&str> = State::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(states, want);
        for k in schemas["EventKind"]["enum"].as_array().expect("kinds") {
            serde_json::from_value::<EventKind>(k.clone())
                .unwrap_or_else(|e| panic!("event kind {k}: {e}"));
        }
        // Each documented command's example is a command the engine reads; all 15 actions.
        let variants = schemas["Command"]["oneOf"].as_array().expect("commands");
        assert_eq!(variants.len(), 15);
        for v in variants {
            let s = resolve(&doc, v["$ref"].as_str().expect("ref")).expect("variant");
            let example = s["examples"][0].clone();
            let cmd: Command = serde_json::from_value(example.clone())
                .unwrap_or_else(|e| panic!("example {example}: {e}"));
            assert_eq!(
                s["properties"]["action"]["const"], example["action"],
                "{example}"
            );
            let _ = cmd;
        }
    }
}
