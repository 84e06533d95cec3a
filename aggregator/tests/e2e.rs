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
    let text = format!(
        "[aggregator]\nid = \"test\"\n[store]\npath = \"agg.sqlite3\"\nsynchronous = \"normal\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\
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

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8(buf).expect("utf8");
    let status: u16 = text[9..12].parse().expect("status");
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
