//! From sensor alarms to cases, and from normal readings to verification.
//!
//! [`on_alarm`] decides what one alarm transition (wire `Alarm`, as stored by the episode fold)
//! does to the cases:
//!
//! - `suppressed` alarms (opening hours, maintenance) open no case and link to none.
//! - At most one *open* case (not rejected, not closed) per `(gateway, device, alarm kind)`.
//!   When there is one, the transition is linked to it: an `alarm_linked` event by `system`
//!   carrying the episode id, phase and time. A transition no newer than the one already linked
//!   for that episode (a repeat delivery) is ignored, so replays append nothing.
//! - Otherwise a `raised` or `updated` transition opens a case in the category whose
//!   `alarm_kind` matches: `reported` → `registered` → `dispatched` to the category's
//!   department, all by `system` at `now`; the `reported` event carries the alarm.
//! - A `cleared` transition never closes a case (it only links). With no open case it is
//!   ignored: the episode's case was closed already, or its raise was suppressed.
//!
//! [`on_readings_normal`]: a handled case in a category with `verify_normal_hours` (or
//! `verify_normal_minutes`) is verified by `system` once no linked episode is active and the
//! readings have been normal that long (wall-clock). Whoever tracks readings passes the instant
//! they turned normal.

use fumegrid_common::wire::{Alarm, AlarmKind, AlarmPhase};

use super::catalogue::Catalogue;
use super::model::{
    Action, Actor, AlarmRef, Case, CaseError, Command, Effect, Event, Intake, Origin, State, apply,
    open,
};

/// Where an alarm comes from (the aggregator knows the gateway; site and grid cell come from
/// its registry of devices).
#[derive(Debug, Clone, Copy)]
pub struct AlarmSource<'a> {
    pub gateway: &'a str,
    pub site: Option<&'a str>,
    pub grid_cell: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    Suppressed,
    /// Not newer than what the open case already has for this episode.
    Repeat,
    ClearedWithoutOpenCase,
    /// No category in the catalogue takes alarms of this kind.
    NoCategory(AlarmKind),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Ignore(Ignored),
    /// Linked to the open case; store the case and append the event.
    Linked {
        case: Case,
        events: Vec<Event>,
        effects: Vec<Effect>,
    },
    /// A new case (id `new_case_id`), already registered and dispatched.
    Opened {
        case: Case,
        events: Vec<Event>,
        effects: Vec<Effect>,
    },
}

/// The open case an alarm of `kind` on `device` behind `gateway` belongs to.
pub fn open_case_for<'c>(
    cases: &'c [Case],
    gateway: &str,
    device: &str,
    kind: AlarmKind,
) -> Option<&'c Case> {
    cases.iter().find(|c| {
        c.state.is_open()
            && matches!(&c.origin, Origin::Alarm { gateway: g, device: d, kind: k }
                if g == gateway && d == device && *k == kind)
    })
}

/// See the module doc. `open_cases` may hold any cases (closed ones are skipped); the caller
/// usually passes the open cases of this device.
pub fn on_alarm(
    open_cases: &[Case],
    alarm: &Alarm,
    src: &AlarmSource<'_>,
    new_case_id: &str,
    now_ms: i64,
    catalogue: &Catalogue,
) -> Result<Decision, CaseError> {
    if alarm.suppressed {
        return Ok(Decision::Ignore(Ignored::Suppressed));
    }
    let aref = AlarmRef {
        gateway: src.gateway.to_string(),
        id: alarm.id.clone(),
        phase: alarm.phase,
        ts_ms: alarm.ts_ms,
    };
    let system = Actor::system();
    let note = if alarm.message.is_empty() {
        format!(
            "{} alarm {} ({:?})",
            alarm.kind.name(),
            alarm.id,
            alarm.phase
        )
        .to_lowercase()
    } else {
        alarm.message.clone()
    };
    if let Some(case) = open_case_for(open_cases, src.gateway, &alarm.device, alarm.kind) {
        let seen = case
            .alarms
            .iter()
            .find(|a| a.gateway == aref.gateway && a.id == aref.id);
        if seen.is_some_and(|a| a.ts_ms >= aref.ts_ms) {
            return Ok(Decision::Ignore(Ignored::Repeat));
        }
        let (case, events, effects) = apply(
            case,
            Command::note(Action::LinkAlarm { alarm: aref }, note),
            &system,
            now_ms,
            catalogue,
        )?;
        return Ok(Decision::Linked {
            case,
            events,
            effects,
        });
    }
    if alarm.phase == AlarmPhase::Cleared {
        return Ok(Decision::Ignore(Ignored::ClearedWithoutOpenCase));
    }
    let Some(category) = catalogue.category_for_alarm(alarm.kind) else {
        return Ok(Decision::Ignore(Ignored::NoCategory(alarm.kind)));
    };
    let title = if alarm.message.is_empty() {
        format!(
            "{} at {}",
            category.name_en.as_deref().unwrap_or(&category.name),
            alarm.device
        )
    } else {
        format!("{}: {}", alarm.device, alarm.message)
    };
    let intake = Intake {
        category: category.id.clone(),
        title,
        origin: Origin::Alarm {
            gateway: src.gateway.to_string(),
            device: alarm.device.clone(),
            kind: alarm.kind,
        },
        site: src.site.map(str::to_string),
        grid_cell: src.grid_cell.map(str::to_string),
    };
    let (mut case, mut events, mut effects) =
        open(new_case_id, intake, &system, &note, now_ms, catalogue)?;
    case.alarms.push(aref.clone());
    if let Some(first) = events.first_mut() {
        first.alarm = Some(aref);
    }
    for action in [Action::Register, Action::Dispatch { department: None }] {
        let (c, ev, ef) = apply(
            &case,
            Command::note(action, "automatic"),
            &system,
            now_ms,
            catalogue,
        )?;
        case = c;
        events.extend(ev);
        effects.extend(ef);
    }
    Ok(Decision::Opened {
        case,
        events,
        effects,
    })
}

/// Automatic verification (see the module doc). `Ok(None)`: not (yet) satisfied.
#[allow(clippy::type_complexity)]
pub fn on_readings_normal(
    case: &Case,
    normal_since_ms: i64,
    now_ms: i64,
    catalogue: &Catalogue,
) -> Result<Option<(Case, Vec<Event>, Vec<Effect>)>, CaseError> {
    if case.state != State::Handled || case.alarm_active() {
        return Ok(None);
    }
    let Some(minutes) = catalogue
        .category(&case.category)
        .and_then(|c| c.verify_normal_minutes)
    else {
        return Ok(None);
    };
    if now_ms - normal_since_ms < i64::from(minutes) * 60_000 {
        return Ok(None);
    }
    let span = if minutes % 60 == 0 {
        format!("{} h", minutes / 60)
    } else {
        format!("{minutes} min")
    };
    let note = format!("readings normal for {span} (since {normal_since_ms})");
    apply(
        case,
        Command::note(Action::Verify, note),
        &Actor::system(),
        now_ms,
        catalogue,
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::model::EventKind;
    use crate::cases::model::tests::{T0, cat, epb};

    fn alarm(id: &str, kind: AlarmKind, phase: AlarmPhase, ts_ms: i64) -> Alarm {
        Alarm {
            id: id.into(),
            device: "dev-1".into(),
            kind,
            metric: None,
            phase,
            started_ms: T0,
            ts_ms,
            cleared_ms: (phase == AlarmPhase::Cleared).then_some(ts_ms),
            value: Some(2.8),
            peak: Some(3.1),
            peak_ms: Some(T0),
            limit: Some(2.0),
            suppressed: false,
            message: String::new(),
        }
    }

    const SRC: AlarmSource<'static> = AlarmSource {
        gateway: "gw-1",
        site: Some("site-1"),
        grid_cell: Some("cell-7"),
    };

    /// Feeds alarms one by one as the aggregator would, keeping the case list.
    fn feed(cases: &mut Vec<Case>, a: &Alarm, now: i64) -> Decision {
        let id = format!("case-{}", cases.len() + 1);
        let d = on_alarm(cases, a, &SRC, &id, now, &cat()).expect("on_alarm");
        match &d {
            Decision::Opened { case, .. } => cases.push(case.clone()),
            Decision::Linked { case, .. } => {
                let slot = cases.iter_mut().find(|c| c.id == case.id).expect("known");
                *slot = case.clone();
            }
            Decision::Ignore(_) => {}
        }
        d
    }

    #[test]
    fn an_exceedance_opens_one_dispatched_case_and_repeats_append() {
        let mut cases = Vec::new();
        let k = AlarmKind::Exceedance;
        let d = feed(&mut cases, &alarm("e1", k, AlarmPhase::Raised, T0), T0);
        let Decision::Opened {
            case,
            events,
            effects,
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(case.state, State::Dispatched);
        assert_eq!(case.department.as_deref(), Some("epb"));
        assert_eq!(case.site.as_deref(), Some("site-1"));
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Reported,
                EventKind::Registered,
                EventKind::Dispatched
            ]
        );
        assert!(events.iter().all(|e| e.actor == Actor::system()));
        assert_eq!(events[0].alarm.as_ref().map(|a| a.id.as_str()), Some("e1"));
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Notify { department, .. } if department == "epb"))
        );

        // Updates, a second episode of the same kind, and the clear all link to that case.
        for (a, now) in [
            (
                alarm("e1", k, AlarmPhase::Updated, T0 + 60_000),
                T0 + 61_000,
            ),
            (
                alarm("e1", k, AlarmPhase::Cleared, T0 + 120_000),
                T0 + 121_000,
            ),
            (
                alarm("e2", k, AlarmPhase::Raised, T0 + 180_000),
                T0 + 181_000,
            ),
        ] {
            let d = feed(&mut cases, &a, now);
            assert!(
                matches!(d, Decision::Linked { ref events, .. } if events[0].kind == EventKind::AlarmLinked),
                "{d:?}"
            );
        }
        assert_eq!(cases.len(), 1);
        assert_eq!(
            cases[0].state,
            State::Dispatched,
            "a cleared alarm does not close a case"
        );
        assert_eq!(cases[0].alarms.len(), 2);
        assert!(cases[0].alarm_active(), "e2 is still raised");
        // A repeat delivery appends nothing.
        let d = feed(
            &mut cases,
            &alarm("e1", k, AlarmPhase::Updated, T0 + 60_000),
            T0 + 200_000,
        );
        assert_eq!(d, Decision::Ignore(Ignored::Repeat));
        assert_eq!(cases[0].seq, 6);

        // Another kind on the same device is another case.
        let d = feed(
            &mut cases,
            &alarm("p1", AlarmKind::PurifierIdle, AlarmPhase::Raised, T0),
            T0,
        );
        assert!(
            matches!(d, Decision::Opened { ref case, .. } if case.department.as_deref() == Some("urban"))
        );
        assert_eq!(cases.len(), 2);
    }

    #[test]
    fn suppressed_and_stray_clears_open_nothing_and_closed_cases_do_not_absorb() {
        let mut cases = Vec::new();
        let mut a = alarm("e1", AlarmKind::Exceedance, AlarmPhase::Raised, T0);
        a.suppressed = true;
        assert_eq!(
            feed(&mut cases, &a, T0),
            Decision::Ignore(Ignored::Suppressed)
        );
        let c = alarm("e1", AlarmKind::Exceedance, AlarmPhase::Cleared, T0 + 1);
        assert_eq!(
            feed(&mut cases, &c, T0),
            Decision::Ignore(Ignored::ClearedWithoutOpenCase)
        );
        assert!(cases.is_empty());
        // Once the case is closed, a new episode opens a new case.
        feed(
            &mut cases,
            &alarm("e1", AlarmKind::Exceedance, AlarmPhase::Raised, T0),
            T0,
        );
        cases[0].state = State::Closed;
        let d = feed(
            &mut cases,
            &alarm("e2", AlarmKind::Exceedance, AlarmPhase::Raised, T0 + 5),
            T0 + 5,
        );
        assert!(matches!(d, Decision::Opened { .. }));
        assert_eq!(cases.len(), 2);
    }

    #[test]
    fn normal_readings_verify_a_handled_case_after_the_configured_time() {
        let catalogue = cat();
        let mut cases = Vec::new();
        feed(
            &mut cases,
            &alarm("e1", AlarmKind::Exceedance, AlarmPhase::Raised, T0),
            T0,
        );
        let mut c = cases.remove(0);
        for a in [Action::Accept, Action::Handle] {
            c = apply(&c, Command::new(a), &epb(), T0 + 1000, &catalogue)
                .expect("step")
                .0;
        }
        let h = 3_600_000;
        // Still alarming: no verification, whatever the readings say.
        assert_eq!(
            on_readings_normal(&c, T0, T0 + 48 * h, &catalogue),
            Ok(None)
        );
        let cleared = AlarmRef {
            gateway: "gw-1".into(),
            id: "e1".into(),
            phase: AlarmPhase::Cleared,
            ts_ms: T0 + 2 * h,
        };
        c = apply(
            &c,
            Command::new(Action::LinkAlarm { alarm: cleared }),
            &Actor::system(),
            T0 + 2 * h,
            &catalogue,
        )
        .expect("link")
        .0;
        // Exceedance: 24 h of normal readings.
        assert_eq!(
            on_readings_normal(&c, T0 + 2 * h, T0 + 25 * h, &catalogue),
            Ok(None)
        );
        let (v, ev, _) = on_readings_normal(&c, T0 + 2 * h, T0 + 26 * h, &catalogue)
            .expect("ok")
            .expect("verified");
        assert_eq!(v.state, State::Verified);
        assert_eq!(
            (ev[0].kind, ev[0].actor.clone()),
            (EventKind::Verified, Actor::system())
        );
        // Not handled yet: nothing.
        assert_eq!(
            on_readings_normal(&v, T0, T0 + 100 * h, &catalogue),
            Ok(None)
        );
    }
}
