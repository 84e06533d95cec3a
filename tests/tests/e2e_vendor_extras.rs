//! A vendor extra (`x_` metric with a declared unit) end to end: a simulated monitor holds it in
//! a register, the gateway decodes it through the shipped profile, and the aggregator stores
//! it and lists it with its unit; alarm rules leave it alone unless a threshold names it, and
//! then its alarm becomes a case.

use std::time::Duration;

use fumegrid_tests::site::*;
use fumegrid_tests::*;
use serde_json::Value;

/// A simulated monitor on the shipped profile with `x_run_hours` frozen at 5002 h, and a
/// gateway polling it as `kitchen-9` with `rules` (a TOML inline table, or empty).
struct Extras {
    site: Site,
    _agg: Proc,
    _sim: Proc,
    _gw: Proc,
    port: u16,
}

fn start(name: &str, rules: &str) -> Extras {
    let site = Site::new(name);
    let agg = site.aggregator(&site.embedded());
    let profile = root().join("device-profiles/scaled-u16-holding.toml");
    let port = free_port();
    // Scenario time frozen at 2 h: the simulator's run-hours counter reads 5000 + 2.
    let sim = sim(&[
        "monitor",
        "--tcp",
        &format!("127.0.0.1:{port}"),
        "--profile",
        profile.to_str().expect("path"),
        "--scenario",
        "normal",
        "--speed",
        "0",
        "--start-at",
        "7200",
        "--duration",
        "120",
    ]);
    let cfg = site.dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"{GW}\"\npoll_interval_ms = 250\n\
             [outbox]\npath = \"outbox\"\nflush_interval_ms = 200\n\
             [uplink]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"{GW}\"\npassword_file = \"mqtt.pass\"\n\
             key_file = \"gw.key\"\nkeep_alive_s = 5\nack_timeout_s = 3\n\
             [report]\nstrategy = \"raw\"\n\
             [[devices]]\nid = \"kitchen-9\"\nprofile = \"{}\"\ntcp = \"127.0.0.1:{port}\"\n{rules}\n",
            site.mqtt,
            profile.display()
        ),
    )
    .expect("gateway config");
    let gw = site.gateway(&cfg);

    Extras {
        site,
        _agg: agg,
        _sim: sim,
        _gw: gw,
        port,
    }
}

#[test]
fn e2e_a_vendor_extra_reaches_the_aggregator_api_with_its_unit() {
    let x = start("extras", "");
    let (site, port) = (&x.site, x.port);
    let profile = root().join("device-profiles/scaled-u16-holding.toml");
    // The technician's view first: `probe` shows it with its unit.
    let out = std::process::Command::new(bin("fumegrid-gateway"))
        .args(["probe", "--profile"])
        .arg(&profile)
        .args(["--tcp", &format!("127.0.0.1:{port}"), "--slave", "1"])
        .output()
        .expect("run probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("x_run_hours"))
        .unwrap_or_else(|| panic!("no x_run_hours in\n{text}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[..4], ["x_run_hours", "5002.000", "h", "ok"], "{line}");

    let extra = |v: &Value| -> Option<Value> {
        v["devices"]
            .as_array()?
            .iter()
            .find(|d| d["device"] == "kitchen-9")?["latest"]
            .as_array()?
            .iter()
            .find(|l| l["metric"] == "x_run_hours")
            .cloned()
    };
    let latest = wait_until(
        "x_run_hours in /api/v1/devices",
        Duration::from_secs(60),
        || {
            let devices = api_get(site.api, "/api/v1/devices");
            extra(&devices).ok_or(devices)
        },
    );
    assert_eq!(latest["unit"], "h", "{latest}");
    assert_eq!(latest["value"], 5002.0, "{latest}");
    assert_eq!(latest["quality"], "ok", "{latest}");

    let r = api_get(
        site.api,
        "/api/v1/devices/kitchen-9/readings?metric=x_run_hours&limit=5",
    );
    let readings = r["readings"].as_array().cloned().unwrap_or_default();
    assert!(!readings.is_empty(), "{r}");
    for x in &readings {
        assert_eq!(
            (&x["metric"], &x["unit"], &x["value"]),
            (
                &Value::from("x_run_hours"),
                &Value::from("h"),
                &Value::from(5002.0)
            ),
            "{x}"
        );
    }
    // Canonical metrics keep their own units next to it.
    let devices = api_get(site.api, "/api/v1/devices");
    let fume = devices["devices"][0]["latest"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["metric"] == "fume_mg_m3").cloned())
        .unwrap_or_default();
    assert_eq!(fume["unit"], "mg/m³", "{devices}");
    // Alarm rules ignore it: nothing was raised about it.
    let alarms = api_get(site.api, "/api/v1/alarms?state=all&device=kitchen-9");
    assert!(
        !alarms.to_string().contains("x_run_hours"),
        "an alarm names the vendor extra: {alarms}"
    );
}

/// A technician names the vendor extra in a threshold: its alarm carries the metric, value and
/// bound, and the aggregator's default catalogue opens a `threshold` case for it.
#[test]
fn e2e_a_threshold_on_a_vendor_extra_raises_its_alarm_and_opens_a_case() {
    let x = start(
        "extras-threshold",
        "rules = { thresholds = { x_run_hours = { above = 5000.0, after_s = 0 } } }",
    );
    let site = &x.site;
    let alarm = wait_until("the threshold alarm", Duration::from_secs(60), || {
        let v = api_get(site.api, "/api/v1/alarms?state=all&device=kitchen-9");
        v["alarms"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["kind"] == "threshold").cloned())
            .ok_or(v)
    });
    assert_eq!(alarm["metric"], "x_run_hours", "{alarm}");
    assert_eq!(alarm["value"], 5002.0, "{alarm}");
    assert_eq!(alarm["limit"], 5000.0, "{alarm}");
    let case = wait_until("the threshold case", Duration::from_secs(30), || {
        let (s, v) = api_call(
            site.api,
            "GET",
            "/api/v1/cases?device=kitchen-9",
            Some(OPERATOR_TOKEN),
            None,
        );
        assert_eq!(s, 200, "{v}");
        v["cases"]
            .as_array()
            .and_then(|c| c.first().cloned())
            .ok_or(v)
    });
    assert_eq!(case["category"], "threshold", "{case}");
    assert_eq!(case["department"], "epb", "{case}");
    // Only the threshold: the built-in rules still leave the extra alone.
    let alarms = api_get(site.api, "/api/v1/alarms?state=all&device=kitchen-9");
    let kinds: Vec<&Value> = alarms["alarms"]
        .as_array()
        .map(|a| a.iter().map(|a| &a["kind"]).collect())
        .unwrap_or_default();
    assert_eq!(kinds, [&Value::from("threshold")], "{alarms}");
}
