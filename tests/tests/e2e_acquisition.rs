//! The gateway reads simulated monitors over real ptys (made by socat, not by us) and over TCP,
//! and independent Modbus implementations (pymodbus, mbpoll) agree with both sides.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fumegrid_common::metric::Metric;
use fumegrid_common::profile::{Profile, Table};
use fumegrid_sim::regmap::{self, RegisterImage};
use fumegrid_sim::scenario::Scenario;
use fumegrid_tests::*;
use serde_json::{Value, json};

/// Scenario time the simulators are frozen at (`--speed 0`), inside a normal cooking service.
const T: &str = "100";

fn load(p: &Path) -> Profile {
    Profile::load(p).unwrap_or_else(|d| panic!("{d}"))
}

/// Asserts `device` produced at least `min` readings of every metric in `expected`, every one
/// `ok` and equal to the expected value.
fn assert_readings(run: &GatewayRun, device: &str, expected: &[(Metric, f64)], min: usize) {
    for (metric, want) in expected {
        let got: Vec<&Value> = run.of(device, metric.name()).collect();
        assert!(
            got.len() >= min,
            "{device} {metric}: only {} readings",
            got.len()
        );
        for r in got {
            assert_eq!(r["quality"], "ok", "{device} {metric}: {r}");
            let v = r["value"].as_f64().unwrap_or(f64::NAN);
            assert!(
                close(v, *want),
                "{device} {metric}: read {v}, simulator holds {want}"
            );
        }
    }
}

#[test]
fn e2e_every_shipped_profile_over_socat_pty_and_tcp() {
    let dir = TempDir::new("profiles");
    let profiles = shipped_profiles();
    assert!(profiles.len() >= 3);
    let mut keep = Vec::new();
    let mut pairs = Vec::new();
    let mut cfg = String::from("[gateway]\nid = \"gw-test\"\npoll_interval_ms = 250\n");
    for (i, p) in profiles.iter().enumerate() {
        let pair = PtyPair::new(&dir, &format!("bus{i}"));
        let ps = p.to_str().expect("utf-8 path");
        keep.push(sim(&[
            "monitor",
            "--profile",
            ps,
            "--rtu",
            pair.a.to_str().expect("path"),
            "--baud",
            "19200",
            "--parity",
            "even",
            "--turnaround-ms",
            "1",
            "--slave",
            "7",
            "--scenario",
            "normal",
            "--speed",
            "0",
            "--start-at",
            T,
            "--duration",
            "60",
        ]));
        let port = free_port();
        keep.push(sim(&[
            "monitor",
            "--profile",
            ps,
            "--tcp",
            &format!("127.0.0.1:{port}"),
            "--slave",
            "1",
            "--scenario",
            "normal",
            "--speed",
            "0",
            "--start-at",
            T,
            "--duration",
            "60",
        ]));
        cfg += &format!(
            "[[buses]]\nname = \"bus{i}\"\npath = \"{}\"\nbaud = 19200\nparity = \"even\"\n\
             [[devices]]\nid = \"rtu-{i}\"\nprofile = \"{ps}\"\nbus = \"bus{i}\"\nslave = 7\n\
             [[devices]]\nid = \"tcp-{i}\"\nprofile = \"{ps}\"\ntcp = \"127.0.0.1:{port}\"\n",
            pair.b.display()
        );
        pairs.push(pair);
    }
    let run = run_gateway(&dir, &cfg, 3.0);
    for (i, p) in profiles.iter().enumerate() {
        let expected = regmap::expected(&load(p), Scenario::Normal, 100.0);
        for dev in [format!("rtu-{i}"), format!("tcp-{i}")] {
            assert_readings(&run, &dev, &expected, 5);
            let s = run.stats_of(&dev);
            assert_eq!(s["polls"], s["polls_ok"], "{dev} ({}): {s}", p.display());
        }
    }
}

/// The values a test pins into pymodbus, per metric, inside every shipped profile's range.
fn pinned(m: Metric) -> f64 {
    match m {
        Metric::FumeMgM3 => 1.5,
        Metric::ParticulateMgM3 => 4.25,
        Metric::NmhcMgM3 => 3.0,
        Metric::FanOn => 1.0,
        Metric::PurifierOn => 0.0,
        Metric::FanCurrentA => 3.2,
        Metric::PurifierCurrentA => 1.5,
        Metric::FlowM3H => 5800.0,
        Metric::TemperatureC => 31.5,
        Metric::HumidityPct => 48.0,
        Metric::PurifierRuntimeH => 1234.5,
        Metric::FanRuntimeH => 2345.5,
        Metric::Custom(_) => 4321.0,
    }
}

/// pymodbus's `--values` JSON for a register image.
fn pymodbus_values(img: &RegisterImage) -> Value {
    let mut tables: BTreeMap<&str, Value> = BTreeMap::new();
    for (t, start, words) in img.word_blocks() {
        tables.insert(t.name(), json!({ start.to_string(): words }));
    }
    for (t, start, bits) in img.bit_blocks() {
        let bits: Vec<u8> = bits.iter().map(|&b| u8::from(b)).collect();
        tables.insert(t.name(), json!({ start.to_string(): bits }));
    }
    json!(tables)
}

#[test]
fn e2e_gateway_reads_pymodbus_rtu_and_tcp() {
    let dir = TempDir::new("pymodbus");
    let mut keep = Vec::new();
    let mut pairs = Vec::new();
    let mut cfg = String::from("[gateway]\nid = \"gw-test\"\npoll_interval_ms = 300\n");
    let mut expect = Vec::new();
    // Hand-written registers for the ThingsBoard map, independent of our encoder:
    // 1.5 = 0x3FC00000, 5.0 = 0x40A00000, 3.0 = 0x40400000; currents ×0.01.
    let tb = root().join("device-profiles/tb-compatible.toml");
    let hand = json!({"holding": {"0": [0x3FC0, 0, 0x40A0, 0, 0x4040, 0, 1, 0, 320, 150]}});
    let hand_expect = vec![
        (Metric::FumeMgM3, 1.5),
        (Metric::ParticulateMgM3, 5.0),
        (Metric::NmhcMgM3, 3.0),
        (Metric::FanOn, 1.0),
        (Metric::PurifierOn, 0.0),
        (Metric::FanCurrentA, 3.2),
        (Metric::PurifierCurrentA, 1.5),
    ];
    /// Profile, pymodbus values, what the gateway must decode.
    type Case = (std::path::PathBuf, Value, Vec<(Metric, f64)>);
    let mut cases: Vec<Case> = vec![(tb, hand, hand_expect)];
    // Every shipped profile, with values encoded through the profile (covers coils, discrete
    // inputs, input registers, word order and scaling against pymodbus's FC 1–4).
    for p in shipped_profiles() {
        let prof = load(&p);
        let values: Vec<(Metric, f64)> = prof
            .points
            .iter()
            .map(|pt| (pt.metric, pinned(pt.metric)))
            .collect();
        let img = RegisterImage::build(&prof, &values);
        let want = prof
            .points
            .iter()
            .map(|pt| (pt.metric, img.decode(pt)))
            .collect();
        cases.push((p, pymodbus_values(&img), want));
    }
    for (i, (profile, values, want)) in cases.into_iter().enumerate() {
        let vf = dir.join(&format!("values{i}.json"));
        std::fs::write(&vf, values.to_string()).expect("write values");
        let vfs = vf.to_str().expect("path");
        let pair = PtyPair::new(&dir, &format!("bus{i}"));
        keep.push(pymodbus(&[
            "--rtu",
            pair.a.to_str().expect("path"),
            "--baud",
            "19200",
            "--parity",
            "E",
            "--slave",
            "5",
            "--values",
            vfs,
            "--duration",
            "60",
        ]));
        let port = free_port();
        keep.push(pymodbus(&[
            "--tcp",
            &format!("127.0.0.1:{port}"),
            "--slave",
            "1",
            "--values",
            vfs,
            "--duration",
            "60",
        ]));
        let ps = profile.display();
        cfg += &format!(
            "[[buses]]\nname = \"bus{i}\"\npath = \"{}\"\nbaud = 19200\nparity = \"even\"\n\
             [[devices]]\nid = \"rtu-{i}\"\nprofile = \"{ps}\"\nbus = \"bus{i}\"\nslave = 5\n\
             [[devices]]\nid = \"tcp-{i}\"\nprofile = \"{ps}\"\ntcp = \"127.0.0.1:{port}\"\n",
            pair.b.display()
        );
        pairs.push(pair);
        expect.push(want);
    }
    let run = run_gateway(&dir, &cfg, 3.0);
    for (i, want) in expect.iter().enumerate() {
        for dev in [format!("rtu-{i}"), format!("tcp-{i}")] {
            assert_readings(&run, &dev, want, 3);
        }
    }
}

/// Parses mbpoll's `[addr]: 0xABCD` / `[addr]: 1` lines.
fn mbpoll_values(out: &str) -> BTreeMap<u16, u16> {
    out.lines()
        .filter_map(|l| {
            let (a, v) = l.trim().strip_prefix('[')?.split_once("]:")?;
            let v = v.trim();
            let v = match v.strip_prefix("0x") {
                Some(h) => u16::from_str_radix(h, 16).ok()?,
                None => v.split_whitespace().next()?.parse().ok()?,
            };
            Some((a.parse().ok()?, v))
        })
        .collect()
}

fn mbpoll(
    transport: &[&str],
    table: Table,
    start: u16,
    count: usize,
    target: &str,
) -> BTreeMap<u16, u16> {
    let t = match table {
        Table::Coil => "0",
        Table::Discrete => "1",
        Table::Input => "3:hex",
        Table::Holding => "4:hex",
    };
    let out = Command::new("mbpoll")
        .args(transport)
        .args([
            "-a",
            "1",
            "-0",
            "-1",
            "-t",
            t,
            "-r",
            &start.to_string(),
            "-c",
            &count.to_string(),
            target,
        ])
        .output()
        .expect("mbpoll installed by scripts/install-test-deps.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mbpoll failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    mbpoll_values(&text)
}

#[test]
fn e2e_mbpoll_reads_the_simulator_over_rtu_and_tcp() {
    let dir = TempDir::new("mbpoll");
    for p in shipped_profiles() {
        let img = RegisterImage::at(&load(&p), Scenario::Exceedance, 600.0);
        let ps = p.to_str().expect("path");
        let pair = PtyPair::new(&dir, "bus");
        let _rtu = sim(&[
            "monitor",
            "--profile",
            ps,
            "--rtu",
            pair.a.to_str().expect("path"),
            "--baud",
            "9600",
            "--parity",
            "even",
            "--slave",
            "1",
            "--scenario",
            "exceedance",
            "--speed",
            "0",
            "--start-at",
            "600",
            "--duration",
            "60",
        ]);
        let port = free_port();
        let _tcp = sim(&[
            "monitor",
            "--profile",
            ps,
            "--tcp",
            &format!("127.0.0.1:{port}"),
            "--slave",
            "1",
            "--scenario",
            "exceedance",
            "--speed",
            "0",
            "--start-at",
            "600",
            "--duration",
            "60",
        ]);
        let b = pair.b.to_str().expect("path").to_string();
        let port = port.to_string();
        let rtu: [&str; 6] = ["-m", "rtu", "-b", "9600", "-P", "even"];
        let tcp: [&str; 4] = ["-m", "tcp", "-p", &port];
        let mut blocks: Vec<(Table, u16, Vec<u16>)> = img.word_blocks();
        for (t, start, bits) in img.bit_blocks() {
            blocks.push((t, start, bits.iter().map(|&b| u16::from(b)).collect()));
        }
        assert!(!blocks.is_empty());
        for (table, start, want) in blocks {
            let want: BTreeMap<u16, u16> = (start..).zip(want).collect();
            let got = mbpoll(&rtu, table, start, want.len(), &b);
            assert_eq!(got, want, "{} {table:?} over RTU", p.display());
            let got = mbpoll(&tcp, table, start, want.len(), "127.0.0.1");
            assert_eq!(got, want, "{} {table:?} over TCP", p.display());
        }
    }
}
