//! The case service, the one caller of the pure engine ([`crate::cases`]) and owner of its
//! effects: transitions and reports from the API and Open311, the timer loop (overdue,
//! escalation), automatic verification by normal readings, and — inside ingest's transaction —
//! alarms ([`alarms::AlarmCases`], the [`crate::store::AlarmHook`] ingest's commit calls).
//! It also keeps the case statistics index ([`stats_index`]), fed with what it saves.
//!
//! It holds the store behind [`CaseStore`] (with SQLite its own connection, serialised with
//! ingest's). Every change is load → pure decision → save with the engine's events and effects
//! in one transaction; a concurrent change is detected by the event seq
//! ([`crate::store::StoreError::Stale`]) and reported, never merged. Notifications are only
//! queued here; the notifier is woken. Time comes from the [`Clock`] it is handed.
//!
//! Citizens' contact details are filed with their case but stored apart
//! ([`crate::store::cases_sql::Contact`]); the timer pass also erases those of cases closed
//! longer ago than the retention period (`[cases] contact_retention_days`). What a reporter (a
//! citizen app) writes into a transition's note (a comment, a rating) joins the timeline with
//! its personal data redacted ([`crate::cases::privacy::redact`]), as its request's description.

pub mod aerial;
pub mod alarms;
pub mod stats_index;

use std::sync::Arc;
use std::time::Duration;

use fumegrid_common::clock::Clock;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cases::alarm::on_readings_normal;
use crate::cases::model::{Intake, Origin, Position, open_at};
use crate::cases::privacy::redact;
use crate::cases::{
    Actor, Case, CaseError, Catalogue, Command, Effect, Event, Role, State, apply, timers,
};
use crate::store::cases_sql::Contact;
use crate::store::{CaseStore, StoreError};
use stats_index::StatsIndex;

/// Default retention of citizens' contact details after their case closed: 180 days.
pub const DEFAULT_CONTACT_RETENTION_MS: i64 = 180 * 86_400_000;

/// A device whose last reading is older than this is not "reading normal": silence is not
/// normality, so it cannot verify a case.
pub const FRESH_READING_MS: i64 = 10 * 60_000;

#[derive(Debug, thiserror::Error)]
pub enum CaseworkError {
    #[error("no case `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Case(#[from] CaseError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one timer pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    pub open_cases: usize,
    /// Timer events appended (overdue flags, escalations).
    pub timer_events: usize,
    /// Cases verified by normal readings.
    pub verified: usize,
    /// Cases that could not be saved (changed meanwhile; retried next pass).
    pub conflicts: usize,
    /// Contact details erased because their case closed longer ago than the retention.
    pub contacts_erased: usize,
}

pub use crate::store::SharedCaseStore;

pub struct Casework {
    writer: SharedCaseStore,
    catalogue: Arc<Catalogue>,
    clock: Clock,
    /// When set, the case events casework saves are appended to it.
    index: Option<Arc<StatsIndex>>,
    /// How long contact details are kept after their case closed, ms.
    contact_retention_ms: i64,
    /// Woken when notifications were queued.
    pub notify: Arc<Notify>,
}

impl std::fmt::Debug for Casework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Casework")
    }
}

impl Casework {
    pub fn new(writer: SharedCaseStore, catalogue: Arc<Catalogue>, clock: Clock) -> Casework {
        Casework {
            writer,
            catalogue,
            clock,
            index: None,
            contact_retention_ms: DEFAULT_CONTACT_RETENTION_MS,
            notify: Arc::new(Notify::new()),
        }
    }

    /// Keeps contact details `retention` after their case closed (default 180 days).
    pub fn with_contact_retention(mut self, retention: Duration) -> Casework {
        self.contact_retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Appends the case events casework saves to `index` (the API's statistics), in commit
    /// order.
    pub fn with_stats_index(mut self, index: Arc<StatsIndex>) -> Casework {
        self.index = Some(index);
        self
    }

    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    pub fn writer(&self) -> &SharedCaseStore {
        &self.writer
    }

    pub fn stats_index(&self) -> Option<&Arc<StatsIndex>> {
        self.index.as_ref()
    }

    /// The clock cases are filed and moved by (a fixed one in tests).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, dyn CaseStore + 'static> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves a case change (and the filer's contact details) in one transaction, appending its
    /// events to the statistics index if the transaction committed.
    fn save(
        &self,
        w: &mut dyn CaseStore,
        case: &Case,
        events: &[Event],
        effects: &[Effect],
        contact: Option<&Contact>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut save = || {
            w.case_tx(&mut |tx| {
                tx.save_case(case, events, effects, now)?;
                if let Some(c) = contact {
                    tx.save_contact(&case.id, c, now)?;
                }
                Ok(())
            })
        };
        match &self.index {
            Some(i) => i.commit(events, save),
            None => save(),
        }
    }

    /// Applies `cmd` by `actor` to case `id` and saves it. Blocking (call from
    /// `spawn_blocking`).
    pub fn transition(
        &self,
        id: &str,
        mut cmd: Command,
        actor: &Actor,
    ) -> Result<(Case, Vec<Event>), CaseworkError> {
        if actor.role == Role::Reporter {
            cmd.note = redact(&cmd.note).text;
        }
        let now = self.clock.now_ms();
        let mut w = self.lock();
        let case = w
            .load_case(id)?
            .ok_or_else(|| CaseworkError::NotFound(id.to_string()))?;
        let (next, events, effects) = apply(&case, cmd, actor, now, &self.catalogue)?;
        self.save(&mut *w, &next, &events, &effects, None, now)?;
        drop(w);
        if !effects.is_empty() {
            self.notify.notify_one();
        }
        tracing::info!(case = %next.id, state = %next.state, actor = %actor.id, "case transition");
        Ok((next, events))
    }

    /// Files a new case (operator, reporter) in state `reported`. Blocking.
    pub fn file(
        &self,
        intake: Intake,
        actor: &Actor,
        note: &str,
    ) -> Result<(Case, Vec<Event>), CaseworkError> {
        self.file_with_contact(intake, actor, note, &Contact::default())
    }

    /// [`Self::file`] with the filer's contact details, stored apart from the events (none
    /// stored when empty). Blocking.
    pub fn file_with_contact(
        &self,
        intake: Intake,
        actor: &Actor,
        note: &str,
        contact: &Contact,
    ) -> Result<(Case, Vec<Event>), CaseworkError> {
        self.file_at(intake, None, actor, note, contact)
    }

    /// [`Self::file_with_contact`] with the case's own point (`Case::position`). Blocking.
    pub fn file_at(
        &self,
        intake: Intake,
        position: Option<Position>,
        actor: &Actor,
        note: &str,
        contact: &Contact,
    ) -> Result<(Case, Vec<Event>), CaseworkError> {
        let now = self.clock.now_ms();
        let mut w = self.lock();
        let mut id = String::new();
        w.case_tx(&mut |tx| {
            id = alarms::new_case_id(tx, &self.catalogue, now)?;
            Ok(())
        })?;
        let (case, events, effects) =
            open_at(&id, intake, position, actor, note, now, &self.catalogue)?;
        let contact = (!contact.is_empty()).then_some(contact);
        self.save(&mut *w, &case, &events, &effects, contact, now)?;
        metrics::counter!(crate::telemetry::CASES_OPENED, "source" => "report").increment(1);
        tracing::info!(case = %case.id, category = %case.category, actor = %actor.id, "case filed");
        Ok((case, events))
    }

    /// Erases the contact details of case `id` on an operator's request; whether there were
    /// any. Blocking.
    pub fn erase_contact(&self, id: &str, actor: &Actor) -> Result<bool, CaseworkError> {
        let mut w = self.lock();
        if w.load_case(id)?.is_none() {
            return Err(CaseworkError::NotFound(id.to_string()));
        }
        let erased = w.erase_contact(id)?;
        tracing::info!(case = %id, actor = %actor.id, erased, "contact details erased on request");
        Ok(erased)
    }

    /// One pass over the open cases at `now`: fires due timers, verifies handled alarm cases
    /// whose readings have been normal long enough; erases the contact details of cases closed
    /// longer ago than the retention. Blocking.
    pub fn tick(&self) -> Result<TickReport, StoreError> {
        let now = self.clock.now_ms();
        let mut w = self.lock();
        let contacts_erased =
            w.erase_contacts_closed_before(now.saturating_sub(self.contact_retention_ms))?;
        let open = w.open_cases()?;
        let mut rep = TickReport {
            open_cases: open.len(),
            contacts_erased,
            ..TickReport::default()
        };
        let mut queued = false;
        for case in open {
            let (mut c, mut events, mut effects) =
                match timers::run_due(&case, now, &self.catalogue) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(case = %case.id, error = %e, "timer refused");
                        continue;
                    }
                };
            rep.timer_events += events.len();
            if c.state == State::Handled
                && let Some(since) = normal_since(&mut *w, &c, now)?
            {
                match on_readings_normal(&c, since, now, &self.catalogue) {
                    Ok(Some((v, ev, ef))) => {
                        c = v;
                        events.extend(ev);
                        effects.extend(ef);
                        rep.verified += 1;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(case = %c.id, error = %e, "verification refused"),
                }
            }
            if events.is_empty() {
                continue;
            }
            match self.save(&mut *w, &c, &events, &effects, None, now) {
                Ok(()) => {
                    queued |= !effects.is_empty();
                    for e in &events {
                        tracing::info!(case = %c.id, event = ?e.kind, state = %c.state, "case timer");
                    }
                }
                Err(StoreError::Stale(id)) => {
                    rep.conflicts += 1;
                    tracing::debug!(case = %id, "case changed during the timer pass; next pass");
                }
                Err(e) => return Err(e),
            }
        }
        drop(w);
        if queued {
            self.notify.notify_one();
        }
        Ok(rep)
    }
}

/// Since when an alarm case's readings count as normal: the later of its handling and the
/// clearing of its last linked episode — provided no episode is active and the device is still
/// sending readings (gateway clock, within [`FRESH_READING_MS`]).
fn normal_since(w: &mut dyn CaseStore, c: &Case, now: i64) -> Result<Option<i64>, StoreError> {
    let Origin::Alarm {
        gateway, device, ..
    } = &c.origin
    else {
        return Ok(None);
    };
    if c.alarm_active() {
        return Ok(None);
    }
    let fresh = w
        .device_last_reading_ms(gateway, device)?
        .is_some_and(|t| t >= now - FRESH_READING_MS);
    if !fresh {
        return Ok(None);
    }
    let cleared = c.alarms.iter().map(|a| a.ts_ms).max();
    Ok(c.handled_ms.max(cleared))
}

/// Runs [`Casework::tick`] every `every` until cancelled (first pass at once: what fell due
/// while the aggregator was down fires now).
pub async fn run_timers(cw: Arc<Casework>, every: Duration, cancel: CancellationToken) {
    loop {
        let c = cw.clone();
        match tokio::task::spawn_blocking(move || c.tick()).await {
            Ok(Ok(r)) if r.timer_events + r.verified + r.conflicts + r.contacts_erased > 0 => {
                tracing::info!(
                    open = r.open_cases,
                    timer_events = r.timer_events,
                    verified = r.verified,
                    conflicts = r.conflicts,
                    contacts_erased = r.contacts_erased,
                    "case timer pass"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "case timer pass failed; next pass retries"),
            Err(e) => tracing::error!(error = %e, "case timer pass panicked"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use fumegrid_common::metric::Metric;
    use fumegrid_common::reading::{Quality, Reading};
    use fumegrid_common::wire::{Alarm, AlarmKind, AlarmPhase, Batch, Body, Item};

    use super::*;
    use crate::cases::model::{EventKind, Intake, Origin};
    use crate::cases::{Action, Command};
    use crate::store::memory::MemoryStore;
    use crate::store::{Reader, Synchronous, Writer, sqlite};

    /// 2025-11-03 (a Monday) 10:00 at UTC+08:00.
    const T0: i64 = 1_762_135_200_000;
    const DAY: i64 = 86_400_000;

    fn store(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("fumegrid-casework-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        let p = d.join(name);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", p.display()));
        }
        p
    }

    fn casework(p: &std::path::Path, now: i64) -> Casework {
        let w = sqlite::open(p, Synchronous::Normal).expect("open");
        Casework::new(
            Arc::new(Mutex::new(w)),
            Arc::new(Catalogue::builtin().expect("catalogue")),
            Clock::fixed(now),
        )
    }

    #[test]
    fn timers_that_fell_due_while_down_fire_at_the_first_pass_after_a_restart() {
        let p = store("restart.sqlite3");
        let op = Actor::operator("desk");
        let id = {
            let cw = casework(&p, T0);
            let intake = Intake {
                category: "exceedance".into(),
                title: "smoke".into(),
                origin: Origin::Operator,
                site: None,
                grid_cell: None,
            };
            let (c, _) = cw.file(intake, &op, "").expect("file");
            cw.transition(&c.id, Command::new(Action::Register), &op)
                .expect("register");
            let (c, _) = cw
                .transition(
                    &c.id,
                    Command::new(Action::Dispatch { department: None }),
                    &op,
                )
                .expect("dispatch");
            // Nothing is due yet.
            assert_eq!(cw.tick().expect("tick").timer_events, 0);
            c.id
        };
        // "Restart" a week later (a new connection, a new service, a later clock): the sign-for
        // and handling deadlines and the community stage have all passed meanwhile.
        let cw = casework(&p, T0 + 7 * DAY);
        let rep = cw.tick().expect("tick");
        assert_eq!(rep.timer_events, 3, "{rep:?}");
        let c = cw
            .writer()
            .lock()
            .expect("lock")
            .load_case(&id)
            .expect("load")
            .expect("case");
        assert!(
            c.sign_for_overdue && c.handle_overdue && c.escalated,
            "{c:?}"
        );
        // Each fires once: a second pass adds nothing.
        assert_eq!(cw.tick().expect("tick").timer_events, 0);
        // The escalation queued notifications for every joint-enforcement department.
        let due = cw
            .writer()
            .lock()
            .expect("lock")
            .due_notifications(T0 + 7 * DAY, 100)
            .expect("due");
        assert!(
            due.iter()
                .any(|n| n.kind == "escalated" || n.kind == "sign_for_overdue"),
            "{due:?}"
        );
    }

    /// Casework over the in-memory store, with ingest's side of the same store (alarms go
    /// through casework's hook as in the daemon).
    struct Desk {
        store: MemoryStore,
        hook: alarms::AlarmCases,
        cw: Arc<Casework>,
        clock: Clock,
    }

    fn desk(clock: Clock) -> Desk {
        let store = MemoryStore::new();
        let cat = Arc::new(Catalogue::builtin().expect("catalogue"));
        let shared: SharedCaseStore = Arc::new(Mutex::new(store.clone()));
        Desk {
            hook: alarms::AlarmCases::new(cat.clone()),
            cw: Arc::new(Casework::new(shared, cat, clock.clone())),
            store,
            clock,
        }
    }

    impl Desk {
        fn ingest(&mut self, seq: u64, body: Body) {
            let b = Batch {
                gateway: "gw-1".into(),
                stream: "s".into(),
                sent_ms: 0,
                items: vec![Item { seq, body }],
            };
            let now = self.clock.now_ms();
            self.store
                .commit_with(&[&b], now, &mut self.hook)
                .expect("commit");
        }

        fn case(&self, id: &str) -> Case {
            self.store
                .clone()
                .load_case(id)
                .expect("load")
                .expect("case")
        }
    }

    fn exceedance(phase: AlarmPhase, ts: i64) -> Body {
        Body::Alarm(Alarm {
            id: format!("rest-1:exceedance:{T0}"),
            device: "rest-1".into(),
            kind: AlarmKind::Exceedance,
            metric: Some(Metric::FumeMgM3),
            phase,
            started_ms: T0,
            ts_ms: ts,
            cleared_ms: (phase == AlarmPhase::Cleared).then_some(ts),
            value: Some(2.8),
            peak: Some(2.8),
            peak_ms: Some(ts),
            limit: Some(2.0),
            suppressed: false,
            message: String::new(),
        })
    }

    fn fume(ts: i64) -> Body {
        Body::Reading(Reading {
            device: "rest-1".into(),
            unit: None,
            metric: Metric::FumeMgM3,
            value: Some(0.4),
            quality: Quality::Ok,
            ts_ms: ts,
        })
    }

    fn intake() -> Intake {
        Intake {
            category: "exceedance".into(),
            title: "smoke".into(),
            origin: Origin::Operator,
            site: None,
            grid_cell: None,
        }
    }

    /// Files, registers and dispatches a case now; its id.
    fn dispatched(cw: &Casework) -> String {
        let op = Actor::operator("desk");
        let (c, _) = cw.file(intake(), &op, "").expect("file");
        cw.transition(&c.id, Command::new(Action::Register), &op)
            .expect("register");
        cw.transition(
            &c.id,
            Command::new(Action::Dispatch { department: None }),
            &op,
        )
        .expect("dispatch");
        c.id
    }

    #[test]
    fn transitions_save_events_and_effects_and_refusals_change_nothing() {
        let d = desk(Clock::fixed(T0));
        let index = Arc::new(StatsIndex::default());
        let cw = Casework::new(
            d.cw.writer().clone(),
            d.cw.catalogue().clone(),
            d.clock.clone(),
        )
        .with_stats_index(index.clone());
        let id = dispatched(&cw);
        assert_eq!(
            id, "C20251103-0001",
            "the engine's id format, numbered by the store"
        );
        let c = d.case(&id);
        assert_eq!(c.state, State::Dispatched);
        assert_eq!(c.seq, 3);
        assert_eq!(
            index.size().events,
            3,
            "every saved event reached the index"
        );
        // The dispatch queued its department's notification in the same transaction.
        let due = d.store.clone().due_notifications(T0, 10).expect("due");
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(Some(due[0].department.clone()), c.department);
        // A refused command (closing a dispatched case) changes nothing.
        let op = Actor::operator("desk");
        let e = cw.transition(&id, Command::new(Action::Close), &op);
        assert!(matches!(e, Err(CaseworkError::Case(_))), "{e:?}");
        assert_eq!(d.case(&id).seq, 3);
        assert_eq!(index.size().events, 3);
        assert!(matches!(
            cw.transition("C-none", Command::new(Action::Register), &op),
            Err(CaseworkError::NotFound(_))
        ));
        // The next case of the day gets the next number.
        let (c2, _) = cw.file(intake(), &op, "").expect("file");
        assert_eq!(c2.id, "C20251103-0002");
    }

    #[test]
    fn contact_details_are_filed_apart_and_erased_on_request() {
        let d = desk(Clock::fixed(T0));
        let reporter = Actor {
            id: "citizen-1".into(),
            role: crate::cases::Role::Reporter,
        };
        let mut i = intake();
        i.category = "complaint".into();
        i.origin = Origin::Citizen;
        let contact = Contact {
            phone: Some("13900001111".into()),
            ..Contact::default()
        };
        let (c, ev) =
            d.cw.file_with_contact(i.clone(), &reporter, "smoke at night", &contact)
                .expect("file");
        assert!(
            ev.iter().all(|e| !e.note.contains("1390000")),
            "not in events"
        );
        let mut store = d.store.clone();
        assert_eq!(
            CaseStore::contact(&mut store, &c.id).expect("contact"),
            Some(contact)
        );
        let (c2, _) = d.cw.file(i, &reporter, "").expect("file");
        assert_eq!(
            CaseStore::contact(&mut store, &c2.id).expect("contact"),
            None
        );
        // A reporter's comment joins the timeline redacted; an operator's note as written.
        let cmd = |note: &str| Command {
            action: Action::Comment,
            note: note.into(),
        };
        let (_, ev) =
            d.cw.transition(&c.id, cmd("call me: 139 0000 1111"), &reporter)
                .expect("comment");
        assert_eq!(ev[0].note, "call me: [phone]");
        let op = Actor::operator("desk");
        let (_, ev) =
            d.cw.transition(&c.id, cmd("called 139 0000 1111"), &op)
                .expect("comment");
        assert_eq!(ev[0].note, "called 139 0000 1111");
        assert!(d.cw.erase_contact(&c.id, &op).expect("erase"));
        assert!(!d.cw.erase_contact(&c.id, &op).expect("again"));
        assert!(matches!(
            d.cw.erase_contact("C-none", &op),
            Err(CaseworkError::NotFound(_))
        ));
    }

    #[test]
    fn a_tick_fires_each_due_timer_once_and_queues_its_notifications() {
        let d = desk(Clock::fixed(T0));
        let id = dispatched(&d.cw);
        let deadline = d.case(&id).sign_for_deadline_ms.expect("deadline");
        d.clock.set_ms(deadline - 1);
        assert_eq!(d.cw.tick().expect("tick").timer_events, 0, "not before");
        assert!(!d.case(&id).sign_for_overdue);
        d.clock.set_ms(deadline);
        let rep = d.cw.tick().expect("tick");
        assert_eq!((rep.open_cases, rep.timer_events), (1, 1), "{rep:?}");
        assert!(d.case(&id).sign_for_overdue);
        assert_eq!(d.cw.tick().expect("tick").timer_events, 0, "once");
        let mut store = d.store.clone();
        let queued = store.due_notifications(deadline, 10).expect("due");
        // The dispatch's notification comes first (one per department at a time).
        assert_eq!(queued.len(), 1);
        let log = d
            .store
            .notifications(&crate::store::notify_sql::NotificationQuery {
                department: None,
                case_id: Some(id.clone()),
                state: None,
                limit: 10,
                offset: 0,
            })
            .expect("log");
        assert!(
            log.1.iter().any(|n| n.kind == "sign_for_overdue"),
            "{log:?}"
        );
    }

    #[test]
    fn handled_alarm_cases_are_verified_by_fresh_normal_readings_only() {
        let h = 3_600_000;
        let mut d = desk(Clock::fixed(T0));
        d.ingest(1, exceedance(AlarmPhase::Raised, T0));
        let id = "C20251103-0001";
        let c = d.case(id);
        assert_eq!(
            c.state,
            State::Dispatched,
            "the alarm opened it in its commit"
        );
        let dep = Actor::department("duty", c.department.as_deref().expect("department"));
        d.clock.set_ms(T0 + 1000);
        for a in [Action::Accept, Action::Handle] {
            d.cw.transition(id, Command::new(a), &dep).expect("step");
        }
        d.clock.set_ms(T0 + 2 * h);
        d.ingest(2, exceedance(AlarmPhase::Cleared, T0 + 2 * h));
        d.ingest(3, fume(T0 + 2 * h));
        // 24 h of normal readings are due at T0 + 26 h, but the device went silent at T0 + 2 h:
        // silence is not normality.
        d.clock.set_ms(T0 + 26 * h);
        assert_eq!(d.cw.tick().expect("tick").verified, 0);
        assert_eq!(d.case(id).state, State::Handled);
        d.ingest(4, fume(T0 + 26 * h - 60_000));
        let rep = d.cw.tick().expect("tick");
        assert_eq!(rep.verified, 1, "{rep:?}");
        assert_eq!(d.case(id).state, State::Verified);
    }

    /// The timer loop in paused time: the sign-for deadline of a case dispatched on a Monday
    /// morning fires at the first pass after it, not a pass before — two working days pass in
    /// milliseconds.
    #[tokio::test(start_paused = true)]
    async fn the_timer_loop_fires_overdue_and_escalation_at_their_simulated_time() {
        let d = desk(Clock::following_tokio(T0));
        let id = dispatched(&d.cw);
        let c = d.case(&id);
        let sign_for = c.sign_for_deadline_ms.expect("sign-for deadline");
        let escalate = c.escalate_at_ms.expect("escalation");
        assert!(
            escalate - T0 >= DAY,
            "a working-day limit: {}",
            escalate - T0
        );
        let every = Duration::from_secs(60);
        let cancel = CancellationToken::new();
        let timers = tokio::spawn(run_timers(d.cw.clone(), every, cancel.clone()));
        let fired = |kind: EventKind| {
            let detail = d.store.case(&id).expect("case").expect("case");
            detail
                .events
                .iter()
                .find(|e| e.kind == kind)
                .map(|e| e.ts_ms)
        };
        // Up to a pass before each deadline, nothing; at the first pass after it, the event.
        for (kind, at) in [
            (EventKind::SignForOverdue, sign_for),
            (EventKind::Escalated, escalate),
        ] {
            let before = Duration::from_millis((at - 60_000 - d.clock.now_ms()) as u64);
            tokio::time::sleep(before).await;
            assert_eq!(fired(kind), None, "{kind:?} before its time");
            let mut waited = 0;
            while fired(kind).is_none() && waited < 5 {
                tokio::time::sleep(every).await;
                waited += 1;
            }
            let ts = fired(kind).expect("fired");
            assert!(
                ts >= at && ts < at + 2 * 60_000,
                "{kind:?} at {} ms from its time",
                ts - at
            );
        }
        cancel.cancel();
        timers.await.expect("timer loop");
    }
}
