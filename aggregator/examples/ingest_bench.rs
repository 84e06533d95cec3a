//! Ingest load benchmark: the aggregator (embedded broker, SQLite store on a temp dir) on its own
//! thread and runtime, as in production, and simulated gateways (rumqttc clients) publishing
//! sealed batches as fast as end-to-end acks allow (a window of unacked batches per gateway,
//! like the gateway outbox).
//!
//! Two scenarios:
//! - **sustained**: `--gateways` gateways publish live traffic concurrently;
//! - **drain**: one gateway back from an outage publishes a backlog of `--drain` readings.
//!
//! Payloads are built and sealed before the clock starts, so the numbers measure the
//! aggregator (broker → validate → commit → ack), not the simulated gateways' JSON encoding.
//!
//! With `--takeover 1` the sustained scenario runs twice: once undisturbed, then while another
//! broker account (`attacker`) connects again and again with the ingest's client id (both the
//! embedded one, `fumegrid-ingest-bench`, and the external-broker one,
//! `fumegrid-aggregator-bench`) and every gateway's, from `--attackers` (64) connections at once, each as fast as
//! the broker answers; the rate of
//! both runs and the ingest's reconnects are printed.
//!
//! ```text
//! cargo run --release -p fumegrid-aggregator --example ingest_bench -- \
//!     [--gateways 8] [--batch 500] [--sustained 1000000] [--drain 1000000] \
//!     [--window 4] [--synchronous full|normal] [--takeover 0|1] [--attackers 64]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fumegrid_aggregator::config::Config;
use fumegrid_aggregator::daemon;
use fumegrid_aggregator::ingest::stats::Stats;
use fumegrid_common::diag::Source;
use fumegrid_common::keys::parse_key;
use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{self, Ack, Batch, Body, Channel, Item};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
struct Opts {
    gateways: usize,
    batch: usize,
    sustained: usize,
    drain: usize,
    window: usize,
    drain_window: usize,
    synchronous: String,
    takeover: bool,
    attackers: usize,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        gateways: 8,
        batch: 500,
        sustained: 1_000_000,
        drain: 1_000_000,
        window: 4,
        drain_window: 16,
        synchronous: "full".into(),
        takeover: false,
        attackers: 64,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--gateways" => o.gateways = v.parse()?,
            "--batch" => o.batch = v.parse()?,
            "--sustained" => o.sustained = v.parse()?,
            "--drain" => o.drain = v.parse()?,
            "--window" => o.window = v.parse()?,
            "--drain-window" => o.drain_window = v.parse()?,
            "--synchronous" => o.synchronous = v.clone(),
            "--takeover" => o.takeover = v == "1",
            "--attackers" => o.attackers = v.parse()?,
            _ => bail!("unknown option {a}"),
        }
    }
    Ok(o)
}

fn key_hex(i: usize) -> String {
    format!("{:064x}", 0x5eed_0000_u64 + i as u64)
}

fn payloads(gw: &str, key: &[u8], readings: usize, batch: usize) -> Vec<Vec<u8>> {
    payloads_stream(gw, key, readings, batch, "stream")
}

fn payloads_stream(
    gw: &str,
    key: &[u8],
    readings: usize,
    batch: usize,
    stream: &str,
) -> Vec<Vec<u8>> {
    let metrics = [
        Metric::FumeMgM3,
        Metric::ParticulateMgM3,
        Metric::NmhcMgM3,
        Metric::FanOn,
        Metric::PurifierOn,
    ];
    let mut out = Vec::new();
    let mut seq = 0u64;
    while (seq as usize) < readings {
        let n = batch.min(readings - seq as usize);
        let items = (0..n)
            .map(|_| {
                seq += 1;
                Item {
                    seq,
                    body: Body::Reading(Reading {
                        device: format!("rest-{:04}", (seq / 5) % 20),
                        unit: None,
                        metric: metrics[(seq % 5) as usize],
                        value: Some((seq % 1000) as f64 / 100.0),
                        quality: Quality::Ok,
                        ts_ms: 1_700_000_000_000 + (seq / 100) as i64 * 1000,
                    }),
                }
            })
            .collect();
        let b = Batch {
            gateway: gw.into(),
            stream: format!("{gw}-{stream}"),
            sent_ms: 0,
            items,
        };
        out.push(wire::seal(&b, key));
    }
    out
}

/// Publishes `payloads` with at most `window` unacked batches; returns readings acked.
async fn gateway(
    id: String,
    port: u16,
    key: Vec<u8>,
    payloads: Vec<Vec<u8>>,
    window: usize,
) -> anyhow::Result<u64> {
    let mut o = MqttOptions::new(id.clone(), "127.0.0.1", port);
    o.set_credentials(id.clone(), "bench-password")
        .set_max_packet_size(2 << 20, 2 << 20)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 64);
    let ack_topic = wire::topic(&id, Channel::Ack);
    client.subscribe(&ack_topic, QoS::AtLeastOnce).await?;
    let total = payloads.len();
    let sem = Arc::new(Semaphore::new(window));
    let acked = Arc::new(AtomicU64::new(0));
    let (s2, a2) = (sem.clone(), acked.clone());
    let poller = tokio::spawn(async move {
        let mut batches = 0usize;
        while batches < total {
            match ev.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == ack_topic => {
                    let ack: Ack = wire::open(&p.payload, &key).context("ack seal")?;
                    let n: u64 = ack.ranges.iter().map(|(a, b)| b - a + 1).sum();
                    a2.fetch_add(n, Relaxed);
                    batches += 1;
                    s2.add_permits(1);
                }
                Ok(_) => {}
                Err(e) => bail!("gateway connection: {e}"),
            }
        }
        Ok(())
    });
    let up = wire::topic(&id, Channel::Up);
    for p in payloads {
        sem.acquire().await?.forget();
        client.publish(&up, QoS::AtLeastOnce, false, p).await?;
    }
    poller.await??;
    let _ = client.disconnect().await;
    Ok(acked.load(Relaxed))
}

async fn scenario(
    name: &str,
    port: u16,
    gws: Vec<(String, Vec<u8>, Vec<Vec<u8>>)>,
    window: usize,
    stats: &Stats,
) -> anyhow::Result<()> {
    let s0 = stats.snapshot();
    let (commits0, batches0) = (s0.commits, s0.batches_accepted);
    let t0 = now();
    let tasks: Vec<_> = gws
        .into_iter()
        .map(|(id, key, p)| tokio::spawn(gateway(id, port, key, p, window)))
        .collect();
    let mut readings = 0;
    for t in tasks {
        readings += t.await??;
    }
    let secs = (fumegrid_common::clock::Clock::system().instant() - t0).as_secs_f64();
    let s1 = stats.snapshot();
    let commits = s1.commits - commits0;
    let batches = s1.batches_accepted - batches0;
    println!(
        "{name:>9}: {readings} readings acked in {secs:.2} s = {:.0} readings/s ({batches} batches, {commits} transactions, {:.1} batches/transaction)",
        readings as f64 / secs,
        batches as f64 / commits.max(1) as f64
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let dir = std::env::temp_dir().join(format!("fumegrid-ingest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ids: Vec<String> = (0..o.gateways)
        .map(|i| format!("gw-{i}"))
        .chain(["gw-drain".to_string()])
        .collect();
    let mut users = String::new();
    let mut cfg = format!(
        "[aggregator]\nid = \"bench\"\n[store]\npath = \"bench.sqlite3\"\nsynchronous = \"{}\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\n[broker]\nlisten = \"127.0.0.1:0\"\n\
         credentials_file = \"users.toml\"\nmax_payload_bytes = 2097152\n",
        o.synchronous
    );
    for (i, id) in ids.iter().enumerate() {
        users += &format!("[[users]]\nusername = \"{id}\"\npassword = \"bench-password\"\n");
        cfg += &format!("[[gateways]]\nid = \"{id}\"\nkey = \"{}\"\n", key_hex(i));
    }
    users += "[[users]]\nusername = \"attacker\"\npassword = \"attacker-password\"\n";
    std::fs::write(dir.join("users.toml"), users)?;
    let cfg = Config::from_source(&Source::new(dir.join("agg.toml"), cfg))
        .map_err(|d| anyhow::anyhow!("{d}"))?;

    // The aggregator on its own thread and runtime.
    let cancel = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let c2 = cancel.clone();
    let agg = std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let r = daemon::start(&cfg, c2).await?;
            let _ = tx.send((r.broker_addr.clone(), r.stats.clone()));
            r.stopped().await;
            Ok(())
        })
    });
    let (broker, stats) = rx.recv().context("aggregator did not start")?;
    let port: u16 = broker
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .context("port")?;

    println!(
        "building payloads: sustained {} readings over {} gateways, drain {} readings; batch {}; synchronous={}",
        o.sustained, o.gateways, o.drain, o.batch, o.synchronous
    );
    let per_gw = o.sustained / o.gateways.max(1);
    let live: Vec<_> = (0..o.gateways)
        .map(|i| {
            let id = format!("gw-{i}");
            let key = parse_key(&key_hex(i)).unwrap_or_default();
            let p = payloads(&id, &key, per_gw, o.batch);
            (id, key, p)
        })
        .collect();
    let dkey = parse_key(&key_hex(o.gateways)).unwrap_or_default();
    let backlog = vec![(
        "gw-drain".to_string(),
        dkey.clone(),
        payloads("gw-drain", &dkey, o.drain, o.batch),
    )];
    let bytes: usize = backlog[0].2.iter().map(Vec::len).sum();
    println!(
        "batch payload ≈ {} bytes",
        bytes / backlog[0].2.len().max(1)
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if o.takeover {
        let normal: Vec<_> = live
            .iter()
            .map(|(id, key, p)| (id.clone(), key.clone(), p.clone()))
            .collect();
        rt.block_on(scenario("normal", port, normal, o.window, &stats))?;
        // A fresh stream for the second run, so nothing is a duplicate.
        let second: Vec<_> = (0..o.gateways)
            .map(|i| {
                let id = format!("gw-{i}");
                let key = parse_key(&key_hex(i)).unwrap_or_default();
                let p = payloads_stream(&id, &key, per_gw, o.batch, "second");
                (id, key, p)
            })
            .collect();
        let connects0 = stats.snapshot().mqtt_connects;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut ids = vec![
            "fumegrid-ingest-bench".to_string(),
            "fumegrid-aggregator-bench".to_string(),
        ];
        ids.extend((0..o.gateways).map(|i| format!("gw-{i}")));
        // `--attackers` connections at once (0: the same second run, undisturbed).
        let attackers: Vec<_> = (0..o.attackers)
            .map(|i| {
                let (stop, mut ids) = (stop.clone(), ids.clone());
                let n = ids.len();
                ids.rotate_left(i % n);
                std::thread::spawn(move || takeover(port, &ids, &stop))
            })
            .collect();
        rt.block_on(scenario("takeover", port, second, o.window, &stats))?;
        stop.store(true, Relaxed);
        let (tries, accepted) = attackers
            .into_iter()
            .map(|a| a.join().unwrap_or((0, 0)))
            .fold((0, 0), |(t, a), (t2, a2)| (t + t2, a + a2));
        println!(
            " takeover: {tries} CONNECTs with another account's client ids, {accepted} accepted; ingest reconnects during the run: {}",
            stats.snapshot().mqtt_connects - connects0
        );
    } else {
        rt.block_on(async {
            scenario("sustained", port, live, o.window, &stats).await?;
            scenario("drain", port, backlog, o.drain_window, &stats).await
        })?;
    }
    let s = stats.snapshot();
    println!(
        "aggregator: {} items stored, {} duplicates, {} rejects, {} store errors",
        s.items_accepted, s.items_duplicate, s.rejects_total, s.store_errors
    );
    cancel.cancel();
    let _ = agg.join();
    let db = std::fs::metadata(dir.join("bench.sqlite3"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.join("bench.sqlite3-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("store size: {:.1} MiB", db as f64 / (1 << 20) as f64);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The attacker: CONNECT as account `attacker` with each of `ids` in turn, as fast as the broker
/// answers, until `stop`. Returns (attempts, CONNACKs with success).
fn takeover(port: u16, ids: &[String], stop: &std::sync::atomic::AtomicBool) -> (u64, u64) {
    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::{ConnectReturnCode, Login, Packet};
    use std::io::{Read, Write};
    let (mut tries, mut accepted) = (0u64, 0u64);
    let mut held = Vec::new();
    while !stop.load(Relaxed) {
        for id in ids {
            if stop.load(Relaxed) {
                break;
            }
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut c = rumqttc::mqttbytes::v4::Connect::new(id.as_str());
            c.login = Some(Login::new("attacker", "attacker-password"));
            let mut out = BytesMut::new();
            if Packet::Connect(c).write(&mut out, 1 << 20).is_err() || s.write_all(&out).is_err() {
                continue;
            }
            tries += 1;
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok()
                && buf[0] == 0x20
                && buf[3] == ConnectReturnCode::Success as u8
            {
                accepted += 1;
                // Hold the stolen id a moment, as a real attacker would.
                held.push(s);
                if held.len() > 16 {
                    held.remove(0);
                }
            }
        }
    }
    (tries, accepted)
}

/// Monotonic time from the one clock (fumegrid_common::clock).
fn now() -> Instant {
    fumegrid_common::clock::Clock::system().instant()
}
