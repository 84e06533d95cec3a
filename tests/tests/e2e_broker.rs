//! The same delivery through mosquitto (an independent broker) instead of the embedded one, with
//! `mosquitto_sub` as an independent client; and hostile traffic that must be refused, counted
//! and logged once per reason while good traffic keeps flowing.

use std::process::Command;
use std::time::Duration;

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{self, Batch, Body, Item};
use fumegrid_tests::site::*;
use fumegrid_tests::*;
use serde_json::{Value, json};

#[test]
fn e2e_delivery_through_mosquitto_seen_by_mosquitto_sub() {
    let site = Site::new("mosquitto");
    let port = free_port();
    let _mosq = mosquitto(&site, port);
    let agg_cfg = site.aggregator_config(&format!(
        "[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"fumegrid-aggregator\"\npassword_file = \"agg.pass\"\n"
    ));
    let _agg = site.aggregator(&agg_cfg);
    // An independent subscriber, with read rights on everything, for the first batches.
    // Line-buffered (coreutils' stdbuf): its SUBACK line must arrive while it runs.
    let mut sub = Command::new("stdbuf");
    sub.args([
        "-oL",
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-u",
        "observer",
        "-P",
        "observer-pass",
    ])
    .args(["-t", "fumegrid/v1/+/up", "-C", "4", "-W", "30", "-v", "-d"]);
    let mut sub = Proc::spawn("mosquitto_sub", sub);
    // `-d` prints the broker's SUBACK: from then on it sees every batch.
    sub.wait_for("received SUBACK", Duration::from_secs(10));

    let base = consecutive_free_ports(2);
    let mut sims = fleet(base, 2);
    let gw_cfg = site.gateway_config(port, base, 2, 200, 50_000);
    let mut gw = site.gateway(&gw_cfg);
    let (ok, err) = sub.wait_exit(Duration::from_secs(40));
    assert!(ok, "mosquitto_sub saw no batches: {err}");
    // The messages (`-v`: topic, space, payload), not `-d`'s protocol log.
    let lines: Vec<String> = sub
        .stdout_lines()
        .into_iter()
        .filter(|l| l.starts_with("fumegrid/"))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let (topic, payload) = line.split_once(' ').expect("-v prints topic then payload");
        assert_eq!(topic, format!("fumegrid/v1/{GW}/up"));
        let b: Value = serde_json::from_str(payload).expect("a batch is JSON");
        // The gateway's hello (what does the aggregator hold of my stream?) comes first.
        if i == 0 {
            assert!(b["from_seq"].as_u64().is_some(), "hello first: {b}");
            assert!(b["mac"].as_str().is_some_and(|m| m.len() == 64));
            continue;
        }
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
        let key = fumegrid_common::keys::parse_key(KEY).expect("key");
        assert!(wire::open::<Batch>(payload.as_bytes(), &key).is_ok());
    }
    // More traffic than the four batches the subscriber saw goes through the aggregator.
    site.wait_growth(site.stored().0, "the subscriber's four batches");
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

    let key = fumegrid_common::keys::parse_key(KEY).expect("key");
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

    // Every hostile message is counted (the oversized one once, see below) ...
    let counted = |stats: &Value| {
        cases.iter().all(|(_, _, reason)| {
            let want = if *reason == "oversized" { 1 } else { 2 };
            stats["rejects"][reason].as_u64().unwrap_or(0) >= want
        })
    };
    wait_until(
        "every hostile message counted",
        Duration::from_secs(20),
        || {
            let stats = api_stats(site.api);
            if counted(&stats) { Ok(()) } else { Err(stats) }
        },
    );
    // ... and good traffic keeps flowing after all of that (a batch published after the
    // intruder's reaches the aggregator after it: one subscription, in order).
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

/// Key of the second gateway account some tests add (`intruder`).
const INTRUDER_KEY: &str = "9e8d7c6b5a4938271605f4e3d2c1b0a99e8d7c6b5a4938271605f4e3d2c1b0a9";

fn count_lines(log: &str, f: impl Fn(&Value) -> bool) -> usize {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| f(v))
        .count()
}

#[test]
fn e2e_mosquitto_with_the_documented_acls_enforces_the_same_rules() {
    let site = Site::new("mosquitto-acl");
    let port = free_port();
    let _mosq = mosquitto(&site, port);
    let agg_cfg = site.aggregator_config_with(
        &format!(
            "[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"fumegrid-aggregator\"\npassword_file = \"agg.pass\"\n"
        ),
        &format!("[[gateways]]\nid = \"intruder\"\nkey = \"{INTRUDER_KEY}\"\n"),
    );
    let mut agg = site.aggregator(&agg_cfg);
    let base = consecutive_free_ports(1);
    let mut sims = fleet(base, 1);
    let gw_cfg = site.gateway_config(port, base, 1, 200, 50_000);
    let mut gw = site.gateway(&gw_cfg);
    site.wait_growth(0, "start");

    // 1. Another account taking the ingest's or the gateway's client id, again and again.
    for _ in 0..20 {
        for id in ["fumegrid-aggregator-agg-e2e", "fumegrid-aggregator", GW] {
            let _ = fumegrid_tests::mqtt::RawClient::connect(port, id, "intruder", "intruder-pass")
                .expect("tcp");
        }
    }
    // 2. It subscribes to everything, publishes a batch sealed with the gateway's (stolen) key
    //    on the gateway's topic, then a batch of its own, all on one connection (mosquitto
    //    gives every connection of an account the same client id). The first message it may
    //    read is its own ack: not the gateway's retained status, traffic or acks.
    use fumegrid_tests::mqtt::{Connected, RawClient};
    use rumqttc::mqttbytes::v4::Packet;
    let (mut c, answer) =
        RawClient::connect(port, "intruder", "intruder", "intruder-pass").expect("tcp");
    assert_eq!(answer, Connected::Accepted);
    c.subscribe("fumegrid/#").expect("subscribe");
    let key = fumegrid_common::keys::parse_key(KEY).expect("key");
    let forged = wire::seal(&reading_batch(GW, 1), &key);
    assert!(
        c.publish_acked(&format!("fumegrid/v1/{GW}/up"), &forged)
            .expect("publish")
    );
    let ikey = fumegrid_common::keys::parse_key(INTRUDER_KEY).expect("key");
    let own = wire::seal(&reading_batch("intruder", 1), &ikey);
    assert!(
        c.publish_acked("fumegrid/v1/intruder/up", &own)
            .expect("publish")
    );
    let first = loop {
        if let Some(p) = c.received.iter().find_map(|p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        }) {
            break p;
        }
        match c.next_packet().expect("read") {
            Some(p) => c.received.push(p),
            None => panic!("mosquitto closed the intruder's connection"),
        }
    };
    assert_eq!(
        first.topic, "fumegrid/v1/intruder/ack",
        "the intruder read someone else's message"
    );
    let before = site.stored().0;
    site.wait_growth(before, "the intruder");
    let stats = api_stats(site.api);
    assert_eq!(
        stats["mqtt_connects"], 1,
        "the ingest was disconnected: {stats}"
    );
    sims.kill9();
    gw.term();
    let (ok, log) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "{log}");
    let connects = count_lines(&log, |v| {
        v["fields"]["message"] == "uplink connected" || v["message"] == "uplink connected"
    });
    assert_eq!(connects, 1, "the gateway was disconnected:\n{log}");
    agg.term();
    let _ = agg.wait_exit(Duration::from_secs(20));
    let db = rusqlite::Connection::open(site.dir.join("agg.sqlite3")).expect("store");
    let forged: i64 = db
        .query_row(
            "SELECT count(*) FROM series WHERE device = 'forged' AND gateway = ?1",
            [GW],
            |r| r.get(0),
        )
        .expect("query");
    assert_eq!(
        forged, 0,
        "the forged batch on the gateway's topic was stored"
    );
}

/// The site's embedded broker with a second account, `intruder`.
fn embedded_with_intruder(site: &Site, extra_broker: &str) -> std::path::PathBuf {
    std::fs::write(
        site.dir.join("users.toml"),
        format!(
            "[[users]]\nusername = \"{GW}\"\npassword = \"{PASS}\"\n\
             [[users]]\nusername = \"intruder\"\npassword = \"intruder-pass\"\n"
        ),
    )
    .expect("users");
    site.aggregator_config_with(
        &format!(
            "[broker]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{}\"\ncredentials_file = \"users.toml\"\n{extra_broker}",
            site.mqtt
        ),
        &format!("[[gateways]]\nid = \"intruder\"\nkey = \"{INTRUDER_KEY}\"\n"),
    )
}

#[test]
fn e2e_a_topic_flood_leaves_the_aggregator_memory_bounded_and_its_log_short() {
    let site = Site::new("flood");
    let cfg = embedded_with_intruder(&site, "");
    let mut agg = site.aggregator(&cfg);
    let base = consecutive_free_ports(1);
    let mut sims = fleet(base, 1);
    let gw_cfg = site.gateway_config(site.mqtt, base, 1, 200, 50_000);
    let mut gw = site.gateway(&gw_cfg);
    site.wait_growth(0, "start");

    let rss0 = fumegrid_tests::mqtt::rss_kib(agg.pid());
    // 3,000 topics of 8 KiB each: 24 MiB of names nobody needs.
    let flood = fumegrid_tests::mqtt::flood_unique_topics(
        site.mqtt,
        "intruder",
        "intruder-pass",
        3000,
        8192,
    )
    .expect("flood");
    let rss1 = fumegrid_tests::mqtt::rss_kib(agg.pid());
    let grown_mib = (rss1.saturating_sub(rss0)) as f64 / 1024.0;
    eprintln!("flood {flood:?}: aggregator RSS {rss0} KiB -> {rss1} KiB (+{grown_mib:.1} MiB)");
    assert!(
        grown_mib < 16.0,
        "the aggregator kept {grown_mib:.1} MiB after 3,000 unique topics ({flood:?})"
    );
    assert_eq!((flood.accepted, flood.refused), (0, 3000), "{flood:?}");

    // The gateway never noticed.
    let before = site.stored().0;
    site.wait_growth(before, "the flood");
    sims.kill9();
    gw.term();
    let (ok, gw_log) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "{gw_log}");
    agg.term();
    let (_, log) = agg.wait_exit(Duration::from_secs(20));
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2048, "a log line of {longest} bytes");
    let warns = count_lines(&log, |v| v["level"] == "WARN" && v["reason"] == "publish");
    assert_eq!(
        warns, 1,
        "refusals are logged once a minute per account:\n{log:.4000}"
    );
}

/// `openssl` with `args` in `dir`; panics with its stderr on failure.
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

/// A CA named `name` (`{name}.pem`, `{name}.key`) in `dir`, made for this test only.
fn make_ca(dir: &std::path::Path, name: &str) {
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
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

#[test]
fn e2e_tls_end_to_end_with_the_gateway_verifying_the_ca() {
    let site = Site::new("tls");
    let dir = site.dir.path();
    make_ca(dir, "ca");
    make_ca(dir, "other-ca");
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
    let cfg = embedded_with_intruder(
        &site,
        "tls_cert_file = \"broker.pem\"\ntls_key_file = \"broker.key\"\n",
    );
    let mut agg = site.aggregator(&cfg);
    let base = consecutive_free_ports(1);
    let mut sims = fleet(base, 1);
    let gw_cfg = site.gateway_config(site.mqtt, base, 1, 200, 50_000);
    let text = std::fs::read_to_string(&gw_cfg).expect("gateway config");
    let text = text.replace(
        "key_file = \"gw.key\"\n",
        "key_file = \"gw.key\"\ntls_ca_file = \"ca.pem\"\n",
    );
    assert!(text.contains("tls_ca_file"));
    std::fs::write(&gw_cfg, text).expect("gateway config");
    let mut gw = site.gateway(&gw_cfg);
    // Readings arrive over TLS, verified against the CA.
    site.wait_growth(0, "start over TLS");

    let pub_with = |extra: &[&str]| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &site.mqtt.to_string(),
                "-u",
                GW,
                "-P",
                PASS,
                "-i",
                GW,
            ])
            .args([
                "-q",
                "1",
                "-t",
                &format!("fumegrid/v1/{GW}/status"),
                "-m",
                "x",
            ])
            .args(extra)
            .output()
            .expect("mosquitto_pub")
    };
    // An independent TLS client: the right CA works; another CA, or no TLS at all, does not.
    let ok = pub_with(&["--cafile", dir.join("ca.pem").to_str().expect("path")]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let wrong = pub_with(&["--cafile", dir.join("other-ca.pem").to_str().expect("path")]);
    assert!(
        !wrong.status.success(),
        "a broker certificate from another CA was accepted"
    );
    let plain = pub_with(&[]);
    assert!(
        !plain.status.success(),
        "plain MQTT accepted on the TLS listener"
    );

    let before = site.stored().0;
    site.wait_growth(before, "the other clients");
    sims.kill9();
    gw.term();
    let (ok, log) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "{log}");
    agg.term();
    let _ = agg.wait_exit(Duration::from_secs(20));
}

/// Benchmark (BENCHMARKS.md, "Broker isolation"): the aggregator's resident memory before and
/// after `FLOOD_COUNT` (30000) publishes, each to its own `FLOOD_TOPIC_BYTES` (1024) byte topic,
/// from one account. Prints the figures; run with `--ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_topic_flood_rss() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (count, bytes) = (env("FLOOD_COUNT", 30_000), env("FLOOD_TOPIC_BYTES", 1024));
    let site = Site::new("flood-bench");
    let cfg = embedded_with_intruder(&site, "");
    let mut agg = site.aggregator(&cfg);
    let base = consecutive_free_ports(1);
    let mut sims = fleet(base, 1);
    let gw_cfg = site.gateway_config(site.mqtt, base, 1, 200, 50_000);
    let mut gw = site.gateway(&gw_cfg);
    site.wait_growth(0, "start");
    let rss0 = fumegrid_tests::mqtt::rss_kib(agg.pid());
    let flood = fumegrid_tests::mqtt::flood_unique_topics(
        site.mqtt,
        "intruder",
        "intruder-pass",
        count,
        bytes as usize,
    )
    .expect("flood");
    let rss1 = fumegrid_tests::mqtt::rss_kib(agg.pid());
    // Wait (bounded) for the gateway's next batch, then look again.
    let before = site.stored().0;
    let deadline = fumegrid_tests::now() + Duration::from_secs(20);
    while site.stored().0 <= before && fumegrid_tests::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let flowing = site.stored().0 > before;
    let rss2 = fumegrid_tests::mqtt::rss_kib(agg.pid());
    sims.kill9();
    gw.term();
    let _ = gw.wait_exit(Duration::from_secs(20));
    agg.term();
    let (_, log) = agg.wait_exit(Duration::from_secs(20));
    println!(
        "{count} publishes to unique {bytes}-byte topics from one account: {} kept, {} refused, {} connections, {:.1} s",
        flood.accepted, flood.refused, flood.connections, flood.secs
    );
    println!(
        "aggregator RSS: {:.1} MiB before, {:.1} MiB right after, {:.1} MiB up to 20 s later (gateway's readings still stored: {flowing})",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        rss2 as f64 / 1024.0
    );
    println!(
        "aggregator log: {} bytes, longest line {} bytes",
        log.len(),
        log.lines().map(str::len).max().unwrap_or(0)
    );
}
