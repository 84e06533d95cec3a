//! The same delivery through mosquitto (an independent broker) instead of the embedded one, with
//! `mosquitto_sub` as an independent client; and hostile traffic that must be refused, counted
//! and logged once per reason while good traffic keeps flowing.

use std::process::Command;
use std::time::{Duration, Instant};

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{self, Batch, Body, Item};
use fumegrid_tests::site::*;
use fumegrid_tests::*;
use serde_json::{Value, json};

/// mosquitto on `port` with password auth and per-gateway ACLs (a second wall besides the MAC).
fn mosquitto(site: &Site, port: u16) -> Proc {
    let pw = site.dir.join("mosquitto.passwd");
    for (i, (user, pass)) in [
        (GW, PASS),
        ("fumegrid-aggregator", "agg-pass"),
        ("intruder", "intruder-pass"),
    ]
    .iter()
    .enumerate()
    {
        let mut c = Command::new("mosquitto_passwd");
        c.arg("-b");
        if i == 0 {
            c.arg("-c");
        }
        let st = c
            .arg(&pw)
            .arg(user)
            .arg(pass)
            .status()
            .expect("mosquitto_passwd (scripts/install-test-deps.sh)");
        assert!(st.success());
    }
    let acl = site.dir.join("mosquitto.acl");
    std::fs::write(
        &acl,
        "user fumegrid-aggregator\ntopic readwrite fumegrid/#\n\n\
         pattern write fumegrid/v1/%u/up\npattern write fumegrid/v1/%u/status\npattern read fumegrid/v1/%u/ack\n",
    )
    .expect("acl");
    let conf = site.dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\n",
            pw.display(),
            acl.display()
        ),
    )
    .expect("conf");
    std::fs::write(site.dir.join("agg.pass"), "agg-pass\n").expect("pass");
    let mosq = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto".into()
    } else {
        "mosquitto".to_string()
    };
    let mut cmd = Command::new(mosq);
    cmd.arg("-c").arg(&conf);
    let p = Proc::spawn("mosquitto", cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

#[test]
fn e2e_delivery_through_mosquitto_seen_by_mosquitto_sub() {
    let site = Site::new("mosquitto");
    let port = free_port();
    let _mosq = mosquitto(&site, port);
    let agg_cfg = site.aggregator_config(&format!(
        "[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"fumegrid-aggregator\"\npassword_file = \"agg.pass\"\n"
    ));
    let _agg = site.aggregator(&agg_cfg);
    // An independent subscriber, with the aggregator's rights, for the first batches.
    let mut sub = Command::new("mosquitto_sub");
    sub.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-u",
        "fumegrid-aggregator",
        "-P",
        "agg-pass",
    ])
    .args(["-t", "fumegrid/v1/+/up", "-C", "3", "-W", "30", "-v"]);
    let mut sub = Proc::spawn("mosquitto_sub", sub);
    std::thread::sleep(Duration::from_millis(300));

    let base = consecutive_free_ports(2);
    let mut sims = fleet(base, 2);
    let gw_cfg = site.gateway_config(port, base, 2, 200, 50_000);
    let mut gw = site.gateway(&gw_cfg);
    let (ok, err) = sub.wait_exit(Duration::from_secs(40));
    assert!(ok, "mosquitto_sub saw no batches: {err}");
    let lines = sub.stdout_lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        let (topic, payload) = line.split_once(' ').expect("-v prints topic then payload");
        assert_eq!(topic, format!("fumegrid/v1/{GW}/up"));
        let b: Value = serde_json::from_str(payload).expect("a batch is JSON");
        assert_eq!(b["gateway"], GW);
        assert!(b["stream"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(b["mac"].as_str().is_some_and(|m| m.len() == 64));
        let items = b["items"].as_array().expect("items");
        assert!(!items.is_empty());
        for it in items {
            assert!(it["seq"].as_u64().is_some_and(|s| s >= 1), "{it}");
            assert!(
                ["reading", "event"].contains(&it["body"]["kind"].as_str().unwrap_or("")),
                "{it}"
            );
        }
        // And the MAC checks out with the gateway's key, over the bytes mosquitto delivered.
        let key = fumegrid_gateway::config::parse_hex_key(KEY).expect("key");
        assert!(wire::open::<Batch>(payload.as_bytes(), &key).is_ok());
    }
    std::thread::sleep(Duration::from_secs(3));
    sims.kill9();
    let (count, min, max, _) = site.wait_settled(Duration::from_secs(5), Duration::from_secs(60));
    gw.term();
    let (ok, err) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "{err}");
    let (left, next_seq) = site.outbox_after_stop();
    assert_eq!((left, min, max, count), (0, 1, next_seq - 1, next_seq - 1));
}

fn reading_batch(gateway: &str, seq: u64) -> Batch {
    let r = Reading {
        device: "forged".into(),
        unit: None,
        metric: Metric::FumeMgM3,
        value: Some(9.9),
        quality: Quality::Ok,
        ts_ms: 1,
    };
    Batch {
        gateway: gateway.into(),
        stream: "forged-stream".into(),
        sent_ms: 1,
        items: vec![Item {
            seq,
            body: Body::Reading(r),
        }],
    }
}

fn publish(port: u16, user: &str, pass: &str, topic: &str, file: &std::path::Path) -> bool {
    Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            user,
            "-P",
            pass,
            "-q",
            "1",
            "-t",
            topic,
            "-f",
        ])
        .arg(file)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn api_stats(api: u16) -> Value {
    api_get(api, "/api/v1/stats")
}

#[test]
fn e2e_hostile_traffic_is_refused_counted_and_good_traffic_continues() {
    let site = Site::new("hostile");
    let port = free_port();
    let _mosq = mosquitto(&site, port);
    let agg_cfg = site.aggregator_config(&format!(
        "[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"fumegrid-aggregator\"\npassword_file = \"agg.pass\"\n"
    ));
    let mut agg = site.aggregator(&agg_cfg);
    let base = consecutive_free_ports(1);
    let mut sims = fleet(base, 1);
    let gw_cfg = site.gateway_config(port, base, 1, 200, 50_000);
    let mut gw = site.gateway(&gw_cfg);
    site.wait_growth(0, "start");

    let key = fumegrid_gateway::config::parse_hex_key(KEY).expect("key");
    let up = format!("fumegrid/v1/{GW}/up");
    let f = |name: &str, bytes: &[u8]| {
        let p = site.dir.join(name);
        std::fs::write(&p, bytes).expect("write payload");
        p
    };
    // 1. No credentials: the broker refuses the connection.
    let anon = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            &up,
            "-m",
            "x",
        ])
        .output()
        .expect("mosquitto_pub");
    assert!(!anon.status.success(), "anonymous publish accepted");
    // The gateway's own credentials, used by someone holding them but not the key (a stolen
    // password): everything below reaches the aggregator and must be refused there.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bad-mac",
            wire::seal(&reading_batch(GW, 1), b"not the gateway key at all 12345"),
            "bad_mac",
        ),
        (
            "unsigned",
            b"{\"gateway\": \"gw-e2e\", oops".to_vec(),
            "no_mac",
        ),
        (
            "malformed",
            wire::seal_bytes(b"{\"gateway\": \"gw-e2e\", oops}".to_vec(), &key),
            "malformed",
        ),
        ("garbage", vec![0xff, 0x00, 0x13, 0x37], "no_mac"),
        (
            "unknown-field",
            wire::seal(
                &json!({"gateway": GW, "stream": "s", "sent_ms": 1, "items": [], "priority": "urgent"}),
                &key,
            ),
            "unknown_field",
        ),
        (
            "other-gateway",
            wire::seal(&reading_batch("gw-other", 1), &key),
            "gateway_mismatch",
        ),
        (
            "oversized",
            wire::seal(
                &json!({"gateway": GW, "stream": "s", "sent_ms": 1, "items": [], "pad": "x".repeat(3 << 20)}),
                &key,
            ),
            "oversized",
        ),
    ];
    for (name, payload, _) in &cases {
        for _ in 0..2 {
            assert!(
                publish(port, GW, PASS, &up, &f(name, payload)),
                "mosquitto_pub {name} failed"
            );
        }
    }
    // The ACL (a second wall with mosquitto): another account cannot even publish there.
    let intruder = publish(
        port,
        "intruder",
        "intruder-pass",
        &up,
        &f("intruder", &wire::seal(&reading_batch(GW, 1), &key)),
    );
    assert!(
        intruder,
        "mosquitto accepts the publish (and drops it by ACL)"
    );

    // Good traffic keeps flowing after all of that.
    std::thread::sleep(Duration::from_secs(2));
    let before = site.stored().0;
    site.wait_growth(before, "the hostile traffic");

    let stats = api_stats(site.api);
    for (name, _, reason) in &cases {
        let n = stats["rejects"][reason].as_u64().unwrap_or(0);
        // An oversized message drops the aggregator's connection before it can be read; the
        // second copy, published during that reconnect, is discarded by the broker (clean
        // session) and never reaches the aggregator at all.
        let want = if *reason == "oversized" { 1 } else { 2 };
        assert!(
            n >= want,
            "{name}: reject `{reason}` counted {n} times, stats: {stats}"
        );
    }
    assert_eq!(site.duplicate_readings(), 0);
    sims.kill9();
    gw.term();
    let _ = gw.wait_exit(Duration::from_secs(20));
    agg.term();
    let (_, log) = agg.wait_exit(Duration::from_secs(20));
    // Each reason is logged once (then only counted), with the reason named.
    for (_, _, reason) in &cases {
        let warns = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["level"] == "WARN" && v["reason"] == *reason)
            .count();
        assert_eq!(warns, 1, "reason {reason} logged {warns} times:\n{log}");
    }
    // The forged reading never reached the store.
    let db = rusqlite::Connection::open(site.dir.join("agg.sqlite3")).expect("store");
    let forged: i64 = db
        .query_row(
            "SELECT count(*) FROM series WHERE device = 'forged'",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert_eq!(forged, 0);
}
