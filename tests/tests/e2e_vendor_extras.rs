//! A vendor extra (`x_` metric with a declared unit) end to end: a simulated monitor holds it in
//! a register, the gateway decodes it through the shipped profile, and the aggregator stores
//! it and lists it with its unit.

use std::time::Duration;

use fumegrid_tests::site::*;
use fumegrid_tests::*;
use serde_json::Value;

#[test]
fn e2e_a_vendor_extra_reaches_the_aggregator_api_with_its_unit() {
    let site = Site::new("extras");
    let _agg = site.aggregator(&site.embedded());
    let profile = root().join("device-profiles/scaled-u16-holding.toml");
    let port = free_port();
    // Scenario time frozen at 2 h: the simulator's run-hours counter reads 5000 + 2.
    let _sim = sim(&[
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

    let cfg = site.dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"{GW}\"\npoll_interval_ms = 250\n\
             [outbox]\npath = \"outbox\"\nflush_interval_ms = 200\n\
             [uplink]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"{GW}\"\npassword_file = \"mqtt.pass\"\n\
             key_file = \"gw.key\"\nkeep_alive_s = 5\nack_timeout_s = 3\n\
             [[devices]]\nid = \"kitchen-9\"\nprofile = \"{}\"\ntcp = \"127.0.0.1:{port}\"\n",
            site.mqtt,
            profile.display()
        ),
    )
    .expect("gateway config");
    let _gw = site.gateway(&cfg);

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
