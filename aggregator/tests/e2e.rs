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
    fumegrid_aggregator::config::parse_key(hex).expect("key")
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
            fumegrid_aggregator::auth::hex(&fumegrid_aggregator::auth::sha256(VIEWER))
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
    let mut o = MqttOptions::new(format!("client-{id}"), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20)
        .set_keep_alive(Duration::from_secs(10));
    if let Some((u, p)) = user {
        o.set_credentials(u, p);
    }
    let offline = serde_json::to_vec(&Status {
        state: State::Offline,
        ts_ms: None,
        version: None,
    })
    .expect("json");
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

async fn stats_until(addr: std::net::SocketAddr, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let (_, v) = http_get(addr, "/api/v1/stats").await;
        if f(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("stats never matched");
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
    let online = serde_json::to_vec(&Status {
        state: State::Online,
        ts_ms: Some(1),
        version: Some("test".into()),
    })
    .expect("json");
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
    assert_eq!(
        ack,
        Ack {
            stream: "stream-1".into(),
            ranges: vec![(1, 3)]
        }
    );

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

    // Gateway A publishing as B: on B's topic its MAC fails; on its own topic claiming B, the
    // body does not match the topic. Both counted, neither stored, ingest goes on.
    let forged = wire::seal(&batch("gw-b", 10..=12), &key(KEY_A));
    a.publish(
        wire::topic("gw-b", Channel::Up),
        QoS::AtLeastOnce,
        false,
        forged.clone(),
    )
    .await
    .expect("publish");
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
    let st = stats_until(api, |v| v["rejects_total"] == 3).await;
    assert_eq!(st["rejects"]["bad_mac"], 1, "{st}");
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

    // A transition that breaks the contract refuses its batch (not acked, not stored).
    let mut bad = alarm(Raised, t0, 1.0);
    if let Body::Alarm(x) = &mut bad {
        x.started_ms = t0 + 1;
        x.id = "bad".into();
    }
    let b = Batch {
        gateway: "gw-a".into(),
        stream: "stream-1".into(),
        sent_ms: 1,
        items: vec![Item { seq: 6, body: bad }],
    };
    a.publish(&up, QoS::AtLeastOnce, false, wire::seal(&b, &key(KEY_A)))
        .await
        .expect("publish");
    // (Publishes leave when the event loop is polled: send a good one and wait for its ack.)
    let next = send(vec![(7, alarm(Updated, t0 + 800_000, 2.0))]).await;
    assert_eq!(next.ranges, vec![(7, 7)]);
    let st = stats_until(api, |v| v["rejects_total"] == 1).await;
    assert_eq!(st["rejects"]["bad_item"], 1, "{st}");
    let (s, _) = http_get(api, "/api/v1/alarms/gw-a/bad").await;
    assert_eq!(s, 404);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), agg.stopped())
        .await
        .expect("stops");
}
