//! Open311 against a real aggregator process over real sockets (curl as the citizen app):
//! what a citizen writes into a request reaches the public only without their personal data;
//! a photo sent with a request joins its case and reaches the department's webhook.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};

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

/// `POST /open311/v2/requests.json` as multipart/form-data (curl `-F`; `media` a file path,
/// optionally `;type=...`): (status, JSON).
fn file_multipart(api: u16, fields: &[(&str, &str)], media: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "20", "-w", "\n%{http_code}"]);
    for (k, v) in fields {
        cmd.args(["--form-string", &format!("{k}={v}")]);
    }
    if let Some(m) = media {
        cmd.args(["-F", &format!("media=@{m}")]);
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

/// `POST /open311/v2/requests.json` with `body` as sent and this `Content-Type`: (status, JSON).
fn post_raw(api: u16, content_type: &str, body: &[u8], dir: &std::path::Path) -> (u16, Value) {
    let file = dir.join("raw-body");
    std::fs::write(&file, body).expect("raw body");
    let out = Command::new("curl")
        .args(["-s", "-m", "20", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Content-Type: {content_type}"))
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://127.0.0.1:{api}/open311/v2/requests.json"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// `GET` of a URL with curl: (status, content type, body bytes).
fn fetch(url: &str, token: Option<&str>, dir: &std::path::Path) -> (u16, String, Vec<u8>) {
    let out_file = dir.join("fetched");
    let _ = std::fs::remove_file(&out_file);
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "10", "-o"])
        .arg(&out_file)
        .args(["-w", "%{http_code} %{content_type}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, ct) = text.split_once(' ').unwrap_or((&text, ""));
    (
        code.parse().unwrap_or(0),
        ct.to_string(),
        std::fs::read(&out_file).unwrap_or_default(),
    )
}

const HOOK_SECRET: &str = "epb-webhook-secret-for-e2e";

/// A minimal HTTP/1.1 webhook receiver on `listener`: keeps each POST body whose
/// `X-Fumegrid-Signature` is the HMAC-SHA256 of the body under [`HOOK_SECRET`] (the scheme is
/// unchanged by the pictures in it), answers 204.
fn receiver(listener: TcpListener, got: Arc<Mutex<Vec<Value>>>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let (mut len, mut signature) = (0usize, String::new());
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => len = v.trim().parse().unwrap_or(0),
                        "x-fumegrid-signature" => signature = v.trim().to_string(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).expect("hmac key");
            mac.update(&body);
            let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            if signature == want
                && let Ok(v) = serde_json::from_slice(&body)
            {
                got.lock().expect("lock").push(v);
            }
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
}

/// Issue 13: a citizen app sends a photo with its request (multipart/form-data, the file as
/// `media`). Bad photos and broken bodies are refused with a 400 naming the problem, nothing
/// filed, the daemon serving on; a good one is stored content-addressed with the new case,
/// shown back as `media_url` (absolute under `[api] public_url`), readable by whoever may read
/// the case, and the department's signed webhook carries links to it that resolve.
#[test]
fn a_photo_sent_with_a_request_joins_its_case_and_reaches_the_department() {
    let site = Site::new("o311-media");
    let hook_port = free_port();
    site.epb_webhook(hook_port, HOOK_SECRET, |c| c);
    let cfg = site.embedded_with(
        "[cases]\ncatalogue = \"catalogue.toml\"\nwebhook_secrets_file = \"webhooks.toml\"\n\
         [evidence]\nmax_upload_bytes = 4096\n",
    );
    let api = site.api;
    let public = format!("http://127.0.0.1:{api}");
    let text = std::fs::read_to_string(&cfg).expect("config").replacen(
        "[api]\n",
        &format!("[api]\npublic_url = \"{public}/\"\n"),
        1,
    );
    std::fs::write(&cfg, text).expect("config");
    reporter_tokens(&site);
    let hooks = Arc::new(Mutex::new(Vec::new()));
    receiver(
        TcpListener::bind(("127.0.0.1", hook_port)).expect("bind receiver"),
        hooks.clone(),
    );
    let agg = site.aggregator(&cfg);

    let photo = root().join("fuzz/seeds/picture/smpte-32x24.jpg");
    let bytes = std::fs::read(&photo).expect("test picture");
    let sha = hex::encode(Sha256::digest(&bytes));
    let fields = [
        ("api_key", APP_TOKEN),
        ("service_code", "complaint"),
        ("description", "Black smoke from the grill, see the photo"),
        ("address_string", "12 Xinhua Road"),
    ];
    let count = || {
        let (s, v) = api_call(api, "GET", "/api/v1/cases", Some(OPERATOR_TOKEN), None);
        assert_eq!(s, 200, "{v}");
        v["total"].as_u64().expect("total")
    };

    // Refused before anything is filed, each with a 400 that names the problem.
    let pdf = site.dir.join("scan.jpg");
    std::fs::write(
        &pdf,
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
    )
    .expect("pdf");
    let mut big = bytes.clone();
    big.resize(5000, 0);
    let big_file = site.dir.join("big.jpg");
    std::fs::write(&big_file, &big).expect("big file");
    let declared_png = format!("{};type=image/png", photo.display());
    let photo_path = photo.display().to_string();
    for (media, extra, want) in [
        (Some(pdf.display().to_string()), None, "not a JPEG or PNG"),
        (Some(declared_png), None, "declared `image/png`"),
        (
            Some(big_file.display().to_string()),
            None,
            "over 4096 bytes",
        ),
        (
            Some(photo_path.clone()),
            Some(("media_url", "https://img.example.cn/p.jpg")),
            "not both",
        ),
        (
            None,
            Some(("media_url", "file:///etc/passwd")),
            "`media_url`",
        ),
    ] {
        let mut f = fields.to_vec();
        f.extend(extra);
        let (s, v) = file_multipart(api, &f, media.as_deref());
        assert_eq!(s, 400, "{media:?} {extra:?}: {v}");
        assert_eq!(v[0]["code"], 400, "Open311's error shape: {v}");
        let d = v[0]["description"].as_str().unwrap_or("");
        assert!(d.contains(want), "{media:?}: {d}");
    }
    assert!(
        file_multipart(api, &fields, Some(&pdf.display().to_string())).1[0]["description"]
            .as_str()
            .unwrap_or("")
            .contains("%PDF-1.4"),
        "the refusal says what the bytes are"
    );
    // Broken bodies: no boundary, truncated before the closing boundary, an announced length
    // far over the limit.
    let head = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"api_key\"\r\n\r\n{APP_TOKEN}\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"media\"; filename=\"p.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    );
    let mut truncated = head.into_bytes();
    truncated.extend_from_slice(&bytes[..bytes.len() / 2]);
    for (ct, body, want) in [
        ("multipart/form-data", truncated.clone(), "boundary"),
        ("multipart/form-data; boundary=XyZ", truncated, "truncated"),
        (
            "multipart/form-data; boundary=XyZ",
            vec![b'x'; 200_000],
            "at most",
        ),
    ] {
        let (s, v) = post_raw(api, ct, &body, site.dir.path());
        assert_eq!(s, 400, "{ct}: {v}");
        let d = v[0]["description"].as_str().unwrap_or("");
        assert!(d.contains(want), "{ct}: {d}");
    }
    assert_eq!(count(), 0, "nothing filed by a refused request");
    assert_eq!(
        http_get(&format!("{public}/healthz"), None).0,
        200,
        "still serving"
    );

    // Filed with its photo.
    let (s, v) = file_multipart(api, &fields, Some(&photo_path));
    assert_eq!(s, 201, "{v}");
    let id = v[0]["service_request_id"].as_str().expect("id").to_string();
    let (s, one) = http_get(&format!("{public}/open311/v2/requests/{id}.json"), None);
    assert_eq!(s, 200, "{one}");
    let one: Value = serde_json::from_str(&one).expect("json");
    let link = format!("{public}/api/v1/evidence/{sha}/view");
    assert_eq!(one[0]["media_url"], link.as_str(), "{one}");

    // The case holds it, as sent; who may read the case sees it, nobody else.
    let (s, ev) = api_call(
        api,
        "GET",
        &format!("/api/v1/cases/{id}/evidence"),
        Some(OPERATOR_TOKEN),
        None,
    );
    assert_eq!(s, 200, "{ev}");
    let pic = &ev["evidence"][0];
    assert_eq!(
        (&pic["sha256"], &pic["source"], &pic["size"]),
        (
            &Value::from(sha.as_str()),
            &Value::from("upload"),
            &Value::from(bytes.len())
        ),
        "{ev}"
    );
    let (s, ct, original) = fetch(
        &format!("{public}/api/v1/evidence/{sha}/original"),
        Some(APP_TOKEN),
        site.dir.path(),
    );
    assert_eq!((s, ct.as_str()), (200, "image/jpeg"));
    assert_eq!(
        hex::encode(Sha256::digest(&original)),
        sha,
        "the original comes back as sent"
    );
    let (s, ct, view) = fetch(&link, Some(APP_TOKEN), site.dir.path());
    assert_eq!((s, ct.as_str()), (200, "image/jpeg"));
    assert!(view.starts_with(&[0xff, 0xd8]), "a JPEG view");
    assert_eq!(fetch(&link, Some(OTHER_APP_TOKEN), site.dir.path()).0, 403);
    assert_eq!(fetch(&link, None, site.dir.path()).0, 401);

    // Dispatched to the environmental department: its webhook carries the picture's links,
    // which its token opens.
    for body in [
        r#"{"action":"register"}"#,
        r#"{"action":"dispatch","department":"epb"}"#,
    ] {
        let tr = format!("/api/v1/cases/{id}/transitions");
        let (s, v) = api_call(api, "POST", &tr, Some(OPERATOR_TOKEN), Some(body));
        assert_eq!(s, 200, "{body}: {v}");
    }
    let hook = wait_until("the dispatch webhook", Duration::from_secs(30), || {
        hooks
            .lock()
            .expect("lock")
            .iter()
            .find(|h| h["event"]["kind"] == "dispatched" && h["case"]["id"] == id.as_str())
            .cloned()
    });
    let pics = hook["evidence"]
        .as_array()
        .expect("evidence in the webhook");
    assert_eq!(pics.len(), 1, "{hook}");
    assert_eq!(pics[0]["sha256"], sha.as_str());
    assert_eq!(pics[0]["source"], "upload");
    assert!(pics[0]["captured_at"].as_str().is_some(), "{hook}");
    assert_eq!(pics[0]["links"]["view"], link.as_str(), "{hook}");
    for tail in ["view", "thumb", "original"] {
        let url = pics[0]["links"][tail].as_str().expect("link");
        let (s, ct, b) = fetch(url, Some(EPB_TOKEN), site.dir.path());
        assert_eq!((s, ct.as_str()), (200, "image/jpeg"), "{tail}");
        if tail == "original" {
            assert_eq!(b, bytes, "the department gets the bytes as sent");
        }
    }
    drop(agg);
}
