//! Canonical metric names and units: the one vocabulary that profiles, rules, the wire format and
//! the aggregator share. A profile maps a monitor's registers onto these names; nothing downstream
//! ever sees a vendor's register layout.

use serde::{Deserialize, Serialize};

/// A canonical metric. The name carries the unit (`fume_mg_m3` is mg/m³), as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    pub fn name(self) -> &'static str {
        match self {
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

    /// Unit as shown to people.
    pub fn unit(self) -> &'static str {
        match self {
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

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
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
