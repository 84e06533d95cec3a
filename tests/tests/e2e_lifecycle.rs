//! Issue 14 at the gateway, with real processes: a mixed fleet against one aggregator. One
//! gateway speaks the old format (`[report] strategy = "raw"`, `[uplink] compress = false`:
//! plain JSON readings, byte for byte the v1 wire), the other the defaults (clock-aligned
//! periods, gzip batches; `period_s = 10` only to keep the test short). Both are stored, nothing
//! is refused, and a kill -9 of the new gateway mid-period loses no item and sends no period
//! twice.

use std::time::Duration;

use fumegrid_tests::site::*;
use fumegrid_tests::*;

const NEW: &str = "gw-new";
const NEW_KEY: &str = "0b1c2a9be07d3356a8c1f0e2d4b6a8c0e2f4a6b8d0c2e4f6a8b0c2d4e6f8a0b2";
const NEW_PASS: &str = "gw-new-password";

fn gateway_config(
    site: &Site,
    id: &str,
    key: &str,
    pass: &str,
    port: u16,
    extra: &str,
) -> std::path::PathBuf {
    std::fs::write(site.dir.join(&format!("{id}.key")), key).expect("key");
    std::fs::write(site.dir.join(&format!("{id}.pass")), pass).expect("pass");
    let profile = root().join("device-profiles/tb-compatible.toml");
    let text = format!(
        "[gateway]\nid = \"{id}\"\npoll_interval_ms = 1000\n\
         [outbox]\npath = \"outbox-{id}\"\nflush_interval_ms = 200\n\
         [uplink]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"{id}\"\npassword_file = \"{id}.pass\"\n\
         key_file = \"{id}.key\"\nkeep_alive_s = 5\nack_timeout_s = 3\n{extra}\n\
         [[devices]]\nid = \"m-{id}\"\nprofile = \"{}\"\ntcp = \"127.0.0.1:{port}\"\n",
        site.mqtt,
        profile.display()
    );
    let p = site.dir.join(&format!("{id}.toml"));
    std::fs::write(&p, text).expect("gateway config");
    p
}

fn db(site: &Site) -> rusqlite::Connection {
    let db = rusqlite::Connection::open_with_flags(
        site.dir.join("agg.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open store");
    let _ = db.busy_timeout(Duration::from_secs(5));
    db
}

fn count(site: &Site, sql: &str, gw: &str) -> i64 {
    db(site)
        .query_row(sql, [gw], |r| r.get::<_, i64>(0))
        .unwrap_or(0)
}

/// (items, lowest seq, highest seq) stored of `gw`'s stream(s).
fn stored(site: &Site, gw: &str) -> (i64, i64, i64) {
    db(site)
        .query_row(
            // What each stream holds is a set of seq ranges (schema 15, `store/dedupe.rs`).
            "SELECT coalesce(sum(r.last_seq - r.first_seq + 1), 0), coalesce(min(r.first_seq), 0), \
               coalesce(max(r.last_seq), 0) \
             FROM stream_ranges r JOIN streams ON streams.id = r.stream_id WHERE streams.gateway = ?1",
            [gw],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap_or((0, 0, 0))
}

#[test]
fn e2e_mixed_fleet_old_and_new_gateways_against_one_aggregator() {
    let site = Site::new("lifecycle");
    std::fs::write(
        site.dir.join("users.toml"),
        format!(
            "[[users]]\nusername = \"{GW}\"\npassword = \"{PASS}\"\n\
             [[users]]\nusername = \"{NEW}\"\npassword = \"{NEW_PASS}\"\n\
             [[users]]\nusername = \"observer\"\npassword = \"observer-pass\"\n"
        ),
    )
    .expect("users");
    let agg_cfg = site.embedded_with(&format!(
        "[[gateways]]\nid = \"{NEW}\"\nkey = \"{NEW_KEY}\"\n"
    ));
    let agg = site.aggregator(&agg_cfg);
    let base = consecutive_free_ports(2);
    let mut sims = fleet(base, 2);
    let old_cfg = gateway_config(
        &site,
        GW,
        KEY,
        PASS,
        base,
        "compress = false\n[report]\nstrategy = \"raw\"",
    );
    let new_cfg = gateway_config(
        &site,
        NEW,
        NEW_KEY,
        NEW_PASS,
        base + 1,
        "[report]\nperiod_s = 10",
    );
    let mut old = site.gateway(&old_cfg);
    let mut new = site.gateway(&new_cfg);

    let periods_sql = "SELECT count(DISTINCT start_ms) FROM periods_flat WHERE gateway = ?1";
    let readings_sql = "SELECT count(*) FROM readings JOIN streams ON streams.id = readings.stream_id WHERE streams.gateway = ?1";
    wait_until(
        "periods of the new gateway stored",
        Duration::from_secs(60),
        || {
            let n = count(&site, periods_sql, NEW);
            if n > 0 { Ok(()) } else { Err(n) }
        },
    );

    // A kill -9 mid-period: the period in memory continues from its last save.
    wait_until(
        "a second period of the new gateway",
        Duration::from_secs(30),
        || {
            let n = count(&site, periods_sql, NEW);
            if n >= 2 { Ok(()) } else { Err(n) }
        },
    );
    new.kill9();
    new = site.gateway(&new_cfg);
    let before = count(&site, periods_sql, NEW);
    wait_until("periods after the restart", Duration::from_secs(60), || {
        let n = count(&site, periods_sql, NEW);
        if n >= before + 2 { Ok(()) } else { Err(n) }
    });

    sims.kill9();
    for g in [&old, &new] {
        g.term();
    }
    for g in [&mut old, &mut new] {
        let (ok, stderr) = g.wait_exit(Duration::from_secs(20));
        assert!(ok, "gateway did not stop cleanly:\n{stderr}");
    }
    // Every item of both gateways stored once, seqs 1..=n (delivery across the kill -9).
    for gw in [GW, NEW] {
        let (n, min, max) = wait_until(
            &format!("{gw}'s items settled"),
            Duration::from_secs(30),
            || {
                let s = stored(&site, gw);
                if s.0 > 0 && s.1 == 1 && s.0 == s.2 {
                    Ok(s)
                } else {
                    Err(s)
                }
            },
        );
        eprintln!("{gw}: {n} items, seqs {min}..={max}");
    }
    assert!(
        count(&site, readings_sql, GW) > 20,
        "the old gateway's readings are stored"
    );
    assert_eq!(
        count(&site, readings_sql, NEW),
        0,
        "no alarm, no raw window: periods only"
    );
    assert_eq!(
        count(
            &site,
            "SELECT count(*) FROM periods_flat WHERE gateway = ?1",
            GW
        ),
        0
    );
    // Periods aligned, never with more polls than the period holds.
    let bad = count(
        &site,
        "SELECT count(*) FROM periods_flat WHERE gateway = ?1 AND (start_ms % 10000 != 0 OR period_s != 10 OR polls > 11 OR count > polls)",
        NEW,
    );
    assert_eq!(bad, 0, "periods aligned to 10 s, each poll counted once");
    let stats = api_get(site.api, "/api/v1/stats");
    assert_eq!(stats["rejects_total"], 0, "nothing refused: {stats}");
    drop(agg);
}
