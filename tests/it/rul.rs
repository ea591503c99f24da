//! `usan fit rul`: a remaining-useful-life model trained from a history CSV
//! described by a TOML file.

use crate::harness::*;
use std::time::Duration;
use usan_core::rul::{RulModel, UnitHistory};

/// A history CSV: `engine,cycle,altitude,egt,vibration,serial` where `egt`
/// wears towards failure, `vibration` is noise with gaps, `serial` is flat.
fn history_csv(units: usize) -> String {
    history_of(&(0..units).map(|u| (format!("E{u}"), 120 + u * 13 % 80)).collect::<Vec<_>>())
}

/// The same for named units with the given lives.
fn history_of(units: &[(String, usize)]) -> String {
    let mut text = String::from("engine,cycle,altitude,egt,vibration,serial\n");
    let mut state = 7u64;
    let mut noise = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    };
    // Units interleaved, as a plant historian exports them.
    let lives: Vec<usize> = units.iter().map(|(_, life)| *life).collect();
    for cycle in 1..=lives.iter().copied().max().unwrap_or(0) {
        for (u, &life) in lives.iter().enumerate() {
            if cycle > life {
                continue;
            }
            let altitude = if (cycle + u) % 3 == 0 { 10000.0 } else { 0.0 };
            let egt = 600.0 + altitude / 500.0 + 8.0 * (0.04 * (cycle as f64 - life as f64)).exp() + noise();
            let vibration = if cycle % 17 == 0 { String::new() } else { format!("{:.3}", noise()) };
            text.push_str(&format!("{},{cycle},{altitude},{egt:.3},{vibration},42\n", units[u].0));
        }
    }
    text
}

/// `usan fit rul` on `history_csv(units)` in `dir`, writing the model to
/// `out` with the given `[model]` settings.
fn fit_engines(dir: &std::path::Path, units: usize, out: &str, model: &str) -> std::process::Output {
    std::fs::write(dir.join("history.csv"), history_csv(units)).unwrap();
    let spec = write_config(
        dir,
        "rul.toml",
        &format!(
            "out = \"{out}\"\n[history]\npath = \"history.csv\"\nunit = \"engine\"\ncycle = \"cycle\"\n\
             settings = [\"altitude\"]\n[model]\n{model}"
        ),
    );
    usan(&["fit", "rul", "--config", spec.to_str().unwrap()])
}

#[test]
fn fit_rul_trains_from_a_described_csv_and_the_artifact_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let result = fit_engines(
        dir.path(),
        30,
        "models/engines.rul.json",
        "learner = \"trees\"\ninterval_folds = 2\n[model.trees]\ntrees = 80\nlearning_rate = 0.15\n",
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("30 units") && stdout.contains("2 operating regime(s)"), "{stdout}");
    assert!(stdout.contains("sensors used: egt vibration"), "the flat serial is dropped: {stdout}");

    let text = std::fs::read_to_string(dir.path().join("models/engines.rul.json")).unwrap();
    let model = RulModel::from_json(&text).unwrap();
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

#[test]
fn live_rul_is_served_per_asset_and_alarms_before_failure() {
    let dir = tempfile::tempdir().unwrap();
    let fitted = fit_engines(
        dir.path(),
        30,
        "engines.rul.json",
        "learner = \"trees\"\ninterval_folds = 3\n[model.trees]\ntrees = 80\nlearning_rate = 0.15\n",
    );
    assert!(fitted.status.success(), "{}", String::from_utf8_lossy(&fitted.stderr));
    // A new engine run to failure at cycle 172, one cycle per minute of source time
    // (its last cycle is complete: every 17th lacks a vibration value);
    // its exhaust temperature is called `t_exhaust` on this plant.
    let live = history_of(&[("N1".to_string(), 172)]).replacen(",egt,", ",t_exhaust,", 1);
    // The first 100 cycles arrive before a restart, the rest after it.
    let lines: Vec<&str> = live.lines().collect();
    std::fs::write(dir.path().join("live.csv"), lines[..=100].join("\n") + "\n").unwrap();
    let config = write_config(
        dir.path(),
        "plant.toml",
        r#"
[store]
type = "sqlite"
path = "{dir}/plant.db"
flush_interval = "100ms"

[[sources]]
type = "file"
name = "history"
path = "{dir}/live.csv"
asset_column = "engine"
time_column = "cycle"
time_unit_s = 60.0
time_origin = "2026-01-01T00:00:00Z"
speed = "max"

[[assets]]
id = "N1"
signals = ["altitude", "t_exhaust", "vibration", "serial"]

[[rul]]
name = "rul"
model = "engines.rul.json"
signals = { egt = "t_exhaust" }
alarm = { below = 30, confidence = 0.8 }
"#,
    );
    let server = Server::serve(&config, &[]);
    server.wait_until("the first 100 cycles are stored", Duration::from_secs(60), |s| {
        s.get("/api/v1/assets/N1/rul")["estimates"][0]["cycles"] == 100
            && s.get_raw("/metrics").1.contains("usan_frames_stored_total 100")
    });
    let early = server.get("/api/v1/assets/N1/rul");
    assert!(early["estimates"][0]["rul"].as_f64().unwrap() > 40.0, "72 cycles are left: {early}");
    assert!(server.terminate().success());

    // After the restart the watch takes up the stored history: cycles count
    // on from 100, and the estimate knows how far the engine has worn.
    std::fs::write(dir.path().join("live.csv"), live).unwrap();
    let server = Server::serve(&config, &[]);
    // (Replay resumes after the newest stored frame: 72 frames arrive, so
    // a count of 172 means the first 100 were taken up from the store.)
    server.wait_until("all 172 cycles are estimated", Duration::from_secs(60), |s| {
        s.get("/api/v1/assets/N1/rul")["estimates"][0]["cycles"] == 172
    });
    let view = server.get("/api/v1/assets/N1/rul");
    let estimate = &view["estimates"][0];
    assert_eq!(estimate["name"], "rul");
    let rul = estimate["rul"].as_f64().unwrap();
    assert!(rul < 20.0, "at failure little life is left: {view}");
    assert!(estimate["lower"].as_f64().unwrap() <= rul && rul <= estimate["upper"].as_f64().unwrap(), "{view}");
    assert!(estimate["probability_within_horizon"].as_f64().unwrap() >= 0.8, "{view}");
    assert_eq!(estimate["alarming"], true);
    assert_eq!(server.get("/api/v1/assets/N1")["health"], "anomalous");

    let alarms = server.get("/api/v1/alarms?state=all");
    let alarms: Vec<&serde_json::Value> =
        alarms.as_array().unwrap().iter().filter(|a| a["detector"] == "rul").collect();
    assert_eq!(alarms.len(), 1, "one alarm: {alarms:?}");
    let origin = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z
    let cycle = (alarms[0]["raised_at"].as_i64().unwrap() - origin) / 60_000;
    assert!((100..=167).contains(&cycle), "raised {} cycles before failure", 172 - cycle);

    let (status, _) = server.get_raw("/api/v1/assets/nope/rul");
    assert_eq!(status, 404);
}

#[test]
fn a_rul_entry_that_cannot_watch_its_asset_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        fit_engines(dir.path(), 10, "m.json", "learner = \"trees\"\ninterval_folds = 0\n[model.trees]\ntrees = 10\n")
            .status
            .success()
    );
    let config = write_config(
        dir.path(),
        "plant.toml",
        "[[assets]]\nid = \"N1\"\nsignals = [\"altitude\", \"t_exhaust\"]\n\
         [[rul]]\nmodel = \"m.json\"\nassets = [\"N1\"]\nalarm = { below = 30, confidence = 1.5 }\n",
    );
    let check = usan(&["check", config.to_str().unwrap()]);
    let message = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success() && message.contains("confidence must be in (0, 1)"), "{message}");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("1.5", "0.9")).unwrap();
    let check = usan(&["check", config.to_str().unwrap()]);
    let message = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success() && message.contains("asset N1 has no signal egt"),
        "check loads the model: {message}"
    );
    let run = usan(&["serve", "--config", config.to_str().unwrap(), "--duration", "1s"]);
    let message = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{message}");
    assert!(message.contains("asset N1 has no signal egt, vibration, serial"), "{message}");
    // Without a list of assets, an entry that fits no asset is an error too, not silence.
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("assets = [\"N1\"]\n", "")).unwrap();
    let check = usan(&["check", config.to_str().unwrap()]);
    let message = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success() && message.contains("no asset has all the signals"), "{message}");
}

/// A `[[rul]]` model file damaged on disk: `usan check` names it; `usan
/// serve` refuses that entry, counts it and runs the rest.
#[test]
fn a_damaged_rul_model_file_is_refused_and_the_rest_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.json"), b"{\"format\": 4, \"sensor_names\": [\"egt\"").unwrap();
    let config = write_config(
        dir.path(),
        "plant.toml",
        "[store]\ntype = \"sqlite\"\npath = \"{dir}/plant.db\"\n\n[[sources]]\ntype = \"http\"\nname = \"push\"\n\n\
         [[assets]]\nid = \"N1\"\nsignals = [\"egt\"]\n\n[[rul]]\nname = \"life\"\nmodel = \"m.json\"\n",
    );
    let check = usan(&["check", config.to_str().unwrap()]);
    let message = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success() && message.contains("[[rul]] life: cannot use model"), "{message}");

    let server = Server::serve(&config, &[]);
    assert_eq!(metric_of(&server, "usan_models_refused_total"), 1.0);
    let (status, body) = server.post(
        "/api/v1/samples",
        &serde_json::json!({"samples": [{"asset": "N1", "signal": "egt", "ts": 1_700_000_000_000i64, "value": 640.0}]}),
    );
    assert_eq!(status, 202, "the rest runs: {body}");
    assert!(server.terminate().success());
}
