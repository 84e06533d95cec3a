//! Every profile shipped in `device-profiles/` loads without a single diagnostic, and together
//! they cover the shapes technicians meet in the field, so a copy of one is a good start.

use std::path::{Path, PathBuf};

use fumegrid_common::metric::Metric;
use fumegrid_common::profile::{DataType, Profile, Table, WordOrder};

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles")
}

/// `(file name, profile)` for every `*.toml`, sorted by name; panics listing every diagnostic.
fn load_all() -> Vec<(String, Profile)> {
    let dir = profiles_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        match Profile::load(&path) {
            Ok(p) => out.push((name, p)),
            Err(d) => problems.push(d.to_string()),
        }
    }
    assert!(
        problems.is_empty(),
        "shipped profiles must load cleanly:\n{}",
        problems.join("\n")
    );
    out
}

#[test]
fn every_shipped_profile_loads_without_diagnostics() {
    let all = load_all();
    assert!(
        all.len() >= 4,
        "expected at least 4 profiles in {}, found {}",
        profiles_dir().display(),
        all.len()
    );
}

#[test]
fn profile_ids_are_unique_and_match_file_names() {
    let all = load_all();
    for (name, p) in &all {
        assert_eq!(
            format!("{}.toml", p.id),
            *name,
            "a profile's id should be its file name"
        );
    }
}

#[test]
fn shipped_profiles_have_genuinely_different_shapes() {
    let all = load_all();
    let points = || all.iter().flat_map(|(_, p)| p.points.iter());
    let has = |what: &str, f: &dyn Fn(&fumegrid_common::profile::Point) -> bool| {
        assert!(points().any(f), "no shipped profile has {what}");
    };
    has("an input-register point", &|p| p.table == Table::Input);
    has("a holding-register point", &|p| p.table == Table::Holding);
    has("a coil", &|p| p.table == Table::Coil);
    has("a discrete input", &|p| p.table == Table::Discrete);
    has("an f32", &|p| p.data_type == DataType::F32);
    has("an i16", &|p| p.data_type == DataType::I16);
    has("a u32", &|p| p.data_type == DataType::U32);
    has("a little-endian word order", &|p| {
        p.word_order() == WordOrder::Little
    });
    has("a scaled value", &|p| p.scale() != 1.0);
    has("an offset", &|p| p.offset() != 0.0);
    has("a packed status bit", &|p| p.bit.is_some());
    has("a state in a whole register", &|p| {
        p.data_type == DataType::Bool && !p.table.is_bits() && p.bit.is_none()
    });

    // Modbus settings differ where the firmware does.
    let timeouts: std::collections::BTreeSet<u64> = all
        .iter()
        .map(|(_, p)| p.modbus.response_timeout_ms)
        .collect();
    assert!(timeouts.len() >= 3, "response timeouts: {timeouts:?}");
}

#[test]
fn every_measured_value_has_a_valid_range_that_flags_garbage() {
    for (name, p) in load_all() {
        for pt in p.points.iter().filter(|pt| !pt.metric.is_state()) {
            assert!(
                pt.valid.is_some(),
                "{name}: {} has no valid range",
                pt.metric
            );
            // The out-of-range scenario sends values like these; a real sensor never does.
            for garbage in [9999.0, -5.0, f64::NAN] {
                let plausible = match pt.metric {
                    // -5 °C is a winter exhaust.
                    Metric::TemperatureC => garbage == -5.0,
                    // 9999 m³/h is a real exhaust flow and 9999 h a real running time (the
                    // shipped vendor extra is a run-hours counter too).
                    Metric::FlowM3H
                    | Metric::PurifierRuntimeH
                    | Metric::FanRuntimeH
                    | Metric::Custom(_) => garbage == 9999.0,
                    _ => false,
                };
                if plausible {
                    continue;
                }
                assert!(
                    !pt.in_range(garbage),
                    "{name}: {} accepts {garbage}",
                    pt.metric
                );
            }
        }
    }
}

/// The ThingsBoard benchmark map (peers/thingsboard/regmap.py): ten holding registers, one read.
#[test]
fn tb_compatible_matches_the_thingsboard_register_map() {
    let all = load_all();
    let (_, p) = all
        .iter()
        .find(|(n, _)| n == "tb-compatible.toml")
        .expect("tb-compatible.toml is shipped");
    let expect = [
        (Metric::FumeMgM3, 0, DataType::F32, 1.0),
        (Metric::ParticulateMgM3, 2, DataType::F32, 1.0),
        (Metric::NmhcMgM3, 4, DataType::F32, 1.0),
        (Metric::FanOn, 6, DataType::Bool, 1.0),
        (Metric::PurifierOn, 7, DataType::Bool, 1.0),
        (Metric::FanCurrentA, 8, DataType::U16, 0.01),
        (Metric::PurifierCurrentA, 9, DataType::U16, 0.01),
    ];
    assert_eq!(p.points.len(), expect.len());
    for (metric, address, data_type, scale) in expect {
        let pt = p.point(metric).expect("metric present");
        assert_eq!(
            (pt.table, pt.address, pt.data_type, pt.scale()),
            (Table::Holding, address, data_type, scale),
            "{metric}"
        );
        assert_eq!(pt.word_order(), WordOrder::Big, "{metric}");
    }
    assert!(p.modbus.max_registers_per_read >= 10, "all 10 in one read");

    // One register image as devices.py writes it: 1.25, 2.5, 5.0, fan on, purifier off, 3.2 A, 0 A.
    let words: [u16; 10] = [0x3FA0, 0, 0x4020, 0, 0x40A0, 0, 1, 0, 320, 0];
    let at = |m: Metric| {
        let pt = p.point(m).expect("metric present");
        pt.decode_words(&words[usize::from(pt.address)..])
    };
    assert_eq!(at(Metric::FumeMgM3), 1.25);
    assert_eq!(at(Metric::ParticulateMgM3), 2.5);
    assert_eq!(at(Metric::NmhcMgM3), 5.0);
    assert_eq!(at(Metric::FanOn), 1.0);
    assert_eq!(at(Metric::PurifierOn), 0.0);
    assert!((at(Metric::FanCurrentA) - 3.2).abs() < 1e-9);
    assert_eq!(at(Metric::PurifierCurrentA), 0.0);
}

/// The worked examples in the profiles' comments and in device-profiles/README.md.
#[test]
fn documented_worked_examples_decode_as_written() {
    let all = load_all();
    let get = |file: &str, m: Metric| {
        all.iter()
            .find(|(n, _)| n == file)
            .and_then(|(_, p)| p.point(m).cloned())
            .unwrap_or_else(|| panic!("{file}: {m}"))
    };
    let runtime = get("scaled-u16-holding.toml", Metric::PurifierRuntimeH);
    assert!((runtime.decode_words(&[0x86A0, 0x0001]) - 10_000.0).abs() < 1e-6);
    let temp = get("scaled-u16-holding.toml", Metric::TemperatureC);
    assert!((temp.decode_words(&[0xFF9C]) - -10.0).abs() < 1e-9);
    let fume = get("scaled-u16-holding.toml", Metric::FumeMgM3);
    assert!((fume.decode_words(&[123]) - 1.23).abs() < 1e-9);
    let temp = get("coil-state-monitor.toml", Metric::TemperatureC);
    assert_eq!(temp.decode_words(&[65]), 25.0);
    let fume = get("generic-f32-input.toml", Metric::FumeMgM3);
    assert_eq!(fume.decode_words(&[0x41A0, 0x0000]), 20.0);
    let purifier = get("generic-f32-input.toml", Metric::PurifierOn);
    assert_eq!(purifier.decode_words(&[0b10]), 1.0);
    assert_eq!(purifier.decode_words(&[0b01]), 0.0);
}
