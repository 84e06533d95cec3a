//! Fuzz target of everything a drone connection can receive (`fuzz/fuzz_targets/mavlink.rs`;
//! the workspace's tests run it over `fuzz/seeds/mavlink` with bounded proptest runs): the bytes
//! as one datagram and as a stream cut at every 7th byte, through framing, the `common`
//! dialect's decoding and two drones' state; and the `connection` parser.

use super::port::Dispatch;
use super::{Connection, Decimation, DroneCfg, DroneSpec};

fn drones(c: &Connection) -> Vec<DroneSpec> {
    [("uav-1", 1), ("uav-2", 2)]
        .into_iter()
        .map(|(id, sys)| DroneSpec {
            connection: c.clone(),
            drone: DroneCfg {
                id: id.into(),
                system_id: sys,
                decimation: Decimation {
                    min_interval_ms: 0,
                    min_distance_m: 0.0,
                    ..Decimation::default()
                },
                heartbeat_interval_ms: 1000,
                missed_heartbeats: 3,
            },
            photos: None,
        })
        .collect()
}

/// Arbitrary bytes from a drone's port.
pub fn mavlink(data: &[u8]) {
    let _ = Connection::parse(&String::from_utf8_lossy(data));
    let c = Connection::UdpIn(std::net::SocketAddr::from(([127, 0, 0, 1], 14550)));
    let t0 = fumegrid_common::clock::Clock::system().instant();
    let mut out = Vec::new();
    let mut d = Dispatch::new(&c, drones(&c));
    d.bytes(data, false, 1_000, t0, &mut out);
    let mut s = Dispatch::new(&c, drones(&c));
    let mut carry = Vec::new();
    for (i, chunk) in data.chunks(7).enumerate() {
        carry.extend_from_slice(chunk);
        let now = t0 + std::time::Duration::from_millis(i as u64 * 100);
        let used = s.bytes(&carry, true, 1_000 + i as i64 * 100, now, &mut out);
        carry.drain(..used);
        s.tick(1_000 + i as i64 * 100, now, &mut out);
    }
    s.stop(&mut out);
    for b in &out {
        // Whatever came out is something the wire can carry.
        let _ = serde_json::to_vec(b);
    }
}

#[cfg(test)]
mod tests {
    use fumegrid_common::fuzz::{config, seeded, seeds};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seeds_pass() {
        let all = seeds("mavlink");
        assert!(!all.is_empty(), "fuzz/seeds/mavlink is empty");
        for s in all {
            mavlink(&s);
        }
    }

    proptest! {
        #![proptest_config(config())]
        #[test]
        fn mavlink_bounded(d in seeded("mavlink")) { mavlink(&d) }
    }
}
