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
//! ```text
//! cargo run --release -p fumegrid-aggregator --example ingest_bench -- \
//!     [--gateways 8] [--batch 500] [--sustained 1000000] [--drain 1000000] \
//!     [--window 4] [--synchronous full|normal]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fumegrid_aggregator::config::{Config, parse_key};
use fumegrid_aggregator::daemon;
use fumegrid_aggregator::ingest::stats::Stats;
use fumegrid_common::diag::Source;
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
            _ => bail!("unknown option {a}"),
        }
    }
    Ok(o)
}

fn key_hex(i: usize) -> String {
    format!("{:064x}", 0x5eed_0000_u64 + i as u64)
}

fn payloads(gw: &str, key: &[u8], readings: usize, batch: usize) -> Vec<Vec<u8>> {
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
            stream: format!("{gw}-stream"),
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
    let mut o = MqttOptions::new(format!("bench-{id}"), "127.0.0.1", port);
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
    let commits0 = stats.commits.load(Relaxed);
    let batches0 = stats.batches_accepted.load(Relaxed);
    let t0 = Instant::now();
    let tasks: Vec<_> = gws
        .into_iter()
        .map(|(id, key, p)| tokio::spawn(gateway(id, port, key, p, window)))
        .collect();
    let mut readings = 0;
    for t in tasks {
        readings += t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let commits = stats.commits.load(Relaxed) - commits0;
    let batches = stats.batches_accepted.load(Relaxed) - batches0;
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
    rt.block_on(async {
        scenario("sustained", port, live, o.window, &stats).await?;
        scenario("drain", port, backlog, o.drain_window, &stats).await
    })?;
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
