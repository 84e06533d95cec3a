//! Device profiles: how one monitor *model* lays out its values in Modbus tables.
//!
//! A profile is data a technician writes (see `device-profiles/README.md`), not code. It is read
//! strictly: unknown fields, wrong types for a table, overlapping registers and empty valid ranges
//! are all reported at once, each with file, line and field path ([`Profile::load`]).
//!
//! Encoding and decoding of values are pure functions of a [`Point`] and the raw words, shared by
//! the gateway (decode) and the simulator (encode), so both sides agree by construction and a
//! property test checks that they invert each other.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostics, Doc, Source};
use crate::metric::Metric;

/// The Modbus limit on registers per read request (FC 3/4), from the protocol's PDU size.
pub const MODBUS_MAX_REGISTERS: u16 = 125;
/// The Modbus limit on bits per read request (FC 1/2).
pub const MODBUS_MAX_BITS: u16 = 2000;

/// One monitor model.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub id: String,
    pub description: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub modbus: ModbusSettings,
    pub points: Vec<Point>,
}

/// `[profile]`: what the model is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileMeta {
    /// Stable identifier, lowercase letters, digits and `-`. Required.
    id: String,
    /// One line for people. Default: empty.
    #[serde(default)]
    description: String,
    /// Manufacturer. Default: none.
    #[serde(default)]
    vendor: Option<String>,
    /// Model designation. Default: none.
    #[serde(default)]
    model: Option<String>,
}

/// `[modbus]`: how to talk to this firmware. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModbusSettings {
    /// Largest register block one request may read (FC 3/4), 1..=125. Default 32.
    pub max_registers_per_read: u16,
    /// Largest bit block one request may read (FC 1/2), 1..=2000. Default 256.
    pub max_bits_per_read: u16,
    /// Read through unused gaps up to this many registers (or bits) to save a request. Default 4.
    pub max_gap: u16,
    /// How long to wait for a reply before the request counts as failed, ms. Default 300.
    pub response_timeout_ms: u64,
    /// Pause after each transaction before the next frame on the bus, ms; some firmwares need
    /// one. Default 0 (the gateway always keeps the 3.5-character silence RTU requires).
    pub inter_request_delay_ms: u64,
}

impl Default for ModbusSettings {
    fn default() -> Self {
        ModbusSettings {
            max_registers_per_read: 32,
            max_bits_per_read: 256,
            max_gap: 4,
            response_timeout_ms: 300,
            inter_request_delay_ms: 0,
        }
    }
}

/// Which Modbus table a point lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Holding registers, FC 3.
    Holding,
    /// Input registers, FC 4.
    Input,
    /// Coils, FC 1.
    Coil,
    /// Discrete inputs, FC 2.
    Discrete,
}

impl Table {
    /// Coils and discrete inputs hold single bits.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
    pub fn name(self) -> &'static str {
        match self {
            Table::Holding => "holding",
            Table::Input => "input",
            Table::Coil => "coil",
            Table::Discrete => "discrete",
        }
    }
}

/// How a value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    F32,
    /// A coil or discrete input, a register that is non-zero when on, or one `bit` of a register.
    Bool,
}

impl DataType {
    /// Registers occupied (1 for bits too).
    pub fn width(self) -> u16 {
        match self {
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U16 | DataType::I16 | DataType::Bool => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::F32 => "f32",
            DataType::Bool => "bool",
        }
    }
}

/// Order of the two registers of a 32-bit value. Bytes within a register are always big-endian,
/// as the Modbus spec fixes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// High word first (ABCD). The default.
    #[default]
    Big,
    /// Low word first (CDAB, "word swapped").
    Little,
}

/// `[[points]]`: one value of the monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Canonical metric this value is (see `common::metric`), or a vendor extra named `x_...`
    /// (`a-z`, `0-9`, `_`, at most 32 characters). Required.
    pub metric: Metric,
    /// Unit of an `x_` metric as shown to people (`h`, `kWh`, `code`), 1..=16 characters.
    /// Required for `x_` metrics; not allowed for canonical ones (their name fixes the unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// `holding`, `input`, `coil` or `discrete`. Required.
    pub table: Table,
    /// Zero-based address in that table (the PDU address, not the 4xxxx notation). Required.
    pub address: u16,
    /// `u16`, `i16`, `u32`, `i32`, `f32` or `bool`. Required.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Register order of 32-bit types. Default `big`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_order: Option<WordOrder>,
    /// For `bool` in a register: which bit (0 = least significant). Default: whole register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit: Option<u8>,
    /// value = raw × scale + offset. Default 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Default 0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
    /// `[min, max]` the sensor can really produce; a value outside is flagged out of range.
    /// Default: any value is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<[f64; 2]>,
}

impl Point {
    /// The unit of this point's values: the declared one of an `x_` metric, else the metric's.
    pub fn unit(&self) -> &str {
        self.unit.as_deref().unwrap_or(self.metric.unit())
    }
    pub fn width(&self) -> u16 {
        self.data_type.width()
    }
    pub fn scale(&self) -> f64 {
        self.scale.unwrap_or(1.0)
    }
    pub fn offset(&self) -> f64 {
        self.offset.unwrap_or(0.0)
    }
    pub fn word_order(&self) -> WordOrder {
        self.word_order.unwrap_or_default()
    }
    /// Last address occupied, inclusive.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.width()) - 1
    }

    /// Decodes this point from the registers starting at its address (`words.len() >= width`).
    pub fn decode_words(&self, words: &[u16]) -> f64 {
        let hi_lo = |w: &[u16]| match self.word_order() {
            WordOrder::Big => (u32::from(w[0]) << 16) | u32::from(w[1]),
            WordOrder::Little => (u32::from(w[1]) << 16) | u32::from(w[0]),
        };
        let raw = match self.data_type {
            DataType::U16 => f64::from(words[0]),
            DataType::I16 => f64::from(words[0] as i16),
            DataType::U32 => f64::from(hi_lo(words)),
            DataType::I32 => f64::from(hi_lo(words) as i32),
            // The shortest decimal that is this f32 (0.53, not 0.5299999713897705): the same
            // value to the sensor's precision, and what people expect to read.
            DataType::F32 => {
                let f = f32::from_bits(hi_lo(words));
                f.to_string().parse::<f64>().unwrap_or(f64::from(f))
            }
            DataType::Bool => {
                let on = match self.bit {
                    Some(b) => (words[0] >> b) & 1 == 1,
                    None => words[0] != 0,
                };
                return if on { 1.0 } else { 0.0 };
            }
        };
        let value = raw * self.scale() + self.offset();
        if self.data_type == DataType::F32 {
            value
        } else {
            // An integer register scaled by 0.01 has exactly two decimals; drop the binary
            // noise of the multiplication (3.2 rather than 3.2000000000000002).
            let d = decimals(self.scale()).max(decimals(self.offset()));
            if d >= 9 {
                // Not a tidy decimal scale (e.g. 1/3): leave the value as computed.
                return value;
            }
            let p = 10f64.powi(d);
            (value * p).round() / p
        }
    }

    /// Decodes a coil or discrete input.
    pub fn decode_bit(&self, bit: bool) -> f64 {
        if bit { 1.0 } else { 0.0 }
    }

    /// The registers that hold `value` (the simulator's side). Integers are rounded and saturate
    /// at the type's range. For a `bool` with `bit`, only that bit of `current` is changed.
    pub fn encode_words(&self, value: f64, current: u16) -> Vec<u16> {
        let raw = (value - self.offset()) / self.scale();
        let split = |v: u32| -> Vec<u16> {
            let (hi, lo) = ((v >> 16) as u16, v as u16);
            match self.word_order() {
                WordOrder::Big => vec![hi, lo],
                WordOrder::Little => vec![lo, hi],
            }
        };
        match self.data_type {
            DataType::U16 => vec![raw.round().clamp(0.0, f64::from(u16::MAX)) as u16],
            DataType::I16 => {
                vec![raw.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16 as u16]
            }
            DataType::U32 => split(raw.round().clamp(0.0, f64::from(u32::MAX)) as u32),
            DataType::I32 => {
                split(raw.round().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32 as u32)
            }
            DataType::F32 => split((raw as f32).to_bits()),
            DataType::Bool => {
                let on = value != 0.0;
                match self.bit {
                    Some(b) => {
                        let mask = 1u16 << b;
                        vec![if on { current | mask } else { current & !mask }]
                    }
                    None => vec![u16::from(on)],
                }
            }
        }
    }

    /// Is `value` (after scale and offset) inside the point's valid range?
    pub fn in_range(&self, value: f64) -> bool {
        match self.valid {
            Some([lo, hi]) => value.is_finite() && lo <= value && value <= hi,
            None => value.is_finite(),
        }
    }

    fn overlaps(&self, other: &Point) -> bool {
        if self.table != other.table {
            return false;
        }
        let disjoint =
            self.end() < u32::from(other.address) || other.end() < u32::from(self.address);
        if disjoint {
            return false;
        }
        // Several flags packed as distinct bits of one status register share it legitimately.
        !matches!((self.bit, other.bit), (Some(a), Some(b)) if a != b && self.address == other.address)
    }
}

/// Decimal places needed to write `x` exactly (up to 9), e.g. 2 for 0.01.
fn decimals(x: f64) -> i32 {
    (0..9)
        .find(|&d| {
            let v = x * 10f64.powi(d);
            (v - v.round()).abs() < 1e-6
        })
        .unwrap_or(9)
}

impl Profile {
    /// Reads and validates a profile file, reporting every problem found.
    pub fn load(path: &Path) -> Result<Profile, Diagnostics> {
        let src = Source::read(path);
        Profile::from_source(&src)
    }

    /// Parses and validates profile text; `src.file` is used in diagnostics.
    pub fn from_source(src: &Source) -> Result<Profile, Diagnostics> {
        let mut doc = Doc::new(src);
        if !doc.diags.is_empty() {
            return Err(doc.diags);
        }
        doc.deny_unknown_keys(&["profile", "modbus", "points"]);
        let meta: Option<ProfileMeta> = doc.section("profile", true);
        let modbus: ModbusSettings = doc.section("modbus", false).unwrap_or_default();
        let points: Vec<(usize, Point)> = doc.array("points");
        let had_points_key =
            doc.diags.iter().any(|d| d.field.starts_with("points")) || !points.is_empty();
        if !had_points_key {
            doc.error("points", "a profile needs at least one [[points]] entry");
        }
        if let Some(meta) = &meta {
            for (path, msg) in check_meta(meta) {
                doc.error(&path, msg);
            }
        }
        for (path, msg) in check_modbus(&modbus) {
            doc.error(&path, msg);
        }
        for (path, msg) in check_points(&points, &modbus) {
            doc.error(&path, msg);
        }
        let diags = std::mem::take(&mut doc.diags);
        let meta = match meta {
            Some(m) if diags.is_empty() => m,
            _ => return Err(diags),
        };
        Ok(Profile {
            id: meta.id,
            description: meta.description,
            vendor: meta.vendor,
            model: meta.model,
            modbus,
            points: points.into_iter().map(|(_, p)| p).collect(),
        })
    }

    /// The point for `metric`, if the model has it.
    pub fn point(&self, metric: Metric) -> Option<&Point> {
        self.points.iter().find(|p| p.metric == metric)
    }
}

fn check_meta(meta: &ProfileMeta) -> Vec<(String, String)> {
    let ok = !meta.id.is_empty()
        && meta
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Vec::new()
    } else {
        vec![(
            "profile.id".into(),
            format!(
                "`{}` is not a valid id: use lowercase letters, digits and `-`",
                meta.id
            ),
        )]
    }
}

fn check_modbus(m: &ModbusSettings) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !(1..=MODBUS_MAX_REGISTERS).contains(&m.max_registers_per_read) {
        out.push((
            "modbus.max_registers_per_read".into(),
            format!(
                "must be 1..={MODBUS_MAX_REGISTERS} (the Modbus limit), got {}",
                m.max_registers_per_read
            ),
        ));
    }
    if !(1..=MODBUS_MAX_BITS).contains(&m.max_bits_per_read) {
        out.push((
            "modbus.max_bits_per_read".into(),
            format!(
                "must be 1..={MODBUS_MAX_BITS} (the Modbus limit), got {}",
                m.max_bits_per_read
            ),
        ));
    }
    if !(1..=60_000).contains(&m.response_timeout_ms) {
        out.push((
            "modbus.response_timeout_ms".into(),
            format!("must be 1..=60000 ms, got {}", m.response_timeout_ms),
        ));
    }
    if m.inter_request_delay_ms > 10_000 {
        out.push((
            "modbus.inter_request_delay_ms".into(),
            format!("must be at most 10000 ms, got {}", m.inter_request_delay_ms),
        ));
    }
    out
}

fn check_points(points: &[(usize, Point)], m: &ModbusSettings) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, (i, p)) in points.iter().enumerate() {
        let at = |f: &str| format!("points[{i}].{f}");
        let is_bits = p.table.is_bits();
        match (&p.unit, p.metric.is_custom()) {
            (None, true) => out.push((
                at("unit"),
                format!(
                    "`{}` is a custom metric: declare its unit, e.g. `unit = \"h\"`",
                    p.metric
                ),
            )),
            (Some(u), true) => {
                if let Err(e) = crate::metric::check_unit(u) {
                    out.push((at("unit"), e));
                }
            }
            (Some(_), false) => out.push((
                at("unit"),
                format!(
                    "`{}` is canonical, its unit is {}; `unit` applies only to `x_` metrics",
                    p.metric,
                    p.metric.unit()
                ),
            )),
            (None, false) => {}
        }
        if is_bits && p.data_type != DataType::Bool {
            out.push((
                at("type"),
                format!(
                    "a {} holds one bit, so its type must be `bool`, not `{}`",
                    p.table.name(),
                    p.data_type.name()
                ),
            ));
        }
        if p.word_order.is_some() && p.data_type.width() != 2 {
            out.push((
                at("word_order"),
                format!("applies only to 32-bit types, not `{}`", p.data_type.name()),
            ));
        }
        if let Some(b) = p.bit {
            if is_bits || p.data_type != DataType::Bool {
                out.push((
                    at("bit"),
                    "applies only to a `bool` kept in a holding or input register".into(),
                ));
            } else if b > 15 {
                out.push((at("bit"), format!("must be 0..=15, got {b}")));
            }
        }
        if p.data_type == DataType::Bool && (p.scale.is_some() || p.offset.is_some()) {
            let f = if p.scale.is_some() { "scale" } else { "offset" };
            out.push((
                at(f),
                "a `bool` is 0 or 1; scale and offset do not apply".into(),
            ));
        }
        if let Some(s) = p.scale
            && (!s.is_finite() || s == 0.0)
        {
            out.push((
                at("scale"),
                format!("must be a finite non-zero number, got {s}"),
            ));
        }
        if let Some(o) = p.offset
            && !o.is_finite()
        {
            out.push((at("offset"), format!("must be finite, got {o}")));
        }
        if let Some([lo, hi]) = p.valid
            && !(lo.is_finite() && hi.is_finite() && lo < hi)
        {
            out.push((
                at("valid"),
                format!("[{lo}, {hi}] is an empty range: need min < max"),
            ));
        }
        if p.end() > u32::from(u16::MAX) {
            out.push((
                at("address"),
                format!(
                    "a {}-register value at {} runs past 65535",
                    p.width(),
                    p.address
                ),
            ));
        }
        let limit = if is_bits {
            m.max_bits_per_read
        } else {
            m.max_registers_per_read
        };
        if p.width() > limit {
            out.push((
                at("type"),
                if is_bits {
                    format!("needs 1 bit but modbus.max_bits_per_read is {limit}")
                } else {
                    format!(
                        "needs {} registers but modbus.max_registers_per_read is {limit}",
                        p.width()
                    )
                },
            ));
        }
        for (j, q) in &points[..k] {
            if p.overlaps(q) {
                out.push((
                    at("address"),
                    format!(
                        "overlaps points[{j}] ({}, {} {}..={})",
                        q.metric,
                        q.table.name(),
                        q.address,
                        q.end()
                    ),
                ));
            }
            if p.metric == q.metric {
                out.push((
                    at("metric"),
                    format!("`{}` is already defined by points[{j}]", p.metric),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn load(text: &str) -> Result<Profile, Diagnostics> {
        Profile::from_source(&Source::new("p.toml", text))
    }

    const GOOD: &str = r#"
[profile]
id = "t"

[[points]]
metric = "fume_mg_m3"
table = "input"
address = 0
type = "f32"
valid = [0.0, 100.0]

[[points]]
metric = "fan_on"
table = "coil"
address = 0
type = "bool"
"#;

    #[test]
    fn good_profile_loads_with_defaults() {
        let p = load(GOOD).expect("valid");
        assert_eq!(p.modbus, ModbusSettings::default());
        assert_eq!(p.points.len(), 2);
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
[profile]
id = "Bad Id"

[modbus]
max_registers_per_read = 200

[[points]]
metric = "fume_mg_m3"
table = "input"
address = 0
type = "f32"
valid = [5.0, 1.0]

[[points]]
metric = "particulate_mg_m3"
table = "input"
address = 1
type = "u16"
word_order = "little"

[[points]]
metric = "fan_on"
table = "coil"
address = 0
type = "u16"
"#;
        let d = load(text).expect_err("invalid");
        let fields: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
        for want in [
            "profile.id",
            "modbus.max_registers_per_read",
            "points[0].valid",
            "points[1].word_order",
            "points[1].address",
            "points[2].type",
        ] {
            assert!(fields.contains(&want), "missing {want} in:\n{d}");
        }
        assert!(d.iter().all(|d| d.line > 0), "{d}");
    }

    #[test]
    fn unknown_metric_lists_the_canonical_names() {
        let d = load(&GOOD.replace("fume_mg_m3", "fume")).expect_err("invalid");
        assert_eq!(d.len(), 1, "{d}");
        assert_eq!(d.0[0].field, "points[0].metric");
        assert!(
            d.0[0].message.contains("particulate_mg_m3"),
            "{}",
            d.0[0].message
        );
    }

    #[test]
    fn custom_metrics_need_a_good_name_and_a_unit() {
        let x = |metric: &str, unit: Option<&str>| {
            let unit = unit.map_or(String::new(), |u| format!("unit = \"{u}\"\n"));
            format!(
                "{GOOD}\n[[points]]\nmetric = \"{metric}\"\n{unit}table = \"holding\"\naddress = 40\ntype = \"u32\"\n"
            )
        };
        let p = load(&x("x_run_hours", Some("h"))).expect("valid");
        let point = p.points.last().expect("point");
        assert_eq!((point.metric.name(), point.unit()), ("x_run_hours", "h"));
        let line_of =
            |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).map(|i| i + 1);
        for (text, field, want) in [
            (x("x_run_hours", None), "unit", "declare its unit"),
            (x("x_run_hours", Some("")), "unit", "the unit is empty"),
            (x("x_Run", Some("h")), "metric", "contains `R`"),
            (
                x("x_0123456789_0123456789_0123456789", Some("h")),
                "metric",
                "at most 32",
            ),
            (
                x("fan_runtime_h", Some("h")),
                "unit",
                "applies only to `x_` metrics",
            ),
        ] {
            let d = load(&text).expect_err(field);
            assert_eq!(d.len(), 1, "{d}");
            let n = d.0[0].clone();
            assert!(n.field.ends_with(&format!("].{field}")), "{n}");
            assert!(n.message.contains(want), "{n}");
            assert_eq!(n.file.to_str(), Some("p.toml"));
            let at = if field == "metric" {
                line_of(&text, "x_")
            } else {
                // A missing unit is reported at its point.
                line_of(&text, "unit =").or_else(|| {
                    text.lines()
                        .collect::<Vec<_>>()
                        .iter()
                        .rposition(|l| *l == "[[points]]")
                        .map(|i| i + 1)
                })
            };
            assert_eq!(Some(n.line), at, "{n}");
        }
        // Two points cannot map the same custom metric.
        let twice = format!(
            "{}\n[[points]]\nmetric = \"x_run_hours\"\nunit = \"h\"\ntable = \"holding\"\naddress = 50\ntype = \"u16\"\n",
            x("x_run_hours", Some("h"))
        );
        let d = load(&twice).expect_err("duplicate");
        assert!(d.0[0].message.contains("already defined"), "{d}");
    }

    #[test]
    fn packed_status_bits_may_share_a_register() {
        let text = r#"
[profile]
id = "bits"
[[points]]
metric = "fan_on"
table = "holding"
address = 7
type = "bool"
bit = 0
[[points]]
metric = "purifier_on"
table = "holding"
address = 7
type = "bool"
bit = 1
"#;
        let p = load(text).expect("valid");
        let words = p.points[1].encode_words(1.0, p.points[0].encode_words(1.0, 0)[0]);
        assert_eq!(words, vec![0b11]);
        assert_eq!(p.points[0].decode_words(&words), 1.0);
    }

    fn arb_point() -> impl Strategy<Value = (Point, f64)> {
        let dt = prop_oneof![
            Just(DataType::U16),
            Just(DataType::I16),
            Just(DataType::U32),
            Just(DataType::I32),
            Just(DataType::F32)
        ];
        let wo = prop_oneof![Just(WordOrder::Big), Just(WordOrder::Little)];
        (
            dt,
            wo,
            prop_oneof![Just(1.0), Just(0.1), Just(0.01), Just(10.0)],
            -100.0..100.0f64,
            0.0..1.0f64,
        )
            .prop_map(|(data_type, wo, scale, offset, frac)| {
                let (lo, hi) = match data_type {
                    DataType::U16 => (0.0, 65535.0),
                    DataType::I16 => (-32768.0, 32767.0),
                    DataType::U32 => (0.0, 4e9),
                    DataType::I32 => (-2e9, 2e9),
                    _ => (-1e6, 1e6),
                };
                let raw = lo + (hi - lo) * frac;
                let raw = if data_type == DataType::F32 {
                    raw
                } else {
                    raw.round()
                };
                let p = Point {
                    unit: None,
                    metric: Metric::FumeMgM3,
                    table: Table::Holding,
                    address: 0,
                    data_type,
                    word_order: (data_type.width() == 2).then_some(wo),
                    bit: None,
                    scale: Some(scale),
                    offset: Some(offset),
                    valid: None,
                };
                (p, raw * scale + offset)
            })
    }

    proptest! {
        #[test]
        fn decode_inverts_encode((p, value) in arb_point()) {
            let back = p.decode_words(&p.encode_words(value, 0));
            // f32 keeps ~7 significant digits; integers are exact up to float rounding of scale.
            let tol = if p.data_type == DataType::F32 { value.abs() * 1e-6 + 1e-6 } else { p.scale() * 1e-6 + value.abs() * 1e-12 };
            prop_assert!((back - value).abs() <= tol, "{value} -> {back}");
        }
    }

    #[test]
    fn scaled_integers_have_no_binary_noise() {
        let src = Source::new(
            "t.toml",
            "[profile]\nid = \"t\"\n[[points]]\nmetric = \"humidity_pct\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\nscale = 0.1\n",
        );
        let p = Profile::from_source(&src).expect("valid");
        assert_eq!(p.points[0].decode_words(&[544]), 54.4);
        assert_eq!(p.points[0].decode_words(&[3]), 0.3);
    }

    #[test]
    fn word_order_swaps_registers() {
        let mut p = Point {
            unit: None,
            metric: Metric::PurifierRuntimeH,
            table: Table::Holding,
            address: 0,
            data_type: DataType::U32,
            word_order: Some(WordOrder::Little),
            bit: None,
            scale: None,
            offset: None,
            valid: None,
        };
        assert_eq!(p.encode_words(65_537.0, 0), vec![1, 1]);
        assert_eq!(p.decode_words(&[2, 1]), 65_538.0);
        p.word_order = None;
        assert_eq!(p.decode_words(&[2, 1]), 131_073.0);
    }
}
