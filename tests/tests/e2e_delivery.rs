//! Delivery that loses nothing, with real processes: simulated monitors → fumegrid-gateway →
//! (a TCP proxy standing in for the 4G link) → the aggregator's broker → its store. The test
//! freezes, severs and refuses the link, kills the aggregator and SIGKILLs the gateway, then
//! counts every seq: each item the gateway recorded is stored exactly once, the outbox is empty.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fumegrid_gateway::outbox::{Outbox, OutboxConfig, SledOutbox};
use fumegrid_tests::*;

const KEY: &str = "4f1c2a9be07d3356a8c1f0e2d4b6a8c0e2f4a6b8d0c2e4f6a8b0c2d4e6f8a0b2";
const GW: &str = "gw-e2e";
const PASS: &str = "gw-e2e-password";

struct Site {
    dir: TempDir,
    mqtt: u16,
    api: u16,
}

impl Site {
    fn new(tag: &str) -> Site {
        let dir = TempDir::new(tag);
        std::fs::write(dir.join("gw.key"), KEY).expect("key");
        std::fs::write(dir.join("mqtt.pass"), PASS).expect("pass");
        std::fs::write(
            dir.join("users.toml"),
            format!("[[users]]\nusername = \"{GW}\"\npassword = \"{PASS}\"\n"),
        )
        .expect("users");
        Site {
            dir,
            mqtt: free_port(),
            api: free_port(),
        }
    }

    fn aggregator_config(&self, broker: &str) -> PathBuf {
        let p = self.dir.join("aggregator.toml");
        std::fs::write(
            &p,
            format!(
                "[aggregator]\nid = \"agg-e2e\"\n[store]\npath = \"agg.sqlite3\"\n[api]\nlisten = \"127.0.0.1:{}\"\n{broker}\n\
                 [[gateways]]\nid = \"{GW}\"\nkey = \"{KEY}\"\n",
                self.api
            ),
        )
        .expect("aggregator config");
        p
    }

    fn embedded(&self) -> PathBuf {
        self.aggregator_config(&format!(
            "[broker]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{}\"\ncredentials_file = \"users.toml\"\n",
            self.mqtt
        ))
    }

    fn aggregator(&self, config: &Path) -> Proc {
        let mut cmd = Command::new(bin("fumegrid-aggregator"));
        cmd.args(["run", "--log-format", "json", "--config"])
            .arg(config);
        let mut p = Proc::spawn("fumegrid-aggregator", cmd);
        p.wait_for("broker:", Duration::from_secs(20));
        p
    }

    /// Gateway config: `devices` TCP monitors on consecutive ports from `base`, uplink to `port`.
    fn gateway_config(
        &self,
        port: u16,
        base: u16,
        devices: u16,
        poll_ms: u64,
        backlog_per_s: u32,
    ) -> PathBuf {
        let mut c = format!(
            "[gateway]\nid = \"{GW}\"\npoll_interval_ms = {poll_ms}\nprobe_interval_ms = 600000\n\
             [outbox]\npath = \"outbox\"\nflush_interval_ms = 200\n\
             [uplink]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"{GW}\"\npassword_file = \"mqtt.pass\"\n\
             key_file = \"gw.key\"\nkeep_alive_s = 5\nack_timeout_s = 3\nbatch_max_items = 300\nbacklog_items_per_s = {backlog_per_s}\n"
        );
        let profile = root().join("device-profiles/tb-compatible.toml");
        for i in 0..devices {
            c += &format!(
                "[[devices]]\nid = \"m{i:02}\"\nprofile = \"{}\"\ntcp = \"127.0.0.1:{}\"\n",
                profile.display(),
                base + i
            );
        }
        let p = self.dir.join("gateway.toml");
        std::fs::write(&p, c).expect("gateway config");
        p
    }

    fn gateway(&self, config: &Path) -> Proc {
        let mut cmd = Command::new(bin("fumegrid-gateway"));
        cmd.args([
            "run",
            "--log-format",
            "json",
            "--log",
            "info,reading=off",
            "--config",
        ])
        .arg(config);
        Proc::spawn("fumegrid-gateway", cmd)
    }

    /// (items stored, lowest seq, highest seq) of the gateway's stream(s) in the aggregator.
    fn stored(&self) -> (u64, u64, u64, usize) {
        let db = rusqlite::Connection::open_with_flags(
            self.dir.join("agg.sqlite3"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        );
        let Ok(db) = db else { return (0, 0, 0, 0) };
        let _ = db.busy_timeout(Duration::from_secs(5));
        let row = db.query_row(
            "SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0), count(DISTINCT stream_id) \
             FROM items JOIN streams ON streams.id = items.stream_id WHERE streams.gateway = ?1",
            [GW],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)? as usize)),
        );
        row.unwrap_or((0, 0, 0, 0))
    }

    /// Readings stored more than once (by stream and seq) — must be none.
    fn duplicate_readings(&self) -> u64 {
        let db = rusqlite::Connection::open_with_flags(
            self.dir.join("agg.sqlite3"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open store");
        db.query_row(
            "SELECT count(*) FROM (SELECT stream_id, seq FROM readings GROUP BY stream_id, seq HAVING count(*) > 1)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("query") as u64
    }

    /// Waits (bounded) until more items are stored than `than`.
    fn wait_growth(&self, than: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.stored().0 <= than {
            assert!(
                Instant::now() < deadline,
                "nothing arrived after {what}: {:?}",
                self.stored()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the stored seqs are contiguous from 1 and have not grown for `quiet`.
    fn wait_settled(&self, quiet: Duration, limit: Duration) -> (u64, u64, u64, usize) {
        let deadline = Instant::now() + limit;
        let mut last = self.stored();
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let now = self.stored();
            if now != last {
                (last, since) = (now, Instant::now());
            } else if now.0 > 0 && now.0 == now.2 && since.elapsed() >= quiet {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "store never settled: last {last:?}"
            );
        }
    }

    fn outbox_after_stop(&self) -> (u64, u64) {
        let (o, _) = SledOutbox::open(
            &self.dir.join("outbox"),
            OutboxConfig {
                max_bytes: 256 << 20,
                flush_interval_ms: 1000,
            },
        )
        .expect("reopen outbox");
        let s = o.stats();
        (s.items, s.next_seq)
    }
}

fn fleet(base: u16, count: u16) -> Proc {
    sim(&[
        "fleet",
        "--tcp",
        &format!("127.0.0.1:{base}"),
        "--count",
        &count.to_string(),
        "--profile",
        root()
            .join("device-profiles/tb-compatible.toml")
            .to_str()
            .expect("path"),
        "--scenario",
        "normal",
        "--duration",
        "300",
    ])
}

fn consecutive_free_ports(n: u16) -> u16 {
    loop {
        let base = free_port();
        if base < 60000
            && (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

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
    std::thread::sleep(Duration::from_secs(12));
    let before = site.stored();
    assert_eq!(before.0, 0, "nothing can have arrived during the outage");
    proxy.set(ProxyMode::Pass);
    let t0 = Instant::now();
    // Live items arrive while the backlog is still draining: within a few seconds the newest
    // stored seq is far beyond the oldest missing one.
    let mut live_first = false;
    while t0.elapsed() < Duration::from_secs(20) && !live_first {
        std::thread::sleep(Duration::from_millis(200));
        let (count, _, max, _) = site.stored();
        live_first = count > 0 && max > count + 100;
    }
    assert!(
        live_first,
        "backlog was not overtaken by live items: {:?}",
        site.stored()
    );
    sims.kill9();
    let (count, _, max, _) = site.wait_settled(Duration::from_secs(6), Duration::from_secs(120));
    eprintln!("drained {count} items in {:?}", t0.elapsed());
    gw.term();
    let (ok, stderr) = gw.wait_exit(Duration::from_secs(20));
    assert!(ok, "{stderr}");
    let (left, next_seq) = site.outbox_after_stop();
    assert_eq!((left, count, max), (0, next_seq - 1, next_seq - 1));
    assert!(count > 10_000, "outage produced only {count} items");
}
