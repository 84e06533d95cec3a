//! Alarms → cases, inside ingest's transaction: [`AlarmCases`] is the [`AlarmHook`] ingest's
//! commit calls for every newly stored alarm transition, so an acked alarm always has its case
//! (or is counted in `fumegrid_cases_alarm_without_case_total` with the reason it has none).
//! The decision is the pure engine's ([`crate::cases::alarm::on_alarm`]); the store only reads
//! and saves through the transaction it hands over ([`CaseTx`]).

use std::collections::HashMap;
use std::sync::Arc;

use fumegrid_common::wire::Alarm;

use super::stats_index::StatsIndex;
use crate::cases::alarm::{AlarmSource, Decision, Ignored, on_alarm};
use crate::cases::{Catalogue, Event, SiteInfo, case_id, case_id_prefix};
use crate::store::{AlarmHook, CaseTx, StoreError};

/// Casework's alarm handler for ingest's commit: the catalogue, where each gateway stands, and
/// the statistics index the saved case events go to (in commit order).
#[derive(Debug)]
pub struct AlarmCases {
    catalogue: Arc<Catalogue>,
    sites: HashMap<String, SiteInfo>,
    index: Option<Arc<StatsIndex>>,
    /// Case events saved in the transaction under way.
    saved: Vec<Event>,
}

impl AlarmCases {
    pub fn new(catalogue: Arc<Catalogue>) -> AlarmCases {
        AlarmCases {
            catalogue,
            sites: HashMap::new(),
            index: None,
            saved: Vec::new(),
        }
    }

    /// Site names and grid cells of gateways, given to the cases their alarms open.
    pub fn with_sites(mut self, sites: HashMap<String, SiteInfo>) -> AlarmCases {
        self.sites = sites;
        self
    }

    /// Appends the case events of every committed transaction to `index`.
    pub fn with_stats_index(mut self, index: Arc<StatsIndex>) -> AlarmCases {
        self.index = Some(index);
        self
    }
}

impl AlarmHook for AlarmCases {
    fn on_alarm(
        &mut self,
        tx: &mut dyn CaseTx,
        gateway: &str,
        alarm: &Alarm,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let site = self.sites.get(gateway);
        cases_on_alarm(
            tx,
            gateway,
            alarm,
            now_ms,
            &self.catalogue,
            site,
            &mut self.saved,
        )?;
        Ok(())
    }

    fn commit(
        &mut self,
        commit: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let saved = std::mem::take(&mut self.saved);
        match &self.index {
            Some(i) => i.commit(&saved, commit),
            None => commit(),
        }
    }

    fn rolled_back(&mut self) {
        self.saved.clear();
    }
}

/// The id the next case reported at `now_ms` gets.
pub fn new_case_id(
    tx: &mut dyn CaseTx,
    catalogue: &Catalogue,
    now_ms: i64,
) -> Result<String, StoreError> {
    let prefix = case_id_prefix(catalogue, now_ms);
    let n = tx.next_case_number(&prefix)?;
    Ok(case_id(&prefix, n))
}

/// What [`cases_on_alarm`] did with one alarm transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmOutcome {
    Opened(String),
    Linked(String),
    Ignored,
}

/// Why an acked alarm transition opened or joined no case (label of
/// `fumegrid_cases_alarm_without_case_total`).
fn no_case_reason(why: Ignored) -> &'static str {
    match why {
        Ignored::Suppressed => "suppressed",
        Ignored::Repeat => "repeat",
        Ignored::ClearedWithoutOpenCase => "cleared_without_case",
        Ignored::NoCategory(_) => "no_category",
    }
}

/// Counts (and for the reasons someone should look at, logs at WARN) an acked alarm transition
/// that opened or joined no case.
fn without_case(gateway: &str, alarm: &Alarm, reason: &'static str, detail: &str) {
    metrics::counter!(crate::telemetry::CASES_ALARM_WITHOUT_CASE, "reason" => reason).increment(1);
    // Alarm ids are bounded by ingest's validation.
    let id = &alarm.id;
    match reason {
        // Expected: opening hours or maintenance, a redelivery, the clear of such an episode.
        "suppressed" | "repeat" | "cleared_without_case" => {
            tracing::debug!(gateway, alarm = %id, reason, "alarm opens no case");
        }
        _ => tracing::warn!(
            gateway,
            alarm = %id,
            kind = alarm.kind.name(),
            reason,
            detail,
            "acked alarm opens no case"
        ),
    }
}

/// Feeds one newly stored alarm transition to the case engine and saves what it decides, inside
/// the caller's transaction. The engine sees the case the episode is already linked to (in any
/// state) and the open cases of its `(gateway, device, kind)`. Site and grid cell come from the
/// gateway's `site` (site default: the gateway id). An engine refusal is logged and ignored: a
/// case problem never blocks ingest; every transition that opens or joins no case is counted
/// (`fumegrid_cases_alarm_without_case_total`). The events saved are added to `saved`. A store error (not a refusal of
/// the save) fails the whole transaction.
pub fn cases_on_alarm(
    tx: &mut dyn CaseTx,
    gateway: &str,
    alarm: &Alarm,
    now_ms: i64,
    catalogue: &Catalogue,
    site: Option<&SiteInfo>,
    saved: &mut Vec<Event>,
) -> Result<AlarmOutcome, StoreError> {
    let mut cases = tx.open_cases_for(gateway, &alarm.device, alarm.kind)?;
    if let Some(own) = tx.episode_case(gateway, &alarm.id)?
        && !cases.iter().any(|x| x.id == own.id)
    {
        cases.insert(0, own);
    }
    let src = AlarmSource {
        gateway,
        site: Some(site.and_then(|s| s.site.as_deref()).unwrap_or(gateway)),
        grid_cell: site.and_then(|s| s.grid_cell.as_deref()),
    };
    let id = new_case_id(tx, catalogue, now_ms)?;
    let decision = match on_alarm(&cases, alarm, &src, &id, now_ms, catalogue) {
        Ok(d) => d,
        Err(e) => {
            metrics::counter!(crate::telemetry::CASES_REFUSED, "kind" => alarm.kind.name())
                .increment(1);
            without_case(gateway, alarm, "refused", &e.to_string());
            return Ok(AlarmOutcome::Ignored);
        }
    };
    let (case, events, effects, outcome) = match decision {
        Decision::Ignore(why) => {
            let detail = match why {
                Ignored::NoCategory(k) => format!(
                    "no category of the catalogue has alarm_kind = \"{}\"",
                    k.name()
                ),
                _ => String::new(),
            };
            without_case(gateway, alarm, no_case_reason(why), &detail);
            return Ok(AlarmOutcome::Ignored);
        }
        Decision::Opened {
            case,
            events,
            effects,
        } => {
            let o = AlarmOutcome::Opened(case.id.clone());
            (case, events, effects, o)
        }
        Decision::Linked {
            case,
            events,
            effects,
        } => {
            let o = AlarmOutcome::Linked(case.id.clone());
            (case, events, effects, o)
        }
    };
    match tx.save_case(&case, &events, &effects, now_ms) {
        Ok(()) => {
            if matches!(outcome, AlarmOutcome::Opened(_)) {
                metrics::counter!(crate::telemetry::CASES_OPENED, "source" => "alarm").increment(1);
            }
            tracing::info!(gateway, alarm = %alarm.id, case = %case.id, state = %case.state, ?outcome, "case updated from alarm");
            saved.extend(events);
            Ok(outcome)
        }
        Err(conflict @ (StoreError::Stale(_) | StoreError::Malformed(_))) => {
            // Cannot happen inside the single writer's transaction; never block ingest on it.
            tracing::error!(gateway, alarm = %alarm.id, %conflict, "cannot save case from alarm");
            without_case(gateway, alarm, "conflict", &conflict.to_string());
            Ok(AlarmOutcome::Ignored)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fumegrid_common::metric::Metric;
    use fumegrid_common::wire::{AlarmKind, AlarmPhase, Batch, Body, Item};

    use super::*;
    use crate::cases::model::{Action, Actor, Command, EventKind, State, apply};
    use crate::cases::stats::{Period, compute};
    use crate::cases::{Case, Catalogue};
    use crate::store::memory::MemoryStore;
    use crate::store::sqlite;
    use crate::store::{
        CasePage, CaseQuery, CaseStore, Committed, NoCases, Reader, Synchronous, Writer,
    };

    /// 2025-11-03 (a Monday) 10:00 at UTC+08:00.
    const T0: i64 = 1_762_135_200_000;

    /// Ingest's side of the store with casework's alarm hook, as the daemon wires them.
    struct Ingest {
        w: Box<dyn Both>,
        hook: Box<dyn AlarmHook>,
    }

    impl Ingest {
        fn commit(&mut self, b: &[&Batch], now: i64) -> Result<Vec<Committed>, StoreError> {
            self.w.commit_with(b, now, self.hook.as_mut())
        }
        fn with_cases(mut self, cat: Arc<Catalogue>) -> Ingest {
            self.hook = Box::new(AlarmCases::new(cat));
            self
        }
        fn with_sites(mut self, sites: HashMap<String, SiteInfo>) -> Ingest {
            let cat = Arc::new(Catalogue::builtin().expect("catalogue"));
            self.hook = Box::new(AlarmCases::new(cat).with_sites(sites));
            self
        }
        fn save_case(&mut self, c: &Case, ev: &[Event], now: i64) -> Result<(), StoreError> {
            self.w.save_case(c, ev, &[], now)
        }
        fn open_cases_for(
            &mut self,
            gateway: &str,
            device: &str,
            kind: AlarmKind,
        ) -> Result<Vec<Case>, StoreError> {
            self.w.open_cases_for(gateway, device, kind)
        }
    }

    /// Ingest's and casework's side of one store.
    trait Both: Writer + CaseStore {}
    impl<T: Writer + CaseStore> Both for T {}

    /// The same store twice: in SQLite (file `name`) and in memory — every check runs on both.
    fn stores(name: &str, cases: bool) -> Vec<(Ingest, Box<dyn Reader>)> {
        let d = std::env::temp_dir().join(format!("fumegrid-alarm-cases-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmpdir");
        let p = d.join(name);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
        }
        let mem = MemoryStore::new();
        let pairs: [(Box<dyn Both>, Box<dyn Reader>); 2] = [
            (
                Box::new(sqlite::open(&p, Synchronous::Normal).expect("open")),
                Box::new(sqlite::open_reader(&p).expect("reader")),
            ),
            (Box::new(mem.clone()), Box::new(mem)),
        ];
        pairs
            .into_iter()
            .map(|(w, r)| {
                let w = Ingest {
                    w,
                    hook: Box::new(NoCases),
                };
                let w = if cases {
                    w.with_cases(Arc::new(Catalogue::builtin().expect("catalogue")))
                } else {
                    w
                };
                (w, r)
            })
            .collect()
    }

    fn alarm(device: &str, kind: AlarmKind, phase: AlarmPhase, started: i64, ts: i64) -> Alarm {
        let metric = (kind == AlarmKind::Exceedance).then_some(Metric::FumeMgM3);
        Alarm {
            id: format!("{device}:{}:{started}", kind.name()),
            device: device.into(),
            kind,
            metric,
            phase,
            started_ms: started,
            ts_ms: ts,
            cleared_ms: (phase == AlarmPhase::Cleared).then_some(ts),
            value: metric.map(|_| 2.8),
            peak: metric.map(|_| 2.8),
            peak_ms: metric.map(|_| ts),
            limit: metric.map(|_| 2.0),
            suppressed: false,
            message: String::new(),
        }
    }

    fn batch(items: Vec<(u64, Alarm)>) -> Batch {
        Batch {
            gateway: "gw-1".into(),
            stream: "alarms".into(),
            sent_ms: 0,
            items: items
                .into_iter()
                .map(|(seq, a)| Item {
                    seq,
                    body: Body::Alarm(a),
                })
                .collect(),
        }
    }

    fn all(r: &dyn Reader) -> CasePage {
        r.cases(&CaseQuery::default()).expect("cases")
    }

    #[test]
    fn alarm_cases_carry_the_gateways_site_and_grid_cell() {
        for (w, r) in stores("sites.sqlite3", true) {
            let mut w = w.with_sites(
                [(
                    "gw-1".to_string(),
                    SiteInfo {
                        site: Some("Dongcheng food street".into()),
                        grid_cell: Some("DC-07-03".into()),
                        position: None,
                        devices: Default::default(),
                    },
                )]
                .into(),
            );
            let a = alarm("rest-1", AlarmKind::Exceedance, AlarmPhase::Raised, T0, T0);
            w.commit(&[&batch(vec![(1, a)])], T0).expect("commit");
            let c = &all(&*r).cases[0];
            assert_eq!(c.site.as_deref(), Some("Dongcheng food street"));
            assert_eq!(c.grid_cell.as_deref(), Some("DC-07-03"));
            let events = r.case_events_until(i64::MAX).expect("events");
            let st = compute(
                &events,
                Period {
                    from_ms: T0,
                    to_ms: T0 + 1,
                },
            );
            assert_eq!(st.by_grid_cell["DC-07-03"].received, 1, "{st:?}");
        }
    }

    #[test]
    fn an_exceedance_opens_one_case_and_repeats_link_to_it() {
        for (mut w, r) in stores("ingest.sqlite3", true) {
            let cat = Catalogue::builtin().expect("catalogue");
            let want_dep = cat
                .category_for_alarm(AlarmKind::Exceedance)
                .expect("exceedance category")
                .department
                .clone();
            use AlarmKind::Exceedance;
            use AlarmPhase::*;
            let raised = alarm("rest-1", Exceedance, Raised, T0, T0);
            w.commit(&[&batch(vec![(1, raised.clone())])], T0)
                .expect("commit");
            let page = all(&*r);
            assert_eq!(page.total, 1, "exactly one case");
            let c = &page.cases[0];
            assert_eq!(c.id, "C20251103-0001");
            assert_eq!(c.state, State::Dispatched);
            assert_eq!(c.department.as_deref(), Some(want_dep.as_str()));
            assert_eq!(c.site.as_deref(), Some("gw-1"));
            assert_eq!(c.alarms.len(), 1);
            assert!(c.sign_for_deadline_ms.is_some() && c.handle_deadline_ms.is_some());
            // A redelivery of the same item is a duplicate in the store: no event.
            w.commit(&[&batch(vec![(1, raised.clone())])], T0 + 5)
                .expect("redelivery");
            assert_eq!(r.case(&c.id).expect("c").expect("c").events.len(), 3);
            // The same episode, updated and cleared: linked, no second case.
            w.commit(
                &[&batch(vec![
                    (2, alarm("rest-1", Exceedance, Updated, T0, T0 + 60_000)),
                    (3, alarm("rest-1", Exceedance, Cleared, T0, T0 + 120_000)),
                ])],
                T0 + 120_000,
            )
            .expect("commit");
            // A new episode of the same (device, kind) while the case is open: linked too.
            w.commit(
                &[&batch(vec![(
                    4,
                    alarm("rest-1", Exceedance, Raised, T0 + 600_000, T0 + 600_000),
                )])],
                T0 + 600_000,
            )
            .expect("commit");
            let page = all(&*r);
            assert_eq!(page.total, 1, "still one case");
            let d = r.case(&c.id).expect("c").expect("c");
            let kinds: Vec<EventKind> = d.events.iter().map(|e| e.kind).collect();
            assert_eq!(
                kinds,
                [
                    EventKind::Reported,
                    EventKind::Registered,
                    EventKind::Dispatched,
                    EventKind::AlarmLinked,
                    EventKind::AlarmLinked,
                    EventKind::AlarmLinked,
                ]
            );
            assert_eq!(d.case.alarms.len(), 2, "two episodes");
            assert_eq!(
                d.case.state,
                State::Dispatched,
                "a cleared alarm does not close"
            );
            // Another kind on the same device is another case; the same kind elsewhere too.
            w.commit(
                &[&batch(vec![
                    (
                        5,
                        alarm("rest-1", AlarmKind::PurifierIdle, Raised, T0, T0 + 700_000),
                    ),
                    (6, alarm("rest-2", Exceedance, Raised, T0, T0 + 700_000)),
                ])],
                T0 + 700_000,
            )
            .expect("commit");
            let page = all(&*r);
            assert_eq!(page.total, 3);
            let mut ids: Vec<String> = page.cases.into_iter().map(|c| c.id).collect();
            ids.sort();
            assert_eq!(ids, ["C20251103-0001", "C20251103-0002", "C20251103-0003"]);
            assert_eq!(
                w.open_cases_for("gw-1", "rest-1", Exceedance)
                    .expect("open")
                    .len(),
                1
            );
        }
    }

    /// Issue 11 item 5 through ingest: the operator closes the case while the episode is
    /// raised; the episode's next `updated` (stored by a later commit, read back from the
    /// store) joins the closed case instead of opening a second one.
    #[test]
    fn a_later_transition_joins_its_closed_case_not_a_new_one() {
        use AlarmKind::Exceedance;
        use AlarmPhase::*;
        for (mut w, r) in stores("closed-episode.sqlite3", true) {
            let cat = Catalogue::builtin().expect("catalogue");
            w.commit(
                &[&batch(vec![(
                    1,
                    alarm("rest-1", Exceedance, Raised, T0, T0),
                )])],
                T0,
            )
            .expect("commit");
            let mut c = all(&*r).cases.remove(0);
            let dep = Actor::department("d", c.department.as_deref().expect("dispatched"));
            let op = Actor::operator("op-1");
            let steps = [
                (Action::Accept, &dep),
                (Action::Handle, &dep),
                (
                    Action::Verify {
                        override_note: Some("checked on site".into()),
                    },
                    &op,
                ),
                (Action::Close, &op),
            ];
            for (a, who) in steps {
                let (n, ev, _) = apply(&c, Command::new(a), who, T0 + 60_000, &cat).expect("step");
                w.save_case(&n, &ev, T0 + 60_000).expect("save");
                c = n;
            }
            assert_eq!(c.state, State::Closed);
            w.commit(
                &[&batch(vec![(
                    2,
                    alarm("rest-1", Exceedance, Updated, T0, T0 + 300_000),
                )])],
                T0 + 300_000,
            )
            .expect("commit");
            let page = all(&*r);
            assert_eq!(page.total, 1, "a second case: {:#?}", page.cases);
            let d = r.case(&c.id).expect("case").expect("exists");
            let last = d.events.last().expect("event");
            assert_eq!(
                (last.kind, last.to_state),
                (EventKind::AlarmLinked, State::Closed)
            );
            assert_eq!(d.case.alarms[0].phase, Updated);
            // A new episode of the device opens a new case.
            w.commit(
                &[&batch(vec![(
                    3,
                    alarm("rest-1", Exceedance, Raised, T0 + 400_000, T0 + 400_000),
                )])],
                T0 + 400_000,
            )
            .expect("commit");
            assert_eq!(all(&*r).total, 2);
        }
    }

    /// The counts of `fumegrid_cases_alarm_without_case_total` by `reason` (a minimal
    /// recorder of the metrics facade, installed for one thread).
    #[derive(Debug, Default)]
    struct NoCaseCounts(Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>);

    struct ReasonCell(
        Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
        String,
    );

    impl metrics::CounterFn for ReasonCell {
        fn increment(&self, value: u64) {
            let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
            *m.entry(self.1.clone()).or_default() += value;
        }
        fn absolute(&self, _value: u64) {}
    }

    impl metrics::Recorder for NoCaseCounts {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            if key.name() != "fumegrid_cases_alarm_without_case_total" {
                return metrics::Counter::noop();
            }
            let reason = key
                .labels()
                .find(|l| l.key() == "reason")
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            metrics::Counter::from_arc(Arc::new(ReasonCell(self.0.clone(), reason)))
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    /// Issue 11 item 7: an acked alarm that opens (or joins) no case is counted by reason.
    #[test]
    fn acked_alarms_without_a_case_are_counted_by_reason() {
        use AlarmKind::{Exceedance, SensorFault};
        use AlarmPhase::*;
        for (w, r) in stores("no-case.sqlite3", false) {
            // A catalogue in which no category takes sensor faults.
            let mut cat = Catalogue::builtin().expect("catalogue");
            cat.categories.retain(|c| c.alarm_kind != Some(SensorFault));
            let mut w = w.with_cases(Arc::new(cat));
            let mut suppressed = alarm("rest-2", Exceedance, Raised, T0, T0);
            suppressed.suppressed = true;
            let raised = alarm("rest-1", Exceedance, Raised, T0, T0);
            let rec = NoCaseCounts::default();
            metrics::with_local_recorder(&rec, || {
                w.commit(
                    &[&batch(vec![
                        (1, alarm("rest-1", SensorFault, Raised, T0, T0)),
                        (2, suppressed),
                        (3, alarm("rest-2", Exceedance, Cleared, T0, T0 + 60_000)),
                        (4, raised.clone()),
                        // The same transition again under another seq: a repeat for the case.
                        (5, raised),
                    ])],
                    T0 + 60_000,
                )
                .expect("commit");
            });
            assert_eq!(all(&*r).total, 1, "only the exceedance opened a case");
            let got = rec.0.lock().expect("counts").clone();
            let want: std::collections::BTreeMap<String, u64> = [
                ("cleared_without_case", 1),
                ("no_category", 1),
                ("repeat", 1),
                ("suppressed", 1),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn without_a_catalogue_alarms_open_no_case() {
        for (mut w, r) in stores("nocases.sqlite3", false) {
            w.commit(
                &[&batch(vec![(
                    1,
                    alarm("rest-1", AlarmKind::Exceedance, AlarmPhase::Raised, T0, T0),
                )])],
                T0,
            )
            .expect("commit");
            assert_eq!(all(&*r).total, 0);
        }
    }
}
