//! The evidence pipeline (DESIGN.md §5, §12): decides when the cameras take a picture, takes
//! it through the [`Camera`] seam, and appends it to the outbox as picture parts.
//!
//! Inputs, over one bounded channel ([`Handle`]): alarm transitions from the rules sink
//! (*after* the sink appended them, so an alarm never waits for its picture; a full channel is
//! counted and never blocks the sink), snapshot commands the uplink accepted, and the
//! episodes open at start. The latest value of every bound device's metrics is shared with
//! the sink through [`Latest`] (a map, not the channel: a poll must not queue behind captures).
//!
//! What to do is decided by [`plan::Plan`] (pure: triggers, one capture at a time per camera,
//! breaker, failure events); this module is its thin I/O shell: it runs captures concurrently
//! (at most [`MAX_CONCURRENT`] at once, each bounded by its camera's `timeout_ms` plus
//! [`TIMEOUT_MARGIN`] in case the capture code does not bound itself), and appends results.
//!
//! A picture becomes `ceil(size / EVIDENCE_PART_BYTES)` [`Evidence`](fumegrid_common::wire::Evidence) items ([`Capture::parts`]), each
//! with the whole [`EvidenceMeta`], appended in one outbox call (one fsync, one seq run) after
//! the outbox is told which alarm episodes are open (its evidence budget drops pictures of
//! closed ones first). A failure becomes a `camera_failed` event when the plan says so; every
//! failure is counted (`fumegrid_camera_failures_total`). An alarm raise dropped because its
//! camera's queue was full (of raises) is a `camera_failed` event too: every raise gets its
//! picture or an event saying why not.

pub mod plan;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{
    Action, Alarm, Body, Command, EVIDENCE_MAX_BYTES, Event, EventKind, EvidenceMeta, Trigger,
};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::outbox::Outbox;
use crate::source::camera::{Camera, CameraError, Capture};
use crate::telemetry as m;
use plan::{Job, Plan, Submit};

/// Captures running at once over all cameras: an edge box has little CPU and one uplink.
pub const MAX_CONCURRENT: usize = 2;
/// Added to a camera's `timeout_ms` as the pipeline's own bound on one capture.
pub const TIMEOUT_MARGIN: Duration = Duration::from_secs(5);
/// Room in the input channel; a burst of alarms beyond it loses their pictures (counted).
pub const CHANNEL: usize = 64;

/// What the pipeline is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// An alarm transition already in the outbox.
    Alarm(Alarm),
    /// A snapshot command the uplink accepted (sealed, fresh, not replayed).
    Request(Command),
    /// Episodes open at start: `(id, device)`.
    Open(Vec<(String, String)>),
}

/// The last value of each device's metrics, for the pictures' caption.
#[derive(Debug, Default)]
pub struct Latest(HashMap<String, BTreeMap<Metric, f64>>);

impl Latest {
    fn of(&self, device: &str) -> impl Iterator<Item = (Metric, f64)> + '_ {
        self.0
            .get(device)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, v)| (*k, *v)))
    }
}

/// The senders' side: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Input>,
    latest: Arc<Mutex<Latest>>,
}

/// A handle and the pipeline's receiving end.
pub fn channel() -> (Handle, mpsc::Receiver<Input>, Arc<Mutex<Latest>>) {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let latest = Arc::new(Mutex::new(Latest::default()));
    (
        Handle {
            tx,
            latest: latest.clone(),
        },
        rx,
        latest,
    )
}

impl Handle {
    /// Hands an alarm transition over (call after it was appended). A full queue is counted
    /// and logged; the alarm itself is already in the outbox.
    pub fn alarm(&self, a: &Alarm) {
        if self.tx.try_send(Input::Alarm(a.clone())).is_err() {
            metrics::counter!(m::EVIDENCE_TRIGGERS_DROPPED, "source" => "alarm").increment(1);
            warn!(
                alarm = a.id,
                "evidence pipeline busy: no picture for this alarm transition"
            );
        }
    }

    /// Hands a snapshot command over; false when the queue is full (counted).
    pub fn request(&self, c: Command) -> bool {
        let ok = self.tx.try_send(Input::Request(c)).is_ok();
        if !ok {
            metrics::counter!(m::EVIDENCE_TRIGGERS_DROPPED, "source" => "request").increment(1);
        }
        ok
    }

    /// The episodes open at start.
    pub fn open(&self, open: Vec<(String, String)>) {
        if !open.is_empty() && self.tx.try_send(Input::Open(open)).is_err() {
            warn!("evidence pipeline busy at start: open episodes not known to it");
        }
    }

    /// The newest readings of a poll (values of bad quality are skipped).
    pub fn readings(&self, readings: &[Reading]) {
        let Ok(mut l) = self.latest.lock() else {
            return;
        };
        for r in readings {
            if let (Some(v), Quality::Ok | Quality::Stale) = (r.value, r.quality) {
                l.0.entry(r.device.clone()).or_default().insert(r.metric, v);
            }
        }
    }
}

/// One camera as the pipeline uses it.
#[derive(Debug, Clone)]
pub struct Cam {
    pub rules: plan::CameraRules,
    /// Largest picture accepted (`[[cameras]] max_bytes`).
    pub max_bytes: u64,
    /// `[[cameras]] timeout_ms`.
    pub timeout: Duration,
    pub camera: Arc<dyn Camera>,
}

/// The pipeline; see the module doc.
#[derive(Debug)]
pub struct Pipeline<O> {
    outbox: Arc<Mutex<O>>,
    appended: Arc<Notify>,
    clock: Clock,
    site: String,
    cams: Vec<Cam>,
    plan: Plan,
    latest: Arc<Mutex<Latest>>,
    sem: Arc<Semaphore>,
    running: JoinSet<Result<Capture, CameraError>>,
    jobs: HashMap<tokio::task::Id, Job>,
}

impl<O: Outbox> Pipeline<O> {
    pub fn new(
        outbox: Arc<Mutex<O>>,
        appended: Arc<Notify>,
        clock: Clock,
        site: String,
        cams: Vec<Cam>,
        latest: Arc<Mutex<Latest>>,
    ) -> Pipeline<O> {
        let plan = Plan::new(cams.iter().map(|c| c.rules.clone()).collect());
        for c in &cams {
            metrics::gauge!(m::CAMERA_BREAKER_OPEN, "camera" => c.rules.id.clone()).set(0.0);
        }
        Pipeline {
            outbox,
            appended,
            clock,
            site,
            cams,
            plan,
            latest,
            sem: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            running: JoinSet::new(),
            jobs: HashMap::new(),
        }
    }

    /// Runs until `cancel` or until every [`Handle`] is gone. Captures still running then
    /// are abandoned (logged with their count).
    pub async fn run(mut self, mut rx: mpsc::Receiver<Input>, cancel: CancellationToken) {
        // Arms the schedules.
        let jobs = self
            .plan
            .due(self.clock.tokio_instant(), self.clock.now_ms());
        self.submit_all(jobs);
        loop {
            let next_due = self.plan.next_due();
            tokio::select! {
                _ = cancel.cancelled() => break,
                input = rx.recv() => match input {
                    None => break,
                    Some(i) => self.on_input(i),
                },
                Some(done) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    self.on_done(done);
                }
                _ = sleep_until_opt(next_due), if next_due.is_some() => {
                    let jobs = self.plan.due(self.clock.tokio_instant(), self.clock.now_ms());
                    self.submit_all(jobs);
                }
            }
        }
        if !self.running.is_empty() {
            warn!(
                captures = self.running.len(),
                "stopping: captures in flight abandoned"
            );
        }
    }

    fn on_input(&mut self, input: Input) {
        let now = self.clock.tokio_instant();
        match input {
            Input::Open(open) => self.plan.set_open(open),
            Input::Alarm(a) => {
                let jobs = self.plan.on_alarm(&a, now);
                self.submit_all(jobs);
            }
            Input::Request(c) => {
                let Action::Snapshot {
                    camera,
                    device,
                    alarm,
                } = &c.action;
                match self.plan.on_request(
                    &c.id,
                    camera.as_deref(),
                    device.as_deref(),
                    alarm.as_deref(),
                ) {
                    Ok(jobs) => self.submit_all(jobs),
                    Err(why) => {
                        metrics::counter!(m::UPLINK_COMMANDS, "outcome" => "no_camera")
                            .increment(1);
                        let id = fumegrid_common::text::clip(&c.id, 64);
                        warn!(command = id, %why, "snapshot command refused");
                        self.append_event(
                            EventKind::CommandRefused,
                            format!("command {id:?} refused: {why}"),
                        );
                    }
                }
            }
        }
    }

    fn submit_all(&mut self, jobs: Vec<Job>) {
        for job in jobs {
            let s = self.plan.submit(job, self.clock.tokio_instant());
            self.carry_out(s);
        }
    }

    fn carry_out(&mut self, s: Submit) {
        match s {
            Submit::Start(job) => self.spawn(job),
            Submit::Queued => {}
            Submit::Dropped(job) => {
                let camera = self.cams[job.camera].rules.id.clone();
                metrics::counter!(m::EVIDENCE_TRIGGERS_DROPPED, "source" => "camera_busy")
                    .increment(1);
                warn!(camera, trigger = job.trigger.name(), alarm = ?job.alarm, request = ?job.request,
                    "camera busy with a full queue: picture not taken");
                // A raise without its picture is always said upstream (the queue only drops a
                // raise when every waiting job is one).
                if job.trigger == Trigger::AlarmRaised {
                    let alarm = job.alarm.as_deref().unwrap_or("-");
                    self.append_event(
                        EventKind::CameraFailed,
                        format!(
                            "camera {camera}: busy, {} pictures already waiting: no picture \
                             (trigger alarm_raised, alarm {})",
                            plan::WAITING,
                            fumegrid_common::text::clip(alarm, 200)
                        ),
                    );
                }
            }
            Submit::Refused(job, err) => self.failed(&job, &err, false),
        }
    }

    fn spawn(&mut self, job: Job) {
        let cam = &self.cams[job.camera];
        let camera = cam.camera.clone();
        let bound = cam.timeout + TIMEOUT_MARGIN;
        let sem = self.sem.clone();
        let handle = self.running.spawn(async move {
            let _permit = sem.acquire_owned().await;
            match tokio::time::timeout(bound, camera.capture()).await {
                Ok(r) => r,
                Err(_) => Err(CameraError::Timeout(bound.as_millis() as u64)),
            }
        });
        self.jobs.insert(handle.id(), job);
    }

    fn on_done(
        &mut self,
        done: Result<(tokio::task::Id, Result<Capture, CameraError>), tokio::task::JoinError>,
    ) {
        let (id, result) = match done {
            Ok((id, r)) => (id, r),
            Err(e) => (
                e.id(),
                Err(CameraError::Garbage(format!("capture task failed: {e}"))),
            ),
        };
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        let result = result.and_then(|cap| self.check(&job, cap));
        let now = self.clock.tokio_instant();
        let (tripped, next) = self.plan.finish(job.camera, result.is_ok(), now);
        let cam_id = self.cams[job.camera].rules.id.clone();
        metrics::gauge!(m::CAMERA_BREAKER_OPEN, "camera" => cam_id).set(
            if self.plan.breaker_open(job.camera) {
                1.0
            } else {
                0.0
            },
        );
        match result {
            Ok(cap) => self.store(&job, &cap),
            Err(e) => self.failed(&job, &e, tripped),
        }
        if let Some(s) = next {
            self.carry_out(s);
        }
    }

    /// The capture code bounds size and content; this is the pipeline's own check of what
    /// goes into the outbox.
    fn check(&self, job: &Job, cap: Capture) -> Result<Capture, CameraError> {
        let max = self.cams[job.camera].max_bytes.min(EVIDENCE_MAX_BYTES);
        if cap.bytes.is_empty() {
            return Err(CameraError::Garbage("an empty picture".into()));
        }
        if cap.bytes.len() as u64 > max {
            return Err(CameraError::TooLarge { max });
        }
        Ok(cap)
    }

    fn store(&mut self, job: &Job, cap: &Capture) {
        let rules = self.plan.camera(job.camera).clone();
        let readings = match self.latest.lock() {
            Ok(l) => rules
                .devices
                .iter()
                .flat_map(|d| l.of(d).map(move |(m, v)| (d.clone(), m, v)))
                .collect(),
            Err(_) => Vec::new(),
        };
        let meta = EvidenceMeta {
            camera: rules.id.clone(),
            devices: rules.devices.clone(),
            captured_ms: cap.captured_ms,
            trigger: job.trigger,
            alarm: job.alarm.clone(),
            request: job.request.clone(),
            media: cap.media,
            size: cap.bytes.len() as u64,
            width: cap.width,
            height: cap.height,
            site: self.site.clone(),
            readings,
        };
        let bodies = cap.parts(&meta);
        let n = bodies.len();
        let open = self.plan.open_alarms().cloned().collect();
        let now = self.clock.now_ms();
        let r = match self.outbox.lock() {
            Ok(mut o) => {
                o.set_open_alarms(open);
                o.append(bodies, now).map_err(|e| e.to_string())
            }
            Err(_) => Err("outbox lock poisoned".into()),
        };
        match r {
            Ok(_) => {
                metrics::counter!(m::EVIDENCE_PICTURES, "camera" => rules.id.clone(),
                    "trigger" => job.trigger.name())
                .increment(1);
                metrics::counter!(m::EVIDENCE_BYTES, "camera" => rules.id.clone())
                    .increment(cap.bytes.len() as u64);
                info!(camera = rules.id, trigger = job.trigger.name(), alarm = ?job.alarm,
                    bytes = cap.bytes.len(), parts = n, sha256 = hex::encode(cap.sha256),
                    "picture taken");
                self.appended.notify_one();
            }
            Err(e) => {
                metrics::counter!(m::EVIDENCE_LOST, "camera" => rules.id.clone()).increment(1);
                error!(camera = rules.id, error = %e, "picture lost: the outbox refused it");
            }
        }
    }

    fn failed(&mut self, job: &Job, err: &CameraError, tripped: bool) {
        let now = self.clock.tokio_instant();
        let f = self.plan.failure(job, err, tripped, now);
        let camera = self.cams[job.camera].rules.id.clone();
        metrics::counter!(m::CAMERA_FAILURES, "camera" => camera.clone(), "reason" => f.reason)
            .increment(1);
        match f.message {
            Some(message) => {
                warn!(camera, trigger = job.trigger.name(), error = %err, "camera gave no picture");
                self.append_event(EventKind::CameraFailed, message);
            }
            None => {
                metrics::counter!(m::CAMERA_EVENTS_SUPPRESSED, "camera" => camera).increment(1);
            }
        }
    }

    fn append_event(&mut self, kind: EventKind, message: String) {
        let now = self.clock.now_ms();
        let ev = Body::Event(Event {
            ts_ms: now,
            kind,
            message,
            dropped: None,
            from_ms: None,
            to_ms: None,
        });
        let r = match self.outbox.lock() {
            Ok(mut o) => o.append(vec![ev], now).map_err(|e| e.to_string()),
            Err(_) => Err("outbox lock poisoned".into()),
        };
        match r {
            Ok(_) => self.appended.notify_one(),
            Err(e) => {
                metrics::counter!(m::OUTBOX_REFUSED).increment(1);
                error!(error = %e, "cannot append an evidence event to the outbox");
            }
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
