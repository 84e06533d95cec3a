//! Time limits and escalation, derived from the case.
//!
//! A case carries its deadlines (`sign_for_deadline_ms`, `handle_deadline_ms`,
//! `escalate_at_ms`) and what has fired already (`sign_for_overdue`, `handle_overdue`,
//! `escalated`). [`due`] compares them with `now`; nothing else is kept. So timers survive
//! restarts: after a restart the caller runs [`run_due`] over the open cases and whatever fell
//! due while it was down fires once, stamped with the time it runs. The caller decides when to
//! look: periodically (e.g. every minute, with real or paused time), at the instants the
//! [`super::model::Effect::Schedule`] effects name, or at [`next_due_ms`].
//!
//! | timer | due when | fires |
//! |---|---|---|
//! | `sign_for` | state `dispatched`, now ≥ sign-for deadline | `sign_for_overdue`, department notified |
//! | `handle` | state `dispatched`/`accepted`, now ≥ handling deadline | `handle_overdue`, department notified |
//! | `escalate` | state `registered`/`dispatched`/`accepted`, now ≥ first dispatch + community stage | `escalated`: the case's department and every escalation department notified (joint enforcement) |
//!
//! A timer fires once per deadline: `dispatch`, `transfer` and `extend` set a new deadline and
//! clear the flag; escalation fires once per case. A case handled before a deadline is not late.

use super::catalogue::Catalogue;
use super::model::{
    Action, Actor, Case, CaseError, Command, Effect, Event, State, TimerKind, apply, timer_due,
};

const ALL: [TimerKind; 3] = [TimerKind::SignFor, TimerKind::Handle, TimerKind::Escalate];

/// A timer that has fallen due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerEvent {
    pub timer: TimerKind,
    /// The deadline that passed.
    pub deadline_ms: i64,
}

fn deadline(case: &Case, timer: TimerKind) -> Option<i64> {
    match timer {
        TimerKind::SignFor => case.sign_for_deadline_ms,
        TimerKind::Handle => case.handle_deadline_ms,
        TimerKind::Escalate => case.escalate_at_ms,
    }
}

/// The timers due on `case` at `now_ms`, in the order sign-for, handle, escalate.
pub fn due(case: &Case, now_ms: i64) -> Vec<TimerEvent> {
    ALL.into_iter()
        .filter(|&t| timer_due(case, t, now_ms))
        .filter_map(|t| {
            deadline(case, t).map(|d| TimerEvent {
                timer: t,
                deadline_ms: d,
            })
        })
        .collect()
}

/// The earliest instant a timer of `case` can fall due, if any is pending.
pub fn next_due_ms(case: &Case) -> Option<i64> {
    ALL.into_iter()
        .filter(|&t| timer_due(case, t, i64::MAX))
        .filter_map(|t| deadline(case, t))
        .min()
}

/// Fires every due timer as `system`; the case unchanged and nothing to append when none is.
#[allow(clippy::type_complexity)]
pub fn run_due(
    case: &Case,
    now_ms: i64,
    catalogue: &Catalogue,
) -> Result<(Case, Vec<Event>, Vec<Effect>), CaseError> {
    let mut c = case.clone();
    let mut events = Vec::new();
    let mut effects = Vec::new();
    if !c.state.is_open() || c.state == State::Reported {
        return Ok((c, events, effects));
    }
    for t in due(case, now_ms) {
        let (n, ev, ef) = apply(
            &c,
            Command::new(Action::Timer { timer: t.timer }),
            &Actor::system(),
            now_ms,
            catalogue,
        )?;
        c = n;
        events.extend(ev);
        effects.extend(ef);
    }
    Ok((c, events, effects))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::calendar::Date;
    use crate::cases::model::tests::{cat, epb, op};
    use crate::cases::model::{EventKind, Intake, Origin, open};

    const H: i64 = 3_600_000;

    fn local(cat: &Catalogue, date: &str, hh: i64) -> i64 {
        let d: Date = date.parse().expect("date");
        cat.calendar.local_midnight(d) + hh * H
    }

    fn dispatched_at(catalogue: &Catalogue, t: i64) -> Case {
        let intake = Intake {
            category: "exceedance".into(),
            title: "t".into(),
            origin: Origin::Operator,
            site: None,
            grid_cell: None,
        };
        let (c, _, _) = open("c1", intake, &op(), "", t, catalogue).expect("open");
        let (c, _, _) =
            apply(&c, Command::new(Action::Register), &op(), t, catalogue).expect("register");
        apply(
            &c,
            Command::new(Action::Dispatch { department: None }),
            &op(),
            t,
            catalogue,
        )
        .expect("dispatch")
        .0
    }

    #[test]
    fn sign_for_overdue_at_the_deadline_across_the_weekend() {
        let catalogue = cat();
        // Friday 2025-10-17 17:00: 2 working hours → Monday 2025-10-20 10:00.
        let c = dispatched_at(&catalogue, local(&catalogue, "2025-10-17", 17));
        let deadline = local(&catalogue, "2025-10-20", 10);
        assert_eq!(c.sign_for_deadline_ms, Some(deadline));
        assert_eq!(next_due_ms(&c), Some(deadline));
        // Saturday, Sunday, Monday 09:59: nothing.
        for t in [
            local(&catalogue, "2025-10-18", 12),
            local(&catalogue, "2025-10-19", 23),
            deadline - 60_000,
        ] {
            assert_eq!(due(&c, t), [], "{t}");
        }
        let due_now = due(&c, deadline);
        assert_eq!(
            due_now,
            [TimerEvent {
                timer: TimerKind::SignFor,
                deadline_ms: deadline
            }]
        );
        let (c2, ev, ef) = run_due(&c, deadline, &catalogue).expect("run");
        assert!(c2.sign_for_overdue);
        assert_eq!(ev[0].kind, EventKind::SignForOverdue);
        assert!(matches!(&ef[0], Effect::Notify { department, .. } if department == "epb"));
        // Fires once.
        assert_eq!(due(&c2, deadline + H), []);
        let (c3, ev, _) = run_due(&c2, deadline + H, &catalogue).expect("run");
        assert_eq!((c3, ev.len()), (c2.clone(), 0));
        // Signing for it stops nothing already fired and prevents nothing else: no new flag.
        let (acc, _, _) = apply(
            &c,
            Command::new(Action::Accept),
            &epb(),
            deadline - 1,
            &catalogue,
        )
        .expect("accept");
        assert_eq!(due(&acc, deadline), []);
    }

    #[test]
    fn escalation_at_the_end_of_the_community_stage_over_a_holiday() {
        let catalogue = cat();
        // Tue 2025-09-30 10:00 + 3 working days: 09-30 (8 h), holidays 10-01..10-08, Thu 10-09
        // (9 h), Fri 10-10 (9 h), 1 h on make-up Saturday 10-11 → 10:00 on 10-11.
        let t0 = local(&catalogue, "2025-09-30", 10);
        let c = dispatched_at(&catalogue, t0);
        let at = local(&catalogue, "2025-10-11", 10);
        assert_eq!(c.escalate_at_ms, Some(at));
        // The department accepts; still not handled at the end of the stage.
        let (c, _, _) =
            apply(&c, Command::new(Action::Accept), &epb(), t0 + H, &catalogue).expect("accept");
        assert_eq!(due(&c, at - 1), []);
        let timers: Vec<TimerKind> = due(&c, at).iter().map(|t| t.timer).collect();
        assert_eq!(timers, [TimerKind::Handle, TimerKind::Escalate]);
        let (e, ev, ef) = run_due(&c, at, &catalogue).expect("run");
        assert!(e.escalated && e.handle_overdue);
        let esc = ev
            .iter()
            .find(|x| x.kind == EventKind::Escalated)
            .expect("escalated");
        assert_eq!(esc.departments, ["epb", "urban", "market", "street"]);
        let notified: Vec<&str> = ef
            .iter()
            .filter_map(|x| match x {
                Effect::Notify {
                    department,
                    kind: EventKind::Escalated,
                    ..
                } => Some(department.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(notified, ["epb", "urban", "market", "street"]);
        assert_eq!(due(&e, at + 100 * H), []);
        assert_eq!(next_due_ms(&e), None);
    }

    #[test]
    fn handled_in_time_never_escalates_and_extension_moves_the_deadline() {
        let catalogue = cat();
        let t0 = local(&catalogue, "2025-10-15", 10);
        let c = dispatched_at(&catalogue, t0);
        let (a, _, _) =
            apply(&c, Command::new(Action::Accept), &epb(), t0 + H, &catalogue).expect("accept");
        let (h, _, _) = apply(
            &a,
            Command::new(Action::Handle),
            &epb(),
            t0 + 2 * H,
            &catalogue,
        )
        .expect("handle");
        assert_eq!(due(&h, t0 + 1000 * H), []);
        assert_eq!(next_due_ms(&h), None);
        // Extend by one day: the handling timer moves.
        let old = a.handle_deadline_ms.expect("deadline");
        let (x, _, _) = apply(
            &a,
            Command::new(Action::Extend {
                by: crate::cases::WorkAmount::Days(1),
            }),
            &op(),
            t0 + 2 * H,
            &catalogue,
        )
        .expect("extend");
        let timers: Vec<TimerKind> = due(&x, old).iter().map(|t| t.timer).collect();
        assert_eq!(timers, [TimerKind::Escalate]);
        // A department with no escalation configured (device faults): no escalate timer.
        let intake = Intake {
            category: "device_offline".into(),
            title: "t".into(),
            origin: Origin::Operator,
            site: None,
            grid_cell: None,
        };
        let (d, _, _) = open("d", intake, &op(), "", t0, &catalogue).expect("open");
        let (d, _, _) =
            apply(&d, Command::new(Action::Register), &op(), t0, &catalogue).expect("reg");
        let (d, _, _) = apply(
            &d,
            Command::new(Action::Dispatch { department: None }),
            &op(),
            t0,
            &catalogue,
        )
        .expect("disp");
        assert_eq!(d.escalate_at_ms, None);
        assert!(
            due(&d, t0 + 10_000 * H)
                .iter()
                .all(|t| t.timer != TimerKind::Escalate)
        );
    }

    #[test]
    fn timers_are_refused_when_not_due() {
        let catalogue = cat();
        let t0 = local(&catalogue, "2025-10-15", 10);
        let c = dispatched_at(&catalogue, t0);
        assert_eq!(
            apply(
                &c,
                Command::new(Action::Timer {
                    timer: TimerKind::Escalate
                }),
                &Actor::system(),
                t0,
                &catalogue
            )
            .map(|_| ()),
            Err(CaseError::NotDue {
                timer: TimerKind::Escalate
            })
        );
    }
}
