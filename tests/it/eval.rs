//! `usan eval`: the benchmark protocols on the small samples shipped in
//! `tests/data`, laid out as the full benchmarks are.

use crate::harness::*;

/// The TEP sample, cut into the benchmark's files: d00.dat (transposed, as
/// upstream), d00_te.dat and a fault run d01.dat.
fn tep_folder(dir: &std::path::Path) {
    let text = std::fs::read_to_string(repo().join("tests/data/tep/tep_normal_then_idv1.csv")).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').skip(2).collect()).collect();
    let write = |name: &str, rows: &[Vec<&str>]| {
        let body: String = rows.iter().map(|r| format!("  {}\n", r.join("  "))).collect();
        std::fs::write(dir.join(name), body).unwrap();
    };
    let transposed: Vec<Vec<&str>> = (0..52).map(|j| rows[..500].iter().map(|r| r[j]).collect()).collect();
    write("d00.dat", &transposed);
    write("d00_te.dat", &rows[500..800]);
    write("d01.dat", &rows[800..1000]);
}

#[test]
fn eval_tep_writes_the_scorer_layout_and_separates_fault_from_normal() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    tep_folder(data.path());
    let result = usan(&["eval", "tep", data.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("development mode"), "{stdout}");
    assert!(stdout.contains("[tep.algorithm]"), "prints its settings: {stdout}");
    assert!(stdout.contains("wall time"), "{stdout}");

    let alarms = |name: &str| -> Vec<u8> {
        let text = std::fs::read_to_string(out.path().join(name)).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("sample,alarm,t2,spe"));
        lines
            .enumerate()
            .map(|(i, l)| {
                let cells: Vec<&str> = l.split(',').collect();
                assert_eq!(cells[0], (i + 1).to_string());
                cells[1].parse().unwrap()
            })
            .collect()
    };
    let normal = alarms("d00_te.csv");
    let fault = alarms("d01.csv");
    assert_eq!((normal.len(), fault.len()), (300, 200));
    let rate = |a: &[u8]| a.iter().map(|x| f64::from(*x)).sum::<f64>() / a.len() as f64;
    assert!(rate(&normal) <= 0.05, "false-alarm rate {}", rate(&normal));
    assert!(rate(&fault[20..]) >= 0.95, "IDV1 detection rate {}", rate(&fault[20..]));
}

#[test]
fn eval_tep_folds_choose_each_setting_within_the_false_alarm_budget() {
    let data = tempfile::tempdir().unwrap();
    tep_folder(data.path());
    std::fs::copy(data.path().join("d01.dat"), data.path().join("d02.dat")).unwrap();
    // Candidate 2 alarms on everything (over the false-alarm budget), candidate 3 on nothing.
    let settings = data.path().join("candidates.toml");
    std::fs::write(
        &settings,
        "[[candidates.tep]]\nalgorithm = { type = \"cva\" }\nthreshold = { value = 1e-9, k = 1, n = 1 }\n\
         [[candidates.tep]]\nalgorithm = { type = \"cva\" }\nthreshold = { value = 1e12, k = 1, n = 1 }\n",
    )
    .unwrap();
    let (d, s) = (data.path().to_str().unwrap(), settings.to_str().unwrap());
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let result = usan(&["eval", "tep", d, "--out", o, "--settings", s, "--folds", "series"]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("[[candidates.tep]]"), "prints the candidates it chose among: {stdout}");
    assert!(stdout.contains("| 2 | FAR 1.000"), "{stdout}");
    let held = stdout.lines().find(|l| l.starts_with("held-out")).unwrap();
    assert!(held.contains("(2 folds)") && held.contains("IDV1 (1) → 1") && held.contains("IDV2 (1) → 1"), "{held}");
    assert!(stdout.contains("in-sample: candidate 1 "), "{stdout}");
    let result = usan(&["eval", "tep", d, "--out", o, "--settings", s, "--folds", "category"]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("--folds takes series"));
}

#[test]
fn eval_tep_refuses_bad_files_and_settings_clearly() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    tep_folder(data.path());
    std::fs::write(data.path().join("d02.dat"), "1 2 3\n4 5 x\n").unwrap();
    let result = usan(&["eval", "tep", data.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("d02.dat: line 2"), "{stderr}");

    std::fs::remove_file(data.path().join("d02.dat")).unwrap();
    let settings = data.path().join("settings.toml");
    std::fs::write(&settings, "[tep.algorithm]\ntype = \"pca\"\nsmoothing = 5\n[tep.threshold]\nvalue = 1.0\n")
        .unwrap();
    let result = usan(&[
        "eval",
        "tep",
        data.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--settings",
        settings.to_str().unwrap(),
    ]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("needs limits = \"empirical\""));

    let empty = tempfile::tempdir().unwrap();
    let result = usan(&["eval", "tep", empty.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("d00.dat"));
}

/// A SKAB-layout folder made here (SKAB itself is GPL and is not shipped):
/// three correlated sensors and a constant one, 1 Hz; in `valve1/0.csv` a
/// valve closes at row 600 for 200 rows (flow drops, pressure rises).
fn skab_folder(root: &std::path::Path) {
    let data = root.join("data");
    for group in ["valve1", "anomaly-free"] {
        std::fs::create_dir_all(data.join(group)).unwrap();
    }
    let mut g = usan_core::stats::SeededNormal::new(5);
    let mut labelled = String::from("datetime;Flow;Pressure;Current;Voltage;anomaly;changepoint\n");
    let mut free = String::from("datetime;Flow;Pressure;Current;Voltage\n");
    for i in 0..1000 {
        let common = g.normal();
        let closed = (600..800).contains(&i);
        let normal_flow = 32.0 + common + 0.2 * g.normal();
        let normal_pressure = 1.0 + 0.1 * common + 0.02 * g.normal();
        let current = 2.0 + 0.05 * common + 0.01 * g.normal();
        let flow = normal_flow - if closed { 6.0 } else { 0.0 };
        let pressure = normal_pressure + if closed { 0.5 } else { 0.0 };
        let time = format!("2020-03-09 10:{:02}:{:02}", i / 60 % 60, i % 60);
        let changepoint = u8::from(i == 600 || i == 800);
        labelled +=
            &format!("{time};{flow:.4};{pressure:.4};{current:.4};230.0;{}.0;{changepoint}.0\n", u8::from(closed));
        free += &format!("{time};{normal_flow:.4};{normal_pressure:.4};{current:.4};230.0\n");
    }
    std::fs::write(data.join("valve1/0.csv"), labelled).unwrap();
    std::fs::write(data.join("anomaly-free/anomaly-free.csv"), free).unwrap();
}

#[test]
fn eval_skab_writes_one_prediction_per_row_and_finds_the_closed_valve() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    skab_folder(root.path());
    let result = usan(&["eval", "skab", root.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("over 1 files (600 test rows)"), "{stdout}");
    assert!(!out.path().join("anomaly-free").exists(), "the unlabelled file is not scored");

    let text = std::fs::read_to_string(out.path().join("valve1/0.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("datetime,anomaly,changepoint,score"));
    let rows: Vec<Vec<String>> = lines.map(|l| l.split(',').map(str::to_string).collect()).collect();
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows[0][0], "2020-03-09 10:00:00", "datetimes are passed through");
    assert!(rows[..400].iter().all(|r| r[1] == "0" && r[2] == "0"), "training rows are never flagged");
    let flagged = |range: std::ops::Range<usize>| rows[range].iter().filter(|r| r[1] == "1").count();
    assert!(flagged(605..800) >= 190, "the closed valve is found: {}", flagged(605..800));
    assert!(flagged(400..600) <= 10, "normal rows are quiet: {}", flagged(400..600));
    let changepoints = rows.iter().filter(|r| r[2] == "1").count();
    assert!(changepoints >= 2, "the start and the end of the anomaly are changepoints");
}

#[test]
fn eval_skab_refuses_wrong_delimiters_and_bad_cells_with_their_line() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    skab_folder(root.path());
    let file = root.path().join("data/valve1/0.csv");
    let original = std::fs::read_to_string(&file).unwrap();
    let cases = [
        (original.replace(';', ","), "start with `datetime`"),
        (original.replacen("230.0;0.0;0.0", "230.0;x;0.0", 1), "line 2"),
        (original.replacen(";230.0;0.0;0.0\n", ";0.0;0.0\n", 1), "line 2 has 6 cells"),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, text).unwrap();
        let result = usan(&["eval", "skab", root.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
        assert!(!result.status.success());
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains(expected), "expected {expected:?} in {stderr}");
    }
}

/// A NAB-layout folder: a noisy level with a shift inside the one labelled
/// window, the same level quantised and then frozen, and a series with no anomaly.
fn nab_folder(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("data/synthetic")).unwrap();
    std::fs::create_dir_all(root.join("labels")).unwrap();
    let mut g = usan_core::stats::SeededNormal::new(9);
    let start = chrono::NaiveDate::from_ymd_opt(2014, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    let stamp = |i: i64| (start + chrono::Duration::minutes(5 * i)).format("%Y-%m-%d %H:%M:%S").to_string();
    let mut shifted = String::from("timestamp,value\n");
    let mut quiet = String::from("timestamp,value\n");
    let mut stuck = String::from("timestamp,value\n");
    for i in 0..2000 {
        let base = 50.0 + 0.5 * g.normal();
        let value = if i >= 1500 { base + 20.0 } else { base };
        shifted += &format!("{},{value:.3}\n", stamp(i));
        quiet += &format!("{},{base:.3}\n", stamp(i));
        // Quantised to 0.1, so short runs of equal values are normal; frozen for 200 steps.
        let held = if (1500..1700).contains(&i) { 50.0 } else { base };
        stuck += &format!("{},{held:.1}\n", stamp(i));
    }
    std::fs::write(root.join("data/synthetic/shift.csv"), shifted).unwrap();
    std::fs::write(root.join("data/synthetic/quiet.csv"), quiet).unwrap();
    std::fs::write(root.join("data/synthetic/stuck.csv"), stuck).unwrap();
    let window = |from: i64, to: i64| format!("[[\"{}.000000\", \"{}.000000\"]]", stamp(from), stamp(to));
    let labels = format!(
        "{{\"synthetic/shift.csv\": {}, \"synthetic/stuck.csv\": {}, \"synthetic/quiet.csv\": []}}",
        window(1450, 1600),
        window(1450, 1700)
    );
    std::fs::write(root.join("labels/combined_windows.json"), labels).unwrap();
}

#[test]
fn eval_nab_writes_nab_results_layout_and_scores_with_nab_rules() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    nab_folder(root.path());
    let result = usan(&["eval", "nab", root.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    let text = std::fs::read_to_string(out.path().join("usan/synthetic/usan_shift.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score,label"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2000);
    let scores: Vec<f64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    let labelled: Vec<usize> = rows.iter().enumerate().filter(|(_, r)| r[3] == "1").map(|(i, _)| i).collect();
    assert_eq!((labelled[0], *labelled.last().unwrap()), (1450, 1600));
    let onsets: Vec<usize> = (0..2000).filter(|i| scores[*i] >= 0.5).collect();
    assert!(onsets.contains(&1500), "the shift is flagged where it starts: {onsets:?}");
    assert!(out.path().join("usan/synthetic/usan_quiet.csv").exists());
    let stuck = std::fs::read_to_string(out.path().join("usan/synthetic/usan_stuck.csv")).unwrap();
    let stuck_onsets: Vec<usize> = stuck
        .lines()
        .skip(1)
        .enumerate()
        .filter(|(_, l)| l.split(',').nth(2).unwrap().parse::<f64>().unwrap() >= 0.5)
        .map(|(i, _)| i)
        .collect();
    assert!(
        stuck_onsets.iter().any(|i| (1500..1520).contains(i)),
        "the freeze is flagged within its first 20 values: {stuck_onsets:?}"
    );
    let line = stdout.lines().find(|l| l.starts_with("NAB score")).unwrap();
    let standard: f64 = line.split("standard ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(standard > 50.0, "{line}");
}

/// The first `standard` figure of the stdout line that starts with `prefix`.
fn standard_after(stdout: &str, prefix: &str) -> f64 {
    let line = stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"));
    line.split("standard ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap()
}

#[test]
fn eval_nab_folds_choose_each_setting_without_the_series_they_score() {
    let root = tempfile::tempdir().unwrap();
    nab_folder(root.path());
    // A second category: the shift again, under another name.
    std::fs::create_dir_all(root.path().join("data/copies")).unwrap();
    std::fs::copy(root.path().join("data/synthetic/shift.csv"), root.path().join("data/copies/shift.csv")).unwrap();
    let labels = std::fs::read_to_string(root.path().join("labels/combined_windows.json")).unwrap();
    let window = labels.split("\"synthetic/shift.csv\": ").nth(1).unwrap().split(", \"synthetic/stuck").next().unwrap();
    let labels = labels.replacen('{', &format!("{{\"copies/shift.csv\": {window}, "), 1);
    std::fs::write(root.path().join("labels/combined_windows.json"), labels).unwrap();
    // Candidate 2 never flags anything; candidate 3 flags every quiet stretch too.
    let settings = root.path().join("candidates.toml");
    std::fs::write(
        &settings,
        "[[candidates.nab]]\nalgorithm = { type = \"robust_z\" }\nthreshold = { value = 1e12, k = 1, n = 1 }\n\
         [[candidates.nab]]\nalgorithm = { type = \"robust_z\" }\nthreshold = { value = 0.01, k = 1, n = 1 }\n",
    )
    .unwrap();
    let data = root.path().to_str().unwrap();
    for (folds, count) in [("series", "4 folds"), ("category", "2 folds"), ("leave-one-category-out", "2 folds")] {
        let out = tempfile::tempdir().unwrap();
        let o = out.path().to_str().unwrap();
        let s = settings.to_str().unwrap();
        let result = usan(&["eval", "nab", data, "--out", o, "--settings", s, "--folds", folds]);
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
        assert!(stdout.contains("[[candidates.nab]]"), "prints the candidates it chose among: {stdout}");
        let held = stdout.lines().find(|l| l.starts_with("held-out")).unwrap();
        assert!(held.contains(count), "{held}");
        // Every fold learns from the others that the default settings are best.
        assert_eq!(held.matches("→ 1").count(), held.matches('→').count(), "{held}");
        let in_sample = standard_after(&stdout, "in-sample: candidate 1 ");
        assert!(in_sample > 50.0, "{stdout}");
        assert_eq!(standard_after(&stdout, "held-out"), standard_after(&stdout, "NAB score"), "{stdout}");
        assert!(out.path().join("usan/copies/usan_shift.csv").exists());
    }

    // Alone, the silent candidate is chosen on the others and scores 0 on each fold.
    std::fs::write(
        &settings,
        "[nab]\nalgorithm = { type = \"robust_z\" }\nthreshold = { value = 1e12, k = 1, n = 1 }\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let result =
        usan(&["eval", "nab", data, "--out", o, "--settings", settings.to_str().unwrap(), "--folds", "series"]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("one candidate: nothing is chosen"), "{stdout}");
    assert_eq!(standard_after(&stdout, "held-out"), 0.0, "nothing flagged, nothing found: {stdout}");

    // A bad candidate is named; folds are not for every benchmark.
    std::fs::write(&settings, "[[candidates.nab]]\nalgorithm = { type = \"robust_z\" }\nthreshold = { k = 1 }\n")
        .unwrap();
    let result = usan(&["eval", "nab", data, "--out", o, "--settings", settings.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("candidates.nab[1]: threshold: set `value`"), "{stderr}");
    let result = usan(&["eval", "cmapss", data, "--out", o, "--subset", "FD001", "--folds", "series"]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("--folds is for usan eval nab, skab and tep"));
}

#[test]
fn eval_skab_folds_report_the_held_out_f1_beside_the_in_sample_one() {
    let root = tempfile::tempdir().unwrap();
    skab_folder(root.path());
    // A second valve file: the same run under another name, in another group.
    std::fs::create_dir_all(root.path().join("data/valve2")).unwrap();
    std::fs::copy(root.path().join("data/valve1/0.csv"), root.path().join("data/valve2/1.csv")).unwrap();
    let settings = root.path().join("candidates.toml");
    // Candidate 2 never flags a row.
    std::fs::write(
        &settings,
        "[[candidates.skab]]\nalgorithm = { type = \"robust_z\" }\nthreshold = { value = 1e12, k = 1, n = 1 }\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let (data, o, s) = (root.path().to_str().unwrap(), out.path().to_str().unwrap(), settings.to_str().unwrap());
    let result = usan(&["eval", "skab", data, "--out", o, "--settings", s, "--folds", "category"]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    let f1_after = |prefix: &str| -> f64 {
        let line = stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {stdout}"));
        line.split("F1 ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap()
    };
    let held = stdout.lines().find(|l| l.starts_with("held-out, leave-one-category-out (2 folds)")).unwrap();
    assert!(held.contains("valve1 (1) → 1") && held.contains("valve2 (1) → 1"), "{held}");
    assert!(f1_after("in-sample: candidate 1 ") > 0.8, "{stdout}");
    assert_eq!(f1_after("held-out"), f1_after("SKAB outlier detection"));
    assert!(stdout.contains("| 2 | F1 0.000"), "the silent candidate's in-sample row: {stdout}");
    assert_eq!(std::fs::read_dir(out.path().join("valve2")).unwrap().count(), 1);
}

#[test]
fn eval_skab_reference_run_must_match_the_sensors_unless_turned_off() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    skab_folder(root.path());
    let free = root.path().join("data/anomaly-free/anomaly-free.csv");
    let text = std::fs::read_to_string(&free).unwrap().replacen("Flow;", "Flux;", 1);
    std::fs::write(&free, text).unwrap();
    let data = root.path().to_str().unwrap();
    let result = usan(&["eval", "skab", data, "--out", out.path().to_str().unwrap()]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("the anomaly-free run has sensors"));

    let settings = root.path().join("no-reference.toml");
    std::fs::write(
        &settings,
        "[skab]\nreference_rows = 0\n[skab.algorithm]\ntype = \"pca\"\n[skab.threshold]\nvalue = 1.0\nk = 1\nn = 1\n",
    )
    .unwrap();
    let result =
        usan(&["eval", "skab", data, "--out", out.path().to_str().unwrap(), "--settings", settings.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("reference run: not used"), "{stdout}");
}

/// A fleet in C-MAPSS's layout: two operating regimes, one wearing sensor,
/// one flat, the rest noise; test units cut before failure with their true RUL.
fn cmapss_folder(dir: &std::path::Path) {
    let mut state = 12345u64;
    let mut noise = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    };
    let mut unit_rows = |unit: usize, life: usize, keep: usize| -> Vec<String> {
        (1..=keep)
            .map(|cycle| {
                let regime = (cycle * 7 + unit) % 2;
                let wear = (0.04 * (cycle as f64 - life as f64)).exp();
                let mut cells = vec![unit.to_string(), cycle.to_string()];
                cells.extend([format!("{}", regime * 20), "0.62".into(), "100".into()]);
                for s in 1..=21 {
                    let value = match s {
                        1 => 518.67,
                        2 => 640.0 + 30.0 * regime as f64 + 4.0 * wear + 0.2 * noise(),
                        3 => 1590.0 + 10.0 * regime as f64 + noise(),
                        _ => 100.0 + s as f64 + noise(),
                    };
                    cells.push(format!("{value:.4}"));
                }
                cells.join(" ")
            })
            .collect()
    };
    let mut train = Vec::new();
    for unit in 1..=40 {
        train.extend(unit_rows(unit, 130 + unit * 3 % 70, 130 + unit * 3 % 70));
    }
    let (mut test, mut truth) = (Vec::new(), Vec::new());
    for unit in 1..=10 {
        let life = 140 + unit * 7 % 60;
        let rul = 10 + unit * 11;
        test.extend(unit_rows(unit, life, life - rul));
        truth.push(rul.to_string());
    }
    std::fs::write(dir.join("train_FD002.txt"), train.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("test_FD002.txt"), test.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("RUL_FD002.txt"), truth.join("\n") + "\n").unwrap();
}

#[test]
fn eval_cmapss_predicts_each_test_unit_and_finds_the_regimes() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    cmapss_folder(data.path());
    let settings = write_config(
        out.path(),
        "fast.toml",
        "[cmapss]\nlearner = \"ensemble\"\ninterval_folds = 2\n[cmapss.trees]\ntrees = 80\nlearning_rate = 0.15\n\
         [cmapss.network]\nwindow = 20\nfilters = 4\nkernel = 5\nlayers = 2\nhidden = 16\nepochs = 5\n",
    );
    let predictions = out.path().join("FD002_usan.csv");
    let result = usan(&[
        "eval",
        "cmapss",
        data.path().to_str().unwrap(),
        "--subset",
        "FD002",
        "--out",
        predictions.to_str().unwrap(),
        "--settings",
        settings.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("2 operating regime(s)"), "{stdout}");
    assert!(!stdout.contains(" s1 "), "the flat sensor is dropped: {stdout}");
    assert!(stdout.contains("[cmapss.trees]") && stdout.contains("[cmapss.network]"), "{stdout}");
    assert!(stdout.contains("trees and network, network weight") && stdout.contains("windows/s"), "{stdout}");
    let text = std::fs::read_to_string(&predictions).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("unit,rul"));
    let rows: Vec<(String, f64)> =
        lines.map(|l| l.split_once(',').map(|(u, r)| (u.to_string(), r.parse().unwrap())).unwrap()).collect();
    assert_eq!(
        rows.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]
    );
    let truth: Vec<f64> = (1..=10).map(|u| f64::from(10 + u * 11).min(125.0)).collect();
    let rmse = (rows.iter().zip(&truth).map(|((_, p), t)| (p - t).powi(2)).sum::<f64>() / 10.0).sqrt();
    assert!(rmse < 25.0, "RMSE {rmse}: {rows:?}");
    let reported: f64 = stdout
        .lines()
        .find(|l| l.contains("capped at the model's cap"))
        .and_then(|l| l.split("RMSE ").nth(1))
        .and_then(|r| r.split(',').next())
        .and_then(|r| r.parse().ok())
        .unwrap();
    assert!((reported - rmse).abs() < 0.01, "prints the scorer's RMSE: {reported} vs {rmse}");
}

#[test]
fn eval_cmapss_refuses_bad_files_with_their_line() {
    let out = tempfile::tempdir().unwrap();
    let run = |data: &std::path::Path, subset: &str| {
        let result = usan(&[
            "eval",
            "cmapss",
            data.to_str().unwrap(),
            "--subset",
            subset,
            "--out",
            out.path().join("p.csv").to_str().unwrap(),
        ]);
        assert!(!result.status.success());
        String::from_utf8_lossy(&result.stderr).to_string()
    };
    let data = tempfile::tempdir().unwrap();
    cmapss_folder(data.path());
    assert!(run(data.path(), "FD009").contains("--subset must be"));
    assert!(run(data.path(), "FD001").contains("train_FD001.txt"), "a missing file is named");
    let train = data.path().join("train_FD002.txt");
    let original = std::fs::read_to_string(&train).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    std::fs::write(&train, swapped.join("\n")).unwrap();
    let message = run(data.path(), "FD002");
    assert!(message.contains("line 5") && message.contains("cycle"), "{message}");
    let mut short = lines.clone();
    let cut = short[2].rsplit_once(' ').unwrap().0.to_string();
    short[2] = &cut;
    std::fs::write(&train, short.join("\n")).unwrap();
    let message = run(data.path(), "FD002");
    assert!(message.contains("line 3") && message.contains("25 columns"), "{message}");
    let mut text = lines.clone();
    let bad = text[6].replacen(" 100 ", " n/a ", 1);
    text[6] = &bad;
    std::fs::write(&train, text.join("\n")).unwrap();
    let message = run(data.path(), "FD002");
    assert!(message.contains("line 7") && message.contains("not a number"), "{message}");
}

/// A SECOM-layout file: 300 lots, 12 measurements (some missing), fails
/// driven by two of them.
fn secom_folder(root: &std::path::Path) {
    let mut g = usan_core::stats::SeededNormal::new(17);
    let mut text = String::from("Time");
    for j in 0..12 {
        text += &format!(",{j}");
    }
    text += ",Pass/Fail\n";
    for i in 0..300 {
        let values: Vec<f64> = (0..12).map(|_| g.normal()).collect();
        let risk = 1.5 * values[3] - 1.2 * values[7] + 0.5 * g.normal();
        let failed = risk > 2.2;
        text += &format!("2008-07-19 11:{:02}:00", i % 60);
        for (j, v) in values.iter().enumerate() {
            if (i + j) % 23 == 0 {
                text += ",";
            } else {
                text += &format!(",{v:.4}");
            }
        }
        text += if failed { ",1\n" } else { ",-1\n" };
    }
    std::fs::write(root.join("uci-secom.csv"), text).unwrap();
}

#[test]
fn eval_secom_cross_validates_and_names_the_measurements_that_matter() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    secom_folder(root.path());
    let result = usan(&["eval", "secom", root.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    let line = stdout.lines().find(|l| l.starts_with("balanced error rate")).unwrap();
    let ber: f64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(ber < 25.0, "two clear drivers are learnable: {line}");
    let important = stdout.lines().find(|l| l.starts_with("measurements that matter")).unwrap();
    let first_two: Vec<&str> = important.split(": ").nth(1).unwrap().split(", ").take(2).collect();
    assert!(
        first_two.iter().any(|m| m.starts_with("3 ")) && first_two.iter().any(|m| m.starts_with("7 ")),
        "{important}"
    );
    assert!(stdout.contains("stratified 10-fold cross-validation, seed 0"));
    let predictions = std::fs::read_to_string(out.path().join("secom_predictions.csv")).unwrap();
    assert_eq!(predictions.lines().count(), 301);

    let bad = std::fs::read_to_string(root.path().join("uci-secom.csv")).unwrap().replacen(",-1\n", ",2\n", 1);
    std::fs::write(root.path().join("uci-secom.csv"), bad).unwrap();
    let result = usan(&["eval", "secom", root.path().to_str().unwrap()]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("not -1 or 1"));
}

#[test]
fn eval_steel_classifies_defects_by_cross_validation() {
    let root = tempfile::tempdir().unwrap();
    let mut g = usan_core::stats::SeededNormal::new(23);
    let mut text = String::new();
    for i in 0..280 {
        let class = i % 7;
        let values: Vec<String> = (0..27)
            .map(|j| format!("{:.4}", g.normal() + if j == class { 3.0 } else { 0.0 }))
            .chain((0..7).map(|k| u8::from(k == class).to_string()))
            .collect();
        text += &format!("\"{}\"\n", values.join("\t"));
    }
    std::fs::write(root.path().join("Faults.NNA"), text).unwrap();
    let result = usan(&["eval", "steel", root.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    let line = stdout.lines().find(|l| l.starts_with("accuracy")).unwrap();
    let accuracy: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(accuracy > 80.0, "each class shows in its own measurement: {line}");
    assert!(stdout.contains("| Z_Scratch | 40 |"), "{stdout}");
    std::fs::write(root.path().join("Faults.NNA"), "1\t2\t3\n").unwrap();
    let result = usan(&["eval", "steel", root.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&result.stderr).contains("expected 34"));
}
