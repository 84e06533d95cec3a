//! A shared RS-485 bus with misbehaving slaves: the gateway keeps the healthy ones on time,
//! never takes a late or corrupted reply for a reading, and counts every fault per slave.

use std::path::Path;

use fumegrid_common::metric::Metric;
use fumegrid_common::profile::Profile;
use fumegrid_sim::regmap;
use fumegrid_sim::scenario::Scenario;
use fumegrid_tests::*;
use serde_json::Value;

fn load(p: &Path) -> Profile {
    Profile::load(p).unwrap_or_else(|d| panic!("{d}"))
}

/// A bus simulator on one end of a socat pty pair, with `slaves` as `ID:PROFILE:SCENARIO[:FAULT]`.
fn bus(dir: &TempDir, tag: &str, slaves: &[String]) -> (PtyPair, Proc) {
    let pair = PtyPair::new(dir, tag);
    let mut args: Vec<String> = [
        "bus",
        "--rtu",
        pair.a.to_str().expect("path"),
        "--baud",
        "9600",
        "--parity",
        "even",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(
        [
            "--turnaround-ms",
            "5",
            "--speed",
            "0",
            "--start-at",
            "600",
            "--duration",
            "90",
        ]
        .map(String::from),
    );
    for s in slaves {
        args.push("--slave".into());
        args.push(s.clone());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = sim(&argv);
    (pair, p)
}

fn config(bus_path: &Path, devices: &[(u8, &Path)], poll_ms: u64) -> String {
    let mut c = format!(
        "[gateway]\nid = \"gw-test\"\npoll_interval_ms = {poll_ms}\nprobe_interval_ms = 5000\n\
         [[buses]]\nname = \"bus\"\npath = \"{}\"\nbaud = 9600\nparity = \"even\"\n",
        bus_path.display()
    );
    for (slave, profile) in devices {
        c += &format!(
            "[[devices]]\nid = \"slave-{slave}\"\nprofile = \"{}\"\nbus = \"bus\"\nslave = {slave}\n",
            profile.display()
        );
    }
    c
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn e2e_dead_slave_does_not_slow_the_live_ones() {
    let tb = root().join("device-profiles/tb-compatible.toml");
    let p = tb.display().to_string();
    // The live slaves get a patient copy of the profile. With the shipped 300 ms, a loaded
    // two-core machine (CI with compiles running; stress-ng here) passed replies between
    // gateway, socat and simulator up to ~700 ms late (socat's transfer log), and the healthy
    // run got such no-replies as often as the dead one: genuine timeouts that say nothing about
    // the dead slave. With 2 s, a no_reply on a live slave can only be blame for the dead one.
    // The dead slave keeps the shipped 300 ms: its cost to the bus is what this test measures.
    let patient_dir = TempDir::new("patient");
    let patient = patient_dir.join("tb-patient.toml");
    let shipped = std::fs::read_to_string(&tb).expect("read profile");
    let patient_text = shipped.replace(
        "response_timeout_ms = 300\n",
        "response_timeout_ms = 2000\n",
    );
    assert_ne!(
        patient_text,
        shipped,
        "{}: timeout line not found",
        tb.display()
    );
    std::fs::write(&patient, patient_text).expect("write profile");
    let seconds = 12.0;
    let run = |tag: &str, fourth_fault: &str| {
        let dir = TempDir::new(tag);
        let slaves: Vec<String> = (1..=4)
            .map(|i| {
                if i == 4 {
                    format!("4:{p}:normal:{fourth_fault}")
                } else {
                    format!("{i}:{p}:normal")
                }
            })
            .collect();
        let (pair, _sim) = bus(&dir, "bus", &slaves);
        let devs: Vec<(u8, &Path)> = (1..=4)
            .map(|i| {
                (
                    i,
                    if i == 4 {
                        tb.as_path()
                    } else {
                        patient.as_path()
                    },
                )
            })
            .collect();
        run_gateway(&dir, &config(&pair.b, &devs, 500), seconds)
    };
    // Both buses run at the same time, so machine load affects them alike.
    let (healthy, faulty) = std::thread::scope(|s| {
        let a = s.spawn(|| run("healthy", "none"));
        let b = s.spawn(|| run("dead", "no-reply"));
        (a.join().expect("healthy run"), b.join().expect("dead run"))
    });
    for slave in 1..=3 {
        let dev = format!("slave-{slave}");
        let base = u(&healthy.stats_of(&dev)["polls_ok"]) as f64;
        let with_dead = u(&faulty.stats_of(&dev)["polls_ok"]) as f64;
        assert!(
            base >= 20.0,
            "{dev}: only {base} polls in {seconds} s without faults"
        );
        // Without the breaker the dead slave would take 300 ms + 600 ms guard of every 500 ms
        // interval and halve the live slaves' polls; with it they lose the few polls its probes
        // overlap. 10 % was too tight beside another end-to-end test on two cores (22 vs 25 in
        // CI, with the previous binaries too): the exact cost is a benchmark, this checks the
        // breaker does its job.
        assert!(
            with_dead >= 0.75 * base,
            "{dev}: {with_dead} polls next to a dead slave vs {base} without (more than 25 % fewer)"
        );
        assert_eq!(
            faulty.stats_of(&dev)["no_reply"],
            0,
            "{dev} blamed for the dead slave"
        );
    }
    let dead = faulty.stats_of("slave-4");
    assert!(u(&dead["no_reply"]) >= 3, "{dead}");
    assert_eq!(u(&dead["polls_ok"]), 0);
    assert!(
        u(&dead["breaker_trips"]) >= 1 && dead["breaker_open"] == true,
        "{dead}"
    );
    // Probing, not polling: far fewer attempts than the live slaves got.
    assert!(
        u(&dead["polls"]) * 3 < u(&faulty.stats_of("slave-1")["polls"]),
        "{dead}"
    );
    let warned = faulty
        .events
        .iter()
        .any(|e| e["level"] == "WARN" && e["slave"] == 4 && e["kind"] == "no_reply");
    assert!(warned, "no WARN naming slave 4 and no_reply");
    // The dead slave's readings say so: device_error, no value.
    let r: Vec<&Value> = faulty.of("slave-4", "fume_mg_m3").collect();
    assert!(
        !r.is_empty()
            && r.iter()
                .all(|r| r["quality"] == "device_error" && r.get("value").is_none()),
        "{r:?}"
    );
}

#[test]
fn e2e_late_corrupt_and_exception_replies_never_become_wrong_readings() {
    let dir = TempDir::new("faults");
    let tb = root().join("device-profiles/tb-compatible.toml");
    // Two register blocks of equal size in one table, so a late reply to one block taken as the
    // answer to the other would put the fume value into `particulate_mg_m3`.
    let two = dir.join("two-blocks.toml");
    std::fs::write(
        &two,
        "[profile]\nid = \"two-blocks\"\n[modbus]\nmax_gap = 0\nresponse_timeout_ms = 200\n\
         [[points]]\nmetric = \"fume_mg_m3\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\n\
         [[points]]\nmetric = \"particulate_mg_m3\"\ntable = \"holding\"\naddress = 10\ntype = \"f32\"\n\
         [[points]]\nmetric = \"nmhc_mg_m3\"\ntable = \"holding\"\naddress = 20\ntype = \"f32\"\n",
    )
    .expect("write profile");
    let (t, w) = (tb.display(), two.display());
    // Each slave runs another scenario, so a reply delivered to the wrong slave shows as well.
    let slaves = vec![
        format!("1:{t}:normal"),
        format!("2:{w}:exceedance:late:250@2"), // after the 200 ms timeout, inside the guard time
        format!("3:{w}:degradation:late:700@3"), // after the guard time: lands on a later request
        format!("4:{t}:purifier_off:crc@2"),
        format!("5:{t}:stuck:exception:4@3"),
        format!("6:{t}:exceedance:garbage@4"),
        // The reply, then bytes past the 256-byte RTU frame limit.
        format!("7:{t}:normal:overlong@3"),
    ];
    let (pair, _sim) = bus(&dir, "bus", &slaves);
    let profiles = [
        (1, tb.as_path()),
        (2, two.as_path()),
        (3, two.as_path()),
        (4, tb.as_path()),
        (5, tb.as_path()),
        (6, tb.as_path()),
        (7, tb.as_path()),
    ];
    let scenarios = [
        Scenario::Normal,
        Scenario::Exceedance,
        Scenario::Degradation,
        Scenario::PurifierOff,
        Scenario::Stuck,
        Scenario::Exceedance,
        Scenario::Normal,
    ];
    // What each device holds: every good reading must be exactly this.
    let expected: Vec<(String, Vec<(Metric, f64)>)> = profiles
        .iter()
        .zip(scenarios)
        .map(|((slave, profile), scenario)| {
            let values = regmap::expected(&load(profile), scenario, 600.0);
            (format!("slave-{slave}"), values)
        })
        .collect();
    let good = |run: &GatewayRun| -> usize {
        let ok = |(dev, values): &(String, Vec<(Metric, f64)>)| {
            values
                .iter()
                .map(|(m, _)| {
                    run.of(dev, m.name())
                        .filter(|r| r["quality"] == "ok")
                        .count()
                })
                .sum::<usize>()
        };
        expected.iter().map(ok).sum()
    };
    // Faults counted per slave: (device, counters, at least, what).
    let counted = [
        ("slave-4", &["garbled"][..], 3, "CRC errors"),
        ("slave-5", &["exceptions"][..], 3, "exceptions"),
        ("slave-6", &["garbled"][..], 2, "garbage"),
        ("slave-7", &["garbled"][..], 2, "over-long frames"),
        ("slave-2", &["no_reply", "garbled"][..], 3, "late replies"),
    ];
    let count = |stats: &Value, keys: &[&str]| keys.iter().map(|k| u(&stats[k])).sum::<u64>();
    // Run until every check below has something to check (and every device was read), not for
    // a fixed time: a loaded machine gets through fewer polls in a given time.
    let enough = |run: &GatewayRun| {
        let has = |dev: &str| run.stats.iter().find(|s| s["device"] == dev);
        counted
            .iter()
            .all(|(dev, keys, min, _)| has(dev).is_some_and(|s| count(s, keys) >= *min))
            && expected.iter().all(|(dev, _)| {
                run.of(dev, Metric::FumeMgM3.name())
                    .any(|r| r["quality"] == "ok")
            })
            && good(run) > 150
    };
    let run = run_gateway_until(&dir, &config(&pair.b, &profiles, 1000), 60.0, enough);

    for (dev, values) in &expected {
        for (metric, want) in values {
            for r in run.of(dev, metric.name()) {
                if r["quality"] == "ok" {
                    let v = r["value"].as_f64().unwrap_or(f64::NAN);
                    assert!(
                        close(v, *want),
                        "{dev} {metric}: read {v}, the device holds {want}: a reply was misattributed"
                    );
                } else {
                    assert!(
                        r["quality"] == "stale" || r["quality"] == "device_error",
                        "{dev}: {r}"
                    );
                }
            }
        }
        assert!(
            run.of(dev, Metric::FumeMgM3.name())
                .any(|r| r["quality"] == "ok"),
            "{dev} never read"
        );
    }
    let ok_readings = good(&run);
    assert!(
        ok_readings > 150,
        "only {ok_readings} good readings; stats: {:#?}",
        run.stats
    );

    let s = |d: &str| run.stats_of(d).clone();
    for (dev, keys, min, what) in counted {
        assert!(
            count(&s(dev), keys) >= min,
            "{what} not counted: {}",
            s(dev)
        );
    }
    // A reply later than the guard time can collide with a healthy slave's exchange (as on a
    // real bus); that costs it a poll now and then, never a wrong value.
    let one = s("slave-1");
    assert!(
        u(&one["polls_ok"]) as f64 >= 0.8 * u(&one["polls"]) as f64,
        "healthy slave 1 lost polls: {one}"
    );
    // The over-long frames are answers: diagnosed as `garbled`, not as silence (before the fix
    // most were `no_reply`: the frame takes longer on the wire than the response timeout). A
    // stall of a loaded machine may cost slave 7 an odd real timeout, hence not `== 0`.
    let seven = s("slave-7");
    assert!(
        u(&seven["no_reply"]) * 4 <= u(&seven["garbled"]),
        "over-long frames diagnosed as no reply: {seven}"
    );
    for (slave, kind) in [(4, "garbled"), (5, "exception"), (7, "garbled")] {
        let warned = run
            .events
            .iter()
            .any(|e| e["level"] == "WARN" && e["slave"] == slave && e["kind"] == kind);
        assert!(warned, "no WARN naming slave {slave} and {kind}");
    }
}

/// One slave alone on its bus, so that the next request after a timeout goes to the same slave
/// with a block of the same length: RTU has no transaction id, and before the fix a late reply
/// was read as the answer to the next block (the fume value stored as `particulate_mg_m3`) or
/// to the next poll. What the gateway promises (docs/gateway-config.md, "Guard time"): a reply
/// up to three timeouts late, or one that arrives before the next request is written, is never
/// taken as an answer. Both cases are placed mid-window here, far from the window's edges, so
/// that a loaded machine's scheduling delays cannot move them out of it:
/// - `late:300@2`, timeout 200 ms: lands during the guard time (200 ms … 600 ms);
/// - `late:900@3`, polls 2.5 s apart: lands long before the next poll's first request.
#[test]
fn e2e_a_late_reply_never_answers_the_next_request_to_the_same_slave() {
    let dir = TempDir::new("late-same-slave");
    let two = dir.join("three-blocks.toml");
    std::fs::write(
        &two,
        "[profile]\nid = \"three-blocks\"\n[modbus]\nmax_gap = 0\nresponse_timeout_ms = 200\n\
         [[points]]\nmetric = \"fume_mg_m3\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\n\
         [[points]]\nmetric = \"particulate_mg_m3\"\ntable = \"holding\"\naddress = 10\ntype = \"f32\"\n\
         [[points]]\nmetric = \"nmhc_mg_m3\"\ntable = \"holding\"\naddress = 20\ntype = \"f32\"\n",
    )
    .expect("write profile");
    let want = regmap::expected(&load(&two), Scenario::Exceedance, 600.0);
    for (tag, fault, poll_ms) in [("a", "late:300@2", 200), ("b", "late:900@3", 2500)] {
        let slaves = vec![format!("2:{}:exceedance:{fault}", two.display())];
        let (pair, _sim) = bus(&dir, tag, &slaves);
        let enough = |run: &GatewayRun| {
            let ok = run
                .of("slave-2", Metric::FumeMgM3.name())
                .filter(|r| r["quality"] == "ok")
                .count();
            let late = run
                .stats
                .iter()
                .find(|s| s["device"] == "slave-2")
                .is_some_and(|s| u(&s["no_reply"]) >= 5);
            ok >= 5 && late
        };
        let run = run_gateway_until(
            &dir,
            &config(&pair.b, &[(2, two.as_path())], poll_ms),
            60.0,
            enough,
        );
        assert!(
            enough(&run),
            "{fault}: too little happened: {:#?}",
            run.stats
        );
        for (metric, v) in &want {
            for r in run.of("slave-2", metric.name()) {
                if r["quality"] == "ok" {
                    let got = r["value"].as_f64().unwrap_or(f64::NAN);
                    assert!(
                        close(got, *v),
                        "{fault}: {metric} read {got}, the device holds {v}: a late reply was taken as the answer"
                    );
                }
            }
        }
    }
}

/// Modbus TCP faults injected by the simulator, and what a technician must read for each.
const TCP_FAULTS: [(&str, &str); 5] = [
    ("garbage", "not a Modbus TCP reply: protocol id"),
    ("truncated", "truncated frame: the MBAP header announces"),
    (
        "overlong",
        "over-long frame: the MBAP header announces 65535 bytes",
    ),
    (
        "bad-count",
        "bad byte count: the reply to function 3 says 22 data bytes, the frame carries 20",
    ),
    (
        "other-unit",
        "reply from unit id 2 to a request for unit id 1",
    ),
];

/// One simulated Modbus TCP monitor (unit id 1) with `fault` on every request.
fn tcp_monitor(profile: &Path, fault: &str) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let p = sim(&[
        "monitor",
        "--profile",
        profile.to_str().expect("path"),
        "--tcp",
        &addr,
        "--slave",
        "1",
        "--fault",
        fault,
        "--duration",
        "60",
    ]);
    (p, addr)
}

/// Bytes that came back are never "no reply", and over TCP the advice is about unit id,
/// address and port, never RS-485 wiring: first through `probe`, then through the gateway's
/// log and counters.
#[test]
fn e2e_tcp_faults_are_named_for_the_technician() {
    let tb = root().join("device-profiles/tb-compatible.toml");
    let sims: Vec<(Proc, String)> = TCP_FAULTS
        .iter()
        .map(|(fault, _)| tcp_monitor(&tb, fault))
        .collect();
    for ((fault, want), (_, addr)) in TCP_FAULTS.iter().zip(&sims) {
        let out = std::process::Command::new(bin("fumegrid-gateway"))
            .args(["probe", "--profile"])
            .arg(&tb)
            .args(["--tcp", addr, "--slave", "1"])
            .output()
            .expect("run probe");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{fault}: {stdout}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{fault}: no error line in\n{stdout}"));
        assert!(
            line.contains(&format!("garbled reply: {want}")),
            "{fault}: {line}"
        );
        assert!(!line.contains("no reply"), "{fault}: {line}");
        assert!(
            line.contains("unit id") && line.contains("port"),
            "{fault}: no TCP advice: {line}"
        );
        for rs485 in ["A/B", "baud", "termination"] {
            assert!(
                !line.contains(rs485),
                "{fault}: RS-485 advice over TCP: {line}"
            );
        }
    }

    let dir = TempDir::new("tcp-faults");
    let mut cfg = String::from(
        "[gateway]\nid = \"gw-test\"\npoll_interval_ms = 300\nprobe_interval_ms = 1000\n",
    );
    for ((fault, _), (_, addr)) in TCP_FAULTS.iter().zip(&sims) {
        cfg += &format!(
            "[[devices]]\nid = \"{fault}\"\nprofile = \"{}\"\ntcp = \"{addr}\"\nslave = 1\n",
            tb.display()
        );
    }
    let warned = |run: &GatewayRun, fault: &str| {
        run.events
            .iter()
            .find(|e| e["message"] == "read failed" && e["level"] == "WARN" && e["device"] == fault)
            .cloned()
    };
    let run = run_gateway_until(&dir, &cfg, 30.0, |run| {
        TCP_FAULTS.iter().all(|(fault, _)| {
            warned(run, fault).is_some()
                && run
                    .stats
                    .iter()
                    .any(|s| s["device"] == *fault && u(&s["garbled"]) >= 1)
        })
    });
    for (fault, want) in TCP_FAULTS {
        let w = warned(&run, fault).unwrap_or_else(|| panic!("{fault}: no WARN read failed"));
        assert_eq!(w["kind"], "garbled", "{fault}: {w}");
        let error = w["error"].as_str().unwrap_or_default();
        assert!(error.contains(want), "{fault}: {w}");
        let hint = w["hint"].as_str().unwrap_or_default();
        assert!(
            hint.contains("unit id") && !hint.contains("A/B"),
            "{fault}: {w}"
        );
        let s = run.stats_of(fault);
        assert!(u(&s["garbled"]) >= 1, "{fault}: {s}");
        assert_eq!(u(&s["no_reply"]), 0, "{fault}: {s}");
        assert_eq!(u(&s["io_errors"]), 0, "{fault}: {s}");
    }
}

/// `probe ... | head -1`: the reader goes away after one line. The probe stops quietly with the
/// exit code of its reads (0: the device answered), instead of panicking (exit 101).
#[test]
fn e2e_probe_into_a_closed_pipe_exits_quietly() {
    use std::io::{BufRead, BufReader};
    let tb = root().join("device-profiles/tb-compatible.toml");
    let (_sim, addr) = tcp_monitor(&tb, "none");
    let mut child = std::process::Command::new(bin("fumegrid-gateway"))
        .args(["probe", "--profile"])
        .arg(&tb)
        .args([
            "--tcp",
            &addr,
            "--slave",
            "1",
            "--count",
            "100000",
            "--interval-ms",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run probe");
    let stdout = child.stdout.take().expect("piped");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("first line");
    assert!(first.starts_with("slave 1 on"), "{first}");
    // The reader is gone now (stdout dropped with the BufReader).
    let status = wait_until(
        "the probe to exit with nobody reading",
        std::time::Duration::from_secs(30),
        || child.try_wait().expect("wait"),
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("stderr");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}
