//! Fills a gateway outbox with N readings, as an outage of that length would: the set-up of
//! `bench/drain.sh`. `cargo run --release -p fumegrid-gateway --example outbox_fill -- DIR N`

use std::path::PathBuf;

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::Body;
use fumegrid_gateway::outbox::{Outbox, OutboxConfig, SledOutbox};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: outbox_fill DIR N")?);
    let n: u64 = args.next().ok_or("usage: outbox_fill DIR N")?.parse()?;
    let cfg = OutboxConfig {
        max_bytes: 4 << 30,
        flush_interval_ms: 1000,
        ..OutboxConfig::default()
    };
    let (mut outbox, _) = SledOutbox::open(&dir, cfg)?;
    let metrics = [
        Metric::FumeMgM3,
        Metric::ParticulateMgM3,
        Metric::NmhcMgM3,
        Metric::FanOn,
        Metric::PurifierOn,
        Metric::FanCurrentA,
        Metric::PurifierCurrentA,
    ];
    let t0 = 1_790_000_000_000i64;
    let mut done = 0u64;
    // One poll of a 7-value monitor per append, as the gateway does; 32 monitors at 1 Hz.
    while done < n {
        let poll = done / 7;
        let device = format!("m{:02}", poll % 32);
        let ts_ms = t0 + (poll / 32) as i64 * 1000;
        let bodies: Vec<Body> = metrics
            .iter()
            .take((n - done).min(7) as usize)
            .map(|&metric| {
                Body::Reading(Reading {
                    device: device.clone(),
                    unit: None,
                    metric,
                    value: Some(0.5),
                    quality: Quality::Ok,
                    ts_ms,
                })
            })
            .collect();
        done += bodies.len() as u64;
        outbox.append(bodies, ts_ms)?;
    }
    outbox.flush()?;
    let s = outbox.stats();
    println!(
        "outbox {}: {} items, {} bytes, next seq {}",
        dir.display(),
        s.items,
        s.bytes,
        s.next_seq
    );
    Ok(())
}
