//! Dispatch cases (DESIGN.md §7): alarms and reports become cases that departments work
//! through to closure. Everything in here is pure — `(state, input, now)` in, new state, events
//! and effects out — so the store, the HTTP API, webhooks and the timer loop are thin callers.
//!
//! - [`model`]: the case state machine ([`model::open`], [`model::apply`]), roles and
//!   permissions, events (the append-only timeline) and effects (notify, schedule).
//! - [`alarm`]: sensor alarms → at most one open case per (gateway, device, alarm kind);
//!   normal readings → automatic verification.
//! - [`catalogue`]: the categories, departments and calendar file (strict TOML).
//! - [`calendar`]: deadlines in working hours/days across weekends, holidays and make-up days.
//! - [`timers`]: overdue flags and escalation, derived from the case so restarts lose nothing.
//! - [`stats`]: statistics of any period from the event log alone.
//! - [`privacy`]: personal data (phones, e-mails, ID numbers, names) redacted from citizens'
//!   free text before it becomes a title or an event note; the title cut from a description.
//!
//! Also here: where a gateway stands ([`SiteInfo`]) and the case id format ([`case_id_prefix`], [`case_id`]).
//!
//! The workflow, the permission table, the catalogue format and the statistics definitions are
//! documented for users in `docs/cases.md`.

pub mod aerial;
pub mod alarm;
pub mod calendar;
pub mod catalogue;
pub mod model;
pub mod privacy;
pub mod stats;
pub mod timers;

#[cfg(test)]
mod proptests;

pub use calendar::{Calendar, WorkAmount, add_working};
pub use catalogue::Catalogue;
pub use model::{
    Action, Actor, Case, CaseError, Command, Effect, Event, EventKind, Role, State, TimerKind,
    apply, open,
};

/// Where a gateway stands, for the cases its alarms open (`[[gateways]] site, grid_cell`),
/// and where its devices stand when they are placed on their own (`[[gateways.devices]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteInfo {
    /// Display name of the site; default: the gateway id.
    pub site: Option<String>,
    /// The city-management grid cell (statistics group by it).
    pub grid_cell: Option<String>,
    /// Where it stands: WGS 84 latitude and longitude in degrees (`[[gateways]] lat, lon`),
    /// for the map and the aerial-pass judgment; none when not configured.
    pub position: Option<(model::Coord, model::Coord)>,
    /// Devices of the gateway with a place of their own (`[[gateways.devices]]`), by device id:
    /// on a street of restaurants behind one gateway, each restaurant is its own place on the
    /// map and for drone passes.
    pub devices: std::collections::BTreeMap<String, DevicePlace>,
}

/// One device's own place (`[[gateways.devices]] name, lat, lon`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePlace {
    /// Display name (the restaurant's, say); default: the device id.
    pub name: Option<String>,
    /// WGS 84 latitude and longitude in degrees; none: the device stands at its gateway's site.
    pub position: Option<(model::Coord, model::Coord)>,
}

/// The prefix of the ids of cases reported at `now_ms`: `C{YYYYMMDD}-` of the local day on the
/// catalogue's calendar.
pub fn case_id_prefix(catalogue: &Catalogue, now_ms: i64) -> String {
    let d = catalogue.calendar.local_date(now_ms);
    format!("C{:04}{:02}{:02}-", d.year(), d.month(), d.day())
}

/// The id of the `n`th case with `prefix` (`n` from the store's count of the ids with it,
/// `CaseTx::next_case_number` of the store): `C{YYYYMMDD}-{n:04}`; past 9999 the number
/// just grows a digit.
pub fn case_id(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:04}")
}
