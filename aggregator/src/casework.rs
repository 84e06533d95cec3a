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
//! longer ago than the retention period (`[cases] contact_retention_days`).

pub mod alarms;
pub mod stats_index;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cases::alarm::on_readings_normal;
use crate::cases::model::{Intake, Origin};
use crate::cases::{
    Actor, Case, CaseError, Catalogue, Command, Effect, Event, State, apply, open, timers,
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

/// The store as casework and the notifier share it.
pub type SharedCaseStore = Arc<Mutex<dyn CaseStore>>;

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
        cmd: Command,
        actor: &Actor,
    ) -> Result<(Case, Vec<Event>), CaseworkError> {
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
        let now = self.clock.now_ms();
        let mut w = self.lock();
        let mut id = String::new();
        w.case_tx(&mut |tx| {
            id = alarms::new_case_id(tx, &self.catalogue, now)?;
            Ok(())
        })?;
        let (case, events, effects) = open(&id, intake, actor, note, now, &self.catalogue)?;
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
    use super::*;
    use crate::cases::model::{Intake, Origin};
    use crate::cases::{Action, Command};
    use crate::store::{Synchronous, sqlite};

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
}
