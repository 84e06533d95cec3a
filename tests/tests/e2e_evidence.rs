//! Evidence end to end (issue 13, the aggregator's side): sealed batches of picture parts
//! published by a real MQTT client to a real aggregator process are acked, stored, verified
//! (the SHA-256 of what the API serves equals the one taken at capture) and served under the
//! roles of cases; a picture whose bytes do not match its hash is refused and counted; a
//! snapshot asked for a case goes out as a sealed command on the gateway's `cmd` topic, and the
//! picture answering it joins the case. Every wait is a condition with a deadline.

use std::process::Command;
use std::time::Duration;

use fumegrid_aggregator::store::evidence::{sha256_hex, split};
use fumegrid_common::metric::Metric;
use fumegrid_common::wire::{
    self, Ack, Alarm, AlarmKind, AlarmPhase, Batch, Body, Channel, EvidenceMeta, Item, Media,
    Trigger,
};
use fumegrid_tests::mqtt::{Connected, RawClient};
use fumegrid_tests::site::{self, EPB_TOKEN, GW, KEY, OPERATOR_TOKEN, PASS, Site, URBAN_TOKEN};
use fumegrid_tests::{Scrape, TempDir, wait_until};
use rumqttc::mqttbytes::v4::Packet;
use serde_json::Value;

const REPORTER_TOKEN: &str = "e2e-reporter-token-0001";

fn key() -> Vec<u8> {
    hex::decode(KEY).expect("hex key")
}

/// `curl` as `token`: (status, body bytes); `upload` is `(content type, file)`.
fn curl(
    api: u16,
    method: &str,
    path: &str,
    token: &str,
    upload: Option<(&str, &std::path::Path)>,
    out: &std::path::Path,
) -> (u16, Vec<u8>) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "10", "-o"])
        .arg(out)
        .args(["-w", "%{http_code}", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some((ct, file)) = upload {
        cmd.args(["-H", &format!("Content-Type: {ct}"), "--data-binary"])
            .arg(format!("@{}", file.display()));
    }
    let o = cmd
        .arg(format!("http://127.0.0.1:{api}{path}"))
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, std::fs::read(out).unwrap_or_default())
}

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

/// Publishes a sealed batch and waits for its sealed ack: the ranges acked.
fn publish(c: &mut RawClient, stream: &str, items: Vec<Item>) -> Vec<(u64, u64)> {
    let b = Batch {
        gateway: GW.into(),
        stream: stream.into(),
        sent_ms: 1,
        items,
    };
    let payload = wire::seal(&b, &key());
    assert!(
        c.publish_acked(&wire::topic(GW, Channel::Up), &payload)
            .expect("publish"),
        "broker took the batch"
    );
    let ack = wait_until("the sealed ack", Duration::from_secs(20), || {
        if let Some(i) = c.received.iter().position(
            |p| matches!(p, Packet::Publish(p) if p.topic == wire::topic(GW, Channel::Ack)),
        ) {
            let Packet::Publish(p) = c.received.remove(i) else {
                unreachable!()
            };
            return Ok(wire::open::<Ack>(&p.payload, &key()).expect("sealed ack"));
        }
        match c.next_packet() {
            Ok(Some(p)) => c.received.push(p),
            Ok(None) => panic!("broker closed the connection"),
            Err(_) => {}
        }
        Err("no ack yet".to_string())
    });
    assert_eq!(ack.stream, stream);
    ack.ranges
}

fn meta(alarm: Option<&str>, request: Option<&str>, captured_ms: i64) -> EvidenceMeta {
    EvidenceMeta {
        camera: "cam-1".into(),
        devices: vec!["rest-1".into()],
        captured_ms,
        trigger: if request.is_some() {
            Trigger::Request
        } else {
            Trigger::AlarmRaised
        },
        alarm: alarm.map(str::to_string),
        request: request.map(str::to_string),
        media: Media::Jpeg,
        size: 0,
        width: Some(640),
        height: Some(480),
        site: "Food Street 1".into(),
        readings: vec![("rest-1".into(), Metric::FumeMgM3, 2.8)],
    }
}

fn parts_as_items(first: u64, parts: Vec<wire::Evidence>) -> Vec<Item> {
    parts
        .into_iter()
        .enumerate()
        .map(|(i, e)| Item {
            seq: first + i as u64,
            body: Body::Evidence(e),
        })
        .collect()
}

/// A real JPEG of 640 × 480 (noise, so it spans several parts).
fn jpeg(seed: u32) -> Vec<u8> {
    let mut img = fumegrid_picture::Rgb::filled(640, 480, [0, 0, 0]);
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    for py in 0..480 {
        for px in 0..640 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let b = x.to_le_bytes();
            img.set(px, py, [b[0], b[1], b[2]]);
        }
    }
    fumegrid_picture::encode_jpeg(&img, 90)
}

#[test]
fn pictures_arrive_verified_and_are_served_under_the_roles_of_cases() {
    let site = Site::new("evidence");
    let cfg = site.embedded();
    // The site's tokens plus a reporter (a citizen app).
    let tokens = site.dir.join("tokens.toml");
    let mut t = std::fs::read_to_string(&tokens).expect("tokens");
    t.push_str(&format!(
        "[[tokens]]\nname = \"citizen-app\"\nrole = \"reporter\"\nsha256 = \"{}\"\n",
        hex::encode(fumegrid_aggregator::auth::sha256(REPORTER_TOKEN))
    ));
    std::fs::write(&tokens, t).expect("tokens");
    let _agg = site.aggregator(&cfg);
    let tmp = TempDir::new("evidence-files");
    let out = tmp.join("answer");

    let (mut c, connected) = RawClient::connect(site.mqtt, GW, GW, PASS).expect("connect");
    assert_eq!(connected, Connected::Accepted);
    c.subscribe(&wire::topic(GW, Channel::Ack))
        .expect("subscribe ack");
    c.subscribe(&wire::topic(GW, Channel::Cmd))
        .expect("subscribe cmd");

    // A raised exceedance opens a case (with department epb). Its picture follows in parts.
    let t0 = 1_762_135_200_000;
    let episode = format!("rest-1:exceedance:fume_mg_m3:{t0}");
    let alarm = Alarm {
        id: episode.clone(),
        device: "rest-1".into(),
        kind: AlarmKind::Exceedance,
        metric: Some(Metric::FumeMgM3),
        phase: AlarmPhase::Raised,
        started_ms: t0,
        ts_ms: t0,
        cleared_ms: None,
        value: Some(2.8),
        peak: Some(2.8),
        peak_ms: Some(t0),
        limit: Some(2.0),
        suppressed: false,
        message: "over the limit".into(),
    };
    let ranges = publish(
        &mut c,
        "s1",
        vec![Item {
            seq: 1,
            body: Body::Alarm(alarm),
        }],
    );
    assert_eq!(ranges, [(1, 1)]);
    let case = wait_until("the alarm's case", Duration::from_secs(20), || {
        let v = site::api_get(site.api, "/api/v1/cases?device=rest-1");
        match v["cases"][0]["id"].as_str() {
            Some(id) => Ok(id.to_string()),
            None => Err(v.to_string()),
        }
    });
    let picture = jpeg(1);
    let sha = sha256_hex(&picture);
    let parts = split(&picture, meta(Some(&episode), None, t0 + 2_000));
    let n = parts.len() as u64;
    assert!(n >= 3, "a picture of {} bytes in {n} parts", picture.len());
    // One part per batch, the last one first (order does not matter), each acked.
    let mut items = parts_as_items(2, parts);
    items.rotate_right(1);
    for item in items {
        let seq = item.seq;
        assert_eq!(publish(&mut c, "s1", vec![item]), [(seq, seq)]);
    }
    let list = format!("/api/v1/cases/{case}/evidence");
    let listed = wait_until("the picture stored", Duration::from_secs(20), || {
        let (code, b) = curl(site.api, "GET", &list, OPERATOR_TOKEN, None, &out);
        let v = json(&b);
        if code == 200 && v["evidence"][0]["state"] == "stored" {
            Ok(v)
        } else {
            Err(format!("{code} {v}"))
        }
    });
    let p = &listed["evidence"][0];
    assert_eq!(p["sha256"], sha.as_str());
    assert_eq!(
        (p["camera"].as_str(), p["alarm"].as_str()),
        (Some("cam-1"), Some(episode.as_str()))
    );
    // Byte for byte what the camera took, and a captioned view that is a JPEG.
    let original = format!("/api/v1/evidence/{sha}/original");
    let (code, bytes) = curl(site.api, "GET", &original, EPB_TOKEN, None, &out);
    assert_eq!(code, 200);
    assert_eq!(
        sha256_hex(&bytes),
        sha,
        "served bytes hash to the capture's SHA-256"
    );
    let (code, view) = curl(
        site.api,
        "GET",
        &format!("/api/v1/evidence/{sha}/view"),
        EPB_TOKEN,
        None,
        &out,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&view));
    let img = fumegrid_picture::decode(&view, Media::Jpeg).expect("the view is a JPEG");
    assert_eq!(img.width, 640);
    assert!(img.height > 480, "caption band under the picture");
    let (code, thumb) = curl(
        site.api,
        "GET",
        &format!("/api/v1/evidence/{sha}/thumb"),
        EPB_TOKEN,
        None,
        &out,
    );
    assert_eq!(code, 200);
    assert_eq!(
        fumegrid_picture::decode(&thumb, Media::Jpeg)
            .expect("thumb")
            .width,
        320
    );

    // Roles: viewer and the case's department see it; another department and a reporter who
    // did not file the case do not.
    for (token, want) in [
        (site::VIEWER_TOKEN, 200),
        (EPB_TOKEN, 200),
        (URBAN_TOKEN, 403),
        (REPORTER_TOKEN, 403),
    ] {
        let (code, b) = curl(site.api, "GET", &list, token, None, &out);
        assert_eq!(code, want, "{token} list: {}", json(&b));
        let (code, _) = curl(site.api, "GET", &original, token, None, &out);
        assert_eq!(code, want, "{token} original");
    }

    // A picture whose bytes do not hash to its SHA-256: acked, refused, counted, not served.
    let bad = jpeg(2);
    let mut bad_parts = split(&bad, meta(Some(&episode), None, t0 + 3_000));
    let other = split(&jpeg(3), meta(None, None, t0));
    bad_parts[1].data = other[1].data.clone();
    let bad_sha = bad_parts[0].sha256.clone();
    let first = 100;
    let count = bad_parts.len() as u64;
    assert_eq!(
        publish(&mut c, "s1", parts_as_items(first, bad_parts)),
        [(first, first + count - 1)],
        "acked all the same"
    );
    wait_until("the refusal counted", Duration::from_secs(20), || {
        let (_, b) = curl(site.api, "GET", "/metrics", OPERATOR_TOKEN, None, &out);
        let s = Scrape::parse(&String::from_utf8_lossy(&b));
        match s.get(
            "fumegrid_evidence_refused_total",
            &[("reason", "hash_mismatch")],
        ) {
            Some(v) if v >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let (code, _) = curl(
        site.api,
        "GET",
        &format!("/api/v1/evidence/{bad_sha}"),
        OPERATOR_TOKEN,
        None,
        &out,
    );
    assert_eq!(code, 404, "a refused picture is not kept");
    let (_, b) = curl(site.api, "GET", "/metrics", OPERATOR_TOKEN, None, &out);
    let s = Scrape::parse(&String::from_utf8_lossy(&b));
    assert_eq!(
        s.get(
            "fumegrid_evidence_pictures_stored_total",
            &[("source", "camera")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.get(
            "fumegrid_evidence_bytes_stored_total",
            &[("source", "camera")]
        ),
        Some(picture.len() as f64)
    );
    assert_eq!(
        s.get("fumegrid_evidence_parts_total", &[("gateway", GW)]),
        Some((n + count) as f64)
    );

    // "Take a picture now": a sealed command on the gateway's cmd topic; the picture that
    // answers it joins the case.
    let (code, b) = curl(
        site.api,
        "POST",
        &format!("/api/v1/cases/{case}/snapshot"),
        URBAN_TOKEN,
        None,
        &out,
    );
    assert_eq!(code, 403, "{}", json(&b));
    let (code, b) = curl(
        site.api,
        "POST",
        &format!("/api/v1/cases/{case}/snapshot"),
        EPB_TOKEN,
        None,
        &out,
    );
    assert_eq!(code, 202, "{}", json(&b));
    let request = json(&b)["requests"][0]["id"]
        .as_str()
        .expect("request id")
        .to_string();
    let cmd = wait_until(
        "the sealed snapshot command",
        Duration::from_secs(20),
        || {
            if let Some(i) = c.received.iter().position(
                |p| matches!(p, Packet::Publish(p) if p.topic == wire::topic(GW, Channel::Cmd)),
            ) {
                let Packet::Publish(p) = c.received.remove(i) else {
                    unreachable!()
                };
                return Ok(wire::open::<wire::Command>(&p.payload, &key()).expect("sealed command"));
            }
            match c.next_packet() {
                Ok(Some(p)) => c.received.push(p),
                Ok(None) => panic!("broker closed the connection"),
                Err(_) => {}
            }
            Err("no command yet".to_string())
        },
    );
    assert_eq!(
        (cmd.id.as_str(), cmd.gateway.as_str()),
        (request.as_str(), GW)
    );
    assert!(cmd.expires_ms > cmd.issued_ms);
    assert_eq!(
        cmd.action,
        wire::Action::Snapshot {
            camera: None,
            device: Some("rest-1".into()),
            alarm: Some(episode.clone())
        }
    );
    let answer = jpeg(4);
    let answer_parts = split(&answer, meta(None, Some(&request), t0 + 9_000));
    let k = answer_parts.len() as u64;
    assert_eq!(
        publish(&mut c, "s2", parts_as_items(1, answer_parts)),
        [(1, k)]
    );
    wait_until(
        "the requested picture in the case",
        Duration::from_secs(20),
        || {
            let (_, b) = curl(site.api, "GET", &list, EPB_TOKEN, None, &out);
            let v = json(&b);
            let shas: Vec<&str> = v["evidence"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|p| p["state"] == "stored")
                        .filter_map(|p| p["sha256"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            if shas.contains(&sha256_hex(&answer).as_str()) && shas.len() == 2 {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    );

    // The department uploads its proof of rectification; the type is sniffed from the bytes.
    let proof = tmp.join("proof.jpg");
    std::fs::write(&proof, jpeg(5)).expect("proof");
    let up = format!("/api/v1/cases/{case}/evidence");
    let (code, b) = curl(
        site.api,
        "POST",
        &up,
        EPB_TOKEN,
        Some(("image/png", &proof)),
        &out,
    );
    assert_eq!(code, 415, "{}", json(&b));
    let (code, b) = curl(
        site.api,
        "POST",
        &up,
        site::VIEWER_TOKEN,
        Some(("image/jpeg", &proof)),
        &out,
    );
    assert_eq!(code, 403, "{}", json(&b));
    let (code, b) = curl(
        site.api,
        "POST",
        &up,
        EPB_TOKEN,
        Some(("image/jpeg", &proof)),
        &out,
    );
    assert_eq!(code, 201, "{}", json(&b));
    let v = json(&b);
    assert_eq!(v["evidence"]["source"], "upload");
    assert_eq!(v["evidence"]["uploaded_by"], "epb-duty");
    let (code, b) = curl(site.api, "GET", &list, site::VIEWER_TOKEN, None, &out);
    assert_eq!((code, json(&b)["count"].as_u64()), (200, Some(3)));
}

/// Short windows so an exceedance is raised within seconds (as in e2e_cases).
const RULES: &str = "[rules]\nstandard = \"gb18483_2001\"\nwindow_s = 6\neval_every_s = 1\nraise_after = 3\nclear_after = 4\n\
    min_samples = 3\npurifier_idle_after_s = 6\noffline_after_s = 6\nstuck_after_s = 8\nbaseline_learn_s = 4\n\
    purifier_dirty_after_s = 4\nupdate_every_s = 5\nfault_after_s = 3\n";

/// The whole path with the project's own peers: a simulated monitor in exceedance with its
/// HTTP snapshot camera, the real gateway (camera bound to the monitor), the real aggregator.
/// The alarm opens a case and the picture the gateway took on raise arrives in it, stored,
/// its served bytes hashing to the SHA-256 taken at capture, its view a captioned JPEG.
#[test]
fn an_alarm_case_gets_the_picture_its_gateway_took_on_raise() {
    let site = Site::new("evidence-pipeline");
    let cfg = site.embedded();
    let _agg = site.aggregator(&cfg);
    let tmp = TempDir::new("evidence-pipeline-files");
    let out = tmp.join("answer");
    let (_sim, _gw) = site.monitor_with_camera("exceedance", 60.0, 250, RULES, "cam-1");
    let case = wait_until("the exceedance case", Duration::from_secs(60), || {
        let v = site::api_get(site.api, "/api/v1/cases?device=m00");
        match v["cases"][0]["id"].as_str() {
            Some(id) => Ok(id.to_string()),
            None => Err(v.to_string()),
        }
    });
    let list = format!("/api/v1/cases/{case}/evidence");
    let p = wait_until(
        "the picture taken on raise, stored",
        Duration::from_secs(60),
        || {
            let (code, b) = curl(site.api, "GET", &list, EPB_TOKEN, None, &out);
            let v = json(&b);
            let found = v["evidence"].as_array().and_then(|a| {
                a.iter()
                    .find(|p| p["state"] == "stored" && p["trigger"] == "alarm_raised")
                    .cloned()
            });
            found.ok_or(format!("{code} {v}"))
        },
    );
    assert_eq!(p["camera"], "cam-1", "{p}");
    assert_eq!(p["devices"], serde_json::json!(["m00"]), "{p}");
    assert_eq!(p["media"], "image/jpeg", "{p}");
    let sha = p["sha256"].as_str().expect("sha256").to_string();
    let (code, bytes) = curl(
        site.api,
        "GET",
        &format!("/api/v1/evidence/{sha}/original"),
        EPB_TOKEN,
        None,
        &out,
    );
    assert_eq!(code, 200);
    assert_eq!(
        sha256_hex(&bytes),
        sha,
        "the bytes hash to the capture's SHA-256"
    );
    let img = fumegrid_picture::decode(&bytes, Media::Jpeg).expect("the camera's JPEG");
    assert_eq!((img.width, img.height), (640, 480));
    let (code, view) = curl(
        site.api,
        "GET",
        &format!("/api/v1/evidence/{sha}/view"),
        EPB_TOKEN,
        None,
        &out,
    );
    assert_eq!(code, 200);
    let v = fumegrid_picture::decode(&view, Media::Jpeg).expect("view");
    assert!(v.width == 640 && v.height > 480, "{}x{}", v.width, v.height);
}
