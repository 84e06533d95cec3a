//! Outbox throughput against raw sled, and space under churn.
//!
//! `cargo run --release -p fumegrid-gateway --example outbox_bench [churn_cycles]`
//!
//! (a) raw sled: N inserts of a value the size of an outbox reading record, then one flush;
//! (b) `SledOutbox::append` with batches of 1 and of 100 readings (one poll's worth), same flush
//!     config, then one flush; the ratio to (a) is the outbox's overhead;
//! (c) fsync on every append (`flush_interval_ms = 0`) with batches of 100;
//! (d) reopen time with everything from (b) still unacked (the open scan);
//! (f) appends of 100 into a full 8 MiB outbox (every append drops and writes a gap event);
//! (g) space of that backlog, after acking all of it, and after more traffic;
//! (e) churn: append one reading + ack it, `churn_cycles` times (default 1 000 000), printing the
//!     directory's size as it goes.

use fumegrid_common::clock::Clock;
use std::path::{Path, PathBuf};

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::Body;
use fumegrid_gateway::outbox::{Outbox, OutboxConfig, SledOutbox};

const N: u64 = 200_000;

fn reading(i: u64) -> Body {
    Body::Reading(Reading {
        device: format!("restaurant-{:03}-fume-monitor-{:02}", i % 997, i % 7),
        unit: None,
        metric: Metric::FumeMgM3,
        value: Some(1.0 + (i % 1000) as f64 / 1000.0),
        quality: Quality::Ok,
        ts_ms: 1_700_000_000_000 + i as i64 * 1000,
    })
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let p = base.join(name);
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let churn: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let base = std::env::temp_dir().join(format!("fumegrid-outbox-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let cfg = OutboxConfig {
        max_bytes: 1 << 30,
        flush_interval_ms: 500,
        ..OutboxConfig::default()
    };
    let record_len = serde_json::to_vec(&reading(1))?.len() + 9;
    println!("reading record: {record_len} bytes (+8 key); N = {N}");

    // (a) raw sled, measured before and after (b) so that warm-up favours neither side
    let raw = |name: &str| -> Result<f64, Box<dyn std::error::Error>> {
        let db = sled::Config::new()
            .path(fresh(&base, name))
            .cache_capacity(32 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()?;
        let t = db.open_tree("t")?;
        let value = vec![b'x'; record_len];
        let start = Clock::system().instant();
        for i in 0..N {
            t.insert(i.to_be_bytes(), value.as_slice())?;
        }
        db.flush()?;
        let rate =
            N as f64 / (fumegrid_common::clock::Clock::system().instant() - start).as_secs_f64();
        println!("(a) raw sled insert + flush:        {rate:>10.0} items/s");
        Ok(rate)
    };
    let mut raw_rate = raw("raw1")?;

    // (b) outbox appends, each batch size into a fresh store
    let mut rates = Vec::new();
    for batch in [1u64, 100] {
        let (mut ob, _) = SledOutbox::open(&fresh(&base, &format!("outbox{batch}")), cfg)?;
        let bodies: Vec<Vec<Body>> = (0..N / batch)
            .map(|b| (0..batch).map(|i| reading(b * batch + i)).collect())
            .collect();
        let start = Clock::system().instant();
        for (i, b) in bodies.into_iter().enumerate() {
            ob.append(b, i as i64)?;
        }
        ob.flush()?;
        rates.push((
            batch,
            N as f64 / (fumegrid_common::clock::Clock::system().instant() - start).as_secs_f64(),
        ));
    }
    raw_rate = raw_rate.max(raw("raw2")?);
    for (batch, rate) in rates {
        println!(
            "(b) SledOutbox::append batch {batch:>3}:   {rate:>10.0} items/s  = {:.0} % of the best raw",
            100.0 * rate / raw_rate
        );
    }
    let store = base.join("outbox100");
    let (ob, _) = SledOutbox::open(&store, cfg)?;

    // (d) reopen with 2N unacked items
    let items = ob.stats().items;
    drop(ob);
    let start = Clock::system().instant();
    let (ob, _) = SledOutbox::open(&store, cfg)?;
    println!(
        "(d) reopen with {items} unacked items: {:.0} ms",
        (fumegrid_common::clock::Clock::system().instant() - start).as_secs_f64() * 1000.0
    );

    // (g) drain that backlog: space before, after acking everything, and after more traffic
    let mut ob = ob;
    let mib = |ob: &SledOutbox| -> Result<f64, Box<dyn std::error::Error>> {
        Ok(ob.size_on_disk()? as f64 / 1048576.0)
    };
    let full_size = mib(&ob)?;
    ob.ack(&[(0, u64::MAX)])?;
    ob.flush()?;
    let drained = mib(&ob)?;
    for i in 0..100_000u64 {
        let seq = ob.append(vec![reading(i)], 0)?;
        ob.ack(&[(seq[0], seq[0])])?;
    }
    ob.flush()?;
    println!(
        "(g) {items} items: {full_size:.1} MiB on disk; all acked: {drained:.1} MiB; after 100k more append+ack: {:.1} MiB",
        mib(&ob)?
    );
    drop(ob);
    let (ob, _) = SledOutbox::open(&store, cfg)?;
    println!("    after reopen: {:.1} MiB", mib(&ob)?);
    drop(ob);

    // (c) fsync per append
    {
        let cfg0 = OutboxConfig {
            flush_interval_ms: 0,
            ..cfg
        };
        let (mut ob, _) = SledOutbox::open(&fresh(&base, "sync"), cfg0)?;
        let batches = 200u64;
        let start = Clock::system().instant();
        for b in 0..batches {
            ob.append((0..100).map(|i| reading(b * 100 + i)).collect(), 0)?;
        }
        let secs = (fumegrid_common::clock::Clock::system().instant() - start).as_secs_f64();
        println!(
            "(c) flush_interval_ms=0, batch 100: {:>10.0} items/s  ({:.2} ms per append incl. fsync)",
            (batches * 100) as f64 / secs,
            secs * 1000.0 / batches as f64
        );
    }

    // (f) full: every append is an enforcement round (drops + gap event + fsync)
    {
        let small = OutboxConfig {
            max_bytes: 8 << 20,
            ..cfg
        };
        let (mut ob, _) = SledOutbox::open(&fresh(&base, "full"), small)?;
        let mut i = 0u64;
        while ob.stats().dropped_readings == 0 {
            ob.append((0..100).map(|k| reading(i + k)).collect(), 0)?;
            i += 100;
        }
        let batches = 2_000u64;
        let start = Clock::system().instant();
        for b in 0..batches {
            ob.append((0..100).map(|k| reading(i + b * 100 + k)).collect(), 0)?;
        }
        let secs = (fumegrid_common::clock::Clock::system().instant() - start).as_secs_f64();
        let st = ob.stats();
        println!(
            "(f) full at 8 MiB, batch 100:       {:>10.0} items/s  ({:.2} ms per append; {} items held, {} dropped)",
            (batches * 100) as f64 / secs,
            secs * 1000.0 / batches as f64,
            st.items,
            st.dropped_readings
        );
    }

    // (e) churn
    if churn > 0 {
        let store = fresh(&base, "churn");
        let (mut ob, _) = SledOutbox::open(&store, cfg)?;
        println!("(e) churn: append 1 reading + ack it, {churn} cycles");
        let start = Clock::system().instant();
        let step = (churn / 4).max(1);
        for i in 0..churn {
            let seq = ob.append(vec![reading(i)], 0)?;
            ob.ack(&[(seq[0], seq[0])])?;
            if (i + 1) % step == 0 {
                ob.flush()?;
                println!(
                    "    after {:>8} cycles: size_on_disk {:>6.1} MiB, files {:>6.1} MiB, items {}, {:.0} cycles/s",
                    i + 1,
                    ob.size_on_disk()? as f64 / 1048576.0,
                    dir_bytes(&store) as f64 / 1048576.0,
                    ob.stats().items,
                    (i + 1) as f64
                        / (fumegrid_common::clock::Clock::system().instant() - start).as_secs_f64()
                );
            }
        }
        drop(ob);
        let (ob, _) = SledOutbox::open(&store, cfg)?;
        println!(
            "    after reopen: size_on_disk {:.1} MiB, files {:.1} MiB",
            ob.size_on_disk()? as f64 / 1048576.0,
            dir_bytes(&store) as f64 / 1048576.0
        );
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
