//! Edge alarms end to end: each simulator scenario, time-compressed, through a real gateway
//! (rules with short windows) and the aggregator, yields exactly the expected alarm episodes —
//! right device, kind, start, peak and clear — and the normal day yields none. Alarms raised
//! while the uplink is down arrive ahead of the backlog.

use std::net::SocketAddr;
use std::time::Duration;

use fumegrid_tests::site::*;
use fumegrid_tests::*;
use serde_json::Value;

/// Scenario seconds per wall second: the exceedance plateau (scenario 90..1860 s) lasts ~30 s.
const SPEED: f64 = 60.0;

/// Short windows so a scenario plays out in under a minute (defaults are 10-minute windows).
const RULES: &str = "[rules]\nstandard = \"gb18483_2001\"\nwindow_s = 6\neval_every_s = 1\nraise_after = 3\nclear_after = 4\n\
    min_samples = 3\npurifier_idle_after_s = 6\noffline_after_s = 6\nstuck_after_s = 8\nbaseline_learn_s = 4\n\
    purifier_dirty_after_s = 4\nupdate_every_s = 5\nfault_after_s = 3\n";

fn monitor(port: u16, scenario: &str) -> Proc {
    sim(&[
        "monitor",
        "--tcp",
        &format!("127.0.0.1:{port}"),
        "--profile",
        root()
            .join("device-profiles/tb-compatible.toml")
            .to_str()
            .expect("path"),
        "--scenario",
        scenario,
        "--speed",
        &SPEED.to_string(),
        "--duration",
        "300",
    ])
}

fn get(api: u16, path: &str) -> Value {
    api_get(api, path)
}

fn episodes(api: u16, device: &str) -> Vec<Value> {
    get(
        api,
        &format!("/api/v1/alarms?state=all&device={device}&limit=100"),
    )["alarms"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn kinds(eps: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = eps
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn e2e_each_scenario_yields_exactly_its_alarm_episodes() {
    let site = Site::new("alarms");
    let _agg = site.aggregator(&site.embedded());
    let scenarios = [
        "normal",
        "exceedance",
        "purifier_off",
        "stuck",
        "degradation",
        "normal",
    ];
    let base = consecutive_free_ports(scenarios.len() as u16);
    let t0 = fumegrid_common::clock::Clock::system().now_ms();
    let mut sims: Vec<Proc> = scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| monitor(base + i as u16, s))
        .collect();
    // The last monitor ("device gone") is unplugged after 10 s.
    let cfg = site.gateway_config(site.mqtt, base, scenarios.len() as u16, 250, 50_000);
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replacen("[outbox]", &format!("{RULES}[outbox]"), 1),
    )
    .expect("config");
    let mut gw = site.gateway(&cfg);
    // The scenario: the sixth monitor answers for 10 s, then it is unplugged.
    std::thread::sleep(Duration::from_secs(10));
    let gone_at = fumegrid_common::clock::Clock::system().now_ms();
    sims[5].kill9();
    let dev = |i: usize| format!("m{i:02}");
    // The scenarios play out: every abnormal monitor has its episode, the exceedance cleared.
    wait_until(
        "every scenario's episode, the exceedance cleared",
        Duration::from_secs(90),
        || {
            let eps: Vec<Vec<Value>> = (1..6).map(|i| episodes(site.api, &dev(i))).collect();
            let cleared = eps[0].iter().any(|e| e["phase"] == "cleared");
            if cleared && eps.iter().all(|e| !e.is_empty()) {
                Ok(())
            } else {
                Err(eps.iter().map(|e| kinds(e)).collect::<Vec<_>>())
            }
        },
    );
    gw.term();
    let (ok, log) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "{log}");
    // The last transitions are stored: all the gateway recorded but what it kept to resend.
    let (left, next_seq) = site.outbox_after_stop();
    wait_until(
        "everything the gateway sent to be stored",
        Duration::from_secs(20),
        || {
            let s = site.stored();
            if s.0 + left >= next_seq - 1 {
                Ok(())
            } else {
                Err((s, left, next_seq))
            }
        },
    );
    // Normal day: nothing.
    assert_eq!(
        episodes(site.api, &dev(0)),
        Vec::<Value>::new(),
        "normal day raised alarms"
    );
    // Exceedance: one fume episode, raised early in the plateau, cleared after it, peak over 2.5.
    let ex = episodes(site.api, &dev(1));
    assert_eq!(kinds(&ex), vec!["exceedance"], "{ex:#?}");
    let e = &ex[0];
    assert_eq!(e["metric"], "fume_mg_m3");
    assert_eq!(e["suppressed"], false);
    let plateau_start = t0 + (90.0 / SPEED * 1000.0) as i64;
    let plateau_end = t0 + (1860.0 / SPEED * 1000.0) as i64;
    let started = e["started_ms"].as_i64().unwrap_or(0);
    assert!(
        (plateau_start - 2000..plateau_start + 12_000).contains(&started),
        "started {started}, plateau from {plateau_start}: {e}"
    );
    assert_eq!(e["phase"], "cleared", "{e}");
    let cleared = e["cleared_ms"].as_i64().unwrap_or(0);
    assert!(
        (plateau_end..plateau_end + 20_000).contains(&cleared),
        "cleared {cleared}, plateau until {plateau_end}: {e}"
    );
    assert!(e["peak"].as_f64().unwrap_or(0.0) > 2.5, "{e}");
    // Purifier off while the fan runs: purifier_idle, still open.
    let idle = episodes(site.api, &dev(2));
    assert_eq!(kinds(&idle), vec!["purifier_idle"], "{idle:#?}");
    assert_ne!(
        idle[0]["phase"], "cleared",
        "the purifier never came back on: {idle:#?}"
    );
    // Stuck fume sensor: sensor_fault on fume.
    let stuck = episodes(site.api, &dev(3));
    assert_eq!(kinds(&stuck), vec!["sensor_fault"], "{stuck:#?}");
    assert_eq!(stuck[0]["metric"], "fume_mg_m3");
    // Slow purifier degradation: purifier_dirty (and no exceedance: fume stays under 2.0).
    let dirty = episodes(site.api, &dev(4));
    assert_eq!(kinds(&dirty), vec!["purifier_dirty"], "{dirty:#?}");
    // Device gone: device_offline, starting after it went.
    let off = episodes(site.api, &dev(5));
    assert_eq!(kinds(&off), vec!["device_offline"], "{off:#?}");
    let s = off[0]["started_ms"].as_i64().unwrap_or(0);
    assert!(
        s >= gone_at - 2000 && s <= gone_at + 10_000,
        "offline from {s}, gone at {gone_at}"
    );
    drop(sims);
}

#[test]
fn e2e_alarms_raised_during_an_outage_arrive_ahead_of_the_backlog() {
    let site = Site::new("alarm-outage");
    let _agg = site.aggregator(&site.embedded());
    let broker: SocketAddr = format!("127.0.0.1:{}", site.mqtt).parse().expect("addr");
    let proxy = Proxy::new(broker);
    proxy.set(ProxyMode::Refuse);
    let base = consecutive_free_ports(4);
    let _sims: Vec<Proc> = ["exceedance", "normal", "normal", "normal"]
        .iter()
        .enumerate()
        .map(|(i, s)| monitor(base + i as u16, s))
        .collect();
    let cfg = site.gateway_config(proxy.port, base, 4, 100, 500);
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replacen("[outbox]", &format!("{RULES}[outbox]"), 1),
    )
    .expect("config");
    let mut gw = site.gateway(&cfg);
    // The scenario: a 15 s outage, during which the exceedance is raised and a backlog piles up.
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(site.stored().0, 0);
    proxy.set(ProxyMode::Pass);
    let (stored, _, _, _) = wait_until("the alarm", Duration::from_secs(30), || {
        (!episodes(site.api, "m00").is_empty()).then(|| site.stored())
    });
    // The outage left ~15 s × 4 monitors × 10 polls/s × 7 values ≈ 4000 readings behind, drained
    // at 500/s; the alarm, raised in the middle of it, must not wait for them.
    eprintln!("alarm stored when {stored} items were in");
    assert!(
        stored < 1000,
        "the alarm waited for the backlog: {stored} items were stored first"
    );
    wait_until("the backlog to follow", Duration::from_secs(60), || {
        let s = site.stored();
        if s.0 >= 4000 { Ok(()) } else { Err(s) }
    });
    gw.term();
    let _ = gw.wait_exit(Duration::from_secs(20));
}

#[test]
fn e2e_gateway_restarts_mid_episode_keep_one_episode() {
    let site = Site::new("alarm-restart");
    let _agg = site.aggregator(&site.embedded());
    let base = consecutive_free_ports(1);
    let _sim = monitor(base, "exceedance");
    let cfg = site.gateway_config(site.mqtt, base, 1, 250, 50_000);
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replacen("[outbox]", &format!("{RULES}[outbox]"), 1),
    )
    .expect("config");
    let mut gw = site.gateway(&cfg);
    // Raised within ~10 s of the plateau's start (scenario 90 s = 1.5 s wall).
    wait_until("an exceedance raised", Duration::from_secs(30), || {
        !episodes(site.api, "m00").is_empty()
    });
    // A clean restart, then a crash, both in the middle of the episode.
    gw.term();
    let (ok, log) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "{log}");
    gw = site.gateway(&cfg);
    // The scenario: the restarted gateway runs 4 s into the episode, then crashes.
    std::thread::sleep(Duration::from_secs(4));
    gw.kill9();
    gw = site.gateway(&cfg);
    // The plateau ends at 1860/60 = 31 s; the episode clears a few seconds later.
    let eps = wait_until("the episode to clear", Duration::from_secs(60), || {
        let eps = episodes(site.api, "m00");
        if eps.iter().any(|e| e["phase"] == "cleared") {
            Ok(eps)
        } else {
            Err(eps)
        }
    });
    assert_eq!(eps.len(), 1, "restarts split the episode: {eps:#?}");
    assert_eq!(eps[0]["kind"], "exceedance");
    gw.term();
    let _ = gw.wait_exit(Duration::from_secs(20));
}
