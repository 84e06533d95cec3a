//! DJI Cloud API (issue 15): a registered dock publishes DJI's `osd`, `status` and `events`
//! samples (`aggregator/tests/fixtures/dji/`, built from DJI's published format) to a real
//! aggregator with `mosquitto_pub` as the independent client, and listens with `mosquitto_sub`
//! for the replies DJI's format says it gets (`status_reply`, `events_reply`). Accepted with the
//! dock's own login; refused and counted for a wrong password and for a serial number that is
//! not the dock's; and the same samples read, and answered, through a real mosquitto (the
//! customer's broker, `[dji.external]`). The dock's own position is on the map.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fumegrid_tests::site::*;
use fumegrid_tests::*;
use serde_json::Value;

const DOCK: &str = "4TADKAQ000002J";
const AIRCRAFT: &str = "1581F5BKD225D00BP891";
const DOCK_USER: &str = "dock-e2e";
const DOCK_PASS: &str = "dock-e2e-password";

fn fixture(name: &str) -> Value {
    let p = root().join("aggregator/tests/fixtures/dji").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The aircraft osd sample, sent now from `lat`, `lon`; written to a file for mosquitto_pub.
fn aircraft_osd(dir: &TempDir, n: u32, ts_ms: i64, lat: f64, lon: f64) -> PathBuf {
    let mut v = fixture("aircraft-osd.json");
    v["timestamp"] = ts_ms.into();
    v["data"]["latitude"] = lat.into();
    v["data"]["longitude"] = lon.into();
    let p = dir.join(&format!("osd-{n}.json"));
    std::fs::write(&p, serde_json::to_vec(&v).expect("json")).expect("write");
    p
}

fn sample_file(dir: &TempDir, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec(&fixture(name)).expect("json")).expect("write");
    p
}

/// mosquitto_pub at QoS 1: `true` when the broker took the message (PUBACK), `false` when it
/// refused the login or closed the connection.
fn publish(
    port: u16,
    client_id: &str,
    user: &str,
    pass: &str,
    topic: &str,
    file: &std::path::Path,
) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", client_id])
        .args(["-u", user, "-P", pass, "-q", "1", "-t", topic, "-f"])
        .arg(file)
        .output()
        .expect("mosquitto_pub (scripts/install-test-deps.sh)")
        .status
        .success()
}

fn scrape(site: &Site) -> Scrape {
    let (status, body) = http_get(
        &format!("http://127.0.0.1:{}/metrics", site.api),
        Some(VIEWER_TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

fn dji_messages(s: &Scrape, source: &str, outcome: &str) -> f64 {
    s.get(
        "fumegrid_dji_messages_total",
        &[("source", source), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

fn refused(s: &Scrape, reason: &str) -> f64 {
    s.get("fumegrid_broker_refused_total", &[("reason", reason)])
        .unwrap_or(0.0)
}

/// Waits until `n` DJI positions were stored through the store's drone API.
fn stored(site: &Site, n: f64) -> Scrape {
    wait_until(
        "the DJI positions to be stored",
        Duration::from_secs(30),
        || {
            let s = scrape(site);
            match s.get("fumegrid_dji_points_total", &[("outcome", "stored")]) {
                Some(v) if v == n => Ok(s),
                v => Err(format!("stored: {v:?}")),
            }
        },
    )
}

/// The aircraft as the map shows it: its source and its track's (lat, lon).
fn on_the_map(site: &Site) -> (String, Vec<(f64, f64)>) {
    let map = api_get(site.api, "/api/v1/map");
    let d = map["drones"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["drone"] == AIRCRAFT))
        .unwrap_or_else(|| panic!("no aircraft on the map: {map}"));
    let track = d["track"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|p| Some((p["lat"].as_f64()?, p["lon"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    (d["source"].as_str().unwrap_or("").to_string(), track)
}

/// The dock listening for its replies (`mosquitto_sub`, QoS 1) as DJI docks do: on
/// `sys/product/{sn}/status_reply` and `thing/product/{sn}/events_reply`; returns once the
/// broker acknowledged the subscription.
fn reply_listener(port: u16, client_id: &str, user: &str, pass: &str) -> Proc {
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", "mosquitto_sub", "-d", "-v", "-q", "1"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", client_id])
        .args(["-u", user, "-P", pass])
        .args(["-t", &format!("sys/product/{DOCK}/status_reply")])
        .args(["-t", &format!("thing/product/{DOCK}/events_reply")]);
    let mut p = Proc::spawn("mosquitto_sub", cmd);
    p.wait_for("received SUBACK", Duration::from_secs(10));
    p
}

/// The next reply on `topic` the listener printed (`-v`: topic, space, payload), as JSON.
fn reply(listener: &mut Proc, topic: &str) -> Value {
    let line = listener.wait_for(&format!("{topic} {{"), Duration::from_secs(30));
    let (_, json) = line.split_once(' ').expect("topic, then the payload");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// What DJI's `status_reply`/`events_reply` struct says, with the request's ids echoed.
fn assert_reply(v: &Value, tid: &str, bid: &str, method: &str) {
    assert_eq!(v["tid"], tid, "{v}");
    assert_eq!(v["bid"], bid, "{v}");
    assert_eq!(v["method"], method, "{v}");
    assert_eq!(v["data"], serde_json::json!({"result": 0}), "{v}");
    let now = fumegrid_common::clock::Clock::system().now_ms();
    let ts = v["timestamp"].as_i64().unwrap_or(0);
    assert!((now - ts).abs() < 60_000, "the cloud's time: {v}");
}

/// The status and event samples published and their replies checked.
fn topo_and_event_answered(
    listener: &mut Proc,
    mut publish: impl FnMut(&str, &std::path::Path) -> bool,
    dir: &TempDir,
) {
    let status = sample_file(dir, "dock-status-update-topo.json");
    assert!(publish(&format!("sys/product/{DOCK}/status"), &status));
    let v = reply(listener, &format!("sys/product/{DOCK}/status_reply"));
    assert_reply(&v, "tid001", "bid001", "update_topo");
    let event = sample_file(dir, "dock-event-need-reply.json");
    assert!(publish(&format!("thing/product/{DOCK}/events"), &event));
    let v = reply(listener, &format!("thing/product/{DOCK}/events_reply"));
    assert_reply(
        &v,
        "c9a5ac6c-5b0b-4d1c-a3a8-0e8f3a2b1d10",
        "0b1e7a6e-2f0a-4f39-9c53-2e1f9b7d8a44",
        "flighttask_progress",
    );
    assert_eq!(v["gateway"], DOCK, "{v}");
}

/// The dock as the map shows it.
fn dock_on_the_map(site: &Site) -> Value {
    let map = api_get(site.api, "/api/v1/map");
    map["docks"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["sn"] == DOCK))
        .cloned()
        .unwrap_or_else(|| panic!("no dock on the map: {map}"))
}

fn docks_file(site: &Site, login: bool) {
    let login = if login {
        format!("username = \"{DOCK_USER}\"\npassword = \"{DOCK_PASS}\"\n")
    } else {
        String::new()
    };
    std::fs::write(
        site.dir.join("docks.toml"),
        format!("[[docks]]\nsn = \"{DOCK}\"\naircraft = [\"{AIRCRAFT}\"]\n{login}"),
    )
    .expect("docks file");
}

#[test]
fn e2e_dji_dock_on_the_embedded_broker_accepted_with_its_login_refused_otherwise() {
    let site = Site::new("dji-embedded");
    docks_file(&site, true);
    let cfg = site.embedded_with("[dji]\ndocks_file = \"docks.toml\"\nflush_interval_s = 1\n");
    let _agg = site.aggregator(&cfg);
    let now = fumegrid_common::clock::Clock::system().now_ms();
    let osd_topic = format!("thing/product/{AIRCRAFT}/osd");

    // Before anything is heard, the registered dock is on the map without a place.
    let d = dock_on_the_map(&site);
    assert_eq!(
        (d["lat"].clone(), d["online"].clone()),
        (Value::Null, Value::Bool(false)),
        "{d}"
    );

    // The dock, with its serial number as client id (docks pick their own): status, its own
    // osd, and its aircraft's osd are all taken; its topology update and its event asking for
    // a reply are answered on the topics it listens to (with its account name as client id:
    // one client id is one connection).
    let mut listener = reply_listener(site.mqtt, DOCK_USER, DOCK_USER, DOCK_PASS);
    topo_and_event_answered(
        &mut listener,
        |topic, f| publish(site.mqtt, DOCK, DOCK_USER, DOCK_PASS, topic, f),
        &site.dir,
    );
    let dock_osd = sample_file(&site.dir, "dock-osd.json");
    assert!(publish(
        site.mqtt,
        DOCK,
        DOCK_USER,
        DOCK_PASS,
        &format!("thing/product/{DOCK}/osd"),
        &dock_osd
    ));
    for i in 0..3 {
        let f = aircraft_osd(
            &site.dir,
            i,
            now + i64::from(i) * 1000,
            22.9081 + f64::from(i) * 0.0002,
            113.7029,
        );
        assert!(publish(
            site.mqtt, DOCK, DOCK_USER, DOCK_PASS, &osd_topic, &f
        ));
    }
    let s = wait_until(
        "the aggregator to read the dock's messages",
        Duration::from_secs(30),
        || {
            let s = scrape(&site);
            if dji_messages(&s, "embedded", "aircraft") >= 3.0
                && dji_messages(&s, "embedded", "topology") >= 1.0
            {
                Ok(s)
            } else {
                Err(format!(
                    "aircraft {} topology {}",
                    dji_messages(&s, "embedded", "aircraft"),
                    dji_messages(&s, "embedded", "topology")
                ))
            }
        },
    );
    assert_eq!(dji_messages(&s, "embedded", "dock"), 1.0);
    assert_eq!(dji_messages(&s, "embedded", "event"), 1.0);
    assert_eq!(dji_messages(&s, "embedded", "unknown_serial"), 0.0);
    assert_eq!(
        s.get(
            "fumegrid_dji_replies_total",
            &[("source", "embedded"), ("outcome", "sent")]
        ),
        Some(2.0)
    );
    // The dock's own osd put it on the map where the sample says it stands.
    let d = dock_on_the_map(&site);
    assert_eq!(d["online"], true, "{d}");
    assert!(
        close(d["lat"].as_f64().unwrap_or(0.0), 22.907809968)
            && close(d["lon"].as_f64().unwrap_or(0.0), 113.703482143),
        "{d}"
    );
    // The sample's 2022 timestamp is not believed: the receive time stands instead.
    let at = d["position_ms"].as_i64().unwrap_or(0);
    assert!((at - now).abs() < 60_000, "{d}");
    let (bad_login, publish_refused, client_id) = (
        refused(&s, "bad_login"),
        refused(&s, "publish"),
        refused(&s, "client_id"),
    );

    // Wrong password: refused at CONNECT, counted.
    let f = aircraft_osd(&site.dir, 10, now + 10_000, 22.91, 113.70);
    assert!(!publish(
        site.mqtt,
        DOCK,
        DOCK_USER,
        "wrong-password",
        &osd_topic,
        &f
    ));
    // A serial number that is not the dock's (another dock's aircraft): disconnected, counted.
    assert!(!publish(
        site.mqtt,
        DOCK,
        DOCK_USER,
        DOCK_PASS,
        "thing/product/1581F5BKD225D00XXXXX/osd",
        &f
    ));
    // A client id that is neither the account nor one of its serial numbers.
    assert!(!publish(
        site.mqtt, "OTHERSN", DOCK_USER, DOCK_PASS, &osd_topic, &f
    ));
    // A gateway's account cannot speak for the dock.
    assert!(!publish(site.mqtt, GW, GW, PASS, &osd_topic, &f));
    let s = wait_until(
        "the refusals to be counted",
        Duration::from_secs(30),
        || {
            let s = scrape(&site);
            let got = (
                refused(&s, "bad_login") - bad_login,
                refused(&s, "publish") - publish_refused,
                refused(&s, "client_id") - client_id,
            );
            if got == (1.0, 2.0, 1.0) {
                Ok(s)
            } else {
                Err(format!("bad_login, publish, client_id: {got:?}"))
            }
        },
    );
    // Nothing of the refused messages reached the DJI reader.
    assert_eq!(dji_messages(&s, "embedded", "aircraft"), 3.0);

    // The three positions are stored as a track with source `dji`, where the samples put them.
    stored(&site, 3.0);
    let (source, track) = on_the_map(&site);
    assert_eq!(source, "dji");
    assert_eq!(track.len(), 3, "{track:?}");
    for (i, (lat, lon)) in track.iter().enumerate() {
        assert!(
            close(*lat, 22.9081 + i as f64 * 0.0002) && close(*lon, 113.7029),
            "{track:?}"
        );
    }
}

#[test]
fn e2e_dji_from_an_external_mosquitto_only_registered_serials() {
    let site = Site::new("dji-external");
    let port = free_port();
    let _mosq = dji_mosquitto(&site, port, "");
    docks_file(&site, false);
    std::fs::write(site.dir.join("dji.pass"), "dji-reader-pass\n").expect("pass");
    let cfg = site.embedded_with(&format!(
        "[dji]\ndocks_file = \"docks.toml\"\nflush_interval_s = 1\n[dji.external]\nhost = \"127.0.0.1\"\n\
         port = {port}\nusername = \"dji-reader\"\npassword_file = \"dji.pass\"\n"
    ));
    let _agg = site.aggregator(&cfg);
    wait_until(
        "the DJI client to connect to mosquitto",
        Duration::from_secs(30),
        || {
            let s = scrape(&site);
            match s.get("fumegrid_dji_mqtt_connected", &[("source", "external")]) {
                Some(1.0) => Ok(()),
                v => Err(format!("connected: {v:?}")),
            }
        },
    );
    let now = fumegrid_common::clock::Clock::system().now_ms();
    let pubs = |topic: &str, f: &std::path::Path| {
        publish(port, DOCK, "dock-ext", "dock-ext-pass", topic, f)
    };
    for i in 0..2 {
        let f = aircraft_osd(
            &site.dir,
            i,
            now + i64::from(i) * 1000,
            22.9081,
            113.7029 + f64::from(i) * 0.0003,
        );
        assert!(pubs(&format!("thing/product/{AIRCRAFT}/osd"), &f));
    }
    let f = aircraft_osd(&site.dir, 5, now + 5000, 22.9, 113.7);
    assert!(pubs("thing/product/1581F5BKD225D00XXXXX/osd", &f));
    // The replies go back through the customer's broker, where the dock reads them.
    let mut listener = reply_listener(port, "dock-ext-listener", "dock-ext", "dock-ext-pass");
    topo_and_event_answered(&mut listener, &pubs, &site.dir);
    let s = wait_until(
        "the aggregator to read mosquitto's messages",
        Duration::from_secs(30),
        || {
            let s = scrape(&site);
            let got = (
                dji_messages(&s, "external", "aircraft"),
                dji_messages(&s, "external", "unknown_serial"),
            );
            if got == (2.0, 1.0) {
                Ok(s)
            } else {
                Err(format!("aircraft, unknown_serial: {got:?}"))
            }
        },
    );
    assert_eq!(dji_messages(&s, "embedded", "aircraft"), 0.0);
    // Only the registered aircraft's two positions are stored.
    stored(&site, 2.0);
    let (source, track) = on_the_map(&site);
    assert_eq!(source, "dji");
    assert_eq!(track.len(), 2, "{track:?}");
    assert!(close(track[1].1, 113.7032), "{track:?}");
    let map = api_get(site.api, "/api/v1/map");
    assert_eq!(map["drones"].as_array().map(Vec::len), Some(1), "{map}");
}

/// The customer's broker: mosquitto with password auth; the dock writes DJI's topics and reads
/// its replies, the aggregator's reader (`dji-reader`) only reads the three it uses and writes
/// the two replies.
fn dji_mosquitto(site: &Site, port: u16, extra: &str) -> Proc {
    let pw = site.dir.join("dji-mosquitto.passwd");
    mosquitto_passwords(
        &pw,
        &[
            ("dock-ext", "dock-ext-pass"),
            ("dji-reader", "dji-reader-pass"),
        ],
    );
    let acl = site.dir.join("dji-mosquitto.acl");
    std::fs::write(
        &acl,
        "user dock-ext\ntopic write thing/product/#\ntopic write sys/product/#\n\
         topic read sys/product/+/status_reply\ntopic read thing/product/+/events_reply\n\n\
         user dji-reader\ntopic read thing/product/+/osd\ntopic read thing/product/+/events\n\
         topic read sys/product/+/status\ntopic write sys/product/+/status_reply\n\
         topic write thing/product/+/events_reply\n",
    )
    .expect("acl");
    let conf = site.dir.join("dji-mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "password_file {}\nacl_file {}\npersistence false\nallow_anonymous false\n\
             listener {port} 127.0.0.1\n{extra}",
            pw.display(),
            acl.display()
        ),
    )
    .expect("conf");
    let mosq = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto".to_string()
    } else {
        "mosquitto".to_string()
    };
    let mut cmd = Command::new(mosq);
    cmd.arg("-c").arg(&conf);
    let p = Proc::spawn("mosquitto", cmd);
    wait_until("mosquitto to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    p
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (scripts/install-test-deps.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `[dji.external]` with `tls_ca_file`: the reader verifies the customer's broker (mosquitto's
/// TLS listener, a certificate from a CA made here) and reads through it; with another CA it
/// never connects and reads nothing.
#[test]
fn e2e_dji_from_an_external_mosquitto_over_tls() {
    let site = Site::new("dji-tls");
    let dir = site.dir.path();
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "broker.key",
            "-out",
            "broker.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "broker.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    // mosquitto started as root reads its key after dropping to its own user: this test-only
    // key must be readable by others.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("broker.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod broker.key");
    }
    let (port, tls_port) = (free_port(), free_port());
    let _mosq = dji_mosquitto(
        &site,
        port,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/broker.pem\nkeyfile {d}/broker.key\n",
            d = dir.display()
        ),
    );
    docks_file(&site, false);
    std::fs::write(site.dir.join("dji.pass"), "dji-reader-pass\n").expect("pass");
    let config = |ca: &str| {
        site.embedded_with(&format!(
            "[dji]\ndocks_file = \"docks.toml\"\nflush_interval_s = 1\n[dji.external]\nhost = \"127.0.0.1\"\n\
             port = {tls_port}\nusername = \"dji-reader\"\npassword_file = \"dji.pass\"\ntls_ca_file = \"{ca}\"\n"
        ))
    };
    let connected = |s: &Scrape| s.get("fumegrid_dji_mqtt_connected", &[("source", "external")]);

    // Another CA first: the broker's certificate is not trusted, so nothing is read.
    let mut agg = site.aggregator(&config("other-ca.pem"));
    let now = fumegrid_common::clock::Clock::system().now_ms();
    let f = aircraft_osd(&site.dir, 0, now, 22.9081, 113.7029);
    let topic = format!("thing/product/{AIRCRAFT}/osd");
    assert!(publish(port, DOCK, "dock-ext", "dock-ext-pass", &topic, &f));
    let s = wait_until("a failed TLS connection", Duration::from_secs(30), || {
        let s = scrape(&site);
        match s.get("fumegrid_dji_mqtt_errors_total", &[("source", "external")]) {
            Some(n) if n >= 1.0 => Ok(s),
            n => Err(format!("errors: {n:?}")),
        }
    });
    assert_eq!(connected(&s), Some(0.0));
    assert_eq!(dji_messages(&s, "external", "aircraft"), 0.0);
    agg.term();
    let (ok, err) = agg.wait_exit(Duration::from_secs(20));
    assert!(ok, "{err}");

    // The right CA: connected, read, stored.
    let _agg = site.aggregator(&config("ca.pem"));
    wait_until(
        "the DJI client to connect over TLS",
        Duration::from_secs(30),
        || match connected(&scrape(&site)) {
            Some(1.0) => Ok(()),
            v => Err(format!("connected: {v:?}")),
        },
    );
    let f = aircraft_osd(&site.dir, 1, now + 1000, 22.9083, 113.7029);
    assert!(publish(port, DOCK, "dock-ext", "dock-ext-pass", &topic, &f));
    stored(&site, 1.0);
    let (source, track) = on_the_map(&site);
    assert_eq!((source.as_str(), track.len()), ("dji", 1), "{track:?}");
}
