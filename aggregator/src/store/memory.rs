//! The in-memory store: the same traits as [`super::sqlite`] over plain collections, for the
//! unit tests of casework, notify and ingest (and any test that wants a store without a file).
//! It is held to the same contract suite as SQLite (`store/contract.rs`).
//!
//! A transaction works on a copy of the whole store and replaces it on success, so a failed
//! commit (or a refused [`CaseTx::save_case`] inside an alarm hook followed by an error) leaves
//! nothing behind — the atomicity SQLite gives, at a cost only a test can afford.
//! Clones share the data: one clone is the writer, another the reader.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use fumegrid_common::metric::Metric;
use fumegrid_common::wire::{Alarm, AlarmKind, Batch, Body, State as GwState};

use super::cases_sql::Contact;
use super::dedupe::Held;
use super::episode::{self, Episode, phase_name, phase_rank};
use super::evidence::{
    self, ARRIVING, CAMERA, COMPLETE, EvidenceReader, EvidenceWriter, Outcome, PictureEvent,
    PictureRow, Refusal, STORED, SnapshotRequest, UPLOAD, Upload,
};
use super::notify_sql::{Attempt, Notification, NotificationQuery};
use super::{
    AlarmDetail, AlarmHook, AlarmQuery, AlarmRow, AlarmState, AlarmTransitionRow, CaseDetail,
    CasePage, CaseQuery, CaseStore, CaseTx, Committed, DeviceRow, EventFacts, GatewayRow, Latest,
    PeriodRow, PeriodVals, Reader, ReadingQuery, ReadingRow, RollupRow, StoreError, Writer,
    body_digest, merge_period, quality_code, quality_name, rollup,
};
use crate::cases::model::Origin;
use crate::cases::{Case, Effect, Event};

/// A store in memory; clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
}

/// `(gateway, device, metric)`.
type SeriesKey = (String, String, String);

#[derive(Debug, Clone)]
struct Series {
    unit: Option<String>,
    /// `(ts, value, quality code)` of the newest reading.
    latest: Option<(i64, Option<f64>, i64)>,
    /// Every reading: `(ts, value, quality code)`.
    readings: Vec<(i64, Option<f64>, i64)>,
    /// Period aggregates by `(start_ms, period_s)`.
    periods: BTreeMap<(i64, u32), PeriodVals>,
}

#[derive(Debug, Clone, Default)]
struct Data {
    gateways: BTreeMap<String, GatewayRow>,
    /// `(gateway, stream)` → what is held and the digests of the conflict window
    /// ([`super::dedupe`]).
    items: HashMap<(String, String), Dedupe>,
    /// Seqs of the conflict window when not [`super::dedupe::WINDOW`] (tests make it small).
    window: Option<u64>,
    /// `(gateway, stream, seq, digest)` of the conflicting resends kept.
    conflicts: HashSet<(String, String, u64, i64)>,
    series: BTreeMap<SeriesKey, Series>,
    /// Gateway events (`started`, `gap`, `store_reset`) as stored: `(gateway, stream, seq)`.
    events: Vec<(String, String, u64)>,
    episodes: BTreeMap<(String, String), Episode>,
    /// `(gateway, alarm id)` → transitions in arrival order.
    transitions: HashMap<(String, String), Vec<AlarmTransitionRow>>,
    cases: BTreeMap<String, Case>,
    /// Case id → when the row last changed.
    case_updated_ms: HashMap<String, i64>,
    case_events: BTreeMap<String, Vec<Event>>,
    /// `(gateway, episode)` → case id.
    case_alarms: HashMap<(String, String), String>,
    /// Id prefix → highest number saved.
    counters: HashMap<String, u64>,
    contacts: HashMap<String, Contact>,
    notifications: Vec<Notification>,
    /// Pictures by SHA-256 (`parts_held` is computed when read).
    pictures: BTreeMap<String, PictureRow>,
    /// SHA-256 → part → bytes, while a picture is not in the blob store.
    parts: HashMap<String, BTreeMap<u32, Vec<u8>>>,
    /// `(sha256, case id)` → (uploaded by, when).
    uploads: BTreeMap<(String, String), (String, i64)>,
    /// Snapshot requests by id.
    requests: BTreeMap<String, SnapshotRequest>,
    /// Later captures of a picture's bytes: `(sha256, gateway, camera, captured_ms)` →
    /// (alarm, request).
    captures: BTreeMap<CaptureKey, (Option<String>, Option<String>)>,
}

/// One stream's dedupe state: the seq ranges held and the digests of the last
/// [`super::dedupe::WINDOW`] seqs.
#[derive(Debug, Clone, Default)]
struct Dedupe {
    held: Held,
    digests: BTreeMap<u64, i64>,
}

/// `(sha256, gateway, camera, captured_ms)` of a capture.
type CaptureKey = (String, String, String, i64);

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A store whose conflict window is `window` seqs (see [`super::dedupe`]).
    pub fn with_dedupe_window(window: u64) -> MemoryStore {
        let s = MemoryStore::default();
        s.lock().window = Some(window);
        s
    }

    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a copy of the data and keeps the copy only if `f` succeeded.
    fn transaction<T>(
        &self,
        f: impl FnOnce(&mut Data) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut g = self.lock();
        let mut copy = g.clone();
        let out = f(&mut copy)?;
        *g = copy;
        Ok(out)
    }
}

fn malformed(msg: String) -> StoreError {
    StoreError::Malformed(msg)
}

impl Data {
    /// [`super::evidence_sql::store_part`] over the maps.
    fn store_part(
        &mut self,
        gateway: &str,
        e: &fumegrid_common::wire::Evidence,
        now_ms: i64,
    ) -> Result<Option<PictureEvent>, StoreError> {
        let event = |outcome| PictureEvent {
            gateway: gateway.to_string(),
            camera: e.meta.camera.clone(),
            sha256: e.sha256.clone(),
            outcome,
        };
        if let Some(p) = self.pictures.get(&e.sha256)
            && (p.gateway.as_deref(), p.camera.as_deref(), p.captured_ms)
                != (
                    Some(gateway),
                    Some(e.meta.camera.as_str()),
                    e.meta.captured_ms,
                )
        {
            self.captures
                .entry((
                    e.sha256.clone(),
                    gateway.to_string(),
                    e.meta.camera.clone(),
                    e.meta.captured_ms,
                ))
                .or_insert_with(|| (e.meta.alarm.clone(), e.meta.request.clone()));
        }
        match self.pictures.get(&e.sha256) {
            None => {
                let m = &e.meta;
                self.pictures.insert(
                    e.sha256.clone(),
                    PictureRow {
                        sha256: e.sha256.clone(),
                        source: CAMERA.into(),
                        gateway: Some(gateway.to_string()),
                        camera: Some(m.camera.clone()),
                        devices: m.devices.clone(),
                        captured_ms: m.captured_ms,
                        trigger: Some(m.trigger.name().to_string()),
                        alarm: m.alarm.clone(),
                        request: m.request.clone(),
                        media: m.media.mime().to_string(),
                        size: m.size,
                        width: m.width,
                        height: m.height,
                        site: m.site.clone(),
                        readings: m
                            .readings
                            .iter()
                            .map(|(d, metric, v)| (d.clone(), metric.name().to_string(), *v))
                            .collect(),
                        state: ARRIVING.into(),
                        parts: e.parts,
                        parts_held: 0,
                        received_ms: now_ms,
                        stored_ms: None,
                        uploaded_by: None,
                    },
                );
            }
            Some(p) if p.state != ARRIVING => return Ok(None),
            Some(p) if p.gateway.as_deref() != Some(gateway) => return Ok(None),
            Some(p) if !evidence::fits(p.size, p.parts, e) => {
                return Ok(Some(event(Outcome::Refused(Refusal::Inconsistent))));
            }
            Some(_) => {}
        }
        let data = evidence::decode_part(e)?;
        let held = self.parts.entry(e.sha256.clone()).or_default();
        held.entry(e.part).or_insert(data);
        if (held.len() as u64) < u64::from(e.parts) {
            return Ok(None);
        }
        let parts: Vec<Vec<u8>> = held.values().cloned().collect();
        match evidence::assemble(&e.sha256, &parts) {
            Ok(bytes) => {
                if let Some(p) = self.pictures.get_mut(&e.sha256) {
                    p.state = COMPLETE.into();
                }
                Ok(Some(event(Outcome::Complete {
                    size: bytes.len() as u64,
                })))
            }
            Err(refusal) => {
                self.delete_picture(&e.sha256);
                Ok(Some(event(Outcome::Refused(refusal))))
            }
        }
    }

    fn delete_picture(&mut self, sha256: &str) -> bool {
        self.parts.remove(sha256);
        self.uploads.retain(|(s, _), _| s != sha256);
        self.captures.retain(|(s, ..), _| s != sha256);
        self.pictures.remove(sha256).is_some()
    }

    /// The cases picture `p` belongs to, sorted.
    fn picture_cases(&self, p: &PictureRow) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let (Some(g), Some(a)) = (&p.gateway, &p.alarm)
            && let Some(c) = self.case_alarms.get(&(g.clone(), a.clone()))
        {
            out.push(c.clone());
        }
        if let Some(r) = p.request.as_ref().and_then(|r| self.requests.get(r))
            && p.gateway.as_deref() == Some(r.gateway.as_str())
        {
            out.push(r.case_id.clone());
        }
        out.extend(
            self.uploads
                .keys()
                .filter(|(s, _)| s == &p.sha256)
                .map(|(_, c)| c.clone()),
        );
        for ((_, g, _, _), (alarm, request)) in self
            .captures
            .range((p.sha256.clone(), String::new(), String::new(), i64::MIN)..)
            .take_while(|((s, ..), _)| s == &p.sha256)
        {
            if let Some(c) = alarm
                .as_ref()
                .and_then(|a| self.case_alarms.get(&(g.clone(), a.clone())))
            {
                out.push(c.clone());
            }
            if let Some(r) = request.as_ref().and_then(|r| self.requests.get(r))
                && r.gateway == *g
            {
                out.push(r.case_id.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn picture_row(&self, p: &PictureRow) -> PictureRow {
        let mut p = p.clone();
        p.parts_held = if p.state == ARRIVING {
            self.parts.get(&p.sha256).map_or(0, |h| h.len() as u32)
        } else {
            p.parts
        };
        p
    }

    fn store_alarm(&mut self, gateway: &str, stream: &str, seq: u64, a: &Alarm, now_ms: i64) {
        let key = (gateway.to_string(), a.id.clone());
        self.transitions
            .entry(key.clone())
            .or_default()
            .push(AlarmTransitionRow {
                phase: phase_name(a.phase).to_string(),
                ts_ms: a.ts_ms,
                started_ms: a.started_ms,
                cleared_ms: a.cleared_ms,
                value: a.value,
                peak: a.peak,
                peak_ms: a.peak_ms,
                limit: a.limit,
                suppressed: a.suppressed,
                message: a.message.clone(),
                stream: stream.to_string(),
                seq,
                received_ms: now_ms,
            });
        let prev = self.episodes.remove(&key);
        let applied = episode::apply(prev, a, now_ms);
        self.episodes.insert(key, applied.episode);
    }

    fn store_reading(&mut self, gateway: &str, r: &fumegrid_common::reading::Reading) {
        let unit = match &r.metric {
            Metric::Custom(_) => r.unit.clone(),
            _ => None,
        };
        let key = (
            gateway.to_string(),
            r.device.clone(),
            r.metric.name().to_string(),
        );
        let s = self.series_mut(key, &r.metric, unit);
        let q = quality_code(r.quality);
        s.readings.push((r.ts_ms, r.value, q));
        if s.latest.is_none_or(|(t, _, _)| t <= r.ts_ms) {
            s.latest = Some((r.ts_ms, r.value, q));
        }
    }

    /// The series of `key`, made if new; a custom metric's series keeps the latest unit.
    fn series_mut(&mut self, key: SeriesKey, metric: &Metric, unit: Option<String>) -> &mut Series {
        let s = self.series.entry(key).or_insert(Series {
            unit: None,
            latest: None,
            readings: Vec::new(),
            periods: BTreeMap::new(),
        });
        if matches!(metric, Metric::Custom(_)) {
            s.unit = unit;
        }
        s
    }

    fn store_period(&mut self, gateway: &str, p: &fumegrid_common::wire::Period) {
        for m in &p.metrics {
            let unit = match &m.metric {
                Metric::Custom(_) => m.unit.clone(),
                _ => None,
            };
            let key = (
                gateway.to_string(),
                p.device.clone(),
                m.metric.name().to_string(),
            );
            let s = self.series_mut(key, &m.metric, unit);
            let v = PeriodVals::of(m);
            s.periods
                .entry((p.start_ms, p.period_s))
                .and_modify(|stored| *stored = merge_period(stored, &v))
                .or_insert(v);
            if let Some(l) = v.latest(p.start_ms, p.period_s) {
                if s.latest.is_none_or(|(t, _, _)| t <= l.0) {
                    s.latest = Some(l);
                }
            }
        }
    }

    fn alarm_row(&self, (gateway, id): &(String, String), e: &Episode) -> AlarmRow {
        AlarmRow {
            gateway: gateway.clone(),
            id: id.clone(),
            device: e.device.clone(),
            kind: e.kind.clone(),
            metric: e.metric.clone(),
            phase: phase_name(e.phase).to_string(),
            suppressed: e.suppressed,
            started_ms: e.started_ms,
            cleared_ms: e.cleared_ms,
            last_ts_ms: e.last_ts_ms,
            value: e.value,
            peak: e.peak,
            peak_ms: e.peak_ms,
            limit: e.limit,
            message: e.message.clone(),
            first_seen_ms: e.first_seen_ms,
            last_received_ms: e.last_received_ms,
            updates: e.updates,
        }
    }
}

/// A transaction on a copy of the data.
struct MemTx<'a>(&'a mut Data);

impl CaseTx for MemTx<'_> {
    fn open_cases_for(
        &mut self,
        gateway: &str,
        device: &str,
        kind: AlarmKind,
    ) -> Result<Vec<Case>, StoreError> {
        let mut out: Vec<Case> = self
            .0
            .cases
            .values()
            .filter(|c| c.state.is_open())
            .filter(|c| {
                matches!(&c.origin, Origin::Alarm { gateway: g, device: d, kind: k }
                    if g == gateway && d == device && *k == kind)
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.reported_ms, &a.id).cmp(&(b.reported_ms, &b.id)));
        Ok(out)
    }

    fn episode_case(&mut self, gateway: &str, episode: &str) -> Result<Option<Case>, StoreError> {
        let key = (gateway.to_string(), episode.to_string());
        Ok(self
            .0
            .case_alarms
            .get(&key)
            .and_then(|id| self.0.cases.get(id))
            .cloned())
    }

    fn next_case_number(&mut self, prefix: &str) -> Result<u64, StoreError> {
        let last = match self.0.counters.get(prefix) {
            Some(n) => *n,
            None => self
                .0
                .cases
                .keys()
                .filter_map(|id| id.strip_prefix(prefix)?.parse::<u64>().ok())
                .max()
                .unwrap_or(0),
        };
        Ok(last + 1)
    }

    fn save_case(
        &mut self,
        case: &Case,
        events: &[Event],
        effects: &[Effect],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let d = &mut *self.0;
        let n = events.len() as u64;
        if n == 0 || n > case.seq {
            return Err(malformed(format!(
                "{} event(s) for case {} at seq {}",
                n, case.id, case.seq
            )));
        }
        let first = case.seq - n + 1;
        for (i, e) in events.iter().enumerate() {
            if e.case_id != case.id || e.seq != first + i as u64 {
                return Err(malformed(format!(
                    "event {} of case {} does not follow seq {}",
                    e.seq,
                    e.case_id,
                    first + i as u64 - 1
                )));
            }
        }
        let stored_seq = d.cases.get(&case.id).map(|c| c.seq);
        let fits = match stored_seq {
            None => first == 1,
            Some(s) => first != 1 && s == first - 1,
        };
        if !fits {
            return Err(StoreError::Stale(case.id.clone()));
        }
        d.cases.insert(case.id.clone(), case.clone());
        d.case_updated_ms.insert(case.id.clone(), now_ms);
        if first == 1
            && let Some((day, num)) = case.id.rsplit_once('-')
            && let Ok(num) = num.parse::<u64>()
        {
            let c = d.counters.entry(format!("{day}-")).or_insert(0);
            *c = (*c).max(num);
        }
        for a in &case.alarms {
            d.case_alarms
                .entry((a.gateway.clone(), a.id.clone()))
                .or_insert_with(|| case.id.clone());
        }
        d.case_events
            .entry(case.id.clone())
            .or_default()
            .extend(events.iter().cloned());
        for e in effects {
            if let Effect::Notify {
                department,
                case_id,
                seq,
                kind,
            } = e
            {
                let kind = serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let id = d.notifications.len() as i64 + 1;
                d.notifications.push(Notification {
                    id,
                    department: department.clone(),
                    case_id: case_id.clone(),
                    seq: *seq,
                    kind,
                    created_ms: now_ms,
                    state: "pending".into(),
                    attempts: 0,
                    next_attempt_ms: now_ms,
                    last_attempt_ms: None,
                    last_status: None,
                    last_error: None,
                    delivered_ms: None,
                });
            }
        }
        Ok(())
    }

    fn save_contact(
        &mut self,
        case_id: &str,
        contact: &Contact,
        _now_ms: i64,
    ) -> Result<(), StoreError> {
        self.0.contacts.insert(case_id.to_string(), contact.clone());
        Ok(())
    }
}

impl Writer for MemoryStore {
    fn ensure_gateways(&mut self, ids: &[String]) -> Result<(), StoreError> {
        let mut g = self.lock();
        for id in ids {
            g.gateways.entry(id.clone()).or_insert_with(|| GatewayRow {
                id: id.clone(),
                online: false,
                last_seen_ms: None,
                status_ts_ms: None,
                version: None,
            });
        }
        Ok(())
    }

    fn commit_with(
        &mut self,
        batches: &[&Batch],
        now_ms: i64,
        hook: &mut dyn AlarmHook,
    ) -> Result<Vec<Committed>, StoreError> {
        let mut g = self.lock();
        let mut d = g.clone();
        let result = (|| {
            let mut out = Vec::with_capacity(batches.len());
            for b in batches {
                let key = (b.gateway.clone(), b.stream.clone());
                let mut c = Committed::default();
                for item in &b.items {
                    let (_, digest) = body_digest(&item.body);
                    let st = d.items.entry(key.clone()).or_default();
                    if !st.held.insert(item.seq) {
                        c.duplicates += 1;
                        // Beyond the window the content can no longer be compared.
                        if st.digests.get(&item.seq).is_some_and(|&d| d != digest) {
                            c.conflicts += 1;
                            let k = (b.gateway.clone(), b.stream.clone(), item.seq, digest);
                            c.conflicts_new += u64::from(d.conflicts.insert(k));
                            c.first_conflict.get_or_insert(item.seq);
                        }
                        continue;
                    }
                    st.digests.insert(item.seq, digest);
                    c.new += 1;
                    match &item.body {
                        Body::Reading(r) => d.store_reading(&b.gateway, r),
                        Body::Alarm(a) => {
                            d.store_alarm(&b.gateway, &b.stream, item.seq, a, now_ms);
                            hook.on_alarm(&mut MemTx(&mut d), &b.gateway, a, now_ms)?;
                        }
                        Body::Event(_) => {
                            d.events
                                .push((b.gateway.clone(), b.stream.clone(), item.seq));
                        }
                        Body::Period(p) => d.store_period(&b.gateway, p),
                        // Refused by validation until drones are stored (issue 15).
                        Body::Track(_) | Body::DronePhoto(_) => {}
                        Body::Evidence(e) => {
                            c.parts += 1;
                            if let Some(ev) = d.store_part(&b.gateway, e, now_ms)? {
                                hook.on_picture(&ev);
                            }
                        }
                    }
                }
                if let Some(st) = d.items.get_mut(&key)
                    && let Some(below) = st
                        .held
                        .window_floor(d.window.unwrap_or(super::dedupe::WINDOW))
                {
                    st.digests = st.digests.split_off(&(below + 1));
                }
                let gw = d
                    .gateways
                    .entry(b.gateway.clone())
                    .or_insert_with(|| GatewayRow {
                        id: b.gateway.clone(),
                        online: false,
                        last_seen_ms: None,
                        status_ts_ms: None,
                        version: None,
                    });
                gw.last_seen_ms = Some(now_ms);
                out.push(c);
            }
            let mut copy = Some(d);
            hook.commit(&mut || {
                if let Some(d) = copy.take() {
                    *g = d;
                }
                Ok(())
            })?;
            Ok(out)
        })();
        if result.is_err() {
            hook.rolled_back();
        }
        result
    }

    fn stream_holds(
        &mut self,
        gateway: &str,
        stream: &str,
        from_seq: u64,
    ) -> Result<(u64, u64), StoreError> {
        let g = self.lock();
        let Some(st) = g.items.get(&(gateway.to_string(), stream.to_string())) else {
            return Ok((0, 0));
        };
        Ok((st.held.high(), st.held.count_from(from_seq)))
    }

    fn set_status(
        &mut self,
        gateway: &str,
        state: GwState,
        ts_ms: Option<i64>,
        version: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut g = self.lock();
        let row = g
            .gateways
            .entry(gateway.to_string())
            .or_insert_with(|| GatewayRow {
                id: gateway.to_string(),
                online: false,
                last_seen_ms: None,
                status_ts_ms: None,
                version: None,
            });
        // An older status (a retained document replayed after a newer one) does not win.
        if let (Some(new), Some(old)) = (ts_ms, row.status_ts_ms)
            && new < old
        {
            return Ok(());
        }
        row.online = state == GwState::Online;
        row.status_ts_ms = ts_ms;
        if let Some(v) = version {
            row.version = Some(v.to_string());
        }
        row.last_seen_ms = Some(now_ms);
        Ok(())
    }
}

impl CaseStore for MemoryStore {
    fn case_tx(
        &mut self,
        f: &mut dyn FnMut(&mut dyn CaseTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.transaction(|d| f(&mut MemTx(d)))
    }

    fn load_case(&mut self, id: &str) -> Result<Option<Case>, StoreError> {
        Ok(self.lock().cases.get(id).cloned())
    }

    fn open_cases(&mut self) -> Result<Vec<Case>, StoreError> {
        let mut out: Vec<Case> = self
            .lock()
            .cases
            .values()
            .filter(|c| c.state.is_open())
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.reported_ms, &a.id).cmp(&(b.reported_ms, &b.id)));
        Ok(out)
    }

    fn case_event(&mut self, case_id: &str, seq: u64) -> Result<Option<Event>, StoreError> {
        Ok(self
            .lock()
            .case_events
            .get(case_id)
            .and_then(|ev| ev.iter().find(|e| e.seq == seq))
            .cloned())
    }

    fn scan_case_events(&mut self, f: &mut dyn FnMut(EventFacts<'_>)) -> Result<(), StoreError> {
        let g = self.lock();
        for events in g.case_events.values() {
            for e in events {
                f(EventFacts {
                    case_id: &e.case_id,
                    ts_ms: e.ts_ms,
                    kind: e.kind,
                    to_state: e.to_state,
                    deadline_ms: e.deadline_ms,
                    rating: e.rating.map(i64::from),
                    category: Some(e.category.as_str()),
                    department: e.department.as_deref(),
                    site: e.site.as_deref(),
                    grid_cell: e.grid_cell.as_deref(),
                });
            }
        }
        Ok(())
    }

    fn contact(&mut self, case_id: &str) -> Result<Option<Contact>, StoreError> {
        Ok(self.lock().contacts.get(case_id).cloned())
    }

    fn erase_contact(&mut self, case_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().contacts.remove(case_id).is_some())
    }

    fn erase_contacts_closed_before(&mut self, before_ms: i64) -> Result<usize, StoreError> {
        let mut g = self.lock();
        let d = &mut *g;
        let gone: Vec<String> = d
            .contacts
            .keys()
            .filter(|id| {
                d.cases.get(*id).is_some_and(|c| {
                    let since = c
                        .closed_ms
                        .or_else(|| d.case_updated_ms.get(*id).copied())
                        .unwrap_or(i64::MAX);
                    !c.state.is_open() && since < before_ms
                })
            })
            .cloned()
            .collect();
        for id in &gone {
            d.contacts.remove(id);
        }
        Ok(gone.len())
    }

    fn device_last_reading_ms(
        &mut self,
        gateway: &str,
        device: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .lock()
            .series
            .iter()
            .filter(|((g, d, _), _)| g == gateway && d == device)
            .filter_map(|(_, s)| s.latest.map(|l| l.0))
            .max())
    }

    fn due_notifications(
        &mut self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let g = self.lock();
        let mut first_of: BTreeMap<&str, &Notification> = BTreeMap::new();
        for n in g.notifications.iter().filter(|n| n.state == "pending") {
            first_of.entry(n.department.as_str()).or_insert(n);
        }
        let mut due: Vec<Notification> = first_of
            .into_values()
            .filter(|n| n.next_attempt_ms <= now_ms)
            .cloned()
            .collect();
        due.sort_by_key(|n| n.id);
        due.truncate(limit as usize);
        Ok(due)
    }

    fn next_notification_ms(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .lock()
            .notifications
            .iter()
            .filter(|n| n.state == "pending")
            .map(|n| n.next_attempt_ms)
            .min())
    }

    fn record_attempt(
        &mut self,
        id: i64,
        attempt: &Attempt,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut g = self.lock();
        let Some(n) = g.notifications.iter_mut().find(|n| n.id == id) else {
            return Ok(());
        };
        let counts = !matches!(attempt, Attempt::Unrouted);
        if counts {
            n.attempts += 1;
            n.last_attempt_ms = Some(now_ms);
        }
        n.delivered_ms = None;
        match attempt {
            Attempt::Delivered { status } => {
                n.state = "delivered".into();
                n.last_status = Some(*status);
                n.last_error = None;
                n.delivered_ms = Some(now_ms);
            }
            Attempt::Retry {
                status,
                error,
                next_ms,
            } => {
                n.state = "pending".into();
                n.last_status = *status;
                n.last_error = Some(error.clone());
                n.next_attempt_ms = *next_ms;
            }
            Attempt::Failed { status, error } => {
                n.state = "failed".into();
                n.last_status = *status;
                n.last_error = Some(error.clone());
            }
            Attempt::Unrouted => {
                n.state = "unrouted".into();
                n.last_status = None;
                n.last_error = Some("no webhook is configured for this department".into());
            }
        }
        Ok(())
    }
}

impl Reader for MemoryStore {
    fn gateways(&self) -> Result<Vec<GatewayRow>, StoreError> {
        Ok(self.lock().gateways.values().cloned().collect())
    }

    fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        let g = self.lock();
        let mut out: Vec<DeviceRow> = Vec::new();
        for ((gw, dev, metric), s) in &g.series {
            let Some((ts, value, q)) = s.latest else {
                continue;
            };
            let latest = Latest {
                metric: metric.clone(),
                unit: unit_of(metric, s.unit.clone()),
                value,
                quality: quality_name(q),
                ts_ms: ts,
            };
            match out.last_mut() {
                Some(d) if &d.gateway == gw && &d.device == dev => d.latest.push(latest),
                _ => out.push(DeviceRow {
                    gateway: gw.clone(),
                    device: dev.clone(),
                    latest: vec![latest],
                }),
            }
        }
        Ok(out)
    }

    fn readings(&self, q: &ReadingQuery) -> Result<Vec<ReadingRow>, StoreError> {
        let g = self.lock();
        let mut out: Vec<ReadingRow> = Vec::new();
        for ((gw, dev, metric), s) in &g.series {
            if dev != &q.device
                || q.gateway.as_ref().is_some_and(|x| x != gw)
                || q.metric.as_ref().is_some_and(|x| x != metric)
            {
                continue;
            }
            for &(ts, value, quality) in &s.readings {
                if ts >= q.from_ms && ts < q.to_ms {
                    out.push(ReadingRow {
                        gateway: gw.clone(),
                        metric: metric.clone(),
                        unit: unit_of(metric, s.unit.clone()),
                        ts_ms: ts,
                        value,
                        quality: quality_name(quality),
                    });
                }
            }
        }
        out.sort_by(|a, b| (a.ts_ms, &a.metric).cmp(&(b.ts_ms, &b.metric)));
        out.truncate(q.limit as usize);
        Ok(out)
    }

    fn periods(&self, q: &ReadingQuery) -> Result<Vec<PeriodRow>, StoreError> {
        let g = self.lock();
        let mut out: Vec<PeriodRow> = Vec::new();
        for ((gw, dev, metric), s) in &g.series {
            if dev != &q.device
                || q.gateway.as_ref().is_some_and(|x| x != gw)
                || q.metric.as_ref().is_some_and(|x| x != metric)
            {
                continue;
            }
            for (&(start_ms, period_s), vals) in &s.periods {
                if start_ms >= q.from_ms && start_ms < q.to_ms {
                    out.push(PeriodRow {
                        gateway: gw.clone(),
                        metric: metric.clone(),
                        unit: unit_of(metric, s.unit.clone()),
                        start_ms,
                        period_s,
                        vals: *vals,
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            (a.start_ms, &a.metric, a.period_s, &a.gateway)
                .cmp(&(b.start_ms, &b.metric, b.period_s, &b.gateway))
        });
        out.truncate(q.limit as usize);
        Ok(out)
    }

    fn rollups(&self, q: &ReadingQuery, level: usize) -> Result<Vec<RollupRow>, StoreError> {
        let g = self.lock();
        let mut out: Vec<RollupRow> = Vec::new();
        for ((gw, dev, metric), s) in &g.series {
            if dev != &q.device
                || q.gateway.as_ref().is_some_and(|x| x != gw)
                || q.metric.as_ref().is_some_and(|x| x != metric)
                || level >= rollup::LEVELS.len()
            {
                continue;
            }
            // Recomputed from everything held: the reference SQLite's kept rollups match.
            let periods: Vec<rollup::PeriodAt> =
                s.periods.iter().map(|(&(t, p), v)| (t, p, *v)).collect();
            let all = rollup::recompute(&s.readings, &periods);
            let unit = unit_of(metric, s.unit.clone());
            for (start, b) in &all[level] {
                if *start >= q.from_ms && *start < q.to_ms {
                    out.push(RollupRow::new(gw, metric, unit.clone(), *start, b));
                }
            }
        }
        out.sort_by(|a, b| {
            (a.start_ms, &a.metric, &a.gateway).cmp(&(b.start_ms, &b.metric, &b.gateway))
        });
        out.truncate(q.limit as usize);
        Ok(out)
    }

    fn alarms(&self, q: &AlarmQuery) -> Result<Vec<AlarmRow>, StoreError> {
        let g = self.lock();
        let mut out: Vec<AlarmRow> = g
            .episodes
            .iter()
            .filter(|((gw, _), e)| {
                e.started_ms < q.to_ms
                    && e.cleared_ms.unwrap_or(q.from_ms) >= q.from_ms
                    && match q.state {
                        AlarmState::Open => phase_name(e.phase) != "cleared",
                        AlarmState::Cleared => phase_name(e.phase) == "cleared",
                        AlarmState::All => true,
                    }
                    && q.gateway.as_ref().is_none_or(|x| x == gw)
                    && q.device.as_ref().is_none_or(|x| x == &e.device)
                    && q.kind.as_ref().is_none_or(|x| x == &e.kind)
                    && q.suppressed.is_none_or(|x| x == e.suppressed)
            })
            .map(|(k, e)| g.alarm_row(k, e))
            .collect();
        out.sort_by(|a, b| {
            b.started_ms
                .cmp(&a.started_ms)
                .then_with(|| (&a.gateway, &a.id).cmp(&(&b.gateway, &b.id)))
        });
        out.truncate(q.limit as usize);
        Ok(out)
    }

    fn alarm(&self, gateway: &str, id: &str) -> Result<Option<AlarmDetail>, StoreError> {
        let g = self.lock();
        let key = (gateway.to_string(), id.to_string());
        let Some(e) = g.episodes.get(&key) else {
            return Ok(None);
        };
        let mut transitions = g.transitions.get(&key).cloned().unwrap_or_default();
        // Stable: arrival order breaks ties, as the id column does in SQL.
        transitions.sort_by_key(|t| {
            let rank = episode::phase_from_name(&t.phase).map_or(3, phase_rank);
            (t.ts_ms, rank)
        });
        Ok(Some(AlarmDetail {
            alarm: g.alarm_row(&key, e),
            transitions,
        }))
    }

    fn case(&self, id: &str) -> Result<Option<CaseDetail>, StoreError> {
        let g = self.lock();
        Ok(g.cases.get(id).map(|c| CaseDetail {
            case: c.clone(),
            events: g.case_events.get(id).cloned().unwrap_or_default(),
        }))
    }

    fn contact(&self, case_id: &str) -> Result<Option<Contact>, StoreError> {
        Ok(self.lock().contacts.get(case_id).cloned())
    }

    fn cases(&self, q: &CaseQuery) -> Result<CasePage, StoreError> {
        let g = self.lock();
        let mut all: Vec<&Case> = g
            .cases
            .values()
            .filter(|c| {
                let (origin, device) = match &c.origin {
                    Origin::Alarm { device, .. } => ("alarm", Some(device.as_str())),
                    Origin::Citizen => ("citizen", None),
                    Origin::Operator => ("operator", None),
                };
                c.reported_ms >= q.from_ms
                    && c.reported_ms < q.to_ms
                    && q.state.as_deref().is_none_or(|s| s == c.state.name())
                    && q.category.as_ref().is_none_or(|x| x == &c.category)
                    && q.department
                        .as_deref()
                        .is_none_or(|x| Some(x) == c.department.as_deref())
                    && q.device.as_deref().is_none_or(|x| Some(x) == device)
                    && q.origin.as_deref().is_none_or(|x| x == origin)
                    && q.open.is_none_or(|o| o == c.state.is_open())
            })
            .collect();
        all.sort_by(|a, b| (b.reported_ms, &b.id).cmp(&(a.reported_ms, &a.id)));
        let total = all.len() as u64;
        let cases = all
            .into_iter()
            .skip(q.offset as usize)
            .take(q.limit as usize)
            .cloned()
            .collect();
        Ok(CasePage { total, cases })
    }

    fn case_events_until(&self, to_ms: i64) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .lock()
            .case_events
            .values()
            .flatten()
            .filter(|e| e.ts_ms < to_ms)
            .cloned()
            .collect())
    }

    fn notifications(&self, q: &NotificationQuery) -> Result<(u64, Vec<Notification>), StoreError> {
        let g = self.lock();
        let mut all: Vec<&Notification> = g
            .notifications
            .iter()
            .filter(|n| {
                q.department.as_ref().is_none_or(|x| x == &n.department)
                    && q.case_id.as_ref().is_none_or(|x| x == &n.case_id)
                    && q.state.as_ref().is_none_or(|x| x == &n.state)
            })
            .collect();
        all.sort_by_key(|n| std::cmp::Reverse(n.id));
        let total = all.len() as u64;
        Ok((
            total,
            all.into_iter()
                .skip(q.offset as usize)
                .take(q.limit as usize)
                .cloned()
                .collect(),
        ))
    }
}

impl EvidenceWriter for MemoryStore {
    fn pictures_to_move(&mut self, limit: u32) -> Result<Vec<String>, StoreError> {
        let g = self.lock();
        let mut v: Vec<(&i64, &String)> = g
            .pictures
            .values()
            .filter(|p| p.state == COMPLETE)
            .map(|p| (&p.received_ms, &p.sha256))
            .collect();
        v.sort();
        Ok(v.into_iter()
            .take(limit as usize)
            .map(|(_, s)| s.clone())
            .collect())
    }

    fn assembled(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let g = self.lock();
        if g.pictures.get(sha256).is_none_or(|p| p.state != COMPLETE) {
            return Ok(None);
        }
        Ok(g.parts
            .get(sha256)
            .map(|h| h.values().flatten().copied().collect()))
    }

    fn mark_stored(&mut self, sha256: &str, now_ms: i64) -> Result<bool, StoreError> {
        let mut g = self.lock();
        let done = match g.pictures.get_mut(sha256) {
            Some(p) if p.state == COMPLETE => {
                p.state = STORED.into();
                p.stored_ms = Some(now_ms);
                true
            }
            _ => false,
        };
        g.parts.remove(sha256);
        Ok(done)
    }

    fn add_upload(&mut self, u: &Upload, now_ms: i64) -> Result<bool, StoreError> {
        let mut g = self.lock();
        let new = !g.pictures.contains_key(&u.sha256);
        if new {
            g.pictures.insert(
                u.sha256.clone(),
                PictureRow {
                    sha256: u.sha256.clone(),
                    source: UPLOAD.into(),
                    gateway: None,
                    camera: None,
                    devices: Vec::new(),
                    captured_ms: now_ms,
                    trigger: None,
                    alarm: None,
                    request: None,
                    media: u.media.clone(),
                    size: u.size,
                    width: u.width,
                    height: u.height,
                    site: String::new(),
                    readings: Vec::new(),
                    state: STORED.into(),
                    parts: 0,
                    parts_held: 0,
                    received_ms: now_ms,
                    stored_ms: Some(now_ms),
                    uploaded_by: Some(u.by.clone()),
                },
            );
        } else {
            if let Some(p) = g.pictures.get_mut(&u.sha256)
                && p.state != STORED
            {
                p.state = STORED.into();
                p.stored_ms = Some(now_ms);
            }
            g.parts.remove(&u.sha256);
        }
        g.uploads
            .entry((u.sha256.clone(), u.case_id.clone()))
            .or_insert((u.by.clone(), now_ms));
        Ok(new)
    }

    fn add_request(&mut self, r: &SnapshotRequest) -> Result<(), StoreError> {
        self.lock().requests.insert(r.id.clone(), r.clone());
        Ok(())
    }

    fn expired(&mut self, before_ms: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        let g = self.lock();
        let mut v: Vec<(i64, String)> = g
            .pictures
            .values()
            .filter(|p| p.received_ms < before_ms)
            .filter(|p| p.state == ARRIVING || g.picture_cases(p).is_empty())
            .map(|p| (p.received_ms, p.sha256.clone()))
            .collect();
        v.sort();
        Ok(v.into_iter().take(limit as usize).map(|(_, s)| s).collect())
    }

    fn delete_picture(&mut self, sha256: &str) -> Result<bool, StoreError> {
        Ok(self.lock().delete_picture(sha256))
    }
}

impl EvidenceReader for MemoryStore {
    fn case_pictures(&self, case_id: &str) -> Result<Vec<PictureRow>, StoreError> {
        let g = self.lock();
        let mut v: Vec<PictureRow> = g
            .pictures
            .values()
            .filter(|p| g.picture_cases(p).iter().any(|c| c == case_id))
            .map(|p| g.picture_row(p))
            .collect();
        v.sort_by(|a, b| (a.captured_ms, &a.sha256).cmp(&(b.captured_ms, &b.sha256)));
        Ok(v)
    }

    fn picture(&self, sha256: &str) -> Result<Option<PictureRow>, StoreError> {
        let g = self.lock();
        Ok(g.pictures.get(sha256).map(|p| g.picture_row(p)))
    }

    fn picture_cases(&self, sha256: &str) -> Result<Vec<String>, StoreError> {
        let g = self.lock();
        Ok(g.pictures
            .get(sha256)
            .map(|p| g.picture_cases(p))
            .unwrap_or_default())
    }

    fn case_requests(&self, case_id: &str) -> Result<Vec<SnapshotRequest>, StoreError> {
        let g = self.lock();
        let mut v: Vec<SnapshotRequest> = g
            .requests
            .values()
            .filter(|r| r.case_id == case_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.issued_ms, &a.id).cmp(&(b.issued_ms, &b.id)));
        Ok(v)
    }
}

/// The unit of a stored series: the declared one of a custom metric, else the canonical one.
fn unit_of(metric: &str, unit: Option<String>) -> String {
    unit.unwrap_or_else(|| {
        Metric::from_name(metric)
            .map(|m| m.unit().to_string())
            .unwrap_or_default()
    })
}
