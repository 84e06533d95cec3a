//! Aerial passes onto case timelines (issue 15): the loop that reads newly arrived drone
//! positions, judges them with the pure [`crate::cases::aerial`], and adds each closed pass near
//! a site with open cases to those cases (an `aerial_pass` event through the engine, the pass
//! recorded, the photos' pictures linked) in one transaction.
//!
//! What it keeps between passes is only a cursor (the arrival order of the last point read) and
//! the drones whose passes are still open, with the time window to look at again. Each round,
//! for every drone with new points, it loads the drone's track around them (the whole window
//! the new points can touch: [`LOOK_AROUND_MS`] either side) and segments it anew, so points
//! arriving late or out of order (a gateway replays its backlog behind live points) are judged
//! by their own times. A closed pass is recorded by [`crate::store::CaseTx::record_pass`],
//! which refuses one overlapping a recorded pass of the same drone and site: a pass judged
//! again (a later round, a restart that starts from `close_after` before now, a late stretch
//! of a pass already added) is never added twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fumegrid_common::wire::TrackPoint;
use tokio_util::sync::CancellationToken;

use super::Casework;
use crate::cases::aerial::{self, Settings, Span};
use crate::cases::model::{AerialPhoto, AerialPoint, AerialRef, Coord};
use crate::cases::{Action, Actor, Command, SiteInfo, apply};
use crate::store::StoreError;
use crate::store::drone::{DroneReader, PassRecord};

/// How far around newly arrived points a drone's track is loaded and judged (either side):
/// a pass longer than this (a drone hovering over one site for hours) is cut into several.
pub const LOOK_AROUND_MS: i64 = 2 * 3_600_000;
/// Most points read per round.
const BATCH: u32 = 20_000;

/// A site on the map: its gateway id, display name and position.
#[derive(Debug, Clone)]
pub struct SitePos {
    pub gateway: String,
    pub name: Option<String>,
    pub lat: f64,
    pub lon: f64,
}

/// The sites with a position, by gateway id.
pub fn site_positions(sites: &std::collections::HashMap<String, SiteInfo>) -> Vec<SitePos> {
    let mut out: Vec<SitePos> = sites
        .iter()
        .filter_map(|(g, s)| {
            s.position.map(|(lat, lon)| SitePos {
                gateway: g.clone(),
                name: s.site.clone(),
                lat: lat.0,
                lon: lon.0,
            })
        })
        .collect();
    out.sort_by(|a, b| a.gateway.cmp(&b.gateway));
    out
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    pub points: usize,
    /// Passes added to cases now.
    pub passes: usize,
    /// Case events appended.
    pub events: usize,
    /// Passes found again that were already recorded.
    pub known: usize,
}

/// The judgment's state between rounds.
pub struct Aerial {
    casework: Arc<Casework>,
    drones: Arc<dyn DroneReader>,
    sites: Vec<SitePos>,
    settings: Settings,
    cursor: Option<i64>,
    /// Drone → `[from, to]` (ms, drone time) still to be judged.
    pending: BTreeMap<String, (i64, i64)>,
}

impl Aerial {
    pub fn new(
        casework: Arc<Casework>,
        drones: Arc<dyn DroneReader>,
        sites: Vec<SitePos>,
        settings: Settings,
    ) -> Aerial {
        Aerial {
            casework,
            drones,
            sites,
            settings,
            cursor: None,
            pending: BTreeMap::new(),
        }
    }

    /// One round at the casework clock's now. Blocking.
    pub fn round(&mut self) -> Result<RoundReport, StoreError> {
        let now = self.casework.now_ms();
        let mut report = RoundReport::default();
        // At start, look again at what arrived within the last close_after (+ gap): a pass
        // open at shutdown is judged now; one already recorded is recognised.
        let mut cursor = match self.cursor {
            Some(c) => c,
            None => self
                .drones
                .cursor_before(now - self.settings.close_after_ms - self.settings.gap_ms)?,
        };
        loop {
            let points = self.drones.points_after(cursor, BATCH)?;
            for p in &points {
                let t = p.point.ts_ms;
                let w = self.pending.entry(p.drone.clone()).or_insert((t, t));
                w.0 = w.0.min(t);
                w.1 = w.1.max(t);
                cursor = p.cursor;
            }
            report.points += points.len();
            if points.len() < BATCH as usize {
                break;
            }
        }
        self.cursor = Some(cursor);
        if self.sites.is_empty() {
            self.pending.clear();
            return Ok(report);
        }
        let pending = std::mem::take(&mut self.pending);
        for (drone, (from, to)) in pending {
            let track = self.drones.track(
                &drone,
                from - LOOK_AROUND_MS,
                to + LOOK_AROUND_MS + 1,
                crate::store::drone::MAX_TRACK_POINTS * 10,
            )?;
            let mut still_open = false;
            for site in self.sites.clone() {
                for span in aerial::segment(&track, site.lat, site.lon, &self.settings, now) {
                    // Only passes that the new points can have changed.
                    if span.end_ms + self.settings.gap_ms < from
                        || span.start_ms - self.settings.gap_ms > to
                    {
                        continue;
                    }
                    if !span.closed {
                        still_open = true;
                        continue;
                    }
                    match self.add_pass(&drone, &site, &track, &span, now) {
                        Ok(Some(0)) => {}
                        Ok(Some(events)) => {
                            report.passes += 1;
                            report.events += events;
                        }
                        Ok(None) => report.known += 1,
                        // A case changed meanwhile (or another round recorded it): judged
                        // again next round.
                        Err(StoreError::Stale(why)) => {
                            tracing::debug!(drone, why, "aerial pass retried next round");
                            still_open = true;
                        }
                        Err(e) => {
                            self.pending.insert(drone.clone(), (from, to));
                            return Err(e);
                        }
                    }
                }
            }
            if still_open {
                self.pending.insert(drone, (from, to));
            }
        }
        Ok(report)
    }

    /// Adds one closed pass to the open cases of its site; the number of events appended (0:
    /// no open case there), or `None` when the pass was recorded before.
    fn add_pass(
        &self,
        drone: &str,
        site: &SitePos,
        track: &[TrackPoint],
        span: &Span,
        now: i64,
    ) -> Result<Option<usize>, StoreError> {
        let s = &self.settings;
        if !self
            .drones
            .passes(Some(drone), Some(&site.gateway), span.start_ms, span.end_ms)?
            .is_empty()
        {
            return Ok(None);
        }
        let photos = self.drones.photos(
            Some(drone),
            span.start_ms - s.gap_ms,
            span.end_ms + s.gap_ms + 1,
            100,
        )?;
        let photos: Vec<_> = photos
            .into_iter()
            .filter(|p| aerial::photo_near(p.ts_ms, p.lat, p.lon, span, site.lat, site.lon, s))
            .collect();
        let source = self
            .drones
            .drones(i64::MIN)?
            .into_iter()
            .find(|d| d.drone == drone)
            .map_or("mavlink", |d| d.source.name());
        let seg = &track[span.first..=span.last];
        let pass = AerialRef {
            drone: drone.to_string(),
            source: source.to_string(),
            site: site.gateway.clone(),
            start_ms: span.start_ms,
            end_ms: span.end_ms,
            min_distance_m: Coord((span.min_distance_m * 10.0).round() / 10.0),
            track: aerial::thin(seg, aerial::MAX_SEGMENT_POINTS)
                .into_iter()
                .map(|p| AerialPoint {
                    ts_ms: p.ts_ms,
                    lat: Coord(p.lat),
                    lon: Coord(p.lon),
                    alt_m: Coord(p.alt_m),
                })
                .collect(),
            photos: photos
                .iter()
                .map(|p| AerialPhoto {
                    ts_ms: p.ts_ms,
                    lat: Coord(p.lat),
                    lon: Coord(p.lon),
                    index: p.index,
                    file: p.file.clone(),
                    sha256: p.sha256.clone(),
                })
                .collect(),
        };
        let cw = &self.casework;
        let mut w = cw.lock();
        let open = w.open_cases()?;
        let targets = aerial::cases_for(&open, &site.gateway, site.name.as_deref(), span.end_ms);
        if targets.is_empty() {
            // Nothing open at the site: nothing to add to (and nothing recorded, so a case
            // opened later does not find the pass taken).
            return Ok(Some(0));
        }
        let note = format!(
            "drone {drone} passed within {:.0} m of the site",
            span.min_distance_m
        );
        let mut outcomes = Vec::new();
        for c in &targets {
            let cmd = Command::note(Action::AerialPass { pass: pass.clone() }, note.clone());
            match apply(c, cmd, &Actor::system(), now, &cw.catalogue) {
                Ok(o) => outcomes.push(o),
                Err(e) => tracing::warn!(case = %c.id, error = %e, "aerial pass not added"),
            }
        }
        let record = PassRecord {
            drone: drone.to_string(),
            site: site.gateway.clone(),
            start_ms: span.start_ms,
            end_ms: span.end_ms,
            min_distance_m: span.min_distance_m,
            cases: outcomes.iter().map(|o| o.0.id.clone()).collect(),
        };
        let events: Vec<_> = outcomes.iter().flat_map(|o| o.1.iter().cloned()).collect();
        let mut save = || {
            w.case_tx(&mut |tx| {
                if !tx.record_pass(&record, now)? {
                    return Err(StoreError::Stale(format!(
                        "aerial pass of {drone} near {}",
                        record.site
                    )));
                }
                for (case, events, effects) in &outcomes {
                    tx.save_case(case, events, effects, now)?;
                    for p in &photos {
                        if let Some(sha) = &p.sha256 {
                            tx.link_picture(sha, &case.id, &format!("aerial:{drone}"), now)?;
                        }
                    }
                }
                Ok(())
            })
        };
        match cw.stats_index() {
            Some(i) => i.commit(&events, save)?,
            None => save()?,
        }
        drop(w);
        metrics::counter!(crate::telemetry::AERIAL_PASSES).increment(1);
        tracing::info!(
            drone,
            site = %site.gateway,
            start_ms = span.start_ms,
            end_ms = span.end_ms,
            min_distance_m = span.min_distance_m.round(),
            cases = ?record.cases,
            photos = photos.len(),
            "aerial pass added to cases"
        );
        if outcomes.iter().any(|o| !o.2.is_empty()) {
            cw.notify.notify_one();
        }
        Ok(Some(events.len()))
    }
}

impl std::fmt::Debug for Aerial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aerial")
            .field("sites", &self.sites.len())
            .field("cursor", &self.cursor)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Runs rounds every `every` until `cancel`.
pub async fn run(aerial: Aerial, every: Duration, cancel: CancellationToken) {
    let aerial = Arc::new(std::sync::Mutex::new(aerial));
    loop {
        let a = aerial.clone();
        let r = tokio::task::spawn_blocking(move || {
            a.lock().unwrap_or_else(|p| p.into_inner()).round()
        })
        .await;
        match r {
            Ok(Ok(r)) if r.passes > 0 => {
                tracing::debug!(
                    points = r.points,
                    passes = r.passes,
                    events = r.events,
                    "aerial round"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "aerial round failed; the next round retries"),
            Err(e) => tracing::error!(error = %e, "aerial round panicked"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
