//! Issue 15, aerial evidence at the aggregator, end to end: a real aggregator (embedded broker,
//! SQLite store, case engine) with one site at a known position and an open exceedance case.
//! Its gateway's account publishes sealed batches of drone `Track` items (forged here the way a
//! gateway seals them; the MAVLink gateway source drives the same items): a drone that flies
//! over the site gives the case exactly one aerial pass — also when the same stretch is sent
//! again — and a drone that flies by 600 m away gives none. The map and track API show both.

use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::metric::Metric;
use fumegrid_common::wire::{
    self, Alarm, AlarmKind, AlarmPhase, Batch, Body, DronePhoto, Item, Track, TrackPoint,
};
use fumegrid_tests::mqtt::{Connected, RawClient};
use fumegrid_tests::site::*;
use fumegrid_tests::*;
use serde_json::Value;

const SITE: (f64, f64) = (39.9289, 116.4160);
/// Metres per degree of latitude at the site (WGS 84, 39.93° N).
const M_PER_DEG: f64 = 111_034.0;

/// Publishes sealed batches as the site's gateway.
struct Gateway {
    client: RawClient,
    key: Vec<u8>,
    seq: u64,
}

impl Gateway {
    fn connect(site: &Site) -> Gateway {
        let (client, answer) =
            RawClient::connect(site.mqtt, GW, GW, PASS).expect("connect to the broker");
        assert_eq!(answer, Connected::Accepted);
        Gateway {
            client,
            key: fumegrid_common::keys::parse_key(KEY).expect("key"),
            seq: 0,
        }
    }

    fn send(&mut self, bodies: Vec<Body>) {
        let items = bodies
            .into_iter()
            .map(|body| {
                self.seq += 1;
                Item {
                    seq: self.seq,
                    body,
                }
            })
            .collect();
        let b = Batch {
            gateway: GW.into(),
            stream: "aerial-stream".into(),
            sent_ms: Clock::system().now_ms(),
            items,
        };
        let payload = wire::seal(&b, &self.key);
        assert!(
            self.client
                .publish_acked(&format!("fumegrid/v1/{GW}/up"), &payload)
                .expect("publish"),
            "the broker took the batch"
        );
    }
}

/// A straight flight `north_m(t)` metres north (and `east_m` east) of the site, one point a
/// second for `secs` seconds from `start_ms`, cut into items of 60 points.
fn flight(
    drone: &str,
    start_ms: i64,
    secs: i64,
    east_m: f64,
    north_m: impl Fn(i64) -> f64,
) -> Vec<Body> {
    let east_deg = east_m / (M_PER_DEG * SITE.0.to_radians().cos());
    let points: Vec<TrackPoint> = (0..secs)
        .map(|t| TrackPoint {
            ts_ms: start_ms + t * 1000,
            lat: SITE.0 + north_m(t) / M_PER_DEG,
            lon: SITE.1 + east_deg,
            alt_m: 95.0,
            rel_alt_m: Some(45.0),
            heading_deg: Some(0.0),
            speed_m_s: Some(10.0),
            battery_pct: Some(76),
        })
        .collect();
    points
        .chunks(60)
        .map(|c| {
            Body::Track(Track {
                drone: drone.into(),
                points: c.to_vec(),
            })
        })
        .collect()
}

fn aerial_events(api: u16, case: &str) -> Vec<Value> {
    let (status, v) = api_call(
        api,
        "GET",
        &format!("/api/v1/cases/{case}"),
        Some(VIEWER_TOKEN),
        None,
    );
    assert_eq!(status, 200, "{v}");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "aerial_pass")
        .cloned()
        .collect()
}

#[test]
fn e2e_a_drone_over_a_site_with_an_open_case_gives_it_exactly_one_aerial_pass() {
    let site = Site::new("aerial");
    // The site's position on its gateway entry; short gap and close-after so the test is quick.
    let cfg = site.embedded_with(&format!(
        "site = \"food street\"\nlat = {}\nlon = {}\n\
         [drones]\npass_distance_m = 150.0\npass_gap_s = 20\npass_close_after_s = 30\n\
         judge_interval_s = 1\n",
        SITE.0, SITE.1
    ));
    let _agg = site.aggregator(&cfg);
    let mut gw = Gateway::connect(&site);

    // An exceedance raised at the site: the aggregator opens a case.
    let now = Clock::system().now_ms();
    gw.send(vec![Body::Alarm(Alarm {
        id: format!("grill-1:exceedance:{now}"),
        device: "grill-1".into(),
        kind: AlarmKind::Exceedance,
        metric: Some(Metric::FumeMgM3),
        phase: AlarmPhase::Raised,
        started_ms: now - 600_000,
        ts_ms: now - 60_000,
        cleared_ms: None,
        value: Some(3.1),
        peak: Some(3.4),
        peak_ms: Some(now - 120_000),
        limit: Some(2.0),
        suppressed: false,
        message: "10-min average 3.1 mg/m³ above 2.0".into(),
    })]);
    let case: String = wait_until("the exceedance case", Duration::from_secs(20), || {
        let v = api_get(site.api, "/api/v1/cases?state=open");
        v["cases"][0]["id"].as_str().map(str::to_string)
    });

    // Drone m1 flies over the site (1.5 km south to 1.5 km north at 10 m/s, the last 5 minutes)
    // and takes a photo overhead; drone m-far flies the same line 600 m east.
    let start = Clock::system().now_ms() - 300_000;
    let over = |t: i64| -1500.0 + 10.0 * t as f64;
    let mut bodies = flight("m1", start, 300, 0.0, over);
    bodies.push(Body::DronePhoto(DronePhoto {
        drone: "m1".into(),
        ts_ms: start + 150_000,
        lat: SITE.0,
        lon: SITE.1,
        alt_m: 95.0,
        index: 17,
        file: Some("/DCIM/100MEDIA/DJI_0017.JPG".into()),
        ok: true,
        sha256: None,
    }));
    bodies.extend(flight("m-far", start, 300, 600.0, over));
    for chunk in bodies.chunks(4) {
        gw.send(chunk.to_vec());
    }
    let pass = wait_until(
        "the aerial pass on the case",
        Duration::from_secs(30),
        || {
            aerial_events(site.api, &case)
                .into_iter()
                .next()
                .ok_or_else(|| {
                    // What the aggregator holds, for the failure message.
                    let t = api_get(
                        site.api,
                        &format!("/api/v1/drones/m1/track?from={start}&limit=1"),
                    );
                    let st = api_get(site.api, "/api/v1/stats");
                    format!("m1 track: {t}; ingest: {st}")
                })
        },
    );
    let a = &pass["aerial"];
    assert_eq!(a["drone"], "m1", "{pass}");
    assert_eq!(a["site"], GW);
    assert_eq!(a["source"], "mavlink");
    assert!(
        a["min_distance_m"].as_f64().expect("distance") < 10.0,
        "{a}"
    );
    // Within 150 m: ±150 m of the site at 10 m/s, about 30 s.
    let span = a["end_ms"].as_i64().expect("end") - a["start_ms"].as_i64().expect("start");
    assert!((28_000..=31_000).contains(&span), "{a}");
    assert_eq!(a["photos"][0]["index"], 17, "{a}");
    assert_eq!(pass["actor"]["role"], "system");

    // The same stretch again (a gateway resending under new seqs), then drone m2 over the
    // site: once m2's pass is on the case, everything sent before it has been judged too.
    let bodies = flight("m1", start, 300, 0.0, over);
    for chunk in bodies.chunks(4) {
        gw.send(chunk.to_vec());
    }
    let start2 = Clock::system().now_ms() - 200_000;
    for chunk in flight("m2", start2, 200, 20.0, |t| -1000.0 + 10.0 * t as f64).chunks(4) {
        gw.send(chunk.to_vec());
    }
    let events = wait_until("m2's pass on the case", Duration::from_secs(30), || {
        let ev = aerial_events(site.api, &case);
        (ev.len() >= 2).then_some(ev)
    });
    let drones: Vec<&str> = events
        .iter()
        .map(|e| e["aerial"]["drone"].as_str().expect("drone"))
        .collect();
    assert_eq!(
        drones,
        vec!["m1", "m2"],
        "exactly one pass each; none for m-far"
    );

    // The map shows the site with its open case, and the three drones of the last hour.
    let map = api_get(site.api, "/api/v1/map");
    let s = &map["sites"][0];
    assert_eq!(s["gateway"], GW, "{map}");
    assert_eq!(s["site"], "food street");
    assert_eq!(s["state"], "alarm");
    assert_eq!(s["open_cases"][0]["id"], case.as_str());
    let mut seen: Vec<&str> = map["drones"]
        .as_array()
        .expect("drones")
        .iter()
        .map(|d| d["drone"].as_str().expect("drone"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, vec!["m-far", "m1", "m2"]);
    // The track API has m1's 300 points once, resend or not.
    let t = api_get(
        site.api,
        &format!("/api/v1/drones/m1/track?from={start}&limit=10000"),
    );
    assert_eq!(
        t["count"],
        300,
        "{}",
        fumegrid_common::text::clip(&t.to_string(), 500)
    );
    assert_eq!(t["photos"][0]["file"], "/DCIM/100MEDIA/DJI_0017.JPG");
}

/// The same with the real MAVLink path: `fumegrid-sim drone` (a simulated PX4 on the demo
/// street's patrol route, MAVLink 2 over UDP) into a real gateway's `[[drones]]` source, which
/// decimates the track and sends it through its outbox to the aggregator. The site is the
/// demo's `bbq-grill`; the drone takes off over `noodle-house` and flies east along the street
/// over it once (40 s of the ~110-s loop): the open case gets exactly one aerial pass, with
/// the photo the drone took overhead.
#[test]
fn e2e_the_simulated_drone_through_a_real_gateway_gives_one_aerial_pass() {
    const GRILL: (f64, f64) = (30.65535, 104.08095);
    let site = Site::new("aerial-mav");
    let cfg = site.embedded_with(&format!(
        "site = \"bbq street\"\nlat = {}\nlon = {}\n\
         [drones]\npass_distance_m = 60.0\npass_gap_s = 20\npass_close_after_s = 30\n\
         judge_interval_s = 1\n",
        GRILL.0, GRILL.1
    ));
    let _agg = site.aggregator(&cfg);

    // The open case: an exceedance at the grill, sealed and sent on the gateway's account
    // before the gateway itself connects (an account has one connection at a time).
    let case = {
        let mut gw = Gateway::connect(&site);
        let now = Clock::system().now_ms();
        gw.send(vec![Body::Alarm(Alarm {
            id: format!("bbq-grill:exceedance:{now}"),
            device: "bbq-grill".into(),
            kind: AlarmKind::Exceedance,
            metric: Some(Metric::FumeMgM3),
            phase: AlarmPhase::Raised,
            started_ms: now - 600_000,
            ts_ms: now,
            cleared_ms: None,
            value: Some(2.6),
            peak: Some(2.9),
            peak_ms: Some(now - 60_000),
            limit: Some(2.0),
            suppressed: false,
            message: String::new(),
        })]);
        wait_until("the exceedance case", Duration::from_secs(20), || {
            let v = api_get(site.api, "/api/v1/cases?state=open");
            v["cases"][0]["id"].as_str().map(str::to_string)
        })
    };

    let udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("udp port");
    let gw_cfg = site.dir.join("gateway.toml");
    std::fs::write(
        &gw_cfg,
        format!(
            "[gateway]\nid = \"{GW}\"\n\
             [outbox]\npath = \"outbox\"\nflush_interval_ms = 200\n\
             [uplink]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"{GW}\"\npassword_file = \"mqtt.pass\"\n\
             key_file = \"gw.key\"\nkeep_alive_s = 5\nack_timeout_s = 3\n\
             [[drones]]\nid = \"uav-1\"\nconnection = \"udpin:127.0.0.1:{udp}\"\nsystem_id = 1\n\
             min_interval_ms = 1000\nitem_every_s = 2\n",
            site.mqtt
        ),
    )
    .expect("gateway config");
    let _gw = site.gateway(&gw_cfg);
    // Its source listens before its uplink connects: once it is online, it takes the drone.
    wait_until("the gateway online", Duration::from_secs(20), || {
        let v = api_get(site.api, "/api/v1/gateways");
        v.as_array()
            .or_else(|| v["gateways"].as_array())
            .is_some_and(|g| g.iter().any(|g| g["id"] == GW && g["online"] == true))
    });
    let mut drone = sim(&[
        "drone",
        "--to",
        &format!("127.0.0.1:{udp}"),
        "--duration",
        "40",
    ]);

    let pass = wait_until(
        "the aerial pass on the case",
        Duration::from_secs(90),
        || {
            aerial_events(site.api, &case)
                .into_iter()
                .next()
                .ok_or_else(|| {
                    let t = api_get(site.api, "/api/v1/drones/uav-1/track?limit=3");
                    format!(
                        "uav-1 track: {}",
                        fumegrid_common::text::clip(&t.to_string(), 800)
                    )
                })
        },
    );
    let a = &pass["aerial"];
    assert_eq!(a["drone"], "uav-1", "{pass}");
    assert_eq!(a["source"], "mavlink");
    assert!(
        a["min_distance_m"].as_f64().expect("distance") < 60.0,
        "{a}"
    );
    assert!(
        a["photos"]
            .as_array()
            .expect("photos")
            .iter()
            .any(|p| p["file"].is_string() || p["index"].is_number()),
        "the photo over the grill: {a}"
    );
    // The flight ends; once its last stretch is stored, still exactly one pass.
    let (done, err) = drone.wait_exit(Duration::from_secs(60));
    assert!(done, "the simulated drone did not finish: {err}");
    wait_until("the flight's end stored", Duration::from_secs(30), || {
        let m = api_get(site.api, "/api/v1/map");
        let last = m["drones"][0]["last"]["ts_ms"].as_i64().unwrap_or(0);
        let end = a["end_ms"].as_i64().unwrap_or(i64::MAX);
        (last > end + 20_000).then_some(()).ok_or(m)
    });
    assert_eq!(aerial_events(site.api, &case).len(), 1);
}
