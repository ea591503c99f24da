//! Entry points of the fuzz targets (`fuzz/`): one per parser of outside
//! input. Each takes arbitrary bytes the way the input arrives and must
//! return, whatever the bytes: a panic is a bug (the fuzzer reports it, and
//! its input joins the regression corpus `fuzz/regressions/<target>/`,
//! replayed by this module's tests).

use crate::plant::Plant;
use std::path::PathBuf;
use usan_core::model::Timestamp;

/// A fuzz target: arbitrary bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/fuzz_targets/<name>.rs` calls them.
pub const TARGETS: [(&str, Target); 11] = [
    ("config_toml", config_toml),
    ("push_json", push_json),
    ("mqtt_json", mqtt_json),
    ("sparkplug_b", sparkplug_b),
    ("modbus_registers", modbus_registers),
    ("csv_file", csv_file),
    ("detector_model", detector_model),
    ("rul_model", rul_model),
    ("spool_records", spool_records),
    ("journal_entry", journal_entry),
    ("onnx_model", onnx_model),
];

fn plant() -> Plant {
    Plant::of_signals(&[("pump-1", &["temp", "flow"]), ("line/press.2", &["x"])])
}

/// A scratch folder of this process (files are rewritten per input).
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("usan-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A configuration file's text: parsed and validated.
pub fn config_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = crate::config::Config::parse(text)
    {
        let _ = config.engine();
    }
}

/// A `POST /api/v1/samples` body: parsed and validated against a plant.
pub fn push_json(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<crate::source::http::PushRequest>(data) {
        let _ = crate::source::http::validate(request, &plant(), Timestamp(i64::MAX), 100_000);
    }
}

/// An MQTT message read by JSON mappings of every shape.
pub fn mqtt_json(data: &[u8]) {
    let _ = crate::source::mqtt::read_json_for_fuzzing(data);
}

/// A Sparkplug B payload as every kind of message.
pub fn sparkplug_b(data: &[u8]) {
    let _ = crate::protocol::sparkplug::handle_for_fuzzing(data);
}

/// Modbus register words decoded as every type and order.
pub fn modbus_registers(data: &[u8]) {
    let _ = crate::source::modbus::decode_for_fuzzing(data);
}

/// A CSV file replayed by a file source (its first 10,000 rows).
pub fn csv_file(data: &[u8]) {
    let path = scratch().join("input.csv");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let settings = format!(
        "name = \"f\"\npath = {:?}\ntime_column = \"t\"\nasset_column = \"asset\"\nasset_template = \"{{}}\"\n",
        path.display().to_string()
    );
    let Ok(config) = toml::from_str::<crate::source::file::FileSourceConfig>(&settings) else { return };
    let plant = plant();
    let Ok(mut source) = crate::source::file::FileSource::open(&config, &plant) else { return };
    let mut counts = crate::source::file::RowCounts::default();
    for _ in 0..10_000 {
        match source.next_row(&plant, &mut counts) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

/// A detector model artifact (`usan fit`): loaded as `usan serve` loads
/// one, then asked to score a row of its width.
pub fn detector_model(data: &[u8]) {
    use usan_core::detector::Detector;
    let Ok(model) = serde_json::from_slice::<usan_core::detector::FittedModel>(data) else { return };
    if model.check_format().is_err() || model.signals.len() > 4096 {
        return;
    }
    let mut detector = model.detector.clone();
    let row = vec![0.5; model.signals.len()];
    let _ = detector.score(&row);
    // The batch path too (the forest's and PCA's kernels).
    let _ = detector.score_values(&[row.clone(), row.iter().map(|v| -v).collect(), row]);
}

/// A RUL model artifact (`usan fit rul`).
pub fn rul_model(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = usan_core::rul::RulModel::from_json(text);
    }
}

/// A sink's spool file as found at start (a crash may have torn it).
pub fn spool_records(data: &[u8]) {
    let dir = scratch().join("spool");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(dir.join("records.log"), data).is_err() {
        return;
    }
    if let Ok(spool) = crate::sink::spool::Spool::open(&dir, 1 << 20) {
        let _ = spool.peek(1000);
    }
}

/// A journal entry read back at start.
pub fn journal_entry(data: &[u8]) {
    let plant = plant();
    for asset in 0..plant.assets.len() {
        let _ = crate::pipeline::journal::decode(&plant, asset, data);
    }
}

/// An ONNX model file: inspected, checked, built and run on a row and on a
/// row of gaps (tract may panic on a hostile graph; usan must not).
pub fn onnx_model(data: &[u8]) {
    #[cfg(feature = "onnx")]
    {
        let _ = usan_onnx::inspect(data);
        if let Ok(model) = usan_onnx::Model::load(data, Some(3)) {
            let width = model.input_width().min(4096);
            let rows = [vec![0.5; width], vec![f64::NAN; width]].concat();
            let _ = model.run(2, &rows);
        }
    }
    #[cfg(not(feature = "onnx"))]
    let _ = data;
}

/// Inputs a parser takes when all is well, per target: the fuzzers' seeds
/// (`cargo test --lib fuzzing -- --ignored` writes them to `fuzz/seeds/`).
#[must_use]
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::protocol::sparkplug::{Metric, Payload, Value};
    use crate::source::Batch;
    use prost::Message as _;
    use usan_core::model::{Quality, Sample};
    let sparkplug =
        |seq: u64, metrics: Vec<Metric>| Payload { timestamp: Some(1_000), metrics, seq: Some(seq) }.encode_to_vec();
    let metric = |name: Option<&str>, alias: u64, datatype: u32, value: Value| Metric {
        name: name.map(str::to_string),
        alias: Some(alias),
        datatype: Some(datatype),
        value: Some(value),
        ..Metric::default()
    };
    let plant = plant();
    let journal = |batch: &Batch| crate::pipeline::journal::encode(&plant, batch).payload;
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![
        ("push_json", br#"{"samples":[{"asset":"pump-1","signal":"temp","ts":"2026-01-01T00:00:00Z","value":71.5,"quality":"good"},{"asset":"pump-1","signal":"flow","ts":1767225600000,"value":3.0}]}"#.to_vec()),
        ("mqtt_json", br#"{"ts": 1767225600000, "temp": 20.5, "flow": 3}"#.to_vec()),
        ("mqtt_json", br#"{"asset": "pump-1", "rows": [{"t": 1767225600, "name": "temp", "v": 1.5, "q": 192}, {"t": 1767225601, "name": "flow", "v": "2", "q": "bad"}]}"#.to_vec()),
        ("mqtt_json", br#"{"meta": {"time": [1767225600000000000]}, "a": {"b": 4.5}, "c": [0, 1, 2.5]}"#.to_vec()),
        ("sparkplug_b", sparkplug(0, vec![metric(Some("temp"), 1, 10, Value::Double(20.5)), metric(Some("flow"), 2, 9, Value::Float(3.0))])),
        ("sparkplug_b", sparkplug(1, vec![metric(None, 1, 10, Value::Double(21.0)), metric(None, 2, 3, Value::Int(7))])),
        ("modbus_registers", vec![0x41, 0x20, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x01, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18]),
        ("csv_file", b"t,asset,temp,flow\n2026-01-01T00:00:00Z,pump-1,20.5,3\n2026-01-01T00:00:01Z,pump-1,20.6,\n2026-01-01T00:00:02Z,line/press.2,1,x\n".to_vec()),
        ("spool_records", {
            let mut bytes = Vec::new();
            for record in [&b"{\"event\":\"finding\"}"[..], b"{\"event\":\"alarm_raised\"}"] {
                bytes.extend_from_slice(&(record.len() as u32).to_le_bytes());
                bytes.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
                bytes.extend_from_slice(record);
            }
            bytes
        }),
        ("journal_entry", journal(&Batch::Samples {
            asset: 0,
            samples: vec![
                Sample { signal: 1, ts: Timestamp(1_767_225_600_000), value: 3.0, quality: Quality::Good },
                Sample { signal: 0, ts: Timestamp(1_767_225_600_000), value: 20.5, quality: Quality::Uncertain },
            ],
        })),
        ("journal_entry", journal(&Batch::Rows { asset: 0, rows: vec![(Timestamp(1), vec![1.0, f64::NAN]), (Timestamp(2), vec![2.0, 3.0])] })),
    ];
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for example in ["demo.toml", "mqtt.toml", "opcua.toml", "pumps.toml", "spc.toml", "tep.toml"] {
        if let Ok(text) = std::fs::read(root.join("examples").join(example)) {
            out.push(("config_toml", text));
        }
    }
    if let Ok(text) = std::fs::read(root.join("examples/models/fd001_demo.rul.json")) {
        out.push(("rul_model", text));
    }
    // A small RUL model (four trees): quick to parse, so the fuzzer mutates
    // every part of the format many times.
    let units: Vec<usan_core::rul::UnitHistory> = (0..6)
        .map(|u| {
            let life = 40 + 4 * u;
            let wear = |c: usize, k: f64| k * (0.08 * (c as f64 - life as f64)).exp() + f64::from((c % 3) as u8) * 0.01;
            usan_core::rul::UnitHistory {
                unit: format!("u{u}"),
                cycles: (1..=life).map(|c| c as f64).collect(),
                settings: (1..=life).map(|c| vec![f64::from((c % 2) as u8)]).collect(),
                sensors: (1..=life).map(|c| vec![600.0 + wear(c, 8.0), 1.0 + wear(c, 0.5)]).collect(),
            }
        })
        .collect();
    let sensors = vec!["egt".to_string(), "vibration".to_string()];
    {
        let config = usan_core::rul::RulConfig {
            window: 8,
            interval_folds: 0,
            learner: usan_core::rul::Learner::Trees,
            trees: usan_core::trees::gbdt::GbdtConfig { trees: 4, leaves: 4, ..Default::default() },
            ..Default::default()
        };
        if let Ok(model) = usan_core::rul::RulModel::fit(&config, &sensors, &units)
            && let Ok(json) = serde_json::to_vec(&model)
        {
            out.push(("rul_model", json));
        }
    }
    // A fitted model of every detector kind: the smallest of its examples.
    let rows: Vec<Vec<f64>> = (0..400)
        .map(|i| vec![f64::from(i % 7) + f64::from(i % 11) * 0.1, f64::from(i % 5) * 0.5, f64::from((i * 7) % 13)])
        .collect();
    let mut smallest: std::collections::BTreeMap<&str, Vec<u8>> = std::collections::BTreeMap::new();
    for config in usan_core::detector::DetectorConfig::examples() {
        if let Ok(mut detector) = config.build()
            && usan_core::detector::Detector::learn(&mut detector, &rows).is_ok()
        {
            let model = usan_core::detector::FittedModel::new(vec!["a".into(), "b".into(), "c".into()], detector);
            if let Ok(json) = serde_json::to_vec(&model)
                && smallest.get(config.kind()).is_none_or(|kept| json.len() < kept.len())
            {
                smallest.insert(config.kind(), json);
            }
        }
    }
    out.extend(smallest.into_values().map(|json| ("detector_model", json)));
    #[cfg(feature = "onnx")]
    out.extend(usan_onnx::examples::examples().into_iter().map(|(_, bytes)| ("onnx_model", bytes)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes [`seeds`] to `fuzz/seeds/<target>/`.
    #[test]
    #[ignore = "writes the fuzzers' seed corpora into the source tree"]
    fn write_seeds() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        for (i, (target, data)) in seeds().into_iter().enumerate() {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{i:02}")), data).unwrap();
        }
    }

    #[test]
    fn every_target_has_seeds() {
        let seeds = seeds();
        for (name, _) in TARGETS {
            assert!(seeds.iter().any(|(target, _)| *target == name), "no seed for {name}");
        }
    }

    /// Every input the fuzzers found a problem with, and every seed, still
    /// runs to completion.
    #[test]
    fn the_regression_and_seed_corpora_run_clean() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut ran = 0;
        let seeds = seeds();
        for (name, target) in TARGETS {
            for (_, data) in seeds.iter().filter(|(t, _)| *t == name) {
                target(data);
            }
            for folder in ["seeds", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else { continue };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).unwrap();
                    target(&data);
                    ran += 1;
                }
            }
            // And the small cases every parser must survive.
            for data in [&b""[..], b"\0", b"{", b"[]", b"\xff\xfe", &[0u8; 64]] {
                target(data);
            }
        }
        assert!(ran >= seeds.len(), "fuzz/seeds holds {ran} inputs, fewer than the {} seeds", seeds.len());
    }
}
