//! Drones at the gateway (issue 15) against pymavlink, the independent MAVLink peer
//! (`tests/peers/mavlink_drones.py`): a PX4-like mix in MAVLink 2 and an ArduPilot-like mix in
//! MAVLink 1 over UDP, and again as one byte stream over a pty pair (socat) into `serial:`, into
//! a real gateway, with random noise, bad CRCs, truncated frames and a foreign system id on the
//! same port. What the gateway publishes is watched on mosquitto by an
//! independent subscriber (the aggregator answers the gateway's hello and acks; the items are
//! read off the wire, decoded with `wire::decode_up` and checked against what pymavlink says it
//! sent). Also: simulated drones' photos fetched and sent as evidence, and the systemd watchdog
//! fed by a gateway whose sources are silent.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::wire::{self, Batch, Body, EventKind};
use fumegrid_tests::mqtt::RawClient;
use fumegrid_tests::site::*;
use fumegrid_tests::*;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck};
use serde_json::Value;

/// Every item the gateway published (by seq; resends collapse), seen as a subscriber sees it.
struct Observer {
    items: Arc<Mutex<BTreeMap<u64, Body>>>,
    stop: Arc<AtomicBool>,
}

impl Observer {
    fn start(port: u16) -> Observer {
        let (mut c, ok) = RawClient::connect(port, "drone-observer", "observer", "observer-pass")
            .expect("observer");
        assert_eq!(ok, fumegrid_tests::mqtt::Connected::Accepted);
        c.subscribe("fumegrid/v1/+/up").expect("subscribe");
        let items = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (it, st) = (items.clone(), stop.clone());
        let key = fumegrid_common::keys::parse_key(KEY).expect("key");
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let p = match c.next_packet() {
                    Ok(Some(Packet::Publish(p))) => p,
                    Ok(Some(_)) => continue,
                    Ok(None) => return,
                    // The read timeout: look at the stop flag.
                    Err(_) => continue,
                };
                if p.qos != QoS::AtMostOnce {
                    let _ = c.send(&Packet::PubAck(PubAck::new(p.pkid)));
                }
                let Ok(bytes) = wire::decode_up(&p.payload, 64 << 20) else {
                    continue;
                };
                // Hellos are not batches.
                if let Ok(b) = wire::open::<Batch>(&bytes, &key)
                    && let Ok(mut m) = it.lock()
                {
                    for i in b.items {
                        m.insert(i.seq, i.body);
                    }
                }
            }
        });
        Observer { items, stop }
    }

    fn bodies(&self) -> Vec<Body> {
        self.items.lock().expect("lock").values().cloned().collect()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn gateway_config(site: &Site, mqtt: u16, connection: &str, metrics: u16) -> std::path::PathBuf {
    let text = format!(
        "[gateway]\nid = \"{GW}\"\n\
         [outbox]\npath = \"outbox\"\nflush_interval_ms = 200\n\
         [uplink]\nhost = \"127.0.0.1\"\nport = {mqtt}\nusername = \"{GW}\"\npassword_file = \"mqtt.pass\"\n\
         key_file = \"gw.key\"\nkeep_alive_s = 5\nack_timeout_s = 3\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
         [[drones]]\nid = \"uav-px4\"\nconnection = \"{connection}\"\nsystem_id = 1\n\
         min_interval_ms = 0\nmin_distance_m = 0.0\nitem_every_s = 2\n\
         [[drones]]\nid = \"uav-ardu\"\nconnection = \"{connection}\"\nsystem_id = 2\nitem_every_s = 2\n"
    );
    let p = site.dir.join("gateway.toml");
    std::fs::write(&p, text).expect("gateway config");
    p
}

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("udp port")
}

/// How pymavlink reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Datagrams to `udpin:`.
    Udp,
    /// One byte stream through a pty pair made by socat, the gateway on `serial:` at one end.
    Serial,
}

#[test]
fn e2e_pymavlink_px4_and_ardupilot_mixes_noise_and_a_lost_link() {
    pymavlink_mixes(Link::Udp);
}

#[test]
fn e2e_pymavlink_mixes_over_a_serial_pty_pair() {
    pymavlink_mixes(Link::Serial);
}

fn pymavlink_mixes(link: Link) {
    let site = Site::new(match link {
        Link::Udp => "drones",
        Link::Serial => "drones-serial",
    });
    let mqtt = free_port();
    let _mosq = mosquitto(&site, mqtt);
    let agg_cfg = site.aggregator_config(&format!(
        "[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {mqtt}\nusername = \"fumegrid-aggregator\"\npassword_file = \"agg.pass\"\n"
    ));
    let _agg = site.aggregator(&agg_cfg);
    let observer = Observer::start(mqtt);
    let (udp, metrics) = (free_udp(), free_port());
    let pty = (link == Link::Serial).then(|| PtyPair::new(&site.dir, "mav"));
    let conn = match &pty {
        Some(p) => format!("serial:{}:57600", p.b.display()),
        None => format!("udpin:127.0.0.1:{udp}"),
    };
    let gw_cfg = gateway_config(&site, mqtt, &conn, metrics);
    let _gw = site.gateway(&gw_cfg);
    let url = format!("http://127.0.0.1:{metrics}/metrics");
    wait_until(
        "the gateway's drone source",
        Duration::from_secs(20),
        || http_get(&url, None).1.contains("fumegrid_drone_link_up"),
    );

    // 14 s of two drones; the ArduPilot one silent from 6 s to 11 s.
    let mut py = Command::new(venv_python());
    py.arg(root().join("tests/peers/mavlink_drones.py")).args([
        "--seconds",
        "14",
        "--ardu-silent",
        "6:11",
    ]);
    let go = site.dir.join("go");
    match &pty {
        None => py.args(["--to", &format!("127.0.0.1:{udp}")]),
        Some(p) => py.arg("--serial").arg(&p.a).arg("--go-file").arg(&go),
    };
    let mut peer = Proc::spawn("mavlink_drones.py", py);
    if pty.is_some() {
        // The peer writes foreign heartbeats until the gateway counts one: its serial port is
        // open and read, so nothing the peer sends next falls into a pty nobody reads.
        wait_until(
            "the gateway reading its serial port",
            Duration::from_secs(20),
            || {
                Scrape::parse(&http_get(&url, None).1)
                    .get(
                        "fumegrid_mavlink_rejected_total",
                        &[("connection", &conn), ("reason", "foreign")],
                    )
                    .is_some_and(|n| n > 0.0)
            },
        );
        std::fs::write(&go, "").expect("go file");
    }
    let (ok, err) = peer.wait_exit(Duration::from_secs(40));
    assert!(ok, "pymavlink peer failed: {err}");
    let sent: Vec<Value> = peer
        .stdout_lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("peer line is JSON"))
        .collect();
    let done = sent.last().expect("lines").clone();
    assert_eq!(done["what"], "done", "{done}");
    let of = |what: &str, sys: u64| -> Vec<&Value> {
        sent.iter()
            .filter(|v| v["what"] == what && v["sys"] == sys)
            .collect()
    };
    let (px4_sent, ardu_sent) = (of("pos", 1), of("pos", 2));

    // Everything the PX4 drone sent (kept whole: no decimation for it) arrives, then the rest.
    let tracks = |bodies: &[Body], drone: &str| -> Vec<fumegrid_common::wire::TrackPoint> {
        bodies
            .iter()
            .filter_map(|b| match b {
                Body::Track(t) if t.drone == drone => Some(t.points.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let bodies = wait_until(
        "every PX4 position, the photo and both link events",
        Duration::from_secs(40),
        || {
            let b = observer.bodies();
            let px4 = tracks(&b, "uav-px4").len();
            let events = b
                .iter()
                .filter(|b| matches!(b, Body::Event(e) if e.kind == EventKind::DroneLinkRestored))
                .count();
            let photos = b
                .iter()
                .filter(|b| matches!(b, Body::DronePhoto(_)))
                .count();
            if px4 >= px4_sent.len() && events >= 1 && photos >= 1 {
                Ok(b)
            } else {
                Err(format!(
                    "{px4} of {} px4 points, {events} restored, {photos} photos",
                    px4_sent.len()
                ))
            }
        },
    );

    // MAVLink 2, PX4 mix: every position exactly as sent, at its receive time.
    let px4 = tracks(&bodies, "uav-px4");
    assert_eq!(px4.len(), px4_sent.len(), "one point per position sent");
    for (p, s) in px4.iter().zip(&px4_sent) {
        assert_eq!(p.lat, s["lat"].as_f64().expect("lat") / 1e7, "{p:?} vs {s}");
        assert_eq!(p.lon, s["lon"].as_f64().expect("lon") / 1e7, "{p:?} vs {s}");
        assert_eq!(p.alt_m, 560.0);
        assert_eq!(p.rel_alt_m, Some(60.0));
        assert_eq!(p.heading_deg, Some(0.0));
        assert_eq!(p.speed_m_s, Some(10.0));
        assert_eq!(
            p.battery_pct,
            Some(87),
            "SYS_STATUS/BATTERY_STATUS before it"
        );
        let sent_ms = s["ms"].as_i64().expect("ms");
        assert!(
            (sent_ms - 5..=sent_ms + 2_000).contains(&p.ts_ms),
            "received at {} for a position sent at {sent_ms}",
            p.ts_ms
        );
    }
    for w in px4.windows(2) {
        assert!(w[1].ts_ms > w[0].ts_ms, "time order");
    }

    // MAVLink 1, ArduPilot mix: decimated by the defaults (5 s, 20 m), each point one it sent.
    let ardu = tracks(&bodies, "uav-ardu");
    assert!(ardu.len() >= 2, "{ardu:?}");
    assert!(
        ardu.len() < ardu_sent.len() / 10,
        "decimated: {}",
        ardu.len()
    );
    for p in &ardu {
        let s = ardu_sent
            .iter()
            .find(|s| s["lon"].as_f64().expect("lon") / 1e7 == p.lon)
            .unwrap_or_else(|| panic!("{p:?} was never sent"));
        assert_eq!(p.lat, s["lat"].as_f64().expect("lat") / 1e7);
        assert_eq!((p.alt_m, p.rel_alt_m), (555.0, Some(55.0)));
        assert_eq!((p.heading_deg, p.speed_m_s), (Some(90.0), Some(10.0)));
        assert_eq!(p.battery_pct, Some(64));
    }
    for w in ardu.windows(2) {
        assert!(w[1].ts_ms - w[0].ts_ms >= 5_000, "{w:?}");
    }

    // The photo: the drone's own UTC time and place.
    let photo = of("photo", 1)[0];
    let photos: Vec<_> = bodies
        .iter()
        .filter_map(|b| match b {
            Body::DronePhoto(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(photos.len(), 1, "{photos:?}");
    let ph = photos[0];
    assert_eq!(ph.drone, "uav-px4");
    assert_eq!(ph.ts_ms, photo["utc_ms"].as_i64().expect("utc"));
    assert_eq!(ph.lat, photo["lat"].as_f64().expect("lat") / 1e7);
    assert_eq!((ph.alt_m, ph.index, ph.ok), (560.0, 7, true));
    assert_eq!(ph.file.as_deref(), photo["file"].as_str());

    // The link: lost 3 heartbeats after the ArduPilot drone's last one, restored by its next;
    // nothing about the PX4 drone while the peer ran (both go silent when it stops).
    let end_ms = sent
        .iter()
        .filter_map(|v| v["ms"].as_i64())
        .max()
        .expect("sent");
    let events: Vec<_> = bodies
        .iter()
        .filter_map(|b| match b {
            Body::Event(e)
                if matches!(
                    e.kind,
                    EventKind::DroneLinkLost | EventKind::DroneLinkRestored
                ) && e.ts_ms <= end_ms + 1_000 =>
            {
                Some(e)
            }
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].kind, EventKind::DroneLinkLost);
    assert_eq!(events[1].kind, EventKind::DroneLinkRestored);
    assert!(
        events.iter().all(|e| e.message.starts_with("uav-ardu: ")),
        "{events:?}"
    );
    let hbs: Vec<i64> = of("hb", 2)
        .iter()
        .map(|v| v["ms"].as_i64().expect("ms"))
        .collect();
    let last_before = hbs
        .iter()
        .copied()
        .filter(|&t| t < events[0].ts_ms)
        .max()
        .expect("a heartbeat before the loss");
    let after = events[0].ts_ms - last_before;
    assert!(
        (3_000..=3_000 + 250 + 500).contains(&after),
        "lost {after} ms after the last heartbeat (3 × 1000 ms allowed, checked every 250 ms)"
    );
    let first_after = hbs
        .iter()
        .copied()
        .find(|&t| t > events[0].ts_ms)
        .expect("heartbeats after the loss");
    assert!(events[1].ts_ms >= first_after - 5, "{events:?}");

    // The hostile traffic: counted, harmless (the positions above kept flowing through it).
    let scrape = Scrape::parse(&http_get(&url, None).1);
    let rejected = |reason: &str| {
        scrape
            .get(
                "fumegrid_mavlink_rejected_total",
                &[("connection", &conn), ("reason", reason)],
            )
            .unwrap_or(0.0)
    };
    let n = |k: &str| done[k].as_f64().expect("count");
    assert!(
        rejected("bad_crc") >= n("bad_crc"),
        "{}",
        rejected("bad_crc")
    );
    assert!(
        rejected("foreign") >= n("foreign"),
        "{}",
        rejected("foreign")
    );
    assert!(rejected("unknown_message") >= n("ardu_only"));
    let garbage = scrape
        .get(
            "fumegrid_mavlink_garbage_bytes_total",
            &[("connection", &conn)],
        )
        .unwrap_or(0.0);
    // Every truncated frame leaves at least its start byte as garbage; noise adds more.
    assert!(garbage >= n("truncated"), "{garbage}");
    let decimated = scrape
        .get(
            "fumegrid_drone_points_total",
            &[("drone", "uav-ardu"), ("fate", "decimated")],
        )
        .unwrap_or(0.0);
    assert!(decimated > 0.0);
}

/// The SHA-256 (hex) of `url`'s body as curl, an independent HTTP client, fetches it with
/// Basic authentication; None when it does not answer 200.
fn served_sha256(url: &str, user: &str, password: &str) -> Option<(String, Vec<u8>)> {
    use sha2::Digest as _;
    let out = Command::new("curl")
        .args([
            "-s",
            "-f",
            "-m",
            "10",
            "-u",
            &format!("{user}:{password}"),
            url,
        ])
        .output()
        .expect("curl");
    out.status
        .success()
        .then(|| (hex::encode(sha2::Sha256::digest(&out.stdout)), out.stdout))
}

#[test]
fn e2e_sim_drone_photos_travel_as_evidence_named_by_their_sha256() {
    let site = Site::new("drone-photos");
    let mqtt = free_port();
    let _mosq = mosquitto(&site, mqtt);
    let agg_cfg = site.aggregator_config(&format!(
        "[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {mqtt}\nusername = \"fumegrid-aggregator\"\npassword_file = \"agg.pass\"\n"
    ));
    let _agg = site.aggregator(&agg_cfg);
    let observer = Observer::start(mqtt);
    let (udp, metrics, dead, cam) = (free_udp(), free_port(), free_port(), free_port());
    // uav-1 fetches its photos from its camera's web server (the host named here, never one a
    // file_url names: credentials go there only), by the file's name; uav-2's camera
    // "is off" (nothing listens where its template points): its photos go up as metadata.
    let text = format!(
        "[gateway]\nid = \"{GW}\"\nsite = \"Demo street\"\n\
         [outbox]\npath = \"outbox\"\nflush_interval_ms = 200\n\
         [uplink]\nhost = \"127.0.0.1\"\nport = {mqtt}\nusername = \"{GW}\"\npassword_file = \"mqtt.pass\"\n\
         key_file = \"gw.key\"\nkeep_alive_s = 5\nack_timeout_s = 3\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
         [[drones]]\nid = \"uav-1\"\nconnection = \"udpin:127.0.0.1:{udp}\"\nsystem_id = 1\nitem_every_s = 2\n\
         photo_url = \"http://127.0.0.1:{cam}/DCIM/1/{{name}}\"\nphoto_user = \"admin\"\nphoto_password = \"12345\"\nphoto_timeout_ms = 5000\n\
         [[drones]]\nid = \"uav-2\"\nconnection = \"udpin:127.0.0.1:{udp}\"\nsystem_id = 2\nitem_every_s = 2\n\
         photo_url = \"http://127.0.0.1:{dead}/DCIM/{{name}}\"\nphoto_timeout_ms = 2000\n"
    );
    let gw_cfg = site.dir.join("gateway.toml");
    std::fs::write(&gw_cfg, text).expect("gateway config");
    let _gw = site.gateway(&gw_cfg);
    let url = format!("http://127.0.0.1:{metrics}/metrics");
    wait_until(
        "the gateway's drone source",
        Duration::from_secs(20),
        || http_get(&url, None).1.contains("fumegrid_drone_link_up"),
    );
    // Two drones half a loop apart over the demo street; photos served behind Basic auth.
    let _drone = sim(&[
        "drone",
        "--to",
        &format!("127.0.0.1:{udp}"),
        "--count",
        "2",
        "--photos",
        &format!("127.0.0.1:{cam}"),
        "--photo-user",
        "admin",
        "--photo-password",
        "12345",
        "--duration",
        "120",
    ]);

    let photo = |drone: &str, with_sha: bool| {
        observer.bodies().into_iter().find_map(|b| match b {
            Body::DronePhoto(p) if p.drone == drone && p.sha256.is_some() == with_sha => Some(p),
            _ => None,
        })
    };
    let p1 = wait_until(
        "a photo of uav-1 with its sha256",
        Duration::from_secs(90),
        || photo("uav-1", true),
    );
    let p2 = wait_until(
        "a photo of uav-2 without bytes",
        Duration::from_secs(90),
        || photo("uav-2", false),
    );

    // uav-1: the item names the bytes the simulated drone serves at its file_url ...
    let file = p1.file.clone().expect("file_url");
    assert!(file.starts_with("http://127.0.0.1:"), "{file}");
    let (served_sha, served) = served_sha256(&file, "admin", "12345").expect("the sim serves it");
    let sha = p1.sha256.clone().expect("sha256");
    assert_eq!(
        sha, served_sha,
        "DronePhoto.sha256 is the SHA-256 of the served bytes"
    );
    assert_eq!(&served[..2], &[0xFF, 0xD8], "a JPEG");
    // ... and those bytes went up as evidence parts, as a camera's pictures do.
    let mut parts: Vec<wire::Evidence> = observer
        .bodies()
        .into_iter()
        .filter_map(|b| match b {
            Body::Evidence(e) if e.sha256 == sha => Some(e),
            _ => None,
        })
        .collect();
    parts.sort_by_key(|e| e.part);
    parts.dedup_by_key(|e| e.part);
    assert!(!parts.is_empty(), "no evidence parts for {sha}");
    assert_eq!(parts.len() as u32, parts[0].parts, "every part");
    let mut joined = Vec::new();
    for e in &parts {
        use base64::Engine as _;
        joined.extend(
            base64::engine::general_purpose::STANDARD
                .decode(&e.data)
                .expect("base64"),
        );
        let m = &e.meta;
        assert_eq!(m.camera, "uav-1");
        assert_eq!(m.devices, ["uav-1"]);
        assert_eq!(m.trigger, wire::Trigger::Drone);
        assert_eq!(m.captured_ms, p1.ts_ms, "the photo's own time");
        assert_eq!(m.size, served.len() as u64);
        assert_eq!(m.site, "Demo street");
    }
    assert_eq!(joined, served, "the evidence is the bytes the drone served");

    // uav-2: the item came all the same, without sha256; the failure is counted.
    assert!(p2.file.is_some(), "{p2:?}");
    let scrape = Scrape::parse(&http_get(&url, None).1);
    let n = |name: &str, labels: &[(&str, &str)]| scrape.get(name, labels).unwrap_or(0.0);
    assert!(
        n(
            "fumegrid_drone_photo_fetch_failures_total",
            &[("drone", "uav-2"), ("reason", "unreachable")]
        ) >= 1.0
    );
    assert!(n("fumegrid_drone_photos_fetched_total", &[("drone", "uav-1")]) >= 1.0);
    assert_eq!(
        n(
            "fumegrid_drone_photo_fetch_failures_total",
            &[("drone", "uav-1"), ("reason", "unauthorized")]
        ),
        0.0
    );

    // The aggregator took both (a refused batch would never be acked): the photo is on the
    // drone's track with its sha256, and the picture was verified and stored.
    wait_until(
        "the picture stored by the aggregator",
        Duration::from_secs(30),
        || {
            let track = api_get(site.api, "/api/v1/drones/uav-1/track");
            let linked = track["photos"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["sha256"] == sha.as_str()));
            let m = Scrape::parse(
                &http_get(
                    &format!("http://127.0.0.1:{}/metrics", site.api),
                    Some(OPERATOR_TOKEN),
                )
                .1,
            );
            let stored = m
                .get(
                    "fumegrid_evidence_pictures_stored_total",
                    &[("source", "camera")],
                )
                .unwrap_or(0.0);
            linked && stored >= 1.0
        },
    );
}

/// Runs a gateway with `config` (no `[uplink]`: no ack can feed the watchdog) under a systemd
/// notification socket of our own with a 1 s watchdog, and waits for `READY=1` and then three
/// `WATCHDOG=1` (checked every 0.5 s).
fn fed_watchdog(tag: &str, config: &str) {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new(tag);
    let cfg = dir.join("gateway.toml");
    std::fs::write(&cfg, config).expect("gateway config");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut cmd = Command::new(bin("fumegrid-gateway"));
    cmd.current_dir(dir.path())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000");
    let _gw = Proc::spawn("fumegrid-gateway", cmd);
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    wait_until(
        &format!("{tag}: READY=1 and three WATCHDOG=1"),
        Duration::from_secs(20),
        || {
            if let Ok(n) = sock.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            let ready = seen.iter().position(|m| m.contains("READY=1"));
            let fed = ready.map_or(0, |r| {
                seen[r..]
                    .iter()
                    .filter(|m| m.contains("WATCHDOG=1"))
                    .count()
            });
            if fed >= 3 {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
}

/// Parked drones (nothing on the MAVLink port) are not a hung gateway: a drones-only gateway
/// feeds the watchdog while its drone connection's loop runs.
#[test]
fn e2e_a_drones_only_gateway_with_silent_drones_feeds_the_watchdog() {
    let udp = free_udp();
    fed_watchdog(
        "watchdog-drones",
        &format!(
            "[gateway]\nid = \"{GW}\"\n[outbox]\npath = \"outbox\"\n\
             [[drones]]\nid = \"uav-1\"\nconnection = \"udpin:127.0.0.1:{udp}\"\n"
        ),
    );
}

/// The same for the other source kind: a monitor that does not answer (switched off) is not a
/// hung gateway either; the poll loop runs (its breaker probes every 200 ms here, every 10 s by
/// default: well within systemd's 30 s between checks).
#[test]
fn e2e_a_gateway_whose_monitor_does_not_answer_feeds_the_watchdog() {
    let any = shipped_profiles().remove(0);
    // Nothing listens on `dead`: every poll fails at once (connection refused).
    let dead = free_port();
    fed_watchdog(
        "watchdog-modbus",
        &format!(
            "[gateway]\nid = \"{GW}\"\nprobe_interval_ms = 200\n[outbox]\npath = \"outbox\"\n\
             [[devices]]\nid = \"d1\"\nprofile = \"{}\"\ntcp = \"127.0.0.1:{dead}\"\npoll_interval_ms = 200\n",
            any.display()
        ),
    );
}
