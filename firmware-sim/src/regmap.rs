//! A monitor's four Modbus tables, filled from a profile and metric values.
//!
//! Each point's value is encoded with [`Point::encode_words`] (the same code the gateway decodes
//! with), so the two sides agree by construction. Several `bool` points with distinct `bit`s may
//! share one status register: they are merged into it. Addresses inside the span of a table's
//! points but not covered by any point read as 0, so a gateway may read through gaps; anything
//! outside that span is exception 02 (illegal data address), as real firmwares answer.

use std::collections::BTreeMap;

use fumegrid_common::metric::Metric;
use fumegrid_common::profile::{MODBUS_MAX_BITS, MODBUS_MAX_REGISTERS, Point, Profile, Table};

use crate::scenario::Scenario;

/// A Modbus exception code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception(pub u8);

impl Exception {
    pub const ILLEGAL_FUNCTION: Exception = Exception(0x01);
    pub const ILLEGAL_DATA_ADDRESS: Exception = Exception(0x02);
    pub const ILLEGAL_DATA_VALUE: Exception = Exception(0x03);
    pub const SERVER_DEVICE_FAILURE: Exception = Exception(0x04);
    /// Modbus TCP: the gateway's target device did not respond (used for unknown unit ids).
    pub const GATEWAY_TARGET_FAILED: Exception = Exception(0x0B);
}

/// Registers and bits of one simulated device at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegisterImage {
    words: BTreeMap<(Table, u16), u16>,
    bits: BTreeMap<(Table, u16), bool>,
    /// Per table: first and last address (inclusive) covered by its points.
    spans: BTreeMap<Table, (u16, u16)>,
}

/// What a read returns: registers (FC 3/4) or bits (FC 1/2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

impl RegisterImage {
    /// Encodes `values` through every point of `profile`. A metric missing from `values` reads 0.
    pub fn build(profile: &Profile, values: &[(Metric, f64)]) -> RegisterImage {
        let mut img = RegisterImage::default();
        for p in &profile.points {
            let v = values
                .iter()
                .find(|(m, _)| *m == p.metric)
                .map_or(0.0, |(_, v)| *v);
            img.put(p, v);
        }
        img
    }

    /// The image of `profile` under `scenario` at scenario time `t`.
    pub fn at(profile: &Profile, scenario: Scenario, t: f64) -> RegisterImage {
        let mut values = scenario.values_at(t);
        // The profile's vendor extras (`x_` metrics) get values of their own.
        values.extend(
            profile
                .points
                .iter()
                .filter(|p| p.metric.is_custom())
                .map(|p| (p.metric, scenario.value(p.metric, t))),
        );
        RegisterImage::build(profile, &values)
    }

    fn put(&mut self, p: &Point, value: f64) {
        let end = p.end().min(u32::from(u16::MAX)) as u16;
        let span = self.spans.entry(p.table).or_insert((p.address, end));
        span.0 = span.0.min(p.address);
        span.1 = span.1.max(end);
        if p.table.is_bits() {
            self.bits.insert((p.table, p.address), value != 0.0);
            return;
        }
        let current = self.words.get(&(p.table, p.address)).copied().unwrap_or(0);
        for (i, w) in p.encode_words(value, current).into_iter().enumerate() {
            if let Some(a) = p.address.checked_add(i as u16) {
                self.words.insert((p.table, a), w);
            }
        }
    }

    /// First and last address (inclusive) of `table` that this device answers.
    pub fn span(&self, table: Table) -> Option<(u16, u16)> {
        self.spans.get(&table).copied()
    }

    fn check(&self, table: Table, address: u16, count: u16) -> Result<(), Exception> {
        let limit = if table.is_bits() {
            MODBUS_MAX_BITS
        } else {
            MODBUS_MAX_REGISTERS
        };
        if count == 0 || count > limit {
            return Err(Exception::ILLEGAL_DATA_VALUE);
        }
        let last = u32::from(address) + u32::from(count) - 1;
        match self.span(table) {
            Some((lo, hi)) if address >= lo && last <= u32::from(hi) => Ok(()),
            _ => Err(Exception::ILLEGAL_DATA_ADDRESS),
        }
    }

    /// Reads `count` registers (holding or input) from `address`.
    pub fn read_words(
        &self,
        table: Table,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, Exception> {
        if table.is_bits() {
            return Err(Exception::ILLEGAL_FUNCTION);
        }
        self.check(table, address, count)?;
        Ok((0..count)
            .map(|i| {
                let a = address + i; // no overflow: checked against the span above
                self.words.get(&(table, a)).copied().unwrap_or(0)
            })
            .collect())
    }

    /// Reads `count` bits (coils or discrete inputs) from `address`.
    pub fn read_bits(
        &self,
        table: Table,
        address: u16,
        count: u16,
    ) -> Result<Vec<bool>, Exception> {
        if !table.is_bits() {
            return Err(Exception::ILLEGAL_FUNCTION);
        }
        self.check(table, address, count)?;
        Ok((0..count)
            .map(|i| {
                let a = address + i;
                self.bits.get(&(table, a)).copied().unwrap_or(false)
            })
            .collect())
    }

    /// Reads from any table.
    pub fn read(&self, table: Table, address: u16, count: u16) -> Result<Data, Exception> {
        if table.is_bits() {
            self.read_bits(table, address, count).map(Data::Bits)
        } else {
            self.read_words(table, address, count).map(Data::Words)
        }
    }

    /// Decodes `p` from this image the way a gateway does.
    pub fn decode(&self, p: &Point) -> f64 {
        if p.table.is_bits() {
            let bit = self
                .bits
                .get(&(p.table, p.address))
                .copied()
                .unwrap_or(false);
            return p.decode_bit(bit);
        }
        let words: Vec<u16> = (0..p.width())
            .map(|i| {
                let a = p.address.saturating_add(i);
                self.words.get(&(p.table, a)).copied().unwrap_or(0)
            })
            .collect();
        p.decode_words(&words)
    }

    /// Every register of the word tables within their spans: `(table, first address, words)`.
    pub fn word_blocks(&self) -> Vec<(Table, u16, Vec<u16>)> {
        [Table::Holding, Table::Input]
            .into_iter()
            .filter_map(|t| {
                let (lo, hi) = self.span(t)?;
                let words = (lo..=hi)
                    .map(|a| self.words.get(&(t, a)).copied().unwrap_or(0))
                    .collect();
                Some((t, lo, words))
            })
            .collect()
    }

    /// Every bit of the bit tables within their spans: `(table, first address, bits)`.
    pub fn bit_blocks(&self) -> Vec<(Table, u16, Vec<bool>)> {
        [Table::Coil, Table::Discrete]
            .into_iter()
            .filter_map(|t| {
                let (lo, hi) = self.span(t)?;
                let bits = (lo..=hi)
                    .map(|a| self.bits.get(&(t, a)).copied().unwrap_or(false))
                    .collect();
                Some((t, lo, bits))
            })
            .collect()
    }
}

/// What a correct gateway decodes from this device at scenario time `t`: each point of the
/// profile (in profile order) encoded into registers and decoded back, so integer scaling,
/// saturation and f32 rounding are included. Tests compare readings against this.
pub fn expected(profile: &Profile, scenario: Scenario, t: f64) -> Vec<(Metric, f64)> {
    let img = RegisterImage::at(profile, scenario, t);
    profile
        .points
        .iter()
        .map(|p| (p.metric, img.decode(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fumegrid_common::diag::Source;
    use proptest::prelude::*;

    pub(crate) const TB: &str = r#"
[profile]
id = "tb"
[[points]]
metric = "fume_mg_m3"
table = "holding"
address = 0
type = "f32"
valid = [0.0, 50.0]
[[points]]
metric = "particulate_mg_m3"
table = "holding"
address = 2
type = "f32"
valid = [0.0, 50.0]
[[points]]
metric = "nmhc_mg_m3"
table = "holding"
address = 4
type = "f32"
word_order = "little"
valid = [0.0, 100.0]
[[points]]
metric = "fan_on"
table = "holding"
address = 6
type = "u16"
[[points]]
metric = "purifier_on"
table = "holding"
address = 7
type = "u16"
[[points]]
metric = "fan_current_a"
table = "holding"
address = 8
type = "u16"
scale = 0.01
valid = [0.0, 60.0]
[[points]]
metric = "purifier_current_a"
table = "holding"
address = 9
type = "u16"
scale = 0.01
valid = [0.0, 15.0]
[[points]]
metric = "temperature_c"
table = "input"
address = 10
type = "i16"
scale = 0.1
offset = -40.0
valid = [-20.0, 150.0]
[[points]]
metric = "fan_runtime_h"
table = "input"
address = 14
type = "u32"
scale = 0.1
[[points]]
metric = "flow_m3_h"
table = "input"
address = 16
type = "i32"
valid = [0.0, 100000.0]
[[points]]
metric = "humidity_pct"
table = "input"
address = 12
type = "u16"
scale = 0.1
valid = [0.0, 100.0]
[[points]]
metric = "purifier_runtime_h"
table = "holding"
address = 20
type = "bool"
bit = 3
"#;

    const BITS: &str = r#"
[profile]
id = "bits"
[[points]]
metric = "fan_on"
table = "input"
address = 7
type = "bool"
bit = 0
[[points]]
metric = "purifier_on"
table = "input"
address = 7
type = "bool"
bit = 5
[[points]]
metric = "fume_mg_m3"
table = "coil"
address = 3
type = "bool"
[[points]]
metric = "nmhc_mg_m3"
table = "discrete"
address = 9
type = "bool"
"#;

    fn profile(text: &str) -> Profile {
        Profile::from_source(&Source::new("t.toml", text)).expect("test profile is valid")
    }

    #[test]
    fn packed_bits_merge_and_gaps_read_zero() {
        let p = profile(BITS);
        let img = RegisterImage::build(
            &p,
            &[
                (Metric::FanOn, 1.0),
                (Metric::PurifierOn, 1.0),
                (Metric::FumeMgM3, 1.0),
            ],
        );
        assert_eq!(img.read_words(Table::Input, 7, 1), Ok(vec![0b10_0001]));
        assert_eq!(img.read_bits(Table::Coil, 3, 1), Ok(vec![true]));
        assert_eq!(img.read_bits(Table::Discrete, 9, 1), Ok(vec![false]));
        assert_eq!(
            img.read_bits(Table::Coil, 2, 1),
            Err(Exception::ILLEGAL_DATA_ADDRESS)
        );
        let img = RegisterImage::build(&p, &[(Metric::FanOn, 0.0), (Metric::PurifierOn, 1.0)]);
        assert_eq!(img.read_words(Table::Input, 7, 1), Ok(vec![0b10_0000]));
        assert_eq!(
            expected(&p, Scenario::PurifierOff, 100.0)[1],
            (Metric::PurifierOn, 0.0)
        );
    }

    #[test]
    fn span_rules() {
        let p = profile(TB);
        let img = RegisterImage::at(&p, Scenario::Normal, 0.0);
        assert!(img.read_words(Table::Holding, 0, 10).is_ok());
        // 10..=19 is an unused gap inside the holding span 0..=20: zeros.
        assert_eq!(img.read_words(Table::Holding, 10, 10), Ok(vec![0; 10]));
        assert_eq!(
            img.read_words(Table::Holding, 0, 22),
            Err(Exception::ILLEGAL_DATA_ADDRESS)
        );
        assert_eq!(
            img.read_words(Table::Input, 0, 1),
            Err(Exception::ILLEGAL_DATA_ADDRESS)
        );
        assert_eq!(
            img.read_words(Table::Holding, 0, 0),
            Err(Exception::ILLEGAL_DATA_VALUE)
        );
        assert_eq!(
            img.read_bits(Table::Coil, 0, 1),
            Err(Exception::ILLEGAL_DATA_ADDRESS)
        );
        assert_eq!(
            img.read_words(Table::Input, 65535, 2),
            Err(Exception::ILLEGAL_DATA_ADDRESS)
        );
    }

    #[test]
    fn expected_includes_quantisation() {
        let p = profile(TB);
        let e = expected(&p, Scenario::Normal, 100.0);
        let get = |m: Metric| e.iter().find(|(x, _)| *x == m).map(|(_, v)| *v);
        let fan_i = get(Metric::FanCurrentA).unwrap_or(f64::NAN);
        assert!(
            (fan_i * 100.0 - (fan_i * 100.0).round()).abs() < 1e-6,
            "{fan_i}"
        );
        let f = get(Metric::FumeMgM3).unwrap_or(f64::NAN);
        // f32 precision: the decoded value is the shortest decimal of the f32 the scenario
        // value rounds to.
        let as_f32 = Scenario::Normal.value(Metric::FumeMgM3, 100.0) as f32;
        assert_eq!(f as f32, as_f32);
        assert_eq!(f, as_f32.to_string().parse::<f64>().unwrap_or(f64::NAN));
        assert_eq!(get(Metric::FanOn), Some(1.0));
    }

    fn arb_values() -> impl Strategy<Value = Vec<(Metric, f64)>> {
        (
            0.0..50.0f64,
            0.0..50.0f64,
            0.0..100.0f64,
            any::<bool>(),
            any::<bool>(),
            0.0..60.0f64,
            0.0..15.0f64,
            -20.0..150.0f64,
            0.0..100.0f64,
            0.0..400_000_000.0f64,
            0.0..100_000.0f64,
            any::<bool>(),
        )
            .prop_map(|(f, pm, nm, fan, pur, fi, pi, temp, hum, rt, flow, bit)| {
                vec![
                    (Metric::FumeMgM3, f),
                    (Metric::ParticulateMgM3, pm),
                    (Metric::NmhcMgM3, nm),
                    (Metric::FanOn, f64::from(u8::from(fan))),
                    (Metric::PurifierOn, f64::from(u8::from(pur))),
                    (Metric::FanCurrentA, fi),
                    (Metric::PurifierCurrentA, pi),
                    (Metric::TemperatureC, temp),
                    (Metric::HumidityPct, hum),
                    (Metric::FanRuntimeH, rt),
                    (Metric::FlowM3H, flow.round()),
                    (Metric::PurifierRuntimeH, f64::from(u8::from(bit))),
                ]
            })
    }

    proptest! {
        #[test]
        fn image_round_trips_through_profile(values in arb_values()) {
            let p = profile(TB);
            let img = RegisterImage::build(&p, &values);
            for point in &p.points {
                let want = values.iter().find(|(m, _)| *m == point.metric).map(|(_, v)| *v).unwrap_or(0.0);
                // Read the point back through a Modbus read, as a gateway would.
                let words = img.read_words(point.table, point.address, point.width()).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                let got = point.decode_words(&words);
                let tol = match point.data_type {
                    fumegrid_common::profile::DataType::F32 => want.abs() * 1e-6 + 1e-6,
                    _ => point.scale() / 2.0 + 1e-9,
                };
                prop_assert!((got - want).abs() <= tol, "{}: {want} -> {got}", point.metric);
                prop_assert!(point.in_range(got) || point.valid.is_none() || !point.in_range(want));
            }
        }
    }
}
