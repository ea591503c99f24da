//! Prediction speed of a RUL model over every cycle of C-MAPSS test units
//! (the windows/s that `usan eval cmapss` prints, without the fit):
//! `cargo run --release -p usan-core --example rul_speed -- DATA_DIR [SUBSET] [MODEL.json]`.
//! Fits the default ensemble on `train_SUBSET.txt` and writes it to MODEL.json
//! when that file does not exist yet; then times `predict_all` on every unit
//! of `test_SUBSET.txt` (best of 5).

use std::time::Instant;
use usan_core::rul::{RulConfig, RulModel, UnitHistory};

fn units(path: &std::path::Path) -> Vec<UnitHistory> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut units: Vec<UnitHistory> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Vec<f64> = line.split_whitespace().map(|c| c.parse().expect("a number")).collect();
        let unit = format!("{}", v[0]);
        if units.last().is_none_or(|u| u.unit != unit) {
            units.push(UnitHistory { unit, cycles: Vec::new(), settings: Vec::new(), sensors: Vec::new() });
        }
        let u = units.last_mut().expect("just pushed");
        u.cycles.push(v[1]);
        u.settings.push(v[2..5].to_vec());
        u.sensors.push(v[5..].to_vec());
    }
    units
}

fn main() {
    // As the `usan` binary does at start-up: the batch workers wait ready.
    usan_core::parallel::start();
    let mut args = std::env::args().skip(1);
    let data = std::path::PathBuf::from(args.next().expect("DATA_DIR"));
    let subset = args.next().unwrap_or_else(|| "FD001".into());
    let model_path = std::path::PathBuf::from(args.next().unwrap_or_else(|| format!("/tmp/usan-{subset}.rul.json")));
    let model = if let Ok(text) = std::fs::read_to_string(&model_path) {
        RulModel::from_json(&text).expect("a RUL model")
    } else {
        let names: Vec<String> = (1..=21).map(|i| format!("s{i}")).collect();
        let start = Instant::now();
        let model = RulModel::fit(&RulConfig::default(), &names, &units(&data.join(format!("train_{subset}.txt"))))
            .expect("fit");
        println!("fitted in {:.1} s", start.elapsed().as_secs_f64());
        std::fs::write(&model_path, serde_json::to_string(&model).expect("json")).expect("write the model");
        model
    };
    let test = units(&data.join(format!("test_{subset}.txt")));
    let windows: usize = test.iter().map(|u| u.cycles.len()).sum();
    let mut best = f64::INFINITY;
    let mut checksum = 0.0;
    for _ in 0..5 {
        let start = Instant::now();
        checksum = test.iter().map(|u| model.predict_all(u).expect("predict").iter().map(|e| e.rul).sum::<f64>()).sum();
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{subset}: {windows} windows in {best:.4} s: {:.0} windows/s (best of 5), checksum {checksum:.3}",
        windows as f64 / best
    );
}
