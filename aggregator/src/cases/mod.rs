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
//!
//! The workflow, the permission table, the catalogue format and the statistics definitions are
//! documented for users in `docs/cases.md`.

pub mod alarm;
pub mod calendar;
pub mod catalogue;
pub mod model;
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
