//! The evidence pipeline's decisions, pure: which camera takes a picture when, what waits
//! for a busy camera, what a failure becomes. Functions of `(state, input, now)`; the shell in
//! [`super`] carries them out.
//!
//! - Alarm raised on a bound device: every camera bound to it, at once.
//! - Alarm updated: at most once per camera every `update_every` (counted from the camera's
//!   last alarm picture, raised or updated).
//! - Schedule: every `schedule_every` per camera, only while at least one bound device is
//!   within its opening hours (a device without opening hours is always open); off unless
//!   configured. The first one comes one interval after start, so restarts do not burst.
//! - Request: the cameras a sealed `cmd` names (a camera, the cameras of a device, or all).
//! - Suppressed alarms (outside opening hours, maintenance) take no picture: they open no case.
//!
//! One capture at a time per camera: a job for a busy camera waits, at most [`WAITING`] per
//! camera, the most urgent first (raised > request > updated > schedule, then oldest). A job
//! equal to one already waiting (same trigger, episode and request) is merged into it; when
//! the queue is full the least urgent job is dropped and counted.
//! Each camera has a circuit breaker ([`Breaker`], the one the Modbus slaves use): after
//! [`BREAKER_FAILURES`] failed captures in a row it refuses jobs until a probe every
//! [`BREAKER_PROBE`]. A failure becomes a `camera_failed` event unless the camera's last event
//! had the same reason less than [`FAILURE_EVENT_EVERY`] ago (those are counted and the next
//! event carries the count); a failure of an alarm-raised picture is always reported.

use std::collections::BTreeMap;
use std::time::Duration;

use fumegrid_common::wire::{Alarm, AlarmPhase, Trigger};
use tokio::time::Instant;

use crate::source::camera::CameraError;
use crate::source::modbus::breaker::Breaker;

/// Failed captures in a row that open a camera's breaker.
pub const BREAKER_FAILURES: u32 = 3;
/// While a camera's breaker is open, one capture is tried this often.
pub const BREAKER_PROBE: Duration = Duration::from_secs(60);
/// Jobs waiting for a busy camera, at most.
pub const WAITING: usize = 4;
/// At most one `camera_failed` event per camera and reason this often.
pub const FAILURE_EVENT_EVERY: Duration = Duration::from_secs(600);

/// What the plan knows of one camera from the config.
#[derive(Debug, Clone)]
pub struct CameraRules {
    pub id: String,
    pub devices: Vec<String>,
    pub update_every: Duration,
    pub schedule_every: Option<Duration>,
    /// Per bound device: its opening hours (`(start, end)` minutes of the local day; empty =
    /// always open) and its UTC offset in minutes.
    pub hours: Vec<(Vec<(u16, u16)>, i32)>,
}

/// One picture to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Index into the cameras.
    pub camera: usize,
    pub trigger: Trigger,
    pub alarm: Option<String>,
    pub request: Option<String>,
}

fn urgency(t: Trigger) -> u8 {
    match t {
        Trigger::AlarmRaised => 3,
        Trigger::Request => 2,
        Trigger::AlarmUpdated => 1,
        // Never planned here: drone photos are fetched by the drone source.
        Trigger::Schedule | Trigger::Drone => 0,
    }
}

/// What to do with a submitted job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submit {
    /// Capture now (the camera is marked busy until [`Plan::finish`]).
    Start(Job),
    /// The camera is busy: the job waits (or was merged with a waiting one).
    Queued,
    /// The camera is busy and its queue full: this job (the least urgent) is dropped.
    Dropped(Job),
    /// The camera's breaker is open: the job fails at once with this error.
    Refused(Job, CameraError),
}

/// A failure as reported upstream, if it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Metric label of the reason.
    pub reason: &'static str,
    /// The `camera_failed` event's message, or `None` when rate-limited.
    pub message: Option<String>,
    /// The breaker opened with this failure.
    pub tripped: bool,
}

#[derive(Debug)]
struct Cam {
    rules: CameraRules,
    busy: bool,
    waiting: Vec<Job>,
    last_alarm_picture: Option<Instant>,
    next_schedule: Option<Instant>,
    breaker: Breaker,
    /// The last event's time and reason, and failures not reported since.
    last_event: Option<(Instant, &'static str)>,
    suppressed: u64,
}

/// The pipeline's state.
#[derive(Debug)]
pub struct Plan {
    cams: Vec<Cam>,
    /// Open alarm episodes: id → device.
    open: BTreeMap<String, String>,
}

/// Whether local minute-of-day `now_ms` falls in `hours` (empty = always).
fn open_at(hours: &[(u16, u16)], utc_offset_minutes: i32, now_ms: i64) -> bool {
    if hours.is_empty() {
        return true;
    }
    let local = (now_ms.div_euclid(60_000) + i64::from(utc_offset_minutes)).rem_euclid(1440) as u16;
    hours.iter().any(|&(start, end)| {
        if start < end {
            (start..end).contains(&local)
        } else {
            local >= start || local < end
        }
    })
}

impl Plan {
    pub fn new(cameras: Vec<CameraRules>) -> Plan {
        Plan {
            cams: cameras
                .into_iter()
                .map(|rules| Cam {
                    rules,
                    busy: false,
                    waiting: Vec::new(),
                    last_alarm_picture: None,
                    next_schedule: None,
                    breaker: Breaker::new(BREAKER_FAILURES, BREAKER_PROBE),
                    last_event: None,
                    suppressed: 0,
                })
                .collect(),
            open: BTreeMap::new(),
        }
    }

    pub fn camera(&self, i: usize) -> &CameraRules {
        &self.cams[i].rules
    }

    pub fn cameras(&self) -> usize {
        self.cams.len()
    }

    /// The open alarm episodes (for the outbox's evidence policy).
    pub fn open_alarms(&self) -> impl Iterator<Item = &String> {
        self.open.keys()
    }

    /// Episodes found open at start (from the rules' saved state): `(id, device)`.
    pub fn set_open(&mut self, open: impl IntoIterator<Item = (String, String)>) {
        self.open.extend(open);
    }

    /// An alarm transition, just appended to the outbox.
    pub fn on_alarm(&mut self, a: &Alarm, now: Instant) -> Vec<Job> {
        match a.phase {
            AlarmPhase::Cleared => {
                self.open.remove(&a.id);
                return Vec::new();
            }
            AlarmPhase::Raised | AlarmPhase::Updated => {
                self.open.insert(a.id.clone(), a.device.clone());
            }
        }
        if a.suppressed {
            return Vec::new();
        }
        let mut jobs = Vec::new();
        for (i, cam) in self.cams.iter_mut().enumerate() {
            if !cam.rules.devices.contains(&a.device) {
                continue;
            }
            let trigger = match a.phase {
                AlarmPhase::Raised => Trigger::AlarmRaised,
                _ => {
                    let due = cam
                        .last_alarm_picture
                        .is_none_or(|t| now.duration_since(t) >= cam.rules.update_every);
                    if !due {
                        continue;
                    }
                    Trigger::AlarmUpdated
                }
            };
            cam.last_alarm_picture = Some(now);
            jobs.push(Job {
                camera: i,
                trigger,
                alarm: Some(a.id.clone()),
                request: None,
            });
        }
        jobs
    }

    /// A snapshot command (already judged valid): the cameras it names, or why none.
    pub fn on_request(
        &mut self,
        request: &str,
        camera: Option<&str>,
        device: Option<&str>,
        alarm: Option<&str>,
    ) -> Result<Vec<Job>, String> {
        let jobs: Vec<Job> = self
            .cams
            .iter()
            .enumerate()
            .filter(|(_, c)| camera.is_none_or(|id| c.rules.id == id))
            .filter(|(_, c)| device.is_none_or(|d| c.rules.devices.iter().any(|x| x == d)))
            .map(|(i, _)| Job {
                camera: i,
                trigger: Trigger::Request,
                alarm: alarm.map(str::to_string),
                request: Some(request.to_string()),
            })
            .collect();
        if jobs.is_empty() {
            let clip = |s: &str| fumegrid_common::text::clip(s, 64).to_string();
            return Err(match (camera, device) {
                (Some(c), Some(d)) => format!(
                    "no camera {:?} watching device {:?} on this gateway",
                    clip(c),
                    clip(d)
                ),
                (Some(c), None) => format!("no camera {:?} on this gateway", clip(c)),
                (None, Some(d)) => format!("no camera watches device {:?}", clip(d)),
                (None, None) => "this gateway has no cameras".into(),
            });
        }
        Ok(jobs)
    }

    /// Schedule pictures due at `now` (wall time `now_ms` for the opening hours).
    pub fn due(&mut self, now: Instant, now_ms: i64) -> Vec<Job> {
        let mut jobs = Vec::new();
        for (i, cam) in self.cams.iter_mut().enumerate() {
            let Some(every) = cam.rules.schedule_every else {
                continue;
            };
            let next = *cam.next_schedule.get_or_insert(now + every);
            if now < next {
                continue;
            }
            cam.next_schedule = Some(now + every);
            let open = cam
                .rules
                .hours
                .iter()
                .any(|(h, off)| open_at(h, *off, now_ms));
            if open {
                jobs.push(Job {
                    camera: i,
                    trigger: Trigger::Schedule,
                    alarm: None,
                    request: None,
                });
            }
        }
        jobs
    }

    /// The earliest time a schedule is due, to sleep until.
    pub fn next_due(&self) -> Option<Instant> {
        self.cams.iter().filter_map(|c| c.next_schedule).min()
    }

    /// Start, queue or refuse a job.
    pub fn submit(&mut self, job: Job, now: Instant) -> Submit {
        let cam = &mut self.cams[job.camera];
        if cam.busy {
            if cam.waiting.contains(&job) {
                return Submit::Queued;
            }
            cam.waiting.push(job);
            if cam.waiting.len() > WAITING {
                // The least urgent, the newest among equals.
                let (i, _) = cam
                    .waiting
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, j)| (urgency(j.trigger), std::cmp::Reverse(*i)))
                    .unwrap_or((0, &cam.waiting[0]));
                return Submit::Dropped(cam.waiting.remove(i));
            }
            return Submit::Queued;
        }
        let at = cam.breaker.next_attempt(now);
        if at > now {
            let secs = at.duration_since(now).as_secs().max(1);
            return Submit::Refused(job, CameraError::BreakerOpen(secs));
        }
        cam.busy = true;
        Submit::Start(job)
    }

    /// A capture of camera `i` ended (`ok` or not): the breaker learns it, and the job that
    /// waited for the camera, if any, is submitted.
    pub fn finish(&mut self, i: usize, ok: bool, now: Instant) -> (bool, Option<Submit>) {
        let cam = &mut self.cams[i];
        cam.busy = false;
        let tripped = cam.breaker.record(ok, now);
        // The most urgent, the oldest among equals.
        let first = cam
            .waiting
            .iter()
            .enumerate()
            .max_by_key(|(i, j)| (urgency(j.trigger), std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        let job = first.map(|k| cam.waiting.remove(k));
        let next = job.map(|job| self.submit(job, now));
        (tripped, next)
    }

    pub fn breaker_open(&self, i: usize) -> bool {
        self.cams[i].breaker.is_open()
    }

    /// A failed job: the event to append, if any.
    pub fn failure(
        &mut self,
        job: &Job,
        err: &CameraError,
        tripped: bool,
        now: Instant,
    ) -> Failure {
        let cam = &mut self.cams[job.camera];
        let reason = err.kind();
        let quiet = job.trigger != Trigger::AlarmRaised
            && cam
                .last_event
                .is_some_and(|(t, r)| r == reason && now.duration_since(t) < FAILURE_EVENT_EVERY);
        if quiet {
            cam.suppressed += 1;
            return Failure {
                reason,
                message: None,
                tripped,
            };
        }
        // The capture code's error text can carry what a camera sent: bounded.
        let text = err.to_string();
        let mut message = format!(
            "camera {}: {} (trigger {}",
            cam.rules.id,
            fumegrid_common::text::clip(&text, 300),
            job.trigger.name()
        );
        if let Some(a) = &job.alarm {
            message += &format!(", alarm {a}");
        }
        if let Some(r) = &job.request {
            message += &format!(", request {}", fumegrid_common::text::clip(r, 64));
        }
        message += ")";
        if tripped {
            message += &format!(
                "; breaker open after {BREAKER_FAILURES} failures in a row, next try in {} s",
                BREAKER_PROBE.as_secs()
            );
        }
        if cam.suppressed > 0 {
            message += &format!(
                "; {} more failures since the last event of this camera",
                cam.suppressed
            );
        }
        cam.suppressed = 0;
        cam.last_event = Some((now, reason));
        Failure {
            reason,
            message: Some(message),
            tripped,
        }
    }
}

#[cfg(test)]
mod tests {
    use fumegrid_common::wire::AlarmKind;

    use super::*;

    fn rules(id: &str, devices: &[&str]) -> CameraRules {
        CameraRules {
            id: id.into(),
            devices: devices.iter().map(|d| d.to_string()).collect(),
            update_every: Duration::from_secs(600),
            schedule_every: None,
            hours: devices.iter().map(|_| (Vec::new(), 0)).collect(),
        }
    }

    fn alarm(device: &str, phase: AlarmPhase) -> Alarm {
        Alarm {
            id: format!("{device}:exceedance:1"),
            device: device.into(),
            kind: AlarmKind::Exceedance,
            metric: None,
            phase,
            started_ms: 1,
            ts_ms: 1,
            cleared_ms: None,
            value: None,
            peak: None,
            peak_ms: None,
            limit: None,
            suppressed: false,
            message: String::new(),
        }
    }

    fn t0() -> Instant {
        fumegrid_common::clock::Clock::fixed(0).tokio_instant()
    }

    #[test]
    fn a_raise_asks_every_bound_camera_at_once_and_updates_are_rate_limited() {
        let mut p = Plan::new(vec![
            rules("cam-a", &["d1"]),
            rules("cam-b", &["d1", "d2"]),
            rules("cam-c", &["d2"]),
        ]);
        let t = t0();
        let jobs = p.on_alarm(&alarm("d1", AlarmPhase::Raised), t);
        assert_eq!(
            jobs.iter()
                .map(|j| (j.camera, j.trigger))
                .collect::<Vec<_>>(),
            vec![(0, Trigger::AlarmRaised), (1, Trigger::AlarmRaised)]
        );
        assert_eq!(jobs[0].alarm.as_deref(), Some("d1:exceedance:1"));
        assert_eq!(p.open_alarms().count(), 1);
        let up = alarm("d1", AlarmPhase::Updated);
        assert!(p.on_alarm(&up, t + Duration::from_secs(599)).is_empty());
        let jobs = p.on_alarm(&up, t + Duration::from_secs(600));
        assert_eq!(jobs.len(), 2);
        assert!(jobs.iter().all(|j| j.trigger == Trigger::AlarmUpdated));
        assert!(p.on_alarm(&up, t + Duration::from_secs(900)).is_empty());
        // Cleared: no picture, the episode is no longer open.
        assert!(
            p.on_alarm(
                &alarm("d1", AlarmPhase::Cleared),
                t + Duration::from_secs(901)
            )
            .is_empty()
        );
        assert_eq!(p.open_alarms().count(), 0);
        // Episodes open at start (from the rules' saved state) count as open.
        p.set_open([("d2:purifier_idle:5".to_string(), "d2".to_string())]);
        assert_eq!(
            p.open_alarms().collect::<Vec<_>>(),
            vec!["d2:purifier_idle:5"]
        );
        // Suppressed: recorded as open, no picture.
        let mut s = alarm("d2", AlarmPhase::Raised);
        s.suppressed = true;
        assert!(p.on_alarm(&s, t).is_empty());
    }

    #[test]
    fn schedules_fire_every_interval_only_within_opening_hours() {
        let mut r = rules("cam-a", &["d1"]);
        r.schedule_every = Some(Duration::from_secs(3600));
        // Open 10:00-14:00 at UTC+8.
        r.hours = vec![(vec![(600, 840)], 480)];
        let mut p = Plan::new(vec![r, rules("cam-b", &["d1"])]);
        let t = t0();
        // 2023-11-14 02:00 UTC = 10:00 local.
        let ten_local = 1_699_927_200_000i64;
        assert!(
            p.due(t, ten_local).is_empty(),
            "first one after one interval"
        );
        assert_eq!(p.next_due(), Some(t + Duration::from_secs(3600)));
        let h = |n: u64| t + Duration::from_secs(3600 * n);
        let ms = |n: i64| ten_local + 3_600_000 * n;
        let fired: Vec<i64> = (1..=6)
            .filter(|&n| !p.due(h(n as u64), ms(n)).is_empty())
            .collect();
        // 11:00, 12:00, 13:00 local; 14:00 is closed.
        assert_eq!(fired, vec![1, 2, 3]);
    }

    #[test]
    fn one_capture_per_camera_the_most_urgent_waits_and_the_breaker_refuses() {
        let mut p = Plan::new(vec![rules("cam-a", &["d1"])]);
        let t = t0();
        let job = |trigger| Job {
            camera: 0,
            trigger,
            alarm: None,
            request: None,
        };
        assert!(matches!(
            p.submit(job(Trigger::Schedule), t),
            Submit::Start(_)
        ));
        assert_eq!(p.submit(job(Trigger::Schedule), t), Submit::Queued);
        assert_eq!(p.submit(job(Trigger::AlarmRaised), t), Submit::Queued);
        assert_eq!(p.submit(job(Trigger::AlarmUpdated), t), Submit::Queued);
        assert_eq!(
            p.submit(job(Trigger::Schedule), t),
            Submit::Queued,
            "merged with the waiting one"
        );
        // The most urgent first.
        let (tripped, next) = p.finish(0, false, t);
        assert!(!tripped);
        assert_eq!(next, Some(Submit::Start(job(Trigger::AlarmRaised))));
        let (_, next) = p.finish(0, false, t);
        assert_eq!(next, Some(Submit::Start(job(Trigger::AlarmUpdated))));
        let (tripped, next) = p.finish(0, false, t);
        assert!(tripped, "third failure in a row");
        assert!(p.breaker_open(0));
        assert!(
            matches!(&next, Some(Submit::Refused(j, CameraError::BreakerOpen(60))) if j.trigger == Trigger::Schedule),
            "the waiting schedule meets the open breaker: {next:?}"
        );
        match p.submit(job(Trigger::Request), t + Duration::from_secs(10)) {
            Submit::Refused(_, CameraError::BreakerOpen(s)) => assert_eq!(s, 50),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.submit(job(Trigger::Request), t + BREAKER_PROBE),
            Submit::Start(_)
        ));
        p.finish(0, true, t + BREAKER_PROBE);
        assert!(!p.breaker_open(0), "a good probe closes it");
    }

    #[test]
    fn a_full_queue_drops_its_least_urgent_job() {
        let mut p = Plan::new(vec![rules("cam-a", &["d1"])]);
        let t = t0();
        let job = |trigger, n: u32| Job {
            camera: 0,
            trigger,
            alarm: None,
            request: Some(format!("r{n}")),
        };
        assert!(matches!(
            p.submit(job(Trigger::Request, 0), t),
            Submit::Start(_)
        ));
        assert_eq!(p.submit(job(Trigger::Schedule, 1), t), Submit::Queued);
        for n in 2..=4 {
            assert_eq!(p.submit(job(Trigger::Request, n), t), Submit::Queued);
        }
        assert_eq!(
            p.submit(job(Trigger::Request, 5), t),
            Submit::Dropped(job(Trigger::Schedule, 1))
        );
        assert_eq!(
            p.submit(job(Trigger::Schedule, 6), t),
            Submit::Dropped(job(Trigger::Schedule, 6))
        );
        let order: Vec<u32> = (0..4)
            .filter_map(|_| match p.finish(0, true, t).1 {
                Some(Submit::Start(j)) => j.request.and_then(|r| r.strip_prefix('r')?.parse().ok()),
                _ => None,
            })
            .collect();
        assert_eq!(order, vec![2, 3, 4, 5], "requests oldest first");
    }

    #[test]
    fn failures_are_reported_once_per_reason_and_interval_with_the_count_between() {
        let mut p = Plan::new(vec![rules("cam-a", &["d1"])]);
        let t = t0();
        let job = |trigger| Job {
            camera: 0,
            trigger,
            alarm: Some("al-1".into()),
            request: None,
        };
        let down = CameraError::Unreachable("connection refused".into());
        let f = p.failure(&job(Trigger::Schedule), &down, false, t);
        let msg = f.message.expect("first is reported");
        assert!(
            msg.contains("camera cam-a: unreachable: connection refused"),
            "{msg}"
        );
        assert!(msg.contains("trigger schedule, alarm al-1"), "{msg}");
        for i in 1..=5 {
            let f = p.failure(
                &job(Trigger::Schedule),
                &down,
                false,
                t + Duration::from_secs(i),
            );
            assert_eq!((f.reason, f.message), ("unreachable", None));
        }
        // An alarm's picture failing is always said.
        let f = p.failure(
            &job(Trigger::AlarmRaised),
            &down,
            true,
            t + Duration::from_secs(9),
        );
        let msg = f.message.expect("alarm failures are reported");
        assert!(msg.contains("5 more failures"), "{msg}");
        assert!(msg.contains("breaker open"), "{msg}");
        // Another reason is reported at once.
        let f = p.failure(
            &job(Trigger::Schedule),
            &CameraError::Unauthorized,
            false,
            t + Duration::from_secs(10),
        );
        assert!(f.message.is_some());
        // The same reason again after the interval.
        let later = t + Duration::from_secs(10) + FAILURE_EVENT_EVERY;
        let f = p.failure(
            &job(Trigger::Schedule),
            &CameraError::Unauthorized,
            false,
            later,
        );
        assert!(f.message.is_some());
    }

    #[test]
    fn requests_pick_the_named_camera_the_cameras_of_a_device_or_all() {
        let mut p = Plan::new(vec![rules("cam-a", &["d1"]), rules("cam-b", &["d2"])]);
        let cams = |r: Result<Vec<Job>, String>| -> Vec<usize> {
            r.expect("jobs").iter().map(|j| j.camera).collect()
        };
        assert_eq!(cams(p.on_request("r1", Some("cam-b"), None, None)), vec![1]);
        assert_eq!(cams(p.on_request("r2", None, Some("d1"), None)), vec![0]);
        assert_eq!(cams(p.on_request("r3", None, None, Some("al"))), vec![0, 1]);
        let jobs = p.on_request("r4", None, None, Some("al")).expect("jobs");
        assert_eq!(jobs[0].request.as_deref(), Some("r4"));
        assert_eq!(jobs[0].alarm.as_deref(), Some("al"));
        let err = p
            .on_request("r5", Some("cam-x"), None, None)
            .expect_err("none");
        assert!(err.contains("no camera \"cam-x\""), "{err}");
        let err = p
            .on_request("r6", Some("cam-a"), Some("d2"), None)
            .expect_err("none");
        assert!(err.contains("watching device"), "{err}");
    }
}
