//! `fumegrid-sim values`: what a monitor reports at a scenario time, for technicians (compare with
//! a probe or mbpoll) and for tests.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Map, Value, json};

use super::CmdError;
use crate::regmap::{Data, RegisterImage};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  fumegrid-sim values --profile device-profiles/tb-compatible.toml --scenario exceedance --at 600 --json"
)]
pub struct ValuesArgs {
    /// Device profile (TOML).
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,
    /// Scenario name (see `fumegrid-sim scenarios`).
    #[arg(long, value_name = "NAME")]
    pub scenario: String,
    /// Scenario time, seconds.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub at: f64,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ValuesArgs) -> Result<(), CmdError> {
    let scenario = super::parse_scenario(&a.scenario)?;
    if !a.at.is_finite() {
        return Err(CmdError::Config(
            "--at must be a finite number of seconds".into(),
        ));
    }
    let profile = super::load_profile(&a.profile)?;
    let img = RegisterImage::at(&profile, scenario, a.at);
    let expected = crate::regmap::expected(&profile, scenario, a.at);

    let mut points = Vec::new();
    let mut values = Map::new();
    let mut lines = Vec::new();
    for (p, (metric, value)) in profile.points.iter().zip(&expected) {
        let raw = img.read(p.table, p.address, p.width()).ok();
        let raw_json = match &raw {
            Some(Data::Words(w)) => json!({ "words": w }),
            Some(Data::Bits(b)) => json!({ "bits": b }),
            None => json!({}),
        };
        let raw_text = match &raw {
            Some(Data::Words(w)) => w
                .iter()
                .map(|x| format!("0x{x:04x}"))
                .collect::<Vec<_>>()
                .join(" "),
            Some(Data::Bits(b)) => b
                .iter()
                .map(|x| u8::from(*x).to_string())
                .collect::<Vec<_>>()
                .join(" "),
            None => String::new(),
        };
        let ok = p.in_range(*value);
        values.insert(metric.name().into(), json!(value));
        let mut obj = json!({
            "metric": metric.name(),
            "table": p.table.name(),
            "address": p.address,
            "type": p.data_type.name(),
            "value": value,
            "in_range": ok,
        });
        if let (Value::Object(o), Value::Object(r)) = (&mut obj, raw_json) {
            o.extend(r);
        }
        points.push(obj);
        lines.push(format!(
            "{:<20} {:>14} {:<6} {:<8} {:>5} {:<4} {:<14} {}",
            metric.name(),
            format!("{value:.4}"),
            p.unit(),
            p.table.name(),
            p.address,
            p.data_type.name(),
            raw_text,
            if ok { "" } else { "OUT OF RANGE" }
        ));
    }
    let mut blocks = Vec::new();
    let mut block_lines = Vec::new();
    for (t, start, words) in img.word_blocks() {
        block_lines.push(format!(
            "{:<8} {start}..={}: {}",
            t.name(),
            usize::from(start) + words.len() - 1,
            words
                .iter()
                .map(|x| format!("0x{x:04x}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        blocks.push(json!({ "table": t.name(), "address": start, "words": words }));
    }
    for (t, start, bits) in img.bit_blocks() {
        block_lines.push(format!(
            "{:<8} {start}..={}: {}",
            t.name(),
            usize::from(start) + bits.len() - 1,
            bits.iter()
                .map(|x| u8::from(*x).to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        blocks.push(json!({ "table": t.name(), "address": start, "bits": bits }));
    }
    if a.json {
        let doc = json!({
            "profile": profile.id,
            "scenario": scenario.name(),
            "t": a.at,
            "values": values,
            "points": points,
            "registers": blocks,
        });
        println!("{doc}");
    } else {
        println!(
            "profile {}  scenario {}  t = {} s",
            profile.id,
            scenario.name(),
            a.at
        );
        println!(
            "{:<20} {:>14} {:<6} {:<8} {:>5} {:<4} {:<14}",
            "metric", "value", "unit", "table", "addr", "type", "raw"
        );
        for l in lines {
            println!("{}", l.trim_end());
        }
        println!("registers (unused addresses inside a table's span read 0):");
        for l in block_lines {
            println!("{l}");
        }
    }
    Ok(())
}
