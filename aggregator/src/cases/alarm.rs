//! From sensor alarms to cases, and from normal readings to verification.
//!
//! [`on_alarm`] decides what one alarm transition (wire `Alarm`, as stored by the episode fold)
//! does to the cases:
//!
//! - `suppressed` alarms (opening hours, maintenance) open no case and link to none.
//! - One episode, at most one case, ever: a transition of an episode already linked to a case
//!   is linked to *that* case whatever its state (closed and rejected included) — an
//!   `alarm_linked` event by `system` carrying the episode id, phase and time. An operator who
//!   closed the case while the episode was raised does not get a second case from its next
//!   routine `updated`. A transition no newer than the one already linked for that episode (a
//!   repeat delivery) is ignored, so replays append nothing.
//! - A new episode joins the *open* case (not rejected, not closed) of its
//!   `(gateway, device, alarm kind)` when there is one (at most one is open).
//! - Otherwise a `raised` or `updated` transition of a new episode opens a case in the category
//!   whose `alarm_kind` matches: `reported` → `registered` → `dispatched` to the category's
//!   department, all by `system` at `now`; the `reported` event carries the alarm.
//! - A `cleared` transition never closes a case (it only links). An episode with no case whose
//!   clear arrives is ignored (its raise was suppressed, or no category took it).
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

/// The case alarm episode `id` from `gateway` is linked to, in any state.
pub fn episode_case<'c>(cases: &'c [Case], gateway: &str, id: &str) -> Option<&'c Case> {
    cases.iter().find(|c| c.has_episode(gateway, id))
}

/// See the module doc. `cases` must hold the case the episode is linked to (if any, in any
/// state) and the open cases of this `(gateway, device, kind)`; more is harmless.
pub fn on_alarm(
    cases: &[Case],
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
    let linked = episode_case(cases, src.gateway, &alarm.id)
        .or_else(|| open_case_for(cases, src.gateway, &alarm.device, alarm.kind));
    if let Some(case) = linked {
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
        Command::note(Action::verify(), note),
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
    use crate::cases::model::tests::{T0, cat, epb, op};
    use proptest::prelude::*;

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

    /// The defect of issue 11 item 5: an operator verifies (overriding: the alarm is still
    /// raised) and closes; five minutes later the episode's routine `updated` must join that
    /// closed case, not open a second one "near the limit".
    #[test]
    fn an_episode_closed_while_raised_never_opens_a_second_case() {
        let catalogue = cat();
        let k = AlarmKind::Exceedance;
        let mut cases = Vec::new();
        feed(&mut cases, &alarm("e1", k, AlarmPhase::Raised, T0), T0);
        let mut c = cases[0].clone();
        for a in [Action::Accept, Action::Handle] {
            c = apply(&c, Command::new(a), &epb(), T0 + 1000, &catalogue)
                .expect("step")
                .0;
        }
        // A plain verification while e1 is raised is refused, naming the episode.
        let refused = apply(
            &c,
            Command::new(Action::verify()),
            &op(),
            T0 + 2000,
            &catalogue,
        );
        assert_eq!(
            refused.map(|_| ()),
            Err(CaseError::AlarmStillRaised {
                episodes: "e1".into()
            })
        );
        let override_note = "checked on site: hood cleaned, monitor reads high until recalibrated";
        let verify = Action::Verify {
            override_note: Some(override_note.into()),
        };
        let (v, ev, _) = apply(&c, Command::new(verify), &op(), T0 + 2000, &catalogue)
            .expect("operator override");
        assert_eq!(ev[0].override_note.as_deref(), Some(override_note));
        c = apply(
            &v,
            Command::new(Action::Close),
            &op(),
            T0 + 3000,
            &catalogue,
        )
        .expect("close")
        .0;
        cases[0] = c;
        // The routine update five minutes later, then the clear: both join the closed case.
        for (phase, t) in [
            (AlarmPhase::Updated, T0 + 300_000),
            (AlarmPhase::Cleared, T0 + 600_000),
        ] {
            let d = feed(&mut cases, &alarm("e1", k, phase, t), t);
            assert!(
                matches!(&d, Decision::Linked { case, events, .. }
                    if case.state == State::Closed && events[0].kind == EventKind::AlarmLinked),
                "{d:?}"
            );
        }
        assert_eq!(cases.len(), 1, "one episode, one case");
        assert_eq!(cases[0].alarms[0].phase, AlarmPhase::Cleared);
        // A new episode is a new case.
        let d = feed(
            &mut cases,
            &alarm("e2", k, AlarmPhase::Raised, T0 + 900_000),
            T0 + 900_000,
        );
        assert!(matches!(d, Decision::Opened { .. }), "{d:?}");
        assert_eq!(cases.len(), 2);
    }

    #[test]
    fn only_an_operator_overrides_a_raised_alarm_and_only_with_a_reason() {
        let catalogue = cat();
        let mut cases = Vec::new();
        feed(
            &mut cases,
            &alarm("e1", AlarmKind::Exceedance, AlarmPhase::Raised, T0),
            T0,
        );
        let mut c = cases.remove(0);
        for a in [Action::Accept, Action::Handle] {
            c = apply(&c, Command::new(a), &epb(), T0, &catalogue)
                .expect("step")
                .0;
        }
        let with = |n: &str| Action::Verify {
            override_note: Some(n.into()),
        };
        for (action, who) in [
            (with("  "), op()),
            (with("sure"), Actor::system()),
            (Action::verify(), Actor::system()),
        ] {
            assert!(
                matches!(
                    apply(&c, Command::new(action), &who, T0, &catalogue),
                    Err(CaseError::AlarmStillRaised { .. })
                ),
                "{who:?}"
            );
        }
        assert!(matches!(
            apply(&c, Command::new(with("x")), &epb(), T0, &catalogue),
            Err(CaseError::Forbidden { .. })
        ));
        // Once the episode cleared, a plain verification is fine and records no override.
        let cleared = AlarmRef {
            gateway: "gw-1".into(),
            id: "e1".into(),
            phase: AlarmPhase::Cleared,
            ts_ms: T0 + 1,
        };
        c = apply(
            &c,
            Command::new(Action::LinkAlarm { alarm: cleared }),
            &Actor::system(),
            T0 + 1,
            &catalogue,
        )
        .expect("link")
        .0;
        let (_, ev, _) = apply(
            &c,
            Command::new(Action::verify()),
            &op(),
            T0 + 2,
            &catalogue,
        )
        .expect("verify");
        assert_eq!(ev[0].override_note, None);
        assert!(
            !serde_json::to_string(&ev[0])
                .expect("json")
                .contains("override")
        );
    }

    /// One step of a random history: an alarm transition, or an operator or department moving
    /// some case along.
    #[derive(Debug, Clone)]
    enum Step {
        Alarm {
            episode: u8,
            phase: u8,
            suppressed: bool,
        },
        Work {
            case: u8,
            action: u8,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u8..4, 0u8..3, proptest::bool::weighted(0.1)).prop_map(|(episode, phase, suppressed)| Step::Alarm { episode, phase, suppressed }),
            2 => (0u8..8, 0u8..6).prop_map(|(case, action)| Step::Work { case, action }),
        ]
    }

    proptest! {
        /// Whatever operators do with the cases and in whatever order the transitions come, an
        /// alarm episode belongs to at most one case, ever; a case is opened only for an episode
        /// that has none; a transition of an episode with a case always lands in that case.
        #[test]
        fn one_episode_at_most_one_case_ever(steps in proptest::collection::vec(step(), 1..60)) {
            let catalogue = cat();
            let k = AlarmKind::Exceedance;
            let mut cases: Vec<Case> = Vec::new();
            let mut t = T0;
            for s in steps {
                t += 60_000;
                match s {
                    Step::Alarm { episode, phase, suppressed } => {
                        let id = format!("e{episode}");
                        let phase = [AlarmPhase::Raised, AlarmPhase::Updated, AlarmPhase::Cleared][usize::from(phase)];
                        let mut a = alarm(&id, k, phase, t);
                        a.suppressed = suppressed;
                        let before = episode_case(&cases, "gw-1", &id).map(|c| c.id.clone());
                        match feed(&mut cases, &a, t) {
                            Decision::Opened { case, .. } => {
                                prop_assert!(before.is_none(), "{id} had {before:?}, got {}", case.id);
                                prop_assert!(phase != AlarmPhase::Cleared && !suppressed);
                            }
                            Decision::Linked { case, .. } => {
                                if let Some(b) = before {
                                    prop_assert_eq!(b, case.id.clone());
                                }
                                prop_assert!(case.alarms.iter().any(|x| x.id == id && x.ts_ms == t));
                            }
                            Decision::Ignore(Ignored::Suppressed) => prop_assert!(suppressed),
                            Decision::Ignore(Ignored::ClearedWithoutOpenCase) => {
                                prop_assert!(before.is_none() && phase == AlarmPhase::Cleared);
                            }
                            Decision::Ignore(why) => prop_assert!(false, "{why:?}"),
                        }
                    }
                    Step::Work { case, action } => {
                        if cases.is_empty() {
                            continue;
                        }
                        let i = usize::from(case) % cases.len();
                        let (action, who) = match action {
                            0 => (Action::Accept, epb()),
                            1 => (Action::Handle, epb()),
                            2 => (Action::verify(), op()),
                            3 => (Action::Verify { override_note: Some("on site".into()) }, op()),
                            4 => (Action::Close, op()),
                            _ => (Action::Comment, op()),
                        };
                        let plain_verify = action == Action::verify();
                        if let Ok((c, ev, _)) = apply(&cases[i], Command::new(action), &who, t, &catalogue) {
                            // Nobody verifies while an episode is raised without saying why.
                            if ev[0].kind == EventKind::Verified && cases[i].alarm_active() {
                                prop_assert!(!plain_verify && ev[0].override_note.is_some());
                            }
                            cases[i] = c;
                        }
                    }
                }
                // The invariant: no episode in two cases; at most one open case per kind.
                let mut seen = std::collections::HashSet::new();
                for c in &cases {
                    for a in &c.alarms {
                        prop_assert!(seen.insert(a.id.clone()), "{} in two cases", a.id);
                    }
                }
                prop_assert!(cases.iter().filter(|c| c.state.is_open()).count() <= 1);
            }
        }
    }
}
