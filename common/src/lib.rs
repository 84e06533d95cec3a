//! Shared vocabulary of fumegrid: canonical metrics, the device-profile format,
//! and diagnostics that point at a file, line and field; date-times ([`datetime`], on jiff),
//! the id rule ([`id`]) and HMAC key parsing ([`keys`]) that both daemons apply alike.
//!
//! Everything here is pure: parsing and decoding take text and numbers and return
//! values or errors; no I/O beyond reading a named file in [`diag::Source::read`].

#[cfg(feature = "runtime")]
pub mod clock;
pub mod datetime;
pub mod diag;
pub mod fuzz;
pub mod id;
pub mod keys;
pub mod metric;
pub mod panic;
pub mod profile;
pub mod ratelog;
pub mod reading;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "runtime")]
pub mod telemetry;
pub mod text;
pub mod wire;
