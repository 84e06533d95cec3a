//! A decoded value of one metric of one installed device at one moment: what the gateway's
//! sources produce and everything downstream (rules, outbox, aggregator) consumes.

use serde::{Deserialize, Serialize};

use crate::metric::Metric;

/// How far a reading can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Read from the device just now and inside the profile's valid range.
    Ok,
    /// Read just now, but outside the profile's valid range: a sensor fault, not a measurement.
    OutOfRange,
    /// The device did not answer this poll; `value` is the last good value, still recent.
    Stale,
    /// The device did not answer (timeout, exception, garbled reply) and there is no recent
    /// good value; `value` is `None`.
    DeviceError,
}

impl Quality {
    pub fn name(self) -> &'static str {
        match self {
            Quality::Ok => "ok",
            Quality::OutOfRange => "out_of_range",
            Quality::Stale => "stale",
            Quality::DeviceError => "device_error",
        }
    }
}

impl std::fmt::Display for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// Installed device id from the gateway config.
    pub device: String,
    pub metric: Metric,
    /// Unit of an `x_` metric, from its profile; absent for canonical metrics (their name
    /// carries the unit), so readings of canonical metrics look as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// In the metric's unit; `None` only with [`Quality::DeviceError`].
    pub value: Option<f64>,
    pub quality: Quality,
    /// When the value was taken, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
}
