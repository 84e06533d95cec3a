//! `[broker] mode = "external"` against a real mosquitto (Debian package) with password
//! authentication. Skipped, with a note, when mosquitto is not installed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fumegrid_aggregator::config::Config;
use fumegrid_aggregator::daemon;
use fumegrid_common::diag::Source;
use fumegrid_common::keys::parse_key;
use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{self, Ack, Batch, Body, Channel, Item};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;

const KEY: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";

fn mosquitto() -> Option<&'static str> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn ingest_through_external_mosquitto() {
    let Some(bin) = mosquitto() else {
        eprintln!("mosquitto not installed; skipping (scripts/install-test-deps.sh installs it)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("fumegrid-agg-mosq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let pw = dir.join("passwd");
    for (i, (u, p)) in [("aggregator", "agg-secret-1"), ("gw-m", "gw-secret-1")]
        .into_iter()
        .enumerate()
    {
        let mut c = Command::new("mosquitto_passwd");
        if i == 0 {
            c.arg("-c");
        }
        let s = c
            .arg("-b")
            .arg(&pw)
            .args([u, p])
            .status()
            .expect("mosquitto_passwd");
        assert!(s.success(), "mosquitto_passwd failed");
    }
    let port = free_port();
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\n",
            pw.display()
        ),
    )
    .expect("conf");
    let _broker = Kill(
        Command::new(bin)
            .arg("-c")
            .arg(dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto"),
    );
    let listening = (0..250).any(|_| {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if !up {
            std::thread::sleep(Duration::from_millis(20));
        }
        up
    });
    assert!(listening, "mosquitto did not listen on {port} within 5 s");
    std::fs::write(dir.join("broker-password"), "agg-secret-1\n").expect("pw");
    let text = format!(
        "[aggregator]\nid = \"ext\"\n[store]\npath = \"ext.sqlite3\"\nsynchronous = \"normal\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\
         [broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         username = \"aggregator\"\npassword_file = \"broker-password\"\n\
         [[gateways]]\nid = \"gw-m\"\nkey = \"{KEY}\"\n"
    );
    let cfg = Config::from_source(&Source::new(dir.join("agg.toml"), text))
        .unwrap_or_else(|d| panic!("{d}"));
    let cancel = CancellationToken::new();
    let agg = daemon::start(&cfg, cancel.clone()).await.expect("start");
    assert!(agg.stats.is_connected());

    let mut o = MqttOptions::new("gw-m-client", "127.0.0.1", port);
    o.set_credentials("gw-m", "gw-secret-1")
        .set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut ev) = AsyncClient::new(o, 16);
    let ack_topic = wire::topic("gw-m", Channel::Ack);
    c.subscribe(&ack_topic, QoS::AtLeastOnce)
        .await
        .expect("sub");
    let key = parse_key(KEY).expect("key");
    let b = Batch {
        gateway: "gw-m".into(),
        stream: "s".into(),
        sent_ms: 0,
        items: vec![Item {
            seq: 7,
            body: Body::Reading(Reading {
                device: "d".into(),
                unit: None,
                metric: Metric::FumeMgM3,
                value: Some(2.5),
                quality: Quality::Ok,
                ts_ms: 5,
            }),
        }],
    };
    c.publish(
        wire::topic("gw-m", Channel::Up),
        QoS::AtLeastOnce,
        false,
        wire::seal(&b, &key),
    )
    .await
    .expect("publish");
    let ack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == ack_topic => {
                    return wire::open::<Ack>(&p.payload, &key).expect("sealed");
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("ack through mosquitto");
    assert_eq!(ack.ranges, vec![(7, 7)]);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), agg.stopped())
        .await
        .expect("stops");
}
