//! Pictures lose nothing either (issue 13, "No loss"), with real processes: a simulated monitor
//! and its simulated HTTP snapshot camera → fumegrid-gateway (three cameras on the monitor) →
//! a TCP proxy standing in for the 4G link → the aggregator's broker → its store and blob store.
//!
//! The link is down from the start: every picture the gateway takes waits in its outbox while
//! the gateway is SIGKILLed twice and restarted. Then the link comes back. Every picture the
//! gateway logged as taken (its log line is written after the outbox append returned, which
//! flushes) must be stored at the aggregator exactly once, and the bytes in the blob store must
//! hash to the SHA-256 taken at capture. The alarm that triggered them must be there too.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fumegrid_tests::site::*;
use fumegrid_tests::*;
use sha2::{Digest, Sha256};

/// The gateway, its log (JSON lines) appended to `log` so that a SIGKILL loses none of it.
fn gateway(site: &Site, config: &Path, log: &Path) -> Proc {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "exec '{}' run --log-format json --log info,reading=off --config '{}' 2>>'{}'",
            bin("fumegrid-gateway").display(),
            config.display(),
            log.display()
        ))
        .current_dir(site.dir.path());
    Proc::spawn("fumegrid-gateway", cmd)
}

/// SHA-256s of the pictures the gateway logged as taken, in every run so far.
fn taken(log: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "picture taken")
        .filter_map(|v| v["sha256"].as_str().map(str::to_string))
        .collect()
}

/// A metric of the gateway's `/metrics`, summed over its labels (0 when absent or unreachable).
fn metric(port: u16, name: &str) -> f64 {
    let (code, text) = http_get(&format!("http://127.0.0.1:{port}/metrics"), None);
    if code != 200 {
        return -1.0;
    }
    Scrape::parse(&text)
        .samples
        .iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .sum()
}

/// Pictures from cameras in the aggregator's store: (sha256, state).
fn stored(site: &Site) -> Vec<(String, String)> {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        site.dir.join("agg.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    let _ = db.busy_timeout(Duration::from_secs(5));
    let Ok(mut q) = db.prepare("SELECT sha256, state FROM pictures WHERE source = 'camera'") else {
        return Vec::new();
    };
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[test]
fn e2e_pictures_taken_during_an_outage_across_gateway_kills_all_arrive_once_verified() {
    let site = Site::new("evidence-delivery");
    let agg_cfg = site.embedded();
    let _agg = site.aggregator(&agg_cfg);
    let broker: SocketAddr = format!("127.0.0.1:{}", site.mqtt).parse().expect("addr");
    let proxy = Proxy::new(broker);
    proxy.set(ProxyMode::Refuse);

    // A kitchen over its limit, played 60 times faster than real time, with a camera.
    let modbus = free_port();
    let cameras = free_port();
    let profile = root().join("device-profiles/tb-compatible.toml");
    let mut monitor = sim(&[
        "monitor",
        "--tcp",
        &format!("127.0.0.1:{modbus}"),
        "--profile",
        &profile.display().to_string(),
        "--scenario",
        "exceedance",
        "--speed",
        "60",
        "--cameras",
        &format!("127.0.0.1:{cameras}"),
        "--camera-size",
        "1280x720",
    ]);

    // Rule durations at the same speed (as the demo has them); three cameras on the monitor, so
    // that each alarm transition takes several pictures, each of two or more parts.
    let metrics = free_port();
    let mut cfg = format!(
        "[gateway]\nid = \"{GW}\"\nsite = \"E2E street\"\npoll_interval_ms = 500\n\
         [outbox]\npath = \"outbox\"\nflush_interval_ms = 200\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
         [uplink]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"{GW}\"\npassword_file = \"mqtt.pass\"\n\
         key_file = \"gw.key\"\nkeep_alive_s = 5\nack_timeout_s = 3\n\
         [rules]\nstandard = \"gb18483_2001\"\neval_every_s = 1\nwindow_s = 10\nraise_after = 3\n\
         clear_after = 5\nclear_hold_s = 1\nupdate_every_s = 5\n\
         [[devices]]\nid = \"m00\"\nprofile = \"{}\"\ntcp = \"127.0.0.1:{modbus}\"\n",
        proxy.port,
        profile.display(),
    );
    for c in 0..3 {
        cfg += &format!(
            "[[cameras]]\nid = \"cam-{c}\"\ndevices = [\"m00\"]\n\
             snapshot_url = \"http://127.0.0.1:{cameras}/camera/1.jpg\"\nupdate_every_s = 10\n"
        );
    }
    let gw_cfg = site.dir.join("gateway.toml");
    std::fs::write(&gw_cfg, cfg).expect("gateway config");
    let log = site.dir.join("gateway.log");

    // Link down: pictures pile up in the outbox; the gateway is SIGKILLed after each batch of
    // them, and every picture it logged must survive.
    for (round, want) in [(0, 3.0), (1, 2.0)] {
        let mut gw = gateway(&site, &gw_cfg, &log);
        wait_until(
            &format!("pictures taken in run {round} (at least {want})"),
            Duration::from_secs(90),
            || {
                let n = metric(metrics, "fumegrid_evidence_pictures_total");
                if n >= want { Ok(()) } else { Err(n) }
            },
        );
        gw.kill9();
        eprintln!(
            "run {round}: SIGKILLed with {} pictures taken so far",
            taken(&log).len()
        );
    }
    assert!(
        stored(&site).is_empty(),
        "nothing can have arrived over a refused link"
    );

    // The link comes back; a third run drains the outbox, pictures of earlier runs included.
    let mut gw = gateway(&site, &gw_cfg, &log);
    wait_until("the gateway's metrics", Duration::from_secs(20), || {
        let n = metric(metrics, "fumegrid_outbox_evidence_bytes");
        if n > 0.0 { Ok(()) } else { Err(n) }
    });
    proxy.set(ProxyMode::Pass);
    // The camera goes away, so that the set of pictures stops growing.
    monitor.kill9();
    wait_until(
        "every picture taken to be stored and the outbox's pictures acked",
        Duration::from_secs(120),
        || {
            let want = taken(&log);
            let have: BTreeSet<String> = stored(&site)
                .into_iter()
                .filter(|(_, state)| state == "stored")
                .map(|(sha, _)| sha)
                .collect();
            let left = metric(metrics, "fumegrid_outbox_evidence_bytes");
            if want.is_subset(&have) && left == 0.0 {
                Ok(())
            } else {
                Err((want.difference(&have).count(), left))
            }
        },
    );
    gw.term();
    let (ok, _) = gw.wait_exit(Duration::from_secs(20));
    assert!(
        ok,
        "the gateway did not stop cleanly; log in {}",
        log.display()
    );

    let want = taken(&log);
    let rows = stored(&site);
    eprintln!("{} pictures taken, {} stored", want.len(), rows.len());
    assert!(
        want.len() >= 5,
        "too few pictures to mean anything: {}",
        want.len()
    );
    let have: BTreeSet<String> = rows.iter().map(|(sha, _)| sha.clone()).collect();
    assert_eq!(have.len(), rows.len(), "a picture stored twice");
    assert_eq!(have, want, "stored pictures are exactly the ones taken");
    // The bytes kept are the bytes hashed at capture.
    for sha in &want {
        let (a, b) = (sha.get(0..2).expect("hex"), sha.get(2..4).expect("hex"));
        let bytes = std::fs::read(
            site.dir
                .path()
                .join(format!("evidence/sha256/{a}/{b}/{sha}")),
        )
        .unwrap_or_else(|e| panic!("blob of {sha}: {e}"));
        assert_eq!(
            &hex::encode(Sha256::digest(&bytes)),
            sha,
            "blob bytes of {sha}"
        );
        assert_eq!(bytes.get(..2), Some(&[0xFF, 0xD8][..]), "a JPEG: {sha}");
    }
    // The alarm that took them reached its case, and the pictures are in that case.
    let cases = api_get(site.api, "/api/v1/cases?device=m00");
    let id = cases["cases"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a case of m00: {cases}"))
        .to_string();
    let ev = api_get(site.api, &format!("/api/v1/cases/{id}/evidence"));
    let in_case: BTreeSet<String> = ev["evidence"]
        .as_array()
        .expect("evidence list")
        .iter()
        .filter_map(|e| e["sha256"].as_str().map(str::to_string))
        .collect();
    assert!(
        !in_case.is_empty() && in_case.is_subset(&want),
        "the case shows the alarm's pictures: {ev}"
    );
    assert_eq!(site.duplicate_readings(), 0);
}
