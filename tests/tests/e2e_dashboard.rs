//! The dashboard in a real browser (Debian's headless Chromium) against a running aggregator
//! with data: a simulated monitor over the limit and one whose purifier is off while its fan
//! runs, judged by a real gateway with short windows, so two cases open. After the page has
//! run its script, its DOM lists the open cases (id, site, category, department, state,
//! deadline, overdue) and shows the purifier warning on that device's tile. A case's panel
//! shows its timeline, with the pictures of its episode (a simulated HTTP camera bound to the
//! device), "take a picture now" and a handler's photo, each only for the roles that may.
//!
//! Set `FUMEGRID_DASHBOARD_SCREENSHOT=/some/file.png` to also keep a screenshot of the page.
// Every index sliced here comes from `find`/`rfind` on the same string, so it is a character
// boundary.
#![allow(clippy::string_slice)]

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fumegrid_tests::site::*;
use fumegrid_tests::*;
use serde_json::Value;

const SPEED: f64 = 60.0;
/// Short windows so both alarms are raised within seconds (as in e2e_cases).
const RULES: &str = "[rules]\nstandard = \"gb18483_2001\"\nwindow_s = 6\neval_every_s = 1\nraise_after = 3\nclear_after = 4\n\
    min_samples = 3\npurifier_idle_after_s = 6\noffline_after_s = 30\nupdate_every_s = 5\n";

fn chromium() -> &'static str {
    let ok = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "chromium missing: run scripts/install-test-deps.sh (Debian's chromium and fonts-wqy-zenhei)"
    );
    "chromium"
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom` or `--screenshot=…`) after
/// `budget_ms` of virtual time; returns its stdout. Bounded: killed after 90 s.
fn headless(dir: &TempDir, url: &str, mode: &str, budget_ms: u32) -> String {
    let profile = dir.join(&format!("chromium-profile-{}", mode.len()));
    let out_path = dir.join("chromium.out");
    let out = File::create(&out_path).expect("out file");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1600,1300",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(mode)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = fumegrid_tests::now() + Duration::from_secs(90);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if fumegrid_tests::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within 90 s ({mode} {url})");
            }
        }
    }
    std::fs::read_to_string(&out_path).unwrap_or_default()
}

/// Headless Chromium driven over the Chrome DevTools Protocol (JSON over a websocket to its
/// `--remote-debugging-port`, tungstenite as the client): the page runs for real, and the test
/// evaluates script in it, waits on what it shows and hands files to its file inputs, as a user
/// would click and choose them.
struct Browser {
    child: std::process::Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next: u64,
}

impl Browser {
    fn open(dir: &TempDir, url: &str) -> Browser {
        let port = free_port();
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1600,1300",
            ])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!(
                "--user-data-dir={}",
                dir.join(&format!("chromium-cdp-{port}")).display()
            ))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let ws_url = wait_until("chromium's DevTools page", Duration::from_secs(30), || {
            let (s, body) = http_get(&format!("http://127.0.0.1:{port}/json/list"), None);
            let list: Value = serde_json::from_str(&body).ok().filter(|_| s == 200)?;
            list.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(str::to_string)
        });
        let (ws, _) = tungstenite::connect(ws_url.as_str()).expect("DevTools websocket");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
        }
        Browser { child, ws, next: 0 }
    }

    /// One CDP command; its `result` (events arriving meanwhile are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send to chromium");
        loop {
            let m = self.ws.read().expect("read from chromium");
            let Ok(text) = m.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise); its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is truthy in the page; its value.
    fn wait(&mut self, what: &str, expr: &str, limit: Duration) -> Value {
        wait_until(what, limit, || {
            let v = self.eval(expr);
            let truthy = !matches!(&v, Value::Null | Value::Bool(false))
                && v.as_f64() != Some(0.0)
                && v.as_str() != Some("");
            truthy.then_some(v)
        })
    }

    /// Chooses `path` in the file input `selector`, as a user picking the file would.
    fn choose_file(&mut self, selector: &str, path: &Path) {
        let doc = self.call("DOM.getDocument", serde_json::json!({}));
        let node = self.call(
            "DOM.querySelector",
            serde_json::json!({"nodeId": doc["root"]["nodeId"], "selector": selector}),
        );
        self.call(
            "DOM.setFileInputFiles",
            serde_json::json!({"nodeId": node["nodeId"], "files": [path.display().to_string()]}),
        );
    }
}

/// Signs in on the dashboard's form with `token` (it asks, the API being locked).
fn sign_in(b: &mut Browser, token: &str) {
    b.wait(
        "the sign-in form",
        "location.protocol === 'http:' && document.readyState === 'complete' \
         && !document.getElementById('signin').hidden",
        Duration::from_secs(30),
    );
    b.eval(&format!(
        "document.getElementById('token').value = {token:?}; \
         document.getElementById('signin-form').requestSubmit(); true"
    ));
    b.wait(
        "signed in",
        "document.getElementById('signin').hidden",
        Duration::from_secs(30),
    );
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn latest(devices: &Value, device: &str, metric: &str) -> Option<f64> {
    devices["devices"]
        .as_array()?
        .iter()
        .find(|d| d["device"] == device)?["latest"]
        .as_array()?
        .iter()
        .find(|l| l["metric"] == metric)?["value"]
        .as_f64()
}

/// The text of the element that starts at the first `<{tag} ` holding `marker` before its `>`.
fn element_with<'a>(dom: &'a str, tag: &str, marker: &str) -> Option<&'a str> {
    let at = dom.find(marker)?;
    let start = dom[..at].rfind(&format!("<{tag} "))?;
    let end = dom[start..].find(&format!("</{tag}>"))? + start;
    Some(&dom[start..end])
}

#[test]
fn e2e_dashboard_in_chromium_lists_open_cases_and_warns_of_an_idle_purifier() {
    let site = Site::new("dashboard");
    let config = site.dir.join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "[aggregator]\nid = \"agg-dash\"\n[store]\npath = \"agg.sqlite3\"\n\
             [api]\nlisten = \"127.0.0.1:{}\"\nanonymous = \"viewer\"\n\
             [broker]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{}\"\ncredentials_file = \"users.toml\"\n\
             [[gateways]]\nid = \"{GW}\"\nkey = \"{KEY}\"\nsite = \"Dashboard street 东四\"\n",
            site.api, site.mqtt
        ),
    )
    .expect("aggregator config");
    let _agg = site.aggregator(&config);

    let base = consecutive_free_ports(2);
    let profile = root().join("device-profiles/tb-compatible.toml");
    let _sims: Vec<Proc> = ["exceedance", "purifier_off"]
        .iter()
        .enumerate()
        .map(|(i, scenario)| {
            sim(&[
                "monitor",
                "--tcp",
                &format!("127.0.0.1:{}", base + i as u16),
                "--profile",
                profile.to_str().expect("path"),
                "--scenario",
                scenario,
                "--speed",
                &SPEED.to_string(),
                "--duration",
                "600",
            ])
        })
        .collect();
    let gw_config = site.gateway_config(site.mqtt, base, 2, 500, 1000);
    let mut text = std::fs::read_to_string(&gw_config).expect("gateway config");
    text.push_str(RULES);
    std::fs::write(&gw_config, text).expect("gateway config");
    let _gw = site.gateway(&gw_config);

    // m00 goes over the limit, m01's purifier is off while its fan runs: two cases.
    let get = |path: &str| {
        let (s, v) = api_call(site.api, "GET", path, None, None);
        (s == 200).then_some(v)
    };
    let cases = wait_until("two dispatched cases", Duration::from_secs(120), || {
        let v = get("/api/v1/cases?state=dispatched")?;
        let c = v["cases"].as_array()?.clone();
        (c.len() == 2).then_some(c)
    });
    wait_until("m01: fan on, purifier off", Duration::from_secs(30), || {
        let d = get("/api/v1/devices")?;
        (latest(&d, "m01", "fan_on") == Some(1.0) && latest(&d, "m01", "purifier_on") == Some(0.0))
            .then_some(())
    });

    let url = format!("http://127.0.0.1:{}/dashboard/", site.api);
    let dom = headless(&site.dir, &url, "--dump-dom", 8000);
    assert!(
        dom.contains("id=\"open-cases\""),
        "no open-cases table:\n{dom}"
    );

    // Every open case is a row with its id, site, category, department, state and deadline.
    for c in &cases {
        let id = c["id"].as_str().expect("case id");
        let row = element_with(&dom, "tr", &format!("data-case=\"{id}\""))
            .unwrap_or_else(|| panic!("no row for case {id} in the open-cases list:\n{dom}"));
        assert!(row.contains("data-state=\"dispatched\""), "{row}");
        assert!(row.contains("data-overdue=\"false\""), "{row}");
        assert!(row.contains("Dashboard street 东四"), "site: {row}");
        assert!(row.contains("Dispatched"), "state: {row}");
        assert!(row.contains("sign for by"), "deadline: {row}");
        let (category, department) = match c["category"].as_str() {
            Some("exceedance") => (
                "Oil-fume emission over the limit",
                "Environmental Protection Bureau",
            ),
            Some("purifier_idle") => ("Purifier installed but not running", "Urban Management"),
            other => panic!("unexpected category {other:?}"),
        };
        assert!(row.contains(category), "category: {row}");
        assert!(row.contains(department), "department: {row}");
    }

    // The purifier warning sits on m01's tile, and only there.
    assert_eq!(
        dom.matches("data-warning=\"purifier_off\"").count(),
        1,
        "one purifier warning expected:\n{dom}"
    );
    let warn_at = dom.find("data-warning=\"purifier_off\"").expect("warning");
    let tile_start = dom[..warn_at].rfind("class=\"dev ").expect("tile");
    let tile = &dom[tile_start..warn_at];
    assert!(
        tile.contains(">m01<"),
        "the warning is not on m01's tile: {tile}"
    );
    assert!(dom[warn_at..].contains("Purifier off while the fan runs"));
    // Every tile draws its last hour of fume (the aggregator's 1-minute rollups).
    let tiles: Vec<&str> = dom.split("class=\"dev ").skip(1).collect();
    assert!(tiles.len() >= 2, "{dom}");
    for t in tiles {
        assert!(
            t.contains("<polyline class=\"line\""),
            "a tile without its fume line: {t}"
        );
    }

    if let Some(shot) = std::env::var_os("FUMEGRID_DASHBOARD_SCREENSHOT") {
        let shot = Path::new(&shot);
        headless(
            &site.dir,
            &url,
            &format!("--screenshot={}", shot.display()),
            8000,
        );
        assert!(shot.exists(), "no screenshot at {}", shot.display());
    }
}

/// A case opened from the dashboard (a click on its row of the open cases, or a `#case=` link)
/// shows its details and its timeline, which follows the case as it moves.
#[test]
fn e2e_dashboard_opens_a_case_with_its_timeline() {
    let site = Site::new("dashboard-case");
    let config = site.embedded();
    let _agg = site.aggregator(&config);
    let (s, v) = api_call(
        site.api,
        "POST",
        "/api/v1/cases",
        Some(OPERATOR_TOKEN),
        Some(r#"{"category":"complaint","title":"smoke behind the market","note":"first look"}"#),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["case"]["id"].as_str().expect("id").to_string();
    let url = format!("http://127.0.0.1:{}/dashboard/", site.api);
    let mut b = Browser::open(&site.dir, &url);
    sign_in(&mut b, VIEWER_TOKEN);
    let row = format!("#open-cases tr[data-case='{id}']");
    b.wait(
        "the case's row",
        &format!("!!document.querySelector({row:?})"),
        Duration::from_secs(30),
    );
    b.eval(&format!("document.querySelector({row:?}).click(), true"));
    let events = "[...document.querySelectorAll('#timeline li[data-event]')]\
                  .map(li => li.dataset.event).join(',')";
    let kinds = b.wait("the case's timeline", events, Duration::from_secs(30));
    assert_eq!(kinds, "reported");
    let panel = b.eval(
        "[location.hash, document.getElementById('case-id').textContent, \
          document.getElementById('case-head').textContent, \
          document.getElementById('timeline').textContent]",
    );
    assert_eq!(panel[0], format!("#case={id}").as_str(), "{panel}");
    assert_eq!(panel[1], id.as_str(), "{panel}");
    assert!(
        panel[2]
            .as_str()
            .unwrap_or("")
            .contains("smoke behind the market"),
        "{panel}"
    );
    assert!(
        panel[3].as_str().unwrap_or("").contains("first look"),
        "{panel}"
    );

    // The case moves; the open panel follows within a refresh.
    let (s, v) = api_call(
        site.api,
        "POST",
        &format!("/api/v1/cases/{id}/transitions"),
        Some(OPERATOR_TOKEN),
        Some(r#"{"action":"register","note":"ours"}"#),
    );
    assert_eq!(s, 200, "{v}");
    b.wait(
        "the registration in the timeline",
        &format!("({events}) === 'reported,registered'"),
        Duration::from_secs(30),
    );
    // Closed, the panel is gone and so is the link.
    b.eval("document.getElementById('case-close').click(), true");
    let closed = b.eval("[document.getElementById('case-panel').hidden, location.hash]");
    assert_eq!(closed, serde_json::json!([true, ""]));
}

/// The picture-related state of the open case panel: the snapshot button and the handling
/// form visible or not (as rendered: a `hidden` attribute that CSS overrides still shows), and
/// the message line.
const BUTTONS: &str = "[document.getElementById('snapshot').checkVisibility(), \
     document.getElementById('handle-form').checkVisibility(), \
     document.getElementById('case-msg').textContent]";

/// Waits until the picture `sha` is in the open case's timeline, its image decoded in the page
/// from a `blob:` URL; its decoded `[width, height]` and the text of its timeline entry.
fn wait_thumbnail(b: &mut Browser, sha: &str, what: &str) -> Value {
    let fig = format!("#timeline figure.pic[data-sha='{sha}']");
    b.wait(
        what,
        &format!(
            "(() => {{ const f = document.querySelector({fig:?}); const i = f && f.querySelector('img'); \
             return i && i.dataset.loaded === 'true' && i.complete && i.src.startsWith('blob:') \
             ? [i.naturalWidth, i.naturalHeight, f.closest('li').textContent] : null; }})()"
        ),
        Duration::from_secs(60),
    )
}

/// Issue 13 in the browser: an exceedance at a monitor with a simulated HTTP camera, judged by
/// a real gateway that photographs the device on raise, opens a case whose panel shows the
/// alarm's picture as a thumbnail (decoded in the page: the 640×480 picture's 320×240 thumb);
/// a click shows the captioned view (taller than the picture: the caption band) with the
/// camera, trigger and SHA-256. The operator's "take a picture now" brings a `request` picture
/// into the timeline. A viewer sees the pictures without the buttons; another department sees
/// neither. The department, once it has accepted the case, marks it handled with a photo chosen
/// in the page: uploaded (type sniffed by the server), shown as the handler's photo.
#[test]
fn e2e_dashboard_case_pictures_snapshot_and_a_handlers_photo() {
    let site = Site::new("dashboard-evidence");
    let config = site.embedded();
    let _agg = site.aggregator(&config);

    let (_sim, _gw) = site.monitor_with_camera("exceedance", SPEED, 500, RULES, "kitchen-1");

    let get = |path: &str| {
        let (s, v) = api_call(site.api, "GET", path, Some(OPERATOR_TOKEN), None);
        (s == 200).then_some(v)
    };
    let id = wait_until("the exceedance case", Duration::from_secs(120), || {
        let v = get("/api/v1/cases?device=m00")?;
        v["cases"][0]["id"].as_str().map(str::to_string)
    });
    let evidence = format!("/api/v1/cases/{id}/evidence");
    let stored = |trigger: &str| {
        let v = get(&evidence)?;
        v["evidence"]
            .as_array()?
            .iter()
            .find(|p| p["state"] == "stored" && p["trigger"] == trigger)
            .cloned()
    };
    let first = wait_until(
        "the alarm's picture, stored",
        Duration::from_secs(60),
        || stored("alarm_raised"),
    );
    assert_eq!(
        (&first["width"], &first["height"]),
        (&Value::from(640), &Value::from(480))
    );
    let sha = first["sha256"].as_str().expect("sha").to_string();

    // The operator's dashboard: the case's timeline with the picture's thumbnail, decoded.
    let url = format!("http://127.0.0.1:{}/dashboard/#case={id}", site.api);
    let mut b = Browser::open(&site.dir, &url);
    sign_in(&mut b, OPERATOR_TOKEN);
    let thumb = wait_thumbnail(&mut b, &sha, "the alarm's thumbnail in the timeline");
    assert_eq!(
        (&thumb[0], &thumb[1]),
        (&Value::from(320), &Value::from(240)),
        "{thumb}"
    );
    let entry = thumb[2].as_str().unwrap_or("");
    assert!(
        entry.contains("kitchen-1") && entry.contains("alarm raised"),
        "{thumb}"
    );
    // Clicking it shows the captioned view: the whole picture with its caption band, and its
    // chain of custody (camera, trigger, the full SHA-256).
    b.eval(&format!(
        "document.querySelector(\"#timeline figure.pic[data-sha='{sha}'] button\").click(), true"
    ));
    let view = b.wait(
        "the captioned view",
        "(() => { const i = document.getElementById('lightbox-img'); \
         return !document.getElementById('lightbox').hidden && i.dataset.loaded === 'true' \
         ? [i.naturalWidth, i.naturalHeight, document.getElementById('lightbox').dataset.sha, \
            document.getElementById('lightbox-cap').textContent] : null; })()",
        Duration::from_secs(30),
    );
    assert_eq!(view[2], sha.as_str(), "{view}");
    assert_eq!(view[0], 640, "the view is the whole picture: {view}");
    assert!(
        view[1].as_u64().unwrap_or(0) > 480,
        "with a caption band: {view}"
    );
    let caption = view[3].as_str().unwrap_or("");
    for part in ["kitchen-1", "alarm raised", "m00", sha.as_str()] {
        assert!(caption.contains(part), "{part} missing: {view}");
    }
    b.eval("document.getElementById('lightbox-close').click(), true");
    let state = b.wait("the operator's buttons", BUTTONS, Duration::from_secs(10));
    assert_eq!(state[0], true, "an operator may ask for a picture: {state}");
    assert_eq!(
        state[1], false,
        "only the department marks it handled: {state}"
    );

    // "Take a picture now": a sealed command to the gateway; its picture joins the timeline.
    b.eval("document.getElementById('snapshot').click(), true");
    let msg = b.wait(
        "the snapshot answer",
        "document.getElementById('case-msg').textContent",
        Duration::from_secs(20),
    );
    assert!(
        msg.as_str()
            .unwrap_or("")
            .starts_with("Asked the gateway for a picture"),
        "{msg}"
    );
    let requested = wait_until("the requested picture", Duration::from_secs(60), || {
        stored("request")
    });
    let rsha = requested["sha256"].as_str().expect("sha").to_string();
    let thumb = wait_thumbnail(&mut b, &rsha, "the requested picture in the timeline");
    assert_eq!(
        (&thumb[0], &thumb[1]),
        (&Value::from(320), &Value::from(240)),
        "{thumb}"
    );
    assert!(
        thumb[2].as_str().unwrap_or("").contains("on request"),
        "{thumb}"
    );
    let asked = b.eval(
        "[...document.querySelectorAll('#timeline li[data-request]')].map(li => li.textContent).join('|')",
    );
    assert!(asked.as_str().unwrap_or("").contains("answered"), "{asked}");
    drop(b);

    // A viewer sees the pictures and none of the buttons.
    let mut b = Browser::open(&site.dir, &url);
    sign_in(&mut b, VIEWER_TOKEN);
    wait_thumbnail(&mut b, &sha, "the viewer's thumbnail");
    assert_eq!(
        b.eval(BUTTONS),
        serde_json::json!([false, false, ""]),
        "a viewer has no buttons"
    );
    drop(b);
    // Another department does not see the case at all.
    let mut b = Browser::open(&site.dir, &url);
    sign_in(&mut b, URBAN_TOKEN);
    let state = b.wait(
        "the other department's refusal",
        &format!(
            "(() => {{ const s = {BUTTONS}; return s[2].includes('may not see') ? s : null; }})()"
        ),
        Duration::from_secs(30),
    );
    assert_eq!(
        (&state[0], &state[1]),
        (&Value::Bool(false), &Value::Bool(false)),
        "{state}"
    );
    assert!(
        state[2].as_str().unwrap_or("").contains("may not see"),
        "{state}"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#timeline figure').length"),
        0
    );
    drop(b);

    // The department accepts the case, then marks it handled with a photo from the page.
    let (s, v) = api_call(
        site.api,
        "POST",
        &format!("/api/v1/cases/{id}/transitions"),
        Some(EPB_TOKEN),
        Some(r#"{"action":"accept"}"#),
    );
    assert_eq!(s, 200, "{v}");
    let mut b = Browser::open(&site.dir, &url);
    sign_in(&mut b, EPB_TOKEN);
    let state = b.wait(
        "the handling form",
        &format!("(() => {{ const s = {BUTTONS}; return s[1] ? s : null; }})()"),
        Duration::from_secs(30),
    );
    assert_eq!(
        state[0], true,
        "the case's department may ask for a picture: {state}"
    );
    // The browser reads the file it is handed by its canonical path.
    let photo = root()
        .join("picture/tests/data/smpte-320x240.jpg")
        .canonicalize()
        .expect("photo");
    let photo_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&photo).expect("photo"),
    ));
    b.choose_file("#handle-photo", &photo);
    b.eval(
        "document.getElementById('handle-note').value = 'hood cleaned, filter replaced'; \
         document.getElementById('handle-form').requestSubmit(); true",
    );
    let msg = b.wait(
        "marked handled",
        "(() => { const t = document.getElementById('case-msg').textContent; \
         return t.startsWith('Marked') || t.startsWith('Not') || t.startsWith('The photo') ? t : ''; })()",
        Duration::from_secs(30),
    );
    assert!(
        msg.as_str()
            .unwrap_or("")
            .starts_with("Marked handled, with the photo."),
        "{msg}"
    );
    let d = get(&format!("/api/v1/cases/{id}")).expect("case");
    assert_eq!(d["case"]["state"], "handled", "{d}");
    let v = get(&evidence).expect("evidence");
    let upload = v["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .find(|p| p["source"] == "upload")
        .unwrap_or_else(|| panic!("no upload: {v}"))
        .clone();
    assert_eq!(upload["sha256"], photo_sha.as_str(), "{upload}");
    assert_eq!(upload["media"], "image/jpeg");
    assert_eq!(upload["uploaded_by"], "epb-duty", "{upload}");
    let thumb = wait_thumbnail(&mut b, &photo_sha, "the handler's photo in the timeline");
    assert_eq!(
        (&thumb[0], &thumb[1]),
        (&Value::from(320), &Value::from(240)),
        "{thumb}"
    );
    assert!(
        thumb[2]
            .as_str()
            .is_some_and(|t| t.contains("Handler's photo") && t.contains("handler epb-duty")),
        "{thumb}"
    );
    // Handled: the form is gone.
    let state = b.wait(
        "the form gone",
        &format!("(() => {{ const s = {BUTTONS}; return s[1] ? null : s; }})()"),
        Duration::from_secs(30),
    );
    assert_eq!(state[1], false, "{state}");
}

/// The map view (issue 15): three sites with coordinates (one to the east, one to the north of
/// the first), an open exceedance alarm at the first and a drone's track, all arriving as one
/// sealed batch from the gateway's account (mosquitto_pub). In Chromium the page draws the
/// sites where their coordinates put them relative to each other (east is right, north is up,
/// distances to scale), the alarm site in the alarm colour and the others not, and the track.
#[test]
fn e2e_dashboard_map_draws_sites_to_scale_the_alarm_site_red_and_a_drone_track() {
    use fumegrid_common::metric::Metric;
    use fumegrid_common::wire::{
        self, Alarm, AlarmKind, AlarmPhase, Batch, Body, Item, Track, TrackPoint,
    };
    let site = Site::new("dashboard-map");
    // `lat`/`lon` follow the site's own [[gateways]] entry, then two more sites.
    let config = site.embedded_with(
        "site = \"West street\"\nlat = 22.9000\nlon = 113.7000\n\
         [[gateways]]\nid = \"gw-east\"\nkey = \"00112233445566778899aabbccddeeff\"\nsite = \"East market\"\n\
         lat = 22.9000\nlon = 113.7100\n\
         [[gateways]]\nid = \"gw-north\"\nkey = \"00112233445566778899aabbccddeeff\"\nsite = \"North lane\"\n\
         lat = 22.9080\nlon = 113.7000\n",
    );
    let _agg = site.aggregator(&config);
    let t = fumegrid_common::clock::Clock::system().now_ms();
    let alarm = Alarm {
        id: format!("hood-1:exceedance:fume_mg_m3:{}", t - 60_000),
        device: "hood-1".into(),
        kind: AlarmKind::Exceedance,
        metric: Some(Metric::FumeMgM3),
        phase: AlarmPhase::Raised,
        started_ms: t - 60_000,
        ts_ms: t - 1000,
        cleared_ms: None,
        value: Some(3.1),
        peak: Some(3.4),
        peak_ms: Some(t - 30_000),
        limit: Some(2.0),
        suppressed: false,
        message: "10-min average 3.1 mg/m³ over the 2.0 limit".into(),
    };
    let point = |i: i64, lat: f64, lon: f64| TrackPoint {
        ts_ms: t - 300_000 + i * 60_000,
        lat,
        lon,
        alt_m: 80.0,
        rel_alt_m: None,
        heading_deg: None,
        speed_m_s: None,
        battery_pct: None,
    };
    let track = Track {
        drone: "uav-1".into(),
        points: vec![
            point(0, 22.9010, 113.7020),
            point(1, 22.9030, 113.7050),
            point(2, 22.9050, 113.7080),
        ],
    };
    let batch = Batch {
        gateway: GW.into(),
        stream: "map-stream".into(),
        sent_ms: t,
        items: vec![
            Item {
                seq: 1,
                body: Body::Alarm(alarm),
            },
            Item {
                seq: 2,
                body: Body::Track(track),
            },
        ],
    };
    let key = fumegrid_common::keys::parse_key(KEY).expect("key");
    let file = site.dir.join("map-batch.json");
    std::fs::write(&file, wire::seal(&batch, &key)).expect("batch");
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &site.mqtt.to_string()])
        .args(["-u", GW, "-P", PASS, "-i", GW, "-q", "1"])
        .args(["-t", &format!("fumegrid/v1/{GW}/up"), "-f"])
        .arg(&file)
        .status()
        .expect("mosquitto_pub (scripts/install-test-deps.sh)");
    assert!(st.success());
    wait_until(
        "the alarm and the track on the map API",
        Duration::from_secs(30),
        || {
            let m = api_get(site.api, "/api/v1/map");
            let alarm = m["sites"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["gateway"] == GW))
                .is_some_and(|s| s["state"] == "alarm");
            let drone = m["drones"].as_array().is_some_and(|d| d.len() == 1);
            (alarm && drone).then_some(()).ok_or(m.to_string())
        },
    );

    let url = format!("http://127.0.0.1:{}/dashboard/", site.api);
    let mut b = Browser::open(&site.dir, &url);
    sign_in(&mut b, VIEWER_TOKEN);
    b.wait(
        "three sites and a track on the map",
        "document.querySelectorAll('#map .site-pin').length === 3 \
         && !!document.querySelector('#map .drone polyline')",
        Duration::from_secs(30),
    );
    // What the user sees: each site's dot centre on screen, its fill colour and state.
    let seen = b.eval(
        "Object.fromEntries([...document.querySelectorAll('#map .site-pin')].map(g => { \
           const dot = g.querySelector('.site-mark'); const r = dot.getBoundingClientRect(); \
           return [g.dataset.gateway, {x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width, \
             fill: getComputedStyle(dot).fill, state: g.dataset.state, \
             text: g.textContent}]; }))",
    );
    let at = |g: &str, k: &str| {
        seen[g][k]
            .as_f64()
            .unwrap_or_else(|| panic!("{g}.{k}: {seen}"))
    };
    let (wx, wy) = (at(GW, "x"), at(GW, "y"));
    let (ex, ey) = (at("gw-east", "x"), at("gw-east", "y"));
    let (nx, ny) = (at("gw-north", "x"), at("gw-north", "y"));
    assert!(at(GW, "w") > 5.0, "the dots are visible: {seen}");
    // East is to the right on the same line, north straight up.
    assert!(ex - wx > 100.0 && (ey - wy).abs() < 2.0, "{seen}");
    assert!(wy - ny > 100.0 && (nx - wx).abs() < 2.0, "{seen}");
    // To scale: 0.01° of longitude at 22.9° N is 1025.6 m, 0.008° of latitude 884.6 m.
    let ratio = (ex - wx) / (wy - ny);
    assert!(
        (ratio - 1025.6 / 884.6).abs() < 0.03,
        "east/north on screen {ratio}: {seen}"
    );
    // The alarm site in the alarm colour (#ef4e55), the others not; its label says so.
    assert_eq!(seen[GW]["fill"], "rgb(239, 78, 85)", "{seen}");
    assert_eq!(seen[GW]["state"], "alarm", "{seen}");
    assert!(
        seen[GW]["text"].as_str().unwrap_or("").contains("1 alarm"),
        "{seen}"
    );
    for g in ["gw-east", "gw-north"] {
        assert_ne!(seen[g]["fill"], "rgb(239, 78, 85)", "{seen}");
        assert_eq!(seen[g]["state"], "offline", "never connected: {seen}");
    }
    // The track: three points, drawn between the west site and the north-east, and visible.
    let track = b.eval(
        "(() => { const p = document.querySelector('#map .drone[data-drone=\"uav-1\"] polyline'); \
           const r = p.getBoundingClientRect(); \
           return {n: p.points.numberOfItems, x0: r.left, x1: r.right, y0: r.top, y1: r.bottom, \
             stroke: getComputedStyle(p).stroke}; })()",
    );
    assert_eq!(track["n"], 3, "{track}");
    let f = |k: &str| track[k].as_f64().unwrap_or(f64::NAN);
    assert!(
        f("x0") > wx && f("x1") < ex && f("y1") < wy && f("y0") > ny,
        "{track} {seen}"
    );
    assert_eq!(track["stroke"], "rgb(90, 169, 255)", "{track}");
    // A scale bar with a round length.
    let scale = b.eval("document.getElementById('map-scale').dataset.metres");
    assert!(
        ["100", "200", "500", "1000"].contains(&scale.as_str().unwrap_or("")),
        "{scale}"
    );
}

/// The map's cases and docks (issue 15): a site, an operator's case filed at a point 600 m east
/// of it, a citizen's Open311 request with `lat`/`long` 550 m north, and a DJI dock that
/// reported its own position (DJI's dock osd sample, published with the dock's login through
/// the embedded broker). In Chromium the cases are drawn where their points are relative to
/// the site, as diamonds (not the sites' dots) in their source's colour, and the dock as a
/// square, online, where its osd puts it.
#[test]
fn e2e_dashboard_map_draws_cases_at_their_points_and_the_dock() {
    const DOCK: &str = "4TADKAQ000002J";
    let site = Site::new("dashboard-map-points");
    std::fs::write(
        site.dir.join("docks.toml"),
        format!(
            "[[docks]]\nsn = \"{DOCK}\"\naircraft = [\"1581F5BKD225D00BP891\"]\n\
             username = \"dock-1\"\npassword = \"dock-1-password\"\n"
        ),
    )
    .expect("docks file");
    let config = site.embedded_with(
        "site = \"West street\"\nlat = 22.9000\nlon = 113.7000\n\
         [dji]\ndocks_file = \"docks.toml\"\nflush_interval_s = 1\n",
    );
    let _agg = site.aggregator(&config);
    let (st, v) = api_call(
        site.api,
        "POST",
        "/api/v1/cases",
        Some(OPERATOR_TOKEN),
        Some(
            r#"{"category":"exceedance","title":"smoke seen on the grid round","lat":22.9,"lon":113.706}"#,
        ),
    );
    assert_eq!(st, 201, "{v}");
    let inspector = v["case"]["id"].as_str().expect("id").to_string();
    let body = format!(
        r#"{{"api_key":"{OPERATOR_TOKEN}","service_code":"complaint","description":"oily smoke from a kitchen vent","lat":22.905,"long":113.7}}"#
    );
    let (st, v) = api_call(
        site.api,
        "POST",
        "/open311/v2/requests.json",
        None,
        Some(&body),
    );
    assert_eq!(st, 201, "{v}");
    let citizen = v[0]["service_request_id"].as_str().expect("id").to_string();
    let osd = site.dir.join("dock-osd.json");
    std::fs::copy(
        root().join("aggregator/tests/fixtures/dji/dock-osd.json"),
        &osd,
    )
    .expect("dock osd sample");
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &site.mqtt.to_string(), "-i", DOCK])
        .args(["-u", "dock-1", "-P", "dock-1-password", "-q", "1"])
        .args(["-t", &format!("thing/product/{DOCK}/osd"), "-f"])
        .arg(&osd)
        .status()
        .expect("mosquitto_pub (scripts/install-test-deps.sh)");
    assert!(st.success());
    wait_until(
        "the cases and the dock on the map API",
        Duration::from_secs(30),
        || {
            let m = api_get(site.api, "/api/v1/map");
            let cases = m["cases"].as_array().map_or(0, Vec::len);
            let dock = m["docks"][0]["online"] == true;
            (cases == 2 && dock).then_some(()).ok_or(m.to_string())
        },
    );

    let url = format!("http://127.0.0.1:{}/dashboard/", site.api);
    let mut b = Browser::open(&site.dir, &url);
    sign_in(&mut b, VIEWER_TOKEN);
    b.wait(
        "the site, two cases and the dock on the map",
        "document.querySelectorAll('#map .site-pin').length === 1 \
         && document.querySelectorAll('#map .case-pin').length === 2 \
         && document.querySelectorAll('#map .dock-pin').length === 1",
        Duration::from_secs(30),
    );
    // What the user sees: each mark's centre on screen, its shape and fill.
    let seen = b.eval(
        "Object.fromEntries([...document.querySelectorAll('#map .site-pin, #map .case-pin, #map .dock-pin')] \
           .map(g => { const m = g.querySelector('.site-mark, .case-mark, .dock-mark'); \
             const r = m.getBoundingClientRect(); \
             return [g.dataset.gateway || g.dataset.case || g.dataset.sn, {x: r.x + r.width / 2, \
               y: r.y + r.height / 2, w: r.width, shape: m.tagName, fill: getComputedStyle(m).fill, \
               source: g.dataset.source || null, online: g.dataset.online || null, \
               text: g.textContent}]; }))",
    );
    let at = |g: &str, k: &str| {
        seen[g][k]
            .as_f64()
            .unwrap_or_else(|| panic!("{g}.{k}: {seen}"))
    };
    let (sx, sy) = (at(GW, "x"), at(GW, "y"));
    let (ex, ey) = (at(&inspector, "x"), at(&inspector, "y"));
    let (nx, ny) = (at(&citizen, "x"), at(&citizen, "y"));
    let (dx, dy) = (at(DOCK, "x"), at(DOCK, "y"));
    // East of the site on its line, north straight above it; to scale (0.006° of longitude at
    // 22.9° N is 615.4 m, 0.005° of latitude 552.9 m).
    assert!(ex - sx > 50.0 && (ey - sy).abs() < 2.0, "{seen}");
    assert!(sy - ny > 50.0 && (nx - sx).abs() < 2.0, "{seen}");
    let ratio = (ex - sx) / (sy - ny);
    assert!(
        (ratio - 615.4 / 552.9).abs() < 0.03,
        "east/north {ratio}: {seen}"
    );
    // The dock (22.90781, 113.70348): north of the citizen's point, between the site and the
    // east case.
    assert!(dy < ny && dx > sx && dx < ex, "{seen}");
    assert_eq!(seen[DOCK]["shape"], "rect", "{seen}");
    assert_eq!(seen[DOCK]["online"], "true", "{seen}");
    assert!(
        seen[DOCK]["text"].as_str().unwrap_or("").contains(DOCK),
        "{seen}"
    );
    // Cases are diamonds, not the sites' dots, each in its source's colour.
    assert_eq!(seen[GW]["shape"], "circle", "{seen}");
    for (id, source, fill) in [
        (&inspector, "inspector", "rgb(46, 196, 182)"),
        (&citizen, "citizen", "rgb(197, 138, 249)"),
    ] {
        assert_eq!(seen[id]["shape"], "path", "{seen}");
        assert_eq!(seen[id]["source"], source, "{seen}");
        assert_eq!(seen[id]["fill"], fill, "{seen}");
        assert!(at(id, "w") > 5.0, "visible: {seen}");
    }
}

/// The dashboard's "Export CSV" form: a user picks a device and 10-minute averages, the page
/// fetches `export.csv` with the token and saves the file. What lands in the download folder is
/// byte for byte what the API answers for the same query (its BOM included), with the
/// device's rows.
#[test]
fn e2e_dashboard_exports_a_devices_averages_as_csv() {
    let site = Site::new("dashboard-export");
    let config = site.embedded();
    let _agg = site.aggregator(&config);
    let base = consecutive_free_ports(1);
    let profile = root().join("device-profiles/tb-compatible.toml");
    let _sim = sim(&[
        "monitor",
        "--tcp",
        &format!("127.0.0.1:{base}"),
        "--profile",
        profile.to_str().expect("path"),
        "--scenario",
        "normal",
        "--duration",
        "600",
    ]);
    let gw_config = site.gateway_config(site.mqtt, base, 1, 500, 1000);
    let mut gw = site.gateway(&gw_config);
    site.wait_growth(40, "the monitor's first polls");
    // Stop the gateway and let the last batch land, so the data no longer changes.
    gw.kill9();
    let mut last = (u64::MAX, 0, 0, 0);
    wait_until("the store to settle", Duration::from_secs(20), || {
        let now = site.stored();
        let settled = now == last;
        last = now;
        if settled { Ok(()) } else { Err(now) }
    });

    let downloads = site.dir.join("downloads");
    std::fs::create_dir_all(&downloads).expect("downloads dir");
    let url = format!("http://127.0.0.1:{}/dashboard/", site.api);
    let mut b = Browser::open(&site.dir, &url);
    b.call(
        "Browser.setDownloadBehavior",
        serde_json::json!({"behavior": "allow", "downloadPath": downloads.display().to_string()}),
    );
    sign_in(&mut b, VIEWER_TOKEN);
    let device = "[...document.querySelectorAll('#export-what option')]\
                  .find(o => o.value.startsWith('device=m00&'))";
    b.wait(
        "m00 among the export choices",
        &format!("!!{device}"),
        Duration::from_secs(30),
    );
    b.eval(&format!(
        "document.getElementById('export-what').value = {device}.value; \
         document.getElementById('export-res').value = '10m'; \
         document.getElementById('export-go').click(); true"
    ));
    let name = b.wait(
        "the export saved",
        "document.getElementById('export-msg').dataset.file || \
         (document.getElementById('export-msg').classList.contains('bad') \
          && document.getElementById('export-msg').textContent)",
        Duration::from_secs(60),
    );
    let name = name.as_str().expect("file name").to_string();
    assert!(
        name.starts_with("fumegrid-m00-") && name.ends_with("-10m.csv"),
        "{name}"
    );
    let query = b.eval("document.getElementById('export-msg').dataset.query");
    let query = query.as_str().expect("query");
    let path = downloads.join(&name);
    let file = wait_until(
        "the CSV in the download folder",
        Duration::from_secs(30),
        || {
            std::fs::read(&path)
                .ok()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| format!("{:?}", std::fs::read_dir(&downloads).map(|d| d.count())))
        },
    );
    let file = String::from_utf8(file).expect("UTF-8");
    let (status, direct) = http_get(
        &format!("http://127.0.0.1:{}/api/v1/export.csv?{query}", site.api),
        Some(VIEWER_TOKEN),
    );
    assert_eq!(status, 200, "{direct}");
    assert_eq!(file, direct, "the download is what the API answers");
    let csv = file.strip_prefix('\u{feff}').expect("a BOM for Excel");
    let mut lines = csv.split("\r\n");
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("site,gateway,device,metric,unit,period_start")),
        "{csv}"
    );
    // Today's 10-minute periods of every metric, one of them with the polls' average.
    let fume: Vec<&str> = lines
        .filter(|l| l.contains(",m00,fume_mg_m3,mg/m³,"))
        .collect();
    assert!(!fume.is_empty(), "{csv}");
    assert!(
        fume.iter()
            .any(|l| l.split(',').nth(7).is_some_and(|avg| !avg.is_empty())),
        "no 10-minute average of fume: {csv}"
    );
}
