//! In-process end to end: the aggregator with its embedded broker on free ports, and rumqttc
//! clients acting as gateways over real sockets.

use std::path::PathBuf;
use std::time::Duration;

use fumegrid_aggregator::config::Config;
use fumegrid_aggregator::daemon;
use fumegrid_common::diag::Source;
use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{self, Ack, Batch, Body, Channel, Item, State, Status};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, QoS};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const KEY_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const KEY_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

fn key(hex: &str) -> Vec<u8> {
    fumegrid_common::keys::parse_key(hex).expect("key")
}

fn setup(name: &str) -> Config {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("fumegrid-agg-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("users.toml"),
        "[[users]]\nusername = \"gw-a\"\npassword = \"pass-a-123\"\n\
         [[users]]\nusername = \"gw-b\"\npassword = \"pass-b-123\"\n",
    )
    .expect("users");
    std::fs::write(
        dir.join("tokens.toml"),
        format!(
            "[[tokens]]\nname = \"leader\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
            hex::encode(fumegrid_aggregator::auth::sha256(VIEWER))
        ),
    )
    .expect("tokens");
    let text = format!(
        "[aggregator]\nid = \"test\"\n[store]\npath = \"agg.sqlite3\"\nsynchronous = \"normal\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\ntokens_file = \"tokens.toml\"\n\
         [broker]\nlisten = \"127.0.0.1:0\"\ncredentials_file = \"users.toml\"\n\
         [[gateways]]\nid = \"gw-a\"\nkey = \"{KEY_A}\"\n[[gateways]]\nid = \"gw-b\"\nkey = \"{KEY_B}\"\n"
    );
    Config::from_source(&Source::new(dir.join("agg.toml"), text)).unwrap_or_else(|d| panic!("{d}"))
}

fn batch(gw: &str, seqs: std::ops::RangeInclusive<u64>) -> Batch {
    Batch {
        gateway: gw.into(),
        stream: "stream-1".into(),
        sent_ms: 1,
        items: seqs
            .map(|seq| Item {
                seq,
                body: Body::Reading(Reading {
                    device: "rest-1".into(),
                    unit: None,
                    metric: Metric::FumeMgM3,
                    value: Some(seq as f64 / 10.0),
                    quality: Quality::Ok,
                    ts_ms: 1_700_000_000_000 + seq as i64 * 1000,
                }),
            })
            .collect(),
    }
}

fn gateway(id: &str, port: u16, user: Option<(&str, &str)>) -> (AsyncClient, EventLoop) {
    gateway_as(id, id, port, user)
}

/// A client with client id `client_id`, whose Last Will is `id`'s sealed offline status.
fn gateway_as(
    id: &str,
    client_id: &str,
    port: u16,
    user: Option<(&str, &str)>,
) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20)
        .set_keep_alive(Duration::from_secs(10));
    if let Some((u, p)) = user {
        o.set_credentials(u, p);
    }
    let k = match id {
        "gw-b" => key(KEY_B),
        _ => key(KEY_A),
    };
    let offline = wire::seal(
        &Status {
            state: State::Offline,
            ts_ms: None,
            version: None,
        },
        &k,
    );
    o.set_last_will(LastWill::new(
        wire::topic(id, Channel::Status),
        offline,
        QoS::AtLeastOnce,
        true,
    ));
    AsyncClient::new(o, 64)
}

/// Polls until a CONNACK (Ok) or an error (Err).
async fn connect(ev: &mut EventLoop) -> Result<(), String> {
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(a))) => {
                    return if a.code == rumqttc::ConnectReturnCode::Success {
                        Ok(())
                    } else {
                        Err(format!("{:?}", a.code))
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    r.unwrap_or_else(|_| Err("timeout".into()))
}

/// Polls until a publish arrives on `topic`.
async fn next_on(ev: &mut EventLoop, topic: &str) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == topic => {
                    return p.payload.to_vec();
                }
                Ok(_) => {}
                Err(e) => panic!("gateway connection failed: {e}"),
            }
        }
    })
    .await
    .expect("ack in time")
}

/// The viewer token of [`setup`]'s tokens file.
const VIEWER: &str = "viewer-token-for-the-e2e-test";

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    http_get_as(addr, path, Some(VIEWER)).await
}

async fn http_get_as(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8(buf).expect("utf8");
    let status: u16 = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, serde_json::from_str(body).expect("json body"))
}

/// Polls `/api/v1/stats` until `f` holds (5 s at most); panics with the last stats seen.
async fn stats_until(addr: std::net::SocketAddr, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, v) = http_get(addr, "/api/v1/stats").await;
        if f(&v) {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("stats never matched within 5 s; last: {last}");
}

#[tokio::test]
async fn gateway_batch_is_stored_acked_and_visible() {
    let cfg = setup("main");
    let cancel = CancellationToken::new();
    let agg = daemon::start(&cfg, cancel.clone()).await.expect("start");
    let port: u16 = agg
        .broker_addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    let api = agg.api_addr;

    // Anonymous and wrong-password clients are refused by the broker.
    let (_c, mut ev) = gateway("anon", port, None);
    assert!(
        connect(&mut ev).await.is_err(),
        "anonymous connect must fail"
    );
    let (_c, mut ev) = gateway("gw-a", port, Some(("gw-a", "wrong-password")));
    assert!(connect(&mut ev).await.is_err(), "wrong password must fail");

    // Gateway A: status, a sealed batch, the sealed ack.
    let (a, mut ev_a) = gateway("gw-a", port, Some(("gw-a", "pass-a-123")));
    connect(&mut ev_a).await.expect("gw-a connects");
    let ack_topic = wire::topic("gw-a", Channel::Ack);
    a.subscribe(&ack_topic, QoS::AtLeastOnce)
        .await
        .expect("sub");
    let online = wire::seal(
        &Status {
            state: State::Online,
            ts_ms: Some(1),
            version: Some("test".into()),
        },
        &key(KEY_A),
    );
    a.publish(
        wire::topic("gw-a", Channel::Status),
        QoS::AtLeastOnce,
        true,
        online,
    )
    .await
    .expect("status");
    let b = batch("gw-a", 1..=3);
    let up = wire::topic("gw-a", Channel::Up);
    a.publish(&up, QoS::AtLeastOnce, false, wire::seal(&b, &key(KEY_A)))
        .await
        .expect("publish");
    let ack: Ack =
        wire::open(&next_on(&mut ev_a, &ack_topic).await, &key(KEY_A)).expect("sealed ack");
    assert_eq!(ack, Ack::of("stream-1".into(), vec![(1, 3)]));

    // The same batch again (a resend): acked again, stored once.
    a.publish(&up, QoS::AtLeastOnce, false, wire::seal(&b, &key(KEY_A)))
        .await
        .expect("publish");
    let ack: Ack =
        wire::open(&next_on(&mut ev_a, &ack_topic).await, &key(KEY_A)).expect("sealed ack");
    assert_eq!(ack.ranges, vec![(1, 3)]);

    let (s, v) = http_get(api, "/api/v1/devices/rest-1/readings?metric=fume_mg_m3").await;
    assert_eq!(s, 200);
    assert_eq!(v["count"], 3, "{v}");
    assert_eq!(v["readings"][2]["value"], 0.3);
    let (s, v) = http_get_as(api, "/api/v1/devices", None).await;
    assert_eq!(s, 401, "no token: {v}");
    let (s, _) = http_get_as(api, "/api/v1/devices", Some("guess")).await;
    assert_eq!(s, 401);
    let (_, v) = http_get(api, "/api/v1/devices").await;
    assert_eq!(v["devices"][0]["latest"][0]["ts_ms"], 1_700_000_003_000i64);
    let (_, v) = http_get(api, "/api/v1/gateways").await;
    let gw_a = v["gateways"]
        .as_array()
        .expect("arr")
        .iter()
        .find(|g| g["id"] == "gw-a")
        .expect("gw-a listed")
        .clone();
    assert_eq!(gw_a["online"], true, "{v}");
    let (s, _) = http_get(api, "/api/v1/devices/rest-1/readings?from=x").await;
    assert_eq!(s, 400);

    // Gateway A claiming B on its own topic: the body does not match the topic; an unsealed
    // payload has no MAC. Both counted, neither stored, ingest goes on. (On B's topic the broker
    // itself disconnects A: see `broker_rules_*`.)
    let forged = wire::seal(&batch("gw-b", 10..=12), &key(KEY_A));
    a.publish(&up, QoS::AtLeastOnce, false, forged)
        .await
        .expect("publish");
    a.publish(&up, QoS::AtLeastOnce, false, b"not json at all".to_vec())
        .await
        .expect("publish");
    let b2 = batch("gw-a", 4..=5);
    a.publish(&up, QoS::AtLeastOnce, false, wire::seal(&b2, &key(KEY_A)))
        .await
        .expect("publish");
    let ack: Ack =
        wire::open(&next_on(&mut ev_a, &ack_topic).await, &key(KEY_A)).expect("sealed ack");
    assert_eq!(ack.ranges, vec![(4, 5)], "ingest goes on after rejects");
    let st = stats_until(api, |v| v["rejects_total"] == 2).await;
    assert_eq!(st["rejects"]["gateway_mismatch"], 1, "{st}");
    assert_eq!(st["rejects"]["no_mac"], 1, "{st}");
    assert_eq!(st["items_accepted"], 5, "{st}");
    assert_eq!(st["items_duplicate"], 3, "{st}");
    assert_eq!(st["batches_accepted"], 3, "{st}");
    let (_, v) = http_get(api, "/api/v1/devices/rest-1/readings?gateway=gw-b").await;
    assert_eq!(v["count"], 0, "nothing stored under gw-b");

    // Gateway A dies without DISCONNECT: its Last Will marks it offline.
    drop(ev_a);
    drop(a);
    // Poll (5 s at most) until the will is processed; the assertion below names what was seen.
    for _ in 0..200 {
        let (_, v) = http_get(api, "/api/v1/gateways").await;
        if v["gateways"][0]["online"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, v) = http_get(api, "/api/v1/gateways").await;
    assert_eq!(v["gateways"][0]["online"], false, "{v}");

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), agg.stopped())
        .await
        .expect("stops");
}

fn alarm(phase: wire::AlarmPhase, ts_ms: i64, value: f64) -> Body {
    Body::Alarm(wire::Alarm {
        id: "rest-1:exceedance:fume_mg_m3:1700000000000".into(),
        device: "rest-1".into(),
        kind: wire::AlarmKind::Exceedance,
        metric: Some(Metric::FumeMgM3),
        phase,
        started_ms: 1_700_000_000_000,
        ts_ms,
        cleared_ms: (phase == wire::AlarmPhase::Cleared).then_some(ts_ms),
        value: Some(value),
        peak: Some(value),
        peak_ms: Some(ts_ms),
        limit: Some(2.0),
        suppressed: false,
        message: format!("10-min average {value} mg/m³ over the 2.0 limit"),
    })
}

#[tokio::test]
async fn alarm_episodes_are_stored_acked_and_visible() {
    use wire::AlarmPhase::{Cleared, Raised, Updated};
    let cfg = setup("alarms");
    let cancel = CancellationToken::new();
    let agg = daemon::start(&cfg, cancel.clone()).await.expect("start");
    let port: u16 = agg
        .broker_addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    let api = agg.api_addr;
    let (a, mut ev_a) = gateway("gw-a", port, Some(("gw-a", "pass-a-123")));
    connect(&mut ev_a).await.expect("gw-a connects");
    let ack_topic = wire::topic("gw-a", Channel::Ack);
    a.subscribe(&ack_topic, QoS::AtLeastOnce)
        .await
        .expect("sub");
    let up = wire::topic("gw-a", Channel::Up);
    let mut send = async |items: Vec<(u64, Body)>| -> Ack {
        let b = Batch {
            gateway: "gw-a".into(),
            stream: "stream-1".into(),
            sent_ms: 1,
            items: items
                .into_iter()
                .map(|(seq, body)| Item { seq, body })
                .collect(),
        };
        a.publish(&up, QoS::AtLeastOnce, false, wire::seal(&b, &key(KEY_A)))
            .await
            .expect("publish");
        wire::open(&next_on(&mut ev_a, &ack_topic).await, &key(KEY_A)).expect("sealed ack")
    };

    // Raised with readings; then the clear; then the update that was delayed.
    let t0 = 1_700_000_000_000i64;
    let mut first = batch("gw-a", 1..=2).items;
    first.push(Item {
        seq: 3,
        body: alarm(Raised, t0 + 600_000, 2.4),
    });
    let first: Vec<(u64, Body)> = first.into_iter().map(|i| (i.seq, i.body)).collect();
    assert_eq!(send(first).await.ranges, vec![(1, 3)]);
    let (s, v) = http_get(api, "/api/v1/alarms").await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["count"].as_u64(), v["alarms"][0]["phase"].as_str()),
        (Some(1), Some("raised")),
        "{v}"
    );
    assert_eq!(
        send(vec![(5, alarm(Cleared, t0 + 900_000, 1.1))])
            .await
            .ranges,
        vec![(5, 5)]
    );
    assert_eq!(
        send(vec![(4, alarm(Updated, t0 + 700_000, 3.2))])
            .await
            .ranges,
        vec![(4, 4)]
    );

    let (_, v) = http_get(api, "/api/v1/alarms").await;
    assert_eq!(
        v["count"], 0,
        "cleared, not reopened by the late update: {v}"
    );
    let (_, v) = http_get(api, "/api/v1/devices/rest-1/alarms").await;
    let e = &v["alarms"][0];
    assert_eq!(
        (
            e["phase"].as_str(),
            e["peak"].as_f64(),
            e["updates"].as_i64()
        ),
        (Some("cleared"), Some(3.2), Some(3)),
        "{v}"
    );
    let (s, v) = http_get(
        api,
        "/api/v1/alarms/gw-a/rest-1:exceedance:fume_mg_m3:1700000000000",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["transitions"].as_array().map(Vec::len), Some(3), "{v}");

    // A transition that breaks the contract is refused alone: the good item beside it is
    // stored, both are acked (the bad one kept as an `item_refused` event, counted), so a
    // gateway never resends it forever with everything behind it held up.
    let mut bad = alarm(Raised, t0, 1.0);
    if let Body::Alarm(x) = &mut bad {
        x.started_ms = t0 + 1;
        x.id = "bad".into();
    }
    let next = send(vec![(6, bad), (7, alarm(Updated, t0 + 800_000, 2.0))]).await;
    assert_eq!(next.ranges, vec![(6, 7)]);
    let st = stats_until(api, |v| v["rejects_total"] == 1).await;
    assert_eq!(st["rejects"]["bad_item"], 1, "{st}");
    let (s, _) = http_get(api, "/api/v1/alarms/gw-a/bad").await;
    assert_eq!(s, 404);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), agg.stopped())
        .await
        .expect("stops");
}

fn broker_port(agg: &daemon::Running) -> u16 {
    agg.broker_addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port")
}

/// Polls until the broker closes the connection (Ok) or `what` is acknowledged (Err): a client
/// that broke a rule must be disconnected, not served.
async fn disconnected(ev: &mut EventLoop, what: &str) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(a))) => {
                    return Err(format!("{what}: SUBACK {:?}", a.return_codes));
                }
                Ok(Event::Incoming(Incoming::PubAck(_))) => {
                    return Err(format!("{what}: PUBACK"));
                }
                Ok(_) => {}
                Err(_) => return Ok(()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("{what}: still connected after 5 s")))
}

/// Publishes a batch as gw-a on its existing connection and waits for its ack: fails if that
/// connection was dropped in between.
async fn still_served(a: &AsyncClient, ev_a: &mut EventLoop, seqs: std::ops::RangeInclusive<u64>) {
    let want = vec![(*seqs.start(), *seqs.end())];
    a.publish(
        wire::topic("gw-a", Channel::Up),
        QoS::AtLeastOnce,
        false,
        wire::seal(&batch("gw-a", seqs), &key(KEY_A)),
    )
    .await
    .expect("publish");
    let ack: Ack = wire::open(
        &next_on(ev_a, &wire::topic("gw-a", Channel::Ack)).await,
        &key(KEY_A),
    )
    .expect("sealed ack");
    assert_eq!(ack.ranges, want);
}

#[tokio::test]
async fn broker_rules_a_client_id_is_bound_to_its_account() {
    let cfg = setup("client-id");
    let cancel = CancellationToken::new();
    let agg = daemon::start(&cfg, cancel.clone()).await.expect("start");
    let port = broker_port(&agg);
    let (a, mut ev_a) = gateway("gw-a", port, Some(("gw-a", "pass-a-123")));
    connect(&mut ev_a).await.expect("gw-a connects");
    a.subscribe(wire::topic("gw-a", Channel::Ack), QoS::AtLeastOnce)
        .await
        .expect("sub");
    still_served(&a, &mut ev_a, 1..=2).await;
    let connects = agg.stats.snapshot().mqtt_connects;

    // gw-b's account, trying gw-a's client id and the aggregator ingest's (old and new names),
    // many times at once: refused at CONNECT, and nobody is kicked.
    let mut tries = Vec::new();
    for round in 0..10 {
        for id in [
            "gw-a",
            "fumegrid-ingest-test",
            "fumegrid-aggregator-test",
            "",
        ] {
            tries.push(tokio::spawn(async move {
                let (_c, mut ev) = gateway_as("gw-b", id, port, Some(("gw-b", "pass-b-123")));
                let r = connect(&mut ev).await;
                assert!(r.is_err(), "round {round}: gw-b connected as `{id}`");
            }));
        }
    }
    for t in tries {
        t.await.expect("attempt");
    }
    // A correct login of gw-b as itself still works.
    let (_b, mut ev_b) = gateway("gw-b", port, Some(("gw-b", "pass-b-123")));
    connect(&mut ev_b).await.expect("gw-b connects as itself");

    still_served(&a, &mut ev_a, 3..=4).await;
    assert_eq!(
        agg.stats.snapshot().mqtt_connects,
        connects,
        "the ingest was disconnected"
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), agg.stopped())
        .await
        .expect("stops");
}

#[tokio::test]
async fn broker_rules_an_account_publishes_and_subscribes_to_its_own_topics_only() {
    let cfg = setup("acl");
    let cancel = CancellationToken::new();
    let agg = daemon::start(&cfg, cancel.clone()).await.expect("start");
    let port = broker_port(&agg);
    let api = agg.api_addr;
    let (a, mut ev_a) = gateway("gw-a", port, Some(("gw-a", "pass-a-123")));
    connect(&mut ev_a).await.expect("gw-a connects");
    a.subscribe(wire::topic("gw-a", Channel::Ack), QoS::AtLeastOnce)
        .await
        .expect("sub");
    still_served(&a, &mut ev_a, 1..=1).await;

    let b_login = Some(("gw-b", "pass-b-123"));
    // Subscribing to everything, or to gw-a's acks.
    for filter in [
        "fumegrid/#",
        "#",
        "fumegrid/v1/+/ack",
        "fumegrid/v1/gw-a/ack",
    ] {
        let (b, mut ev) = gateway("gw-b", port, b_login);
        connect(&mut ev).await.expect("gw-b connects");
        b.subscribe(filter, QoS::AtLeastOnce).await.expect("queue");
        disconnected(&mut ev, &format!("subscribe {filter}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Publishing to gw-a's topics (a batch sealed with gw-a's key, as if stolen), or anywhere.
    let forged = wire::seal(&batch("gw-a", 100..=100), &key(KEY_A));
    for topic in [
        wire::topic("gw-a", Channel::Up),
        wire::topic("gw-a", Channel::Status),
        wire::topic("gw-a", Channel::Ack),
        wire::topic("gw-b", Channel::Ack),
        format!("fumegrid/v1/{}/up", "x".repeat(30_000)),
    ] {
        let (b, mut ev) = gateway("gw-b", port, b_login);
        connect(&mut ev).await.expect("gw-b connects");
        b.publish(&topic, QoS::AtLeastOnce, false, forged.clone())
            .await
            .expect("queue");
        disconnected(&mut ev, &format!("publish to {:.40}", topic))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // A Last Will on someone else's status is refused at CONNECT.
    let mut o = MqttOptions::new("gw-b", "127.0.0.1", port);
    o.set_credentials("gw-b", "pass-b-123");
    o.set_last_will(LastWill::new(
        wire::topic("gw-a", Channel::Status),
        wire::seal(
            &Status {
                state: State::Offline,
                ts_ms: None,
                version: None,
            },
            &key(KEY_A),
        ),
        QoS::AtLeastOnce,
        true,
    ));
    let (_c, mut ev) = AsyncClient::new(o, 8);
    assert!(
        connect(&mut ev).await.is_err(),
        "will on gw-a's status accepted"
    );

    // gw-b on its own topics is served.
    let (b, mut ev_b) = gateway("gw-b", port, b_login);
    connect(&mut ev_b).await.expect("gw-b connects");
    b.subscribe(wire::topic("gw-b", Channel::Ack), QoS::AtLeastOnce)
        .await
        .expect("sub");
    b.publish(
        wire::topic("gw-b", Channel::Up),
        QoS::AtLeastOnce,
        false,
        wire::seal(&batch("gw-b", 1..=1), &key(KEY_B)),
    )
    .await
    .expect("publish");
    let ack: Ack = wire::open(
        &next_on(&mut ev_b, &wire::topic("gw-b", Channel::Ack)).await,
        &key(KEY_B),
    )
    .expect("sealed ack");
    assert_eq!(ack.ranges, vec![(1, 1)]);

    // gw-a never noticed, and the forged batch was never stored.
    still_served(&a, &mut ev_a, 2..=2).await;
    let (_, v) = http_get(api, "/api/v1/devices/rest-1/readings?gateway=gw-a").await;
    assert_eq!(v["count"], 2, "{v}");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), agg.stopped())
        .await
        .expect("stops");
}

async fn online_of(api: std::net::SocketAddr, gw: &str) -> Value {
    let (_, v) = http_get(api, "/api/v1/gateways").await;
    v["gateways"]
        .as_array()
        .and_then(|a| a.iter().find(|g| g["id"] == gw))
        .map(|g| g["online"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn status_must_be_sealed_and_not_from_the_future() {
    let cfg = setup("status");
    let cancel = CancellationToken::new();
    let agg = daemon::start(&cfg, cancel.clone()).await.expect("start");
    let port = broker_port(&agg);
    let api = agg.api_addr;
    let (a, mut ev_a) = gateway("gw-a", port, Some(("gw-a", "pass-a-123")));
    connect(&mut ev_a).await.expect("gw-a connects");
    let driver = tokio::spawn(async move {
        while ev_a.poll().await.is_ok() {}
        panic!("gw-a's connection dropped");
    });
    let status_topic = wire::topic("gw-a", Channel::Status);
    let now = fumegrid_common::clock::Clock::system().now_ms();
    let doc = |state: State, ts: i64| Status {
        state,
        ts_ms: Some(ts),
        version: None,
    };
    let publish = |payload: Vec<u8>| {
        let a = a.clone();
        let t = status_topic.clone();
        async move {
            a.publish(t, QoS::AtLeastOnce, true, payload)
                .await
                .expect("publish")
        }
    };
    // Unsealed, sealed with another gateway's key, and sealed but far in the future (it would
    // win over every real status until the year 2100): all refused, and counted.
    publish(serde_json::to_vec(&doc(State::Online, now)).expect("json")).await;
    publish(wire::seal(&doc(State::Online, now), &key(KEY_B))).await;
    publish(wire::seal(
        &doc(State::Online, 4_102_444_800_000),
        &key(KEY_A),
    ))
    .await;
    let st = stats_until(api, |v| v["rejects_total"] == 3).await;
    assert_eq!(st["rejects"]["no_mac"], 1, "{st}");
    assert_eq!(st["rejects"]["bad_mac"], 1, "{st}");
    assert_eq!(st["rejects"]["bad_status"], 1, "{st}");
    assert_eq!(st["status_messages"], 0, "{st}");
    assert_ne!(
        online_of(api, "gw-a").await,
        true,
        "a refused status set the flag"
    );

    // The gateway's real, sealed statuses decide.
    publish(wire::seal(&doc(State::Online, now), &key(KEY_A))).await;
    stats_until(api, |v| v["status_messages"] == 1).await;
    assert_eq!(online_of(api, "gw-a").await, true);
    publish(wire::seal(&doc(State::Offline, now + 1), &key(KEY_A))).await;
    stats_until(api, |v| v["status_messages"] == 2).await;
    assert_eq!(
        online_of(api, "gw-a").await,
        false,
        "offline was not stored"
    );
    driver.abort();
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), agg.stopped())
        .await
        .expect("stops");
}

/// A seq that comes again with other content (an old gateway whose outbox went back in time)
/// is a conflict: kept, counted, acked — never taken for a resend silently. A hello is answered
/// with what is held; plain acks carry no new field (older gateways refuse unknown fields).
#[tokio::test]
async fn conflicting_duplicates_are_kept_and_counted_and_hellos_answered() {
    let cfg = setup("conflict");
    let db_path = cfg.store_path.clone();
    let cancel = CancellationToken::new();
    let agg = daemon::start(&cfg, cancel.clone()).await.expect("start");
    let port: u16 = agg
        .broker_addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    let api = agg.api_addr;
    let (a, mut ev_a) = gateway("gw-a", port, Some(("gw-a", "pass-a-123")));
    connect(&mut ev_a).await.expect("gw-a connects");
    let ack_topic = wire::topic("gw-a", Channel::Ack);
    a.subscribe(&ack_topic, QoS::AtLeastOnce)
        .await
        .expect("sub");
    let up = wire::topic("gw-a", Channel::Up);
    let k = key(KEY_A);

    let b = batch("gw-a", 1..=3);
    a.publish(&up, QoS::AtLeastOnce, false, wire::seal(&b, &k))
        .await
        .expect("publish");
    let raw = next_on(&mut ev_a, &ack_topic).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(
        !text.contains("high") && !text.contains("held"),
        "a plain ack is what older gateways parse: {text}"
    );

    // Seq 2 again, other value: acked, counted, kept.
    let mut other = batch("gw-a", 2..=2);
    if let Body::Reading(r) = &mut other.items[0].body {
        r.value = Some(9.75);
    }
    for _ in 0..2 {
        a.publish(&up, QoS::AtLeastOnce, false, wire::seal(&other, &k))
            .await
            .expect("publish");
        let ack: Ack = wire::open(&next_on(&mut ev_a, &ack_topic).await, &k).expect("ack");
        assert_eq!(ack.ranges, vec![(2, 2)]);
    }
    // And seq 3 again as it was: a plain resend.
    let same = batch("gw-a", 3..=3);
    a.publish(&up, QoS::AtLeastOnce, false, wire::seal(&same, &k))
        .await
        .expect("publish");
    let _ = next_on(&mut ev_a, &ack_topic).await;
    let st = stats_until(api, |v| v["items_duplicate"] == 3).await;
    assert_eq!(
        st["items_conflict"], 1,
        "counted once per distinct content: {st}"
    );
    let db = rusqlite::Connection::open(&db_path).expect("open store");
    let body: String = db
        .query_row("SELECT body FROM conflicts WHERE seq = 2", [], |r| r.get(0))
        .expect("conflict row");
    assert!(body.contains("9.75"), "{body}");
    let stored: f64 = db
        .query_row("SELECT value FROM readings WHERE seq = 2", [], |r| r.get(0))
        .expect("reading");
    assert!(
        (stored - 0.2).abs() < 1e-9,
        "the first content stays: {stored}"
    );

    // A hello: what is held of the stream.
    let hello = wire::Hello {
        gateway: "gw-a".into(),
        stream: "stream-1".into(),
        sent_ms: 1,
        from_seq: 2,
    };
    a.publish(&up, QoS::AtLeastOnce, false, wire::seal(&hello, &k))
        .await
        .expect("publish");
    let ack: Ack = wire::open(&next_on(&mut ev_a, &ack_topic).await, &k).expect("answer");
    assert_eq!(
        (ack.ranges.len(), ack.high, ack.held),
        (0, Some(3), Some(2))
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), agg.stopped())
        .await
        .expect("stops");
}
