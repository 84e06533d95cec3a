//! Property test of the whole pure case engine: random sequences of alarm transitions (several
//! gateways, devices, kinds and episodes; repeats; suppressed ones), cases filed by hand,
//! commands from random actors (operator, own and wrong department, own and other reporter,
//! viewer, system) and time steps that let timers fire and readings verify, against a trivial
//! in-test store (a `Vec` of cases and one of events). After every step:
//!
//! - at most one open case per (gateway, device, alarm kind);
//! - an alarm episode joins one case, ever (the first case it joined keeps it);
//! - an accepted command appends exactly its events (one per command, three for a case an alarm
//!   opens, one per due timer) with consecutive seqs, and the last one has the case's state;
//! - a refused command is refused for a reason the documented tables give (role, state, or the
//!   command's own condition) and the store is what it was;
//! - `stats::compute` over the events equals a direct count from the cases and the states seen.
//!
//! The expectations (who may do what, which state leads where, when a timer is due) are written
//! out here again from `model.rs`'s doc table, not taken from the engine.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use fumegrid_common::wire::{Alarm, AlarmKind, AlarmPhase};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::alarm::{AlarmSource, Decision, Ignored, on_alarm, on_readings_normal};
use super::calendar::WorkAmount;
use super::catalogue::Catalogue;
use super::model::tests::{T0, cat};
use super::model::{
    Action, Actor, AlarmRef, Case, CaseError, Command, Event, EventKind, Intake, Origin, ReworkTo,
    Role, State, TimerKind, apply, open,
};
use super::stats::{self, NONE_KEY, Period};
use super::timers::run_due;

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;
const GATEWAYS: [&str; 2] = ["gw-a", "gw-b"];
const DEVICES: [&str; 2] = ["dev-1", "dev-2"];
const KINDS: [AlarmKind; 3] = [
    AlarmKind::Exceedance,
    AlarmKind::PurifierIdle,
    AlarmKind::DeviceOffline,
];
const DEPARTMENTS: [&str; 4] = ["epb", "urban", "market", "street"];
const CATEGORIES: [&str; 6] = [
    "exceedance",
    "complaint",
    "purifier",
    "purifier_dirty",
    "device",
    "nope",
];
const REPORTERS: [&str; 2] = ["citizen-1", "citizen-2"];

/// One step, as raw choices (interpreted against the state when it runs, so shrinking keeps
/// sequences meaningful).
#[derive(Debug, Clone)]
enum Step {
    Alarm {
        gw: u8,
        dev: u8,
        kind: u8,
        episode: u8,
        phase: u8,
        suppressed: bool,
        /// Deliver the episode's last transition again instead of a new one.
        repeat: bool,
    },
    /// A case filed by hand: category index, actor index.
    File { category: u8, actor: u8 },
    /// A command on case `case % len`: action index, actor index, a parameter.
    Command {
        case: u8,
        action: u8,
        actor: u8,
        arg: u8,
    },
    /// Time passes (`dt` in minutes, hours or days), then the timer loop runs over every case.
    Tick { unit: u8, dt: u8 },
    /// The readings of case `case`'s device have been normal for `hours`.
    Normal { case: u8, hours: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    // Mostly the first gateway, device and kind, so that episodes meet cases in every state.
    let often_0 = |n: u8| prop_oneof![2 => Just(0u8), 1 => 0..n];
    prop_oneof![
        3 => (often_0(2), often_0(2), often_0(3), 0u8..3, 0u8..3, proptest::bool::weighted(0.1), proptest::bool::weighted(0.15))
            .prop_map(|(gw, dev, kind, episode, phase, suppressed, repeat)| Step::Alarm { gw, dev, kind, episode, phase, suppressed, repeat }),
        1 => (0u8..6, 0u8..6).prop_map(|(category, actor)| Step::File { category, actor }),
        12 => (any::<u8>(), 0u8..32, 0u8..16, any::<u8>())
            .prop_map(|(case, action, actor, arg)| Step::Command { case, action, actor, arg }),
        2 => (0u8..3, 1u8..30).prop_map(|(unit, dt)| Step::Tick { unit, dt }),
        1 => (any::<u8>(), 0u8..40).prop_map(|(case, hours)| Step::Normal { case, hours }),
    ]
}

/// The trivial store plus what the test saw on its own.
#[derive(Default)]
struct World {
    cases: Vec<Case>,
    events: Vec<Event>,
    /// (gateway, episode) → the case it joined first.
    owner: HashMap<(String, String), String>,
    /// (gateway, episode) → the last transition sent.
    sent: HashMap<(String, String), Alarm>,
    /// (time, state) after every accepted step, per case.
    history: HashMap<String, Vec<(i64, State)>>,
    /// The department each case was last with.
    last_department: HashMap<String, String>,
}

/// How often the interesting paths were reached over the whole run (a test that never gets
/// there cannot fail there).
#[derive(Debug, Default)]
struct Reached {
    alarm_opened: u32,
    alarm_linked: u32,
    linked_to_closed: u32,
    repeat: u32,
    closed: u32,
    forbidden: u32,
    illegal: u32,
    still_raised: u32,
    overridden: u32,
    timers: u32,
    escalated: u32,
    auto_verified: u32,
    reporter_rated: u32,
    overdue_in_stats: u32,
}

/// Who may do `action` on `case` (model.rs's table, written out again).
fn allowed(case: &Case, action: &Action, actor: &Actor) -> bool {
    let op = actor.role == Role::Operator;
    let sys = actor.role == Role::System;
    let own_dep = matches!(&actor.role, Role::Department { department }
        if case.department.as_deref() == Some(department.as_str()));
    let own_rep =
        actor.role == Role::Reporter && case.reporter.as_deref() == Some(actor.id.as_str());
    match action.name() {
        "register" | "dispatch" | "verify" | "fail_verification" => op || sys,
        "reject" | "transfer" | "close" | "extend" => op,
        "accept" | "return" | "handle" => own_dep,
        "rate" => op || own_rep,
        "comment" => op || sys || own_dep || own_rep,
        _ => sys, // link_alarm and the timers
    }
}

/// Where `action` leads from `from` (model.rs's table), ignoring whether a timer is due.
fn leads_to(from: State, action: &Action) -> Option<State> {
    use State as S;
    let to = match (action.name(), from) {
        ("register", S::Reported) => S::Registered,
        ("reject", S::Reported) => S::Rejected,
        ("dispatch", S::Registered) => S::Dispatched,
        ("accept", S::Dispatched) => S::Accepted,
        ("return" | "transfer", S::Dispatched | S::Accepted) => match action.name() {
            "return" => S::Registered,
            _ => S::Dispatched,
        },
        ("handle", S::Accepted) => S::Handled,
        ("verify", S::Handled) => S::Verified,
        ("fail_verification", S::Handled) => match action {
            Action::FailVerification {
                back_to: ReworkTo::Accepted,
            } => S::Accepted,
            _ => S::Dispatched,
        },
        ("close", S::Verified) => S::Closed,
        ("extend", S::Dispatched | S::Accepted) => from,
        ("rate", S::Closed) => from,
        ("comment" | "link_alarm", _) => from,
        ("sign_for_overdue", S::Dispatched) => from,
        ("handle_overdue", S::Dispatched | S::Accepted) => from,
        ("escalate", S::Registered | S::Dispatched | S::Accepted) => from,
        _ => return None,
    };
    Some(to)
}

/// Whether a timer has fallen due (timers.rs's table, written out again).
fn due_here(c: &Case, timer: TimerKind, now: i64) -> bool {
    let passed = |d: Option<i64>| d.is_some_and(|d| d <= now);
    match timer {
        TimerKind::SignFor => {
            c.state == State::Dispatched && !c.sign_for_overdue && passed(c.sign_for_deadline_ms)
        }
        TimerKind::Handle => {
            matches!(c.state, State::Dispatched | State::Accepted)
                && !c.handle_overdue
                && passed(c.handle_deadline_ms)
        }
        TimerKind::Escalate => {
            matches!(
                c.state,
                State::Registered | State::Dispatched | State::Accepted
            ) && !c.escalated
                && passed(c.escalate_at_ms)
        }
    }
}

fn too_long(by: WorkAmount) -> bool {
    match by {
        WorkAmount::Days(d) => d > super::model::MAX_EXTENSION_DAYS,
        WorkAmount::Hours(h) => h > super::model::MAX_EXTENSION_HOURS,
    }
}

/// The refusal (if any) the tables predict; `Err(None)`: accepted or refused only for a reason
/// the test cannot predict without the calendar (a deadline too far ahead).
fn predicted(
    c: &Case,
    action: &Action,
    actor: &Actor,
    now: i64,
) -> Result<State, Option<&'static str>> {
    if !allowed(c, action, actor) {
        return Err(Some("forbidden"));
    }
    let Some(to) = leads_to(c.state, action) else {
        return Err(Some("illegal"));
    };
    let known = |d: &str| DEPARTMENTS.contains(&d);
    match action {
        Action::Dispatch {
            department: Some(d),
        } if !known(d) => Err(Some("unknown_department")),
        Action::Transfer { department } if !known(department) => Err(Some("unknown_department")),
        Action::Transfer { department } if c.department.as_deref() == Some(department) => {
            Err(Some("same_department"))
        }
        Action::Verify { override_note } if c.alarm_active() => {
            let why = override_note
                .as_deref()
                .is_some_and(|n| !n.trim().is_empty());
            if why && actor.role == Role::Operator {
                Ok(to)
            } else {
                Err(Some("still_raised"))
            }
        }
        Action::Extend { by } if too_long(*by) => Err(Some("too_long")),
        Action::Extend { .. } => Err(None),
        Action::Rate { satisfaction } if !(1..=5).contains(satisfaction) => Err(Some("bad_rating")),
        Action::Rate { .. } if c.rating.is_some() => Err(Some("already_rated")),
        Action::Timer { timer } if !due_here(c, *timer, now) => Err(Some("not_due")),
        _ => Ok(to),
    }
}

fn error_name(e: &CaseError) -> &'static str {
    match e {
        CaseError::Forbidden { .. } => "forbidden",
        CaseError::IllegalTransition { .. } => "illegal",
        CaseError::UnknownDepartment(_) => "unknown_department",
        CaseError::SameDepartment(_) => "same_department",
        CaseError::AlarmStillRaised { .. } => "still_raised",
        CaseError::ExtensionTooLong(_) => "too_long",
        CaseError::DeadlineTooFar { .. } => "too_far",
        CaseError::BadRating(_) => "bad_rating",
        CaseError::AlreadyRated => "already_rated",
        CaseError::NotDue { .. } => "not_due",
        CaseError::UnknownCategory(_) => "unknown_category",
        CaseError::BeyondHorizon(_) => "beyond_horizon",
    }
}

fn actor_for(c: Option<&Case>, action: &Action, pick: u8) -> Actor {
    let own = c
        .and_then(|c| c.department.clone())
        .unwrap_or_else(|| "epb".into());
    let wrong = DEPARTMENTS
        .iter()
        .find(|d| **d != own)
        .copied()
        .unwrap_or("urban");
    let reporter = c
        .and_then(|c| c.reporter.clone())
        .unwrap_or_else(|| REPORTERS[0].into());
    let viewer = Actor {
        id: "viewer".into(),
        role: Role::Viewer,
    };
    let as_reporter = |id: &str| Actor {
        id: id.into(),
        role: Role::Reporter,
    };
    match pick {
        0 => Actor::operator("op"),
        1 => Actor::department("d-own", &own),
        2 => Actor::department("d-wrong", wrong),
        3 => as_reporter(&reporter),
        4 => as_reporter(if reporter == REPORTERS[0] {
            REPORTERS[1]
        } else {
            REPORTERS[0]
        }),
        5 => viewer,
        6 => Actor::system(),
        // Mostly the actor the action needs, so that cases get somewhere.
        _ => match action {
            Action::Accept | Action::Return | Action::Handle => Actor::department("d-own", &own),
            Action::Timer { .. } | Action::LinkAlarm { .. } => Actor::system(),
            Action::Rate { .. } if pick % 2 == 0 => as_reporter(&reporter),
            _ => Actor::operator("op"),
        },
    }
}

fn action_for(c: &Case, pick: u8, arg: u8) -> Action {
    let dep = |arg: u8| match arg % 6 {
        5 => "ghost".to_string(),
        i => DEPARTMENTS[usize::from(i) % 4].to_string(),
    };
    let forward = match c.state {
        State::Reported => Action::Register,
        State::Registered => Action::Dispatch { department: None },
        State::Dispatched => Action::Accept,
        State::Accepted => Action::Handle,
        State::Handled => Action::Verify {
            override_note: (arg % 2 == 0).then(|| "checked on site".into()),
        },
        State::Verified => Action::Close,
        State::Closed => Action::Rate {
            satisfaction: arg % 7,
        },
        State::Rejected => Action::Comment,
    };
    match pick {
        0 => Action::Register,
        1 => Action::Reject,
        2 => Action::Dispatch {
            department: (arg % 2 == 0).then(|| dep(arg / 2)),
        },
        3 => Action::Accept,
        4 => Action::Return,
        5 => Action::Transfer {
            department: dep(arg),
        },
        6 => Action::Handle,
        7 => Action::Verify {
            override_note: match arg % 3 {
                0 => None,
                1 => Some(" ".into()),
                _ => Some("checked on site".into()),
            },
        },
        8 => Action::FailVerification {
            back_to: if arg % 2 == 0 {
                ReworkTo::Dispatched
            } else {
                ReworkTo::Accepted
            },
        },
        9 => Action::Close,
        10 => Action::Extend {
            by: if arg % 2 == 0 {
                WorkAmount::Days(u32::from(arg % 40))
            } else {
                WorkAmount::Hours(u32::from(arg) * 2)
            },
        },
        11 => Action::Rate {
            satisfaction: arg % 7,
        },
        12 => Action::Comment,
        13 => Action::Timer {
            timer: [TimerKind::SignFor, TimerKind::Handle, TimerKind::Escalate]
                [usize::from(arg % 3)],
        },
        14 => Action::LinkAlarm {
            alarm: AlarmRef {
                gateway: "gw-x".into(),
                // A system link outside `on_alarm` (which alone keeps episodes apart): an
                // episode of this case's own.
                id: format!("stray:{}", c.id),
                phase: AlarmPhase::Cleared,
                ts_ms: T0,
            },
        },
        _ => forward,
    }
}

impl World {
    fn case(&self, id: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// Stores an accepted outcome: `old` is the case before (none for a new one).
    fn commit(
        &mut self,
        old: Option<&Case>,
        case: Case,
        events: Vec<Event>,
        want_events: usize,
        now: i64,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(events.len(), want_events, "events of {}", case.id);
        let first = old.map_or(1, |o| o.seq + 1);
        for (i, e) in events.iter().enumerate() {
            prop_assert_eq!(&e.case_id, &case.id);
            prop_assert_eq!(e.seq, first + i as u64, "seq of event {} of {}", i, case.id);
            prop_assert_eq!(e.ts_ms, now);
            if let Some(a) = &e.alarm {
                let key = (a.gateway.clone(), a.id.clone());
                let owner = self.owner.entry(key).or_insert_with(|| case.id.clone());
                prop_assert_eq!(
                    &*owner,
                    &case.id,
                    "episode {} of {} joined a second case",
                    a.id,
                    a.gateway
                );
            }
        }
        if let Some(last) = events.last() {
            prop_assert_eq!(last.seq, case.seq);
            prop_assert_eq!(last.to_state, case.state);
        } else {
            prop_assert_eq!(Some(&case), old, "no events, yet the case changed");
        }
        for a in &case.alarms {
            let key = (a.gateway.clone(), a.id.clone());
            let owner = self.owner.entry(key).or_insert_with(|| case.id.clone());
            prop_assert_eq!(&*owner, &case.id, "episode {} in two cases", a.id);
        }
        if let Some(d) = &case.department {
            self.last_department.insert(case.id.clone(), d.clone());
        }
        if !events.is_empty() {
            self.history
                .entry(case.id.clone())
                .or_default()
                .push((now, case.state));
        }
        self.events.extend(events);
        match self.cases.iter_mut().find(|c| c.id == case.id) {
            Some(slot) => *slot = case,
            None => self.cases.push(case),
        }
        Ok(())
    }

    fn check_invariants(&self, catalogue: &Catalogue) -> Result<(), TestCaseError> {
        // At most one open case per (gateway, device, kind).
        let mut open: HashMap<(&str, &str, AlarmKind), &str> = HashMap::new();
        for c in &self.cases {
            if let Origin::Alarm {
                gateway,
                device,
                kind,
            } = &c.origin
                && c.state.is_open()
                && let Some(other) = open.insert((gateway, device, *kind), &c.id)
            {
                prop_assert!(
                    false,
                    "two open cases for {} {} {:?}: {} and {}",
                    gateway,
                    device,
                    kind,
                    other,
                    c.id
                );
            }
        }
        // Every episode in one case only, and in the one it joined first.
        let mut seen: HashMap<(&str, &str), &str> = HashMap::new();
        for c in &self.cases {
            for a in &c.alarms {
                if let Some(other) = seen.insert((&a.gateway, &a.id), &c.id) {
                    prop_assert!(false, "episode {} in {} and {}", a.id, other, c.id);
                }
                prop_assert_eq!(
                    self.owner.get(&(a.gateway.clone(), a.id.clone())),
                    Some(&c.id)
                );
            }
        }
        // The log of each case: seqs 1..=case.seq, the last one in the case's state.
        let mut by_case: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
        for e in &self.events {
            by_case.entry(&e.case_id).or_default().push(e);
        }
        prop_assert_eq!(by_case.len(), self.cases.len());
        for c in &self.cases {
            let evs = &by_case[c.id.as_str()];
            let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
            prop_assert_eq!(seqs, (1..=c.seq).collect::<Vec<_>>(), "seqs of {}", c.id);
            prop_assert_eq!(evs.last().map(|e| e.to_state), Some(c.state));
        }
        self.check_stats(catalogue)
    }

    /// `stats::compute` over the log equals a direct count.
    fn check_stats(&self, catalogue: &Catalogue) -> Result<(), TestCaseError> {
        let s = stats::compute(&self.events, Period::all());
        let t = &s.total;
        let count = |f: &dyn Fn(&Case) -> bool| self.cases.iter().filter(|c| f(c)).count() as u64;
        let sum =
            |f: &dyn Fn(&Case) -> u32| self.cases.iter().map(|c| u64::from(f(c))).sum::<u64>();
        prop_assert_eq!(t.received, self.cases.len() as u64);
        prop_assert_eq!(t.registered, count(&|c| c.registered_ms.is_some()));
        prop_assert_eq!(t.closed, count(&|c| c.state == State::Closed));
        prop_assert_eq!(t.transfers, sum(&|c| c.transfers));
        prop_assert_eq!(t.reworks, sum(&|c| c.reworks));
        prop_assert_eq!(t.returns, sum(&|c| c.returns));
        prop_assert_eq!(t.extensions, sum(&|c| c.extensions));
        prop_assert_eq!(t.escalations, count(&|c| c.escalated));
        prop_assert_eq!(t.rated, count(&|c| c.rating.is_some()));
        let in_time = |c: &Case, d: i64| {
            matches!(
                self.history[&c.id]
                    .iter()
                    .take_while(|(ts, _)| *ts <= d)
                    .last()
                    .map(|(_, s)| *s),
                Some(State::Handled | State::Verified | State::Closed)
            )
        };
        let due = |c: &Case| c.handle_deadline_ms.is_some();
        let overdue = |c: &Case| c.handle_deadline_ms.is_some_and(|d| !in_time(c, d));
        prop_assert_eq!(t.due, count(&due));
        prop_assert_eq!(t.overdue, count(&overdue));
        prop_assert_eq!(
            t.closed_of_due,
            count(&|c| due(c) && c.state == State::Closed)
        );
        // Per category, department (the last one a case was with) and site.
        let group = |key: &dyn Fn(&Case) -> String| {
            let mut m: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
            for c in &self.cases {
                let e = m.entry(key(c)).or_default();
                e.0 += 1;
                e.1 += u64::from(c.state == State::Closed);
                e.2 += u64::from(overdue(c));
            }
            m
        };
        let of = |g: &BTreeMap<String, stats::Counts>| {
            g.iter()
                .map(|(k, c)| (k.clone(), (c.received, c.closed, c.overdue)))
                .collect::<BTreeMap<_, _>>()
        };
        prop_assert_eq!(of(&s.by_category), group(&|c| c.category.clone()));
        prop_assert_eq!(
            of(&s.by_department),
            group(&|c| self
                .last_department
                .get(&c.id)
                .cloned()
                .unwrap_or_else(|| NONE_KEY.into()))
        );
        prop_assert_eq!(
            of(&s.by_site),
            group(&|c| c.site.clone().unwrap_or_else(|| NONE_KEY.into()))
        );
        for k in s.by_category.keys() {
            prop_assert!(catalogue.category(k).is_some(), "{}", k);
        }
        Ok(())
    }
}

fn alarm_step(
    w: &mut World,
    reached: &mut Reached,
    s: (u8, u8, u8, u8, u8, bool, bool),
    now: i64,
    catalogue: &Catalogue,
) -> Result<(), TestCaseError> {
    let (gw, dev, kind, episode, phase, suppressed, repeat) = s;
    let gateway = GATEWAYS[usize::from(gw % 2)];
    let device = DEVICES[usize::from(dev % 2)];
    let kind = KINDS[usize::from(kind % 3)];
    let id = format!("{device}:{}:{episode}", kind.name());
    let key = (gateway.to_string(), id.clone());
    let a = match (repeat, w.sent.get(&key)) {
        (true, Some(last)) => last.clone(),
        _ => {
            let phase = [AlarmPhase::Raised, AlarmPhase::Updated, AlarmPhase::Cleared]
                [usize::from(phase % 3)];
            Alarm {
                id: id.clone(),
                device: device.into(),
                kind,
                metric: None,
                phase,
                started_ms: T0,
                ts_ms: now,
                cleared_ms: (phase == AlarmPhase::Cleared).then_some(now),
                value: None,
                peak: None,
                peak_ms: None,
                limit: None,
                suppressed,
                message: String::new(),
            }
        }
    };
    w.sent.insert(key.clone(), a.clone());
    let site = format!("site-{gateway}");
    let src = AlarmSource {
        gateway,
        site: Some(&site),
        grid_cell: None,
    };
    let new_id = format!("case-{}", w.cases.len() + 1);
    let owner = w.owner.get(&key).cloned();
    let open_for = w
        .cases
        .iter()
        .find(|c| {
            c.state.is_open()
                && c.origin
                    == Origin::Alarm {
                        gateway: gateway.into(),
                        device: device.into(),
                        kind,
                    }
        })
        .map(|c| c.id.clone());
    let d = on_alarm(&w.cases, &a, &src, &new_id, now, catalogue)
        .map_err(|e| TestCaseError::fail(format!("on_alarm failed: {e}")))?;
    // What the module doc says happens.
    let target = owner.clone().or(open_for);
    match d {
        Decision::Ignore(Ignored::Suppressed) => prop_assert!(a.suppressed),
        Decision::Ignore(Ignored::Repeat) => {
            let t = target.as_deref().and_then(|t| w.case(t));
            let seen = t.and_then(|c| c.alarms.iter().find(|x| x.gateway == gateway && x.id == id));
            prop_assert!(
                seen.is_some_and(|x| x.ts_ms >= a.ts_ms),
                "not a repeat: {:?}",
                a
            );
            reached.repeat += 1;
        }
        Decision::Ignore(Ignored::ClearedWithoutOpenCase) => {
            prop_assert!(!a.suppressed && target.is_none() && a.phase == AlarmPhase::Cleared);
        }
        Decision::Ignore(Ignored::NoCategory(k)) => prop_assert!(false, "no category for {:?}", k),
        Decision::Linked { case, events, .. } => {
            prop_assert!(!a.suppressed);
            prop_assert_eq!(Some(&case.id), target.as_ref(), "linked to the wrong case");
            let old = w.case(&case.id).cloned();
            if old.as_ref().is_some_and(|o| !o.state.is_open()) {
                reached.linked_to_closed += 1;
            }
            reached.alarm_linked += 1;
            w.commit(old.as_ref(), case, events, 1, now)?;
        }
        Decision::Opened { case, events, .. } => {
            prop_assert!(!a.suppressed && a.phase != AlarmPhase::Cleared);
            prop_assert!(
                target.is_none(),
                "opened {} although {:?} takes it",
                case.id,
                target
            );
            prop_assert_eq!(&case.id, &new_id);
            prop_assert_eq!(case.state, State::Dispatched);
            reached.alarm_opened += 1;
            w.commit(None, case, events, 3, now)?;
        }
    }
    Ok(())
}

fn command_step(
    w: &mut World,
    reached: &mut Reached,
    s: (u8, u8, u8, u8),
    now: i64,
    catalogue: &Catalogue,
) -> Result<(), TestCaseError> {
    let (case, action, actor, arg) = s;
    if w.cases.is_empty() {
        return Ok(());
    }
    // Half the time a case filed by hand (fewer of them than alarm cases).
    let filed: Vec<&Case> = w
        .cases
        .iter()
        .filter(|c| !matches!(c.origin, Origin::Alarm { .. }))
        .collect();
    let c = match case {
        128.. if !filed.is_empty() => filed[usize::from(case) % filed.len()].clone(),
        _ => w.cases[usize::from(case) % w.cases.len()].clone(),
    };
    let action = action_for(&c, action, arg);
    let who = actor_for(Some(&c), &action, actor);
    let want = predicted(&c, &action, &who, now);
    let before = (w.cases.clone(), w.events.len());
    match apply(&c, Command::new(action.clone()), &who, now, catalogue) {
        Ok((n, ev, _)) => {
            prop_assert!(
                matches!(want, Ok(_) | Err(None)),
                "{} by {:?} on a {} case accepted, expected {:?}",
                action.name(),
                who.role,
                c.state,
                want
            );
            if let Ok(to) = want {
                prop_assert_eq!(n.state, to);
            }
            if ev[0].override_note.is_some() {
                reached.overridden += 1;
            }
            if action.name() == "rate" && who.role == Role::Reporter {
                reached.reporter_rated += 1;
            }
            w.commit(Some(&c), n, ev, 1, now)?;
        }
        Err(e) => {
            let got = error_name(&e);
            match want {
                Err(Some(w)) => prop_assert_eq!(
                    got,
                    w,
                    "{} by {:?} on a {} case",
                    action.name(),
                    who.role,
                    c.state
                ),
                Err(None) => prop_assert_eq!(got, "too_far"),
                Ok(_) => prop_assert!(
                    false,
                    "{} by {:?} on a {} case refused: {}",
                    action.name(),
                    who.role,
                    c.state,
                    e
                ),
            }
            match got {
                "forbidden" => reached.forbidden += 1,
                "illegal" => reached.illegal += 1,
                "still_raised" => reached.still_raised += 1,
                _ => {}
            }
            // Nothing committed: the store is what it was.
            prop_assert_eq!(&before.0, &w.cases);
            prop_assert_eq!(before.1, w.events.len());
        }
    }
    Ok(())
}

fn file_step(
    w: &mut World,
    s: (u8, u8),
    now: i64,
    catalogue: &Catalogue,
) -> Result<(), TestCaseError> {
    let (category, actor) = s;
    let category = CATEGORIES[usize::from(category) % CATEGORIES.len()];
    let who = actor_for(None, &Action::Comment, actor % 7);
    let id = format!("case-{}", w.cases.len() + 1);
    let intake = Intake {
        category: category.into(),
        title: "smoke".into(),
        origin: if who.role == Role::Reporter {
            Origin::Citizen
        } else {
            Origin::Operator
        },
        site: (actor % 2 == 0).then(|| "site-walk-in".into()),
        grid_cell: None,
    };
    let r = open(&id, intake, &who, "", now, catalogue);
    let may = matches!(who.role, Role::Operator | Role::System | Role::Reporter);
    match r {
        Ok((c, ev, _)) => {
            prop_assert!(may && catalogue.category(category).is_some());
            prop_assert_eq!(c.state, State::Reported);
            prop_assert_eq!(
                c.reporter.is_some(),
                who.role == Role::Reporter,
                "reporter kept"
            );
            w.commit(None, c, ev, 1, now)?;
        }
        Err(CaseError::Forbidden { .. }) => prop_assert!(!may),
        Err(CaseError::UnknownCategory(_)) => {
            prop_assert!(may && catalogue.category(category).is_none());
        }
        Err(e) => prop_assert!(false, "open refused: {}", e),
    }
    Ok(())
}

fn tick_step(
    w: &mut World,
    reached: &mut Reached,
    now: i64,
    catalogue: &Catalogue,
) -> Result<(), TestCaseError> {
    for c in w.cases.clone() {
        let want = [TimerKind::SignFor, TimerKind::Handle, TimerKind::Escalate]
            .into_iter()
            .filter(|&t| due_here(&c, t, now))
            .count();
        let (n, ev, _) = run_due(&c, now, catalogue)
            .map_err(|e| TestCaseError::fail(format!("run_due: {e}")))?;
        reached.timers += ev.len() as u32;
        reached.escalated += ev.iter().filter(|e| e.kind == EventKind::Escalated).count() as u32;
        w.commit(Some(&c), n.clone(), ev, want, now)?;
        // Fired once: nothing is due right after.
        let again = run_due(&n, now, catalogue)
            .map_err(|e| TestCaseError::fail(format!("run_due: {e}")))?;
        prop_assert!(again.1.is_empty(), "timers of {} fired twice", n.id);
    }
    Ok(())
}

fn normal_step(
    w: &mut World,
    reached: &mut Reached,
    s: (u8, u8),
    now: i64,
    catalogue: &Catalogue,
) -> Result<(), TestCaseError> {
    let (case, hours) = s;
    if w.cases.is_empty() {
        return Ok(());
    }
    // Mostly a handled case (the only state it can verify).
    let handled: Vec<&Case> = w
        .cases
        .iter()
        .filter(|c| c.state == State::Handled)
        .collect();
    let c = match case {
        64.. if !handled.is_empty() => handled[usize::from(case) % handled.len()].clone(),
        _ => w.cases[usize::from(case) % w.cases.len()].clone(),
    };
    let since = now - i64::from(hours) * H;
    let minutes = catalogue
        .category(&c.category)
        .and_then(|k| k.verify_normal_minutes);
    let want = c.state == State::Handled
        && !c.alarm_active()
        && minutes.is_some_and(|m| now - since >= i64::from(m) * MIN);
    match on_readings_normal(&c, since, now, catalogue) {
        Ok(Some((n, ev, _))) => {
            prop_assert!(want, "verified {} early", c.id);
            prop_assert_eq!(n.state, State::Verified);
            reached.auto_verified += 1;
            w.commit(Some(&c), n, ev, 1, now)?;
        }
        Ok(None) => prop_assert!(!want, "{} not verified", c.id),
        Err(e) => prop_assert!(false, "on_readings_normal: {}", e),
    }
    Ok(())
}

fn run(steps: &[Step], catalogue: &Catalogue, reached: &mut Reached) -> Result<(), TestCaseError> {
    let mut w = World::default();
    let mut now = T0;
    for (i, s) in steps.iter().enumerate() {
        now += MIN;
        let at = |e: TestCaseError| TestCaseError::fail(format!("step {i} ({s:?}): {e}"));
        match *s {
            Step::Alarm {
                gw,
                dev,
                kind,
                episode,
                phase,
                suppressed,
                repeat,
            } => alarm_step(
                &mut w,
                reached,
                (gw, dev, kind, episode, phase, suppressed, repeat),
                now,
                catalogue,
            )
            .map_err(at)?,
            Step::File { category, actor } => {
                file_step(&mut w, (category, actor), now, catalogue).map_err(at)?
            }
            Step::Command {
                case,
                action,
                actor,
                arg,
            } => command_step(&mut w, reached, (case, action, actor, arg), now, catalogue)
                .map_err(at)?,
            Step::Tick { unit, dt } => {
                now += i64::from(dt) * [MIN, H, 24 * H][usize::from(unit % 3)];
                tick_step(&mut w, reached, now, catalogue).map_err(at)?;
            }
            Step::Normal { case, hours } => {
                normal_step(&mut w, reached, (case, hours), now, catalogue).map_err(at)?
            }
        }
        w.check_invariants(catalogue).map_err(at)?;
    }
    reached.closed += w.cases.iter().filter(|c| c.state == State::Closed).count() as u32;
    let s = stats::compute(&w.events, Period::all());
    reached.overdue_in_stats += u32::from(s.total.overdue > 0);
    Ok(())
}

/// Runs `cases` random step sequences through the engine, checking the invariants after every step.
fn explore(runner: &mut TestRunner, catalogue: &Catalogue) -> Reached {
    let reached = RefCell::new(Reached::default());
    let result = runner.run(&proptest::collection::vec(step(), 1..120), |steps| {
        run(&steps, catalogue, &mut reached.borrow_mut())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    reached.into_inner()
}

fn config() -> Config {
    Config {
        cases: 192,
        failure_persistence: None,
        ..Config::default()
    }
}

#[test]
fn the_case_engine_keeps_its_invariants_over_random_sequences() {
    // Fresh sequences on every run: a new run may find what the last one missed.
    explore(&mut TestRunner::new(config()), &cat());
}

#[test]
fn the_generator_reaches_every_path_the_invariants_are_about() {
    // A fixed seed, so how far the generator reaches is a property of the generator, not of luck:
    // with a random seed a rare path (auto-verification) was reached only 4 times in one CI run.
    let config = config();
    let rng = proptest::test_runner::TestRng::deterministic_rng(config.rng_algorithm);
    let r = explore(&mut TestRunner::new_with_rng(config, rng), &cat());
    let hits = [
        r.alarm_opened,
        r.alarm_linked,
        r.linked_to_closed,
        r.repeat,
        r.closed,
        r.forbidden,
        r.illegal,
        r.still_raised,
        r.overridden,
        r.timers,
        r.escalated,
        r.auto_verified,
        r.reporter_rated,
        r.overdue_in_stats,
    ];
    assert!(hits.iter().all(|&n| n >= 5), "{r:?}");
}
