//! An outbox that goes back in time never loses data silently, and a stop is orderly — with
//! real processes: simulated monitors → fumegrid-gateway → the aggregator's broker → its store.
//!
//! - The outbox folder is put back to an older copy between runs (a restored backup): every
//!   reading the gateway took (counted from its own log) is stored, and a `store_reset` event
//!   says what happened. Without the hello the third run reused seqs the aggregator held and
//!   its readings were taken for resends.
//! - The outbox's log file is truncated or scribbled on while the gateway is stopped and the
//!   aggregator unreachable: every seq handed out before is either stored or counted in the
//!   event the gateway sends.
//! - A second SIGTERM ends a gateway whose drain is stuck behind a slow poll at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fumegrid_gateway::outbox::{Outbox, OutboxConfig, SledOutbox};
use fumegrid_tests::site::*;
use fumegrid_tests::*;

/// The gateway with every reading logged (target `reading`) to `log`, appended run after run.
fn gateway_logging(site: &Site, config: &Path, log: &Path) -> Proc {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("exec \"$0\" run --log-format json --log info --config \"$1\" 2>>\"$2\"")
        .arg(bin("fumegrid-gateway"))
        .arg(config)
        .arg(log);
    let _ = site;
    Proc::spawn("fumegrid-gateway", cmd)
}

fn readings_logged(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"target\":\"reading\""))
        .count() as u64
}

fn db(site: &Site) -> rusqlite::Connection {
    let c = rusqlite::Connection::open_with_flags(
        site.dir.join("agg.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open store");
    let _ = c.busy_timeout(Duration::from_secs(5));
    c
}

fn count(site: &Site, sql: &str) -> u64 {
    db(site)
        .query_row(sql, [], |r| r.get::<_, i64>(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
}

fn readings_stored(site: &Site) -> u64 {
    count(
        site,
        &format!("SELECT count(*) FROM readings_flat WHERE gateway = '{GW}'"),
    )
}

/// `(kind, dropped, message)` of every event of the gateway other than `started`.
fn events(site: &Site) -> Vec<(String, Option<i64>, String)> {
    let c = db(site);
    let mut st = c
        .prepare(
            "SELECT kind, dropped, message FROM events WHERE gateway = ?1 AND kind != 'started' \
             ORDER BY id",
        )
        .expect("prepare");
    st.query_map([GW], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// Waits until the number of stored items has not changed for `quiet` (bounded).
fn settle(site: &Site, quiet: Duration) -> u64 {
    let mut last = site.stored().0;
    let mut since = fumegrid_tests::now();
    wait_until("the store to settle", Duration::from_secs(90), || {
        let now = site.stored().0;
        if now != last {
            (last, since) = (now, fumegrid_tests::now());
        } else if (fumegrid_tests::now() - since) >= quiet {
            return Ok(now);
        }
        Err(now)
    })
}

fn outbox_cfg() -> OutboxConfig {
    OutboxConfig {
        max_bytes: 256 << 20,
        flush_interval_ms: 1000,
        ..OutboxConfig::default()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

/// One run of the gateway with live monitors: takes readings until the store has grown by
/// `grow`, then the monitors die, everything is delivered, and the gateway stops cleanly.
fn run_once(site: &Site, cfg: &Path, log: &Path, base: u16, grow: u64) {
    let mut sims = fleet(base, 2);
    let mut gw = gateway_logging(site, cfg, log);
    let before = site.stored().0;
    wait_until(
        &format!("the store to grow by {grow}"),
        Duration::from_secs(30),
        || {
            let s = site.stored();
            if s.0 >= before + grow { Ok(()) } else { Err(s) }
        },
    );
    sims.kill9();
    settle(site, Duration::from_secs(4));
    gw.term();
    let (ok, _) = gw.wait_exit(Duration::from_secs(30));
    assert!(ok, "gateway did not stop cleanly; log in {}", log.display());
}

#[test]
fn e2e_outbox_restored_from_an_older_copy_loses_nothing_and_says_so() {
    let site = Site::new("rollback");
    let agg_cfg = site.embedded();
    let _agg = site.aggregator(&agg_cfg);
    let base = consecutive_free_ports(2);
    let cfg = site.gateway_config(site.mqtt, base, 2, 100, 50_000);
    let log = site.dir.join("gateway.log");
    let outbox = site.dir.join("outbox");
    let copy = site.dir.join("outbox.copy");

    run_once(&site, &cfg, &log, base, 300);
    copy_dir(&outbox, &copy);
    let after_copy = site.stored();
    run_once(&site, &cfg, &log, base, 600);
    let before_restore = site.stored();
    eprintln!("copied at {after_copy:?}, restored at {before_restore:?}");
    std::fs::remove_dir_all(&outbox).expect("remove outbox");
    std::fs::rename(&copy, &outbox).expect("restore the copy");
    run_once(&site, &cfg, &log, base, 600);

    let taken = readings_logged(&log);
    let stored = readings_stored(&site);
    let ev = events(&site);
    let conflicts = count(&site, "SELECT count(*) FROM conflicts");
    eprintln!("taken {taken}, stored {stored}, conflicts {conflicts}, events {ev:?}");
    assert!(taken > 1000, "too little traffic to mean anything: {taken}");
    assert_eq!(stored, taken, "every reading taken is stored");
    assert_eq!(site.duplicate_readings(), 0);
    assert_eq!(conflicts, 0, "no seq was reused with other content");
    let resets: Vec<_> = ev.iter().filter(|e| e.0 == "store_reset").collect();
    assert_eq!(resets.len(), 1, "one store_reset event: {ev:?}");
    assert_eq!(resets[0].1, Some(0), "nothing was lost: {ev:?}");
    let (left, _) = {
        let (o, _) = SledOutbox::open(&outbox, outbox_cfg()).expect("reopen outbox");
        let s = o.stats();
        (s.items, s.next_seq)
    };
    assert_eq!(left, 0, "outbox not empty after the drain");
}

/// Damages the sled log file `db` of a stopped outbox.
fn damage(outbox: &Path, how: &str) -> PathBuf {
    let file = outbox.join("db");
    let len = std::fs::metadata(&file).expect("db file").len();
    match how {
        "truncate" => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .expect("open db");
            // Measured on this log: sled recovers a prefix silently (no error), so only the
            // checkpoint and the hello notice.
            f.set_len(len * 3 / 10).expect("truncate");
        }
        "half-written" => {
            // Power lost while sled was writing: the log cut short and no snapshot of it.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .expect("open db");
            f.set_len(len * 3 / 10).expect("truncate");
            for e in std::fs::read_dir(outbox).expect("read dir") {
                let e = e.expect("entry");
                if e.file_name().to_string_lossy().starts_with("snap.") {
                    std::fs::remove_file(e.path()).expect("remove snapshot");
                }
            }
        }
        _ => {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .expect("open db");
            f.seek(SeekFrom::Start(len / 2)).expect("seek");
            let junk: Vec<u8> = (0..16384u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            f.write_all(&junk).expect("scribble");
        }
    }
    file
}

fn torn(how: &str) {
    let site = Site::new(&format!("torn-{how}"));
    let agg_cfg = site.embedded();
    let _agg = site.aggregator(&agg_cfg);
    let base = consecutive_free_ports(2);
    let log = site.dir.join("gateway.log");
    let outbox = site.dir.join("outbox");
    // First the uplink points nowhere: everything stays in the outbox.
    let nowhere = free_port();
    let offline_cfg = site.gateway_config(nowhere, base, 2, 50, 50_000);
    std::fs::rename(&offline_cfg, site.dir.join("offline.toml")).expect("rename");
    let offline_cfg = site.dir.join("offline.toml");
    let online_cfg = site.gateway_config(site.mqtt, base, 2, 50, 50_000);
    let mut sims = fleet(base, 2);
    let mut gw = gateway_logging(&site, &offline_cfg, &log);
    wait_until("3000 readings logged", Duration::from_secs(30), || {
        let n = readings_logged(&log);
        if n >= 3000 { Ok(()) } else { Err(n) }
    });
    sims.kill9();
    gw.term();
    let (ok, _) = gw.wait_exit(Duration::from_secs(30));
    assert!(ok, "gateway did not stop cleanly; log in {}", log.display());
    let (items, next_seq, stream) = {
        let (o, _) = SledOutbox::open(&outbox, outbox_cfg()).expect("reopen outbox");
        (o.stats().items, o.stats().next_seq, o.stream().to_string())
    };
    assert_eq!(items, next_seq - 1, "nothing was sent, nothing acked");
    let file = damage(&outbox, how);
    eprintln!(
        "{items} items in the outbox; damaged {} ({how})",
        file.display()
    );

    let mut gw = gateway_logging(&site, &online_cfg, &log);
    wait_until(
        &format!("items to arrive (log in {})", log.display()),
        Duration::from_secs(60),
        || site.stored().0 > 0,
    );
    settle(&site, Duration::from_secs(4));
    gw.term();
    let (ok, _) = gw.wait_exit(Duration::from_secs(30));
    assert!(ok, "gateway did not stop cleanly; log in {}", log.display());

    // Every seq handed out before the damage is stored or counted as lost in the event.
    let ev = events(&site);
    let reported: i64 = ev
        .iter()
        .filter(|e| e.0 == "store_reset")
        .filter_map(|e| e.1)
        .sum();
    // (A store that sled refuses is moved aside and a new stream starts: then none survived.)
    let survived = count(
        &site,
        &format!(
            // The seqs below next_seq held by the stream's ranges (schema 15, `store/dedupe.rs`).
            "SELECT coalesce(sum(min(r.last_seq, {next_seq} - 1) - r.first_seq + 1), 0) \
             FROM stream_ranges r JOIN streams ON streams.id = r.stream_id \
             WHERE streams.gateway = '{GW}' AND streams.stream = '{stream}' \
               AND r.first_seq < {next_seq}"
        ),
    );
    eprintln!("{survived} of {items} survived; reported lost {reported}; events {ev:?}");
    assert!(
        survived < items,
        "the damage lost nothing; the test proves nothing"
    );
    assert_eq!(
        survived + reported as u64,
        items,
        "every item of the damaged outbox is stored or reported lost: {ev:?}"
    );
    assert_eq!(count(&site, "SELECT count(*) FROM conflicts"), 0);
}

#[test]
fn e2e_truncated_outbox_reports_its_loss() {
    torn("truncate");
}

#[test]
fn e2e_half_written_outbox_reports_its_loss() {
    torn("half-written");
}

#[test]
fn e2e_scribbled_outbox_reports_its_loss() {
    torn("scribble");
}

#[test]
fn e2e_second_sigterm_exits_at_once() {
    let site = Site::new("sigterm");
    // A monitor that accepts and never answers, behind a profile with a 20 s response timeout:
    // the first SIGTERM finds the gateway in the middle of that poll, and the drain waits for it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let profile = std::fs::read_to_string(root().join("device-profiles/tb-compatible.toml"))
        .expect("profile")
        .replace("response_timeout_ms = 300", "response_timeout_ms = 20000");
    let profile_path = site.dir.join("slow.toml");
    std::fs::write(&profile_path, profile).expect("write profile");
    let cfg = site.dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"{GW}\"\npoll_interval_ms = 1000\n[outbox]\npath = \"outbox\"\n\
             [[devices]]\nid = \"m00\"\nprofile = \"{}\"\ntcp = \"127.0.0.1:{port}\"\n",
            profile_path.display()
        ),
    )
    .expect("config");
    let log = site.dir.join("gateway.log");
    let mut gw = gateway_logging(&site, &cfg, &log);
    let (_held, _) = listener.accept().expect("the gateway connects");
    // The request is on its way once the connection is up; give it the time to be written.
    wait_until(
        "the gateway to start polling",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("\"polling\"")
        },
    );
    gw.term();
    wait_until(
        "the first SIGTERM to be taken",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("stopping")
        },
    );
    let t = fumegrid_tests::now();
    gw.term();
    let (ok, _) = gw.wait_exit(Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "exited {:?} after the second SIGTERM",
        (fumegrid_tests::now() - t)
    );
    assert!(
        !ok,
        "the drain ran to its end instead of stopping at the second signal"
    );
    assert!(text.contains("second signal"), "{text}");
}

/// A full disk: the gateway fills its outbox's file system while the aggregator is out of
/// reach, stops, and starts again with the aggregator reachable. It starts (it crash-looped on
/// ENOSPC before), drains, and the readings it could not store arrive as a counted gap event.
/// Needs root (a 3 MiB tmpfs); says so and passes vacuously otherwise.
#[test]
fn e2e_full_disk_gateway_starts_drains_and_reports_the_gap() {
    let site = Site::new("fulldisk");
    let mnt = site.dir.join("small");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let agg_cfg = site.embedded();
    let _agg = site.aggregator(&agg_cfg);
    let base = consecutive_free_ports(2);
    let log = site.dir.join("gateway.log");
    let with_outbox = |port: u16, name: &str| {
        let p = site.gateway_config(port, base, 2, 20, 50_000);
        let text = std::fs::read_to_string(&p).expect("config").replace(
            "path = \"outbox\"",
            &format!("path = \"{}\"", mnt.join("outbox").display()),
        );
        let to = site.dir.join(name);
        std::fs::write(&to, text).expect("write config");
        to
    };
    let offline = with_outbox(free_port(), "offline.toml");
    let online = with_outbox(site.mqtt, "online.toml");
    let mut sims = fleet(base, 2);
    let mut gw = gateway_logging(&site, &offline, &log);
    wait_until("the disk to fill", Duration::from_secs(90), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("cannot append to the outbox")
    });
    sims.kill9();
    gw.term();
    let (ok, _) = gw.wait_exit(Duration::from_secs(30));
    assert!(ok, "gateway did not stop cleanly; log in {}", log.display());

    let mut gw = gateway_logging(&site, &online, &log);
    wait_until(
        &format!("a gap event (log in {})", log.display()),
        Duration::from_secs(60),
        || {
            let ev = events(&site);
            if ev.iter().any(|e| e.0 == "gap") {
                Ok(())
            } else {
                Err((site.stored(), ev))
            }
        },
    );
    settle(&site, Duration::from_secs(4));
    gw.term();
    let (ok, _) = gw.wait_exit(Duration::from_secs(30));
    assert!(ok, "gateway did not stop cleanly; log in {}", log.display());
    let taken = readings_logged(&log);
    let stored = readings_stored(&site);
    let gaps: i64 = events(&site)
        .iter()
        .filter(|e| e.0 == "gap")
        .filter_map(|e| e.1)
        .sum();
    eprintln!("taken {taken}, stored {stored}, reported in gap events {gaps}");
    assert!(gaps > 0 && stored > 0);
    assert!(
        stored + gaps as u64 >= taken,
        "readings lost without a count: taken {taken}, stored {stored}, gap {gaps}"
    );
}
