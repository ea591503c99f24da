//! `usan fit rul`: a remaining-useful-life model trained from a history CSV
//! described by a TOML file.

mod common;

use common::*;
use usan_core::rul::{RulModel, UnitHistory};

/// A history CSV: `engine,cycle,altitude,egt,vibration,serial` where `egt`
/// wears towards failure, `vibration` is noise with gaps, `serial` is flat.
fn history_csv(units: usize) -> String {
    let mut text = String::from("engine,cycle,altitude,egt,vibration,serial\n");
    let mut state = 7u64;
    let mut noise = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    };
    // Units interleaved, as a plant historian exports them.
    let lives: Vec<usize> = (0..units).map(|u| 120 + u * 13 % 80).collect();
    for cycle in 1..=lives.iter().copied().max().unwrap_or(0) {
        for (u, &life) in lives.iter().enumerate() {
            if cycle > life {
                continue;
            }
            let altitude = if (cycle + u) % 3 == 0 { 10000.0 } else { 0.0 };
            let egt = 600.0 + altitude / 500.0 + 8.0 * (0.04 * (cycle as f64 - life as f64)).exp() + noise();
            let vibration = if cycle % 17 == 0 { String::new() } else { format!("{:.3}", noise()) };
            text.push_str(&format!("E{u},{cycle},{altitude},{egt:.3},{vibration},42\n"));
        }
    }
    text
}

#[test]
fn fit_rul_trains_from_a_described_csv_and_the_artifact_predicts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("history.csv"), history_csv(30)).unwrap();
    let spec = write_config(
        dir.path(),
        "rul.toml",
        r#"
out = "models/engines.rul.json"
[history]
path = "history.csv"
unit = "engine"
cycle = "cycle"
settings = ["altitude"]
[model]
interval_folds = 2
[model.trees]
trees = 80
learning_rate = 0.15
"#,
    );
    let result = usan(&["fit", "rul", "--config", spec.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("30 units") && stdout.contains("2 operating regime(s)"), "{stdout}");
    assert!(stdout.contains("sensors used: egt vibration"), "the flat serial is dropped: {stdout}");

    let text = std::fs::read_to_string(dir.path().join("models/engines.rul.json")).unwrap();
    let model: RulModel = serde_json::from_str(&text).unwrap();
    assert_eq!(model.format, RulModel::FORMAT);
    assert_eq!(model.setting_names, ["altitude"]);
    assert_eq!(model.sensor_names, ["egt", "vibration", "serial"]);
    // An engine 40 cycles from failure, seen for 100 cycles.
    let life = 140;
    let history = UnitHistory {
        unit: "new".into(),
        cycles: (1..=100).map(f64::from).collect(),
        settings: (1..=100).map(|_| vec![0.0]).collect(),
        sensors: (1..=100)
            .map(|c| vec![600.0 + 8.0 * (0.04 * (f64::from(c) - f64::from(life))).exp(), 0.0, 42.0])
            .collect(),
    };
    let estimate = model.predict(&history).unwrap();
    assert!((estimate.rul - 40.0).abs() < 25.0, "{estimate:?}");
    assert!(estimate.lower <= estimate.rul && estimate.rul <= estimate.upper, "{estimate:?}");
}

#[test]
fn fit_rul_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let fit = |csv: &str, spec: &str| {
        std::fs::write(dir.path().join("history.csv"), csv).unwrap();
        let path = write_config(dir.path(), "rul.toml", spec);
        let result = usan(&["fit", "rul", "--config", path.to_str().unwrap()]);
        assert!(!result.status.success());
        String::from_utf8_lossy(&result.stderr).to_string()
    };
    let spec = "out = \"m.json\"\n[history]\npath = \"history.csv\"\nunit = \"engine\"\nsettings = [\"altitude\"]\n";
    let good = history_csv(3);
    let message = fit(&good, &spec.replace("altitude", "mach"));
    assert!(message.contains("no column \"mach\""), "{message}");
    let backwards = good.replacen("E0,2,", "E0,0,", 1);
    let message = fit(&backwards, spec);
    assert!(message.contains("unit E0 goes from cycle 1 to 0"), "{message}");
    let bad_cell = good.replacen(",42\n", ",forty-two\n", 1);
    let message = fit(&bad_cell, spec);
    assert!(message.contains("line 2") && message.contains("not a number"), "{message}");
    let message = fit(&good, &format!("{spec}[model]\nwindow = 0\n"));
    assert!(message.contains("rul.window"), "{message}");
    let message = fit(&good, &format!("{spec}colour = \"red\"\n"));
    assert!(message.contains("unknown field"), "{message}");
}
