//! Open311 against a real aggregator process over real sockets (curl as the citizen app):
//! what a citizen writes into a request reaches the public only without their personal data.

use std::process::Command;
use std::time::Duration;

use fumegrid_tests::site::{EPB_TOKEN, OPERATOR_TOKEN, Site, VIEWER_TOKEN, api_call};
use fumegrid_tests::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A citizen app's reporter token, added to the site's tokens file by [`reporter_tokens`].
const APP_TOKEN: &str = "e2e-citizen-app-token-0001";
const OTHER_APP_TOKEN: &str = "e2e-other-app-token-0001";

/// Adds two reporter tokens (this app and another) to the site's tokens file.
fn reporter_tokens(site: &Site) {
    let path = site.dir.join("tokens.toml");
    let mut toml = std::fs::read_to_string(&path).expect("tokens");
    for (name, token) in [("citizen-app", APP_TOKEN), ("other-app", OTHER_APP_TOKEN)] {
        toml.push_str(&format!(
            "[[tokens]]\nname = \"{name}\"\nrole = \"reporter\"\nsha256 = \"{}\"\n",
            hex::encode(Sha256::digest(token.as_bytes()))
        ));
    }
    std::fs::write(&path, toml).expect("tokens");
}

/// `POST /open311/v2/requests.json`, form-encoded by curl: (status, JSON).
fn file_request(api: u16, fields: &[(&str, &str)]) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "10", "-w", "\n%{http_code}"]);
    for (k, v) in fields {
        cmd.args(["--data-urlencode", &format!("{k}={v}")]);
    }
    cmd.arg(format!("http://127.0.0.1:{api}/open311/v2/requests.json"));
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Every place in the store's files (database, WAL) that holds `needle`.
fn in_files(site: &Site, needle: &str) -> Vec<String> {
    ["agg.sqlite3", "agg.sqlite3-wal"]
        .iter()
        .filter(|f| {
            std::fs::read(site.dir.join(f))
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .map(|f| f.to_string())
        .collect()
}

/// The case's title and every note and JSON of its event log, read from the database itself.
fn case_log(site: &Site, id: &str) -> String {
    let db = rusqlite::Connection::open_with_flags(
        site.dir.join("agg.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open store");
    db.busy_timeout(Duration::from_secs(5)).expect("busy");
    let mut out: String = db
        .query_row("SELECT json FROM cases WHERE id = ?1", [id], |r| r.get(0))
        .expect("case row");
    let mut st = db
        .prepare("SELECT coalesce(note, ''), json FROM case_events WHERE case_id = ?1")
        .expect("events");
    let rows = st
        .query_map([id], |r| {
            Ok(format!(
                "{}\n{}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?
            ))
        })
        .expect("query");
    for row in rows {
        out.push('\n');
        out.push_str(&row.expect("row"));
    }
    out
}

/// Issue 11: a description carrying a phone number, an e-mail address and a name. The public
/// Open311 reads, the case title and the append-only event log never hold them; operators and
/// the filing app read the text as sent with the contact details; after an operator erases
/// those, nobody does and the bytes are gone from the store's files.
#[test]
fn personal_data_in_a_description_stays_with_the_contact_and_is_erased_with_it() {
    let site = Site::new("o311-privacy");
    let cfg = site.embedded();
    reporter_tokens(&site);
    let mut agg = site.aggregator(&cfg);
    let api = site.api;
    let secrets = ["139-0000-5678", "zhao.min@example.cn", "赵敏"];
    let sent = "厨房油烟很大 smoke every night, call +86 139-0000-5678\n\
                or write to zhao.min@example.cn. 我叫赵敏";
    let (s, v) = file_request(
        api,
        &[
            ("api_key", APP_TOKEN),
            ("service_code", "complaint"),
            ("description", sent),
            ("address_string", "12 Xinhua Road"),
        ],
    );
    assert_eq!(s, 201, "{v}");
    let id = v[0]["service_request_id"].as_str().expect("id").to_string();
    for body in [
        r#"{"action":"register"}"#,
        r#"{"action":"dispatch","department":"epb"}"#,
    ] {
        let tr = format!("/api/v1/cases/{id}/transitions");
        let (s, v) = api_call(api, "POST", &tr, Some(OPERATOR_TOKEN), Some(body));
        assert_eq!(s, 200, "{body}: {v}");
    }
    let leaks = |what: &str, text: &str| {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} holds {secret}: {text}");
        }
    };

    // The public reads: the description, redacted.
    let (s, one) = http_get(
        &format!("http://127.0.0.1:{api}/open311/v2/requests/{id}.json"),
        None,
    );
    assert_eq!(s, 200, "{one}");
    leaks("GET request", &one);
    let one: Value = serde_json::from_str(&one).expect("json");
    assert_eq!(
        one[0]["description"],
        "厨房油烟很大 smoke every night, call [phone]\nor write to [email]. 我叫[name]"
    );
    let (s, all) = http_get(
        &format!("http://127.0.0.1:{api}/open311/v2/requests.json"),
        None,
    );
    assert_eq!(s, 200, "{all}");
    assert!(all.contains(&id), "{all}");
    leaks("GET requests", &all);

    // The event log and the case row, in the database and as every role reads them.
    leaks("the case log", &case_log(&site, &id));
    let case_uri = format!("/api/v1/cases/{id}");
    for token in [VIEWER_TOKEN, EPB_TOKEN, OTHER_APP_TOKEN] {
        let (s, v) = api_call(api, "GET", &case_uri, Some(token), None);
        if token == OTHER_APP_TOKEN {
            assert_eq!(s, 403, "another app's case: {v}");
            continue;
        }
        assert_eq!(s, 200, "{token}: {v}");
        assert_eq!(
            v["case"]["title"],
            "厨房油烟很大 smoke every night, call [phone]"
        );
        assert!(v.get("contact").is_none(), "{token}: {v}");
        leaks(token, &v.to_string());
    }
    // Operators and the app that filed it read the text as sent, with the contact details.
    for token in [OPERATOR_TOKEN, APP_TOKEN] {
        let (s, v) = api_call(api, "GET", &case_uri, Some(token), None);
        assert_eq!(s, 200, "{token}: {v}");
        assert_eq!(v["contact"]["description"], sent, "{token}: {v}");
        leaks(token, &v["events"].to_string());
    }
    for secret in secrets {
        assert!(
            !in_files(&site, secret).is_empty(),
            "{secret} is kept with the contact before erasure"
        );
    }

    // Erased on request: nobody reads it, and it has left the files.
    let (s, v) = api_call(
        api,
        "DELETE",
        &format!("/api/v1/cases/{id}/contact"),
        Some(OPERATOR_TOKEN),
        None,
    );
    assert_eq!((s, &v["erased"]), (200, &Value::Bool(true)), "{v}");
    for token in [OPERATOR_TOKEN, APP_TOKEN, VIEWER_TOKEN, EPB_TOKEN] {
        let (s, v) = api_call(api, "GET", &case_uri, Some(token), None);
        assert_eq!(s, 200, "{token}: {v}");
        leaks(token, &v.to_string());
    }
    for secret in secrets {
        let hits = in_files(&site, secret);
        assert!(hits.is_empty(), "{secret} still in {hits:?}");
    }
    // Nor did the logs repeat it.
    agg.term();
    let (_, stderr) = agg.wait_exit(Duration::from_secs(20));
    leaks(
        "the aggregator's log",
        &(agg.stdout_lines().join("\n") + &stderr),
    );
}
