//! Delivery that loses nothing, with real processes: simulated monitors → fumegrid-gateway →
//! (a TCP proxy standing in for the 4G link) → the aggregator's broker → its store. The test
//! freezes, severs and refuses the link, kills the aggregator and SIGKILLs the gateway, then
//! counts every seq: each item the gateway recorded is stored exactly once, the outbox is empty.

use std::net::SocketAddr;
use std::time::Duration;

use fumegrid_tests::site::*;
use fumegrid_tests::*;

#[test]
fn e2e_delivery_survives_link_cuts_aggregator_restart_and_gateway_kills() {
    let site = Site::new("delivery");
    let agg_cfg = site.embedded();
    let mut agg = site.aggregator(&agg_cfg);
    let broker: SocketAddr = format!("127.0.0.1:{}", site.mqtt).parse().expect("addr");
    let proxy = Proxy::new(broker);
    let base = consecutive_free_ports(4);
    let mut sims = fleet(base, 4);
    let gw_cfg = site.gateway_config(proxy.port, base, 4, 100, 50_000);
    let mut gw = site.gateway(&gw_cfg);
    let step = |what: &str, secs: f64| {
        eprintln!("[{:?}] {what}", site.stored());
        // The scenario: hold each situation (link frozen, down, ...) this long while the
        // monitors keep producing; the end waits on the store settling, not on time.
        std::thread::sleep(Duration::from_secs_f64(secs));
    };

    step("flowing", 3.0);
    proxy.set(ProxyMode::Freeze);
    step("link frozen", 4.0);
    proxy.sever();
    proxy.set(ProxyMode::Refuse);
    step("link down", 4.0);
    let before = site.stored().0;
    proxy.set(ProxyMode::Pass);
    site.wait_growth(before, "the link came back");
    step("link back", 2.0);
    agg.kill9();
    step("aggregator killed", 3.0);
    let before = site.stored().0;
    agg = site.aggregator(&agg_cfg);
    site.wait_growth(before, "the aggregator restarted");
    step("aggregator restarted", 2.0);
    for i in 0..3 {
        gw.kill9();
        step(&format!("gateway SIGKILLed ({i})"), 0.5);
        let before = site.stored().0;
        gw = site.gateway(&gw_cfg);
        site.wait_growth(before, "the gateway restarted");
        step("gateway restarted", 1.5);
    }
    // The monitors go quiet; the gateway records their silence and then has nothing new.
    sims.kill9();
    let (count, min, max, streams) =
        site.wait_settled(Duration::from_secs(6), Duration::from_secs(90));
    gw.term();
    let (ok, stderr) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "gateway did not stop cleanly:\n{stderr}");
    let (left, next_seq) = site.outbox_after_stop();
    let after = site.stored();
    eprintln!("stored {count} items, seqs {min}..={max}; outbox: {left} left, next seq {next_seq}");
    assert_eq!(streams, 1, "one outbox, one stream, across restarts");
    assert_eq!(left, 0, "outbox not empty after the drain");
    assert_eq!(
        (min, max),
        (1, next_seq - 1),
        "the aggregator lacks items the gateway recorded"
    );
    assert_eq!(count, max, "seqs 1..={max} each stored once");
    assert_eq!(after.0, count, "nothing arrived after settling");
    assert!(count > 1000, "too little traffic to mean anything: {count}");
    assert_eq!(site.duplicate_readings(), 0);
    drop(agg);
}

#[test]
fn e2e_long_outage_drains_backlog_with_live_first() {
    let site = Site::new("outage");
    let agg_cfg = site.embedded();
    let _agg = site.aggregator(&agg_cfg);
    let broker: SocketAddr = format!("127.0.0.1:{}", site.mqtt).parse().expect("addr");
    let proxy = Proxy::new(broker);
    proxy.set(ProxyMode::Refuse);
    // Time-compressed: 8 monitors polled 20 times a second stand in for a day of 1 Hz polling.
    let base = consecutive_free_ports(8);
    let mut sims = fleet(base, 8);
    let gw_cfg = site.gateway_config(proxy.port, base, 8, 50, 2_000);
    let mut gw = site.gateway(&gw_cfg);
    // The scenario: a 12 s outage (a compressed day) for the backlog to pile up in the outbox.
    std::thread::sleep(Duration::from_secs(12));
    let before = site.stored();
    assert_eq!(before.0, 0, "nothing can have arrived during the outage");
    proxy.set(ProxyMode::Pass);
    let t0 = fumegrid_tests::now();
    // Live items arrive while the backlog is still draining: within a few seconds the newest
    // stored seq is far beyond the oldest missing one.
    wait_until(
        "live items to overtake the backlog",
        Duration::from_secs(20),
        || {
            let s = site.stored();
            let (count, _, max, _) = s;
            if count > 0 && max > count + 100 {
                Ok(())
            } else {
                Err(s)
            }
        },
    );
    sims.kill9();
    let (count, _, max, _) = site.wait_settled(Duration::from_secs(6), Duration::from_secs(120));
    eprintln!(
        "drained {count} items in {:?}",
        (fumegrid_tests::now() - t0)
    );
    gw.term();
    let (ok, stderr) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "{stderr}");
    let (left, next_seq) = site.outbox_after_stop();
    assert_eq!((left, count, max), (0, next_seq - 1, next_seq - 1));
    assert!(count > 10_000, "outage produced only {count} items");
}
