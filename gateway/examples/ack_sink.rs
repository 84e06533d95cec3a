//! A stand-in aggregator for gateway benchmarks (`bench/drone_telemetry.sh`): subscribes to
//! `fumegrid/v1/+/up` on an MQTT broker, answers every hello ("nothing held") and acks every
//! batch at once, and counts what arrived: payload bytes as on the wire (gzip included), items
//! by kind and their JSON bytes. Used where the real aggregator would refuse the items (it
//! stores no drone tracks yet) and resends would inflate the bytes.
//!
//!   cargo run --release -p fumegrid-gateway --example ack_sink -- 127.0.0.1:1883 KEYHEX SECONDS
//!
//! Prints one JSON line with the counts after SECONDS.

use std::collections::BTreeMap;
use std::time::Duration;

use fumegrid_common::wire::{self, Ack, Batch, Body, Hello};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (addr, key, secs) = match args.as_slice() {
        [_, a, k, s] => (
            a.clone(),
            fumegrid_common::keys::parse_key(k).map_err(anyhow::Error::msg)?,
            s.parse::<f64>()?,
        ),
        _ => anyhow::bail!("usage: ack_sink HOST:PORT KEYHEX SECONDS"),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("HOST:PORT"))?;
    let mut opts = MqttOptions::new("ack-sink", host, port.parse()?);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(32 << 20, 32 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe("fumegrid/v1/+/up", QoS::AtLeastOnce)
        .await?;
    let (mut payload_bytes, mut batches, mut hellos) = (0u64, 0u64, 0u64);
    let mut kinds: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let deadline = tokio::time::sleep(Duration::from_secs_f64(secs));
    tokio::pin!(deadline);
    loop {
        let ev = tokio::select! {
            _ = &mut deadline => break,
            ev = events.poll() => ev,
        };
        let p = match ev {
            Ok(Event::Incoming(Packet::Publish(p))) => p,
            Ok(_) => continue,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Some(gw) = p.topic.split('/').nth(2).map(str::to_string) else {
            continue;
        };
        let Ok(bytes) = wire::decode_up(&p.payload, 64 << 20) else {
            continue;
        };
        let ack_topic = wire::topic(&gw, wire::Channel::Ack);
        if let Ok(h) = wire::open::<Hello>(&bytes, &key) {
            hellos += 1;
            let mut a = Ack::of(h.stream, vec![]);
            a.high = Some(0);
            a.held = Some(0);
            client
                .publish(ack_topic, QoS::AtLeastOnce, false, wire::seal(&a, &key))
                .await?;
            continue;
        }
        let Ok(b) = wire::open::<Batch>(&bytes, &key) else {
            continue;
        };
        batches += 1;
        payload_bytes += p.payload.len() as u64;
        let ranges = b.items.iter().map(|i| (i.seq, i.seq)).collect();
        for i in &b.items {
            let kind = match &i.body {
                Body::Track(_) => "track",
                Body::DronePhoto(_) => "drone_photo",
                Body::Event(_) => "event",
                Body::Reading(_) => "reading",
                Body::Alarm(_) => "alarm",
                Body::Evidence(_) => "evidence",
                Body::Period(_) => "period",
            };
            let e = kinds.entry(kind).or_default();
            e.0 += 1;
            e.1 += serde_json::to_vec(&i.body).map_or(0, |v| v.len() as u64);
        }
        client
            .publish(
                ack_topic,
                QoS::AtLeastOnce,
                false,
                wire::seal(&Ack::of(b.stream, ranges), &key),
            )
            .await?;
    }
    let kinds: BTreeMap<&str, serde_json::Value> = kinds
        .into_iter()
        .map(|(k, (n, bytes))| (k, serde_json::json!({"items": n, "json_bytes": bytes})))
        .collect();
    println!(
        "{}",
        serde_json::json!({"payload_bytes": payload_bytes, "batches": batches, "hellos": hellos, "items": kinds})
    );
    Ok(())
}
