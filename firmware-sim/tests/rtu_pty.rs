//! The RTU bus served over a real pty pair (made in-process with `TTYPort::pair()`), spoken to
//! with raw bytes from the other end, as a gateway would.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use fumegrid_common::diag::Source;
use fumegrid_common::profile::Profile;
use fumegrid_sim::clock::SimClock;
use fumegrid_sim::regmap::expected;
use fumegrid_sim::rtu::{Engine, EngineConfig, LineSettings, SimSlave, adu, crc_ok, run_bus};
use fumegrid_sim::scenario::Scenario;
use serialport::{SerialPort, TTYPort};

/// The ThingsBoard benchmark register map (device-profiles/tb-compatible.toml), inlined so the
/// test does not depend on files others edit.
const TB: &str = r#"
[profile]
id = "tb-test"
[[points]]
metric = "fume_mg_m3"
table = "holding"
address = 0
type = "f32"
valid = [0.0, 50.0]
[[points]]
metric = "particulate_mg_m3"
table = "holding"
address = 2
type = "f32"
[[points]]
metric = "nmhc_mg_m3"
table = "holding"
address = 4
type = "f32"
[[points]]
metric = "fan_on"
table = "holding"
address = 6
type = "u16"
[[points]]
metric = "purifier_on"
table = "holding"
address = 7
type = "u16"
[[points]]
metric = "fan_current_a"
table = "holding"
address = 8
type = "u16"
scale = 0.01
[[points]]
metric = "purifier_current_a"
table = "holding"
address = 9
type = "u16"
scale = 0.01
"#;

struct Sim {
    gw: TTYPort,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    profile: Profile,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(tag: &str, slaves: &[(u8, Scenario, &str)], line_timing: bool) -> Sim {
    let dir = std::env::temp_dir().join(format!("fumegrid-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, TB).expect("write profile");
    let profile = Profile::load(&path).expect("profile valid");
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        Profile::from_source(&Source::new("x", TB)).map(|p| p.points.len()),
        Ok(7)
    );
    let (mut master, gw) = TTYPort::pair().expect("pty pair");
    let cfg = EngineConfig {
        line: LineSettings::default(), // 9600 8E1
        turnaround: Duration::from_millis(5),
        line_timing,
        // Frozen at t = 100 s so the test can compute the expected registers.
        clock: SimClock::new(100.0, 0.0),
    };
    let sims = slaves
        .iter()
        .map(|(id, sc, f)| SimSlave::new(*id, profile.clone(), *sc, f.parse().expect("fault")))
        .collect();
    let mut engine = Engine::new(cfg, sims);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        run_bus(&mut engine, &mut master, &stop2).expect("bus runs");
    });
    Sim {
        gw,
        stop,
        thread: Some(thread),
        profile,
    }
}

/// Sends `req` and collects what comes back within `wait` (stops early after `want` bytes).
fn transact(gw: &mut TTYPort, req: &[u8], want: usize, wait: Duration) -> (Vec<u8>, Duration) {
    gw.set_timeout(Duration::from_millis(5)).expect("timeout");
    let t0 = fumegrid_sim::clock::instant();
    gw.write_all(req).expect("write request");
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let mut done_at = t0;
    while (fumegrid_sim::clock::instant() - t0) < wait && got.len() < want {
        match gw.read(&mut buf) {
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                done_at = fumegrid_sim::clock::instant();
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    (got, done_at - t0)
}

fn read_10(slave: u8) -> Vec<u8> {
    adu(slave, &[3, 0, 0, 0, 10])
}

#[test]
fn answers_its_slaves_and_ignores_others() {
    let mut sim = start(
        "bus",
        &[
            (1, Scenario::Normal, "none"),
            (2, Scenario::Normal, "crc"),
            (3, Scenario::Normal, "exception:4"),
            (4, Scenario::Normal, "no-reply"),
        ],
        true,
    );
    let long = Duration::from_millis(300);

    // Slave 1: a correct reply carrying the profile's encoding of the scenario at t = 100 s.
    let (r, took) = transact(&mut sim.gw, &read_10(1), 25, long);
    assert_eq!(r.len(), 25, "{r:02x?}");
    assert!(crc_ok(&r));
    assert_eq!(&r[..3], &[1, 3, 20]);
    let words: Vec<u16> = r[3..23]
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    for (p, (metric, want)) in
        sim.profile
            .points
            .iter()
            .zip(expected(&sim.profile, Scenario::Normal, 100.0))
    {
        let a = usize::from(p.address);
        let got = p.decode_words(&words[a..a + usize::from(p.width())]);
        assert_eq!(got, want, "{metric}");
    }
    // 9600 8E1, 10 registers, 5 ms turnaround: rtu_budget.py says 50.83 ms including both
    // silences; the simulator replies after 46.8 ms. Only a loose bound: timing is a benchmark.
    assert!(took >= Duration::from_millis(40), "took {took:?}");
    assert!(took < Duration::from_millis(250), "took {took:?}");

    // Unknown slave 9: silence.
    let (r, _) = transact(&mut sim.gw, &read_10(9), 1, Duration::from_millis(150));
    assert!(r.is_empty(), "{r:02x?}");

    // Slave 2 with fault crc: same length, bad CRC.
    let (r, _) = transact(&mut sim.gw, &read_10(2), 25, long);
    assert_eq!(r.len(), 25);
    assert_eq!(&r[..3], &[2, 3, 20]);
    assert!(!crc_ok(&r));

    // Slave 3 with exception:4.
    let (r, _) = transact(&mut sim.gw, &read_10(3), 5, long);
    assert_eq!(r, adu(3, &[0x83, 4]));

    // Slave 4 dead.
    let (r, _) = transact(&mut sim.gw, &read_10(4), 1, Duration::from_millis(150));
    assert!(r.is_empty());

    // An address outside the profile: exception 02.
    let (r, _) = transact(&mut sim.gw, &adu(1, &[3, 0, 8, 0, 4]), 5, long);
    assert_eq!(r, adu(1, &[0x83, 2]));

    // Garbage, then after a silence a good request is served again.
    let (r, _) = transact(
        &mut sim.gw,
        &[1, 3, 0, 0, 0, 10, 0, 0],
        1,
        Duration::from_millis(100),
    );
    assert!(r.is_empty());
    let (r, _) = transact(&mut sim.gw, &read_10(1), 25, long);
    assert_eq!(r.len(), 25);
    assert!(crc_ok(&r));
}

#[test]
fn without_line_timing_replies_fast() {
    let mut sim = start("fast", &[(1, Scenario::Exceedance, "none")], false);
    let (r, took) = transact(&mut sim.gw, &read_10(1), 25, Duration::from_millis(300));
    assert!(crc_ok(&r) && r.len() == 25);
    assert!(took < Duration::from_millis(40), "took {took:?}");
}
