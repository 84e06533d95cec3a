//! Canonical metric names and units: the one vocabulary that profiles, rules, the wire format and
//! the aggregator share. A profile maps a monitor's registers onto these names; nothing downstream
//! ever sees a vendor's register layout.
//!
//! A value with no canonical name (a vendor's status word, a lamp-hours counter) is a custom
//! metric: `x_` then lowercase letters, digits and `_`, at most [`CustomMetric::MAX_LEN`]
//! characters. Its unit is declared where it is mapped (the profile's `unit`) and travels with
//! each reading; alarm rules never judge it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A vendor extra's name, `x_...`, kept inline so that [`Metric`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomMetric {
    len: u8,
    bytes: [u8; CustomMetric::MAX_LEN],
}

impl CustomMetric {
    /// Longest custom metric name, `x_` included.
    pub const MAX_LEN: usize = 32;

    /// Checks a custom metric name; the error says what is wrong with it.
    pub fn new(name: &str) -> Result<CustomMetric, String> {
        let Some(rest) = name.strip_prefix("x_") else {
            return Err(format!("`{}` does not start with `x_`", bounded(name)));
        };
        if rest.is_empty() {
            return Err("`x_` needs a name after the prefix, e.g. `x_run_hours`".into());
        }
        if name.len() > Self::MAX_LEN {
            return Err(format!(
                "`{}` is {} characters long, at most {} are allowed",
                bounded(name),
                name.chars().count(),
                Self::MAX_LEN
            ));
        }
        if let Some(c) = rest
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            return Err(format!(
                "`{}` contains `{c}`: a custom metric uses only `a-z`, `0-9` and `_`",
                bounded(name)
            ));
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(CustomMetric {
            len: name.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `new`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("x_")
    }
}

impl std::fmt::Debug for CustomMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// At most 40 characters of a name from outside, for messages.
fn bounded(s: &str) -> String {
    let clipped = crate::text::clip(s, 40);
    if clipped.len() < s.len() {
        format!("{clipped}…")
    } else {
        s.to_string()
    }
}

/// Longest unit of a custom metric, in characters.
pub const MAX_UNIT_CHARS: usize = 16;

/// Checks the declared unit of a custom metric (`h`, `kWh`, `code`): 1..=16 printable
/// characters.
pub fn check_unit(unit: &str) -> Result<(), String> {
    if unit.trim().is_empty() {
        return Err("the unit is empty: name it, e.g. `h` or `code`".into());
    }
    if unit.chars().count() > MAX_UNIT_CHARS {
        return Err(format!(
            "the unit `{}` is longer than {MAX_UNIT_CHARS} characters",
            bounded(unit)
        ));
    }
    if unit.chars().any(char::is_control) {
        return Err("the unit contains a control character".into());
    }
    Ok(())
}

/// A metric: one of the canonical ones, whose name carries the unit (`fume_mg_m3` is mg/m³),
/// or a vendor's custom `x_` one. On the wire and in profiles, its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// 油烟 oil-fume concentration at the exhaust, mg/m³.
    FumeMgM3,
    /// 颗粒物 particulate matter concentration, mg/m³.
    ParticulateMgM3,
    /// 非甲烷总烃 non-methane hydrocarbons, mg/m³.
    NmhcMgM3,
    /// Exhaust fan running (1) or stopped (0).
    FanOn,
    /// Purifier (electrostatic or filter unit) running (1) or stopped (0).
    PurifierOn,
    /// Fan motor current, A.
    FanCurrentA,
    /// Purifier supply current, A.
    PurifierCurrentA,
    /// Exhaust flow, m³/h.
    FlowM3H,
    /// Exhaust temperature, °C.
    TemperatureC,
    /// Exhaust relative humidity, %.
    HumidityPct,
    /// Purifier cumulative running time, hours (a counter).
    PurifierRuntimeH,
    /// Fan cumulative running time, hours (a counter).
    FanRuntimeH,
    /// A vendor extra with no canonical name; its unit comes from where it was mapped.
    Custom(CustomMetric),
}

impl Metric {
    pub const ALL: [Metric; 12] = [
        Metric::FumeMgM3,
        Metric::ParticulateMgM3,
        Metric::NmhcMgM3,
        Metric::FanOn,
        Metric::PurifierOn,
        Metric::FanCurrentA,
        Metric::PurifierCurrentA,
        Metric::FlowM3H,
        Metric::TemperatureC,
        Metric::HumidityPct,
        Metric::PurifierRuntimeH,
        Metric::FanRuntimeH,
    ];

    /// The wire and profile name, e.g. `fume_mg_m3`.
    pub fn name(&self) -> &str {
        match self {
            Metric::Custom(c) => c.as_str(),
            Metric::FumeMgM3 => "fume_mg_m3",
            Metric::ParticulateMgM3 => "particulate_mg_m3",
            Metric::NmhcMgM3 => "nmhc_mg_m3",
            Metric::FanOn => "fan_on",
            Metric::PurifierOn => "purifier_on",
            Metric::FanCurrentA => "fan_current_a",
            Metric::PurifierCurrentA => "purifier_current_a",
            Metric::FlowM3H => "flow_m3_h",
            Metric::TemperatureC => "temperature_c",
            Metric::HumidityPct => "humidity_pct",
            Metric::PurifierRuntimeH => "purifier_runtime_h",
            Metric::FanRuntimeH => "fan_runtime_h",
        }
    }

    /// Unit as shown to people; empty for a custom metric (its unit is declared with it).
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Custom(_) => "",
            Metric::FumeMgM3 | Metric::ParticulateMgM3 | Metric::NmhcMgM3 => "mg/m³",
            Metric::FanOn | Metric::PurifierOn => "on/off",
            Metric::FanCurrentA | Metric::PurifierCurrentA => "A",
            Metric::FlowM3H => "m³/h",
            Metric::TemperatureC => "°C",
            Metric::HumidityPct => "%",
            Metric::PurifierRuntimeH | Metric::FanRuntimeH => "h",
        }
    }

    /// True for on/off states; their value is 0.0 or 1.0.
    pub fn is_state(self) -> bool {
        matches!(self, Metric::FanOn | Metric::PurifierOn)
    }

    /// A canonical metric by name (`x_` names are not looked up here: see [`Metric::parse`]).
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// A canonical name or a valid custom `x_` name; the error lists what is accepted.
    pub fn parse(name: &str) -> Result<Metric, String> {
        if let Some(m) = Metric::from_name(name) {
            return Ok(m);
        }
        if name.starts_with("x_") {
            return CustomMetric::new(name).map(Metric::Custom);
        }
        let names: Vec<String> = Metric::ALL.iter().map(|m| format!("`{m}`")).collect();
        Err(format!(
            "unknown metric `{}`, expected one of {}, or a custom name `x_...` (with a `unit`)",
            bounded(name),
            names.join(", ")
        ))
    }

    pub fn is_custom(self) -> bool {
        matches!(self, Metric::Custom(_))
    }

    /// Position in [`Metric::ALL`]; `None` for a custom metric.
    pub fn index(self) -> Option<usize> {
        Metric::ALL.iter().position(|m| *m == self)
    }
}

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Metric, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Metric;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a metric name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Metric, E> {
                Metric::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_name() {
        for m in Metric::ALL {
            let json = format!("\"{}\"", m.name());
            let back: Metric = serde_json_like(&json);
            assert_eq!(back, m);
            assert_eq!(Metric::from_name(m.name()), Some(m));
        }
    }

    #[test]
    fn custom_names_are_checked() {
        let m = Metric::parse("x_run_hours").expect("valid");
        assert_eq!(m.name(), "x_run_hours");
        assert!(m.is_custom() && m.index().is_none());
        assert_eq!(serde_json_like("\"x_run_hours\""), m);
        for (bad, why) in [
            ("x_", "needs a name"),
            ("x_Run", "contains `R`"),
            ("x_run-hours", "contains `-`"),
            ("x_a_very_long_name_that_goes_on_and_on", "at most 32"),
            ("run_hours", "unknown metric `run_hours`"),
        ] {
            let e = Metric::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_unit("h").is_ok());
        assert!(check_unit("").is_err());
        assert!(check_unit("a unit far too long").is_err());
    }

    // toml is the format technicians write, so round-trip through it.
    fn serde_json_like(quoted: &str) -> Metric {
        #[derive(Deserialize)]
        struct W {
            m: Metric,
        }
        let w: W = toml::from_str(&format!("m = {quoted}")).expect("metric parses");
        w.m
    }
}
