//! The channel scheduler ([`run_channel`]) against a fake link ([`super::fake`]), in paused
//! tokio time: a minute of polling runs in milliseconds and every instant is exact.

use std::sync::Arc;
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::diag::Source;
use fumegrid_common::profile::{Profile, Table};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fake::{Answer, FakeLink, Request};
use super::*;

const T0: i64 = 1_700_000_000_000;
const MS: Duration = Duration::from_millis(1);

/// A monitor with one holding block and, if `coil`, a coil block (two requests per poll).
fn profile(timeout_ms: u64, delay_ms: u64, coil: bool) -> Arc<Profile> {
    let mut t = format!(
        "[profile]\nid = \"t\"\n[modbus]\nresponse_timeout_ms = {timeout_ms}\n\
         inter_request_delay_ms = {delay_ms}\n\
         [[points]]\nmetric = \"fume_mg_m3\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\n"
    );
    if coil {
        t += "[[points]]\nmetric = \"fan_on\"\ntable = \"coil\"\naddress = 0\ntype = \"bool\"\n";
    }
    Arc::new(Profile::from_source(&Source::new("t.toml", t)).expect("valid profile"))
}

fn slot(slave: u8, interval: Duration, p: &Arc<Profile>, breaker: Breaker, clock: &Clock) -> Slot {
    let device = format!("dev-{slave}");
    Slot::new(
        &device,
        slave,
        DeviceDecoder::new(device.clone(), p.clone(), 0),
        breaker,
        interval,
        clock.tokio_instant(),
    )
}

/// Runs the scheduler over `slots` for `run`, calling `midway` after `midway_at`; returns the
/// final stats and every request the line saw, in order.
async fn run_for(
    link: FakeLink,
    slots: Vec<Slot>,
    clock: &Clock,
    run: Duration,
    midway_at: Duration,
    midway: impl FnOnce(),
) -> (Vec<SlaveStats>, Vec<Request>) {
    let line = link.line.clone();
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let (stats, (), ()) = tokio::join!(
        run_channel(
            link,
            slots,
            tx,
            cancel,
            Duration::from_secs(3600),
            clock.clone()
        ),
        async move {
            tokio::time::sleep(midway_at).await;
            midway();
            tokio::time::sleep(run.saturating_sub(midway_at)).await;
            stop.cancel();
        },
        async move { while rx.recv().await.is_some() {} },
    );
    let requests = line.lock().expect("fake line").requests.clone();
    (stats, requests)
}

fn of(requests: &[Request], slave: u8) -> Vec<Request> {
    requests
        .iter()
        .filter(|r| r.slave == slave)
        .copied()
        .collect()
}

fn gaps(requests: &[Request]) -> Vec<Duration> {
    requests
        .windows(2)
        .map(|w| w[1].start - w[0].start)
        .collect()
}

/// A saturated bus (three slaves due every 100 ms, each answer taking 50 ms) serves them in
/// turn: equal shares (within the one extra turn), and no slave waits for more than three other requests (one extra turn,
/// seen once while the due times settle; strict rotation after that).
#[tokio::test(start_paused = true)]
async fn a_saturated_bus_serves_its_slaves_in_turn() {
    let clock = Clock::following_tokio(T0);
    let p = profile(300, 0, false);
    let slots = (1..=3)
        .map(|s| {
            slot(
                s,
                100 * MS,
                &p,
                Breaker::new(3, Duration::from_secs(5)),
                &clock,
            )
        })
        .collect();
    let link = FakeLink::new(clock.clone(), 50 * MS);
    let (stats, requests) = run_for(
        link,
        slots,
        &clock,
        Duration::from_secs(10),
        Duration::ZERO,
        || {},
    )
    .await;

    assert!(requests.len() >= 195, "{} requests in 10 s", requests.len());
    let seq: Vec<u8> = requests.iter().map(|r| r.slave).collect();
    for s in 1..=3 {
        let at: Vec<usize> = (0..seq.len()).filter(|&i| seq[i] == s).collect();
        assert!(
            at.first().is_some_and(|&i| i < 3),
            "slave {s} first asked at {:?}: {seq:?}",
            at.first()
        );
        let worst = at.windows(2).map(|w| w[1] - w[0] - 1).max();
        assert!(
            worst <= Some(3),
            "slave {s} waited for {worst:?} others: {seq:?}"
        );
    }
    let polls: Vec<u64> = stats.iter().map(|s| s.polls).collect();
    let (min, max) = (polls.iter().min(), polls.iter().max());
    assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 2), "{polls:?}");
    assert!(
        stats
            .iter()
            .all(|s| s.polls == s.polls_ok && s.polls == s.requests)
    );
}

/// An idle bus keeps every slave on its own interval, exactly (paused time), give or take
/// another slave's answer in the way.
#[tokio::test(start_paused = true)]
async fn an_idle_bus_keeps_each_slave_on_its_own_interval() {
    let clock = Clock::following_tokio(T0);
    let p = profile(300, 0, false);
    let intervals: [(u8, u32); 3] = [(1, 1000), (2, 2000), (3, 500)];
    let slots = intervals
        .iter()
        .map(|&(s, ms)| {
            slot(
                s,
                ms * MS,
                &p,
                Breaker::new(3, Duration::from_secs(5)),
                &clock,
            )
        })
        .collect();
    let link = FakeLink::new(clock.clone(), 10 * MS);
    let (_, requests) = run_for(
        link,
        slots,
        &clock,
        Duration::from_secs(60),
        Duration::ZERO,
        || {},
    )
    .await;

    for (s, ms) in intervals {
        let mine = of(&requests, s);
        let want = 60_000 / u64::from(ms);
        assert!(
            (want..=want + 1).contains(&(mine.len() as u64)),
            "slave {s}: {} polls, want {want}",
            mine.len()
        );
        for g in gaps(&mine) {
            let off = g.abs_diff(ms * MS);
            assert!(
                off <= 20 * MS,
                "slave {s}: gap {g:?} for an interval of {ms} ms"
            );
        }
    }
}

/// A dead slave costs its bus three timeouts, then one probe per probe interval; the live
/// slaves keep their rate throughout; once it answers again a probe closes the breaker and it
/// is back on its interval. Every outcome is counted in its stats.
#[tokio::test(start_paused = true)]
async fn a_dead_slave_is_probed_at_the_probe_interval_while_the_others_keep_their_rate() {
    let clock = Clock::following_tokio(T0);
    let timeout = 300 * MS;
    let probe = Duration::from_secs(5);
    let p = profile(300, 0, false);
    let slots = (1..=3)
        .map(|s| {
            slot(
                s,
                Duration::from_secs(1),
                &p,
                Breaker::new(3, probe),
                &clock,
            )
        })
        .collect();
    let link = FakeLink::new(clock.clone(), 20 * MS);
    link.answer(2, Answer::Silent);
    let fake = link.line.clone();
    let revive = move || {
        fake.lock()
            .expect("fake line")
            .answers
            .insert(2, Answer::Data);
    };
    let (stats, requests) = run_for(
        link,
        slots,
        &clock,
        Duration::from_secs(90),
        Duration::from_secs(45),
        revive,
    )
    .await;

    let dead = of(&requests, 2);
    let revived_at = clock.tokio_instant() - Duration::from_secs(45);
    let (before, after): (Vec<Request>, Vec<Request>) =
        dead.iter().partition(|r| r.start < revived_at);
    // Three failed polls a second apart open the breaker; then probes only.
    let g = gaps(&before);
    assert!(g[..2].iter().all(|g| *g == Duration::from_secs(1)), "{g:?}");
    let probes = &g[2..];
    assert!(probes.len() >= 7, "probes in 45 s: {}", probes.len());
    for g in probes {
        assert!(
            *g >= probe && *g <= probe + timeout + 50 * MS,
            "probe gap {g:?} (probe interval {probe:?})"
        );
    }
    // Answering again: the next probe closes it, then one poll a second.
    let first = after.first().expect("probed after it came back");
    assert!(
        first.start - revived_at <= probe + timeout,
        "{:?}",
        first.start - revived_at
    );
    // The probe that closes the breaker is followed by a poll at once (its due time fell
    // behind while it was open), then one a second.
    let g = gaps(&after);
    assert!(g.len() >= 35, "{} polls after it came back", g.len());
    assert!(
        g[1..]
            .iter()
            .all(|g| g.abs_diff(Duration::from_secs(1)) <= 50 * MS),
        "{g:?}"
    );

    for s in [1, 3] {
        let live = of(&requests, s);
        assert!(
            (90..=91).contains(&live.len()),
            "slave {s}: {} polls in 90 s",
            live.len()
        );
        let worst = gaps(&live).into_iter().max().unwrap_or_default();
        assert!(
            worst <= Duration::from_secs(1) + timeout + 50 * MS,
            "slave {s}: gap {worst:?}"
        );
    }

    let st = |s: u8| stats.iter().find(|x| x.slave == s).expect("stats").clone();
    let d = st(2);
    assert_eq!(d.polls as usize, dead.len());
    assert_eq!(d.requests as usize, dead.len());
    assert_eq!(d.no_reply as usize, before.len());
    assert_eq!(d.polls_ok as usize, after.len());
    assert_eq!((d.breaker_trips, d.breaker_open), (1, false));
    for s in [1, 3] {
        let l = st(s);
        assert_eq!((l.polls, l.no_reply, l.breaker_trips), (l.polls_ok, 0, 0));
    }
}

/// A firmware's inter-request delay keeps the line quiet that long after every answer, between
/// the blocks of one poll and between slaves, and not longer within a poll.
#[tokio::test(start_paused = true)]
async fn the_inter_request_delay_is_kept_after_every_answer() {
    let clock = Clock::following_tokio(T0);
    let delay = 50 * MS;
    let p = profile(300, 50, true);
    let slots = (1..=2)
        .map(|s| {
            slot(
                s,
                200 * MS,
                &p,
                Breaker::new(3, Duration::from_secs(5)),
                &clock,
            )
        })
        .collect();
    let link = FakeLink::new(clock.clone(), 10 * MS);
    let (stats, requests) = run_for(
        link,
        slots,
        &clock,
        Duration::from_secs(10),
        Duration::ZERO,
        || {},
    )
    .await;

    assert!(requests.len() > 100, "{} requests", requests.len());
    for w in requests.windows(2) {
        let quiet = w[1].start - w[0].end;
        assert!(
            quiet >= delay,
            "{quiet:?} of quiet between {:?} and {:?}",
            w[0],
            w[1]
        );
        if w[0].slave == w[1].slave && w[0].table == Table::Holding && w[1].table == Table::Coil {
            assert_eq!(
                quiet, delay,
                "the second block of a poll follows after the delay"
            );
        }
    }
    assert!(
        stats
            .iter()
            .all(|s| s.requests == 2 * s.polls && s.polls == s.polls_ok)
    );
}

/// A slave that answers with an exception is alive (its breaker stays closed, both blocks are
/// asked); one whose replies are garbled is not (its poll stops at the first block, and the
/// breaker opens). Each failure is counted by kind.
#[tokio::test(start_paused = true)]
async fn exceptions_and_garbled_replies_are_counted_by_kind() {
    let clock = Clock::following_tokio(T0);
    let p = profile(300, 0, true);
    let slots = (1..=2)
        .map(|s| {
            slot(
                s,
                Duration::from_secs(1),
                &p,
                Breaker::new(3, Duration::from_secs(60)),
                &clock,
            )
        })
        .collect();
    let link = FakeLink::new(clock.clone(), 10 * MS);
    link.answer(1, Answer::Exception(2));
    link.answer(2, Answer::Garbled);
    let (stats, requests) = run_for(
        link,
        slots,
        &clock,
        Duration::from_secs(10),
        Duration::ZERO,
        || {},
    )
    .await;

    let st = |s: u8| stats.iter().find(|x| x.slave == s).expect("stats").clone();
    let (e, g) = (st(1), st(2));
    assert_eq!(e.polls, 10);
    assert_eq!((e.requests, e.exceptions, e.polls_ok), (20, 20, 0));
    assert_eq!((e.breaker_trips, e.breaker_open), (0, false));
    assert_eq!(of(&requests, 1).len(), 20);
    // Three garbled polls open the breaker; the next probe is a minute away.
    assert_eq!((g.polls, g.requests, g.garbled), (3, 3, 3));
    assert_eq!((g.breaker_trips, g.breaker_open), (1, true));
}
