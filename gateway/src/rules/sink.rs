//! The rules stage: takes the readings of every poll, runs each device's [`DeviceRules`] on them
//! (and on a one-second tick, so that silence is judged too), and appends the alarms and the
//! readings to the outbox in one append per round. Rule state is saved in the outbox beside the
//! items (`rules/{device}`): at once for a device whose episodes changed, every 30 s for all,
//! and at the stop, so a restart continues every episode.
//!
//! Nothing is lost silently: items the outbox refuses (a full disk) are counted and reported by
//! a `gap` event ahead of the next append that works, or, when the process stops first, in a
//! small file ([`UNSTORED_FILE`]) that the next start turns into that event.
//!
//! What of each poll goes up is the report stage's ([`crate::report`]), run *after* the rules
//! judged the poll, so the strategy never changes an alarm; its state is saved beside the rule
//! state (`report/{device}`: at once when a period went out or an alarm opened or closed, every
//! 30 s, and at the stop). Without [`Sink::with_report`] every reading goes up (`raw`).
//!
//! The engine itself is pure; this is its thin I/O shell (channel in, outbox out, one clock).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fumegrid_common::clock::Clock;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{Body, Event, EventKind};
use tokio::sync::{Notify, mpsc};
use tracing::{error, info};

use super::{DeviceRules, RulesConfig};
use crate::outbox::{Outbox, OutboxError};
use crate::report::{DeviceReport, ReportConfig};
use crate::telemetry as m;

/// How often every device's rule state is saved, changed or not.
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// At most this many polls go into one round (one append, one flush).
const MAX_POLLS_PER_ROUND: usize = 256;

/// The rules stage of one gateway (see the module docs).
#[derive(Debug)]
pub struct Sink<O> {
    outbox: Arc<Mutex<O>>,
    /// The outbox's directory: for its reserve and [`UNSTORED_FILE`].
    outbox_dir: PathBuf,
    rules: HashMap<String, DeviceRules>,
    /// Notified after every append that worked (the uplink waits on it).
    appended: Arc<Notify>,
    /// Bumped by every poll, answered or not (the watchdog checks it).
    progress: Arc<AtomicU64>,
    clock: Clock,
    last_save: Instant,
    unstored: Unstored,
    /// The evidence pipeline: alarm transitions go to it *after* they are in the outbox, and
    /// every poll's values for the pictures' captions.
    evidence: Option<crate::evidence::Handle>,
    /// What of each device's polls goes up; a device without one sends every reading.
    reports: HashMap<String, DeviceReport>,
    /// Bodies the report stage produced at start (a period of a changed length), sent with
    /// the first round.
    carried: Vec<Body>,
}

impl<O: Outbox> Sink<O> {
    /// One rule engine per device of `devices` (id, resolved rules), continuing from the state
    /// saved in the outbox.
    pub fn new(
        outbox: Arc<Mutex<O>>,
        outbox_dir: PathBuf,
        devices: impl IntoIterator<Item = (String, RulesConfig)>,
        appended: Arc<Notify>,
        progress: Arc<AtomicU64>,
        clock: Clock,
    ) -> Sink<O> {
        let rules = load_rules(&outbox, devices);
        let last_save = clock.instant();
        Sink {
            outbox,
            outbox_dir,
            rules,
            appended,
            progress,
            clock,
            last_save,
            unstored: Unstored::default(),
            evidence: None,
            reports: HashMap::new(),
            carried: Vec::new(),
        }
    }

    /// Report strategies per device `(id, strategy, poll interval ms)`, continuing from the
    /// state saved in the outbox.
    pub fn with_report(
        mut self,
        devices: impl IntoIterator<Item = (String, ReportConfig, u64)>,
    ) -> Sink<O> {
        let Ok(o) = self.outbox.lock() else {
            return self;
        };
        for (id, cfg, poll_ms) in devices {
            let saved = o.get_state(&format!("report/{id}")).ok().flatten();
            let (rep, out, err) = DeviceReport::restore_or_new(&id, cfg, poll_ms, saved.as_deref());
            if let Some(e) = err {
                tracing::warn!(device = id, error = %e, "report state not usable; starting fresh (the open period is lost)");
            }
            self.carried.extend(out);
            self.reports.insert(id, rep);
        }
        drop(o);
        self
    }

    /// Hands alarm transitions and readings to the evidence pipeline, starting with the
    /// episodes open now.
    pub fn with_evidence(mut self, handle: crate::evidence::Handle) -> Sink<O> {
        let open = self
            .rules
            .values()
            .flat_map(|dr| {
                dr.open_episodes()
                    .iter()
                    .map(|e| (e.id.clone(), dr.device().to_string()))
            })
            .collect();
        handle.open(open);
        self.evidence = Some(handle);
        self
    }

    /// Runs until every sender of `rx` is gone (the sources stopped), then saves the rule state,
    /// flushes the outbox and records what could not be stored.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Vec<Reading>>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            // Everything that is waiting goes into one append: under a burst (many devices
            // judged in the same second) one flush covers all their alarms instead of one each.
            let mut polls: Vec<Vec<Reading>> = Vec::new();
            let mut ticked = false;
            tokio::select! {
                polled = rx.recv() => match polled {
                    Some(p) => polls.push(p),
                    None => break,
                },
                _ = tick.tick() => ticked = true,
            }
            while polls.len() < MAX_POLLS_PER_ROUND {
                match rx.try_recv() {
                    Ok(p) => polls.push(p),
                    Err(_) => break,
                }
            }
            self.round(polls, ticked);
        }
        self.stop();
    }

    /// One round: judges `polls` (and the tick), saves rule state, appends.
    fn round(&mut self, polls: Vec<Vec<Reading>>, ticked: bool) {
        let now = self.clock.now_ms();
        let mut alarms = Vec::new();
        let mut readings_out = Vec::new();
        let mut changed: Vec<String> = Vec::new();
        for readings in polls {
            // A poll came, answered or not: the source's loop runs (what the watchdog asks; a
            // gateway whose monitors are switched off at night is not hung).
            self.progress.fetch_add(1, Ordering::Relaxed);
            log_poll(&readings);
            if let Some(h) = &self.evidence {
                h.readings(&readings);
            }
            let mut judged = Vec::new();
            if let Some(dr) = readings.first().and_then(|r| self.rules.get_mut(&r.device)) {
                judged = dr.on_poll(&readings, now);
                if !judged.is_empty() {
                    changed.push(dr.device().to_string());
                }
            }
            // The rules have judged the poll; only now is it decided what of it goes up.
            match readings
                .first()
                .and_then(|r| self.reports.get_mut(&r.device))
            {
                Some(rep) => readings_out.extend(rep.on_poll(&readings, &judged, now)),
                None => readings_out.extend(readings.into_iter().map(Body::Reading)),
            }
            alarms.extend(judged);
        }
        if ticked {
            let mut by_device: HashMap<String, Vec<fumegrid_common::wire::Alarm>> = HashMap::new();
            for dr in self.rules.values_mut() {
                let a = dr.on_tick(now);
                if !a.is_empty() {
                    changed.push(dr.device().to_string());
                    by_device.insert(dr.device().to_string(), a);
                }
            }
            for (device, rep) in &mut self.reports {
                let a = by_device.get(device).map_or(&[][..], Vec::as_slice);
                readings_out.extend(rep.on_tick(a, now));
            }
            alarms.extend(by_device.into_values().flatten());
        }
        readings_out.splice(0..0, self.carried.drain(..));
        for a in &alarms {
            log_alarm(a);
        }
        let periodic = self.clock.instant().duration_since(self.last_save) >= SAVE_EVERY;
        let Ok(mut o) = self.outbox.lock() else {
            error!("outbox lock poisoned: items lost");
            return;
        };
        // Saved before the alarms themselves, and made durable by the same flush: after a
        // crash the state knows the episode (no second raise) and the alarm item is there.
        let to_save: Vec<&String> = if periodic {
            self.rules.keys().collect()
        } else {
            changed.iter().collect()
        };
        for device in to_save {
            if let Some(dr) = self.rules.get(device)
                && let Err(e) = o.put_state(&format!("rules/{device}"), &dr.save())
            {
                error!(device, error = %e, "cannot save alarm-rule state");
            }
        }
        // A period that goes out in this append is saved as gone with it (never sent twice).
        for rep in self.reports.values_mut() {
            if (rep.take_dirty() || periodic)
                && let Err(e) = o.put_state(&format!("report/{}", rep.device()), &rep.save())
            {
                error!(device = rep.device(), error = %e, "cannot save report state");
            }
        }
        if periodic {
            self.last_save = self.clock.instant();
        }
        // Cloned only when a pipeline waits for them (alarms are rare).
        let for_evidence = match &self.evidence {
            Some(_) => alarms.clone(),
            None => Vec::new(),
        };
        let mut bodies: Vec<Body> = alarms.into_iter().map(Body::Alarm).collect();
        bodies.extend(readings_out);
        let gap = self.unstored.gap_event(now);
        if bodies.is_empty() && gap.is_none() {
            if periodic {
                let _ = o.flush();
            }
            return;
        }
        let taken = bodies.clone();
        bodies.splice(0..0, gap);
        match o.append(bodies, self.clock.now_ms()) {
            Ok(_) => {
                self.unstored.recorded();
                self.appended.notify_one();
                // The alarm is stored (and flushed) before any picture is asked for: a camera
                // can never delay it.
                if let Some(h) = &self.evidence {
                    for a in &for_evidence {
                        h.alarm(a);
                    }
                }
            }
            Err(e) => self.unstored.lost(&taken, &e),
        }
    }

    /// Rule state as of the stop, so a restart continues every episode. Items appended but
    /// never flushed die with the process when that flush fails too: counted.
    fn stop(mut self) {
        if let Ok(mut o) = self.outbox.lock() {
            for (device, dr) in &self.rules {
                let _ = o.put_state(&format!("rules/{device}"), &dr.save());
            }
            // The open periods are saved, not sent half-way: the next start continues them.
            for (device, rep) in &self.reports {
                let _ = o.put_state(&format!("report/{device}"), &rep.save());
            }
            if o.flush().is_err() {
                self.unstored.unflushed(o.undurable());
            }
        }
        // Stopping on a full disk: the gap event must not die with the process. The outbox's
        // reserve is given up for it if need be (an extra gap event after a failed flush
        // over-reports, never hides).
        if let Some(gap) = self.unstored.gap_event(self.clock.now_ms())
            && let Ok(mut o) = self.outbox.lock()
        {
            let mut stored = o.append(vec![gap.clone()], self.clock.now_ms()).is_ok();
            if !stored && crate::outbox::release_reserve(&self.outbox_dir) {
                stored = o.append(vec![gap], self.clock.now_ms()).is_ok();
            }
            if stored {
                self.unstored.recorded();
            } else {
                // sled stays failed after ENOSPC within a process: leave the count in a small
                // file for the next start, which turns it into the gap event.
                let line = self.unstored.to_line();
                let unstored = &self.unstored;
                match std::fs::write(self.outbox_dir.join(UNSTORED_FILE), &line) {
                    Ok(()) => error!(
                        items = unstored.count(),
                        "stopping with items the outbox refused: counted in {UNSTORED_FILE} for a gap event at the next start"
                    ),
                    Err(e) => error!(
                        items = unstored.count(),
                        error = %e,
                        "stopping with items the outbox refused and no way to record their gap event"
                    ),
                }
            }
        }
    }
}

/// One rule engine per device, continuing from the state saved in the outbox.
fn load_rules<O: Outbox>(
    outbox: &Arc<Mutex<O>>,
    devices: impl IntoIterator<Item = (String, RulesConfig)>,
) -> HashMap<String, DeviceRules> {
    let Ok(o) = outbox.lock() else {
        return Default::default();
    };
    devices
        .into_iter()
        .map(|(id, cfg)| {
            let saved = o.get_state(&format!("rules/{id}")).ok().flatten();
            let (rules, err) = DeviceRules::restore_or_new(&id, cfg, saved.as_deref());
            if let Some(e) = err {
                tracing::warn!(device = id, error = %e, "alarm-rule state not usable; starting fresh");
            }
            let open = rules.open_episodes().len();
            if open > 0 {
                info!(device = id, open, "continuing open alarm episodes");
            }
            (id, rules)
        })
        .collect()
}

/// Beside the outbox's files: what a run that stopped on a full disk could not store (see
/// [`Unstored::to_line`]); the next start turns it into a gap event.
pub const UNSTORED_FILE: &str = "unstored";

/// A gap event for what the previous run could not store, from [`UNSTORED_FILE`].
pub fn previous_unstored(dir: &Path, now: i64) -> Option<Body> {
    let text = std::fs::read_to_string(dir.join(UNSTORED_FILE)).ok()?;
    let n: Vec<i64> = text
        .split_ascii_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    let (readings, priority) = (*n.first()? as u64, *n.get(1)? as u64);
    let u = Unstored {
        readings,
        priority,
        from_ms: n.get(2).copied(),
        to_ms: n.get(3).copied(),
        error: Some("the previous run stopped on a full disk".into()),
    };
    u.gap_event(now)
}

/// Items the outbox refused (a full disk, a failing store): counted, logged once per streak,
/// and reported with one `gap` event ahead of the next append that works.
#[derive(Debug, Default)]
struct Unstored {
    readings: u64,
    priority: u64,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    error: Option<String>,
}

impl Unstored {
    fn count(&self) -> u64 {
        self.readings + self.priority
    }

    fn lost(&mut self, bodies: &[Body], e: &OutboxError) {
        if self.error.is_none() {
            error!(error = %e, "items lost: cannot append to the outbox; counting them for a gap event (logged once per streak)");
            self.error = Some(e.to_string());
        }
        metrics::counter!(m::OUTBOX_REFUSED).increment(bodies.len() as u64);
        for b in bodies {
            let ts = b.ts_ms();
            if b.is_priority() {
                self.priority += 1;
            } else {
                self.readings += 1;
            }
            self.from_ms = Some(self.from_ms.map_or(ts, |f| f.min(ts)));
            self.to_ms = Some(self.to_ms.map_or(ts, |t| t.max(ts)));
        }
    }

    /// The gap event for what is counted so far, if anything.
    fn gap_event(&self, now: i64) -> Option<Body> {
        (self.count() > 0).then(|| {
            Body::Event(Event {
                ts_ms: now,
                kind: EventKind::Gap,
                message: format!(
                    "outbox refused {} readings and {} priority items ({})",
                    self.readings,
                    self.priority,
                    self.error.as_deref().unwrap_or("")
                ),
                dropped: Some(self.count()),
                from_ms: self.from_ms,
                to_ms: self.to_ms,
            })
        })
    }

    /// `n` items the outbox took but could not make durable (their class is not known: counted
    /// with the readings, which they almost always are).
    fn unflushed(&mut self, n: u64) {
        if n > 0 {
            error!(
                items = n,
                "items appended but never flushed are lost with this stop; counting them for the gap event"
            );
            self.readings += n;
            self.error.get_or_insert_with(|| "flush failed".into());
        }
    }

    /// `readings priority from_ms to_ms` as text, for [`UNSTORED_FILE`].
    fn to_line(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.readings,
            self.priority,
            self.from_ms.unwrap_or(0),
            self.to_ms.unwrap_or(0)
        )
    }

    /// The last append (with the gap event) worked.
    fn recorded(&mut self) {
        if self.count() > 0 {
            info!(
                readings = self.readings,
                priority = self.priority,
                "outbox takes items again; the loss is reported in a gap event"
            );
        }
        *self = Unstored::default();
    }
}

fn log_poll(readings: &[Reading]) {
    if tracing::enabled!(target: "poll", tracing::Level::DEBUG)
        && let Some(first) = readings.first()
    {
        // One line per poll for people watching (the demo): `fume_mg_m3=0.52 fan_on=1 ...`.
        let values: Vec<String> = readings
            .iter()
            .map(|r| match (r.value, r.quality) {
                (Some(v), Quality::Ok) => {
                    format!("{}={v}", r.metric.name())
                }
                (Some(v), q) => format!("{}={v}({q})", r.metric.name()),
                (None, q) => format!("{}=({q})", r.metric.name()),
            })
            .collect();
        tracing::debug!(target: "poll", device = first.device, "{}", values.join(" "));
    }
    for r in readings {
        let unit = r.unit.as_deref().unwrap_or(r.metric.unit());
        info!(target: "reading", device = r.device, metric = r.metric.name(), value = r.value, unit, quality = r.quality.name(), ts_ms = r.ts_ms);
    }
}

/// Counts and logs one alarm transition.
fn log_alarm(a: &fumegrid_common::wire::Alarm) {
    use fumegrid_common::wire::AlarmPhase;
    let phase = match a.phase {
        AlarmPhase::Raised => "raised",
        AlarmPhase::Updated => "updated",
        AlarmPhase::Cleared => "cleared",
    };
    metrics::counter!(m::RULES_ALARMS, "device" => a.device.clone(), "kind" => a.kind.name(), "phase" => phase)
        .increment(1);
    let metric = a.metric.as_ref().map_or("", |m| m.name());
    match a.phase {
        AlarmPhase::Raised => {
            tracing::warn!(target: "alarm", id = a.id, device = a.device, kind = a.kind.name(), metric, value = a.value, limit = a.limit, suppressed = a.suppressed, "alarm raised: {}", a.message)
        }
        AlarmPhase::Updated => {
            info!(target: "alarm", id = a.id, device = a.device, kind = a.kind.name(), metric, value = a.value, peak = a.peak, "alarm updated")
        }
        AlarmPhase::Cleared => {
            info!(target: "alarm", id = a.id, device = a.device, kind = a.kind.name(), metric, peak = a.peak, started_ms = a.started_ms, cleared_ms = a.cleared_ms, "alarm cleared")
        }
    }
}

#[cfg(test)]
mod tests {
    use fumegrid_common::metric::Metric;
    use fumegrid_common::wire::{AlarmKind, AlarmPhase, Item};

    use super::*;
    use crate::outbox::{MemOutbox, OutboxConfig};

    const T0: i64 = 1_700_000_000_000;

    fn poll(t: i64) -> Vec<Reading> {
        [(Metric::FanOn, 1.0), (Metric::FumeMgM3, 0.4)]
            .into_iter()
            .map(|(metric, v)| Reading {
                device: "d1".into(),
                unit: None,
                metric,
                value: Some(v),
                quality: Quality::Ok,
                ts_ms: t,
            })
            .collect()
    }

    struct Rig {
        outbox: Arc<Mutex<MemOutbox>>,
        appended: Arc<Notify>,
        progress: Arc<AtomicU64>,
        clock: Clock,
    }

    impl Rig {
        fn new() -> Rig {
            let o = MemOutbox::new("s", OutboxConfig::default()).expect("mem outbox");
            Rig {
                outbox: Arc::new(Mutex::new(o)),
                appended: Arc::new(Notify::new()),
                progress: Arc::new(AtomicU64::new(0)),
                clock: Clock::following_tokio(T0),
            }
        }

        fn sink(&self, offline_after_s: u64) -> Sink<MemOutbox> {
            let cfg = RulesConfig {
                offline_after_s,
                ..RulesConfig::default()
            };
            Sink::new(
                self.outbox.clone(),
                PathBuf::from("/nonexistent/outbox"),
                [("d1".to_string(), cfg)],
                self.appended.clone(),
                self.progress.clone(),
                self.clock.clone(),
            )
        }

        fn items(&self) -> Vec<Item> {
            let o = self.outbox.lock().expect("outbox");
            o.pending(0, 10_000, false).expect("read")
        }

        fn state(&self) -> Option<DeviceRules> {
            let o = self.outbox.lock().expect("outbox");
            let saved = o.get_state("rules/d1").expect("read state")?;
            Some(DeviceRules::restore("d1", RulesConfig::default(), &saved).expect("restores"))
        }
    }

    /// A poll's readings go to the outbox at once; a device that then falls silent gets its
    /// `device_offline` alarm from the sink's own tick, with the rule state (the open episode)
    /// saved beside it; the uplink is told each time.
    #[tokio::test(start_paused = true)]
    async fn readings_and_alarms_reach_the_outbox_with_the_rule_state() {
        let rig = Rig::new();
        let (tx, rx) = mpsc::channel(8);
        let appended = rig.appended.clone();
        let driven = async {
            tx.send(poll(T0)).await.expect("sink runs");
            appended.notified().await;
            let first = rig.items();
            assert_eq!(first.len(), 2, "the poll's two readings: {first:?}");
            assert!(first.iter().all(|i| matches!(i.body, Body::Reading(_))));
            assert!(rig.state().is_none(), "nothing changed, nothing saved yet");
            // Silent for the offline time: the tick judges it, and saves the state at once (not
            // only at the stop or the next periodic save).
            // (45 s: between two periodic saves, at 30 and 60 s.)
            tokio::time::sleep(Duration::from_secs(47)).await;
            let state = rig.state().expect("saved");
            assert_eq!(
                state.open_episodes().len(),
                1,
                "the saved state knows the episode"
            );
            drop(tx);
        };
        tokio::join!(rig.sink(45).run(rx), driven);

        let items = rig.items();
        let alarms: Vec<_> = items
            .iter()
            .filter_map(|i| match &i.body {
                Body::Alarm(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(alarms.len(), 1, "{items:?}");
        let a = alarms[0];
        assert_eq!(
            (a.kind, a.phase, a.device.as_str()),
            (AlarmKind::DeviceOffline, AlarmPhase::Raised, "d1")
        );
        let after = a.ts_ms - T0;
        assert!(
            (45_000..=46_000).contains(&after),
            "raised {after} ms after the last poll"
        );
        assert_eq!(rig.progress.load(Ordering::Relaxed), 1, "one poll came");
    }

    /// Without any change, every device's state is saved every 30 s anyway (and at the stop).
    #[tokio::test(start_paused = true)]
    async fn rule_state_is_saved_every_thirty_seconds_without_changes() {
        let rig = Rig::new();
        let (tx, rx) = mpsc::channel(8);
        let driven = async {
            for s in 0..29 {
                tx.send(poll(T0 + s * 1000)).await.expect("sink runs");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            assert!(rig.state().is_none(), "not saved before 30 s");
            for s in 29..32 {
                tx.send(poll(T0 + s * 1000)).await.expect("sink runs");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            assert!(rig.state().is_some(), "saved after 30 s");
            drop(tx);
        };
        tokio::join!(rig.sink(300).run(rx), driven);
        assert_eq!(rig.items().len(), 2 * 32, "every reading kept");
    }

    /// The in-memory outbox, refusing appends while `refuse` is set (a full disk).
    #[derive(Debug)]
    struct Refusing {
        inner: MemOutbox,
        refuse: bool,
    }

    impl Outbox for Refusing {
        fn stream(&self) -> &str {
            self.inner.stream()
        }
        fn append(&mut self, bodies: Vec<Body>, now_ms: i64) -> Result<Vec<u64>, OutboxError> {
            if self.refuse {
                return Err(OutboxError::Store {
                    path: "/test/outbox".into(),
                    op: "append",
                    source: sled::Error::Unsupported("injected: no space left".into()),
                });
            }
            self.inner.append(bodies, now_ms)
        }
        fn pending_range(
            &self,
            after: u64,
            before: u64,
            limit: usize,
            priority_only: bool,
        ) -> Result<Vec<Item>, OutboxError> {
            self.inner
                .pending_range(after, before, limit, priority_only)
        }
        fn newest(&self, limit: usize, priority_only: bool) -> Result<Vec<Item>, OutboxError> {
            self.inner.newest(limit, priority_only)
        }
        fn pending_class(
            &self,
            class: crate::outbox::Class,
            after: u64,
            before: u64,
            limit: usize,
        ) -> Result<Vec<Item>, OutboxError> {
            self.inner.pending_class(class, after, before, limit)
        }
        fn set_open_alarms(&mut self, ids: std::collections::BTreeSet<String>) {
            self.inner.set_open_alarms(ids);
        }
        fn ack(&mut self, ranges: &[(u64, u64)]) -> Result<u64, OutboxError> {
            self.inner.ack(ranges)
        }
        fn renumber(&mut self, from: u64, to: u64) -> Result<u64, OutboxError> {
            self.inner.renumber(from, to)
        }
        fn stats(&self) -> crate::outbox::OutboxStats {
            self.inner.stats()
        }
        fn flush(&mut self) -> Result<(), OutboxError> {
            self.inner.flush()
        }
        fn put_state(&mut self, key: &str, value: &[u8]) -> Result<(), OutboxError> {
            self.inner.put_state(key, value)
        }
        fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError> {
            self.inner.get_state(key)
        }
        fn remove_state(&mut self, key: &str) -> Result<(), OutboxError> {
            self.inner.remove_state(key)
        }
    }

    /// Readings the outbox refuses are not lost silently: counted, and reported by one `gap`
    /// event (how many, from when to when) ahead of the first append that works again.
    #[tokio::test(start_paused = true)]
    async fn refused_items_are_reported_by_a_gap_event_when_the_outbox_takes_items_again() {
        let inner = MemOutbox::new("s", OutboxConfig::default()).expect("mem outbox");
        let outbox = Arc::new(Mutex::new(Refusing {
            inner,
            refuse: true,
        }));
        let clock = Clock::following_tokio(T0);
        let sink = Sink::new(
            outbox.clone(),
            PathBuf::from("/nonexistent/outbox"),
            [("d1".to_string(), RulesConfig::default())],
            Arc::new(Notify::new()),
            Arc::new(AtomicU64::new(0)),
            clock.clone(),
        );
        let (tx, rx) = mpsc::channel(8);
        let driven = async {
            for s in 0..3 {
                tx.send(poll(T0 + s * 1000)).await.expect("sink runs");
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            outbox.lock().expect("outbox").refuse = false;
            tx.send(poll(T0 + 3000)).await.expect("sink runs");
            // The sink takes what is queued before it sees the end of the channel.
            drop(tx);
        };
        tokio::join!(sink.run(rx), driven);

        let items = outbox
            .lock()
            .expect("outbox")
            .pending(0, 10_000, false)
            .expect("read");
        let Some(Body::Event(gap)) = items.first().map(|i| &i.body) else {
            panic!("a gap event first: {items:?}");
        };
        assert_eq!(gap.kind, EventKind::Gap, "{gap:?}");
        assert_eq!(gap.dropped, Some(6), "three polls of two readings: {gap:?}");
        assert_eq!((gap.from_ms, gap.to_ms), (Some(T0), Some(T0 + 2000)));
        assert_eq!(
            items.len(),
            1 + 2,
            "the gap event, then the poll that was taken"
        );
    }

    /// The alarm rules judge every poll whatever goes up: the simulator's scenarios
    /// (exceedance, purifier idle, purifier dirty, stuck sensor, and a device that falls
    /// silent) give the same alarm transitions, to the millisecond, through a sink sending
    /// everything `raw` and one on the default (60-s periods with raw windows), while the
    /// default sends a small fraction of the items.
    #[test]
    fn the_report_strategy_never_changes_an_alarm() {
        use fumegrid_sim::scenario::Scenario;

        use crate::report::ReportConfig;
        use crate::rules::scenario_tests::{readings, short_config};

        /// Alarm transitions and item counts of one run.
        fn play(
            s: Scenario,
            secs: i64,
            silent: Option<std::ops::Range<i64>>,
            report: ReportConfig,
        ) -> (Vec<String>, usize, usize) {
            let outbox = Arc::new(Mutex::new(
                MemOutbox::new("s", OutboxConfig::default()).expect("mem outbox"),
            ));
            let clock = Clock::fixed(T0);
            let mut sink = Sink::new(
                outbox.clone(),
                PathBuf::from("/nonexistent/outbox"),
                [("d1".to_string(), short_config())],
                Arc::new(Notify::new()),
                Arc::new(AtomicU64::new(0)),
                clock.clone(),
            )
            .with_report([("d1".to_string(), report, 1000)]);
            let (mut alarms, mut n, mut periods) = (Vec::new(), 0, 0);
            for i in 0..secs {
                let polls = if silent.as_ref().is_some_and(|r| r.contains(&i)) {
                    vec![]
                } else {
                    vec![readings(s, i as f64, clock.now_ms())]
                };
                sink.round(polls, true);
                clock.advance(Duration::from_secs(1));
                // Taken out as the uplink would (the in-memory outbox sums its bytes per append).
                let mut o = outbox.lock().expect("outbox");
                let items = o.pending(0, 100_000, false).expect("read");
                if let (Some(first), Some(last)) = (items.first(), items.last()) {
                    o.ack(&[(first.seq, last.seq)]).expect("ack");
                }
                n += items.len();
                for item in items {
                    match item.body {
                        Body::Alarm(a) => {
                            alarms.push(format!("{} {:?} {}", a.id, a.phase, a.ts_ms - T0));
                        }
                        Body::Period(_) => periods += 1,
                        _ => {}
                    }
                }
            }
            (alarms, n, periods)
        }

        for (s, secs, silent, want) in [
            (Scenario::Exceedance, 2400, None, "exceedance"),
            (Scenario::PurifierOff, 600, None, "purifier_idle"),
            (Scenario::Degradation, 2400, None, "purifier_dirty"),
            (Scenario::Stuck, 600, None, "sensor_fault"),
            (Scenario::Normal, 600, Some(200..260), "device_offline"),
            (Scenario::Normal, 600, None, ""),
        ] {
            let (raw, raw_items, raw_periods) = play(s, secs, silent.clone(), ReportConfig::raw());
            let (def, def_items, def_periods) = play(s, secs, silent, ReportConfig::default());
            match want {
                "" => {
                    assert!(raw.is_empty(), "{s:?}: {raw:#?}");
                    // No alarm, no raw window: one period a minute against 12 readings a second.
                    assert!(
                        def_items * 100 < raw_items,
                        "{s:?}: {def_items} items vs {raw_items}"
                    );
                }
                kind => assert!(raw.iter().any(|a| a.contains(kind)), "{s:?}: {raw:#?}"),
            }
            assert_eq!(raw, def, "{s:?}: the same alarms under raw and the default");
            assert_eq!(raw_periods, 0);
            assert!(
                def_periods >= (secs as usize / 60) - 2,
                "{s:?}: {def_periods} periods"
            );
        }
    }
}
