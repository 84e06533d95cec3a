//! Sealed commands on `fumegrid/v1/{gateway}/cmd` through a real broker: mosquitto with the
//! documented passwords and ACLs, the real gateway binary, commands published by
//! `mosquitto_pub` as the aggregator's account. The gateway carries a snapshot out once (its
//! camera points at a closed port, so the picture fails with a `camera_failed` event naming the
//! request) and refuses a replay and an expired command with `command_refused` events; what it
//! appended is read back from its outbox after it stopped (no aggregator acks it here).

use std::process::Command;
use std::time::Duration;

use fumegrid_common::wire::{self, Action, Body, EventKind};
use fumegrid_gateway::outbox::{Outbox, OutboxConfig, SledOutbox};
use fumegrid_tests::site::{GW, KEY, Site, mosquitto};
use fumegrid_tests::*;

fn publish_cmd(port: u16, payload: &[u8]) {
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", "fumegrid-aggregator", "-P", "agg-pass", "-q", "1"])
        .args(["-t", &wire::topic(GW, wire::Channel::Cmd)])
        .arg("-m")
        .arg(String::from_utf8(payload.to_vec()).expect("utf8"))
        .status()
        .expect("mosquitto_pub");
    assert!(st.success());
}

#[test]
fn e2e_a_sealed_snapshot_command_is_carried_out_once_through_mosquitto() {
    let site = Site::new("commands");
    let port = free_port();
    let _mosq = mosquitto(&site, port);
    // The aggregator's account watches `up` (line-buffered: its SUBACK line must arrive).
    let mut sub = Command::new("stdbuf");
    sub.args([
        "-oL",
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ])
    .args([
        "-u",
        "fumegrid-aggregator",
        "-P",
        "agg-pass",
        "-C",
        "1",
        "-W",
        "30",
        "-d",
    ])
    .args(["-t", &wire::topic(GW, wire::Channel::Up)]);
    let mut hello = Proc::spawn("mosquitto_sub", sub);
    hello.wait_for("received SUBACK", Duration::from_secs(10));
    // One device nobody answers for, one camera on a closed port.
    let cfg = site.gateway_config(port, free_port(), 1, 1000, 1000);
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text += "[[cameras]]\nid = \"cam-1\"\ndevices = [\"m00\"]\nsnapshot_url = \"http://127.0.0.1:1/picture.jpg\"\ntimeout_ms = 2000\n";
    std::fs::write(&cfg, text).expect("config");
    // Its log (stderr) on stdout, where `Proc::wait_for` reads; `exec` keeps its pid.
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(r#"exec "$0" run --log-format json --log info,reading=off --config "$1" 2>&1"#)
        .arg(bin("fumegrid-gateway"))
        .arg(&cfg);
    let mut gw = Proc::spawn("fumegrid-gateway", sh);
    gw.wait_for("uplink connected", Duration::from_secs(20));

    let key = fumegrid_common::keys::parse_key(KEY).expect("key");
    let now = fumegrid_common::clock::Clock::system().now_ms();
    let cmd = |id: &str, expires_ms: i64| wire::Command {
        id: id.into(),
        gateway: GW.into(),
        issued_ms: now,
        expires_ms,
        action: Action::Snapshot {
            camera: Some("cam-1".into()),
            device: None,
            alarm: None,
        },
    };
    // A command published before the broker has the gateway's subscription is not delivered
    // (QoS 1 to subscribers only). The gateway subscribes, then publishes its hello on the same
    // connection, which the broker handles in order: once the hello is seen, `cmd` is taken.
    let (ok, err) = hello.wait_exit(Duration::from_secs(30));
    assert!(ok, "no hello from the gateway: {err}");
    let good = wire::seal(&cmd("c-1", now + 120_000), &key);
    publish_cmd(port, &good);
    gw.wait_for("snapshot command accepted", Duration::from_secs(10));
    gw.wait_for("camera gave no picture", Duration::from_secs(20));
    publish_cmd(port, &good);
    gw.wait_for("command refused", Duration::from_secs(10));
    publish_cmd(port, &wire::seal(&cmd("c-2", now - 1), &key));
    gw.wait_for("command refused", Duration::from_secs(10));
    gw.term();
    let (ok, err) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "{err}");

    let (o, _) =
        SledOutbox::open(&site.dir.join("outbox"), OutboxConfig::default()).expect("outbox");
    let events: Vec<(EventKind, String)> = o
        .pending(0, usize::MAX, true)
        .expect("read")
        .into_iter()
        .filter_map(|i| match i.body {
            Body::Event(e) => Some((e.kind, e.message)),
            _ => None,
        })
        .collect();
    let of = |k: EventKind| -> Vec<&String> {
        events
            .iter()
            .filter(|(kind, _)| *kind == k)
            .map(|(_, m)| m)
            .collect()
    };
    let refused = of(EventKind::CommandRefused);
    assert!(
        refused
            .iter()
            .any(|m| m.contains("\"c-1\"") && m.contains("carried out already")),
        "{events:?}"
    );
    assert!(
        refused
            .iter()
            .any(|m| m.contains("\"c-2\"") && m.contains("expired")),
        "{events:?}"
    );
    let failed = of(EventKind::CameraFailed);
    assert_eq!(
        failed
            .iter()
            .filter(|m| m.contains("camera cam-1") && m.contains("request c-1"))
            .count(),
        1,
        "one picture asked for, once: {events:?}"
    );
}
