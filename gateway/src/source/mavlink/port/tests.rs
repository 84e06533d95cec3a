//! The port task against real sockets, in paused time (the link judgment runs on the injected
//! clock: tokio's, paused, so 3 s of silence take no time).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::wire::{Body, EventKind};
use mavlink::MavlinkVersion;
use mavlink::dialects::common::{GLOBAL_POSITION_INT_DATA, HEARTBEAT_DATA, MavMessage};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::super::frame::encode;
use super::super::{Connection, Decimation, DroneCfg, DroneSpec};
use super::run;
use crate::outbox::{MemOutbox, Outbox, OutboxConfig};

fn spec(connection: &Connection, id: &str, sys: u8) -> DroneSpec {
    DroneSpec {
        connection: connection.clone(),
        drone: DroneCfg {
            id: id.into(),
            system_id: sys,
            decimation: Decimation::default(),
            heartbeat_interval_ms: 1000,
            missed_heartbeats: 3,
        },
        photos: None,
    }
}

fn free_udp() -> std::net::SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr")
}

fn bodies(o: &Arc<Mutex<MemOutbox>>) -> Vec<Body> {
    let o = o.lock().expect("lock");
    o.pending(0, 10_000, false)
        .expect("pending")
        .into_iter()
        .map(|i| i.body)
        .collect()
}

fn events(o: &Arc<Mutex<MemOutbox>>) -> Vec<(EventKind, i64, String)> {
    bodies(o)
        .into_iter()
        .filter_map(|b| match b {
            Body::Event(e) => Some((e.kind, e.ts_ms, e.message)),
            _ => None,
        })
        .collect()
}

async fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..600 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test(start_paused = true)]
async fn link_loss_after_three_missed_heartbeats_then_restored() {
    let addr = free_udp();
    let conn = Connection::UdpIn(addr);
    let clock = Clock::following_tokio(1_795_000_000_000);
    let outbox = Arc::new(Mutex::new(
        MemOutbox::new("s", OutboxConfig::default()).expect("mem"),
    ));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        conn.clone(),
        vec![spec(&conn, "uav-1", 1)],
        String::new(),
        outbox.clone(),
        Arc::new(Notify::new()),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        clock.clone(),
        cancel.clone(),
    ));
    let tx = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hb = encode(
        MavlinkVersion::V2,
        1,
        &MavMessage::HEARTBEAT(HEARTBEAT_DATA::default()),
    );
    // The task binds at its first poll.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.send_to(&hb, addr).await.expect("send");
    let mut last_hb_ms = clock.now_ms();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        tx.send_to(&hb, addr).await.expect("send");
        last_hb_ms = clock.now_ms();
    }
    // Silence: after 3 s (3 × 1 s) and at most one tick more, the loss.
    wait("the link-loss event", || !events(&outbox).is_empty()).await;
    let ev = events(&outbox);
    let (kind, ts, msg) = &ev[0];
    assert_eq!(*kind, EventKind::DroneLinkLost);
    assert!(msg.starts_with("uav-1: "), "{msg}");
    let after = ts - last_hb_ms;
    assert!(
        (3_000..=3_000 + 250 + 50).contains(&after),
        "lost {after} ms after the last heartbeat"
    );
    // Still silent: no second event.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(events(&outbox).len(), 1);
    tx.send_to(&hb, addr).await.expect("send");
    wait("the restored event", || events(&outbox).len() == 2).await;
    assert_eq!(events(&outbox)[1].0, EventKind::DroneLinkRestored);
    cancel.cancel();
    let stats = task.await.expect("task");
    assert!(stats.tally.frames >= 5, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn noise_and_foreign_frames_are_counted_and_positions_still_flow() {
    let addr = free_udp();
    let conn = Connection::UdpIn(addr);
    let clock = Clock::following_tokio(1_795_000_000_000);
    let outbox = Arc::new(Mutex::new(
        MemOutbox::new("s", OutboxConfig::default()).expect("mem"),
    ));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        conn.clone(),
        vec![spec(&conn, "uav-1", 1), spec(&conn, "uav-2", 2)],
        String::new(),
        outbox.clone(),
        Arc::new(Notify::new()),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        clock.clone(),
        cancel.clone(),
    ));
    let tx = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let pos = |sys: u8, v: MavlinkVersion| {
        encode(
            v,
            sys,
            &MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
                lat: 306_574_000,
                lon: 1_040_658_000,
                alt: 500_000,
                hdg: u16::MAX,
                ..Default::default()
            }),
        )
    };
    let mut bad = pos(1, MavlinkVersion::V2);
    let n = bad.len();
    bad[n - 1] ^= 0xFF;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..10 {
        for d in [
            pos(1, MavlinkVersion::V1),
            pos(2, MavlinkVersion::V2),
            pos(9, MavlinkVersion::V2),
            bad.clone(),
            b"\xfe\xfe\xfd random noise \x00\xff".to_vec(),
        ] {
            tx.send_to(&d, addr).await.expect("send");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    let stats = task.await.expect("task");
    assert!(stats.foreign >= 1 && stats.tally.bad_crc >= 1, "{stats:?}");
    assert!(stats.tally.garbage_bytes >= 10, "{stats:?}");
    let tracks: Vec<String> = bodies(&outbox)
        .into_iter()
        .filter_map(|b| match b {
            Body::Track(t) => Some(t.drone),
            _ => None,
        })
        .collect();
    assert_eq!(tracks, vec!["uav-1".to_string(), "uav-2".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn tcp_in_reassembles_frames_split_across_reads() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let conn = Connection::TcpIn(addr);
    let clock = Clock::following_tokio(1_795_000_000_000);
    let outbox = Arc::new(Mutex::new(
        MemOutbox::new("s", OutboxConfig::default()).expect("mem"),
    ));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        conn.clone(),
        vec![spec(&conn, "uav-1", 1)],
        String::new(),
        outbox.clone(),
        Arc::new(Notify::new()),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        clock.clone(),
        cancel.clone(),
    ));
    let mut s = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    s.set_nodelay(true).expect("nodelay");
    let hb = encode(
        MavlinkVersion::V1,
        1,
        &MavMessage::HEARTBEAT(HEARTBEAT_DATA::default()),
    );
    for _ in 0..5 {
        let (a, b) = hb.split_at(4);
        s.write_all(a).await.expect("write");
        s.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(b).await.expect("write");
        s.write_all(b"junk").await.expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then silence: the link is lost, so the heartbeats were understood.
    wait("the link-loss event", || !events(&outbox).is_empty()).await;
    cancel.cancel();
    let stats = task.await.expect("task");
    assert_eq!(stats.tally.frames, 5, "{stats:?}");
    assert_eq!(stats.tally.bad_crc, 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn tcp_out_connects_and_reconnects_after_the_peer_goes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conn = Connection::TcpOut(addr.to_string());
    let clock = Clock::following_tokio(1_795_000_000_000);
    let outbox = Arc::new(Mutex::new(
        MemOutbox::new("s", OutboxConfig::default()).expect("mem"),
    ));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        conn.clone(),
        vec![spec(&conn, "uav-1", 1)],
        String::new(),
        outbox.clone(),
        Arc::new(Notify::new()),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        clock.clone(),
        cancel.clone(),
    ));
    let hb = encode(
        MavlinkVersion::V2,
        1,
        &MavMessage::HEARTBEAT(HEARTBEAT_DATA::default()),
    );
    // Two connections in turn: the gateway comes back after the first peer hangs up.
    for _ in 0..2 {
        let (mut s, _) = listener.accept().await.expect("the gateway connects");
        for _ in 0..3 {
            s.write_all(&hb).await.expect("write");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        drop(s);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    let stats = task.await.expect("task");
    assert_eq!(stats.tally.frames, 6, "{stats:?}");
    assert!(events(&outbox).is_empty(), "never silent for 3 s");
}

/// A photo whose camera accepts the connection and never answers: its item goes up without
/// `sha256` once the fetch's bound passed; one whose fetch is still running at the stop goes
/// up at the stop. Real time (the HTTP client's own timers), a real listener.
#[tokio::test]
async fn a_photo_whose_fetch_fails_or_is_cut_by_the_stop_goes_up_without_its_bytes() {
    use super::super::photo::PhotoCfg;
    use mavlink::dialects::common::{CAMERA_IMAGE_CAPTURED_DATA, MavBool};
    // Accepts, reads nothing, answers nothing, keeps the sockets open.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let cam = listener.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            keep.push(s);
        }
    });
    let addr = free_udp();
    let conn = Connection::UdpIn(addr);
    let photos = |timeout_ms| {
        Some(PhotoCfg {
            url: format!("http://{cam}/DCIM/{{name}}"),
            creds: None,
            timeout_ms,
            max_bytes: 1 << 20,
        })
    };
    let mut quick = spec(&conn, "uav-1", 1);
    quick.photos = photos(500);
    let mut slow = spec(&conn, "uav-2", 2);
    slow.photos = photos(120_000);
    let outbox = Arc::new(Mutex::new(
        MemOutbox::new("s", OutboxConfig::default()).expect("mem"),
    ));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        conn.clone(),
        vec![quick, slow],
        "Demo street".into(),
        outbox.clone(),
        Arc::new(Notify::new()),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        Clock::system(),
        cancel.clone(),
    ));
    let shot = |index| {
        let mut file_url = [0u8; 205];
        file_url[..17].copy_from_slice(b"/DCIM/IMG_01.JPG\0");
        MavMessage::CAMERA_IMAGE_CAPTURED(CAMERA_IMAGE_CAPTURED_DATA {
            time_boot_ms: 0,
            time_utc: 0,
            camera_id: 1,
            lat: 306_552_000,
            lon: 1_040_801_000,
            alt: 560_000,
            relative_alt: 60_000,
            q: [1.0, 0.0, 0.0, 0.0],
            image_index: index,
            capture_result: MavBool::MAV_BOOL_TRUE,
            file_url: file_url.into(),
        })
    };
    let photo_items = || {
        bodies(&outbox)
            .into_iter()
            .filter_map(|b| match b {
                Body::DronePhoto(p) => Some(p),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // The source binds at its first turn: send until a photo is taken on. uav-2's goes first
    // from the same socket, so it is under way when uav-1's is (a resent index is dropped).
    wait("uav-1's photo, after its fetch timed out", || {
        let _ = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| {
            s.send_to(&encode(MavlinkVersion::V2, 2, &shot(5)), addr)?;
            s.send_to(&encode(MavlinkVersion::V2, 1, &shot(1)), addr)
        });
        photo_items().iter().any(|p| p.drone == "uav-1")
    })
    .await;
    let p1 = photo_items()
        .into_iter()
        .find(|p| p.drone == "uav-1")
        .expect("uav-1");
    assert_eq!((p1.index, p1.sha256.as_deref()), (1, None), "{p1:?}");
    assert!(
        !bodies(&outbox)
            .iter()
            .any(|b| matches!(b, Body::Evidence(_))),
        "no picture"
    );
    // uav-2's fetch would run for two minutes: its item waits; the stop cuts the fetch, and the
    // item goes up all the same.
    assert!(
        !photo_items().iter().any(|p| p.drone == "uav-2"),
        "uav-2's item waits for its fetch"
    );
    cancel.cancel();
    task.await.expect("task");
    let p2 = photo_items()
        .into_iter()
        .find(|p| p.drone == "uav-2")
        .expect("uav-2 at the stop");
    assert_eq!((p2.index, p2.sha256.as_deref()), (5, None), "{p2:?}");
    assert_eq!(photo_items().len(), 2, "each photo once");
    held.abort();
}
