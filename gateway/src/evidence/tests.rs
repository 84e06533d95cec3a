//! The pipeline's shell in paused tokio time with fake cameras (on the [`Camera`] seam) and a
//! real in-memory outbox; with the real rules sink where the order alarm → picture matters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use fumegrid_common::clock::Clock;
use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{
    Action, Alarm, AlarmKind, AlarmPhase, Body, Command, EventKind, Evidence, Item, Media, Trigger,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::CameraRules;
use super::*;
use crate::outbox::{MemOutbox, Outbox, OutboxConfig};
use crate::rules::RulesConfig;
use crate::rules::sink::Sink;
use crate::source::camera::{Camera, CameraError, Capture};

const T0: i64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Behavior {
    Picture(Vec<u8>),
    Fail(CameraError),
}

/// A camera that takes `delay` per capture and then gives `behavior`; it records when each
/// capture started and how many alarms the outbox held at that moment.
#[derive(Debug)]
struct FakeCamera {
    id: String,
    behavior: Behavior,
    delay: Duration,
    clock: Clock,
    outbox: Arc<Mutex<MemOutbox>>,
    started: Arc<Mutex<Vec<(Instant, usize)>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Camera for FakeCamera {
    fn id(&self) -> &str {
        &self.id
    }
    fn capture(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Capture, CameraError>> + Send + '_>> {
        Box::pin(async move {
            let alarms = items(&self.outbox)
                .iter()
                .filter(|i| matches!(i.body, Body::Alarm(_)))
                .count();
            self.started
                .lock()
                .expect("fake")
                .push((self.clock.tokio_instant(), alarms));
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            match &self.behavior {
                Behavior::Picture(bytes) => Ok(Capture {
                    bytes: bytes.clone(),
                    media: Media::Jpeg,
                    sha256: [0xab; 32],
                    captured_ms: self.clock.now_ms(),
                    width: Some(640),
                    height: Some(480),
                }),
                Behavior::Fail(e) => Err(e.clone()),
            }
        })
    }
}

fn items(o: &Arc<Mutex<MemOutbox>>) -> Vec<Item> {
    o.lock()
        .expect("outbox")
        .pending(0, usize::MAX, false)
        .expect("read")
}

struct Rig {
    clock: Clock,
    outbox: Arc<Mutex<MemOutbox>>,
    started: Arc<Mutex<Vec<(Instant, usize)>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            clock: Clock::following_tokio(T0),
            outbox: Arc::new(Mutex::new(
                MemOutbox::new("s", OutboxConfig::default()).expect("mem outbox"),
            )),
            started: Arc::default(),
            running: Arc::default(),
            max_running: Arc::default(),
        }
    }

    fn cam(&self, id: &str, devices: &[&str], behavior: Behavior, delay: Duration) -> Cam {
        Cam {
            rules: CameraRules {
                id: id.into(),
                devices: devices.iter().map(|d| d.to_string()).collect(),
                update_every: Duration::from_secs(600),
                schedule_every: None,
                hours: devices.iter().map(|_| (Vec::new(), 0)).collect(),
            },
            max_bytes: 4 << 20,
            timeout: Duration::from_secs(2),
            camera: Arc::new(FakeCamera {
                id: id.into(),
                behavior,
                delay,
                clock: self.clock.clone(),
                outbox: self.outbox.clone(),
                started: self.started.clone(),
                running: self.running.clone(),
                max_running: self.max_running.clone(),
            }),
        }
    }

    /// Starts the pipeline; returns its handle and its stop.
    fn start(&self, cams: Vec<Cam>) -> (Handle, CancellationToken) {
        let (handle, rx, latest) = channel();
        let p = Pipeline::new(
            self.outbox.clone(),
            Arc::new(Notify::new()),
            self.clock.clone(),
            "Demo street 1".into(),
            cams,
            latest,
        );
        let cancel = CancellationToken::new();
        tokio::spawn(p.run(rx, cancel.clone()));
        (handle, cancel)
    }

    fn parts(&self) -> Vec<Evidence> {
        items(&self.outbox)
            .into_iter()
            .filter_map(|i| match i.body {
                Body::Evidence(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn events(&self, kind: EventKind) -> Vec<(u64, String)> {
        items(&self.outbox)
            .into_iter()
            .filter_map(|i| match i.body {
                Body::Event(e) if e.kind == kind => Some((i.seq, e.message)),
                _ => None,
            })
            .collect()
    }

    /// Waits (in paused time) until `cond` holds, at most `limit`.
    async fn until(&self, limit: Duration, what: &str, cond: impl Fn(&Rig) -> bool) {
        let start = self.clock.tokio_instant();
        while !cond(self) {
            assert!(
                self.clock.tokio_instant() - start < limit,
                "{what} not within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn alarm(device: &str, phase: AlarmPhase) -> Alarm {
    Alarm {
        id: format!("{device}:exceedance:fume_mg_m3:{T0}"),
        device: device.into(),
        kind: AlarmKind::Exceedance,
        metric: Some(Metric::FumeMgM3),
        phase,
        started_ms: T0,
        ts_ms: T0,
        cleared_ms: None,
        value: Some(2.5),
        peak: Some(2.5),
        peak_ms: Some(T0),
        limit: Some(2.0),
        suppressed: false,
        message: String::new(),
    }
}

fn reading(device: &str, metric: Metric, value: f64) -> Reading {
    Reading {
        device: device.into(),
        unit: None,
        metric,
        value: Some(value),
        quality: Quality::Ok,
        ts_ms: T0,
    }
}

/// A picture of 100 000 bytes becomes three parts (48 KiB, 48 KiB, the rest), appended in one
/// call; their data put together is the picture; every part carries the whole metadata:
/// camera, devices, trigger, episode, size, site and the bound devices' last readings.
#[tokio::test(start_paused = true)]
async fn a_raised_alarm_gets_a_picture_in_parts_with_its_metadata() {
    let rig = Rig::new();
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (h, stop) = rig.start(vec![rig.cam(
        "cam-1",
        &["d1"],
        Behavior::Picture(bytes.clone()),
        Duration::from_millis(300),
    )]);
    h.readings(&[
        reading("d1", Metric::FumeMgM3, 2.7),
        reading("d1", Metric::FanOn, 1.0),
        reading("d2", Metric::FumeMgM3, 0.1),
    ]);
    let a = alarm("d1", AlarmPhase::Raised);
    h.alarm(&a);
    rig.until(Duration::from_secs(5), "the picture", |r| {
        r.parts().len() == 3
    })
    .await;
    let parts = rig.parts();
    let mut whole = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!((p.part, p.parts), (i as u32, 3));
        assert_eq!(p.sha256, "ab".repeat(32));
        whole.extend(
            base64::engine::general_purpose::STANDARD
                .decode(&p.data)
                .expect("base64"),
        );
        assert_eq!(p.meta, parts[0].meta, "the same metadata in every part");
    }
    assert_eq!(whole, bytes);
    let m = &parts[0].meta;
    assert_eq!(m.camera, "cam-1");
    assert_eq!(m.devices, vec!["d1".to_string()]);
    assert_eq!(m.trigger, Trigger::AlarmRaised);
    assert_eq!(m.alarm.as_deref(), Some(a.id.as_str()));
    assert_eq!((m.size, m.width, m.height), (100_000, Some(640), Some(480)));
    assert_eq!(m.site, "Demo street 1");
    let mut readings: Vec<(String, &str, f64)> = m
        .readings
        .iter()
        .map(|(d, metric, v)| (d.clone(), metric.name(), *v))
        .collect();
    readings.sort_by(|a, b| a.1.cmp(b.1));
    assert_eq!(
        readings,
        vec![
            ("d1".to_string(), "fan_on", 1.0),
            ("d1".to_string(), "fume_mg_m3", 2.7)
        ],
        "the bound device's last readings only"
    );
    stop.cancel();
}

/// The real rules sink and a camera that hangs: the `device_offline` alarm is in the outbox
/// when it is judged (5 s after the last poll), before the capture is even started; the
/// capture gives up after the pipeline's bound and a `camera_failed` event names the camera,
/// the reason, the trigger and the alarm.
#[tokio::test(start_paused = true)]
async fn a_dead_camera_never_delays_the_alarm_and_its_failure_is_an_event() {
    let rig = Rig::new();
    let (h, stop) = rig.start(vec![rig.cam(
        "cam-1",
        &["d1"],
        Behavior::Fail(CameraError::Unreachable("no route to host".into())),
        Duration::from_secs(3600),
    )]);
    let sink = Sink::new(
        rig.outbox.clone(),
        PathBuf::from("/nonexistent/outbox"),
        [(
            "d1".to_string(),
            RulesConfig {
                offline_after_s: 5,
                ..RulesConfig::default()
            },
        )],
        Arc::new(Notify::new()),
        Arc::new(AtomicU64::new(0)),
        rig.clock.clone(),
    )
    .with_evidence(h);
    let (tx, rx) = mpsc::channel(8);
    let sink = tokio::spawn(sink.run(rx));
    tx.send(vec![reading("d1", Metric::FumeMgM3, 0.3)])
        .await
        .expect("sink runs");
    let t0 = rig.clock.tokio_instant();
    let alarm_seq = || {
        items(&rig.outbox).into_iter().find_map(|i| match i.body {
            Body::Alarm(a) if a.kind == AlarmKind::DeviceOffline => Some(i.seq),
            _ => None,
        })
    };
    rig.until(Duration::from_secs(10), "the alarm", |_| {
        alarm_seq().is_some()
    })
    .await;
    let alarm_at = rig.clock.tokio_instant() - t0;
    assert!(
        alarm_at <= Duration::from_secs(7),
        "alarm after {alarm_at:?}"
    );
    rig.until(Duration::from_secs(10), "the capture", |r| {
        !r.started.lock().expect("fake").is_empty()
    })
    .await;
    let started = rig.started.lock().expect("fake").clone();
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0].1, 1,
        "the alarm was in the outbox when the capture began"
    );
    // 2 s timeout_ms + the pipeline's 5 s margin.
    rig.until(Duration::from_secs(10), "the camera_failed event", |r| {
        !r.events(EventKind::CameraFailed).is_empty()
    })
    .await;
    let failed_after = rig.clock.tokio_instant() - started[0].0;
    assert!(
        failed_after >= Duration::from_secs(7) && failed_after < Duration::from_secs(8),
        "{failed_after:?}"
    );
    let (seq, message) = rig.events(EventKind::CameraFailed).remove(0);
    assert!(seq > alarm_seq().expect("alarm"));
    assert!(
        message.contains("camera cam-1: no picture within 7000 ms"),
        "{message}"
    );
    assert!(
        message.contains("trigger alarm_raised, alarm d1:device_offline"),
        "{message}"
    );
    assert!(rig.parts().is_empty());
    drop(tx);
    let _ = sink.await;
    stop.cancel();
}

/// Four cameras on one device: all four pictures come, at most two captures run at once.
#[tokio::test(start_paused = true)]
async fn captures_run_concurrently_within_the_bound() {
    let rig = Rig::new();
    let cams = (0..4)
        .map(|i| {
            rig.cam(
                &format!("cam-{i}"),
                &["d1"],
                Behavior::Picture(vec![i as u8; 10]),
                Duration::from_secs(1),
            )
        })
        .collect();
    let (h, stop) = rig.start(cams);
    h.alarm(&alarm("d1", AlarmPhase::Raised));
    rig.until(Duration::from_secs(5), "four pictures", |r| {
        r.parts().len() == 4
    })
    .await;
    assert_eq!(rig.max_running.load(Ordering::SeqCst), MAX_CONCURRENT);
    let cams: std::collections::BTreeSet<String> =
        rig.parts().into_iter().map(|p| p.meta.camera).collect();
    assert_eq!(cams.len(), 4);
    stop.cancel();
}

/// One camera over six devices raising at once: one capture runs, four raises wait, the sixth
/// finds the queue full and is dropped — with a `camera_failed` event naming its alarm, never
/// silently.
#[tokio::test(start_paused = true)]
async fn a_raise_dropped_by_a_full_camera_queue_is_an_event() {
    let rig = Rig::new();
    let devices = ["d1", "d2", "d3", "d4", "d5", "d6"];
    let cam = rig.cam(
        "cam-1",
        &devices,
        Behavior::Picture(vec![7; 10]),
        Duration::from_secs(1),
    );
    let (h, stop) = rig.start(vec![cam]);
    for d in devices {
        h.alarm(&alarm(d, AlarmPhase::Raised));
    }
    rig.until(Duration::from_secs(10), "five pictures", |r| {
        r.parts().len() == 5
    })
    .await;
    let events = rig.events(EventKind::CameraFailed);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].1.contains("busy") && events[0].1.contains("alarm d6:exceedance"),
        "{events:?}"
    );
    let pictured: Vec<String> = rig
        .parts()
        .into_iter()
        .filter_map(|p| p.meta.alarm)
        .collect();
    assert!(
        pictured.iter().all(|a| !a.starts_with("d6:")),
        "{pictured:?}"
    );
    stop.cancel();
}

/// Audit pictures every hour, none before the first hour.
#[tokio::test(start_paused = true)]
async fn scheduled_pictures_come_every_interval() {
    let rig = Rig::new();
    let mut cam = rig.cam(
        "cam-1",
        &["d1"],
        Behavior::Picture(vec![1, 2, 3]),
        Duration::from_millis(10),
    );
    cam.rules.schedule_every = Some(Duration::from_secs(3600));
    let (_h, stop) = rig.start(vec![cam]);
    tokio::time::sleep(Duration::from_secs(3599)).await;
    assert!(rig.parts().is_empty(), "nothing in the first hour");
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let parts = rig.parts();
    assert_eq!(parts.len(), 3, "{parts:?}");
    assert!(
        parts
            .iter()
            .all(|p| p.meta.trigger == Trigger::Schedule && p.meta.alarm.is_none())
    );
    stop.cancel();
}

/// A request for a known camera takes a picture carrying the request id and the alarm; one
/// for a camera this gateway lacks becomes a `command_refused` event.
#[tokio::test(start_paused = true)]
async fn requests_take_a_picture_or_are_refused_by_an_event() {
    let rig = Rig::new();
    let (h, stop) = rig.start(vec![rig.cam(
        "cam-1",
        &["d1"],
        Behavior::Picture(vec![9; 5]),
        Duration::from_millis(10),
    )]);
    let cmd = |id: &str, camera: &str| Command {
        id: id.into(),
        gateway: "gw-1".into(),
        issued_ms: T0,
        expires_ms: T0 + 60_000,
        action: Action::Snapshot {
            camera: Some(camera.into()),
            device: None,
            alarm: Some("al-9".into()),
        },
    };
    assert!(h.request(cmd("req-1", "cam-1")));
    assert!(h.request(cmd("req-2", "cam-x")));
    rig.until(Duration::from_secs(5), "picture and refusal", |r| {
        r.parts().len() == 1 && !r.events(EventKind::CommandRefused).is_empty()
    })
    .await;
    let m = &rig.parts()[0].meta;
    assert_eq!(
        (m.trigger, m.request.as_deref(), m.alarm.as_deref()),
        (Trigger::Request, Some("req-1"), Some("al-9"))
    );
    let (_, message) = rig.events(EventKind::CommandRefused).remove(0);
    assert!(
        message.contains("\"req-2\"") && message.contains("no camera \"cam-x\""),
        "{message}"
    );
    stop.cancel();
}

/// A camera that serves more than its `max_bytes` gives no picture: a `too_large` failure.
#[tokio::test(start_paused = true)]
async fn a_picture_over_the_cameras_bound_is_refused() {
    let rig = Rig::new();
    let mut cam = rig.cam(
        "cam-1",
        &["d1"],
        Behavior::Picture(vec![0; 2000]),
        Duration::from_millis(10),
    );
    cam.max_bytes = 1000;
    let (h, stop) = rig.start(vec![cam]);
    h.alarm(&alarm("d1", AlarmPhase::Raised));
    rig.until(Duration::from_secs(5), "the event", |r| {
        !r.events(EventKind::CameraFailed).is_empty()
    })
    .await;
    let (_, message) = rig.events(EventKind::CameraFailed).remove(0);
    assert!(
        message.contains("picture larger than 1000 bytes"),
        "{message}"
    );
    assert!(rig.parts().is_empty());
    stop.cancel();
}

#[test]
fn parts_split_at_the_wire_part_size() {
    let cap = |n: usize| Capture {
        bytes: vec![1; n],
        media: Media::H264,
        sha256: [1; 32],
        captured_ms: T0,
        width: None,
        height: None,
    };
    let meta = fumegrid_common::wire::EvidenceMeta {
        camera: "c".into(),
        devices: vec![],
        captured_ms: T0,
        trigger: Trigger::Schedule,
        alarm: None,
        request: None,
        media: Media::H264,
        size: 0,
        width: None,
        height: None,
        site: String::new(),
        readings: vec![],
    };
    let p = fumegrid_common::wire::EVIDENCE_PART_BYTES;
    for (n, want) in [(1, 1), (p, 1), (p + 1, 2), (3 * p, 3)] {
        let got = cap(n).parts(&meta);
        assert_eq!(got.len(), want, "{n} bytes");
        for b in &got {
            let Body::Evidence(e) = b else {
                panic!("not evidence")
            };
            assert!(e.data.len() <= p.div_ceil(3) * 4);
        }
    }
}
