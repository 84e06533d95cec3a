//! Alarm → case → dispatch → handle → verify → close, end to end: a simulated monitor goes over
//! the limit, the gateway raises the exceedance, the aggregator opens one case dispatched to the
//! environmental department and tells it over a signed webhook (retried while the receiver is
//! down); the department moves it with its token, normal readings verify it, an operator
//! closes it. All over real sockets: MQTT, the HTTP API (curl) and the webhook receiver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_tests::site::*;
use fumegrid_tests::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const SPEED: f64 = 60.0;
const SECRET: &str = "epb-webhook-secret-for-e2e";

/// Short windows so the scenario plays out in under a minute (as in e2e_alarms).
const RULES: &str = "[rules]\nstandard = \"gb18483_2001\"\nwindow_s = 6\neval_every_s = 1\nraise_after = 3\nclear_after = 4\n\
    min_samples = 3\npurifier_idle_after_s = 6\noffline_after_s = 6\nstuck_after_s = 8\nbaseline_learn_s = 4\n\
    purifier_dirty_after_s = 4\nupdate_every_s = 5\nfault_after_s = 3\n";

fn monitor(port: u16, scenario: &str) -> Proc {
    monitor_at(port, scenario, SPEED)
}

fn monitor_at(port: u16, scenario: &str, speed: f64) -> Proc {
    sim(&[
        "monitor",
        "--tcp",
        &format!("127.0.0.1:{port}"),
        "--profile",
        root()
            .join("device-profiles/tb-compatible.toml")
            .to_str()
            .expect("path"),
        "--scenario",
        scenario,
        "--speed",
        &speed.to_string(),
        "--duration",
        "900",
    ])
}

/// One received webhook: headers we check and the body.
#[derive(Debug, Clone)]
struct Hook {
    signature: String,
    delivery: String,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 receiver on `listener`: records each POST and answers 204.
fn receiver(listener: TcpListener, got: Arc<Mutex<Vec<Hook>>>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut len = 0usize;
            let (mut signature, mut delivery) = (String::new(), String::new());
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
                    let v = v.trim().to_string();
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => len = v.parse().unwrap_or(0),
                        "x-fumegrid-signature" => signature = v,
                        "x-fumegrid-delivery" => delivery = v,
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            got.lock().expect("lock").push(Hook {
                signature,
                delivery,
                body,
            });
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn cases_of(api: u16, device: &str) -> Vec<Value> {
    let (s, v) = api_call(
        api,
        "GET",
        &format!("/api/v1/cases?device={device}"),
        Some(OPERATOR_TOKEN),
        None,
    );
    assert_eq!(s, 200, "{v}");
    v["cases"].as_array().cloned().unwrap_or_default()
}

#[test]
fn e2e_exceedance_becomes_one_case_worked_to_closed_with_signed_webhooks() {
    let site = Site::new("cases");
    // The catalogue: the built-in one, with a webhook for `epb` and verification after one
    // minute of normal readings (24 h in the shipped catalogue).
    let hook_port = free_port();
    site.epb_webhook(hook_port, SECRET, |c| {
        c.replacen("verify_normal_hours = 24", "verify_normal_minutes = 1", 1)
    });
    let cfg = site.embedded_with(
        "[cases]\ncatalogue = \"catalogue.toml\"\ntick_interval_s = 1\n\
         webhook_secrets_file = \"webhooks.toml\"\n",
    );
    let _agg = site.aggregator(&cfg);

    let base = consecutive_free_ports(2);
    let _sims = [monitor(base, "exceedance"), monitor(base + 1, "normal")];
    let gcfg = site.gateway_config(site.mqtt, base, 2, 250, 50_000);
    let text = std::fs::read_to_string(&gcfg).expect("config");
    std::fs::write(
        &gcfg,
        text.replacen("[outbox]", &format!("{RULES}[outbox]"), 1),
    )
    .expect("config");
    let mut gw = site.gateway(&gcfg);

    // One case, registered and dispatched to the environmental department by the catalogue.
    let case = wait_until("the exceedance case", Duration::from_secs(40), || {
        cases_of(site.api, "m00").into_iter().next()
    });
    let id = case["id"].as_str().expect("id").to_string();
    assert_eq!(case["state"], "dispatched", "{case}");
    assert_eq!(case["department"], "epb", "{case}");
    assert_eq!(case["category"], "exceedance", "{case}");
    assert_eq!(case["alarms"][0]["gateway"], GW, "{case}");
    assert!(
        cases_of(site.api, "m01").is_empty(),
        "normal monitor has a case"
    );

    // The case comes with its alarm and the readings around it.
    let (s, d) = api_call(
        site.api,
        "GET",
        &format!("/api/v1/cases/{id}"),
        Some(EPB_TOKEN),
        None,
    );
    assert_eq!(s, 200, "{d}");
    let kinds: Vec<&str> = d["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds[..3], ["reported", "registered", "dispatched"], "{d}");
    assert!(
        d["evidence"]["readings"]
            .as_array()
            .expect("readings")
            .iter()
            .any(|r| r["metric"] == "fume_mg_m3" && r["value"].as_f64().unwrap_or(0.0) > 2.0),
        "no over-limit reading in the evidence: {}",
        d["evidence"]
    );

    // The webhook receiver is down: the notification waits and is retried, nothing else waits.
    let pending = wait_until("a failed delivery attempt", Duration::from_secs(20), || {
        let (_, v) = api_call(
            site.api,
            "GET",
            &format!("/api/v1/notifications?case={id}"),
            Some(OPERATOR_TOKEN),
            None,
        );
        let rows = v["notifications"].as_array().cloned().unwrap_or_default();
        rows.into_iter()
            .find(|n| n["department"] == "epb" && n["attempts"].as_u64().unwrap_or(0) >= 1)
    });
    assert_eq!(pending["state"], "pending", "{pending}");
    assert!(pending["last_error"].as_str().is_some(), "{pending}");

    // Over a real socket: 401 without a token, 403 for others, 400 for a malformed body.
    let tr = format!("/api/v1/cases/{id}/transitions");
    let accept = Some(r#"{"action":"accept","note":"inspector on the way"}"#);
    assert_eq!(api_call(site.api, "POST", &tr, None, accept).0, 401);
    assert_eq!(
        api_call(site.api, "POST", &tr, Some(URBAN_TOKEN), accept).0,
        403
    );
    assert_eq!(
        api_call(site.api, "POST", &tr, Some(VIEWER_TOKEN), accept).0,
        403
    );
    let (s, v) = api_call(site.api, "POST", &tr, Some(EPB_TOKEN), Some("{\"action\":"));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("invalid JSON body"),
        "{v}"
    );

    // The department signs for it and handles it.
    let (s, v) = api_call(site.api, "POST", &tr, Some(EPB_TOKEN), accept);
    assert_eq!(
        (s, &v["case"]["state"]),
        (200, &Value::from("accepted")),
        "{v}"
    );
    let (s, v) = api_call(
        site.api,
        "POST",
        &tr,
        Some(EPB_TOKEN),
        Some(r#"{"action":"handle","note":"purifier cleaned"}"#),
    );
    assert_eq!(
        (s, &v["case"]["state"]),
        (200, &Value::from("handled")),
        "{v}"
    );

    // The receiver comes up: the queued notifications arrive, signed, in order.
    let listener = TcpListener::bind(("127.0.0.1", hook_port)).expect("bind the webhook port");
    let got = Arc::new(Mutex::new(Vec::new()));
    receiver(listener, got.clone());

    // Readings back to normal: the plateau ends at 1860/60 = 31 s, the episode clears, and a
    // minute of normal readings later the system verifies the case.
    let verified = wait_until("automatic verification", Duration::from_secs(150), || {
        let c = cases_of(site.api, "m00");
        c.first().filter(|c| c["state"] == "verified").cloned()
    });
    assert_eq!(verified["id"], id.as_str());
    assert_eq!(verified["alarms"][0]["phase"], "cleared", "{verified}");
    let (s, v) = api_call(
        site.api,
        "POST",
        &tr,
        Some(OPERATOR_TOKEN),
        Some(r#"{"action":"close","note":"closing standard met"}"#),
    );
    assert_eq!(
        (s, &v["case"]["state"]),
        (200, &Value::from("closed")),
        "{v}"
    );
    // Every transition of the episode linked to the same case: still exactly one.
    let all = cases_of(site.api, "m00");
    assert_eq!(all.len(), 1, "{all:#?}");
    let (_, d) = api_call(
        site.api,
        "GET",
        &format!("/api/v1/cases/{id}"),
        Some(OPERATOR_TOKEN),
        None,
    );
    let verify = d["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "verified")
        .cloned()
        .expect("verified event");
    assert_eq!(verify["actor"]["role"], "system", "{verify}");

    // Pagination and filters over the socket.
    let (_, p) = api_call(
        site.api,
        "GET",
        "/api/v1/cases?state=closed&limit=1&offset=0",
        Some(VIEWER_TOKEN),
        None,
    );
    assert_eq!(
        (p["total"].as_u64(), p["count"].as_u64()),
        (Some(1), Some(1)),
        "{p}"
    );
    let (_, p) = api_call(
        site.api,
        "GET",
        "/api/v1/cases?state=closed&limit=1&offset=1",
        Some(VIEWER_TOKEN),
        None,
    );
    assert_eq!(p["count"].as_u64(), Some(0), "{p}");

    // The department's webhook saw the case, every hook correctly signed, the first one after
    // at least one failed attempt.
    let hooks = wait_until("webhooks delivered", Duration::from_secs(30), || {
        let (_, v) = api_call(
            site.api,
            "GET",
            &format!("/api/v1/notifications?case={id}&department=epb"),
            Some(OPERATOR_TOKEN),
            None,
        );
        let rows = v["notifications"].as_array().cloned().unwrap_or_default();
        (!rows.is_empty() && rows.iter().all(|n| n["state"] == "delivered")).then_some(rows)
    });
    let first = hooks.last().expect("oldest");
    assert!(
        first["attempts"].as_u64().unwrap_or(0) >= 2,
        "not retried: {first}"
    );
    let got = got.lock().expect("lock").clone();
    assert!(!got.is_empty());
    for h in &got {
        assert_eq!(
            h.signature,
            sign(&h.body),
            "bad signature on delivery {}",
            h.delivery
        );
        let v: Value = serde_json::from_slice(&h.body).expect("json body");
        assert_eq!(v["department"], "epb");
        assert_eq!(v["case"]["id"], id.as_str());
    }
    let first_kind =
        serde_json::from_slice::<Value>(&got[0].body).expect("json")["event"]["kind"].clone();
    assert_eq!(first_kind, "dispatched", "first webhook: {first_kind}");

    // What Prometheus sees of it: the case opened by the alarm, the deliveries and the failed
    // attempt before them.
    let (status, body) = http_get(
        &format!("http://127.0.0.1:{}/metrics", site.api),
        Some(VIEWER_TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    let m = Scrape::parse(&body);
    let hook = |outcome: &str| {
        m.get(
            "fumegrid_webhook_deliveries_total",
            &[("department", "epb"), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert!(hook("delivered") >= hooks.len() as f64, "{body}");
    assert!(hook("retried") >= 1.0, "{body}");
    assert!(
        m.get("fumegrid_cases_opened_total", &[("source", "alarm")])
            .is_some_and(|v| v >= 1.0),
        "{body}"
    );

    gw.term();
    let _ = gw.wait_exit(Duration::from_secs(20));
}

/// Issue 11 item 5 against the real aggregator: an operator verifies (with an override: the
/// alarm is still raised; without one the API answers 409) and closes the case while the
/// exceedance goes on; the episode's routine `updated` transitions join that closed case and
/// open no second one. Also item 12: the case carries the configured `[[gateways]] site`.
#[test]
fn e2e_an_episode_closed_while_raised_opens_no_second_case() {
    let site = Site::new("cases-episode");
    // `site` lands in the `[[gateways]]` table the harness ends with.
    let cfg =
        site.embedded_with("site = \"Xinhua Road food street\"\n[cases]\ntick_interval_s = 1\n");
    let _agg = site.aggregator(&cfg);
    // Speed 10: over the limit from 9 s to 186 s, plenty of time to close it while raised.
    let base = consecutive_free_ports(1);
    let _sim = monitor_at(base, "exceedance", 10.0);
    let gcfg = site.gateway_config(site.mqtt, base, 1, 250, 50_000);
    let text = std::fs::read_to_string(&gcfg).expect("config");
    std::fs::write(
        &gcfg,
        text.replacen("[outbox]", &format!("{RULES}[outbox]"), 1),
    )
    .expect("config");
    let mut gw = site.gateway(&gcfg);

    let case = wait_until("the exceedance case", Duration::from_secs(60), || {
        cases_of(site.api, "m00").into_iter().next()
    });
    let id = case["id"].as_str().expect("id").to_string();
    assert_eq!(case["site"], "Xinhua Road food street", "{case}");
    assert_eq!(case["alarms"][0]["phase"], "raised", "{case}");
    let tr = format!("/api/v1/cases/{id}/transitions");
    let call = |token: &str, body: &str| api_call(site.api, "POST", &tr, Some(token), Some(body));
    for (token, body) in [
        (EPB_TOKEN, r#"{"action":"accept"}"#),
        (
            EPB_TOKEN,
            r#"{"action":"handle","note":"owner told to clean the hood"}"#,
        ),
    ] {
        let (s, v) = call(token, body);
        assert_eq!(s, 200, "{body}: {v}");
    }
    // Still raised: a plain verification is refused with a clear 409.
    let (s, v) = call(OPERATOR_TOKEN, r#"{"action":"verify"}"#);
    assert_eq!(s, 409, "{v}");
    let msg = v["error"].as_str().unwrap_or("");
    assert!(
        msg.contains("still raised") && msg.contains("override"),
        "{v}"
    );
    let (s, v) = call(
        OPERATOR_TOKEN,
        r#"{"action":"verify","override":"inspected on site, purifier replaced"}"#,
    );
    assert_eq!(
        (s, &v["case"]["state"]),
        (200, &Value::from("verified")),
        "{v}"
    );
    assert_eq!(
        v["events"][0]["override"], "inspected on site, purifier replaced",
        "{v}"
    );
    let (s, v) = call(OPERATOR_TOKEN, r#"{"action":"close","note":"dealt with"}"#);
    assert_eq!(
        (s, &v["case"]["state"]),
        (200, &Value::from("closed")),
        "{v}"
    );
    let closed_seq = v["case"]["seq"].as_u64().expect("seq");

    // The episode goes on: its next `updated` (every 5 s) joins the closed case — or, as before
    // the fix, opens a second case "near the limit".
    let linked = wait_until("the episode's next update", Duration::from_secs(30), || {
        let all = cases_of(site.api, "m00");
        if all.len() > 1 {
            return Some(Err(all));
        }
        let (_, d) = api_call(
            site.api,
            "GET",
            &format!("/api/v1/cases/{id}"),
            Some(OPERATOR_TOKEN),
            None,
        );
        d["events"].as_array().and_then(|ev| {
            ev.iter()
                .find(|e| {
                    e["seq"].as_u64().unwrap_or(0) > closed_seq
                        && e["kind"] == "alarm_linked"
                        && e["alarm"]["phase"] == "updated"
                })
                .cloned()
                .map(Ok)
        })
    });
    let linked = match linked {
        Ok(e) => e,
        Err(all) => panic!("a second case for the same episode: {all:#?}"),
    };
    assert_eq!(linked["to_state"], "closed", "{linked}");
    let all = cases_of(site.api, "m00");
    assert_eq!(all.len(), 1, "a second case for the same episode: {all:#?}");
    assert_eq!(all[0]["state"], "closed");
    gw.term();
    let _ = gw.wait_exit(Duration::from_secs(20));
}

/// Issue 13: an alarm case's webhooks carry links to its pictures. A simulated monitor in
/// exceedance with its HTTP snapshot camera, the real gateway (camera bound to the monitor), the
/// real aggregator: the alarm dispatches a case to `epb`; the picture the gateway took on raise
/// arrives seconds later and its storing queues an `evidence` notification. The department's
/// receiver gets, signed as ever, the case with `evidence` naming that picture, and the links
/// (API paths: no `[api] public_url` here) open with the department's token, the original
/// hashing to the SHA-256 taken at capture.
#[test]
fn e2e_an_alarm_cases_webhook_carries_links_to_its_pictures() {
    let site = Site::new("cases-evidence");
    let hook_port = free_port();
    site.epb_webhook(hook_port, SECRET, |c| c);
    let cfg = site.embedded_with(
        "[cases]\ncatalogue = \"catalogue.toml\"\nwebhook_secrets_file = \"webhooks.toml\"\n",
    );
    let hooks = Arc::new(Mutex::new(Vec::new()));
    receiver(
        TcpListener::bind(("127.0.0.1", hook_port)).expect("bind the webhook port"),
        hooks.clone(),
    );
    let _agg = site.aggregator(&cfg);

    let (_sim, _gw) = site.monitor_with_camera("exceedance", SPEED, 250, RULES, "cam-1");

    let case = wait_until("the exceedance case", Duration::from_secs(60), || {
        cases_of(site.api, "m00").into_iter().next()
    });
    let id = case["id"].as_str().expect("id").to_string();
    // The `evidence` notification the picture's storing queued (the `dispatched` one may or
    // may not have it: that is a race between the notifier and the picture's upload).
    let (hook, body) = wait_until(
        "an evidence webhook carrying the picture taken on raise",
        Duration::from_secs(60),
        || {
            hooks.lock().expect("lock").iter().find_map(|h| {
                let v: Value = serde_json::from_slice(&h.body).ok()?;
                let stored = v["case"]["id"] == id.as_str()
                    && v["kind"] == "evidence"
                    && v["evidence"].as_array()?.iter().any(|p| {
                        p["trigger"] == "alarm_raised" && p["links"]["original"].is_string()
                    });
                stored.then(|| (h.clone(), v))
            })
        },
    );
    assert_eq!(hook.signature, sign(&hook.body), "signed as ever");
    assert_eq!(body["department"], "epb", "{body}");
    let pic = body["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .find(|p| p["trigger"] == "alarm_raised")
        .expect("the raise picture")
        .clone();
    assert_eq!(
        (&pic["source"], &pic["camera"], &pic["gateway"]),
        (
            &Value::from("camera"),
            &Value::from("cam-1"),
            &Value::from(GW)
        ),
        "{pic}"
    );
    assert_eq!(pic["devices"], serde_json::json!(["m00"]), "{pic}");
    let sha = pic["sha256"].as_str().expect("sha256").to_string();
    let tmp = TempDir::new("cases-evidence-fetch");
    let fetched = tmp.join("bytes");
    for tail in ["original", "view", "thumb"] {
        let path = pic["links"][tail].as_str().expect("link");
        assert_eq!(path, format!("/api/v1/evidence/{sha}/{tail}"), "{pic}");
        let out = Command::new("curl")
            .args(["-s", "-m", "10", "-o"])
            .arg(&fetched)
            .args(["-w", "%{http_code} %{content_type}", "-H"])
            .arg(format!("Authorization: Bearer {EPB_TOKEN}"))
            .arg(format!("http://127.0.0.1:{}{path}", site.api))
            .output()
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200 image/jpeg",
            "{tail}"
        );
        if tail == "original" {
            let bytes = std::fs::read(&fetched).expect("bytes");
            assert_eq!(
                hex::encode(<Sha256 as sha2::Digest>::digest(&bytes)),
                sha,
                "the bytes hash to the capture's SHA-256"
            );
        }
    }
    // Other departments' tokens do not open them.
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {URBAN_TOKEN}"))
        .arg(format!(
            "http://127.0.0.1:{}/api/v1/evidence/{sha}/view",
            site.api
        ))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
}
