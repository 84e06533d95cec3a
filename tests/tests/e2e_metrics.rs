//! Prometheus metrics of both daemons, scraped from real processes with curl: the simulated
//! fleet → fumegrid-gateway (`[metrics] listen`) → the aggregator's embedded broker → its store,
//! plus one monitor that is not there and one forged message. The assertions are what an
//! operator would look at: polls per device, the dead device's failure kind and breaker, the
//! outbox depth, items acked, the forged message under its reject reason, and `/metrics`
//! refusing callers without the right token.

use std::process::Command;
use std::time::Duration;

use fumegrid_tests::site::*;
use fumegrid_tests::*;

/// Scrapes `url` until `enough` holds for the parsed scrape (bounded); returns the last one.
fn scrape_until(
    url: &str,
    token: Option<&str>,
    what: &str,
    mut enough: impl FnMut(&Scrape) -> bool,
) -> Scrape {
    wait_until(&format!("{what} at {url}"), Duration::from_secs(60), || {
        let (status, body) = http_get(url, token);
        let s = Scrape::parse(&body);
        if status == 200 && enough(&s) {
            Ok(s)
        } else {
            Err(format!("HTTP {status}:\n{body}"))
        }
    })
}

#[test]
fn e2e_metrics_of_gateway_and_aggregator() {
    let site = Site::new("metrics");
    let agg_cfg = site.embedded();
    let _agg = site.aggregator(&agg_cfg);
    let base = consecutive_free_ports(2);
    let _sims = fleet(base, 2);
    let gw_cfg = site.gateway_config(site.mqtt, base, 2, 200, 5000);
    // A third monitor whose port nobody listens on, and the metrics listener.
    let dead = free_port();
    let metrics_port = free_port();
    let profile = root().join("device-profiles/tb-compatible.toml");
    let mut cfg = std::fs::read_to_string(&gw_cfg).expect("gateway config");
    cfg += &format!(
        "[[devices]]\nid = \"gone\"\nprofile = \"{}\"\ntcp = \"127.0.0.1:{dead}\"\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        profile.display()
    );
    std::fs::write(&gw_cfg, cfg).expect("write config");
    let mut gw = site.gateway(&gw_cfg);

    // The gateway: polls per device, the absent device's failures and open breaker, the outbox
    // depth gauge, and acks from the aggregator.
    let gw_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let g = scrape_until(&gw_url, None, "gateway counters", |s| {
        let v = |n: &str, l: &[(&str, &str)]| s.get(n, l).unwrap_or(0.0);
        v("fumegrid_modbus_polls_total", &[("device", "m00")]) > 0.0
            && v("fumegrid_modbus_polls_ok_total", &[("device", "m01")]) > 0.0
            && v(
                "fumegrid_modbus_failures_total",
                &[("device", "gone"), ("kind", "io")],
            ) > 0.0
            && v("fumegrid_modbus_breaker_open", &[("device", "gone")]) == 1.0
            && v("fumegrid_uplink_items_acked_total", &[]) > 0.0
    });
    assert!(
        g.get("fumegrid_outbox_items", &[("gateway", GW)]).is_some(),
        "outbox depth gauge missing"
    );
    assert!(g.get("fumegrid_outbox_bytes", &[]).is_some());
    assert_eq!(
        g.get("fumegrid_outbox_dropped_total", &[("class", "reading")]),
        Some(0.0),
        "nothing dropped, and the series is there to alert on"
    );
    assert_eq!(g.get("fumegrid_uplink_connected", &[]), Some(1.0));
    assert_eq!(
        g.get("fumegrid_modbus_failures_total", &[("device", "m00")]),
        None,
        "a healthy device has no failure series"
    );
    assert_eq!(
        g.get("fumegrid_modbus_breaker_open", &[("device", "m00")]),
        Some(0.0)
    );

    // A message with the gateway's broker password but no MAC: refused as `no_mac`. The broker
    // binds client ids to accounts, so it connects as the gateway (which is kicked and comes
    // back).
    let forged = site.dir.join("forged.json");
    std::fs::write(&forged, b"{\"gateway\": \"gw-e2e\", oops").expect("write");
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &site.mqtt.to_string()])
        .args(["-u", GW, "-P", PASS, "-i", GW, "-q", "1"])
        .args(["-t", &format!("fumegrid/v1/{GW}/up"), "-f"])
        .arg(&forged)
        .status()
        .expect("mosquitto_pub (scripts/install-test-deps.sh)");
    assert!(st.success());

    let agg_url = format!("http://127.0.0.1:{}/metrics", site.api);
    let a = scrape_until(&agg_url, Some(VIEWER_TOKEN), "the refused message", |s| {
        s.get("fumegrid_ingest_rejects_total", &[("reason", "no_mac")]) == Some(1.0)
    });
    assert!(
        a.get("fumegrid_ingest_items_total", &[("gateway", GW)])
            .is_some_and(|v| v > 0.0)
    );
    assert_eq!(
        a.get("fumegrid_ingest_rejects_total", &[("reason", "bad_mac")]),
        Some(0.0),
        "every reason is a series from the start"
    );
    assert_eq!(a.get("fumegrid_ingest_mqtt_connected", &[]), Some(1.0));
    assert_eq!(
        a.get("fumegrid_store_errors_total", &[("op", "commit")]),
        Some(0.0)
    );

    // /metrics is behind the API's tokens: none → 401, a department's → 403.
    assert_eq!(http_get(&agg_url, None).0, 401);
    assert_eq!(http_get(&agg_url, Some(EPB_TOKEN)).0, 403);

    // Stopped, the gateway sends nothing more: the scrape and /api/v1/stats agree (one path).
    gw.term();
    let (ok, stderr) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "gateway did not stop cleanly:\n{stderr}");
    wait_until(
        "the scrape and /api/v1/stats to agree",
        Duration::from_secs(30),
        || {
            let stats = api_get(site.api, "/api/v1/stats");
            let (_, body) = http_get(&agg_url, Some(VIEWER_TOKEN));
            let s = Scrape::parse(&body);
            let items = s.get("fumegrid_ingest_items_total", &[("gateway", GW)]);
            let dups = s.get("fumegrid_ingest_duplicates_total", &[("gateway", GW)]);
            let want = (
                stats["items_accepted"].as_f64(),
                stats["items_duplicate"].as_f64(),
                stats["rejects"]["no_mac"].as_f64(),
            );
            let got = (
                items,
                dups,
                s.get("fumegrid_ingest_rejects_total", &[("reason", "no_mac")]),
            );
            if want == got && items.is_some() {
                Ok(())
            } else {
                Err(format!("scrape {got:?}, /api/v1/stats {want:?}"))
            }
        },
    );
}
