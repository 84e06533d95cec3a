//! The uplink's loop ([`serve`]) in paused tokio time, with a fake MQTT client on the [`Mqtt`]
//! seam and the connection's reports fed by hand: the hello wait, ack timeouts and
//! retransmission run through the real loop, the real planner and a real (in-memory) outbox.
//!
//! Why not a real broker: a paused clock advances whenever the runtime is idle, also while a
//! socket is waiting for its peer, so rumqttc's own keep-alive and connect timeouts would fire
//! at random against a real broker. The MQTT protocol side is covered by the e2e tests
//! (`e2e_delivery`) against real brokers in real time. The reconnect backoff is tested with
//! rumqttc's real event loop against a closed loopback port, refused at once by the kernel,
//! so no wait on a peer is involved.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::wire::{self, Ack, Batch, Body, Channel, EventKind, Hello, State, Status};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::PlanConfig;
use super::{Health, Incoming, Mqtt, SeqCheck, UplinkConfig, UplinkStats, drive, serve};
use crate::outbox::{MemOutbox, Outbox, OutboxConfig};

const T0: i64 = 1_700_000_000_000;
const KEY: &[u8] = b"uplink loop test key";
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// The loop looks at the planner every 100 ms while connected.
const TICK: Duration = Duration::from_millis(100);

/// What the fake client was asked to publish, decoded.
#[derive(Debug, Clone)]
enum Sent {
    Status(State),
    Hello(Hello),
    Batch(Vec<u64>),
}

#[derive(Debug, Clone)]
struct FakeMqtt {
    clock: Clock,
    sent: Arc<Mutex<Vec<(Instant, Sent)>>>,
    subscribed: Arc<Mutex<Vec<String>>>,
    /// Payload sizes of the batches.
    sizes: Arc<Mutex<Vec<usize>>>,
}

impl Mqtt for FakeMqtt {
    fn subscribe(&self, topic: &str) {
        self.subscribed
            .lock()
            .expect("fake")
            .push(topic.to_string());
    }
    fn publish(&self, topic: &str, _retain: bool, payload: Vec<u8>) -> Result<(), String> {
        // As the aggregator reads it: plain, or inflated when compressed.
        let payload = wire::decode_up(&payload, 1 << 24)
            .expect("plain or gzip")
            .into_owned();
        let sent = if topic == wire::topic("gw-test", Channel::Status) {
            Sent::Status(wire::open::<Status>(&payload, KEY).expect("sealed").state)
        } else if let Ok(b) = wire::open::<Batch>(&payload, KEY) {
            self.sizes.lock().expect("fake").push(payload.len());
            Sent::Batch(b.items.iter().map(|i| i.seq).collect())
        } else {
            Sent::Hello(wire::open::<Hello>(&payload, KEY).expect("a batch or a hello"))
        };
        let at = self.clock.tokio_instant();
        self.sent.lock().expect("fake").push((at, sent));
        Ok(())
    }
    fn disconnect(&self) {}
}

impl FakeMqtt {
    fn sent(&self) -> Vec<(Instant, Sent)> {
        self.sent.lock().expect("fake").clone()
    }
    fn hellos(&self) -> Vec<Instant> {
        let sent = self.sent();
        sent.iter()
            .filter(|(_, s)| matches!(s, Sent::Hello(_)))
            .map(|(t, _)| *t)
            .collect()
    }
    fn batches(&self) -> Vec<(Instant, Vec<u64>)> {
        let sent = self.sent();
        sent.into_iter()
            .filter_map(|(t, s)| match s {
                Sent::Batch(seqs) => Some((t, seqs)),
                _ => None,
            })
            .collect()
    }
}

fn config() -> UplinkConfig {
    UplinkConfig {
        gateway: "gw-test".into(),
        host: "127.0.0.1".into(),
        port: 1,
        client_id: "gw-test".into(),
        username: None,
        password: None,
        tls_ca: None,
        keep_alive: Duration::from_secs(30),
        key: KEY.to_vec(),
        plan: PlanConfig {
            batch_max_items: 100,
            batch_max_bytes: 256 * 1024,
            max_live_inflight: 4,
            max_evidence_inflight: 2,
            max_backlog_inflight: 1,
            backlog_items_per_s: 100.0,
            ack_timeout: ACK_TIMEOUT,
        },
        max_packet_bytes: 1 << 20,
        flush_interval: Duration::ZERO,
        check: SeqCheck {
            recovered_next_seq: 1,
            start_next_seq: 1,
        },
        drain: Duration::from_secs(1),
        evidence: None,
        compress: false,
    }
}

/// An outbox holding three `started` events (seqs 1..=3).
fn outbox() -> Arc<Mutex<MemOutbox>> {
    let mut o = MemOutbox::new("stream-a", OutboxConfig::default()).expect("mem outbox");
    let events = (0..3)
        .map(|i| {
            Body::Event(wire::Event {
                ts_ms: T0 + i,
                kind: EventKind::Started,
                message: format!("started {i}"),
                dropped: None,
                from_ms: None,
                to_ms: None,
            })
        })
        .collect();
    o.append(events, T0).expect("append");
    Arc::new(Mutex::new(o))
}

fn ack(a: Ack) -> Incoming {
    Incoming::Ack(wire::seal(&a, KEY))
}

/// The aggregator's answer to the hello: it holds nothing of this stream.
fn hello_answer() -> Incoming {
    ack(Ack {
        stream: "stream-a".into(),
        ranges: vec![],
        high: Some(0),
        held: Some(0),
    })
}

/// Runs the loop while `script` drives it, then stops it; returns the loop's stats.
async fn run_with<F: Future<Output = ()>>(
    fake: &FakeMqtt,
    outbox: Arc<Mutex<MemOutbox>>,
    script: impl FnOnce(mpsc::Sender<Incoming>) -> F,
) -> UplinkStats {
    run_with_config(config(), fake, outbox, script).await
}

async fn run_with_config<F: Future<Output = ()>>(
    cfg: UplinkConfig,
    fake: &FakeMqtt,
    outbox: Arc<Mutex<MemOutbox>>,
    script: impl FnOnce(mpsc::Sender<Incoming>) -> F,
) -> UplinkStats {
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let health = Arc::new(Health::default());
    let served = serve(
        cfg,
        fake.clock.clone(),
        fake,
        rx,
        outbox,
        Arc::new(Notify::new()),
        cancel,
        progress,
        health,
    );
    let driven = async move {
        script(tx.clone()).await;
        stop.cancel();
        // Keep the connection's end open while the loop drains.
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(tx);
    };
    let (stats, ()) = tokio::join!(served, driven);
    stats
}

fn fake(clock: &Clock) -> FakeMqtt {
    FakeMqtt {
        clock: clock.clone(),
        sent: Arc::default(),
        subscribed: Arc::default(),
        sizes: Arc::default(),
    }
}

/// Connected, the uplink says `online`, subscribes to its acks and asks its hello; it asks
/// again every ack timeout while nobody answers, and publishes nothing else until an answer
/// comes. Then the outbox goes out at once.
#[tokio::test(start_paused = true)]
async fn the_hello_is_asked_every_ack_timeout_and_nothing_goes_before_its_answer() {
    let clock = Clock::following_tokio(T0);
    let fake = fake(&clock);
    let t0 = clock.tokio_instant();
    let (hellos, batches_before, answered_at) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(None)),
    );
    let (h, b, a, f, c) = (
        hellos.clone(),
        batches_before.clone(),
        answered_at.clone(),
        fake.clone(),
        clock.clone(),
    );
    let stats = run_with(&fake, outbox(), |tx| async move {
        tx.send(Incoming::Connected).await.expect("loop runs");
        tokio::time::sleep(Duration::from_secs(95)).await;
        *h.lock().expect("test") = f.hellos();
        *b.lock().expect("test") = f.batches();
        *a.lock().expect("test") = Some(c.tokio_instant());
        tx.send(hello_answer()).await.expect("loop runs");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Answered and going: no hello is asked any more.
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;

    let hellos = hellos.lock().expect("test").clone();
    let offsets: Vec<Duration> = hellos.iter().map(|t| *t - t0).collect();
    assert_eq!(hellos.len(), 4, "hellos at 0, 30, 60, 90 s: {offsets:?}");
    for (i, off) in offsets.iter().enumerate() {
        let want = ACK_TIMEOUT * i as u32;
        assert!(*off >= want && *off <= want + TICK, "hello {i} at {off:?}");
    }
    assert!(
        batches_before.lock().expect("test").is_empty(),
        "nothing before the answer"
    );
    assert_eq!(fake.hellos().len(), 4, "no hello after the answer");
    let sent = fake.sent();
    assert!(
        matches!(sent.first(), Some((_, Sent::Status(State::Online)))),
        "{sent:?}"
    );
    assert!(
        matches!(sent.last(), Some((_, Sent::Status(State::Offline)))),
        "{sent:?}"
    );
    assert_eq!(
        *fake.subscribed.lock().expect("fake"),
        vec![
            wire::topic("gw-test", Channel::Ack),
            wire::topic("gw-test", Channel::Cmd)
        ]
    );
    let Some(Sent::Hello(hello)) = sent
        .iter()
        .map(|(_, s)| s.clone())
        .find(|s| matches!(s, Sent::Hello(_)))
    else {
        panic!("a hello: {sent:?}");
    };
    assert_eq!(
        (hello.stream.as_str(), hello.from_seq, hello.sent_ms),
        ("stream-a", 1, T0)
    );
    let answered_at = answered_at.lock().expect("test").expect("answered");
    let batches = fake.batches();
    let (at, seqs) = batches.first().expect("sent after the answer");
    assert!(
        *at - answered_at <= TICK,
        "{:?} after the answer",
        *at - answered_at
    );
    assert_eq!(seqs, &vec![1, 2, 3]);
    assert_eq!(stats.verdict.map(|v| v.is_clean()), Some(true));
}

/// A batch nobody acks is sent again after each ack timeout (the same seqs, every 30 s, no
/// sooner), each timeout counted; the ack deletes it from the outbox and ends the repeats.
#[tokio::test(start_paused = true)]
async fn an_unacked_batch_is_sent_again_every_ack_timeout_until_acked() {
    let clock = Clock::following_tokio(T0);
    let fake = fake(&clock);
    let outbox = outbox();
    let (f, o) = (fake.clone(), outbox.clone());
    let acked_at = Arc::new(Mutex::new(None));
    let (a, c) = (acked_at.clone(), clock.clone());
    let stats = run_with(&fake, outbox.clone(), |tx| async move {
        tx.send(Incoming::Connected).await.expect("loop runs");
        tx.send(hello_answer()).await.expect("loop runs");
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(f.batches().len(), 4, "{:?}", f.batches());
        assert_eq!(
            o.lock().expect("outbox").stats().items,
            3,
            "nothing deleted unacked"
        );
        *a.lock().expect("test") = Some(c.tokio_instant());
        tx.send(ack(Ack::of("stream-a".into(), vec![(1, 3)])))
            .await
            .expect("loop runs");
        tokio::time::sleep(Duration::from_secs(120)).await;
    })
    .await;

    let batches = fake.batches();
    assert_eq!(
        batches.len(),
        4,
        "sent at 0, 30, 60, 90 s, none after the ack: {batches:?}"
    );
    assert!(
        batches.iter().all(|(_, seqs)| seqs == &vec![1, 2, 3]),
        "{batches:?}"
    );
    for w in batches.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            gap >= ACK_TIMEOUT && gap <= ACK_TIMEOUT + TICK,
            "resent after {gap:?}"
        );
    }
    let acked_at = acked_at.lock().expect("test").expect("acked");
    assert!(batches.iter().all(|(t, _)| *t < acked_at));
    assert_eq!(
        outbox.lock().expect("outbox").stats().items,
        0,
        "the ack deleted them"
    );
    assert_eq!(
        (
            stats.batches_sent,
            stats.items_sent,
            stats.items_acked,
            stats.ack_timeouts
        ),
        (4, 12, 3, 3)
    );
}

/// A connection that fails is tried again after 250 ms, then after twice as long each time, up
/// to 5 s: a link that comes back is used within seconds, and a dead one costs one attempt
/// every 5 s.
#[tokio::test(start_paused = true)]
async fn a_failing_connection_is_retried_after_250_ms_doubling_up_to_5_s() {
    let clock = Clock::following_tokio(T0);
    // A loopback port nobody listens on: the kernel refuses the connect at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (_client, eventloop) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("gw-test", "127.0.0.1", port), 64);
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let driving = tokio::spawn(drive(
        eventloop,
        tx,
        "ack".into(),
        "cmd".into(),
        cancel.clone(),
    ));
    let mut failed_at = Vec::new();
    while failed_at.len() < 9 {
        match rx.recv().await {
            Some(Incoming::Disconnected(_)) => failed_at.push(clock.tokio_instant()),
            Some(_) => {}
            None => break,
        }
    }
    cancel.cancel();
    let _ = driving.await;
    let gaps: Vec<u128> = failed_at
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(gaps, vec![250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
}

/// Commands on `cmd`: a sealed, fresh snapshot goes to the evidence pipeline once; its replay,
/// an expired one and one for another gateway become `command_refused` events naming why; a
/// badly sealed one is only counted (anyone on the broker could send it). The executed id is
/// kept in the outbox's state, so a new loop (a restart) still refuses its replay.
#[tokio::test(start_paused = true)]
async fn commands_are_carried_out_once_and_refusals_become_events() {
    use fumegrid_common::wire::{Action, Command};
    let clock = Clock::following_tokio(T0);
    let fake = fake(&clock);
    let outbox = outbox();
    let (handle, mut requests, _latest) = crate::evidence::channel();
    let mut cfg = config();
    cfg.evidence = Some(handle);
    let cmd = |id: &str, gateway: &str, expires: i64| Command {
        id: id.into(),
        gateway: gateway.into(),
        issued_ms: T0,
        expires_ms: expires,
        action: Action::Snapshot {
            camera: Some("cam-1".into()),
            device: None,
            alarm: None,
        },
    };
    let sealed = |c: &Command| Incoming::Cmd(wire::seal(c, KEY));
    let good = cmd("c-1", "gw-test", T0 + 60_000);
    let script_cmds = vec![
        sealed(&good),
        sealed(&good),
        sealed(&cmd("c-2", "gw-test", T0 - 1)),
        sealed(&cmd("c-3", "gw-other", T0 + 60_000)),
        Incoming::Cmd(wire::seal(
            &cmd("c-4", "gw-test", T0 + 60_000),
            b"not the key",
        )),
        Incoming::Cmd(b"garbage".to_vec()),
    ];
    run_with_config(cfg.clone(), &fake, outbox.clone(), |tx| async move {
        tx.send(Incoming::Connected).await.expect("loop runs");
        tx.send(hello_answer()).await.expect("loop runs");
        for c in script_cmds {
            tx.send(c).await.expect("loop runs");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    })
    .await;

    let mut got = Vec::new();
    while let Ok(input) = requests.try_recv() {
        got.push(input);
    }
    assert!(
        matches!(got.as_slice(), [crate::evidence::Input::Request(c)] if *c == good),
        "{got:?}"
    );
    let refusals: Vec<String> = outbox
        .lock()
        .expect("outbox")
        .pending(0, usize::MAX, true)
        .expect("read")
        .into_iter()
        .filter_map(|i| match i.body {
            Body::Event(e) if e.kind == EventKind::CommandRefused => Some(e.message),
            _ => None,
        })
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(refusals[0].contains("\"c-1\"") && refusals[0].contains("carried out already"));
    assert!(refusals[1].contains("\"c-2\"") && refusals[1].contains("expired"));
    assert!(refusals[2].contains("\"c-3\"") && refusals[2].contains("\"gw-other\""));

    // A restart: the replay is still refused.
    run_with_config(cfg, &fake, outbox.clone(), |tx| async move {
        tx.send(Incoming::Connected).await.expect("loop runs");
        tx.send(hello_answer()).await.expect("loop runs");
        tx.send(Incoming::Cmd(wire::seal(&good, KEY)))
            .await
            .expect("loop runs");
        tokio::time::sleep(Duration::from_secs(1)).await;
    })
    .await;
    assert!(requests.try_recv().is_err(), "not carried out twice");
}

/// Through the real loop: a picture of eight 48 KiB parts behind an alarm goes out after
/// the alarm, in batches that each stay under `batch_max_bytes` as published.
#[tokio::test(start_paused = true)]
async fn picture_parts_go_after_the_alarm_in_batches_under_the_byte_bound() {
    let clock = Clock::following_tokio(T0);
    let fake = fake(&clock);
    let outbox = outbox();
    let cap = crate::source::camera::Capture {
        bytes: vec![7; 8 * fumegrid_common::wire::EVIDENCE_PART_BYTES],
        media: fumegrid_common::wire::Media::Jpeg,
        sha256: [3; 32],
        captured_ms: T0,
        width: None,
        height: None,
    };
    let meta = fumegrid_common::wire::EvidenceMeta {
        camera: "cam-1".into(),
        devices: vec!["d1".into()],
        captured_ms: T0,
        trigger: fumegrid_common::wire::Trigger::AlarmRaised,
        alarm: Some("a-1".into()),
        request: None,
        media: fumegrid_common::wire::Media::Jpeg,
        size: cap.bytes.len() as u64,
        width: None,
        height: None,
        site: "Demo street".into(),
        readings: vec![],
    };
    outbox
        .lock()
        .expect("outbox")
        .append(cap.parts(&meta), T0)
        .expect("append parts");
    let cfg = config();
    let max = cfg.plan.batch_max_bytes;
    let f = fake.clone();
    run_with_config(cfg, &fake, outbox.clone(), |tx| async move {
        tx.send(Incoming::Connected).await.expect("loop runs");
        tx.send(hello_answer()).await.expect("loop runs");
        // The aggregator acks what it got; two picture batches are in flight at a time.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let got: Vec<(u64, u64)> = f
                .batches()
                .iter()
                .flat_map(|(_, s)| s.iter().map(|&q| (q, q)))
                .collect();
            tx.send(ack(Ack::of("stream-a".into(), got)))
                .await
                .expect("loop runs");
        }
    })
    .await;
    let sizes = fake.sizes.lock().expect("fake").clone();
    let batches = fake.batches();
    // Events 1..=3 first, then the parts 4..=11, a few per batch.
    assert_eq!(batches[0].1, vec![1, 2, 3]);
    let parts: Vec<u64> = batches[1..].iter().flat_map(|(_, s)| s.clone()).collect();
    assert_eq!(parts, (4..=11).collect::<Vec<_>>());
    assert!(batches.len() >= 4, "{batches:?}");
    assert!(sizes.iter().all(|&n| n <= max), "{sizes:?} over {max}");
}
