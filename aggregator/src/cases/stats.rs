//! Statistics of any period, from the event log alone.
//!
//! [`compute`] reads events (any order, any number of cases) and a period `[from, to)`. Only
//! events with `ts < to` are looked at, so the figures of a past period are what was known at its
//! end and do not change when it is recomputed later. Each case is counted under its category,
//! site and grid cell, and under the department it was last with before `to` (`(none)` when it
//! never was dispatched, likewise for a missing site or grid cell), so the groups of one
//! dimension add up to the total.
//!
//! Definitions (a case's *deadline* is its handling deadline in force at `to`: the `deadline_ms`
//! of its last `dispatched`, `transferred`, `extended` or `returned` event, none after a return):
//!
//! | figure | definition |
//! |---|---|
//! | received | cases reported in the period |
//! | registered | of those, cases registered before `to` |
//! | registration rate | registered / received |
//! | closed | `closed` events in the period |
//! | due (for closure) | cases whose deadline falls in the period |
//! | handled in time | a due case whose state at its deadline (after the last event at or before it) was handled, verified or closed |
//! | closed of due | due cases closed before `to` |
//! | closure rate | closed of due / due |
//! | on-time closure rate | (due cases closed before `to` and handled in time) / due |
//! | overdue | due cases not handled in time |
//! | median time to sign for | lower median over `accepted` events in the period of the time since the case was last sent to the department (dispatch, transfer or rework to dispatched) |
//! | median time to close | lower median over `closed` events in the period of the time since the case was reported |
//! | satisfaction | count and mean of `rated` events in the period |
//! | transfers, reworks, returns, extensions, escalations | events of that kind in the period |

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::{Event, EventKind, Source, State};

/// `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Period {
    pub fn all() -> Period {
        Period {
            from_ms: i64::MIN,
            to_ms: i64::MAX,
        }
    }
    pub fn contains(&self, t: i64) -> bool {
        self.from_ms <= t && t < self.to_ms
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub received: u64,
    pub registered: u64,
    pub registration_rate: Option<f64>,
    pub closed: u64,
    pub due: u64,
    pub closed_of_due: u64,
    pub closed_on_time: u64,
    pub closure_rate: Option<f64>,
    pub on_time_closure_rate: Option<f64>,
    pub overdue: u64,
    pub median_sign_for_ms: Option<i64>,
    pub median_close_ms: Option<i64>,
    pub rated: u64,
    pub satisfaction_mean: Option<f64>,
    pub transfers: u64,
    pub reworks: u64,
    pub returns: u64,
    pub extensions: u64,
    pub escalations: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub period: Period,
    pub total: Counts,
    pub by_category: BTreeMap<String, Counts>,
    pub by_department: BTreeMap<String, Counts>,
    pub by_site: BTreeMap<String, Counts>,
    pub by_grid_cell: BTreeMap<String, Counts>,
    /// How the cases came in: `sensor`, `citizen`, `drone`, `inspector` (each always present),
    /// so the share drones found is `by_source.drone.received / total.received`.
    pub by_source: BTreeMap<String, Counts>,
}

pub const NONE_KEY: &str = "(none)";

#[derive(Debug, Default, Clone)]
struct Acc {
    c: Counts,
    sign_for: Vec<i64>,
    close: Vec<i64>,
    rating_sum: u64,
}

impl Acc {
    fn merge(&mut self, o: Acc) {
        let (c, d) = (&mut self.c, o.c);
        c.received += d.received;
        c.registered += d.registered;
        c.closed += d.closed;
        c.due += d.due;
        c.closed_of_due += d.closed_of_due;
        c.closed_on_time += d.closed_on_time;
        c.overdue += d.overdue;
        c.rated += d.rated;
        c.transfers += d.transfers;
        c.reworks += d.reworks;
        c.returns += d.returns;
        c.extensions += d.extensions;
        c.escalations += d.escalations;
        self.rating_sum += o.rating_sum;
        self.sign_for.extend_from_slice(&o.sign_for);
        self.close.extend_from_slice(&o.close);
    }

    fn add<D>(&mut self, f: &Facts<D>) {
        let c = &mut self.c;
        c.received += u64::from(f.received);
        c.registered += u64::from(f.registered);
        c.closed += f.closed;
        c.due += u64::from(f.due);
        c.closed_of_due += u64::from(f.closed_of_due);
        c.closed_on_time += u64::from(f.closed_on_time);
        c.overdue += u64::from(f.overdue);
        c.rated += f.rated;
        c.transfers += f.transfers;
        c.reworks += f.reworks;
        c.returns += f.returns;
        c.extensions += f.extensions;
        c.escalations += f.escalations;
        self.rating_sum += f.rating_sum;
        self.sign_for.extend_from_slice(&f.sign_for);
        self.close.extend_from_slice(&f.close);
    }

    fn finish(mut self) -> Counts {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let mut c = self.c;
        c.registration_rate = ratio(c.registered, c.received);
        c.closure_rate = ratio(c.closed_of_due, c.due);
        c.on_time_closure_rate = ratio(c.closed_on_time, c.due);
        c.satisfaction_mean = ratio(self.rating_sum, c.rated);
        c.median_sign_for_ms = lower_median(&mut self.sign_for);
        c.median_close_ms = lower_median(&mut self.close);
        c
    }
}

pub fn lower_median(v: &mut [i64]) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

/// What statistics read of one event: [`compute`] feeds these from [`Event`]s, the in-memory
/// index (`casework/stats_index.rs`) from its compact log. `D` names a dimension value
/// (`&str`, or a small interned id); [`compute_cases`] turns it into text only per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact<D> {
    pub ts_ms: i64,
    pub kind: EventKind,
    pub to_state: State,
    pub deadline_ms: Option<i64>,
    pub rating: Option<u8>,
    pub category: D,
    pub source: Source,
    pub department: Option<D>,
    pub site: Option<D>,
    pub grid_cell: Option<D>,
}

impl<'a> Fact<&'a str> {
    pub fn of(e: &'a Event) -> Fact<&'a str> {
        Fact {
            ts_ms: e.ts_ms,
            kind: e.kind,
            to_state: e.to_state,
            deadline_ms: e.deadline_ms,
            rating: e.rating,
            category: &e.category,
            source: e.source,
            department: e.department.as_deref(),
            site: e.site.as_deref(),
            grid_cell: e.grid_cell.as_deref(),
        }
    }
}

/// What one case contributes.
#[derive(Debug)]
struct Facts<D> {
    category: Option<D>,
    source: Option<Source>,
    department: Option<D>,
    site: Option<D>,
    grid_cell: Option<D>,
    received: bool,
    registered: bool,
    closed: u64,
    due: bool,
    closed_of_due: bool,
    closed_on_time: bool,
    overdue: bool,
    sign_for: Vec<i64>,
    close: Vec<i64>,
    rated: u64,
    rating_sum: u64,
    transfers: u64,
    reworks: u64,
    returns: u64,
    extensions: u64,
    escalations: u64,
}

/// Facts of one case from its events (sorted by seq, all with `ts < to`).
fn facts<D: Copy>(events: &[Fact<D>], p: Period) -> Facts<D> {
    let mut f = Facts {
        category: None,
        source: None,
        department: None,
        site: None,
        grid_cell: None,
        received: false,
        registered: false,
        closed: 0,
        due: false,
        closed_of_due: false,
        closed_on_time: false,
        overdue: false,
        sign_for: Vec::new(),
        close: Vec::new(),
        rated: 0,
        rating_sum: 0,
        transfers: 0,
        reworks: 0,
        returns: 0,
        extensions: 0,
        escalations: 0,
    };
    let mut reported: Option<i64> = None;
    let mut sent: Option<i64> = None;
    let mut deadline: Option<i64> = None;
    let mut ever_registered = false;
    let mut ever_closed = false;
    for e in events {
        f.category = Some(e.category);
        f.source = Some(e.source);
        if e.department.is_some() {
            f.department = e.department;
        }
        if f.site.is_none() {
            f.site = e.site;
        }
        if f.grid_cell.is_none() {
            f.grid_cell = e.grid_cell;
        }
        let inside = p.contains(e.ts_ms);
        match e.kind {
            EventKind::Reported => reported = Some(e.ts_ms),
            EventKind::Registered => ever_registered = true,
            EventKind::Closed => {
                ever_closed = true;
                if inside {
                    f.closed += 1;
                    if let Some(r) = reported {
                        f.close.push(e.ts_ms - r);
                    }
                }
            }
            EventKind::Accepted if inside => {
                if let Some(s) = sent {
                    f.sign_for.push(e.ts_ms - s);
                }
            }
            EventKind::Rated if inside => {
                f.rated += 1;
                f.rating_sum += u64::from(e.rating.unwrap_or(0));
            }
            EventKind::Transferred if inside => f.transfers += 1,
            EventKind::VerificationFailed if inside => f.reworks += 1,
            EventKind::Returned if inside => f.returns += 1,
            EventKind::Extended if inside => f.extensions += 1,
            EventKind::Escalated if inside => f.escalations += 1,
            _ => {}
        }
        if e.to_state == State::Dispatched
            && matches!(
                e.kind,
                EventKind::Dispatched | EventKind::Transferred | EventKind::VerificationFailed
            )
        {
            sent = Some(e.ts_ms);
        }
        if matches!(
            e.kind,
            EventKind::Dispatched
                | EventKind::Transferred
                | EventKind::Extended
                | EventKind::Returned
        ) {
            deadline = e.deadline_ms;
        }
    }
    f.received = reported.is_some_and(|r| p.contains(r));
    f.registered = f.received && ever_registered;
    if let Some(d) = deadline.filter(|&d| p.contains(d)) {
        f.due = true;
        let at_deadline = events
            .iter()
            .take_while(|e| e.ts_ms <= d)
            .last()
            .map(|e| e.to_state);
        let in_time = matches!(
            at_deadline,
            Some(State::Handled | State::Verified | State::Closed)
        );
        f.closed_of_due = ever_closed;
        f.closed_on_time = ever_closed && in_time;
        f.overdue = !in_time;
    }
    f
}

/// Adds up cases one at a time (each one's facts, sorted by seq, all with `ts < to`), then
/// names the groups with `name`. The one definition of the figures: [`compute`] and the
/// in-memory index both end here.
#[derive(Debug)]
pub struct Tally<D> {
    period: Period,
    total: Acc,
    groups: [BTreeMap<Option<D>, Acc>; 4],
    sources: BTreeMap<Source, Acc>,
}

impl<D: Copy + Ord> Tally<D> {
    pub fn new(period: Period) -> Tally<D> {
        Tally {
            period,
            total: Acc::default(),
            groups: Default::default(),
            sources: Source::ALL.iter().map(|&s| (s, Acc::default())).collect(),
        }
    }

    /// One case's events, sorted by seq, all with `ts < to` (the caller leaves out later ones).
    pub fn case(&mut self, events: &[Fact<D>]) {
        debug_assert!(events.iter().all(|e| e.ts_ms < self.period.to_ms));
        if !events.is_empty() {
            let f = facts(events, self.period);
            self.add(&f);
        }
    }

    fn add(&mut self, f: &Facts<D>) {
        self.total.add(f);
        let keys = [f.category, f.department, f.site, f.grid_cell];
        for (g, k) in self.groups.iter_mut().zip(keys) {
            g.entry(k).or_default().add(f);
        }
        if let Some(s) = f.source {
            self.sources.entry(s).or_default().add(f);
        }
    }

    /// `name(dimension, id)`: dimensions 0..4 are category, department, site, grid cell.
    pub fn finish<'n>(self, name: impl Fn(usize, D) -> &'n str) -> Stats {
        let name = &name;
        let mut dim = 0;
        let [cat, dep, site, cell] = self.groups.map(|g| {
            let d = dim;
            dim += 1;
            // Ids are names one to one; `(none)` as a name and no value count together.
            let mut named: BTreeMap<String, Acc> = BTreeMap::new();
            for (k, a) in g {
                let k = k.map_or(NONE_KEY, |k| name(d, k));
                match named.get_mut(k) {
                    Some(acc) => acc.merge(a),
                    None => {
                        named.insert(k.to_string(), a);
                    }
                }
            }
            named.into_iter().map(|(k, a)| (k, a.finish())).collect()
        });
        Stats {
            period: self.period,
            total: self.total.finish(),
            by_category: cat,
            by_department: dep,
            by_site: site,
            by_grid_cell: cell,
            by_source: self
                .sources
                .into_iter()
                .map(|(s, a)| (s.name().to_string(), a.finish()))
                .collect(),
        }
    }
}

/// See the module doc.
pub fn compute(events: &[Event], period: Period) -> Stats {
    let mut evs: Vec<&Event> = events.iter().filter(|e| e.ts_ms < period.to_ms).collect();
    evs.sort_unstable_by(|a, b| (a.case_id.as_str(), a.seq).cmp(&(b.case_id.as_str(), b.seq)));
    let mut tally = Tally::new(period);
    let mut run: Vec<Fact<&str>> = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        run.push(Fact::of(e));
        if evs.get(i + 1).is_none_or(|n| n.case_id != e.case_id) {
            tally.case(&run);
            run.clear();
        }
    }
    tally.finish(|_, k| k)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cases::calendar::WorkAmount;
    use crate::cases::catalogue::Catalogue;
    use crate::cases::model::tests::{T0, cat};
    use crate::cases::model::{
        Action, Actor, Case, Command, Intake, Origin, ReworkTo, Role, TimerKind, apply, open,
    };
    use crate::cases::timers::run_due;

    const H: i64 = 3_600_000;

    /// splitmix64: the random source of the property test (the crate has no proptest
    /// dev-dependency yet; seeds are printed on failure, so a case replays exactly).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
            &v[self.below(v.len() as u64) as usize]
        }
    }

    /// What the test itself saw, independent of the events.
    #[derive(Debug, Default)]
    pub(crate) struct Seen {
        /// (time, state) after every successful command, per case.
        states: BTreeMap<String, Vec<(i64, State)>>,
        sign_for: Vec<i64>,
    }

    fn random_command(rng: &mut Rng, c: &Case) -> (Command, Actor) {
        let deps = ["epb", "urban", "market", "street"];
        let own = c.department.clone().unwrap_or_else(|| "epb".into());
        // Half the time the next step of the main path, so that cases get somewhere.
        let forward = match c.state {
            State::Reported => Some(Action::Register),
            State::Registered => Some(Action::Dispatch { department: None }),
            State::Dispatched => Some(Action::Accept),
            State::Accepted => Some(Action::Handle),
            State::Handled => Some(Action::verify()),
            State::Verified => Some(Action::Close),
            State::Closed => Some(Action::Rate {
                satisfaction: 1 + rng.below(5) as u8,
            }),
            State::Rejected => None,
        };
        let action = match rng.below(32) {
            16.. if forward.is_some() => forward.unwrap_or(Action::Comment),
            0 => Action::Register,
            1 => Action::Reject,
            2 => Action::Dispatch {
                department: (rng.below(2) == 0).then(|| rng.pick(&deps).to_string()),
            },
            3 | 4 => Action::Accept,
            5 => Action::Return,
            6 => Action::Transfer {
                department: rng.pick(&deps).to_string(),
            },
            7 | 8 => Action::Handle,
            9 => Action::verify(),
            10 => Action::FailVerification {
                back_to: if rng.below(2) == 0 {
                    ReworkTo::Dispatched
                } else {
                    ReworkTo::Accepted
                },
            },
            11 => Action::Close,
            12 => Action::Extend {
                by: WorkAmount::Hours(1 + rng.below(20) as u32),
            },
            13 => Action::Rate {
                satisfaction: rng.below(6) as u8,
            },
            14 => Action::Comment,
            _ => Action::Timer {
                timer: *rng.pick(&[TimerKind::SignFor, TimerKind::Handle, TimerKind::Escalate]),
            },
        };
        // Mostly the actor the action needs; sometimes anybody (refusals change nothing).
        let any_dep = deps[rng.below(4) as usize];
        let actor = if rng.below(8) == 0 {
            rng.pick(&[
                Actor::operator("op"),
                Actor::department("d", any_dep),
                Actor::system(),
                Actor {
                    id: "v".into(),
                    role: Role::Viewer,
                },
            ])
            .clone()
        } else {
            match action {
                Action::Accept | Action::Return | Action::Handle => Actor::department("d", &own),
                Action::Timer { .. } | Action::Verify { .. } if rng.below(2) == 0 => {
                    Actor::system()
                }
                Action::Timer { .. } => Actor::system(),
                _ => Actor::operator("op"),
            }
        };
        (Command::new(action), actor)
    }

    pub(crate) fn simulate(seed: u64, catalogue: &Catalogue) -> (Vec<Case>, Vec<Event>, Seen) {
        let mut rng = Rng(seed);
        let categories = [
            "exceedance",
            "purifier_idle",
            "purifier_dirty",
            "device_offline",
            "complaint",
        ];
        let sites = ["s1", "s2", "s3"];
        let mut cases: Vec<Case> = Vec::new();
        let mut events = Vec::new();
        let mut seen = Seen::default();
        let mut now = T0;
        for _ in 0..(50 + rng.below(250)) {
            now += rng.below(6 * H as u64) as i64;
            if cases.is_empty() || rng.below(6) == 0 {
                let intake = Intake {
                    category: rng.pick(&categories).to_string(),
                    title: "t".into(),
                    origin: Origin::Operator,
                    site: Some(rng.pick(&sites).to_string()),
                    grid_cell: (rng.below(4) > 0).then(|| format!("cell-{}", rng.below(3))),
                };
                let id = format!("c{}", cases.len());
                let (c, ev, _) =
                    open(&id, intake, &Actor::operator("op"), "", now, catalogue).expect("open");
                seen.states.entry(id).or_default().push((now, c.state));
                cases.push(c);
                events.extend(ev);
                continue;
            }
            let i = rng.below(cases.len() as u64) as usize;
            let result = if rng.below(10) == 0 {
                run_due(&cases[i], now, catalogue)
            } else {
                let (cmd, actor) = random_command(&mut rng, &cases[i]);
                apply(&cases[i], cmd, &actor, now, catalogue)
            };
            if let Ok((c, ev, _)) = result {
                if ev.iter().any(|e| e.kind == EventKind::Accepted) {
                    seen.sign_for
                        .push(now - cases[i].dispatched_ms.expect("dispatched"));
                }
                seen.states
                    .entry(c.id.clone())
                    .or_default()
                    .push((now, c.state));
                cases[i] = c;
                events.extend(ev);
            }
        }
        // The log is stored in any order.
        events.reverse();
        (cases, events, seen)
    }

    fn state_at(history: &[(i64, State)], t: i64) -> Option<State> {
        history
            .iter()
            .take_while(|(ts, _)| *ts <= t)
            .last()
            .map(|(_, s)| *s)
    }

    fn check_groups_add_up(s: &Stats, seed: u64) {
        for g in [
            &s.by_category,
            &s.by_department,
            &s.by_site,
            &s.by_grid_cell,
        ] {
            let sum = |f: fn(&Counts) -> u64| g.values().map(f).sum::<u64>();
            assert_eq!(sum(|c| c.received), s.total.received, "seed {seed}");
            assert_eq!(sum(|c| c.closed), s.total.closed, "seed {seed}");
            assert_eq!(sum(|c| c.due), s.total.due, "seed {seed}");
            assert_eq!(sum(|c| c.overdue), s.total.overdue, "seed {seed}");
            assert_eq!(sum(|c| c.transfers), s.total.transfers, "seed {seed}");
            assert_eq!(sum(|c| c.rated), s.total.rated, "seed {seed}");
        }
    }

    #[test]
    fn statistics_from_the_log_equal_a_direct_count() {
        let catalogue = cat();
        // Seeds that reached: closed, overdue, closed on time, transfer, rework, rating,
        // escalation, return.
        let mut reached = [0u32; 8];
        for seed in 0..300u64 {
            let (cases, events, seen) = simulate(seed, &catalogue);
            let s = compute(&events, Period::all());
            let t = &s.total;
            let count = |f: &dyn Fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count() as u64;
            let sum = |f: &dyn Fn(&Case) -> u32| cases.iter().map(|c| u64::from(f(c))).sum::<u64>();
            assert_eq!(t.received, cases.len() as u64, "seed {seed}");
            assert_eq!(
                t.registered,
                count(&|c| c.registered_ms.is_some()),
                "seed {seed}"
            );
            assert_eq!(
                t.closed,
                count(&|c| c.state == State::Closed),
                "seed {seed}"
            );
            assert_eq!(t.transfers, sum(&|c| c.transfers), "seed {seed}");
            assert_eq!(t.reworks, sum(&|c| c.reworks), "seed {seed}");
            assert_eq!(t.returns, sum(&|c| c.returns), "seed {seed}");
            assert_eq!(t.extensions, sum(&|c| c.extensions), "seed {seed}");
            assert_eq!(t.escalations, count(&|c| c.escalated), "seed {seed}");
            assert_eq!(t.rated, count(&|c| c.rating.is_some()), "seed {seed}");
            let rsum: u64 = cases.iter().filter_map(|c| c.rating).map(u64::from).sum();
            assert_eq!(
                t.satisfaction_mean,
                (t.rated > 0).then(|| rsum as f64 / t.rated as f64)
            );
            // Due, overdue and on time from the deadlines on the cases and the states seen.
            let due: Vec<&Case> = cases
                .iter()
                .filter(|c| c.handle_deadline_ms.is_some())
                .collect();
            let in_time = |c: &Case| {
                let d = c.handle_deadline_ms.unwrap_or(i64::MAX);
                matches!(
                    state_at(&seen.states[&c.id], d),
                    Some(State::Handled | State::Verified | State::Closed)
                )
            };
            assert_eq!(t.due, due.len() as u64, "seed {seed}");
            assert_eq!(
                t.overdue,
                due.iter().filter(|c| !in_time(c)).count() as u64,
                "seed {seed}"
            );
            assert_eq!(
                t.closed_of_due,
                due.iter().filter(|c| c.state == State::Closed).count() as u64,
                "seed {seed}"
            );
            assert_eq!(
                t.closed_on_time,
                due.iter()
                    .filter(|c| c.state == State::Closed && in_time(c))
                    .count() as u64,
                "seed {seed}"
            );
            let mut close: Vec<i64> = cases
                .iter()
                .filter_map(|c| c.closed_ms.map(|x| x - c.reported_ms))
                .collect();
            assert_eq!(t.median_close_ms, lower_median(&mut close), "seed {seed}");
            let mut sign_for = seen.sign_for.clone();
            assert_eq!(
                t.median_sign_for_ms,
                lower_median(&mut sign_for),
                "seed {seed}"
            );
            check_groups_add_up(&s, seed);
            for g in s.by_category.keys() {
                assert!(catalogue.category(g).is_some(), "{g}");
            }

            // Random sub-periods.
            let mut rng = Rng(seed ^ 0xABCD);
            for _ in 0..5 {
                let a = T0 + rng.below(400 * H as u64) as i64;
                let b = a + rng.below(400 * H as u64) as i64;
                let p = Period {
                    from_ms: a,
                    to_ms: b,
                };
                let s = compute(&events, p);
                assert_eq!(
                    s.total.received,
                    count(&|c| p.contains(c.reported_ms)),
                    "seed {seed}"
                );
                assert_eq!(
                    s.total.closed,
                    count(&|c| c.closed_ms.is_some_and(|x| p.contains(x))),
                    "seed {seed}"
                );
                assert_eq!(
                    s.total.registered,
                    count(&|c| p.contains(c.reported_ms) && c.registered_ms.is_some_and(|r| r < b)),
                    "seed {seed}"
                );
                check_groups_add_up(&s, seed);
            }
            for (k, hit) in [
                t.closed > 0,
                t.overdue > 0,
                t.closed_on_time > 0,
                t.transfers > 0,
                t.reworks > 0,
                t.rated > 0,
                t.escalations > 0,
                t.returns > 0,
            ]
            .into_iter()
            .enumerate()
            {
                reached[k] += u32::from(hit);
            }
        }
        // The generator reaches the interesting paths (a test that cannot fail is a defect).
        assert!(reached.iter().all(|&n| n >= 30), "{reached:?}");
    }

    #[test]
    fn a_worked_example() {
        let catalogue = cat();
        let op = Actor::operator("op");
        let epb = Actor::department("e", "epb");
        let intake = |site: &str| Intake {
            category: "exceedance".into(),
            title: "t".into(),
            origin: Origin::Operator,
            site: Some(site.into()),
            grid_cell: None,
        };
        let mut log = Vec::new();
        let mut run = |c: Case, steps: Vec<(Action, &Actor, i64)>| {
            let mut c = c;
            for (a, who, t) in steps {
                let (n, ev, _) = apply(&c, Command::new(a), who, t, &catalogue).expect("step");
                c = n;
                log.extend(ev);
            }
            c
        };
        // Case 1: registered, dispatched, signed for after 30 min, handled, verified, closed on
        // day 2, rated 4.
        let (c1, ev, _) = open("1", intake("s1"), &op, "", T0, &catalogue).expect("open");
        let mut all = ev;
        let c1 = run(
            c1,
            vec![
                (Action::Register, &op, T0),
                (Action::Dispatch { department: None }, &op, T0),
                (Action::Accept, &epb, T0 + H / 2),
                (Action::Handle, &epb, T0 + 3 * H),
                (Action::verify(), &op, T0 + 4 * H),
                (Action::Close, &op, T0 + 24 * H),
                (Action::Rate { satisfaction: 4 }, &op, T0 + 25 * H),
            ],
        );
        // Case 2: reported, never registered.
        let (_, ev, _) = open("2", intake("s2"), &op, "", T0 + H, &catalogue).expect("open");
        all.extend(ev);
        // Case 3: dispatched, never handled: overdue at its deadline.
        let (c3, ev, _) = open("3", intake("s1"), &op, "", T0, &catalogue).expect("open");
        all.extend(ev);
        let c3 = run(
            c3,
            vec![
                (Action::Register, &op, T0),
                (Action::Dispatch { department: None }, &op, T0),
                (Action::Accept, &epb, T0 + H + H / 2),
            ],
        );
        all.extend(log);
        assert_eq!(c1.state, State::Closed);
        let s = compute(&all, Period::all());
        let t = &s.total;
        assert_eq!(
            (t.received, t.registered, t.registration_rate),
            (3, 2, Some(2.0 / 3.0))
        );
        assert_eq!(
            (t.due, t.closed_of_due, t.closed_on_time, t.overdue),
            (2, 1, 1, 1)
        );
        assert_eq!(
            (t.closure_rate, t.on_time_closure_rate),
            (Some(0.5), Some(0.5))
        );
        assert_eq!(t.median_sign_for_ms, Some(H / 2));
        assert_eq!(t.median_close_ms, Some(24 * H));
        assert_eq!((t.rated, t.satisfaction_mean), (1, Some(4.0)));
        assert_eq!(s.by_site["s1"].received, 2);
        assert_eq!(s.by_department["epb"].due, 2);
        assert_eq!(s.by_department[NONE_KEY].received, 1);
        // The period before case 3's deadline: nothing due yet.
        let before = compute(
            &all,
            Period {
                from_ms: T0,
                to_ms: c3.handle_deadline_ms.expect("deadline"),
            },
        );
        assert_eq!((before.total.due, before.total.closed), (0, 1));
    }
}
